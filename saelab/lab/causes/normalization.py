"""Phase 04: does input normalization, or an uncentered input, kill latents? (seeds/004 Bug #4; lab H8.)
Also the encoder's initialization (H11, H21), the data's order and sink rows (H22, H23), its rank (H24) and its
anisotropy (H26), its first position (BOS rows, H27)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from saelab.config import RunConfig
from saelab.data.sources import MEDIAN_ROWS, make_source
from saelab.lab import datacheck
from saelab.lab.hypothesis import Arm, Context, Hypothesis, Phase, best_fix, compared, judged, removes_deaths
from saelab.lab.verdicts import RunsBySeed, at_step, per_seed, pm, rule, stats, tail

STEM = "04_normalization"
MODES = ("none", "constant_norm_rescale", "constant_norm_rescale_clamped", "dataset_scalar", "layer_norm")
CENTER = ("sae.b_dec_init", "sae.apply_b_dec_to_input")


def fvu_guard(runs: RunsBySeed, ref: str, fix: str, result: dict[str, Any]) -> dict[str, Any]:
    """A fix that spares latents by reconstructing worse is no fix: a confirmed result becomes
    inconclusive when the fix's final FVU in the original activation space (comparable across
    normalizations) is higher than the reference's in some replicate."""
    worse = [tail(a[fix], "fvu_orig") > tail(a[ref], "fvu_orig") for a in runs.values() if ref in a and fix in a]
    fv = {arm: per_seed(runs, arm, lambda r: tail(r, "fvu_orig")) for arm in (ref, fix)}
    result = dict(result)
    result["effect"] += f"; final FVU (original space): {ref} {pm(fv[ref], False)}, {fix} {pm(fv[fix], False)}"
    result["numbers"] = result["numbers"] | {f"{ref}_fvu_orig": stats(fv[ref])["mean"], f"{fix}_fvu_orig": stats(fv[fix])["mean"]}
    if result["word"] == "confirmed" and any(worse):
        result["word"] = "inconclusive"
        result["effect"] += " (fewer deaths, but worse reconstruction)"
    return result


SEED_ROW_FRACTION = 0.01  # tiny and huge rows each, for the seed's Bug #4 in the lab's first case


def _shared(base: Any, params: Mapping[str, Any], default_case: bool) -> dict[str, Any]:
    """Tiny- and huge-norm rows for the seed's Bug #4 (synthetic sources only): every arm of the
    phase sees the same rows, the base included. By default (None) only in the lab's first case
    (the seed's Test 1): on the user's own base the phase tests their data as it is, so that its
    base is the same setup the other phases judge (1% rows at 1e3 would change the
    dataset-scalar constant, and with it the deaths, of a base with sink rows)."""
    if base.data.source != "synthetic":
        return {}
    out = {}
    for name, path in (("data_tiny_row_fraction", "data.tiny_row_fraction"), ("data_huge_row_fraction", "data.huge_row_fraction")):
        value = params[name]
        if value is None:
            value = SEED_ROW_FRACTION if default_case else None
        if value is not None:
            out[path] = value
    return out


def _mode_arms(ctx: Context) -> list[Arm]:
    modes = ctx.params["normalize_mode"]
    if not isinstance(modes, (list, tuple)) or any(m not in MODES for m in modes):
        raise ValueError(f"normalize_mode={modes!r}: a list of modes from {list(MODES)}")
    clamp = ctx.params["normalize_clamp_min"]
    out = []
    for m in modes:
        if m == ctx.base.normalize.mode:
            continue
        ch: dict[str, Any] = {"normalize.mode": m}
        if m == "constant_norm_rescale_clamped" and clamp != ctx.base.normalize.clamp_min:
            ch["normalize.clamp_min"] = clamp
        out.append(Arm("clamped" if m.endswith("clamped") else m, ch))
    return out


