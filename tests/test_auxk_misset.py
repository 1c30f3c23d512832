"""H25 (phase 01): AuxK is on but mis-set. It acts only on a TopK-family base that already trains
with AuxK, each arm moves one AuxK setting to Gao et al. 2024's (weight 1/32, k_aux = d_in/2, a
dead window of at most a tenth of the run) and only where the base differs, and its judge names
the arm that removes the deaths."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from saelab.config import RunConfig
from saelab.lab.base import PROFILES
from saelab.lab.causes import l1
from saelab.lab.hypothesis import Context, build_arms, diff

STEPS = np.arange(0, 1001, 50)
# TopK k=4 of 64 latents on d_in 32, 1,000 steps of 64 rows (64,000 tokens: a tenth is 6,400)
TOPK = {"sae.architecture": "topk", "sae.k": 4, "sae.d_sae": 64, "sae.d_in": 32, "penalty.form": "none", "penalty.alpha": 0.0,
        "steps": 1000, "data.batch_size": 64}
GAO = {"aux.auxk_coef": 1 / 32, "aux.auxk_k": 16, "tracking.dead_tokens": 6400}


def ctx(**changes) -> Context:
    fields = TOPK | GAO | {k.replace("__", "."): v for k, v in changes.items()}
    return Context(RunConfig().with_overrides(fields), PROFILES["smoke"], {"sae_k_multipliers": [4]}, False)


def test_not_applicable_without_auxk_or_on_a_base_without_k():
    assert "without AuxK" in l1.H25.applies(ctx(aux__auxk_coef=0.0))
    assert l1.H17.applies(ctx(aux__auxk_coef=0.0)) is None  # there H17 (add AuxK) acts instead
    relu = ctx(sae__architecture="relu", penalty__form="per_sample_sum", penalty__alpha=0.01)
    assert "relu SAE" in l1.H25.applies(relu)
    assert "already at Gao's" in l1.H25.applies(ctx())  # nothing to move: no arm would differ from the base
    assert l1.H25.applies(ctx(aux__auxk_coef=1 / 3200)) is None
    assert l1.H25.applies(ctx(sae__architecture="batchtopk", aux__auxk_k=1)) is None


def test_each_arm_changes_one_auxk_field_to_gaos_value_and_skips_those_already_there():
    c = ctx(aux__auxk_coef=1 / 3200, aux__auxk_k=2, tracking__dead_tokens=32_000)
    arms = l1.H25.arms(c)
    assert [dict(a.changes) for a in arms] == [{"aux.auxk_coef": 1 / 32}, {"aux.auxk_k": 16}, {"tracking.dead_tokens": 6400}]
    for a in arms:  # exactly one field differs from the base's config
        assert list(diff(c.base, c.base.with_overrides(dict(a.changes)))) == list(a.changes)
    assert [dict(a.changes) for a in l1.H25.arms(ctx(aux__auxk_k=2))] == [{"aux.auxk_k": 16}]
    assert l1.H25.arms(ctx(tracking__dead_tokens=1000)) == []  # a shorter window than a tenth is not "too long"
    assert [dict(a.changes) for a in l1.H25.arms(ctx(aux__auxk_k=2, sae__d_sae=8, sae__k=2))] == [{"aux.auxk_k": 8}]  # at most d_sae
    assert l1.H25.arms(ctx(aux__auxk_k=2, sae__d_in=0)) == []  # d_in from a file: k_aux = d_in/2 is not known before the data
    plan = build_arms(l1.PHASE, ctx(aux__auxk_coef=1 / 3200, aux__auxk_k=2))  # the phase builds them beside H16's k arm
    assert {"auxk_coef_0.03125", "auxk_k_16", "k_16"} <= set(plan.arms) and "H17" in plan.not_applicable


def run(dead: float) -> SimpleNamespace:
    m = pd.DataFrame({"step": STEPS, "dead_frac": np.full(STEPS.shape, dead), "l0_frac": np.full(STEPS.shape, 4 / 64)})
    m["l0"] = m["l0_frac"] * 64
    return SimpleNamespace(metrics=m, events=[], autopsy=None, latents={}, weights={}, config=ctx().base, summary={})


@pytest.mark.parametrize(("coef_dead", "k_dead", "word", "best"), [
    (0.30, 0.10, "confirmed", "auxk_k_16"),  # both arms remove the deaths: the fix is the larger fall
    (0.39, 0.40, "refuted", None),  # neither moves them
])
def test_the_judge_names_the_arm_that_removes_the_most_deaths(coef_dead, k_dead, word, best):
    c = ctx(aux__auxk_coef=1 / 3200, aux__auxk_k=2)
    arms = l1.H25.arms(c)
    runs = {s: {"base": run(0.4), "auxk_coef_0.03125": run(coef_dead), "auxk_k_16": run(k_dead)} for s in range(3)}
    v = l1.H25.judge(runs, c, arms)
    assert v["id"] == "H25" and v["verdict"] == word, v["effect"]
    assert {x["arm"] for x in v["compared"]} == {"auxk_coef_0.03125", "auxk_k_16"}
    if best:
        assert v["numbers"]["best"] == best and v["fix"] == {"arm": best, "changes": {"aux.auxk_k": 16}}
        assert "auxk_coef_0.03125:" in v["effect"]  # the other arm is reported


def test_deaths_before_auxk_can_act_are_not_held_against_it():
    """AuxK revives latents that have been silent for a dead window; it cannot stop the first deaths,
    which every arm shares. Its judges read the peak from two of the base's dead windows on (here
    6,400 tokens of 64 rows: step 200), so an arm that shares the base's early peak and then brings
    the latents back is confirmed, and one that only matches it late is not."""
    c = ctx(aux__auxk_coef=1 / 3200, aux__auxk_k=2)
    assert l1._auxk_after(c) == 200
    assert l1._auxk_after(ctx(aux__auxk_coef=1 / 3200, tracking__dead_tokens=32_000)) == 500  # at most half the run
    arms = l1.H25.arms(c)

    def revived(at: int) -> SimpleNamespace:
        r = run(0.4)
        r.metrics.loc[r.metrics["step"] >= at, "dead_frac"] = 0.02
        return r

    early = {s: {"base": run(0.4), "auxk_coef_0.03125": revived(200), "auxk_k_16": run(0.4)} for s in range(3)}
    v = l1.H25.judge(early, c, arms)
    assert v["verdict"] == "confirmed" and v["fix"]["arm"] == "auxk_coef_0.03125", v["effect"]
    late = {s: {"base": run(0.4), "auxk_coef_0.03125": revived(700), "auxk_k_16": run(0.4)} for s in range(3)}
    assert l1.H25.judge(late, c, arms)["verdict"] != "confirmed"
