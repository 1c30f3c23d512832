"""Phase 03: does dead-latent resampling create the collapse? (seeds/004 Bug #3, Tasks 4.1-4.2.)"""

from __future__ import annotations

from typing import Any

import numpy as np

from saelab.config import RunConfig
from saelab.lab.hypothesis import Arm, Context, Hypothesis, Phase, best_fix, compared, judged, removes_deaths
from saelab.lab.verdicts import L0_RANGE, RunsBySeed, first_resample, per_seed, pm, rule, stats
from saelab.training.metrics import observations_for
from saelab.training.stack import FLOOR_OF_MEAN

STEM = "03_resampling"
STRATEGIES = ("seed", "seed-fix", "anthropic")
DETECTORS = ("single_batch", "window", "tokens")


def _resamples(ctx: Context) -> str | None:
    return None if ctx.base.resample.strategy != "off" else "the base does not resample dead latents (resample.strategy=off)"


def _after(runs: RunsBySeed) -> int:
    """The base's first resampling step (the same schedule for every arm): deaths before it are not
    resampling's doing."""
    steps = [first_resample(a["base"]) for a in runs.values() if "base" in a]
    steps = [s for s in steps if s is not None]
    return min(steps) if steps else 0


def _changes(arms: list[Arm]) -> dict:
    return {a.name: dict(a.changes) for a in arms}


