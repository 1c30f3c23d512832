"""Activation sources. Every source serves ``batch(step, batch_size)`` as a pure function of
(seed, step), so arms in lockstep see identical batches and a resumed run sees the batches it
would have seen; ``eval_set(n)`` is a fixed held-out set that training never draws.

Sources by name (``data.source``): synthetic (here, with ground truth), minilm and hf:<model>
(saelab.data.transformer), file:<path> (saelab.data.files).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from saelab.config import DataConfig, RunConfig
from saelab.data.transformer import make_transformer_source
from saelab.data.files import make_file_source

SYNTHETIC_D_IN = 768  # the seed's hidden size
_EVAL_STREAM = 2**40  # generator offset that keeps the held-out draws apart from training steps
_DOC_STREAM = 2**41  # ... the documents' feature subsets (data.order = ordered)
_REFILL_STREAM = 2**42  # ... and the kept rows that stand in for dropped ones (data.drop_norm_above)
MEDIAN_ROWS = 4096  # rows the median row norm is measured on (sink rows, data.drop_norm_above)


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
    U(0.5, 1.5). Optional: a constant offset of norm ``mean_offset``, Gaussian noise, rows
    scaled by 1e-6 (tiny) or 1e3 (huge) to stress normalization, and sink rows: a fraction
    ``outlier_fraction`` of rows replaced by one fixed unit direction at ``outlier_norm`` times the
    median norm of the other rows (attention sinks and BOS positions in real residual streams).

    ``order = "ordered"``: the training stream is a sequence of documents of ``document_rows``
    consecutive rows. Document j draws its own subset of the features the way a row draws its
    active ones (feature i with probability p_i); inside it feature i fires with probability
    (1 - w) p_i + w [i in document j's subset] (w = ``document_features``). Over documents that is
    p_i again, independently per feature, so each row of the ordered stream has exactly the
    shuffled stream's distribution: only the order differs (consecutive rows share a topic and the
    stream drifts). The held-out set is the shuffled one in both orders.
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
        self.sink = None
        if cfg.outlier_fraction > 0:  # one fixed direction at outlier_norm x the median norm of the other rows
            gs = _generator(seed, -2)
            sink = torch.randn(d_in, generator=gs)
            clean = dataclasses.replace(cfg, outlier_fraction=0.0)
            median = float(SyntheticSource(clean, d_in, seed)._rows(MEDIAN_ROWS, gs).norm(dim=-1).median())
            self.sink = sink / sink.norm() * cfg.outlier_norm * median

    def _doc_probs(self, doc: int) -> Tensor:
        """Firing probabilities [F] inside document ``doc`` of the ordered stream (class docstring)."""
        p, w = self.probs.to(torch.float64), self.cfg.document_features
        topic = torch.rand(p.numel(), generator=_generator(self.seed, _DOC_STREAM + doc), dtype=torch.float64) < p
        return ((1 - w) * p + w * topic).to(torch.float32)

    def _rows(self, n: int, g: torch.Generator, probs: Tensor | None = None) -> Tensor:
        """n rows; every (row, feature) pair is active independently with probability probs[feature].

        Drawing one uniform per pair costs n * n_features draws for about n * mean_active actives.
        Instead each feature's active rows are found by geometric skipping (Devroye 1986, ch. X.2):
        the gap to the next active row is 1 + floor(log U / log(1 - p)), U ~ U(0, 1], which gives
        exactly the Bernoulli(p) pattern down the column. Each feature gets enough gaps to pass row n
        with overwhelming probability (mean + 4 sd + 3, never more than n + 1, which always suffices);
        a feature that still falls short draws more. About 20x fewer draws than one per pair at
        4096 features; deterministic in the generator's state. ``probs`` (a document's) replaces the
        source's firing probabilities."""
        cfg = self.cfg
        plans = self.__dict__.setdefault("_skip_plans", {}) if probs is None else {}
        rows, feats = _active_pairs(self.probs if probs is None else probs, n, g, plans)
        mags = torch.rand(rows.shape[0], generator=g) + 0.5
        # x[r] = sum of mags * ground_truth[feat] over row r's actives: one embedding bag per row
        order = rows.argsort(stable=True)
        offsets = torch.zeros(n, dtype=torch.int64)
        offsets[1:] = torch.bincount(rows, minlength=n)[:-1].cumsum(0)
        x = F.embedding_bag(feats[order], self.ground_truth, offsets, mode="sum", per_sample_weights=mags[order])
        x += self.offset
        if cfg.noise_std > 0:
            x += cfg.noise_std * torch.randn(n, self.d_in, generator=g)
        if cfg.tiny_row_fraction > 0 or cfg.huge_row_fraction > 0:
            u = torch.rand(n, generator=g)
            scale = torch.ones(n)
            scale[u < cfg.tiny_row_fraction] = 1e-6
            scale[u > 1 - cfg.huge_row_fraction] = 1e3
            x *= scale[:, None]
        if self.sink is not None:
            x[torch.rand(n, generator=g) < cfg.outlier_fraction] = self.sink
        return x

    def batch(self, step: int, batch_size: int) -> Tensor:
        g = _generator(self.seed, step)
        if self.cfg.order == "shuffled":
            return self._rows(batch_size, g)
        # ordered: stream rows [step B, (step + 1) B), each part drawn with its document's probabilities
        R, start, parts = self.cfg.document_rows, step * batch_size, []
        while start < (step + 1) * batch_size:
            stop = min((start // R + 1) * R, (step + 1) * batch_size)
            parts.append(self._rows(stop - start, g, self._doc_probs(start // R)))
            start = stop
        return torch.cat(parts)

    def eval_set(self, n_rows: int) -> Tensor:
        return self._rows(n_rows, _generator(self.seed, _EVAL_STREAM))

    def describe(self) -> dict:
        return {
            "name": "synthetic",
            "d_in": self.d_in,
            "n_features": self.cfg.n_features,
            "expected_active": float(self.probs.sum()),
            "always_on_features": int((self.probs >= 1).sum()),
            "order": self.cfg.order,
            **({"document_rows": self.cfg.document_rows, "document_features": self.cfg.document_features}
               if self.cfg.order == "ordered" else {}),
            **({"sink_rows": self.cfg.outlier_fraction, "sink_norm": float(self.sink.norm())} if self.sink is not None else {}),
        }


class _SkipPlan:
    """Which features draw how many geometric gaps for a column of n rows, laid out flat (the part
    of the geometric-skipping sampler that depends only on the probabilities and n)."""

    def __init__(self, p: Tensor, feats: Tensor, n: int, sds: float = 4.0, extra: int = 3):
        """p [F] float64 probabilities; feats: the features to walk; each draws
        ceil(mean + sds * sd + extra) gaps for its Binomial(n, p) count, at most n + 1."""
        mean = n * p[feats]
        draws = (mean + sds * (mean * (1 - p[feats])).sqrt() + extra).ceil().clamp_max(n + 1).long()
        draws[p[feats] <= 0] = 0
        self.feats, self.n = feats, n
        self.feat = feats.repeat_interleave(draws)  # feature of each draw [M]
        seg = torch.arange(feats.numel()).repeat_interleave(draws)  # segment of each draw [M]
        ends = draws.cumsum(0)
        self.first, self.last = (ends - draws)[seg], ends - 1  # per draw: its segment's first; per segment: its last
        self.log_q = torch.log1p(-p)[self.feat]  # -inf where p = 1: every gap is then 1
        self.nonempty = draws > 0

    def walk(self, g: torch.Generator, start: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Active (rows, feats) found from rows ``start[feats]`` on, and the features whose column
        is not yet walked past row n - 1 with the row to resume from."""
        n = self.n
        u = torch.rand(self.feat.shape[0], generator=g, dtype=torch.float64)  # [0, 1)
        gap = torch.log1p(-u).div_(self.log_q).floor_().add_(1).clamp_max_(n + 1)  # >= 1; capped, still past n
        csum = gap.cumsum(0)
        pos = csum - (csum - gap)[self.first] + start[self.feat] - 1  # running row within each feature
        keep = pos < n
        last = torch.full((self.feats.numel(),), float(n), dtype=torch.float64)
        last[self.nonempty] = pos[self.last[self.nonempty]]
        short = last < n - 1
        return pos[keep].long(), self.feat[keep], self.feats[short], last[short] + 1


def _active_pairs(probs: Tensor, n: int, g: torch.Generator, plans: dict) -> tuple[Tensor, Tensor]:
    """(rows, feats) int64 [nnz] of the active pairs for SyntheticSource._rows, by geometric skipping
    down each feature's column of n rows (see there). ``plans`` caches the first walk's layout per n."""
    p = probs.to(torch.float64)
    if n not in plans:
        plans[n] = _SkipPlan(p, torch.arange(p.numel()), n)
    start = torch.zeros(p.numel(), dtype=torch.float64)
    rows, feats, todo, resume = plans[n].walk(g, start)
    out_rows, out_feats = [rows], [feats]
    while todo.numel():  # rare: a feature fired more often than its draws covered
        start[todo] = resume
        rows, feats, todo, resume = _SkipPlan(p, todo, n).walk(g, start)
        out_rows.append(rows), out_feats.append(feats)
    return torch.cat(out_rows), torch.cat(out_feats)


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


class NormFilter:
    """A source without its high-norm rows (``data.drop_norm_above``): rows whose norm is above
    ``factor`` times the median row norm of the first MEDIAN_ROWS training rows are dropped from
    training batches and from the held-out set. A training batch keeps its size: each dropped row
    is replaced by a copy of a kept row of the same batch (chosen by a generator seeded by the
    step, so a batch is still a pure function of the step). ``last_dropped`` counts the rows the
    latest ``batch`` call dropped (the trainer sums them into dropped_rows events); ``eval_dropped``
    those left out of the held-out set, which is that much shorter."""

    def __init__(self, inner: Source, factor: float, batch_size: int, seed: int):
        self.inner, self.factor, self.seed = inner, factor, seed
        self.d_in, self.ground_truth = inner.d_in, inner.ground_truth
        rows, step = [], 0
        while sum(r.shape[0] for r in rows) < MEDIAN_ROWS and step < 1000:
            rows.append(inner.batch(step, batch_size))
            step += 1
        self.median = float(torch.cat(rows).norm(dim=-1).median())
        self.threshold = factor * self.median
        self.last_dropped, self.eval_dropped = 0, 0

    def batch(self, step: int, batch_size: int) -> Tensor:
        x = self.inner.batch(step, batch_size)
        keep = x.norm(dim=-1) <= self.threshold
        self.last_dropped = int((~keep).sum())
        if not self.last_dropped:
            return x
        if not keep.any():
            raise ValueError(f"data.drop_norm_above={self.factor:g} drops every row of batch {step} (norms above "
                             f"{self.threshold:.3g} = {self.factor:g} x the median {self.median:.3g}); raise it or set 0")
        kept = keep.nonzero().flatten()
        pick = torch.randint(kept.numel(), (self.last_dropped,), generator=_generator(self.seed, _REFILL_STREAM + step))
        out = x.clone()
        out[~keep] = x[kept[pick]]
        return out

    def eval_set(self, n_rows: int) -> Tensor:
        x = self.inner.eval_set(n_rows)
        keep = x.norm(dim=-1) <= self.threshold
        self.eval_dropped = int((~keep).sum())
        if not keep.any():
            raise ValueError(f"data.drop_norm_above={self.factor:g} drops every held-out row; raise it or set 0")
        return x[keep]

    def describe(self) -> dict:
        return {**self.inner.describe(), "drop_norm_above": self.factor, "median_norm": self.median,
                "dropped_eval_rows": self.eval_dropped}

    def __getattr__(self, name: str):  # the inner source's other attributes (label, skipped_rows, ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def make_source(cfg: RunConfig) -> Source:
    """The source named by ``cfg.data.source``, without its high-norm rows under
    ``data.drop_norm_above`` (``NormFilter``). A source with a fixed width (a model, a file)
    rejects a different explicit ``sae.d_in``; 0 means "take it from the source"."""
    name = cfg.data.source
    if name == "synthetic":
        source: Source = SyntheticSource(cfg.data, cfg.sae.d_in or SYNTHETIC_D_IN, cfg.seed)
    elif name == "minilm" or name.startswith("hf:"):
        source = make_transformer_source(cfg)
    elif name.startswith("file:"):
        source = make_file_source(cfg)
    else:
        raise ValueError(f"data.source={name!r} is unknown; use synthetic | minilm | hf:<model> | file:<path>")
    if cfg.data.drop_norm_above > 0:
        return NormFilter(source, cfg.data.drop_norm_above, cfg.data.batch_size, cfg.seed)
    return source


def resolve(cfg: RunConfig, source: Source) -> RunConfig:
    """The config with ``sae.d_in`` set to the source's width (checked when given explicitly)."""
    if cfg.sae.d_in and cfg.sae.d_in != source.d_in:
        raise ValueError(
            f"sae.d_in={cfg.sae.d_in} but data.source={cfg.data.source!r} has width {source.d_in}; "
            f"set sae.d_in={source.d_in} or 0 (take it from the source)"
        )
    return dataclasses.replace(cfg, sae=dataclasses.replace(cfg.sae, d_in=source.d_in))
