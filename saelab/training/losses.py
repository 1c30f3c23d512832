"""Loss terms as pure functions. Every function accepts optional leading dimensions (an arm
dimension K) before the batch: z [..., B, S], x [..., B, d]; reductions return shape [...]."""

from __future__ import annotations

import torch
from torch import Tensor

L1_FORMS = ("mean_all", "per_sample_sum", "per_feature_mean", "sum", "decoder_weighted")
# penalty.form "l0" (JumpReLU only): the count of firing latents, not a reduction of |z|; its alpha is
# in its own unit (latents per row), so convert_alpha has no conversion to or from it
L0_FORM = "l0"


def reconstruction(x: Tensor, x_hat: Tensor, form: str = "mse_mean") -> Tensor:
    """mse_mean: mean over batch and features (the seed's loss); sum_features: squared error summed
    over d_in, averaged over the batch (Bricken 2023)."""
    sq = (x_hat - x).square()
    if form == "mse_mean":
        return sq.mean(dim=(-2, -1))
    if form == "sum_features":
        return sq.sum(-1).mean(-1)
    raise ValueError(f"unknown reconstruction form {form!r}; use mse_mean or sum_features")


def l1_penalty(z: Tensor, form: str, W_dec: Tensor | None = None) -> Tensor:
    """The sparsity penalty, before alpha.

    mean_all          z.abs().mean()              the seed's line 216
    per_sample_sum    z.abs().sum(-1).mean()      option A (Bricken 2023)
    per_feature_mean  z.abs().mean(0).mean()      option B (numerically equal to mean_all)
    sum               z.abs().sum()               option C
    decoder_weighted  (|z| * ||W_dec row||).sum(-1).mean()   Anthropic, April 2024 update
    """
    if form == "none":
        return z.new_zeros(z.shape[:-2])
    a = z.abs()
    if form == "mean_all":
        return a.mean(dim=(-2, -1))
    if form == "per_sample_sum":
        return a.sum(-1).mean(-1)
    if form == "per_feature_mean":
        return a.mean(-2).mean(-1)
    if form == "sum":
        return a.sum(dim=(-2, -1))
    if form == "decoder_weighted":
        if W_dec is None:
            raise ValueError("l1_penalty form 'decoder_weighted' needs W_dec")
        norms = W_dec.norm(dim=-1)  # [..., S]
        return (a * norms.unsqueeze(-2)).sum(-1).mean(-1)
    raise ValueError(f"unknown l1 form {form!r}; use one of {list(L1_FORMS)} or none")


