"""The rule behind each hypothesis's verdict, one function per hypothesis, grouped by phase.

Each function takes ``{seed: {arm: Run}}`` and returns a verdict dict (``saelab.verdicts.verdict``)
or a list of them; its docstring states the rule and its thresholds. Arm names are those of
``saelab.phases``; an arm the rule needs that was not trained gives "inconclusive".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from saelab.schedules import lr_curve, max_relative_change
from saelab.verdicts import (CLEAR, L0_RANGE, SAME, RunsBySeed, at_step, collapses, dense_share, first_resample,
                             missing, paired, peak, per_seed, pm, rule, stats, tail, validation_verdicts, verdict)


def _before_resample(run: Any) -> int:
    """The last log step before the arm's first resampling (its final step if it never resamples)."""
    first, m = first_resample(run), run.metrics
    steps = m["step"].to_numpy()
    return int(steps[steps < first].max()) if first is not None and (steps < first).any() else int(steps[-1])


def _pre(column: str):
    return lambda r: at_step(r, column, _before_resample(r))


# ----- 00_reproduce ---------------------------------------------------------------------------

P00 = "00_reproduce"


def h0_collapse(runs: RunsBySeed) -> list[dict]:
    """H0 · the seed's pipeline collapses. Per arm (seed-test1, seed-pipeline): confirmed when the
    autopsy (saelab.diagnose: dead fraction up > 20 points or L0 down > 4x within its window) finds
    a collapse in every replicate; refuted when it finds none in any replicate; else inconclusive.
    Reports the first collapse's onset step, dead fraction before -> after and the autopsy's suspect."""
    out = []
    for arm in ("seed-test1", "seed-pipeline"):
        found = [collapses(a[arm]) for a in runs.values() if arm in a]
        if not found:
            continue
        firsts = [c[0] for c in found if c]
        suspects = Counter(c["suspect"] for c in firsts)
        word = rule([bool(c) for c in found], [not c for c in found])
        if firsts:
            effect = (f"{arm}: collapsed in {len(firsts)}/{len(found)} replicates; first onset at step "
                      f"{pm([c['onset_step'] for c in firsts], False)}, dead {pm([c['dead_before'] or 0 for c in firsts])} -> "
                      f"{pm([c['dead_after'] or 0 for c in firsts])}; suspect: {', '.join(f'{k} ({n})' for k, n in suspects.items())}")
        else:
            effect = f"{arm}: no collapse in {len(found)} replicates; final dead {pm(per_seed(runs, arm, lambda r: tail(r, 'dead_frac')))}"
        out.append(verdict("H0", f"the seed's pipeline collapses ({arm})", P00, word, effect, {
            "replicates_collapsed": len(firsts), "replicates": len(found),
            "onset_step_mean": stats([c["onset_step"] for c in firsts])["mean"] if firsts else None,
            "dead_after_mean": stats([c["dead_after"] or 0 for c in firsts])["mean"] if firsts else None,
            "suspect": suspects.most_common(1)[0][0] if suspects else None,
            "final_dead_mean": stats(per_seed(runs, arm, lambda r: tail(r, "dead_frac")))["mean"]}))
    return out or [missing("H0", "the seed's pipeline collapses", P00, runs, ["seed-test1"])]


def h5_grad_accumulation(runs: RunsBySeed) -> dict:
    """H5 · a gradient-accumulation bug (the seed's low-confidence suspect) is needed for the collapse.
    saelab's trainer accumulates nothing, so: refuted when an arm of the seed's pipeline collapses
    (autopsy) in every replicate — the collapse happens without any accumulation; else inconclusive
    (the seed shows no accumulation code that could be tested directly)."""
    title = "a gradient-accumulation bug is needed for the collapse"
    arms = [a for a in ("seed-test1", "seed-pipeline") if any(a in r for r in runs.values())]
    if not arms:
        return missing("H5", title, P00, runs, ["seed-test1"])
    rates = {a: [bool(collapses(r[a])) for r in runs.values() if a in r] for a in arms}
    word = "refuted" if any(all(v) and v for v in rates.values()) else "inconclusive"
    effect = "; ".join(f"{a} collapsed in {sum(v)}/{len(v)} replicates with no gradient accumulation" for a, v in rates.items())
    return verdict("H5", title, P00, word, effect, {f"{a}_collapsed": sum(v) for a, v in rates.items()})


