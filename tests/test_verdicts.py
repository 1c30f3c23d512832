"""Verdicts are computed from runs: each rule flips when the effect in the runs appears or vanishes,
mixed replicates are inconclusive, and one rule is checked end to end on tiny trainings whose data
decides whether the effect exists."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from saelab import phases, verdict_rules, verdicts
from saelab.config import seed_test1
from saelab.train import train

STEPS = np.arange(0, 1001, 50)
RESAMPLE = {"step": 250, "kind": "resample"}


def fake(dead, l0_frac=0.5, events=(), cfg=None, d_sae=100, fire=None, **cols) -> SimpleNamespace:
    """A run-like object: metrics over STEPS (scalars broadcast; callables of the step array)."""
    val = lambda v: v(STEPS) if callable(v) else np.broadcast_to(np.asarray(v, dtype=float), STEPS.shape)  # noqa: E731
    m = pd.DataFrame({"step": STEPS, "dead_frac": val(dead), "l0_frac": val(l0_frac)})
    m["l0"] = m["l0_frac"] * d_sae
    for k, v in cols.items():
        m[k] = val(v)
    latents = {}
    if fire is not None:
        latents = {"fire_counts": torch.tensor(np.asarray(fire)[None, :]), "eval_rows": torch.tensor(100)}
    return SimpleNamespace(metrics=m, events=list(events), autopsy=None, latents=latents, weights={},
                           config=cfg or seed_test1(), summary={})


def jump_after_resample(before: float, after: float):
    return lambda s: np.where(s < 250, before, after)


def by_seed(**arms) -> dict:
    """{seed: {arm: run}} with the same arms for seeds 0, 1, 2 (values: a run or a list of 3)."""
    return {s: {a: (r[s] if isinstance(r, list) else r) for a, r in arms.items()} for s in range(3)}


def test_tail_is_a_median_over_the_last_tenth():
    r = fake(lambda s: np.where(s == 1000, 0.9, 0.1))  # a spike at the very end (resampled at the last step)
    assert verdicts.tail(r, "dead_frac") == pytest.approx(0.1)
    assert verdicts.peak(r, after=500) == pytest.approx(0.9)


def test_rule_needs_every_replicate():
    assert verdicts.rule([True, True, True], [False] * 3) == "confirmed"
    assert verdicts.rule([True, False, True], [False, True, False]) == "inconclusive"
    assert verdicts.rule([False] * 3, [True] * 3) == "refuted"
    assert verdicts.rule([], []) == "inconclusive"


def test_h3_flips_with_the_dead_jump_after_resampling():
    collapsed = fake(jump_after_resample(0.05, 0.40), events=[RESAMPLE])
    healthy = fake(0.05, events=[RESAMPLE])
    off = fake(0.05)
    v = verdict_rules.h3_resampling(by_seed(seed=collapsed, off=off))
    assert v["verdict"] == "confirmed" and v["numbers"]["seed_peak_dead"] == pytest.approx(0.40)
    assert verdict_rules.h3_resampling(by_seed(seed=healthy, off=off))["verdict"] == "refuted"
    mixed = by_seed(seed=[collapsed, healthy, collapsed], off=off)
    assert verdict_rules.h3_resampling(mixed)["verdict"] == "inconclusive"
    assert "not testable" in verdict_rules.h3_resampling(by_seed(seed=collapsed))["effect"]


def test_h1_flips_with_the_seed_arm_sparsity_before_resampling():
    dense = fake(0.0, l0_frac=0.6, events=[RESAMPLE], l1_recon_ratio=0.03)
    stronger = fake(0.0, l0_frac=0.1, events=[RESAMPLE])
    sparse = fake(0.0, l0_frac=0.05, events=[RESAMPLE], l1_recon_ratio=0.1)
    v = verdict_rules.h1_scale(by_seed(seed=dense, mean_all_x100=stronger))
    assert v["verdict"] == "confirmed" and v["numbers"]["seed_l0_frac"] == pytest.approx(0.6)
    assert verdict_rules.h1_scale(by_seed(seed=sparse, mean_all_x100=stronger))["verdict"] == "refuted"


def test_h0_and_h5_follow_the_autopsy():
    collapsing = fake(lambda s: np.where(s < 300, 0.02, 0.6))
    steady = fake(0.02)
    v = verdict_rules.h0_collapse(by_seed(**{"seed-test1": collapsing}))[0]
    assert v["verdict"] == "confirmed" and v["numbers"]["onset_step_mean"] == 300
    assert verdict_rules.h5_grad_accumulation(by_seed(**{"seed-test1": collapsing}))["verdict"] == "refuted"
    assert verdict_rules.h0_collapse(by_seed(**{"seed-test1": steady}))[0]["verdict"] == "refuted"
    assert verdict_rules.h5_grad_accumulation(by_seed(**{"seed-test1": steady}))["verdict"] == "inconclusive"


def test_h2a_measures_the_linear_warmup_from_the_schedule():
    v = verdict_rules.h2a_lr_jump(by_seed(seed=fake(0.0)))  # Test 1: warmup 500 steps
    assert v["verdict"] == "refuted"
    assert v["numbers"]["relative_jump"] == pytest.approx(1 / 499, rel=1e-3)


def test_h4a_reads_the_task51_norms():
    d = seed_test1().sae.d_in or 768
    cfg = seed_test1().with_overrides({"sae.d_in": d})
    ok = fake(0.0, cfg=cfg, norm_out_norm_max=d ** 0.5, norm_out_norm_min=d ** 0.5 * 0.999, norm_n_nonfinite=0,
              norm_x_norm_min=4e-6, norm_coef_max=7e6)
    bad = fake(0.0, cfg=cfg, norm_out_norm_max=50 * d ** 0.5, norm_out_norm_min=d ** 0.5, norm_n_nonfinite=2,
               norm_x_norm_min=0.0, norm_coef_max=float("inf"))
    assert verdict_rules.h4a_small_norms(by_seed(seed=ok))["verdict"] == "refuted"
    assert verdict_rules.h4a_small_norms(by_seed(seed=[ok, bad, ok]))["verdict"] == "confirmed"


def test_h8_needs_fewer_dead_latents_without_worse_reconstruction():
    seed = fake(lambda s: np.where(s < 100, 0.09, 0.30), fvu_orig=1.1)
    centered = fake(0.0, fvu_orig=0.07)
    v = verdict_rules.h8_centered_b_dec(by_seed(seed=seed, centered=centered))
    assert v["verdict"] == "confirmed"
    assert v["numbers"]["seed_dead_step0"] == pytest.approx(0.09) and v["numbers"]["centered_peak_dead"] == 0
    worse = fake(0.0, fvu_orig=1.5)  # fewer dead latents bought with a worse reconstruction is no win
    assert verdict_rules.h8_centered_b_dec(by_seed(seed=seed, centered=worse))["verdict"] == "refuted"
    same = fake(lambda s: np.where(s < 100, 0.09, 0.28), fvu_orig=1.0)
    assert verdict_rules.h8_centered_b_dec(by_seed(seed=seed, centered=same))["verdict"] == "refuted"
    assert verdict_rules.h8_centered_b_dec(by_seed(seed=seed, centered=[centered, same, centered]))["verdict"] == "inconclusive"
    assert "not testable" in verdict_rules.h8_centered_b_dec(by_seed(seed=seed))["effect"]


def test_r1_separates_sparse_revival_from_dense_noise():
    fire_base = [0] * 20 + [10] * 80  # 20% dead, none dense
    base = fake(0.2, l0_frac=0.1, fire=fire_base)
    sparse_revival = fake(0.0, l0_frac=0.11, fire=[10] * 100)
    dense_revival = fake(0.0, l0_frac=0.12, fire=[90] * 30 + [10] * 70)  # 30% of alive latents dense
    no_revival = fake(0.2, l0_frac=0.1, fire=fire_base)
    check = lambda arm: verdict_rules.r1_reanimation(by_seed(relu_coef0=base, **{"relu_coef0.001": arm}))[0]["verdict"]  # noqa: E731
    assert check(sparse_revival) == "confirmed"
    assert check(dense_revival) == "refuted"
    assert check(no_revival) == "refuted"


def test_validation_rows_and_verdicts():
    good = fake(0.05, l0_frac=0.05, l1_recon_ratio=0.1, mse=0.04)
    bad = fake(0.5, l0_frac=0.3, l1_recon_ratio=0.001, mse=0.3)
    runs = by_seed(good=good, bad=bad)
    rows = verdicts.validation_rows(runs)
    assert len(rows) == 10 and {r["arm"] for r in rows} == {"good", "bad"}
    assert all(r["pass"] for r in rows if r["arm"] == "good")
    assert not any(r["pass"] for r in rows if r["arm"] == "bad" and "stability" not in r["metric"])
    words = {v["id"]: v["verdict"] for v in verdicts.validation_verdicts(runs)}
    assert words == {"V-good": "confirmed", "V-bad": "refuted"}
    no_l1 = seed_test1().with_overrides({"sae.architecture": "topk", "penalty.form": "none", "penalty.alpha": 0.0})
    topk = fake(0.05, l0_frac=0.05, cfg=no_l1, l1_recon_ratio=0.0, mse=0.04)
    ratio = [r for r in verdicts.validation_rows(by_seed(topk=topk)) if r["metric"].startswith("L1/recon")]
    assert ratio[0]["pass"] is None  # not applicable without an L1 penalty
    assert verdicts.validation_verdicts(by_seed(topk=topk))[0]["verdict"] == "confirmed"


def test_phase_verdicts_and_write(tmp_path):
    runs = by_seed(seed=fake(jump_after_resample(0.05, 0.40), events=[RESAMPLE]), off=fake(0.05))
    found = verdicts.phase_verdicts("03_resampling", runs)
    assert [v["id"] for v in found] == ["H3", "H3a", "H3b", "H6"]
    assert all(v["verdict"] in ("confirmed", "refuted", "inconclusive") and v["evidence"].startswith("evidence-") for v in found)
    path = verdicts.write(tmp_path, found, [{"arm": "a", "value": float("nan")}])
    assert json.loads(path.read_text())[0]["id"] == "H3"
    assert json.loads((tmp_path / "validation.json").read_text())[0]["value"] is None
    with pytest.raises(ValueError, match="no verdict rules"):
        verdicts.phase_verdicts("99_x", runs)


def test_reanimation_verdict_flips_when_the_data_loses_its_offset(tmp_path):
    """End to end: tiny trainings of phase 05 (ReLU, coefficient 0 vs 1e-3, resampling off). With a
    shared offset in the data some latents start dead and the reanimation term revives them
    (confirmed); on the same data without the offset no latent dies, so nothing can be revived and
    the verdict must change (refuted)."""
    words = {}
    for offset in (8.0, 0.0):
        runs = {}
        for seed in (0, 1, 2):
            arms = phases.build_arms("05_reanimation", "smoke", seed, steps=150, data_mean_offset=offset,
                                     overrides={"sae.d_sae": 128}, sae_architecture=["relu"],
                                     aux_reanimation_coef=[1e-3], aux_reanimation_schedule="constant", aux_auxk_coef=0)
            runs[seed] = train(arms, tmp_path / f"{offset}-{seed}", progress=False)
        words[offset] = verdict_rules.r1_reanimation(runs)[0]
    assert words[8.0]["numbers"]["dead_coef0"] > 0.05
    assert words[8.0]["verdict"] == "confirmed", words[8.0]["effect"]
    assert words[0.0]["verdict"] == "refuted", words[0.0]["effect"]


def test_stability_ignores_the_initial_sparsification():
    cfg = seed_test1().with_overrides({"steps": 1000, "schedule.warmup_steps": 50})
    early = fake(0.02, l0_frac=lambda s: np.where(s < 50, 0.5, 0.05), cfg=cfg)  # L0 falls 10x as the penalty bites
    late = fake(lambda s: np.where(s < 500, 0.02, 0.6), cfg=cfg)  # dead fraction jumps mid-training
    assert verdicts.collapses(early) == [] and verdicts.late_collapses(early) == []  # the autopsy reports it apart
    assert [c["onset_step"] for c in verdicts.late_collapses(late)] == [500]
    stability = [r for r in verdicts.validation_rows(by_seed(early=early, late=late)) if "stability" in r["metric"]]
    assert [(r["arm"], r["pass"]) for r in stability] == [("early", True), ("late", False)]
