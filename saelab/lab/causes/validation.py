"""Phase 06: does a fixed recipe meet the seed's validation table? (seeds/004, Validation Metrics.)

Each arm is the base with a whole recipe applied, judged against the table on its own (no two arms
are compared): the base itself, the seed's "Expected Fixes" (when the base is the seed's kind of
SAE), and this lab's recipe; on synthetic bases also on real activations (MiniLM by default).
"""

from __future__ import annotations

from typing import Any

from saelab.config import seed_fix_changes
from saelab.lab import answer
from saelab.lab.hypothesis import Arm, Context, Hypothesis, Phase, judged
from saelab.lab.verdicts import RunsBySeed

STEM = "06_validation"
LAB_ALPHA = 0.006  # per_sample_sum alpha of the lab recipe (with the seed's mse_mean reconstruction); calibrated on
LAB_LR = 2e-3  # the quick profile's synthetic data for a final L0 near 5% (measured, seed 0: 6.0%, dead 0%, peak dead
# 0.4%; without the centered b_dec: 6.8%, dead 14%, peak 63%)


def seed_fixed(ctx: Context) -> dict[str, Any] | None:
    """All of the seed's "Expected Fixes" (``config.seed_fixed``): per-sample-sum L1 with alpha x d_sae
    (Fix #1, #2), warmup 2% of training (Fix #3), windowed detection with the Task 4.2 re-init
    (Fix #4), the Task 5.1 clamp. Only for the seed's kind of SAE (ReLU, mean-over-all L1)."""
    b = ctx.base
    if b.sae.architecture != "relu" or b.penalty.form != "mean_all":
        return None
    return seed_fix_changes(b)


def lab_fixed(ctx: Context) -> dict[str, Any]:
    """This lab's recipe, from what phases 01-05 measure on the seed's case: no resampling but seed
    000's reanimation term at 1e-2 (03, 05), dataset-wide scalar normalization, b_dec started at the
    data's geometric median and subtracted before the encoder (04, H8); for an L1 SAE also the
    per-sample-sum L1 at a calibrated alpha, a unit-norm decoder and a larger LR (01)."""
    ch: dict[str, Any] = {"resample.strategy": "off", "aux.reanimation_coef": 1e-2, "normalize.mode": "dataset_scalar",
                          "sae.b_dec_init": "geometric_median", "sae.apply_b_dec_to_input": True}
    if ctx.base.sae.architecture in ("relu", "jumprelu"):
        ch |= {"penalty.form": "per_sample_sum", "penalty.alpha": LAB_ALPHA, "sae.decoder_constraint": "unit_norm", "optim.lr": LAB_LR}
    return ch


def fixed(ctx: Context) -> dict[str, Any] | None:
    """The fixed configuration: the confirmed fixes of the other phases combined, most harmful
    cause first (``saelab.lab.answer``); None when no phase has confirmed a cause (or none ran)."""
    return answer.fixed_changes(answer.ranking(ctx.prior_verdicts)) or None


RECIPES = {"fixed": fixed, "seed-fixed": seed_fixed, "lab-fixed": lab_fixed}


def _arms(ctx: Context) -> list[Arm]:
    recipes = ctx.params["recipes"]
    if not isinstance(recipes, (list, tuple)) or any(r not in RECIPES for r in recipes):
        raise ValueError(f"recipes={recipes!r}: a list from {list(RECIPES)}")
    real = ctx.params["data_source_real"]
    sources = [None] + ([real] if real and ctx.base.data.source == "synthetic" and real != "synthetic" else [])
    tokens = ctx.params["data_max_tokens"] or ctx.base.data.max_tokens
    out = []
    for src in sources:
        on = {} if src is None else {"data.source": src, "sae.d_in": 0, "data.max_tokens": tokens}
        if src is not None and ctx.base.data.outlier_fraction > 0:  # sink rows are planted in synthetic data only
            on["data.outlier_fraction"] = 0.0
        tag = "" if src is None else "_" + src.replace(":", "-").replace("/", "-")
        if src is not None:
            out.append(Arm(f"base{tag}", on, against=None))
        for name in recipes:
            ch = RECIPES[name](ctx)
            if ch is not None and ctx.base.with_overrides(ch) != ctx.base:
                out.append(Arm(f"{name}{tag}", on | ch, against=None))
    return out


def _judge(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> list[dict]:
    """V · each arm meets the seed's validation table (``answer.validation_verdicts``)."""
    return [judged(V, STEM, v["verdict"], v["effect"], v["numbers"], hid=v["id"], claim=v["hypothesis"].split(" · ", 1)[1])
            for v in answer.validation_verdicts(runs)]


V = Hypothesis("V", "the recipe meets the seed's validation table", "remedy", (), lambda ctx: None, _arms, _judge,
               source="seeds/004, Validation Metrics")

INTRO = """The seed's Validation Metrics table: final L0 4-7% of latents (target 5%), dead < 20% (target < 10%),
L1/reconstruction ratio 0.01-0.5, reconstruction loss < 0.10 (target < 0.05), no collapse. The base and each
recipe applied to it are judged against the table on their own; on a synthetic base also on real
activations (MiniLM hidden states; the first run builds the cache)."""

PHASE = Phase(
    STEM, "Validation", "Does a fixed recipe meet the seed's validation table?", INTRO, (V,),
    {"data_source_real": ("data.source", "minilm", "real-activation source trained beside a synthetic base ('' to skip)"),
     "data_max_tokens": ("data.max_tokens", None, "tokens of text for the real source; None: the profile's (its cache is built once)"),
     "recipes": (None, list(RECIPES), "recipes applied to the base: fixed (the other phases' confirmed fixes combined), "
                                      "seed-fixed (the seed's Expected Fixes), lab-fixed (this lab's)")},
    ("The seed's Validation Metrics table", ("rows = answer.validation_rows(runs)\ntables.validation_table(rows)",)),
    reads_prior=True,
    after_training=(("## What kills the latents of this setup\n\nThe causes the other phases tested, ranked by how "
                     "many deaths their fix removes (peak, then final dead fraction; mean over replicates), each with "
                     "its verdict and the change that fixes it; then the fixed configuration, trained below as the "
                     "`fixed` arm and checked against the validation table.",
                     "from saelab.lab import answer\n\nfound_answer = answer.write_answer(run)\n"
                     "display(Markdown(answer.markdown(found_answer)))\nplots.answer_bars(found_answer)"),),
    verdicts_extra="answer.validation_rows(runs)")
