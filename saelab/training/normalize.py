"""Input normalization modes, each with an exact inverse so metrics can be reported in the
original activation space.

Every mode is an affine map per row, ``n = (x - shift) * coef``, undone by ``y / coef + shift``:

    none                           coef = 1, shift = 0
    constant_norm_rescale          coef = sqrt(d_in) / ||x||  per row, no clamp (the seed's lines
                                   106-110). A row with ||x|| = 0 would become NaN (0 * inf) exactly as
                                   in the seed; instead of letting that propagate, __call__ raises a
                                   ValueError naming the row. Tiny but non-zero rows pass and get the
                                   seed's huge coefficient.
    constant_norm_rescale_clamped  coef = sqrt(d_in) / max(||x||, clamp_min)  (the seed's Task 5.1);
                                   an all-zero row stays all zero.
    dataset_scalar                 coef = sqrt(d_in) / E||x||, one number estimated once by fit() from
                                   cfg.estimate_batches batches (SAELens ``expected_average_only_in``,
                                   Anthropic April 2024 update), so that E||n|| = sqrt(d_in).
    layer_norm                     F.layer_norm without affine: shift = row mean, coef = 1/sqrt(var+eps)
                                   (biased variance, eps = 1e-5); an all-zero or constant row maps to
                                   zeros, and the stored mean restores it.

Tensors may carry a leading arm dimension or not: ``x`` is ``[..., d_in]``, norms are over the last
dimension, and ``NormInfo`` tensors are ``[..., 1]`` (0-dim for dataset_scalar).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from saelab.config import NormalizeConfig, NormMode

TINY_NORM = 1e-6  # the seed's Task 5.1 threshold for a near-zero row
LAYER_NORM_EPS = 1e-5  # F.layer_norm's default


@dataclass(frozen=True)
class NormInfo:
    """What one call did, so ``inverse`` can undo it: ``n = (x - shift) * coef``.

    coef: ``[..., 1]`` per-row factor, a 0-dim tensor for dataset_scalar, or None for 1.
    shift: ``[..., 1]`` per-row mean (layer_norm only), or None for 0.
    """

    coef: Tensor | None = None
    shift: Tensor | None = None


class Normalizer:
    """One normalization mode for inputs of width ``d_in``; see the module docstring."""

    def __init__(self, mode: str, d_in: int, clamp_min: float = 1e-6, estimate_batches: int = 20):
        if mode not in get_args(NormMode):
            raise ValueError(f"normalize.mode={mode!r} is not allowed; choose one of {list(get_args(NormMode))}")
        if d_in < 1:
            raise ValueError(f"d_in={d_in} must be >= 1")
        self.mode = mode
        self.d_in = d_in
        self.clamp_min = clamp_min
        self.estimate_batches = estimate_batches
        self.scalar: float | None = None  # dataset_scalar only: sqrt(d_in) / E||x||
        self.mean_norm: float | None = None  # dataset_scalar only: the estimated E||x||

    # ----- fitting (dataset_scalar only) ---------------------------------------------------------

    def fit(self, batches: Iterable[Tensor]) -> None:
        """Estimate the dataset scalar from the first ``estimate_batches`` batches ``[B, d_in]``
        (a no-op for every other mode). Takes at most that many, so an endless stream is fine."""
        if self.mode != "dataset_scalar":
            return
        total, rows = 0.0, 0
        for b in itertools.islice(batches, self.estimate_batches):
            norms = b.detach().to(torch.float64).norm(dim=-1)
            total += norms.sum().item()
            rows += norms.numel()
        if rows == 0:
            raise ValueError("dataset_scalar: fit() got no batches to estimate E||x|| from")
        mean_norm = total / rows
        if not (math.isfinite(mean_norm) and mean_norm > 0):
            raise ValueError(f"dataset_scalar: estimated E||x|| = {mean_norm} over {rows} rows; need a finite positive value")
        self.mean_norm = mean_norm
        self.scalar = math.sqrt(self.d_in) / mean_norm

    # ----- forward / inverse --------------------------------------------------------------------

    def __call__(self, x: Tensor) -> tuple[Tensor, NormInfo]:
        """Normalize ``x [..., d_in]``; returns ``(n [..., d_in], info)``."""
        self._check_width(x)
        if self.mode == "none":
            return x, NormInfo()
        if self.mode == "layer_norm":
            var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
            rstd = torch.rsqrt(var + LAYER_NORM_EPS)
            return F.layer_norm(x, (self.d_in,), eps=LAYER_NORM_EPS), NormInfo(coef=rstd, shift=mean)
        coef = self._coef(x)
        n = x * coef  # multiply as the seed does (x * norm_coeff), not divide by the norm
        if self.mode == "constant_norm_rescale":
            _raise_on_nonfinite(x, n)
        return n, NormInfo(coef=coef)

    def inverse(self, y: Tensor, info: NormInfo) -> Tensor:
        """Map ``y [..., d_in]`` in normalized space (a reconstruction) back to the original space."""
        out = y if info.coef is None else y / info.coef
        return out if info.shift is None else out + info.shift

    def _coef(self, x: Tensor) -> Tensor:
        """Per-row (or dataset) multiplicative factor for the rescaling modes; may be inf for the
        unclamped mode on a zero row (callers decide what to do with it)."""
        if self.mode == "dataset_scalar":
            if self.scalar is None:
                raise RuntimeError("dataset_scalar normalizer used before fit(); call fit(batches) or load_state_dict()")
            return torch.tensor(self.scalar, dtype=x.dtype, device=x.device)
        norm = x.norm(dim=-1, keepdim=True)
        if self.mode == "constant_norm_rescale_clamped":
            norm = norm.clamp_min(self.clamp_min)
        elif self.mode != "constant_norm_rescale":
            raise ValueError(f"normalize.mode={self.mode!r} has no scale coefficient")
        return math.sqrt(self.d_in) / norm

    def _check_width(self, x: Tensor) -> None:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"normalize: input width {x.shape[-1]} != d_in={self.d_in}")

    # ----- diagnostics and state ----------------------------------------------------------------

    @torch.no_grad()
    def stats(self, x: Tensor) -> dict[str, Any]:
        """The seed's Task 5.1 numbers for raw rows ``x [..., d_in]``: ranges of ||x||, of the
        coefficient and of the normalized norms, and the count of rows with ||x|| < 1e-6. Never
        raises on bad rows (that is what it is for): an unclamped zero row shows as coef_max = inf
        and is counted in n_nonfinite. Python floats; inf/NaN can appear only for that case."""
        self._check_width(x)
        x64 = x.detach().to(torch.float64).reshape(-1, self.d_in)
        norm = x64.norm(dim=-1)
        if self.mode == "none":
            coef, out = torch.ones_like(norm), x64
        elif self.mode == "layer_norm":
            var, mean = torch.var_mean(x64, dim=-1, unbiased=False, keepdim=True)
            coef = torch.rsqrt(var + LAYER_NORM_EPS).squeeze(-1)
            out = (x64 - mean) * coef[:, None]
        else:
            coef = self._coef(x64).expand(norm.shape[0], 1).squeeze(-1)
            out = x64 * coef[:, None]
        out_norm = out.norm(dim=-1)
        finite = torch.isfinite(out).all(dim=-1)
        return {
            "mode": self.mode,
            "n_rows": int(norm.numel()),
            "x_norm_min": norm.min().item(),
            "x_norm_max": norm.max().item(),
            "coef_min": coef.min().item(),
            "coef_max": coef.max().item(),
            "out_norm_min": out_norm.min().item(),
            "out_norm_max": out_norm.max().item(),
            "n_tiny": int((norm < TINY_NORM).sum().item()),
            "n_nonfinite": int((~finite).sum().item()),
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for resume: the mode and the fitted dataset scalar (None if unfitted)."""
        return {"mode": self.mode, "d_in": self.d_in, "scalar": self.scalar, "mean_norm": self.mean_norm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mode") != self.mode or state.get("d_in") != self.d_in:
            raise ValueError(
                f"normalizer state is for mode={state.get('mode')!r}, d_in={state.get('d_in')}; "
                f"this normalizer is mode={self.mode!r}, d_in={self.d_in}"
            )
        self.scalar = state.get("scalar")
        self.mean_norm = state.get("mean_norm")


def _raise_on_nonfinite(x: Tensor, n: Tensor) -> None:
    """The unclamped rescale divides by ||x||; a zero row gives 0 * inf = NaN (an underflowing
    norm gives inf). Name the first such row instead of letting it reach the SAE."""
    bad = ~torch.isfinite(n).all(dim=-1)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0].tolist())
        where = idx[0] if len(idx) == 1 else idx
        norm = x[idx].norm().item()
        raise ValueError(
            f"constant_norm_rescale: row {where} has ||x|| = {norm:.3g} (finite input: "
            f"{bool(torch.isfinite(x[idx]).all())}); the seed's unclamped sqrt(d_in)/||x|| turns it into "
            f"inf/NaN ({int(bad.sum())} such rows in this batch). Use constant_norm_rescale_clamped "
            "(the seed's Task 5.1 clamp) or drop the row."
        )


def make_normalizer(cfg: NormalizeConfig, d_in: int) -> Normalizer:
    """The normalizer for ``cfg.mode``; call ``fit(batches)`` once before use (a no-op except for
    dataset_scalar)."""
    return Normalizer(cfg.mode, d_in, clamp_min=cfg.clamp_min, estimate_batches=cfg.estimate_batches)
