"""Input normalization modes, each with an exact inverse so metrics can be reported in the
original activation space.

Every mode is an affine map per row, ``n = (x - shift) * coef`` (whitening: ``n = (x - shift) @ W``),
undone by ``y / coef + shift`` (whitening: ``y @ W^-1 + shift``):

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
    whitening                      ZCA whitening, W = Sigma^{-1/2} with shift = mu, both fitted once by
                                   fit() (float64) from the first cfg.estimate_batches batches, and at
                                   least WHITEN_ROWS_PER_DIM rows per dimension; every direction of the
                                   data then has unit variance, so E||n||^2 = d_in as under
                                   dataset_scalar. Eigenvalues below WHITEN_FLOOR x the largest are
                                   raised to it, so directions with (numerically) no variance are scaled
                                   up at most 1/sqrt(WHITEN_FLOOR) = 1000x less than the top one, not
                                   blown up; W^-1 = Sigma_floored^{1/2} inverts W exactly. SAELens has
                                   no whitening mode (its normalize_activations is none,
                                   expected_average_only_in, constant_norm_rescale or layer_norm).

Tensors may carry a leading arm dimension or not: ``x`` is ``[..., d_in]``, norms are over the last
dimension, and ``NormInfo`` tensors are ``[..., 1]`` (0-dim for dataset_scalar; whitening: ``shift``
is ``[d_in]`` and ``matrix`` ``[d_in, d_in]``).
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
# whitening: eigenvalues of the covariance below this share of the largest are raised to it. float32
# rows carry about 7 significant digits, so a direction whose variance is under 1e-6 of the top one
# (a std under 1e-3 of it) is mostly rounding and estimation noise; scaling it to unit variance would
# hand the SAE noise. Anisotropy up to 1e6 in variance (1000x in std) is whitened in full.
WHITEN_FLOOR = 1e-6
# whitening: at least this many rows per input dimension for the covariance (datacheck and the
# subspace init use 4: N rows span at most N directions, and fewer would under-estimate the small ones)
WHITEN_ROWS_PER_DIM = 4


@dataclass(frozen=True)
class NormInfo:
    """What one call did, so ``inverse`` can undo it: ``n = (x - shift) * coef``.

    coef: ``[..., 1]`` per-row factor, a 0-dim tensor for dataset_scalar, or None for 1.
    shift: ``[..., 1]`` per-row mean (layer_norm), the data's mean ``[d_in]`` (whitening), or None for 0.
    matrix: whitening only, ``W^-1 [d_in, d_in]``: the inverse of the whitening map (None otherwise).
    """

    coef: Tensor | None = None
    shift: Tensor | None = None
    matrix: Tensor | None = None


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
        # whitening only, float64: the mean [d_in], W = Sigma^-1/2 and W^-1 [d_in, d_in], fitted by fit()
        self.mean: Tensor | None = None
        self.whiten: Tensor | None = None
        self.unwhiten: Tensor | None = None
        self.spectrum: dict[str, Any] = {}  # whitening only: what fit() measured (JSON-able)
        self._cast: dict = {}  # (dtype, device) -> (mean, W, W^-1) in that dtype: cast once, not every batch

    # ----- fitting (dataset_scalar and whitening) ------------------------------------------------

    def fit(self, batches: Iterable[Tensor]) -> None:
        """Estimate the dataset scalar from the first ``estimate_batches`` batches ``[B, d_in]``,
        or the whitening map from at least that many and WHITEN_ROWS_PER_DIM rows per dimension
        (a no-op for every other mode). Takes no more than that, so an endless stream is fine."""
        if self.mode == "whitening":
            self._fit_whitening(batches)
            return
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

    def _fit_whitening(self, batches: Iterable[Tensor]) -> None:
        """Mean and covariance (float64) of the first ``estimate_batches`` batches, continued until
        WHITEN_ROWS_PER_DIM * d_in rows when the batches last; W = U diag(max(l, WHITEN_FLOOR l_max)^-1/2) U^T."""
        d, want = self.d_in, WHITEN_ROWS_PER_DIM * self.d_in
        s1 = outer = None
        rows = 0
        for i, b in enumerate(batches):
            if i >= self.estimate_batches and rows >= want:
                break
            b = b.detach().to(torch.float64).reshape(-1, d)
            s1 = b.sum(0) if s1 is None else s1 + b.sum(0)
            outer = b.T @ b if outer is None else outer + b.T @ b
            rows += b.shape[0]
        if rows < 2:
            raise ValueError(f"whitening: fit() got {rows} rows; the covariance needs at least 2 (better {want})")
        mean = s1 / rows
        cov = outer / rows - torch.outer(mean, mean)
        cov = (cov + cov.T) / 2
        eig, vec = torch.linalg.eigh(cov)
        top = float(eig.max())
        if not (math.isfinite(top) and top > 0):
            raise ValueError(f"whitening: the covariance of {rows} rows has largest eigenvalue {top}; need a finite positive value")
        floored = eig.clamp_min(WHITEN_FLOOR * top)
        self.mean = mean
        self.whiten = (vec * floored.rsqrt()) @ vec.T
        self.unwhiten = (vec * floored.sqrt()) @ vec.T
        self._cast = {}
        self.spectrum = {"rows": rows, "eig_max": top, "eig_min": float(eig.min()), "floored": int((eig < WHITEN_FLOOR * top).sum()),
                         "checksum": float(self.whiten.sum())}

    def tensors(self) -> dict[str, Tensor]:
        """Fitted tensors too large for the JSON state (whitening: mean, W, W^-1); {} otherwise.
        The checkpoint stores them beside the model's weights."""
        if self.mode != "whitening" or self.whiten is None:
            return {}
        return {"mean": self.mean, "whiten": self.whiten, "unwhiten": self.unwhiten}

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        if self.mode != "whitening":
            return
        missing = {"mean", "whiten", "unwhiten"} - set(tensors)
        if missing:
            raise ValueError(f"whitening normalizer state lacks {sorted(missing)}")
        d = self.d_in
        for k, shape in (("mean", (d,)), ("whiten", (d, d)), ("unwhiten", (d, d))):
            if tuple(tensors[k].shape) != shape:
                raise ValueError(f"whitening normalizer state: {k} is {list(tensors[k].shape)}, expected {list(shape)}")
        self.mean, self.whiten, self.unwhiten = (tensors[k].to(torch.float64) for k in ("mean", "whiten", "unwhiten"))
        self._cast = {}

    def _whitening(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.whiten is None:
            raise RuntimeError("whitening normalizer used before fit(); call fit(batches) or load_tensors()")
        key = (like.dtype, like.device)
        if key not in self._cast:
            self._cast[key] = tuple(t.to(like.device, like.dtype) for t in (self.mean, self.whiten, self.unwhiten))
        return self._cast[key]

    # ----- forward / inverse --------------------------------------------------------------------

    def __call__(self, x: Tensor) -> tuple[Tensor, NormInfo]:
        """Normalize ``x [..., d_in]``; returns ``(n [..., d_in], info)``."""
        self._check_width(x)
        if self.mode == "none":
            return x, NormInfo()
        if self.mode == "whitening":
            mean, w, w_inv = self._whitening(x)
            return (x - mean) @ w, NormInfo(shift=mean, matrix=w_inv)
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
        out = out if info.matrix is None else out @ info.matrix
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
        elif self.mode == "whitening":  # coef: how much each row's norm changed, ||n|| / ||x||
            mean, w, _ = self._whitening(x64)
            out = (x64 - mean) @ w
            coef = out.norm(dim=-1) / norm.clamp_min(1e-300)
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
        """JSON-able state for resume: the mode and the fitted dataset scalar (None if unfitted);
        whitening adds what fit() measured (its matrices travel in ``tensors()``)."""
        out = {"mode": self.mode, "d_in": self.d_in, "scalar": self.scalar, "mean_norm": self.mean_norm}
        return out | ({"spectrum": dict(self.spectrum)} if self.mode == "whitening" else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mode") != self.mode or state.get("d_in") != self.d_in:
            raise ValueError(
                f"normalizer state is for mode={state.get('mode')!r}, d_in={state.get('d_in')}; "
                f"this normalizer is mode={self.mode!r}, d_in={self.d_in}"
            )
        self.scalar = state.get("scalar")
        self.mean_norm = state.get("mean_norm")
        if self.mode == "whitening":
            self.spectrum = dict(state.get("spectrum") or {})


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
    dataset_scalar and whitening)."""
    return Normalizer(cfg.mode, d_in, clamp_min=cfg.clamp_min, estimate_batches=cfg.estimate_batches)