# ----- 01_l1_penalty --------------------------------------------------------------------------

P01 = "01_l1_penalty"


def h1_scale(runs: RunsBySeed) -> dict:
    """H1 · the L1 penalty is too weak (seed Bug #1: "L0 increases when it should decrease"). On
    the seed arm (mean over all, alpha 0.003), at the last log before the first resampling (the
    window of the seed's evidence): confirmed when, in every replicate, its L0 fraction is above
    the acceptable 7% AND some stronger-alpha arm (mean_all_x*) is lower there by > 2 points;
    refuted when, in every replicate, its L0 fraction is <= 7%; else inconclusive."""
    title = "the L1 penalty is too weak (seed Bug #1)"
    if (m := missing("H1", title, P01, runs, ["seed"])) is not None:
        return m
    stronger = sorted({a for r in runs.values() for a in r if a.startswith("mean_all_x")})
    seed_l0 = per_seed(runs, "seed", _pre("l0_frac"))
    best = {a: [s - o for s, o in paired(runs, "seed", a, _pre("l0_frac"))] for a in stronger}
    lower = [any(best[a][i] > 0.02 for a in stronger if i < len(best[a])) for i in range(len(seed_l0))]
    word = rule([l0 > L0_RANGE[1] and lw for l0, lw in zip(seed_l0, lower)], [l0 <= L0_RANGE[1] for l0 in seed_l0])
    rise = per_seed(runs, "seed", lambda r: _pre("l0_frac")(r) - at_step(r, "l0_frac", r.config.schedule.warmup_steps))
    ratio = per_seed(runs, "seed", _pre("l1_recon_ratio"))
    pre = {a: per_seed(runs, a, _pre("l0_frac")) for a in stronger}
    effect = (f"seed arm L0 before the first resampling {pm(seed_l0)} of latents (acceptable 4-7%), "
              f"change since warmup end {pm(rise)}; L1/recon ratio {pm(ratio, False)}; "
              + "; ".join(f"{a}: L0 {pm(v)}" for a, v in pre.items()))
    return verdict("H1", title, P01, word, effect, {"seed_l0_frac": stats(seed_l0)["mean"], "seed_l0_rise": stats(rise)["mean"],
                                                   "seed_l1_recon_ratio": stats(ratio)["mean"],
                                                   **{f"{a}_l0_frac": stats(v)["mean"] for a, v in pre.items()}})


EQUAL_GRADIENT = ("per_sample_sum", "per_feature_mean", "sum")


def h1a_form(runs: RunsBySeed) -> dict:
    """H1a · the reduction form (mean over all elements vs per-sample sum, per-feature mean, sum)
    matters beyond its scale. The arms named after a form use the alpha that losses.convert_alpha
    gives for the same gradient on z as the seed's. At the last log before the first resampling,
    |L0 fraction difference| and |dead fraction difference| to the seed arm: refuted when every
    such arm is within 1 point on both in every replicate; confirmed when some arm differs by
    > 5 points in every replicate; else inconclusive. (decoder_weighted is reported, not judged: it
    equals the per-sample sum only for unit-norm decoder rows.)"""
    title = "the L1 reduction form matters beyond its scale"
    arms = [a for a in EQUAL_GRADIENT if any(a in r for r in runs.values())]
    if (m := missing("H1a", title, P01, runs, ["seed", *arms[:1]] if arms else ["seed", "per_sample_sum"])) is not None:
        return m
    diffs = {a: [max(abs(s - o), abs(sd - od)) for (s, o), (sd, od) in
                 zip(paired(runs, "seed", a, _pre("l0_frac")), paired(runs, "seed", a, _pre("dead_frac")))] for a in arms}
    n = min(len(v) for v in diffs.values())
    worst = [max(diffs[a][i] for a in arms) for i in range(n)]
    word = rule([any(diffs[a][i] > 0.05 for a in arms) for i in range(n)], [w <= 0.01 for w in worst])
    dw = [abs(s - o) for s, o in paired(runs, "seed", "decoder_weighted", _pre("l0_frac"))]
    effect = ("largest |difference| to the seed arm in L0 or dead fraction before resampling: "
              + "; ".join(f"{a} {pm(v)}" for a, v in diffs.items()) + (f"; decoder_weighted L0 {pm(dw)}" if dw else ""))
    return verdict("H1a", title, P01, word, effect, {f"{a}_max_diff": stats(v)["mean"] for a, v in diffs.items()}
                   | ({"decoder_weighted_l0_diff": stats(dw)["mean"]} if dw else {}))


