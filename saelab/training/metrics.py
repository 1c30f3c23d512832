"""Metrics as pure tensor functions named for the quantity. Inputs may carry leading dims (an arm
dimension) before the batch: codes [..., B, S], x [..., B, d]; results have shape [...]."""

from __future__ import annotations

import torch
from torch import Tensor


def l0(codes: Tensor) -> Tensor:
    """Mean number of active latents per row."""
    return (codes != 0).sum(-1).to(torch.float32).mean(-1)


def l0_fraction(codes: Tensor) -> Tensor:
    """L0 as a fraction of the dictionary (the seed's 'L0 sparsity' percentage / 100)."""
    return l0(codes) / codes.shape[-1]


def fire_counts(codes: Tensor) -> Tensor:
    """Rows on which each latent fired: [..., B, S] -> int64 [..., S]."""
    return (codes > 0).sum(-2)


def firing_frequency(codes: Tensor) -> Tensor:
    """Fraction of rows on which each latent fired: [..., S]."""
    return fire_counts(codes).to(torch.float32) / codes.shape[-2]


def dead_fraction(counts: Tensor) -> Tensor:
    """Fraction of latents that never fired, from fire counts [..., S] over some set of rows
    (the held-out set for the truth; the current batch for the seed's measurement)."""
    return (counts == 0).to(torch.float32).mean(-1)


def mse(x: Tensor, x_hat: Tensor) -> Tensor:
    return (x_hat - x).square().mean(dim=(-2, -1))


def fvu(x: Tensor, x_hat: Tensor) -> Tensor:
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean_rows(x)||^2.
    The denominator is the variance around the mean row, not around zero (SAELens issue 659
    measured it around zero, which flatters any model of data with a large mean)."""
    resid = (x_hat - x).square().sum(dim=(-2, -1))
    total = (x - x.mean(dim=-2, keepdim=True)).square().sum(dim=(-2, -1))
    return resid / total.clamp_min(torch.finfo(total.dtype).tiny)


def explained_variance(x: Tensor, x_hat: Tensor) -> Tensor:
    return 1 - fvu(x, x_hat)


def l1_recon_ratio(alpha: float | Tensor, penalty: Tensor, reconstruction: Tensor) -> Tensor:
    """alpha * penalty / reconstruction loss; the seed's target range is 0.01-0.5."""
    return alpha * penalty / reconstruction


def shrinkage(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean over rows of ||x_hat|| / ||x||; below 1 when the L1 penalty shrinks the codes."""
    return (x_hat.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)).mean(-1)


def max_cosines(W_dec: Tensor, truth: Tensor) -> Tensor:
    """For every true feature, the largest cosine with any decoder row. W_dec [..., S, d],
    truth [F, d] -> [..., F]."""
    dec = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    tru = truth / truth.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (tru.to(dec.dtype) @ dec.transpose(-1, -2)).amax(-1)


def mmcs(W_dec: Tensor, truth: Tensor) -> Tensor:
    """Mean max cosine similarity of the true features to the learned dictionary (Sharkey 2022)."""
    return max_cosines(W_dec, truth).mean(-1)


def frac_recovered(W_dec: Tensor, truth: Tensor, threshold: float = 0.9) -> Tensor:
    """Fraction of true features matched by some decoder row at cosine > threshold."""
    return (max_cosines(W_dec, truth) > threshold).to(torch.float32).mean(-1)


def geometric_median(x: Tensor, max_iter: int = 200, tol: float = 1e-7) -> Tensor:
    """The point minimizing the summed Euclidean distance to the rows of x [N, d] -> [d], by
    Weiszfeld's iteration from the mean, in float64 (the decoder-bias initialization of Bricken
    2023). Robust where the mean is not: moving one row arbitrarily far moves it a bounded amount.
    Stops when a step moves less than tol x (1 + the median's norm); a row the iterate lands on
    exactly is kept out of that step's weights (the standard guard against 1/0)."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"geometric_median needs rows [N, d] with N >= 1, got shape {tuple(x.shape)}")
    pts = x.to(torch.float64)
    y = pts.mean(0)
    for _ in range(max_iter):
        dist = (pts - y).norm(dim=-1)
        w = torch.where(dist > 0, 1.0 / dist.clamp_min(1e-300), torch.zeros_like(dist))
        if float(w.sum()) == 0:  # every row sits on y
            break
        nxt = (w.unsqueeze(-1) * pts).sum(0) / w.sum()
        done = float((nxt - y).norm()) <= tol * (1 + float(nxt.norm()))
        y = nxt
        if done:
            break
    return y.to(x.dtype)
