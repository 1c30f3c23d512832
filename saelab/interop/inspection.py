"""Which latents of a trained SAE are dead on the user's rows, how close each is to firing, and
the measurable reasons, each compared with the alive latents (``saelab inspect``).

Rows stream through the SAE in chunks (``chunk_rows``), so memory stays bounded by one chunk of
pre-activations whatever the file size; per-latent statistics accumulate in float64.

A latent is dead when its activation is never > 0 on the rows. Its margin is the largest, over
rows, of ``pre - gate``: the gate is 0 (ReLU), theta_i (JumpReLU), the threshold (BatchTopK in
eval) or max(k-th largest pre of the row, 0) (TopK); a margin <= 0 means it never fired.

Reasons for a dead latent (each needs alive latents to compare with; ``cutoff`` is stored):
  anti_aligned_mean   cos(W_enc_i, mean encoder input) below 0 and below the alive latents' 5th
                      percentile, and the mean alone pushes pre below zero by more than the row-to-row
                      spread of pre (W_enc_i . mu < -std_i): a shared offset in the data keeps the
                      latent off (Simon et al. 2026; the lab's H8)
  bias_far_below      b_enc_i more than 3 robust standard deviations (1.4826 MAD) below the alive median
  encoder_norm_collapsed  ||W_enc_i|| < 0.1 x the alive median
  decoder_duplicate   cosine of W_dec_i with some alive latent's W_dec row > 0.9 (the twin is named)
  never_in_topk       TopK only: pre > 0 on some rows, yet never among the row's k largest
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from saelab.config import DataConfig, RunConfig, SAEConfig
from saelab.data.files import open_segments
from saelab.data.sources import make_source
from saelab.interop.foreign import Checkpoint

DUPLICATE_COS = 0.9
NORM_COLLAPSE = 0.1
BIAS_ROBUST_Z = 3.0
ALIVE_QUANTILE = 0.05
MEASURE = {"anti_aligned_mean": "cos_mean", "bias_far_below": "b_enc", "encoder_norm_collapsed": "enc_norm"}
DEFAULT_ROWS = 8192  # held-out rows for sources other than files (files: every row unless --rows)
REMEDY = {
    "anti_aligned_mean": ("point against the data mean",
                          "centre the input: start b_dec at the data's mean or geometric median and subtract it "
                          "before the encoder (Bricken 2023; SAELens apply_b_dec_to_input)"),
    "bias_far_below": ("have an encoder bias far below the alive latents'",
                       "the penalty pushed their biases down with nothing pulling back: resample them or add a "
                       "revival loss (AuxK, Gao 2024; the lab's reanimation loss)"),
    "encoder_norm_collapsed": ("have a collapsed encoder row norm",
                               "their encoder rows shrank towards zero: resample them, and check weight decay or an "
                               "L1 on unnormalized decoder rows"),
    "decoder_duplicate": ("duplicate an alive latent's decoder direction (cosine > 0.9)",
                          "redundant dictionary slots: resample them or train fewer latents"),
    "never_in_topk": ("rise above zero but never make the top k",
                      "add the AuxK loss on dead latents (Gao 2024) or raise k"),
}


# ----- rows -----------------------------------------------------------------------------------


def row_chunks(source: str, d_in: int, rows: int, chunk_rows: int, seed: int = 0) -> tuple[Iterator[Tensor], dict]:
    """(iterator over float32 chunks [<= chunk_rows, d_in], description) of the rows to inspect.

    ``file:<path>``: the last ``rows`` rows of the file(s) (0: every row), read chunk by chunk.
    Other sources (synthetic, minilm, hf:): their held-out set of ``rows`` rows (0: DEFAULT_ROWS)."""
    if source.startswith("file:"):
        spec = source.removeprefix("file:")
        segments = open_segments(spec)
        width = segments[0].d_in
        _check_width(d_in, width, source)
        total = sum(s.rows for s in segments)
        n = total if rows <= 0 else min(rows, total)
        return _file_chunks(segments, total - n, total, chunk_rows), {"source": source, "rows": n, "file_rows": total}
    n = rows if rows > 0 else DEFAULT_ROWS
    data = DataConfig(source=source)
    cfg = RunConfig(sae=SAEConfig(d_in=d_in if source == "synthetic" else 0, d_sae=1), data=data, eval_rows=n, seed=seed)
    src = make_source(cfg)
    _check_width(d_in, src.d_in, source)
    x = src.eval_set(n)
    return (x[i:i + chunk_rows] for i in range(0, len(x), chunk_rows)), {"source": source, "rows": int(len(x))}


def _check_width(d_in: int, width: int, source: str) -> None:
    if width != d_in:
        raise ValueError(f"the SAE has d_in={d_in} but data {source!r} has rows of width {width}")


def _file_chunks(segments: list, start: int, stop: int, chunk_rows: int) -> Iterator[Tensor]:
    offset = 0
    for seg in segments:
        lo, hi = max(start, offset), min(stop, offset + seg.rows)
        for a in range(lo, hi, chunk_rows):
            b = min(a + chunk_rows, hi)
            x = seg.read(a - offset, b - offset)
            bad = ~np.isfinite(x).all(axis=1)
            if bad.any():
                raise ValueError(f"activation file {seg.path}: row {a - offset + int(bad.argmax())} contains NaN or Inf")
            yield torch.from_numpy(x)
        offset += seg.rows


def default_chunk_rows(d_sae: int) -> int:
    """Rows per chunk: about 16M pre-activations (64 MB float32) at a time."""
    return max(256, 2**24 // max(d_sae, 1))


# ----- statistics -----------------------------------------------------------------------------


def _gate(ckpt: Checkpoint, pre: Tensor) -> Tensor:
    """The value pre must exceed to fire: [S], [] or [B, 1] (see module docstring)."""
    m, arch = ckpt.model, ckpt.architecture
    if arch == "jumprelu":
        return m.log_threshold[0].exp()
    if arch == "batchtopk":
        return m.threshold[0].clamp_min(0)
    if arch == "topk":
        return pre.topk(m.cfg.k, dim=-1).values[:, -1:].clamp_min(0)
    return pre.new_zeros(())


@torch.no_grad()
def accumulate(ckpt: Checkpoint, chunks: Iterator[Tensor]) -> dict[str, Tensor]:
    """Stream rows through the SAE: per latent fire / positive counts, max pre, max margin, sum
    and sum of squares of pre; the sum of model inputs; the row count."""
    S, d = ckpt.d_sae, ckpt.d_in
    f64 = torch.float64
    st = {"n": 0, "fire": torch.zeros(S, dtype=torch.int64), "pos": torch.zeros(S, dtype=torch.int64),
          "max_pre": torch.full((S,), -math.inf, dtype=f64), "margin": torch.full((S,), -math.inf, dtype=f64),
          "sum_pre": torch.zeros(S, dtype=f64), "sum_pre2": torch.zeros(S, dtype=f64), "sum_in": torch.zeros(d, dtype=f64)}
    for x in chunks:
        xn = ckpt.model_input(x.float())
        pre, acts = ckpt.model.encode(xn.unsqueeze(0))
        pre, acts = pre[0], acts[0]
        st["n"] += x.shape[0]
        st["fire"] += (acts > 0).sum(0)
        st["pos"] += (pre > 0).sum(0)
        top = pre.amax(0).double()
        st["max_pre"] = torch.maximum(st["max_pre"], top)
        gate = _gate(ckpt, pre)  # for ReLU the gate is 0 and the margin is the max itself (no temporary)
        st["margin"] = torch.maximum(st["margin"], top if gate.ndim == 0 and float(gate) == 0 else (pre - gate).amax(0).double())
        st["sum_pre"] += pre.sum(0, dtype=torch.float64)  # accumulated in float64 without a float64 copy of pre
        st["sum_pre2"] += (pre * pre).sum(0, dtype=torch.float64)
        st["sum_in"] += xn.sum(0, dtype=torch.float64)
    if st["n"] == 0:
        raise ValueError("no rows to inspect")
    return st


def _q(x: Tensor, q: float) -> float | None:
    return float(torch.quantile(x.double(), q)) if x.numel() else None


def _med(x: Tensor) -> float | None:
    return _q(x, 0.5)


@torch.no_grad()
def decoder_twins(W_dec: Tensor, dead: Tensor, alive: Tensor, block: int = 1024) -> tuple[Tensor, Tensor]:
    """For each dead latent: the largest cosine of its decoder row with an alive latent's, and that
    alive latent's index (-1 when there is none). Blocks of dead rows keep memory at block x alive."""
    D = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    di, ai = dead.nonzero().flatten(), alive.nonzero().flatten()
    best = torch.full((len(di),), -math.inf, dtype=torch.float64)
    twin = torch.full((len(di),), -1, dtype=torch.int64)
    if len(ai):
        for s in range(0, len(di), block):
            c = D[di[s:s + block]] @ D[ai].T
            v, j = c.max(-1)
            best[s:s + block], twin[s:s + block] = v.double(), ai[j]
    return best, twin