class _Step(torch.autograd.Function):
    """H(pre - theta) with the straight-through gradient of Rajamanoharan et al. 2024 (eq. 11-12) and
    SAELens' ``Step``: d/dtheta = -(1/bandwidth) * rect((pre - theta)/bandwidth), rect(u) = 1 on
    |u| < 1/2; no gradient to pre. theta [..., 1, S] broadcasts over the batch; its gradient is
    summed over the batch."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        kernel = ((pre - theta).abs() < eps / 2).to(pre.dtype) / eps
        grad_theta = -(kernel * grad_out).sum(dim=-2, keepdim=True)
        return None, grad_theta, None


def l0_penalty(pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    """penalty.form "l0", before alpha (JumpReLU only): the mean over rows of the number of latents
    with pre > theta, sum_i H(pre_i - theta_i) (Rajamanoharan et al. 2024, eq. 10; SAELens'
    ``l0_coefficient`` with ``jumprelu_sparsity_loss_mode="step"``). Its gradient reaches only the
    thresholds, through the rectangle kernel of width ``bandwidth`` (``_Step``): a threshold moves
    up when pre-activations sit within bandwidth/2 of it. pre [..., B, S], theta [..., 1, S] -> [...]."""
    return _Step.apply(pre, theta, bandwidth).sum(-1).mean(-1)


def l1_divisor(form: str, batch_size: int, d_sae: int) -> float:
    """What each form divides sum|z| by; the penalty's gradient on one z is sign(z) / divisor.
    (decoder_weighted counts as per_sample_sum for a unit-norm decoder.)"""
    divisors = {
        "mean_all": batch_size * d_sae,
        "per_feature_mean": batch_size * d_sae,
        "per_sample_sum": batch_size,
        "decoder_weighted": batch_size,
        "sum": 1,
    }
    if form not in divisors:
        raise ValueError(f"unknown l1 form {form!r}; use one of {list(L1_FORMS)}")
    return float(divisors[form])


def convert_alpha(alpha: float, from_form: str, to_form: str, batch_size: int, d_sae: int) -> float:
    """Alpha for ``to_form`` that gives the same gradient on z as ``alpha`` on ``from_form``.

    mean_all -> per_sample_sum divides by d_sae (0.003 -> 1.46e-6 at 2048): per_sample_sum is
    already d_sae times larger. The seed's Task 2.2 multiplies by d_sae instead (0.003 -> 6.1), which
    makes the gradient on z d_sae**2 times stronger: a change of strength, not a conversion."""
    return alpha * l1_divisor(to_form, batch_size, d_sae) / l1_divisor(from_form, batch_size, d_sae)


def l1_breakdown(z: Tensor, alpha: float, penalty: Tensor, rec: Tensor) -> dict[str, float]:
    """The seed's Task 1.1 debug numbers for one arm (z [B, S])."""
    a = z.detach().abs()
    pen, r = float(penalty), float(rec)
    return {
        "l1_sum": float(a.sum()),
        "l1_mean": float(a.mean()),
        "l1_feature_mean": float(a.mean(0).mean()),
        "alpha": float(alpha),
        "l1_penalty": pen,
        "alpha_x_penalty": alpha * pen,
        "reconstruction": r,
        "l1_recon_ratio": alpha * pen / r if r > 0 else float("nan"),
    }


def dead_in_batch(codes: Tensor) -> Tensor:
    """[..., B, S] -> bool [..., S]: the latent never fired on any row of the batch."""
    return ~(codes > 0).any(dim=-2)


def reanimation(pre_codes: Tensor, codes: Tensor, coef: float | Tensor) -> Tensor:
    """Seed 000's auxiliary term, as it is added to the loss: ``-coef * mean(pre * is_dead)``,
    where is_dead marks latents that never fired in the batch and the mean runs over all B*S
    entries. Negative when dead latents have positive pre-activations; its gradient pushes dead
    pre-activations up. ``coef`` may be a tensor broadcasting over the leading dims."""
    is_dead = dead_in_batch(codes).to(pre_codes.dtype).detach()
    term = (pre_codes * is_dead.unsqueeze(-2)).mean(dim=(-2, -1))
    return -coef * term


def auxk(
    x: Tensor,
    x_hat: Tensor,
    pre: Tensor,
    W_dec: Tensor,
    dead: Tensor,
    k_aux: int,
) -> Tensor:
    """AuxK (Gao et al. 2024, section A.2): the top ``k_aux`` dead latents (by pre-activation)
    reconstruct the detached residual e = x - x_hat; the loss is ||e - e_hat||^2 over the
    residual's variance ||e - mean(e)||^2. Zero for arms with no dead latents.

    x, x_hat [K, B, d]; pre [K, B, S]; W_dec [K, S, d]; dead bool [K, S]. Returns [K].
    """
    e = (x - x_hat).detach()
    k = min(k_aux, pre.shape[-1])
    masked = pre.masked_fill(~dead.unsqueeze(1), float("-inf"))
    vals, idx = masked.topk(k, dim=-1, sorted=False)
    vals = torch.relu(torch.nan_to_num(vals, neginf=0.0))  # fewer than k dead: the rest contribute 0
    codes = torch.zeros_like(pre).scatter(-1, idx, vals)
    e_hat = torch.bmm(codes, W_dec)
    var = (e - e.mean(dim=-2, keepdim=True)).square().sum(-1).mean(-1).clamp_min(1e-12)
    loss = (e_hat - e).square().sum(-1).mean(-1) / var
    has_dead = dead.any(-1).to(loss.dtype)
    return loss * has_dead