def h1b_task22(runs: RunsBySeed) -> dict:
    """H1b · the seed's Fix #2 (per-sample sum with alpha x d_sae, Task 2.2) gives a working
    penalty. (The equal-gradient conversion divides by d_sae; Task 2.2 multiplies, d_sae^2 times
    stronger.) At the last log before the first resampling: confirmed when, in every replicate,
    the arm's L0 fraction is within 4-7% and its dead fraction < 20%; refuted when, in every
    replicate, its dead fraction is > 50% or its L0 fraction < 1%; else inconclusive."""
    arm, title = "task22_alpha_x_d_sae", "the seed's Task 2.2 alpha rescale (alpha x d_sae) is a working fix"
    if (m := missing("H1b", title, P01, runs, [arm])) is not None:
        return m
    l0, dead = per_seed(runs, arm, _pre("l0_frac")), per_seed(runs, arm, _pre("dead_frac"))
    word = rule([L0_RANGE[0] <= a <= L0_RANGE[1] and d < 0.2 for a, d in zip(l0, dead)], [d > 0.5 or a < 0.01 for a, d in zip(l0, dead)])
    alpha = next(iter(runs.values()))[arm].config.penalty.alpha
    effect = f"per_sample_sum at alpha {alpha:g}: before the first resampling L0 {pm(l0)}, dead {pm(dead)}; final dead {pm(per_seed(runs, arm, lambda r: tail(r, 'dead_frac')))}"
    return verdict("H1b", title, P01, word, effect, {"alpha": alpha, "l0_frac": stats(l0)["mean"], "dead_frac": stats(dead)["mean"]})


def h7_decoder_norm(runs: RunsBySeed) -> dict:
    """H7 · (lab) without a decoder-norm constraint the same L1 penalty is weaker, because codes can
    shrink while decoder rows grow. Seed arm vs decoder_unit_norm (same penalty), L0 fraction at
    the last log before the first resampling: confirmed when the unit-norm arm is lower by > 5
    points in every replicate; refuted when within 1 point in every replicate; else inconclusive.
    Also reports the seed arm's final mean decoder row norm."""
    arm, title = "decoder_unit_norm", "a missing decoder-norm constraint lets the L1 penalty be evaded"
    if (m := missing("H7", title, P01, runs, ["seed", arm])) is not None:
        return m
    pairs = paired(runs, "seed", arm, _pre("l0_frac"))
    word = rule([s - u > 0.05 for s, u in pairs], [abs(s - u) <= 0.01 for s, u in pairs])
    norms = per_seed(runs, "seed", lambda r: float(r.weights["W_dec"].norm(dim=-1).mean()) if "W_dec" in r.weights else float("nan"))
    effect = (f"L0 before the first resampling: seed {pm([s for s, _ in pairs])}, unit-norm decoder {pm([u for _, u in pairs])}; "
              f"seed arm's final mean decoder row norm {pm(norms, False)}")
    return verdict("H7", title, P01, word, effect, {"seed_l0_frac": stats([s for s, _ in pairs])["mean"],
                                                   "unit_norm_l0_frac": stats([u for _, u in pairs])["mean"],
                                                   "seed_decoder_norm": stats(norms)["mean"]})