def reasons(ckpt: Checkpoint, st: dict[str, Tensor]) -> dict[str, Any]:
    """Per-latent measures, the dead / alive split and, per reason, which dead latents it holds for."""
    m = ckpt.model
    W, b, W_dec = m.W_enc[0].double(), m.b_enc[0].double(), m.W_dec[0].double()
    n = st["n"]
    mu_in = st["sum_in"] / n - (m.b_dec[0].double() if m.cfg.apply_b_dec_to_input else 0)
    dead = st["fire"] == 0
    alive = ~dead
    enc_norm = W.norm(dim=-1)
    mean_term = W @ mu_in
    cos = mean_term / (enc_norm * mu_in.norm()).clamp_min(1e-30)
    var = (st["sum_pre2"] / n - (st["sum_pre"] / n).square()).clamp_min(0)
    std = var.sqrt()
    twin_cos, twin = decoder_twins(W_dec, dead, alive)
    measures = {"cos_mean": cos, "b_enc": b, "enc_norm": enc_norm}
    holds: dict[str, Tensor] = {}
    info: dict[str, dict[str, Any]] = {}
    have_alive = bool(alive.any())
    if have_alive:
        q05 = _q(cos[alive], ALIVE_QUANTILE)
        holds["anti_aligned_mean"] = dead & (cos < min(0.0, q05)) & (mean_term < -std)
        info["anti_aligned_mean"] = {"measure": "cos(W_enc, mean input)", "cutoff": min(0.0, q05)}
        b_alive = b[alive]
        med = _med(b_alive)
        mad = float((b_alive - med).abs().median()) * 1.4826
        scale = mad if mad > 0 else (float(b_alive.std()) if alive.sum() > 1 else 0.0) or 1e-6 * (1 + abs(med))
        holds["bias_far_below"] = dead & (b < med - BIAS_ROBUST_Z * scale)
        info["bias_far_below"] = {"measure": "b_enc", "cutoff": med - BIAS_ROBUST_Z * scale}
        cut = NORM_COLLAPSE * _med(enc_norm[alive])
        holds["encoder_norm_collapsed"] = dead & (enc_norm < cut)
        info["encoder_norm_collapsed"] = {"measure": "||W_enc||", "cutoff": cut}
        dup = torch.zeros_like(dead)
        dup[dead] = twin_cos > DUPLICATE_COS
        holds["decoder_duplicate"] = dup
        info["decoder_duplicate"] = {"measure": "max cos(W_dec, alive W_dec)", "cutoff": DUPLICATE_COS}
    if ckpt.architecture == "topk":
        holds["never_in_topk"] = dead & (st["pos"] > 0)
        info["never_in_topk"] = {"measure": "rows with pre > 0", "cutoff": 0}
    return {"dead": dead, "alive": alive, "measures": measures, "holds": holds, "info": info, "twin": twin,
            "twin_cos": twin_cos, "mean_term": mean_term, "std_pre": std, "mu_in_norm": float(mu_in.norm())}


