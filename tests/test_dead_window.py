"""H29 (phase 03): the dead window is shorter than a rare latent's firing interval, so training
resamples (or AuxK-trains) latents that are alive. It acts only on a base whose training acts on dead
latents (resampling by the tokens or window detector, or AuxK) by a window shorter than
``resampling.rare_interval``; its one arm lengthens that window x10; its judge counts both arms over
one window (``dead_frac_common``), so the arm's longer window cannot remove deaths by measurement."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from saelab.config import RunConfig
from saelab.lab.base import PROFILES
from saelab.lab.causes import resampling
from saelab.lab.hypothesis import Arm, Context, build_arms, diff, removes_deaths
from saelab.training import stack
from saelab.training.train import train

STEPS = np.arange(0, 1001, 50)
# TopK k=4 of 64 latents, 1,000 steps of 64 rows, resampling (Anthropic) by the tokens detector every 100 steps
TOPK = {"sae.architecture": "topk", "sae.k": 4, "sae.d_sae": 64, "sae.d_in": 32, "penalty.form": "none", "penalty.alpha": 0.0,
        "steps": 1000, "data.batch_size": 64, "resample.strategy": "anthropic", "resample.detector": "tokens",
        "resample.interval": 100, "tracking.dead_tokens": 128}


def ctx(**changes) -> Context:
    fields = TOPK | {k.replace("__", "."): v for k, v in changes.items()}
    return Context(RunConfig().with_overrides(fields), PROFILES["smoke"], {"resample_strategy": [], "resample_detector": []}, False)


def test_the_rare_interval_is_what_a_latent_at_a_tenth_of_the_mean_rate_needs():
    assert resampling.rare_interval(ctx().base) == 735  # k=4 of 64: rate 6.25e-3, 99% to fire within 735 tokens
    relu = ctx(sae__architecture="relu", penalty__form="per_sample_sum", penalty__alpha=0.01).base
    assert resampling.rare_interval(relu) > 735  # L0 unknown: the sparsest acceptable code, 4% of 64 = 2.56 latents


def test_applies_only_where_training_acts_on_latents_called_dead_by_a_short_window():
    assert resampling.H29.applies(ctx()) is None  # 128 tokens < 735
    assert "changes only a count" in resampling.H29.applies(ctx(resample__strategy="off"))
    assert "already looks back over at least its detection floor" in resampling.H29.applies(ctx(resample__strategy="off"))
    assert "at least the 735 tokens" in resampling.H29.applies(ctx(tracking__dead_tokens=800))
    assert "single_batch" in resampling.H29.applies(ctx(resample__detector="single_batch"))
    assert resampling.H29.applies(ctx(resample__detector="window", tracking__window_batches=5)) is None  # 320 tokens
    assert resampling.H29.applies(ctx(resample__detector="window", tracking__window_batches=20)) is not None  # 1,280
    auxk = {"resample__strategy": "off", "aux__auxk_coef": 1 / 32, "aux__auxk_k": 16}
    assert resampling.H29.applies(ctx(**auxk)) is None  # AuxK reads tracking.dead_tokens
    assert resampling.H29.applies(ctx(**auxk, tracking__dead_tokens=800)) is not None
    # resampling by one batch beside AuxK: AuxK's window is the one to lengthen
    assert resampling.H29.applies(ctx(**(auxk | {"resample__strategy": "anthropic"}), resample__detector="single_batch")) is None
    both = ctx(**(auxk | {"resample__strategy": "anthropic"}), resample__detector="single_batch", tracking__dead_tokens=800)
    assert "single_batch" in resampling.H29.applies(both) and "its AuxK dead window is at least" in resampling.H29.applies(both)


def test_the_arm_lengthens_the_window_the_remedy_uses_and_changes_one_field():
    for c, field, value in [(ctx(), "tracking.dead_tokens", 1280),
                            (ctx(resample__detector="window", tracking__window_batches=5), "tracking.window_batches", 50),
                            (ctx(resample__strategy="off", aux__auxk_coef=1 / 32, aux__auxk_k=16), "tracking.dead_tokens", 1280)]:
        arms = resampling.H29.arms(c)
        assert [dict(a.changes) for a in arms] == [{field: value}]
        assert list(diff(c.base, c.base.with_overrides(dict(arms[0].changes)))) == [field]
    # AuxK refuses a window as long as the run: x10 is cut just below the run's tokens
    short = ctx(resample__strategy="off", aux__auxk_coef=1 / 32, aux__auxk_k=16, steps=10, tracking__dead_tokens=128, log_interval=10)
    assert [dict(a.changes) for a in resampling.H29.arms(short)] == [{"tracking.dead_tokens": 639}]
    plan = build_arms(resampling.PHASE, ctx())  # the phase builds it beside H3's resampling off
    assert {"resample_off", "dead_tokens_x10"} <= set(plan.arms)


def test_the_common_count_looks_back_over_a_window_that_no_tracking_field_moves():
    base = ctx().base
    longer = base.with_overrides({"tracking.dead_tokens": 12_800, "tracking.window_batches": 7})
    assert stack.common_window(base, 256) == stack.common_window(longer, 256) == 2690  # 64 latents, 256 held-out rows
    assert stack.count_window(longer, 4.0, 256) == 12_800 > stack.count_window(base, 4.0, 256)  # the lab's count moves


def run(dead: float, common: float, resampled: int = 0) -> SimpleNamespace:
    m = pd.DataFrame({"step": STEPS, "dead_frac": np.full(STEPS.shape, dead), "dead_frac_common": np.full(STEPS.shape, common),
                      "l0_frac": np.full(STEPS.shape, 4 / 64)})
    m["l0"] = m["l0_frac"] * 64
    events = [{"kind": "resample", "step": s, "detector": "tokens", "n_detected": resampled, "det_tokens_precision": 0.5}
              for s in range(100, 1000, 100)]
    return SimpleNamespace(metrics=m, events=events, autopsy=None, latents={}, weights={}, config=ctx().base, summary={})


@pytest.mark.parametrize(("arm_dead", "arm_common", "word"), [
    (0.10, 0.10, "confirmed"),  # both counts fall
    (0.10, 0.40, "refuted"),  # only the lab's count falls: its window is longer in the arm, the deaths are still there
    (0.40, 0.10, "confirmed"),  # the common count is what is judged
])
def test_the_judge_counts_both_arms_over_one_window(arm_dead, arm_common, word):
    c = ctx()
    arms = resampling.H29.arms(c)
    runs = {s: {"base": run(0.4, 0.4, 20), "dead_tokens_x10": run(arm_dead, arm_common, 4)} for s in range(3)}
    v = resampling.H29.judge(runs, c, arms)
    assert v["id"] == "H29" and v["verdict"] == word, v["effect"]
    assert "dead_frac_common" in v["effect"] and "base 180 ± 0 (90 ± 0)" in v["effect"]  # 9 resamplings x 20, half alive
    assert v["numbers"]["base_resampled"] == 180 and v["numbers"]["dead_tokens_x10_resampled"] == 36
    if word == "confirmed":
        assert v["fix"] == {"arm": "dead_tokens_x10", "changes": {"tracking.dead_tokens": 1280}}


def test_a_longer_window_alone_lowers_the_labs_count_but_not_the_common_one(tmp_path):
    """Trained: two arms that differ only in tracking.dead_tokens, with nothing acting on dead latents
    (no resampling, no AuxK), train the same SAE. The lab's count (over max(dead_tokens, its floor))
    calls fewer latents dead in the longer-window arm, by measurement alone; the common count is the
    same row for row, and H29's judge, which reads it, does not confirm a fix."""
    cfg = RunConfig().with_overrides({
        "sae.architecture": "topk", "sae.k": 2, "sae.d_sae": 64, "sae.d_in": 16, "penalty.form": "none", "penalty.alpha": 0.0,
        "data.batch_size": 32, "data.n_features": 256, "data.mean_active": 2.0, "data.firing_exponent": 1.5, "data.mean_offset": 0.0,
        "steps": 300, "log_interval": 10, "eval_rows": 128, "tracking.dead_tokens": 32, "optim.lr": 3e-3})
    runs = train({"base": cfg, "dead_tokens_x100": cfg.with_overrides({"tracking.dead_tokens": 3200})}, tmp_path, progress=False)
    b, a = runs["base"].metrics, runs["dead_tokens_x100"].metrics
    np.testing.assert_array_equal(b["dead_frac_common"].to_numpy(), a["dead_frac_common"].to_numpy())
    np.testing.assert_array_equal(b["dead_frac_heldout"].to_numpy(), a["dead_frac_heldout"].to_numpy())
    fall = b["dead_frac"] - a["dead_frac"]  # the lab's count calls fewer latents dead in the arm, by measurement alone
    assert (fall >= 0).all() and fall.max() > 0.03 and fall.iloc[-5:].mean() > 0
    paired = {s: {"base": runs["base"], "dead_tokens_x100": runs["dead_tokens_x100"]} for s in range(3)}
    assert removes_deaths(paired, "base", "dead_tokens_x100")["numbers"]["final_reduction"] > 0  # what the lab's count would say
    assert removes_deaths(paired, "base", "dead_tokens_x100", column="dead_frac_common")["numbers"]["peak_reduction"] == 0
    arms = [Arm("dead_tokens_x100", {"tracking.dead_tokens": 3200})]
    v = resampling.H29.judge(paired, Context(cfg, PROFILES["smoke"], {}, False), arms)
    assert v["verdict"] == "refuted" and v["numbers"]["peak_reduction"] == 0, v["effect"]