# ----- 02_lr_warmup ---------------------------------------------------------------------------

P02 = "02_lr_warmup"


def h2_warmup(runs: RunsBySeed) -> dict:
    """H2 · the end of the LR warmup causes the collapse (seed Bug #2). Seed arm vs no_warmup
    (constant LR, everything else equal), peak dead fraction over the run: confirmed when, in every
    replicate, no_warmup's peak is lower by > 10 points AND the seed arm has a collapse the autopsy
    attributes to warmup_end; refuted when, in every replicate, no_warmup's peak is not lower by
    more than 5 points (removing the warmup does not spare latents); else inconclusive."""
    title = "the end of the LR warmup causes the collapse (seed Bug #2)"
    if (m := missing("H2", title, P02, runs, ["seed", "no_warmup"])) is not None:
        return m
    pairs = paired(runs, "seed", "no_warmup", peak)
    blamed = [any(c["suspect"] == "warmup_end" or "warmup_end" in c.get("tied_with", []) for c in collapses(a["seed"]))
              for a in runs.values() if "no_warmup" in a]
    word = rule([s - n > CLEAR and b for (s, n), b in zip(pairs, blamed)], [s - n <= SAME for s, n in pairs])
    others = {a: per_seed(runs, a, peak) for a in sorted({a for r in runs.values() for a in r}) if a not in ("seed", "no_warmup")}
    effect = (f"peak dead: seed {pm([s for s, _ in pairs])}, no warmup {pm([n for _, n in pairs])}; "
              f"collapse blamed on warmup end in {sum(blamed)}/{len(blamed)} replicates; "
              + "; ".join(f"{a} {pm(v)}" for a, v in others.items()))
    return verdict("H2", title, P02, word, effect, {"seed_peak_dead": stats([s for s, _ in pairs])["mean"],
                                                   "no_warmup_peak_dead": stats([n for _, n in pairs])["mean"],
                                                   "blamed_on_warmup_end": sum(blamed)})


def h2a_lr_jump(runs: RunsBySeed) -> dict:
    """H2a · the LR jumps ~5x at the end of warmup (the seed: "0.00006 -> 0.0003"). From the seed
    arm's schedule (saelab.schedules.lr_curve, every step): the relative change from the step
    before warmup end to warmup end. Confirmed when it is >= 4 (a 5x jump) in every replicate;
    refuted when it is < 5% in every replicate; else inconclusive."""
    title = "the LR jumps 5x at the end of warmup"
    if (m := missing("H2a", title, P02, runs, ["seed"])) is not None:
        return m
    jumps = []
    for arms in runs.values():
        cfg = arms["seed"].config
        lr, w = lr_curve(cfg), cfg.schedule.warmup_steps
        jumps.append(float((lr[w] - lr[w - 1]) / lr[w - 1]) if 1 < w < len(lr) and lr[w - 1] > 0 else float("nan"))
    word = rule([j >= 4 for j in jumps], [j < 0.05 for j in jumps])
    cfg = next(iter(runs.values()))["seed"].config
    biggest, at = max_relative_change(lr_curve(cfg))
    effect = (f"LR at warmup end (step {cfg.schedule.warmup_steps}) rises by {pm(jumps)} over the step before "
              f"(linear warmup: 1/(warmup-1)); the largest step-to-step change anywhere is {100 * biggest:.0f}% at step "
              f"{at}, at the start of warmup; the seed's 5x compares step 1,000 with step 5,000, not adjacent steps")
    return verdict("H2a", title, P02, word, effect, {"relative_jump": stats(jumps)["mean"], "warmup_steps": cfg.schedule.warmup_steps,
                                                    "largest_change": biggest, "largest_change_step": at})


# ----- 03_resampling --------------------------------------------------------------------------

P03 = "03_resampling"


