"""Activation sources. Every source serves ``batch(step, batch_size)`` as a pure function of
(seed, step), so arms in lockstep see identical batches and a resumed run sees the batches it
would have seen; ``eval_set(n)`` is a fixed held-out set that training never draws.

Sources by name (``data.source``): synthetic (here, with ground truth), minilm and hf:<model>
(saelab.transformer), file:<path> (saelab.files).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import torch
from torch import Tensor

from saelab.config import DataConfig, RunConfig

SYNTHETIC_D_IN = 768  # the seed's hidden size
_EVAL_STREAM = 2**40  # generator offset that keeps the held-out draws apart from training steps


class Source(Protocol):
    d_in: int
    ground_truth: Tensor | None

    def batch(self, step: int, batch_size: int) -> Tensor: ...

    def eval_set(self, n_rows: int) -> Tensor: ...

    def describe(self) -> dict: ...


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + stream) % (2**63))


class SyntheticSource:
    """Sparse superposition with known ground truth (Elhage 2022; Sharkey 2022).

    ``n_features`` random unit directions in ``d_in`` dimensions; feature i fires independently
    with probability p_i proportional to (i+1)^-firing_exponent, scaled so that on average
    ``mean_active`` fire per row (capped at 1); an active feature has a magnitude drawn from
    U(0.5, 1.5). Optional: a constant offset of norm ``mean_offset``, Gaussian noise, and rows
    scaled by 1e-6 (tiny) or 1e3 (huge) to stress normalization.
    """

    def __init__(self, cfg: DataConfig, d_in: int, seed: int):
        self.cfg, self.d_in, self.seed = cfg, d_in, seed
        g = _generator(seed, -1)
        dirs = torch.randn(cfg.n_features, d_in, generator=g)
        self.ground_truth = dirs / dirs.norm(dim=-1, keepdim=True)
        ranks = torch.arange(1, cfg.n_features + 1, dtype=torch.float64)
        p = ranks.pow(-cfg.firing_exponent)
        p = p * cfg.mean_active / p.sum()
        for _ in range(50):  # cap at 1 and give the excess to the uncapped features
            capped = p >= 1
            if not capped.any():
                break
            p = p.clamp_max(1.0)
            short = cfg.mean_active - p.sum()
            if short <= 1e-9 or capped.all():
                break
            p[~capped] *= 1 + short / p[~capped].sum()
        self.probs = p.clamp_max(1.0).to(torch.float32)
        offset = torch.randn(d_in, generator=g)
        self.offset = offset / offset.norm() * cfg.mean_offset

    def _rows(self, n: int, g: torch.Generator) -> Tensor:
        cfg = self.cfg
        fires = torch.rand(n, cfg.n_features, generator=g) < self.probs
        rows, feats = fires.nonzero(as_tuple=True)
        mags = torch.rand(rows.shape[0], generator=g) + 0.5
        x = torch.zeros(n, self.d_in)
        x.index_add_(0, rows, self.ground_truth[feats] * mags[:, None])
        x += self.offset
        if cfg.noise_std > 0:
            x += cfg.noise_std * torch.randn(n, self.d_in, generator=g)
        if cfg.tiny_row_fraction > 0 or cfg.huge_row_fraction > 0:
            u = torch.rand(n, generator=g)
            scale = torch.ones(n)
            scale[u < cfg.tiny_row_fraction] = 1e-6
            scale[u > 1 - cfg.huge_row_fraction] = 1e3
            x *= scale[:, None]
        return x

    def batch(self, step: int, batch_size: int) -> Tensor:
        return self._rows(batch_size, _generator(self.seed, step))

    def eval_set(self, n_rows: int) -> Tensor:
        return self._rows(n_rows, _generator(self.seed, _EVAL_STREAM))

    def describe(self) -> dict:
        return {
            "name": "synthetic",
            "d_in": self.d_in,
            "n_features": self.cfg.n_features,
            "expected_active": float(self.probs.sum()),
            "always_on_features": int((self.probs >= 1).sum()),
        }


class TensorSource:
    """Rows of an in-memory tensor [N, d_in]. The last ``eval_rows`` rows are held out; training
    batches walk a seeded permutation of the rest, a new permutation each epoch."""

    def __init__(self, x: Tensor, eval_rows: int, seed: int = 0, name: str = "tensor"):
        if x.ndim != 2:
            raise ValueError(f"{name}: activations must be 2-D [rows, d_in], got shape {tuple(x.shape)}")
        if x.shape[0] <= eval_rows:
            raise ValueError(f"{name}: {x.shape[0]} rows is not more than eval_rows={eval_rows}")
        bad = ~torch.isfinite(x).all(-1)
        if bad.any():
            raise ValueError(f"{name}: row {int(bad.nonzero()[0])} contains NaN or Inf")
        self.x = x.float()
        self.train_rows = x.shape[0] - eval_rows
        self.d_in, self.seed, self.name = x.shape[1], seed, name
        self.ground_truth = None

    def batch(self, step: int, batch_size: int) -> Tensor:
        n = self.train_rows
        start = step * batch_size
        idx = []
        while len(idx) < batch_size:  # batches may straddle an epoch boundary
            epoch, pos = divmod(start + len(idx), n)
            perm = torch.randperm(n, generator=_generator(self.seed, epoch))
            idx.extend(perm[pos : pos + batch_size - len(idx)].tolist())
        return self.x[torch.tensor(idx)]

    def eval_set(self, n_rows: int) -> Tensor:
        return self.x[self.train_rows :][:n_rows]

    def describe(self) -> dict:
        return {"name": self.name, "d_in": self.d_in, "train_rows": self.train_rows}


def make_source(cfg: RunConfig) -> Source:
    """The source named by ``cfg.data.source``. A source with a fixed width (a model, a file)
    rejects a different explicit ``sae.d_in``; 0 means "take it from the source"."""
    name = cfg.data.source
    if name == "synthetic":
        return SyntheticSource(cfg.data, cfg.sae.d_in or SYNTHETIC_D_IN, cfg.seed)
    if name == "minilm" or name.startswith("hf:"):
        from saelab.transformer import make_transformer_source

        return make_transformer_source(cfg)
    if name.startswith("file:"):
        from saelab.files import make_file_source

        return make_file_source(cfg)
    raise ValueError(f"data.source={name!r} is unknown; use synthetic | minilm | hf:<model> | file:<path>")


def resolve(cfg: RunConfig, source: Source) -> RunConfig:
    """The config with ``sae.d_in`` set to the source's width (checked when given explicitly)."""
    if cfg.sae.d_in and cfg.sae.d_in != source.d_in:
        raise ValueError(
            f"sae.d_in={cfg.sae.d_in} but data.source={cfg.data.source!r} has width {source.d_in}; "
            f"set sae.d_in={source.d_in} or 0 (take it from the source)"
        )
    return dataclasses.replace(cfg, sae=dataclasses.replace(cfg.sae, d_in=source.d_in))


def norm_summary(x: Tensor) -> dict[str, float]:
    """Row-norm statistics of a sample, for logs."""
    n = x.norm(dim=-1)
    return {"min": float(n.min()), "median": float(n.median()), "max": float(n.max()), "sqrt_d_in": math.sqrt(x.shape[-1])}
