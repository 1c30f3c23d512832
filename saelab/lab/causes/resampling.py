"""Phase 03: does dead-latent resampling create the collapse? (seeds/004 Bug #3, Tasks 4.1-4.2.)"""

from __future__ import annotations

from typing import Any

import numpy as np

from saelab.lab.hypothesis import Arm, Context, Hypothesis, Phase, best_fix, compared, judged, removes_deaths
from saelab.lab.verdicts import RunsBySeed, first_resample, per_seed, pm, rule, stats

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


H3 = Hypothesis("H3", "resampling creates the deaths", "cause", ("resample.strategy",), _resamples,
                lambda ctx: [Arm("resample_off", {"resample.strategy": "off"})], _judge_off, source="seeds/004 Bug #3")
H3A = Hypothesis("H3a", "the dead detector calls live latents dead", "fact", ("resample.detector",), _resamples,
                 _detector_arms, _judge_detector, source="seeds/004 Task 4.1")
H3B = Hypothesis("H3b", "the re-init of resampled latents kills them again", "cause", ("resample.strategy",), _resamples,
                 _reinit_arms, _judge_reinit, source="seeds/004 Task 4.2; Bricken 2023")
H6 = Hypothesis("H6", "stale Adam state after resampling drives the deaths", "cause", ("resample.reset_adam",), _adam_applies,
                lambda ctx: [Arm("reset_adam", {"resample.reset_adam": True})], _judge_adam, source="seeds/004 optimizer-state suspect")

INTRO = """The seed's Bug #3: resampling fires right before the collapse; it marks latents dead from one batch
and rewrites their encoder rows to `x * 0.1`. The arms change one piece of the base's resampling at a time:
off, the detector (the seed's Task 4.1 window, tokens since fired), the re-init (the seed's Task 4.2 fix,
Anthropic 2023) and a reset of the rewritten rows' Adam moments. A base that does not resample makes every
hypothesis here *not applicable*."""

PHASE = Phase(
    STEM, "Dead-latent resampling", "Does resampling create the deaths?", INTRO, (H3, H3A, H3B, H6),
    {"resample_strategy": ("resample.strategy", ["seed", "seed-fix", "anthropic"], "re-inits besides the base's (and off, always trained)"),
     "resample_detector": ("resample.detector", ["single_batch", "window", "tokens"], "dead detectors besides the base's")},
    ("Dead detectors against the held-out truth, and what each resampling did",
     ("plots.detector_pr(run.first())", 'tables.Table.from_frame(verdicts.resample_table(run.first()), "Every resampling, per arm")')))