def _peak_after_first_resample(run_ref: Any):
    """peak dead fraction from the seed arm's first resampling on (same step for every arm)."""
    start = first_resample(run_ref)
    return lambda r: peak(r, "dead_frac", start if start is not None else 0)


def _versus(runs: RunsBySeed, hid: str, title: str, arm: str, what: str) -> dict:
    """Seed arm vs ``arm``, peak dead fraction from the seed arm's first resampling on:
    confirmed when ``arm`` is lower by > 10 points in every replicate; refuted when it is not
    lower by more than 5 points in every replicate; else inconclusive."""
    if (m := missing(hid, title, P03, runs, ["seed", arm])) is not None:
        return m
    pairs = [(peak(a["seed"], "dead_frac", first_resample(a["seed"]) or 0), peak(a[arm], "dead_frac", first_resample(a["seed"]) or 0))
             for a in runs.values() if "seed" in a and arm in a]
    word = rule([s - o > CLEAR for s, o in pairs], [s - o <= SAME for s, o in pairs])
    fvu = [(peak(a["seed"], "fvu", first_resample(a["seed"]) or 0), peak(a[arm], "fvu", first_resample(a["seed"]) or 0))
           for a in runs.values() if "seed" in a and arm in a]
    effect = (f"peak dead after the first resampling: seed {pm([s for s, _ in pairs])}, {what} {pm([o for _, o in pairs])}; "
              f"peak FVU: seed {pm([s for s, _ in fvu], False)}, {what} {pm([o for _, o in fvu], False)}")
    return verdict(hid, title, P03, word, effect, {"seed_peak_dead": stats([s for s, _ in pairs])["mean"],
                                                  f"{arm}_peak_dead": stats([o for _, o in pairs])["mean"],
                                                  "seed_peak_fvu": stats([s for s, _ in fvu])["mean"],
                                                  f"{arm}_peak_fvu": stats([o for _, o in fvu])["mean"]})


def h3_resampling(runs: RunsBySeed) -> dict:
    """H3 · the seed's resampling creates the collapse (seed Bug #3): seed arm vs resampling off,
    by the rule of ``_versus`` (off lower by > 10 points in every replicate: confirmed)."""
    return _versus(runs, "H3", "the seed's resampling creates the collapse (seed Bug #3)", "off", "off")


def h3a_detector(runs: RunsBySeed) -> dict:
    """H3a · the seed's single-batch test calls live latents dead. At each of the seed arm's
    resamplings the trainer records each detector's precision against the held-out truth (the
    fraction of latents it calls dead that never fire on the held-out rows). Mean over resamplings
    per replicate: confirmed when the single-batch precision is < 0.8 in every replicate (over 20%
    of what it resamples was alive); refuted when it is >= 0.95 in every replicate; else
    inconclusive."""
    title = "single-batch detection calls live latents dead"
    if (m := missing("H3a", title, P03, runs, ["seed"])) is not None:
        return m
    def mean_at_resamples(run: Any, det: str) -> float:
        vals = [e.get(f"det_{det}_precision") for e in run.events if e.get("kind") == "resample"]
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")
    prec = {d: per_seed(runs, "seed", lambda r, d=d: mean_at_resamples(r, d)) for d in ("single_batch", "window", "tokens")}
    sb = prec["single_batch"]
    word = rule([p < 0.8 for p in sb], [p >= 0.95 for p in sb]) if all(np.isfinite(sb)) else "inconclusive"
    n_res = per_seed(runs, "seed", lambda r: len([e for e in r.events if e.get("kind") == "resample"]))
    effect = (f"precision at the seed arm's resamplings ({pm(n_res, False)} per run): "
              + ", ".join(f"{d} {pm(v, False)}" for d, v in prec.items()))
    return verdict("H3a", title, P03, word, effect, {f"{d}_precision": stats(v)["mean"] for d, v in prec.items()})


