"""Metrics as pure tensor functions named for the quantity. Inputs may carry leading dims (an arm
dimension) before the batch: codes [..., B, S], x [..., B, d]; results have shape [...]."""

from __future__ import annotations

import math

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


MISS = 0.01  # the detection floor's error: an alive latent called dead with at most this probability
DENSE_RATE = 0.1  # a latent firing on more than a tenth of the rows is dense (issue 21)
COLLAPSE_FVU = 0.99  # an SAE that leaves this much of the variance unexplained has learned nothing


def detection_floor(observations: int, miss: float = MISS) -> float:
    """The firing rate below which a latent that is alive would be called dead (silent on every one
    of ``observations`` independent rows or tokens) with probability above ``miss``:
    (1 - r)^n > miss <=> r < 1 - miss^(1/n), about ln(1/miss)/n. 1,024 rows: 4.5e-3 (at ``miss``
    0.01); 131,072 rows: 3.5e-5. ``observations`` < 1 has no floor: 1.0."""
    return 1.0 - miss ** (1.0 / observations) if observations >= 1 else 1.0


def observations_for(rate: float, miss: float = MISS) -> int:
    """The rows or tokens a dead count needs so that its detection floor is ``rate`` (the inverse
    of ``detection_floor``): ceil(ln(miss) / ln(1 - rate)). A tenth of the mean rate of TopK k=2 on
    2,048 latents (9.8e-5) needs 47,150."""
    if not 0 < rate < 1:
        raise ValueError(f"rate={rate} must be in (0, 1)")
    return math.ceil(math.log(miss) / math.log1p(-rate))


def dense_fraction(counts: Tensor, rows: int, above: float = DENSE_RATE) -> Tensor:
    """Fraction of latents firing on more than ``above`` of ``rows`` rows, from fire counts [..., S]."""
    return (counts.to(torch.float64) / max(rows, 1) > above).to(torch.float32).mean(-1)


def collapsed(fvu: Tensor, l0: Tensor) -> Tensor:
    """An SAE that reconstructs (almost) nothing, FVU >= COLLAPSE_FVU, or whose rows use less than
    one latent on average: bool [...]."""
    return (fvu >= COLLAPSE_FVU) | (l0 < 1)


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


# ----- the data's spectrum: how many directions its rows use (Wang et al. 2025, arXiv 2508.16929) -----

def spectrum(x: Tensor, center: bool = True) -> Tensor:
    """Eigenvalues, largest first, of the rows' covariance (``center``) or second moment about 0
    (not centered), in float64: x [N, d] -> [d]. Tiny negative values from rounding are set to 0."""
    x64 = x.to(torch.float64)
    if center:
        x64 = x64 - x64.mean(0)
    return torch.linalg.eigvalsh(x64.T @ x64 / max(x64.shape[0], 1)).clamp_min(0).flip(0)


def components_for(eigenvalues: Tensor, share: float) -> int:
    """The fewest leading components whose eigenvalues hold ``share`` of their sum (eigenvalues
    largest first). [4, 3, 2, 1] at share 0.7: 4 + 3 = 7 of 10, so 2."""
    total = float(eigenvalues.sum())
    if total <= 0:
        return 0
    cum = eigenvalues.cumsum(0) / total
    return min(int((cum < share - 1e-12).sum()) + 1, eigenvalues.numel())


def participation_ratio(eigenvalues: Tensor) -> float:
    """(sum l)^2 / sum l^2: d for an isotropic spectrum, 1 when one direction holds everything.
    [4, 3, 2, 1]: 100 / 30 = 3.33."""
    sq = float(eigenvalues.square().sum())
    return float(eigenvalues.sum()) ** 2 / sq if sq > 0 else 0.0


def entropy_rank(eigenvalues: Tensor) -> float:
    """exp of the entropy of the eigenvalues as shares (Roy & Vetterli 2007's effective rank):
    d for an isotropic spectrum, 1 for one direction. [1, 1, 0, 0]: exp(ln 2) = 2."""
    total = float(eigenvalues.sum())
    if total <= 0:
        return 0.0
    p = eigenvalues[eigenvalues > 0].to(torch.float64) / total
    return math.exp(float(-(p * p.log()).sum()))


def principal_basis(x: Tensor, share: float) -> Tensor:
    """Orthonormal rows spanning the leading principal directions of the rows x [N, d] about 0
    (their second moment, not centered: subtract a center first if wanted) that hold ``share`` of
    it: [r, d], float64, r = components_for(..., share) (at least 1)."""
    x64 = x.to(torch.float64)
    vals, vecs = torch.linalg.eigh(x64.T @ x64 / max(x64.shape[0], 1))
    vals, vecs = vals.clamp_min(0).flip(0), vecs.flip(1)
    r = max(components_for(vals, share), 1)
    return vecs[:, :r].T.contiguous()
