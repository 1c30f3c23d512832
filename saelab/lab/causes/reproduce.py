"""Phase 00: does the base lose its latents, and when? (seeds/004: the pipeline collapsed to 97%.)"""

from __future__ import annotations

from collections import Counter
from typing import Any

from saelab.lab.hypothesis import Arm, Context, Hypothesis, Phase, judged
from saelab.lab.verdicts import RunsBySeed, at_step, collapses, peak, per_seed, pm, rule, stats, tail

STEM = "00_reproduce"
PIPELINE_FIELDS = ("sae.d_sae", "data.batch_size", "steps", "schedule.warmup_steps", "resample.interval",
                   "tracking.dead_tokens", "tracking.window_batches", "log_interval")


def seed_pipeline_changes(ctx: Context) -> dict[str, Any]:
    """The seed's failed pipeline (``config.seed_pipeline``: 2,048 latents, batch 128, warmup and
    resampling interval both 10% of training) at the profile's scale, from the seed's Test 1."""
    p = ctx.profile
    n = ctx.base.steps if ctx.steps_explicit else p.pipeline_steps
    return {"sae.d_sae": p.pipeline_d_sae, "data.batch_size": p.pipeline_batch, "steps": n,
            "schedule.warmup_steps": max(1, n // 10), "resample.interval": max(1, n // 10),
            "tracking.dead_tokens": 100 * p.pipeline_batch, "tracking.window_batches": min(50, max(1, n // 10)),
            "log_interval": min(ctx.base.log_interval, n)}


def _presets(ctx: Context) -> list[str]:
    chosen = ctx.params["presets"]
    if chosen is None:
        return ["seed-pipeline"] if ctx.default_case else []
    if not isinstance(chosen, (list, tuple)) or any(c != "seed-pipeline" for c in chosen):
        raise ValueError(f"presets={chosen!r}: a list of the seed's configurations to reproduce beside the base "
                         "(only 'seed-pipeline'), or None")
    return list(chosen)


def _arms(ctx: Context) -> list[Arm]:
    return [Arm("seed-pipeline", seed_pipeline_changes(ctx), against=None) for _ in _presets(ctx)][:1]


def _judge(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> list[dict]:
    """H0 per arm (the base, and the seed's pipeline when trained): confirmed when the autopsy
    (saelab.training.diagnose: dead fraction up > 20 points or L0 down > 4x within its window, after the
    first log) finds a collapse in every replicate; refuted when it finds none in any; else
    inconclusive. Deaths before the first update and a gradual rise are reported beside it, never
    as a collapse; the events a collapse coincides with are listed, not blamed (that takes an arm
    that removes the event: phases 02-05)."""
    out = []
    for arm in ["base", *(a.name for a in arms)]:
        found = [collapses(a[arm]) for a in runs.values() if arm in a]
        if not found:
            continue
        firsts = [c[0] for c in found if c]
        word = rule([bool(c) for c in found], [not c for c in found])
        init = per_seed(runs, arm, lambda r: at_step(r, "dead_frac", 0))
        peaks, finals = per_seed(runs, arm, peak), per_seed(runs, arm, lambda r: tail(r, "dead_frac"))
        text = f"{arm}: dead before any update {pm(init)}, peak {pm(peaks)}, final {pm(finals)}; "
        if firsts:
            near = Counter(c.get("coincides_with", "none") for c in firsts)
            text += (f"collapsed in {len(firsts)}/{len(found)} replicates, first onset at step "
                     f"{pm([c['onset_step'] for c in firsts], False)}, dead {pm([c['dead_before'] or 0 for c in firsts])} -> "
                     f"{pm([c['dead_after'] or 0 for c in firsts])}; coincides with: "
                     + ", ".join(f"{k} ({n})" for k, n in near.items()))
        else:
            text += f"no collapse in {len(found)} replicates"
        out.append(judged(H0, STEM, word, text, {
            "replicates_collapsed": len(firsts), "replicates": len(found), "dead_step0_mean": stats(init)["mean"],
            "peak_dead_mean": stats(peaks)["mean"], "final_dead_mean": stats(finals)["mean"],
            "onset_step_mean": stats([c["onset_step"] for c in firsts])["mean"] if firsts else None},
            claim=f"{'the base' if arm == 'base' else 'the seed pipeline'} collapses ({arm})"))
    return out


H0 = Hypothesis(
    "H0", "the base collapses", "fact", PIPELINE_FIELDS, lambda ctx: None, _arms, _judge,
    source="seeds/004: 23% -> 97% dead between steps 5,000 and 10,000")

H5 = Hypothesis(
    "H5", "a gradient-accumulation bug is needed for the collapse", "cause", (),
    lambda ctx: ("saelab's trainer accumulates no gradients, so there is no accumulation factor to change in this setup "
                 "(whether the base collapses without one is H0)"),
    lambda ctx: [], lambda runs, ctx, arms: [], source="seeds/004, lower-confidence suspect")

INTRO = """Train the base as it is, several replicates, and look at when its latents die: before any update
(dead at initialization), in a collapse (dead fraction up by more than 20 points, or L0 down more than 4x,
within a tenth of the run), or gradually. For the lab's first case (the seed's Test 1) the seed's own failed
pipeline is trained beside it (`config.seed_pipeline`, warmup end and first resampling at the same step).

The autopsy lists the events each collapse *coincides* with (warmup end, resampling); it blames none of
them: a cause is confirmed only by an arm that removes it, in the phases that follow."""

PHASE = Phase(
    STEM, "Reproduce the collapse", "Does the base lose its latents, and when?", INTRO, (H0, H5),
    {"presets": (None, None, "the seed's configurations reproduced beside the base: ['seed-pipeline']; None: "
                              "seed-pipeline for the lab's first case (the seed's Test 1), none otherwise")},
    ("Collapse timing across replicates", ("plots.replicate_spread(verdicts.replicate_frame(runs))",
                                           "plots.death_heatmap(run.first()[list(run.first())[-1]])")),
    before_training=(("## Data check (before any training)\n\nWhat the activations alone say: outlier severity "
                      "gamma predicts the latents dead at initialization (Simon, Adams & Zou 2026), shown beside the "
                      "dead fraction measured on the base's initialized SAE; the same as `saelab check-data`.",
                      "from saelab.lab import datacheck\n\ndisplay(Markdown(datacheck.markdown(run.data_check())))"),))