def h3b_reinit_scale(runs: RunsBySeed) -> dict:
    """H3b · the seed's x*0.1 re-init is at the wrong scale: seed arm vs its Task 4.2 fix
    (reinit_seed-fix: unit vector x mean encoder norm x 0.5), by the rule of ``_versus``."""
    v = _versus(runs, "H3b", "the x*0.1 re-init is at the wrong scale", "reinit_seed-fix", "Task 4.2 re-init")
    anth = [peak(a["reinit_anthropic"], "dead_frac", first_resample(a["seed"]) or 0) for a in runs.values()
            if "reinit_anthropic" in a and "seed" in a]
    if anth:
        v["effect"] += f"; Anthropic re-init peak dead {pm(anth)}"
        v["numbers"]["reinit_anthropic_peak_dead"] = round(stats(anth)["mean"], 4)
    return v


def h6_adam_state(runs: RunsBySeed) -> dict:
    """H6 · stale Adam moments after resampling (the seed's optimizer-state suspect; the seed's
    resampling leaves them): seed arm vs reset_adam, by the rule of ``_versus``."""
    return _versus(runs, "H6", "stale Adam state after resampling drives the collapse", "reset_adam", "Adam reset")


# ----- 04_normalization -----------------------------------------------------------------------

P04 = "04_normalization"
ALTERNATIVES = ("none", "clamped", "dataset_scalar", "layer_norm")


def h4_normalization(runs: RunsBySeed) -> dict:
    """H4 · the seed's per-sample normalization breaks training (seed Bug #4), on data with tiny-
    and huge-norm rows. An alternative mode *beats* the seed's by m points when its peak dead
    fraction is lower by more than m AND its final FVU in the original activation space (the one
    comparable across modes) is not higher. Confirmed when some alternative beats it by 10 points
    in every replicate; refuted when none beats it by 5 points in any replicate; else inconclusive."""
    title = "per-sample normalization breaks training (seed Bug #4)"
    alts = [a for a in ALTERNATIVES if any(a in r for r in runs.values())]
    if (m := missing("H4", title, P04, runs, ["seed", *(alts[:1] or ["dataset_scalar"])])) is not None:
        return m
    fvu = lambda r: tail(r, "fvu_orig")  # noqa: E731
    clear, any_gain, winners = [], [], []
    for arms in runs.values():
        s_peak, s_fvu = peak(arms["seed"]), fvu(arms["seed"])
        gains = {a: s_peak - peak(arms[a]) for a in alts if a in arms and fvu(arms[a]) <= s_fvu}
        clear.append(any(g > CLEAR for g in gains.values()))
        any_gain.append(any(g > SAME for g in gains.values()))
        winners += [a for a, g in gains.items() if g > CLEAR]
    word = rule(clear, [not g for g in any_gain])
    peaks = {a: per_seed(runs, a, peak) for a in ["seed", *alts]}
    fvus = {a: per_seed(runs, a, fvu) for a in ["seed", *alts]}
    effect = ("peak dead: " + ", ".join(f"{a} {pm(v)}" for a, v in peaks.items())
              + "; final FVU (original space): " + ", ".join(f"{a} {pm(v, False)}" for a, v in fvus.items()))
    return verdict("H4", title, P04, word, effect, {"beats_seed_by_10pts": Counter(winners).most_common(1)[0][0] if winners else None,
                                                   **{f"{a}_peak_dead": stats(v)["mean"] for a, v in peaks.items()},
                                                   "seed_fvu_orig": stats(fvus["seed"])["mean"]})