# ----- the record -----------------------------------------------------------------------------


def histogram(fire_frac: Tensor, n_rows: int, bins_per_decade: int = 4) -> dict[str, Any]:
    """log10 firing frequency of the alive latents; the dead are counted apart (log10 0 = -inf)."""
    alive = fire_frac > 0
    lo = math.floor(math.log10(1 / n_rows) * bins_per_decade) / bins_per_decade
    edges = np.arange(lo, 0 + 1e-9 + 1 / bins_per_decade, 1 / bins_per_decade)
    counts, _ = np.histogram(np.log10(fire_frac[alive].numpy()), bins=edges)
    return {"edges": edges.round(4).tolist(), "counts": counts.tolist(), "dead": int((~alive).sum())}


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f}%" if b else "0%"


def verdict(rec: dict[str, Any]) -> str:
    """One paragraph: how many are dead, the reasons ranked by share of the dead with the fix for
    the leading one, and how far the dead are from firing."""
    S, nd, rows = rec["n_latents"], rec["n_dead"], rec["n_rows"]
    head = f"{nd} of {S} latents ({_pct(nd, S)}) never fired on {rows:,} rows of {rec['source']}."
    if nd == 0:
        return head + " Nothing to diagnose: every latent fires on these rows."
    if nd == S:
        return head + (" Every latent is dead, so no reason can be compared with alive latents: check that the "
                       "data is what the SAE was trained on (scale, layer, normalization).")
    ranked = sorted((r for r in rec["reason_summary"] if r["n"] > 0), key=lambda r: -r["n"])
    parts = []
    if ranked:
        top = ranked[0]
        parts.append(f"{_pct(top['n'], nd)} of the dead latents {REMEDY[top['name']][0]}: {REMEDY[top['name']][1]}.")
        if len(ranked) > 1:
            rest = "; ".join(f"{_pct(r['n'], nd)} {REMEDY[r['name']][0]}" for r in ranked[1:])
            parts.append(f"Also: {rest} (a latent can have several reasons).")
    unexplained = rec["n_dead_unexplained"]
    if unexplained:
        parts.append(f"{_pct(unexplained, nd)} of the dead have none of the measured reasons.")
    mg = rec["margin"]
    if mg["dead_median"] is not None and mg["alive_median"] is not None:
        parts.append(f"The dead latents' largest pre-activation sits a median {-mg['dead_median']:.3g} below firing; "
                     f"alive latents clear it by a median {mg['alive_median']:.3g}.")
    return " ".join([head, *parts])