def _judge_off(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H3 · resampling creates the deaths: base vs resampling off, peak dead from the base's first
    resampling on, by ``hypothesis.removes_deaths``."""
    r = removes_deaths(runs, "base", "resample_off", _after(runs))
    return judged(H3, STEM, r["word"], r["effect"], r["numbers"], compared(_changes(arms), "resample_off"), fix="resample_off")


def _detector_arms(ctx: Context) -> list[Arm]:
    asked = _listed(ctx, "resample_detector", DETECTORS)
    return [Arm(f"detect_{d}", {"resample.detector": d}) for d in asked if d != ctx.base.resample.detector]


def _listed(ctx: Context, name: str, allowed: tuple) -> list:
    value = ctx.params[name]
    if not isinstance(value, (list, tuple)) or any(v not in allowed for v in value):
        raise ValueError(f"{name}={value!r}: a list from {list(allowed)}")
    return list(value)


def _judge_detector(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H3a · the base's dead detector calls live latents dead. At each of the base's resamplings
    the trainer records each detector's precision against the held-out truth. Mean over
    resamplings per replicate: confirmed when the base detector's precision is < 0.8 in every
    replicate (over 20% of what it resamples was alive); refuted when >= 0.95 in every replicate.
    The other detectors' arms are reported by ``removes_deaths`` beside it."""
    def mean_at_resamples(run: Any, det: str) -> float:
        vals = [e.get(f"det_{det}_precision") for e in run.events if e.get("kind") == "resample"]
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    own = ctx.base.resample.detector
    prec = {d: per_seed(runs, "base", lambda r, d=d: mean_at_resamples(r, d)) for d in DETECTORS}
    mine = prec[own]
    word = rule([p < 0.8 for p in mine], [p >= 0.95 for p in mine]) if mine and all(np.isfinite(mine)) else "inconclusive"
    effect = f"precision at the base's resamplings ({own} is the base's): " + ", ".join(f"{d} {pm(v, False)}" for d, v in prec.items())
    for a in arms:
        effect += f"; {a.name}: " + removes_deaths(runs, "base", a.name, _after(runs))["effect"].split("; final")[0]
    return judged(H3A, STEM, word, effect, {f"{d}_precision": stats(v)["mean"] for d, v in prec.items()},
                  compared(_changes(arms), *[a.name for a in arms]), claim=f"the base's {own} detector calls live latents dead")


def _reinit_arms(ctx: Context) -> list[Arm]:
    asked = _listed(ctx, "resample_strategy", STRATEGIES)
    return [Arm(f"reinit_{s}", {"resample.strategy": s}) for s in asked if s != ctx.base.resample.strategy]


def _judge_reinit(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H3b · the base's re-init of resampled latents kills them again: the best other re-init
    (x*0.1 'seed', the seed's Task 4.2 'seed-fix', Bricken 2023 'anthropic') vs the base by
    ``hypothesis.removes_deaths`` from the first resampling on; the others are reported."""
    name, r = best_fix(runs, "base", [a.name for a in arms], _after(runs))
    rest = [a.name for a in arms if a.name != name]
    effect = f"best other re-init {name}: {r['effect']}" + "".join(
        f"; {a}: " + removes_deaths(runs, "base", a, _after(runs))["effect"].split("; final")[0] for a in rest)
    return judged(H3B, STEM, r["word"], effect, r["numbers"] | {"best": name}, compared(_changes(arms), *[a.name for a in arms]),
                  claim=f"the base's re-init ({ctx.base.resample.strategy}) kills the resampled latents again", fix=name)


def _adam_applies(ctx: Context) -> str | None:
    if (why := _resamples(ctx)) is not None:
        return why
    return "the base already resets the rewritten rows' Adam moments" if ctx.base.resample.reset_adam else None


def _judge_adam(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H6 · stale Adam moments after resampling drive the deaths: base vs reset_adam by
    ``hypothesis.removes_deaths`` from the first resampling on."""
    r = removes_deaths(runs, "base", "reset_adam", _after(runs))
    return judged(H6, STEM, r["word"], r["effect"], r["numbers"], compared(_changes(arms), "reset_adam"), fix="reset_adam")


WINDOW_FACTOR = 10  # H29's arm: the window x10, an order of magnitude (SAELens' dead_feature_window is 1,000 steps;
# sparsify's dead_feature_threshold 10M tokens), and enough to take a latent at the lab's floor rate from
# "silent over the window" most of the time to about 1% of the time when the window was a fifth of what it needs


def _expected_l0(c: RunConfig) -> float:
    """Latents per row known before training: k for the TopK family; else the sparsest code the lab
    calls acceptable (``L0_RANGE[0]`` of the latents): the sparser the code, the rarer its rare latents."""
    return float(c.sae.k) if c.sae.architecture in ("topk", "batchtopk") else L0_RANGE[0] * c.sae.d_sae


def rare_interval(c: RunConfig) -> int:
    """Tokens a dead window needs so that an alive latent firing at FLOOR_OF_MEAN of the mean rate
    L0 / d_sae (a tenth: the rare latents the lab's own dead count still calls alive,
    ``stack.count_window``) fires within it with 99% probability: about 46 / (0.1 L0 / d_sae), 4.6
    times that latent's mean firing interval. TopK k=4 of 64 latents: 735 tokens."""
    return observations_for(min(FLOOR_OF_MEAN * max(_expected_l0(c), 1.0) / c.sae.d_sae, 0.5))


def _auxk_on(c: RunConfig) -> bool:
    return c.aux.auxk_coef > 0


def _short_windows(c: RunConfig) -> list[tuple[str, str, int, int]]:
    """(remedy, field, window tokens, lengthened value) for each window the base's training calls
    latents dead by and acts on (resampling through its detector, AuxK through tracking.dead_tokens)
    that is shorter than ``rare_interval``, one per field. The lengthened value is WINDOW_FACTOR
    times the field, kept below the run's tokens where AuxK reads it (the config refuses a window
    that never opens); a window that cannot grow is left out. The window detector also calls dead
    every latent firing below ``tracking.window_threshold`` over its window, whatever its length:
    lengthening it removes only the latents it calls dead for want of rows."""
    need, batch, run_tokens = rare_interval(c), c.data.batch_size, c.steps * c.data.batch_size
    out: dict[str, tuple[str, str, int, int]] = {}
    if c.resample.strategy != "off" and c.resample.detector == "window":
        w = c.tracking.window_batches
        if w * batch < need:
            out["tracking.window_batches"] = ("resampling (window detector)", "tracking.window_batches", w * batch, w * WINDOW_FACTOR)
    uses = ["resampling (tokens detector)"] if c.resample.strategy != "off" and c.resample.detector == "tokens" else []
    uses += ["AuxK"] if _auxk_on(c) else []
    t = c.tracking.dead_tokens
    if uses and t < need:
        longer = t * WINDOW_FACTOR if not _auxk_on(c) else min(t * WINDOW_FACTOR, run_tokens - 1)
        if longer > t:
            out["tracking.dead_tokens"] = (" and ".join(uses), "tracking.dead_tokens", t, longer)
    return list(out.values())


def _window_applies(ctx: Context) -> str | None:
    c = ctx.base
    if c.resample.strategy == "off" and not _auxk_on(c):
        return ("the base neither resamples nor trains AuxK: nothing in its training acts on the latents a short window "
                "calls dead, so the window changes only a count, and the lab's own count already looks back over at "
                "least its detection floor (stack.count_window)")
    if _short_windows(c):
        return None
    one_batch = c.resample.strategy != "off" and c.resample.detector == "single_batch"
    single = ("the base resamples by the single_batch detector: its window is one batch, with no field to lengthen "
              "(H3a tests the other detectors)")
    if one_batch and not _auxk_on(c):
        return single
    long = (f"dead window is at least the {rare_interval(c):,} tokens in which a latent firing at a tenth of the mean "
            f"rate fires with 99% probability (or cannot be lengthened within the run)")
    return f"{single}; its AuxK {long}" if one_batch else f"the base's {long}"


def _window_arms(ctx: Context) -> list[Arm]:
    return [Arm(f"{field.split('.')[1]}_x{WINDOW_FACTOR}", {field: longer}) for _, field, _, longer in _short_windows(ctx.base)]


def _resampled(run: Any) -> tuple[int, int]:
    """(latents the run resampled, those of them that fired on the held-out rows when resampled),
    summed over its resampling events. The held-out rows miss rare latents too, so the second
    number is a lower bound on the alive latents resampled."""
    n = alive = 0
    for e in run.events:
        if e.get("kind") != "resample":
            continue
        det, prec = int(e.get("n_detected", 0)), e.get(f"det_{e.get('detector')}_precision")
        n += det
        alive += round(det * (1 - prec)) if prec is not None and np.isfinite(prec) else 0
    return n, alive


def _judge_window(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H29 · the dead window is shorter than a rare latent's firing interval: the base's
    resampling (or AuxK) acts on latents that are alive but fire less often than once per window,
    re-initializing the rare features they learned (which then die or churn). The arm lengthens
    the window x10; the arm that removes the most deaths by ``removes_deaths``, from the base's
    first resampling on.

    Both arms are counted over ONE window: the judged column is ``dead_frac_common``, whose
    look-back (``stack.common_window``) depends on d_sae and the held-out rows alone. The lab's
    ``dead_frac`` looks back over at least ``tracking.dead_tokens`` (``stack.count_window``), so
    judged on it, the arm's longer window would count its rare latents alive that the base's count
    calls dead, and "remove deaths" by measurement alone. The latents each arm resampled (and
    those of them alive on the held-out rows then) come from the runs' resampling events."""
    name, r = best_fix(runs, "base", [a.name for a in arms], _after(runs), column="dead_frac_common")
    if name is None:
        return judged(H29, STEM, "inconclusive", "no arm: the base's dead window cannot be lengthened", {}, [])
    counts = {a: per_seed(runs, a, lambda run: _resampled(run)[0]) for a in ["base", *[x.name for x in arms]]}
    alive = {a: per_seed(runs, a, lambda run: _resampled(run)[1]) for a in counts}
    effect = f"counted over one window (dead_frac_common) for both, {name}: {r['effect']}"
    if any(sum(v) for v in counts.values()):
        effect += "; latents resampled over the run (alive on the held-out rows then): " + ", ".join(
            f"{a} {pm(counts[a], False)} ({pm(alive[a], False)})" for a in counts)
    numbers = r["numbers"] | {"best": name} | {f"{a}_resampled": stats(v)["mean"] for a, v in counts.items()} \
        | {f"{a}_resampled_alive": stats(v)["mean"] for a, v in alive.items()}
    return judged(H29, STEM, r["word"], effect, numbers, compared(_changes(arms), *[a.name for a in arms]), fix=name)


H3 = Hypothesis("H3", "resampling creates the deaths", "cause", ("resample.strategy",), _resamples,
                lambda ctx: [Arm("resample_off", {"resample.strategy": "off"})], _judge_off, source="seeds/004 Bug #3")
H3A = Hypothesis("H3a", "the dead detector calls live latents dead", "fact", ("resample.detector",), _resamples,
                 _detector_arms, _judge_detector, source="seeds/004 Task 4.1")
H3B = Hypothesis("H3b", "the re-init of resampled latents kills them again", "cause", ("resample.strategy",), _resamples,
                 _reinit_arms, _judge_reinit, source="seeds/004 Task 4.2; Bricken 2023")
H6 = Hypothesis("H6", "stale Adam state after resampling drives the deaths", "cause", ("resample.reset_adam",), _adam_applies,
                lambda ctx: [Arm("reset_adam", {"resample.reset_adam": True})], _judge_adam, source="seeds/004 optimizer-state suspect")
H29 = Hypothesis("H29", "the dead window is shorter than a rare latent's firing interval: training resamples (or AuxK-trains) "
                 "latents that are alive", "cause", ("tracking.dead_tokens", "tracking.window_batches"), _window_applies,
                 _window_arms, _judge_window,
                 source="issue 21; SAELens dead_feature_window / feature_sampling_window; sparsify dead_feature_threshold (10M tokens)")

INTRO = """The seed's Bug #3: resampling fires right before the collapse; it marks latents dead from one batch
and rewrites their encoder rows to `x * 0.1`. The arms change one piece of the base's resampling at a time:
off, the detector (the seed's Task 4.1 window, tokens since fired), the re-init (the seed's Task 4.2 fix,
Anthropic 2023) and a reset of the rewritten rows' Adam moments. A base that does not resample makes those
hypotheses *not applicable*. One more arm lengthens the window (x10) by which the base's resampling (tokens or
window detector) or its AuxK calls a latent dead, when that window is shorter than a rare but alive latent
needs to fire in it (H29): both are then counted over one window, `dead_frac_common`, since the lab's own
count looks back at least as far as `tracking.dead_tokens`."""

PHASE = Phase(
    STEM, "Dead-latent resampling", "Does resampling create the deaths?", INTRO, (H3, H3A, H3B, H6, H29),
    {"resample_strategy": ("resample.strategy", ["seed", "seed-fix", "anthropic"], "re-inits besides the base's (and off, always trained)"),
     "resample_detector": ("resample.detector", ["single_batch", "window", "tokens"], "dead detectors besides the base's")},
    ("Dead detectors against the held-out truth, and what each resampling did",
     ("plots.detector_pr(run.first())", 'tables.Table.from_frame(verdicts.resample_table(run.first()), "Every resampling, per arm")')))