def h4a_small_norms(runs: RunsBySeed) -> dict:
    """H4a · dividing by small norms creates huge values (seed Hypothesis 4a). From the seed arm's
    Task 5.1 numbers (norm_* columns of every log, training batches): confirmed when some
    normalized row is non-finite or longer than 2 sqrt(d_in) in any replicate; refuted when, in
    every replicate, every normalized row has norm within 1% of sqrt(d_in) and none is non-finite
    (tiny rows included: their coefficient is reported); else inconclusive."""
    title = "division by small norms creates huge values (seed H4a)"
    if (m := missing("H4a", title, P04, runs, ["seed"])) is not None:
        return m
    rows = []
    for arms in runs.values():
        r, d = arms["seed"], arms["seed"].config.sae.d_in
        m = r.metrics
        get = lambda c, f: float(f(m[c].to_numpy(np.float64))) if c in m else float("nan")  # noqa: E731
        rows.append({"out_max": get("norm_out_norm_max", np.nanmax) / d ** 0.5, "out_min": get("norm_out_norm_min", np.nanmin) / d ** 0.5,
                     "nonfinite": get("norm_n_nonfinite", np.nansum), "x_min": get("norm_x_norm_min", np.nanmin),
                     "coef_max": get("norm_coef_max", np.nanmax)})
    word = rule([(x["nonfinite"] > 0 or x["out_max"] > 2) for x in rows],
                [(x["nonfinite"] == 0 and abs(x["out_max"] - 1) <= 0.01 and abs(x["out_min"] - 1) <= 0.01) for x in rows])
    if word == "inconclusive" and any(x["nonfinite"] > 0 or x["out_max"] > 2 for x in rows):
        word = "confirmed"  # one replicate with non-finite rows is enough
    effect = (f"smallest ||x|| {min(x['x_min'] for x in rows):.3g} got coefficient up to {max(x['coef_max'] for x in rows):.3g}; "
              f"normalized norms / sqrt(d_in) in [{min(x['out_min'] for x in rows):.4f}, {max(x['out_max'] for x in rows):.4f}]; "
              f"non-finite rows {sum(x['nonfinite'] for x in rows):.0f}")
    return verdict("H4a", title, P04, word, effect, {"min_x_norm": min(x["x_min"] for x in rows), "max_coef": max(x["coef_max"] for x in rows),
                                                    "max_out_over_sqrt_d": max(x["out_max"] for x in rows),
                                                    "nonfinite_rows": sum(x["nonfinite"] for x in rows)})


# ----- 05_reanimation -------------------------------------------------------------------------

P05 = "05_reanimation"