def _judge_mode(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H4 · the base's normalization kills latents: the best other mode vs the base by
    ``hypothesis.removes_deaths``, with ``fvu_guard`` (the original-space FVU must not get worse)."""
    name, r = best_fix(runs, "base", [a.name for a in arms])
    r = fvu_guard(runs, "base", name, r)
    rest = [a.name for a in arms if a.name != name]
    effect = f"best other mode {name}: {r['effect']}" + "".join(
        f"; {a}: " + removes_deaths(runs, "base", a)["effect"].split("; final")[0] for a in rest)
    return judged(H4, STEM, r["word"], effect, r["numbers"] | {"best": name}, compared({a.name: dict(a.changes) for a in arms},
                  *[a.name for a in arms]), claim=f"the base's input normalization ({ctx.base.normalize.mode}) kills latents", fix=name)


def _rescales(ctx: Context) -> str | None:
    mode = ctx.base.normalize.mode
    return None if mode == "constant_norm_rescale" else (
        f"the base does not divide each row by its own norm without a clamp (normalize.mode={mode})")


def _judge_small_norms(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H4a · dividing by small norms creates huge values (seed Hypothesis 4a). From the base's
    Task 5.1 numbers (norm_* columns, training batches): confirmed when some normalized row is
    non-finite or longer than 2 sqrt(d_in) in any replicate; refuted when, in every replicate,
    every normalized row has norm within 1% of sqrt(d_in) and none is non-finite."""
    rows = []
    for a in runs.values():
        r, d = a["base"], a["base"].config.sae.d_in
        m = r.metrics
        get = lambda c, f: float(f(m[c].to_numpy(np.float64))) if c in m else float("nan")  # noqa: E731
        rows.append({"out_max": get("norm_out_norm_max", np.nanmax) / d ** 0.5, "out_min": get("norm_out_norm_min", np.nanmin) / d ** 0.5,
                     "nonfinite": get("norm_n_nonfinite", np.nansum), "x_min": get("norm_x_norm_min", np.nanmin),
                     "coef_max": get("norm_coef_max", np.nanmax)})
    bad = [x["nonfinite"] > 0 or x["out_max"] > 2 for x in rows]
    word = "confirmed" if any(bad) else rule([], [x["nonfinite"] == 0 and abs(x["out_max"] - 1) <= 0.01 and
                                                  abs(x["out_min"] - 1) <= 0.01 for x in rows])
    effect = (f"smallest ||x|| {min(x['x_min'] for x in rows):.3g} got coefficient up to {max(x['coef_max'] for x in rows):.3g}; "
              f"normalized norms / sqrt(d_in) in [{min(x['out_min'] for x in rows):.4f}, {max(x['out_max'] for x in rows):.4f}]; "
              f"non-finite rows {sum(x['nonfinite'] for x in rows):.0f}")
    return judged(H4A, STEM, word, effect, {"min_x_norm": min(x["x_min"] for x in rows), "max_coef": max(x["coef_max"] for x in rows),
                                            "max_out_over_sqrt_d": max(x["out_max"] for x in rows),
                                            "nonfinite_rows": sum(x["nonfinite"] for x in rows)})


def _uncentered(ctx: Context) -> str | None:
    s = ctx.base.sae
    if s.b_dec_init != "zeros" and s.apply_b_dec_to_input:
        return f"the base already starts b_dec at the data's {s.b_dec_init} and subtracts it before the encoder"
    center = ctx.params["sae_b_dec_init"]
    if center not in (None, "mean", "geometric_median"):
        raise ValueError(f"sae_b_dec_init={center!r}: choose mean, geometric_median, or None for no centered arm")
    return None if center else "not asked for (sae_b_dec_init=None)"


def _judge_center(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H8 · an uncentered input kills latents from the start: with a shared offset in the data and
    b_dec at zero, the offset pushes many latents' pre-activations below 0 on every row. The
    ``centered`` arm starts b_dec at the data's center and subtracts it before the encoder
    (Bricken 2023); base vs centered by ``removes_deaths`` with ``fvu_guard``. Also reports the
    dead fraction before any update."""
    r = fvu_guard(runs, "base", "centered", removes_deaths(runs, "base", "centered"))
    start = {a: per_seed(runs, a, lambda x: at_step(x, "dead_frac", 0)) for a in ("base", "centered")}
    effect = f"dead before any update: base {pm(start['base'])}, centered {pm(start['centered'])}; " + r["effect"]
    return judged(H8, STEM, r["word"], effect, r["numbers"] | {"base_dead_step0": stats(start["base"])["mean"],
                                                              "centered_dead_step0": stats(start["centered"])["mean"]},
                  compared({a.name: dict(a.changes) for a in arms}, "centered"), fix="centered")


def _judge_init(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H11 · the encoder's initialization kills latents: base vs the other init (``tied``: the
    encoder starts as the decoder's transpose, Gao 2024 / Conerly 2024, which they report leaves
    fewer dead latents; or ``kaiming``, independent rows) by ``removes_deaths``."""
    name = arms[0].name
    r = removes_deaths(runs, "base", name)
    return judged(H11, STEM, r["word"], r["effect"], r["numbers"], compared({a.name: dict(a.changes) for a in arms}, name),
                  fix=name, claim=f"the encoder init ({ctx.base.sae.init}) kills latents")


def _negative_b_enc(ctx: Context) -> str | None:
    b = ctx.base.sae.b_enc_init
    return None if b < 0 else f"the base's encoder bias does not start negative (sae.b_enc_init={b:g})"


def _judge_b_enc(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H21 · a negative encoder bias init kills latents at init: a latent whose w.x + b_enc starts
    below zero on every row never fires, and a ReLU latent that never fires gets no gradient, so it
    never recovers. Base vs b_enc started at 0 (nn.Linear-style; Bricken 2023, Gao 2024) by
    ``removes_deaths``; also reports the dead fraction before any update."""
    r = removes_deaths(runs, "base", "b_enc_zero")
    start = {a: per_seed(runs, a, lambda x: at_step(x, "dead_frac", 0)) for a in ("base", "b_enc_zero")}
    effect = f"dead before any update: base {pm(start['base'])}, b_enc_zero {pm(start['b_enc_zero'])}; " + r["effect"]
    return judged(H21, STEM, r["word"], effect, r["numbers"] | {"base_dead_step0": stats(start["base"])["mean"],
                                                               "b_enc_zero_dead_step0": stats(start["b_enc_zero"])["mean"]},
                  compared({a.name: dict(a.changes) for a in arms}, "b_enc_zero"), fix="b_enc_zero",
                  claim=f"the negative encoder bias init (sae.b_enc_init={ctx.base.sae.b_enc_init:g}) kills latents at init")


def _ordered(ctx: Context) -> str | None:
    return None if ctx.base.data.order == "ordered" else "the base's training stream is already shuffled (data.order=shuffled)"


def _judge_order(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H22 · an unshuffled stream kills latents: consecutive batches from one document (or one
    stretch of a file) drift, so the SAE keeps re-fitting to the current stretch and latents of
    what is absent there are pushed below zero for thousands of rows at a time. Base vs the same
    rows shuffled (data.order=shuffled; synthetic: the same mixture of documents, the same held-out
    set) by ``removes_deaths``."""
    r = removes_deaths(runs, "base", "shuffled")
    return judged(H22, STEM, r["word"], r["effect"], r["numbers"], compared({a.name: dict(a.changes) for a in arms}, "shuffled"),
                  fix="shuffled")


SINK_FACTOR = 10.0  # rows above this multiple of the median norm count as high-norm (datacheck.check's 10x)


@functools.lru_cache(maxsize=8)
def _rows_above(data: Any, d_in: int, eval_rows: int, factor: float) -> tuple[int, int, float]:
    """(rows above ``factor`` x the median norm, rows looked at, max / median) among the first
    MEDIAN_ROWS training rows of a non-synthetic source, shuffled (read once per source, cached)."""
    # shuffled: in an unshuffled stream the first rows are one document, not the data
    cfg = RunConfig(data=dataclasses.replace(data, drop_norm_above=0.0, order="shuffled")).with_overrides(
        {"sae.d_in": d_in, "eval_rows": eval_rows})
    source = make_source(cfg)
    x = torch.cat([source.batch(s, data.batch_size) for s in range(-(-MEDIAN_ROWS // data.batch_size))])
    norms = x.norm(dim=-1)
    med = float(norms.median())
    return int((norms > factor * med).sum()), int(norms.numel()), float(norms.max()) / med if med > 0 else float("inf")


def _has_sinks(ctx: Context) -> str | None:
    d = ctx.base.data
    if 0 < d.drop_norm_above <= SINK_FACTOR:
        return f"the base already drops rows above {d.drop_norm_above:g}x the median norm (data.drop_norm_above)"
    if d.source == "synthetic":
        return None if d.outlier_fraction > 0 else "the base's synthetic data plants no sink rows (data.outlier_fraction=0)"
    above, seen, ratio = _rows_above(d, ctx.base.sae.d_in, ctx.base.eval_rows, SINK_FACTOR)
    return None if above else (f"no row of the first {seen} training rows has a norm above {SINK_FACTOR:g}x the median "
                               f"(the largest is {ratio:.3g}x)")


def _judge_sinks(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H23 · high-norm sink rows kill latents: a few rows at tens to hundreds of times the median
    norm (attention sinks, BOS positions) dominate the reconstruction loss of their batch, so the
    update serves them and pushes the other latents' pre-activations down. Base vs the same data
    without rows above 10x the median norm (data.drop_norm_above=10; each arm's held-out set loses
    those rows too) by ``removes_deaths``. No FVU guard: the two arms' held-out rows differ.
    Measured on planted sink rows (tests/test_planted.py, benchmarks/planted_causes.py): under a
    dataset-wide scalar (normalize.mode=dataset_scalar) 2% of rows at 1000x the median inflate
    E||x|| about 20x, every other row shrinks as much, and 40% of the latents die (2% without the
    rows); with no normalization, or 2% at 100x under the scalar, the same kind of rows kill none."""
    r = removes_deaths(runs, "base", "drop_sinks")
    dropped = per_seed(runs, "drop_sinks", lambda x: float(sum(e.get("rows", 0) for e in x.events if e.get("kind") == "dropped_rows"
                                                              and e.get("where") == "training batches")))
    effect = r["effect"] + f"; training rows dropped per run: {pm(dropped, False)}"
    return judged(H23, STEM, r["word"], effect, r["numbers"] | {"dropped_training_rows": stats(dropped)["mean"]},
                  compared({a.name: dict(a.changes) for a in arms}, "drop_sinks"), fix="drop_sinks")


BOS_FACTOR = 3.0  # the first position counts as high-norm when its rows' mean norm is this multiple of the others' median:
# ordinary token rows of an LM layer mostly lie within 2x of their median, BOS rows at 5x to 100x+ depending on the layer
BOS_SEQUENCES = 64  # sequences the first position's norm is measured on (at least MEDIAN_ROWS rows)


@functools.lru_cache(maxsize=8)
def _first_position(data: Any, d_in: int, eval_rows: int) -> dict[str, Any]:
    """The norms by position of a non-synthetic source's first rows in file order (whole sequences of
    the source's ``sequence_rows``, at least BOS_SEQUENCES of them and MEDIAN_ROWS rows): the mean
    norm of the rows at position 0 over the median norm of the other rows (``ratio``), and the share
    of position-0 rows above SINK_FACTOR x the median of all rows (what H23's norm filter drops).
    ``why`` says why positions are unknown. Read once per source, cached."""
    cfg = RunConfig(data=dataclasses.replace(data, drop_norm_above=0.0, exclude_first_positions=0)).with_overrides(
        {"sae.d_in": d_in, "eval_rows": eval_rows})
    source = make_source(cfg)
    n_seq, total = getattr(source, "sequence_rows", 0), getattr(source, "file_rows", 0)
    if n_seq < 2:
        return {"why": "positions unknown: its sequences differ in length"}
    if total % n_seq:
        return {"why": f"positions unknown: its {total} rows are not whole sequences of data.context_length={n_seq} rows; "
                       "set data.context_length to the rows of one sequence"}
    n = min(total, max(BOS_SEQUENCES * n_seq, -(-MEDIAN_ROWS // n_seq) * n_seq))
    norms = np.linalg.norm(source.head(n).astype(np.float64), axis=1)
    first = (np.arange(n) % n_seq) == 0
    ok = np.isfinite(norms)
    rest = float(np.median(norms[ok & ~first]))
    bos = norms[ok & first]
    return {"ratio": float(bos.mean()) / rest if rest > 0 else float("inf"), "sequences": int(first.sum()), "sequence_rows": n_seq,
            "above_sink": float((bos > SINK_FACTOR * np.median(norms[ok])).mean())}


def _has_bos(ctx: Context) -> str | None:
    d = ctx.base.data
    if d.exclude_first_positions > 0:
        return f"the base already drops the first {d.exclude_first_positions} position(s) of every sequence (data.exclude_first_positions)"
    if d.source == "synthetic":
        return "the synthetic source's rows are independent: they have no positions (data.context_length applies to files and models)"
    m = _first_position(d, ctx.base.sae.d_in, ctx.base.eval_rows)
    if "why" in m:
        return m["why"]
    if m["ratio"] < BOS_FACTOR:
        return (f"the rows at position 0 of its {m['sequence_rows']}-row sequences have a mean norm {m['ratio']:.3g}x the other "
                f"rows' median, below {BOS_FACTOR:g}x")
    return None


def _judge_bos(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H27 · the first position's (BOS) rows kill latents: in real LMs the activation at the first
    token has a huge, nearly constant norm (5x to 100x+ the median, by layer); one row in every
    sequence pulls the early updates of many latents toward that one direction, and the ones it
    leaves behind fire on nothing else. Base vs the same rows without position 0 of each sequence
    (data.exclude_first_positions=1; held out too: SAELens #333's seqpos slice, sparsify #104's
    excluded tokens) by ``removes_deaths``. No FVU guard: the two arms' held-out rows differ.
    Distinct from H23: the position rule removes every BOS row whatever its norm, the 10x norm
    filter only those above it (the effect reports the share of BOS rows above 10x)."""
    r = removes_deaths(runs, "base", "exclude_bos")
    m = _first_position(ctx.base.data, ctx.base.sae.d_in, ctx.base.eval_rows)
    dropped = per_seed(runs, "exclude_bos", lambda x: float(sum(e.get("rows", 0) for e in x.events if e.get("kind") == "dropped_rows"
                                                               and e.get("where") == "positions")))
    effect = (f"position-0 rows at {m['ratio']:.3g}x the other rows' median norm, {100 * m['above_sink']:.0f}% of them above "
              f"{SINK_FACTOR:g}x the median (H23's cut); " + r["effect"] + f"; training rows dropped per run: {pm(dropped, False)}")
    return judged(H27, STEM, r["word"], effect, r["numbers"] | {"bos_norm_ratio": m["ratio"], "bos_above_sink": m["above_sink"],
                                                               "dropped_training_rows": stats(dropped)["mean"]},
                  compared({a.name: dict(a.changes) for a in arms}, "exclude_bos"), fix="exclude_bos")


@functools.lru_cache(maxsize=8)
def _rank(data: Any, d_in: int, eval_rows: int) -> dict[str, Any]:
    """``datacheck.rank_summary`` of the base's raw training rows (the first
    ``datacheck.spectrum_rows(d_in)`` of the stream shuffled; read once per source, cached)."""
    # shuffled: the first rows of an unshuffled stream are one document (one stretch of a file), and
    # one document's few features made a full-rank synthetic stream look low-rank (issue 21)
    cfg = RunConfig(data=dataclasses.replace(data, order="shuffled")).with_overrides({"sae.d_in": d_in, "eval_rows": eval_rows})
    source = make_source(cfg)
    m = datacheck.moments(source, datacheck.spectrum_rows(source.d_in))
    return datacheck.rank_summary(m["eigenvalues"], m["spectrum_rows"], source.d_in) | {"d_in": source.d_in}


def _low_rank(ctx: Context) -> str | None:
    s = ctx.base.sae
    if s.init_subspace > 0:
        return f"the base already starts its rows in the data's principal subspace (sae.init_subspace={s.init_subspace:g})"
    r = _rank(ctx.base.data, s.d_in, ctx.base.eval_rows)
    if r["rank99"] is None:
        return f"the data's covariance spectrum was not measured (d_in {r['d_in']} above {datacheck.SPECTRUM_MAX_D_IN}, or no variance)"
    if r["spectrum_rows"] < 2 * r["d_in"]:
        return f"too few rows ({r['spectrum_rows']}) to tell the rank of {r['d_in']} dimensions"
    if not datacheck.low_rank(r):
        return (f"the data is not low-rank: 99% of its variance takes {r['rank99']} of its {r['d_in']} directions "
                f"({100 * r['rank99_frac']:.0f}%, more than {100 * datacheck.LOW_RANK_FRACTION:.0f}%), so rows started "
                f"anywhere already lie mostly inside it")
    return None


def _judge_subspace(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H24 · low-rank activations kill latents started outside their subspace: when 99% of the
    variance lies in a few of the d_in directions (attention outputs: about 60%), a random row
    points mostly outside it, its decoder adds error wherever it fires and the gradient pushes it
    out of use for good (Wang et al. 2025, arXiv 2508.16929: 87% dead -> under 1% with rows started
    in the data's subspace). Base vs the same init projected onto the principal components that
    hold 99% of the data (sae.init_subspace=0.99) by ``removes_deaths``; the data's effective rank
    is reported beside it."""
    r = removes_deaths(runs, "base", "init_subspace")
    k = _rank(ctx.base.data, ctx.base.sae.d_in, ctx.base.eval_rows)
    effect = (f"99% of the variance in {k['rank99']} of {k['d_in']} directions, participation ratio "
              f"{k['participation_ratio']:.3g}; " + r["effect"])
    return judged(H24, STEM, r["word"], effect, r["numbers"] | {"rank99": k["rank99"], "rank99_frac": k["rank99_frac"],
                                                               "participation_ratio": k["participation_ratio"]},
                  compared({a.name: dict(a.changes) for a in arms}, "init_subspace"), fix="init_subspace")


# participation ratio (sum l)^2 / sum l^2 of the covariance's eigenvalues at or below this share of d_in:
# anisotropic. An isotropic spectrum gives d_in (sparse features along random directions: about 0.7
# d_in). On the planted rows (benchmarks/planted_causes.py, d_in 16, 2 loud directions) the loud ones at
# 3x the std of the rest give 0.35 d_in, at 10x 0.14, at 30x and 100x 0.13 and 0.12: a quarter of d_in
# is where the few loud directions hold most of the variance, and there (10x and more, TopK k=4 of 64
# latents) 33-37% of the latents die and whitening leaves 15%.
ANISOTROPY_PR_FRACTION = 0.25


def _anisotropic(ctx: Context) -> str | None:
    if ctx.base.normalize.mode == "whitening":
        return "the base already whitens its input (normalize.mode=whitening)"
    # without the sink rows (above SINK_FACTOR x the median norm): a few huge rows make any data look
    # anisotropic, and that is H23's cause (sparsify's sink fixture: whitening outranked dropping them)
    d = ctx.base.data
    r = _rank(d if d.source == "synthetic" or 0 < d.drop_norm_above <= SINK_FACTOR
              else dataclasses.replace(d, drop_norm_above=SINK_FACTOR), ctx.base.sae.d_in, ctx.base.eval_rows)
    if r["participation_ratio"] is None:
        return f"the data's covariance spectrum was not measured (d_in {r['d_in']} above {datacheck.SPECTRUM_MAX_D_IN}, or no variance)"
    if r["spectrum_rows"] < 2 * r["d_in"]:
        return f"too few rows ({r['spectrum_rows']}) to tell the spectrum of {r['d_in']} dimensions"
    pr = r["participation_ratio"]
    if pr > ANISOTROPY_PR_FRACTION * r["d_in"]:
        return (f"the data is not anisotropic: its covariance's participation ratio is {pr:.3g} of {r['d_in']} directions "
                f"({100 * pr / r['d_in']:.0f}%, above {100 * ANISOTROPY_PR_FRACTION:.0f}%; the top component holds "
                f"{100 * r['top1_variance_share']:.0f}% of the variance)")
    return None


def _judge_whitening(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H26 · anisotropic activations kill latents: when a few directions hold most of the variance,
    the reconstruction loss and every pre-activation are dominated by them, so latents whose rows
    point into the quiet directions never win (a TopK latent never enters the top k; a ReLU latent
    is out-fired) and stop getting gradient. Base vs the same input whitened (normalize.mode=whitening:
    ZCA, every direction at unit variance, measured back in the original space) by
    ``removes_deaths``; the spectrum's participation ratio and top-component shares, and both arms'
    final FVU in the original space, are reported beside it (whitening spends latents on the quiet
    directions, so the loud ones may be reconstructed worse; that is reported, not judged)."""
    r = removes_deaths(runs, "base", "whitening")
    k = _rank(ctx.base.data, ctx.base.sae.d_in, ctx.base.eval_rows)
    fv = {a: per_seed(runs, a, lambda x: tail(x, "fvu_orig")) for a in ("base", "whitening")}
    effect = (f"participation ratio {k['participation_ratio']:.3g} of {k['d_in']} directions, top component "
              f"{100 * k['top1_variance_share']:.0f}% and top 10% of components {100 * k['top10pct_variance_share']:.0f}% "
              f"of the variance; " + r["effect"] + f"; final FVU (original space): base {pm(fv['base'], False)}, "
              f"whitening {pm(fv['whitening'], False)}")
    numbers = r["numbers"] | {"participation_ratio": k["participation_ratio"], "top1_variance_share": k["top1_variance_share"],
                              "top10pct_variance_share": k["top10pct_variance_share"],
                              "base_fvu_orig": stats(fv["base"])["mean"], "whitening_fvu_orig": stats(fv["whitening"])["mean"]}
    return judged(H26, STEM, r["word"], effect, numbers, compared({a.name: dict(a.changes) for a in arms}, "whitening"),
                  fix="whitening")


H26 = Hypothesis("H26", "anisotropic activations: a few loud directions hold most of the variance, so latents of the quiet ones never win",
                 "cause", ("normalize.mode",), _anisotropic, lambda ctx: [Arm("whitening", {"normalize.mode": "whitening"})],
                 _judge_whitening, source="issue 21; Wang et al. 2025, arXiv 2508.16929 (anisotropic, low-rank activations); "
                                          "ZCA whitening (Bell & Sejnowski 1997)")
H24 = Hypothesis("H24", "low-rank activations: latents started outside the data's subspace stay dead", "cause", ("sae.init_subspace",),
                 _low_rank, lambda ctx: [Arm("init_subspace", {"sae.init_subspace": datacheck.VARIANCE_SHARE})], _judge_subspace,
                 source="Wang et al. 2025, arXiv 2508.16929 (attention outputs are low-rank; subspace init: 87% -> <1% dead)")
H21 = Hypothesis("H21", "a negative encoder bias init kills latents at init", "cause", ("sae.b_enc_init",), _negative_b_enc,
                 lambda ctx: [Arm("b_enc_zero", {"sae.b_enc_init": 0.0})], _judge_b_enc,
                 source="lab; Bricken 2023 and Gao 2024 start b_enc at 0")
H22 = Hypothesis("H22", "an unshuffled training stream kills latents", "cause", ("data.order",), _ordered,
                 lambda ctx: [Arm("shuffled", {"data.order": "shuffled"})], _judge_order,
                 source="lab; SAELens and sparsify mix activations in a shuffle buffer before training")
H23 = Hypothesis("H23", "high-norm sink rows (attention sinks, BOS) kill latents", "cause", ("data.drop_norm_above",), _has_sinks,
                 lambda ctx: [Arm("drop_sinks", {"data.drop_norm_above": SINK_FACTOR})], _judge_sinks,
                 source="dictionary_learning PR 52 (25%+ dead early from rows with norm > 100x the median); "
                        "Xiao et al. 2023 (attention sinks)")

H27 = Hypothesis("H27", "the first position's (BOS) rows kill latents", "cause", ("data.exclude_first_positions",), _has_bos,
                 lambda ctx: [Arm("exclude_bos", {"data.exclude_first_positions": 1})], _judge_bos,
                 source="SAELens #333 (ignore the BOS position by seqpos); sparsify #104 / PR 113 (exclude BOS/EOS tokens: "
                        "training unstable and FVU misleading without)")

H11 = Hypothesis("H11", "the encoder's initialization kills latents", "cause", ("sae.init",), lambda ctx: None,
                 lambda ctx: [Arm("init_kaiming" if ctx.base.sae.init == "tied" else "init_tied",
                                  {"sae.init": "kaiming" if ctx.base.sae.init == "tied" else "tied"})], _judge_init,
                 source="Gao et al. 2024; Conerly et al. 2024 (encoder = decoder transpose)")

H4 = Hypothesis("H4", "the input normalization kills latents", "cause", ("normalize.mode", "normalize.clamp_min"),
                lambda ctx: None, _mode_arms, _judge_mode, source="seeds/004 Bug #4")
H4A = Hypothesis("H4a", "dividing by small norms creates huge values", "fact", (), _rescales, lambda ctx: [], _judge_small_norms,
                 source="seeds/004 Hypothesis 4a, Task 5.1")
H8 = Hypothesis("H8", "an uncentered input (b_dec at zero, not subtracted) kills latents from the start", "cause", CENTER, _uncentered,
                lambda ctx: [Arm("centered", {"sae.b_dec_init": ctx.params["sae_b_dec_init"], "sae.apply_b_dec_to_input": True})],
                _judge_center, source="lab; Bricken 2023; Simon, Adams & Zou 2026 (outlier severity predicts dead-at-init)")

INTRO = """The seed's Bug #4: `x * sqrt(d_in) / ||x||` with no clamp could divide by near-zero norms. On synthetic
data every arm here sees the same rows scaled by 1e-6 and by 1e3 (the base included); the arms change only
the base's normalization: none, the seed's rescale, the same with the Task 5.1 clamp, a dataset-wide scalar,
layer norm (the base's own mode is not trained twice).

One more arm tests what the lab found (H8): with a shared offset in the data and a decoder bias that starts at
zero, the offset pushes many latents' pre-activations below zero on every row before training begins. The
`centered` arm is the base with `b_dec` started at the data's center and subtracted before the encoder
(Bricken 2023), nothing else changed. A last arm starts the encoder the other way (tied to the decoder's
transpose, or independent).

Where the base has them, three more single-factor arms: the encoder bias started at 0 instead of below it
(H21), the same stream shuffled instead of in document or file order (H22), and the same data without the
rows above 10x the median norm, the sink rows of attention sinks and BOS positions (H23). When 99% of the
data's variance lies in at most 75% of its directions (low-rank activations, such as attention outputs), one
arm starts every latent's rows inside that subspace instead of anywhere (H24). When a few directions hold most
of the variance (anisotropic activations: the covariance's participation ratio at most a quarter of d_in), one
arm whitens the input instead (ZCA: every direction at unit variance, its reconstruction mapped back to the
original space for the FVU), so latents of the quiet directions can win too (H26). Both may apply to the
same data: H24 changes where the rows start, H26 what the SAE sees. Where the rows are sequences
of `data.context_length` rows (a file or a model's cache) and the rows at position 0 (BOS) have a mean norm at
least 3x the other rows' median, one arm drops that position from every sequence, in training and held out,
whatever each row's norm (H27): unlike the 10x norm filter it also takes BOS rows at 5-8x the median."""

PHASE = Phase(
    STEM,
    "Input normalization, centering and initialization",
    "Do the input's normalization, its offset or the encoder's initialization kill latents?",
    INTRO,
    (H4, H4A, H8, H11, H21, H22, H23, H24, H26, H27),
    {
        "data_tiny_row_fraction": (
            "data.tiny_row_fraction",
            None,
            "fraction of rows scaled by 1e-6, in every arm (synthetic "
            "sources only); None: 1% in the lab's first case (the seed's Test 1), your base's otherwise",
        ),
        "data_huge_row_fraction": (
            "data.huge_row_fraction",
            None,
            "fraction of rows scaled by 1e3, in every arm (synthetic "
            "sources only); None: 1% in the lab's first case (the seed's Test 1), your base's otherwise",
        ),
        "normalize_mode": ("normalize.mode", list(MODES), "modes besides the base's"),
        "normalize_clamp_min": ("normalize.clamp_min", 1e-6, "the Task 5.1 clamp on ||x|| of the clamped arm"),
        "sae_b_dec_init": (
            "sae.b_dec_init",
            "geometric_median",
            "b_dec_init of the centered arm (H8): mean | geometric_median; None: no such arm",
        ),
    },
    (
        "The seed's Task 5.1 norm ranges; the centered decoder bias against the base",
        (
            "plots.norm_ranges(run.first())",
            'plots.training_curves({arm: r for arm, r in run.first().items() if arm in ("base", "centered")}, first="dead fraction")',
        ),
    ),
    shared=_shared,
)