def inspect(ckpt: Checkpoint, chunks: Iterator[Tensor], described: dict[str, Any] | None = None) -> dict[str, Any]:
    """The inspect.json record for the SAE in ``ckpt`` on the rows of ``chunks``."""
    st = accumulate(ckpt, chunks)
    r = reasons(ckpt, st)
    dead, alive = r["dead"], r["alive"]
    dead_idx = dead.nonzero().flatten().tolist()
    per_dead: dict[str, list[str]] = {str(i): [] for i in dead_idx}
    for name, mask in r["holds"].items():
        for i in mask.nonzero().flatten().tolist():
            per_dead[str(i)].append(name)
    summary = []
    for name, mask in r["holds"].items():
        if name == "decoder_duplicate":
            dead_vals, alive_vals = r["twin_cos"], torch.empty(0)
        elif name == "never_in_topk":
            dead_vals, alive_vals = st["pos"][dead].double(), st["pos"][alive].double()
        else:
            meas = r["measures"][MEASURE[name]]
            dead_vals, alive_vals = meas[dead], meas[alive]
        n = int(mask.sum())
        summary.append({"name": name, "n": n, "frac_of_dead": n / len(dead_idx) if dead_idx else 0.0,
                        "description": REMEDY[name][0], "remedy": REMEDY[name][1], **r["info"][name],
                        "dead_median": _med(dead_vals), "alive_median": _med(alive_vals)})
    twins = {str(i): int(t) for i, t, c in zip(dead_idx, r["twin"].tolist(), r["twin_cos"].tolist()) if c > DUPLICATE_COS}
    n_rows = st["n"]
    fire_frac = st["fire"].double() / n_rows
    margin = st["margin"]
    rec = {
        "checkpoint": str(ckpt.path), "format": ckpt.format, "architecture": ckpt.architecture,
        "library_architecture": ckpt.library_architecture, "notes": list(ckpt.notes),
        **(described or {}), "source": (described or {}).get("source", "rows"),
        "n_rows": n_rows, "n_latents": ckpt.d_sae, "d_in": ckpt.d_in,
        "n_dead": len(dead_idx), "dead_frac": len(dead_idx) / ckpt.d_sae, "dead": dead_idx,
        "reasons": per_dead, "reason_summary": summary, "decoder_twins": twins,
        "n_dead_unexplained": sum(1 for v in per_dead.values() if not v),
        "margin": {"dead_median": _med(margin[dead]), "dead_max": float(margin[dead].max()) if dead.any() else None,
                   "alive_median": _med(margin[alive])},
        "mean_input_norm": r["mu_in_norm"],
        "histogram": histogram(fire_frac, n_rows),
        "latents": {"fire_frac": fire_frac.tolist(), "margin": margin.tolist(), "max_pre": st["max_pre"].tolist(),
                    "cos_mean": r["measures"]["cos_mean"].tolist(), "b_enc": r["measures"]["b_enc"].tolist(),
                    "enc_norm": r["measures"]["enc_norm"].tolist()},
    }
    rec["verdict"] = verdict(rec)
    return rec