def r1_reanimation(runs: RunsBySeed) -> list[dict]:
    """R1 · seed 000: the reanimation term revives dead codes without creating dense noise. Per
    architecture, the arm at coefficient 1e-3 (seed 000's value; else the middle one) vs
    coefficient 0, at the end of training (tail): revival = dead(0) - dead(c); dense share = the
    fraction of alive latents that fire on > 50% of held-out rows (what the penalty allows at
    coefficient 0 is the baseline). Confirmed when, in every replicate, revival > 5 points, the
    dense share grows by <= 10 points and L0 by at most 1.5x; refuted when, in every replicate,
    revival <= 1 point, or the dense share grows by > 20 points, or L0 over 2x; else inconclusive."""
    trained = list(dict.fromkeys(a for r in runs.values() for a in r))  # the phase's arm order
    archs = list(dict.fromkeys(a.rsplit("_", 1)[0] for a in trained if a.endswith("_coef0")))
    out = []
    for arch in archs:
        title = f"reanimation revives dead codes without dense noise ({arch})"
        coefs = sorted(float(a.rsplit("coef", 1)[1]) for a in trained if a.startswith(f"{arch}_coef") and a != f"{arch}_coef0")
        if not coefs:
            out.append(missing("R1", title, P05, runs, [f"{arch}_coef0.001"]))
            continue
        c = 0.001 if 0.001 in coefs else coefs[len(coefs) // 2]
        arm, base = f"{arch}_coef{c:g}", f"{arch}_coef0"
        dead = paired(runs, base, arm, lambda r: tail(r, "dead_frac"))
        dense = paired(runs, base, arm, dense_share)
        l0 = paired(runs, base, arm, lambda r: tail(r, "l0"))
        rev = [b - a for b, a in dead]
        inc = [a - b for b, a in dense]
        ratio = [a / b if b > 0 else float("inf") for b, a in l0]
        word = rule([r > 0.05 and i <= 0.10 and q <= 1.5 for r, i, q in zip(rev, inc, ratio)],
                    [r <= 0.01 or i > 0.20 or q > 2 for r, i, q in zip(rev, inc, ratio)])
        extra = {a: per_seed(runs, a, lambda r: tail(r, "dead_frac")) for a in trained
                 if a.startswith(f"{arch}_") and a not in (base, arm)}
        effect = (f"final dead: coef 0 {pm([b for b, _ in dead])}, coef {c:g} {pm([a for _, a in dead])} (revival {pm(rev)}); "
                  f"dense share of alive latents {pm([b for b, _ in dense])} -> {pm([a for _, a in dense])}; L0 x{pm(ratio, False)}; "
                  + ", ".join(f"{a.split('_', 1)[1]} dead {pm(v)}" for a, v in extra.items()))
        out.append(verdict(f"R1-{arch}", title, P05, word, effect, {"coef": c, "revival": stats(rev)["mean"], "dense_increase": stats(inc)["mean"],
                                                                    "l0_ratio": stats(ratio)["mean"], "dead_coef0": stats([b for b, _ in dead])["mean"]}))
    return out or [missing("R1", "reanimation revives dead codes without dense noise", P05, runs, ["relu_coef0"])]


def h8_centered_b_dec(runs: RunsBySeed) -> dict:
    """H8 · (lab) with a shared offset in the data, a decoder bias that starts at zero kills latents
    from the start: the offset pushes many latents' pre-activations below 0 on every row. Starting
    b_dec at the data's center and subtracting it before the encoder (Bricken 2023; arm
    ``centered``) should prevent it. The centered arm *beats* the seed's by m points when its peak
    dead fraction is lower by more than m AND its final FVU in the original space is not higher.
    Confirmed when it beats by 10 points in every replicate; refuted when it does not beat by 5
    points in any replicate; else inconclusive. Also reports the dead fraction at step 0."""
    title = "a shared offset with b_dec at zero kills latents from the start (lab-found)"
    if (m := missing("H8", title, P04, runs, ["seed", "centered"])) is not None:
        return m
    fvu = lambda r: tail(r, "fvu_orig")  # noqa: E731
    gains = [peak(a["seed"]) - peak(a["centered"]) for a in runs.values()]
    fvu_ok = [fvu(a["centered"]) <= fvu(a["seed"]) for a in runs.values()]
    word = rule([g > CLEAR and ok for g, ok in zip(gains, fvu_ok)], [not (g > SAME and ok) for g, ok in zip(gains, fvu_ok)])
    start = {a: per_seed(runs, a, lambda r: at_step(r, "dead_frac", 0)) for a in ("seed", "centered")}
    peaks = {a: per_seed(runs, a, peak) for a in ("seed", "centered")}
    fvus = {a: per_seed(runs, a, fvu) for a in ("seed", "centered")}
    effect = (f"dead at step 0: seed {pm(start['seed'])}, centered {pm(start['centered'])}; peak dead: seed "
              f"{pm(peaks['seed'])}, centered {pm(peaks['centered'])}; final FVU (original space): seed "
              f"{pm(fvus['seed'], False)}, centered {pm(fvus['centered'], False)}")
    return verdict("H8", title, P04, word, effect, {"seed_dead_step0": stats(start["seed"])["mean"],
                                                   "centered_dead_step0": stats(start["centered"])["mean"],
                                                   "seed_peak_dead": stats(peaks["seed"])["mean"],
                                                   "centered_peak_dead": stats(peaks["centered"])["mean"],
                                                   "seed_fvu_orig": stats(fvus["seed"])["mean"],
                                                   "centered_fvu_orig": stats(fvus["centered"])["mean"]})


RULES = {
    P00: [h0_collapse, h5_grad_accumulation],
    P01: [h1_scale, h1a_form, h1b_task22, h7_decoder_norm],
    P02: [h2_warmup, h2a_lr_jump],
    P03: [h3_resampling, h3a_detector, h3b_reinit_scale, h6_adam_state],
    P04: [h4_normalization, h4a_small_norms, h8_centered_b_dec],
    P05: [r1_reanimation],
    "06_validation": [validation_verdicts],
}
