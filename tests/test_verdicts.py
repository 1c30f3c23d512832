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

from saelab.config import seed_test1
from saelab.lab import answer, phases, verdicts, wording
from saelab.lab.hypothesis import removes_deaths
from saelab.lab.phases import get_phase
from saelab.training import stack
from saelab.training.train import train

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


def namespace(stem: str, **given) -> dict:
    ns = {"profile": "smoke", "seeds": None, "out_dir": "/tmp/x", "base": None, "source": None, "steps": None,
          "data_mean_offset": None, "overrides": {}, "explorer": False, **get_phase(stem).defaults()}
    return ns | given


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


def judge(stem: str, hid: str, runs: dict, base: str | None = None, profile: str = "smoke", **params) -> list[dict]:
    """The verdicts of hypothesis ``hid`` on ``runs``, with the arms phase ``stem`` builds for ``base``."""
    built = phases.build(stem, profile, 0, base, **params)
    h = next(h for h in get_phase(stem).hypotheses if h.id == hid)
    found = h.judge(runs, built.ctx, built.plan.tested[hid])
    return found if isinstance(found, list) else [found]


def test_removing_the_cause_must_remove_the_deaths_beyond_the_spread():
    dying, healthy = fake(0.4), fake(0.02)
    assert removes_deaths(by_seed(base=dying, fix=healthy), "base", "fix")["word"] == "confirmed"
    assert removes_deaths(by_seed(base=dying, fix=fake(0.38)), "base", "fix")["word"] == "refuted"
    noisy = [fake(0.4), fake(0.05), fake(0.4)]  # the fix wins in 2 of 3 replicates only
    assert removes_deaths(by_seed(base=dying, fix=noisy), "base", "fix")["word"] == "inconclusive"
    spread = [fake(0.9), fake(0.2), fake(0.5)]  # falls of 40, 1 and 2 points: a 14-point mean inside their spread
    wide = removes_deaths(by_seed(base=spread, fix=[fake(0.5), fake(0.19), fake(0.48)]), "base", "fix")
    assert wide["word"] == "inconclusive"
    n = wide["numbers"]  # the spread it judged by is reported: sd per arm, SE of the paired falls
    assert abs(n["base_peak_dead_sd"] - 0.35) < 0.01 and n["margin"] >= 2 * n["peak_reduction_se"] > 0.05
    assert "not testable" in removes_deaths(by_seed(base=dying), "base", "fix")["effect"]


def test_h3_flips_with_the_dead_jump_after_resampling():
    collapsed = fake(jump_after_resample(0.05, 0.40), events=[RESAMPLE])
    healthy = fake(0.05, events=[RESAMPLE])
    off = fake(0.05)
    v = judge("03_resampling", "H3", by_seed(base=collapsed, resample_off=off))[0]
    assert v["verdict"] == "confirmed" and v["meaning"] == "bad" and v["compared"][0]["changes"] == {"resample.strategy": "off"}
    assert judge("03_resampling", "H3", by_seed(base=healthy, resample_off=off))[0]["verdict"] == "refuted"
    mixed = {
        0: {"base": collapsed, "resample_off": off},
        1: {"base": healthy, "resample_off": off},
        2: {"base": collapsed, "resample_off": off},
    }
    assert judge("03_resampling", "H3", mixed)[0]["verdict"] == "inconclusive"


def test_h1_flips_with_the_base_sparsity_before_resampling():
    dense, sparse, stronger = fake(0.0, l0_frac=0.5), fake(0.0, l0_frac=0.05), fake(0.0, l0_frac=0.1)
    v = judge("01_l1_penalty", "H1", by_seed(base=dense, alpha_x10=stronger, alpha_x100=stronger))[0]
    assert v["verdict"] == "confirmed", v["effect"]
    assert judge("01_l1_penalty", "H1", by_seed(base=sparse, alpha_x10=stronger, alpha_x100=stronger))[0]["verdict"] == "refuted"


def test_h0_reports_collapses_with_coinciding_events_and_h5_is_not_applicable():
    collapsing = fake(lambda s: np.where(s < 300, 0.05, 0.6), events=[{"step": 250, "kind": "warmup_end"}])
    steady = fake(0.05)
    v = judge("00_reproduce", "H0", by_seed(base=collapsing), presets=[])[0]
    assert v["verdict"] == "confirmed" and "coincides with: warmup_end" in v["effect"]
    assert judge("00_reproduce", "H0", by_seed(base=steady), presets=[])[0]["verdict"] == "refuted"
    built = phases.build("00_reproduce", "smoke", 0)
    assert "H5" in built.plan.not_applicable and "accumulates no gradients" in built.plan.not_applicable["H5"]


def test_h2a_measures_the_linear_warmup_from_the_schedule():
    v = judge("02_lr_warmup", "H2a", {}, profile="quick")[0]  # Test 1's warmup: 5% of 1,000 steps
    assert v["verdict"] == "refuted" and v["numbers"]["relative_jump"] < 0.05


def test_h4a_reads_the_task51_norms():
    ok = fake(0.0, norm_out_norm_max=32 ** 0.5, norm_out_norm_min=32 ** 0.5, norm_n_nonfinite=0, norm_x_norm_min=1e-5, norm_coef_max=1e5)
    bad = fake(0.0, norm_out_norm_max=1e9, norm_out_norm_min=32 ** 0.5, norm_n_nonfinite=0, norm_x_norm_min=1e-5, norm_coef_max=1e5)
    cfg = phases.build("04_normalization", "smoke", 0).ctx.base
    ok.config = bad.config = cfg
    assert judge("04_normalization", "H4a", by_seed(base=ok))[0]["verdict"] == "refuted"
    assert judge("04_normalization", "H4a", by_seed(base=[ok, bad, ok]))[0]["verdict"] == "confirmed"


def test_h8_needs_fewer_dead_latents_without_worse_reconstruction():
    base = fake(lambda s: np.where(s < 100, 0.1, 0.3), fvu_orig=0.2)
    centered = fake(0.0, fvu_orig=0.1)
    worse = fake(0.0, fvu_orig=0.5)
    same = fake(lambda s: np.where(s < 100, 0.1, 0.29), fvu_orig=0.2)
    v = judge("04_normalization", "H8", by_seed(base=base, centered=centered))[0]
    assert v["verdict"] == "confirmed" and v["numbers"]["base_dead_step0"] == pytest.approx(0.1)
    assert judge("04_normalization", "H8", by_seed(base=base, centered=worse))[0]["verdict"] == "inconclusive"
    assert judge("04_normalization", "H8", by_seed(base=base, centered=same))[0]["verdict"] == "refuted"
    assert judge("04_normalization", "H8", by_seed(base=base, centered=[centered, same, centered]))[0]["verdict"] == "inconclusive"


def test_r1_separates_sparse_revival_from_dense_noise():
    fire_base = [0] * 20 + [10] * 80  # 20% dead, none dense
    base = fake(0.2, l0_frac=0.1, fire=fire_base)
    sparse_revival = fake(0.0, l0_frac=0.11, fire=[10] * 100)
    dense_revival = fake(0.0, l0_frac=0.12, fire=[90] * 30 + [10] * 70)  # 30% of alive latents dense
    no_revival = fake(0.2, l0_frac=0.1, fire=fire_base)
    check = lambda arm: judge("05_reanimation", "R1", by_seed(base=base, **{"reanim_0.001": arm}))[0]["verdict"]  # noqa: E731
    assert check(sparse_revival) == "confirmed"
    assert check(dense_revival) == "refuted"
    assert check(no_revival) == "refuted"
    nothing = fake(0.0, l0_frac=0.1, fire=[10] * 100)
    v = judge("05_reanimation", "R1", by_seed(base=nothing, **{"reanim_0.001": nothing}))[0]
    assert v["verdict"] == "inconclusive" and "nothing to revive" in v["effect"]


def test_validation_rows_and_verdicts():
    good = fake(0.05, l0_frac=0.05, l1_recon_ratio=0.1, mse=0.04)
    bad = fake(0.5, l0_frac=0.3, l1_recon_ratio=0.001, mse=0.3)
    runs = by_seed(good=good, bad=bad)
    rows = answer.validation_rows(runs)
    assert len(rows) == 10 and {r["arm"] for r in rows} == {"good", "bad"}
    assert all(r["pass"] for r in rows if r["arm"] == "good")
    assert not any(r["pass"] for r in rows if r["arm"] == "bad" and "stability" not in r["metric"])
    words = {v["id"]: v["verdict"] for v in answer.validation_verdicts(runs)}
    assert words == {"V-good": "confirmed", "V-bad": "refuted"}
    no_l1 = seed_test1().with_overrides({"sae.architecture": "topk", "penalty.form": "none", "penalty.alpha": 0.0})
    topk = fake(0.05, l0_frac=0.05, cfg=no_l1, l1_recon_ratio=0.0, mse=0.04)
    ratio = [r for r in answer.validation_rows(by_seed(topk=topk)) if r["metric"].startswith("L1/recon")]
    assert ratio[0]["pass"] is None  # not applicable without an L1 penalty
    assert answer.validation_verdicts(by_seed(topk=topk))[0]["verdict"] == "confirmed"


def test_phase_verdicts_and_write(tmp_path):
    runs = by_seed(base=fake(jump_after_resample(0.05, 0.40), events=[RESAMPLE]), resample_off=fake(0.05))
    run = phases.prepare("03_resampling", namespace("03_resampling", seeds=[0, 1, 2]), history=[])
    found = run.verdicts(runs)
    assert [v["id"] for v in found] == ["H3", "H3a", "H3b", "H6", "H29"]
    assert found[-1]["verdict"] == "not applicable"  # H29: the seed resamples by one batch, no window to lengthen
    found = found[:-1]
    assert all(v["verdict"] in ("confirmed", "refuted", "inconclusive") and v["evidence"].startswith("evidence-") for v in found)
    path = verdicts.write(tmp_path, found, [{"arm": "a", "value": float("nan")}])
    assert json.loads(path.read_text())[0]["id"] == "H3"
    assert json.loads((tmp_path / "validation.json").read_text())[0]["value"] is None


def test_fewer_replicates_than_a_verdict_needs_make_indications_and_say_so():
    """Issue 23: at one replicate (smoke, explore) the verdicts are indications, not evidence; the
    verdict cell says so once, marks each, and never claims a spread ("± 0.0") or that the
    replicates disagree. At 3 replicates nothing of this shows."""
    runs = by_seed(base=fake(jump_after_resample(0.05, 0.40), events=[RESAMPLE]), resample_off=fake(0.05))
    one = phases.prepare("03_resampling", namespace("03_resampling"), history=[])
    found = one.verdicts({0: runs[0]})
    applicable = [v for v in found if v["verdict"] != "not applicable"]
    assert applicable and all(v["replicates"] == 1 and v["indication"] for v in applicable)
    text = verdicts.narrative(found)
    assert text.startswith("**Indications, not evidence: these runs have 1 replicate per arm, and a verdict needs at least 3")
    assert text.count("Indications, not evidence") == 1 and text.count("(indication)**") == len(applicable)
    assert "± 0.0" not in text and "replicates disagree" not in text
    assert "an indication from 1 replicate, not evidence" in wording.what_it_means(applicable[0])
    three = phases.prepare("03_resampling", namespace("03_resampling", seeds=[0, 1, 2]), history=[]).verdicts(runs)
    assert all(v["replicates"] == 3 and not v["indication"] for v in three)
    assert "indication" not in verdicts.narrative(three).lower()
    assert wording.what_it_means({"id": "H9", "verdict": "inconclusive", "replicates": 3}).startswith(
        "H9 is not settled: the replicates disagree")
    assert "disagree" not in wording.what_it_means({"id": "H9", "verdict": "inconclusive", "replicates": 1, "indication": True})


def test_one_replicate_shows_no_spread_and_several_show_it():
    assert verdicts.pm([0.25]) == "25.0%" and verdicts.pm([0.2, 0.3]) == "25.0% ± 7.1"
    assert verdicts.pm([2.0], pct=False) == "2" and verdicts.pm([1.0, 3.0], pct=False) == "2 ± 1.4"


def test_a_not_applicable_reason_is_written_once():
    reason = "the base is a relu SAE: it has no k (TopK family only)"
    v = {"hypothesis": "H16 · k too small", "id": "H16", "verdict": "not applicable", "effect": reason, "kind": "cause"}
    assert verdicts.narrative([v]).count(reason) == 1


def test_values_are_shown_at_significant_digits_not_float_noise():
    assert wording.shown(0.003 * 0.1) == "0.0003" and wording.shown(1e-5) == "1e-05" and wording.shown(2.0) == "2"
    assert wording.shown([0.1 * 3, "a"]) == "[0.3, 'a']" and wording.shown({"x": 0.1 + 0.2}) == "{'x': 0.3}"
    assert wording.shown(True) == "True" and wording.shown(None) == "None" and wording.shown(7) == "7"
    run = phases.prepare("01_l1_penalty", namespace("01_l1_penalty"), history=[])
    table = run.describe()
    assert "penalty.alpha=0.0003<" in table and "0.00030000000000000003" not in table


def test_reanimation_verdict_follows_the_data_offset(tmp_path):
    """End to end: tiny trainings of phase 05 (ReLU, coefficient 0 vs 1e-3, resampling off). With a
    shared offset in the data some latents start dead and the reanimation term revives them
    (confirmed); on the same data without the offset no latent dies, so there is nothing to revive
    and the verdict must change."""
    words = {}
    for offset in (8.0, 0.0):
        runs = {}
        for seed in (0, 1, 2):
            built = phases.build("05_reanimation", "smoke", seed, steps=150, data_mean_offset=offset,
                                 overrides={"sae.d_sae": 128}, sae_architecture=[],
                                 aux_reanimation_coef=[1e-3], aux_reanimation_schedule="constant", aux_auxk_coef=0)
            runs[seed] = train(built.plan.arms, tmp_path / f"{offset}-{seed}", progress=False)
        h = get_phase("05_reanimation").hypotheses[0]
        words[offset] = h.judge(runs, built.ctx, built.plan.tested["R1"])[0]
    assert words[8.0]["numbers"]["ref_final_dead"] > 0.05
    assert words[8.0]["verdict"] == "confirmed", words[8.0]["effect"]
    assert words[0.0]["verdict"] != "confirmed", words[0.0]["effect"]


def test_stability_ignores_the_initial_sparsification():
    cfg = seed_test1().with_overrides({"steps": 1000, "schedule.warmup_steps": 50})
    early = fake(0.02, l0_frac=lambda s: np.where(s < 50, 0.5, 0.05), cfg=cfg)  # L0 falls 10x as the penalty bites
    late = fake(lambda s: np.where(s < 500, 0.02, 0.6), cfg=cfg)  # dead fraction jumps mid-training
    assert verdicts.collapses(early) == [] and verdicts.late_collapses(early) == []  # the autopsy reports it apart
    assert [c["onset_step"] for c in verdicts.late_collapses(late)] == [500]
    stability = [r for r in answer.validation_rows(by_seed(early=early, late=late)) if "stability" in r["metric"]]
    assert [(r["arm"], r["pass"]) for r in stability] == [("early", True), ("late", False)]


def test_a_fix_that_removes_a_collapse_without_deaths_is_confirmed_and_named():
    """L1 33x too strong (issue 21): L0 0.53 per row and FVU 1.03, but no latent that never fires;
    the arm with alpha down reconstructs (FVU 0.4, L0 6). The cause is confirmed for the collapse
    it removes, not refuted for the deaths it could not remove."""
    collapsed = fake(0.0, l0_frac=0.0053, fvu=1.03, fvu_orig=1.03)
    healthy = fake(0.0, l0_frac=0.06, fvu=0.4, fvu_orig=0.4)
    res = removes_deaths(by_seed(base=collapsed, fix=healthy), "base", "fix")
    assert res["word"] == "confirmed", res["effect"]
    assert res["numbers"]["removed"] == "collapse" and "removes the collapse" in res["effect"]
    assert res["numbers"]["base_collapsed"] == 1.0 and res["numbers"]["fix_collapsed"] == 0.0
    # nothing to remove from a healthy reference; a "fix" that trades the collapse for deaths removes nothing
    assert removes_deaths(by_seed(base=healthy, fix=healthy), "base", "fix")["word"] == "refuted"
    dying = fake(0.3, l0_frac=0.06, fvu=0.4, fvu_orig=0.4)
    assert removes_deaths(by_seed(base=collapsed, fix=dying), "base", "fix")["word"] != "confirmed"
    # deaths removed are named as deaths
    assert removes_deaths(by_seed(base=fake(0.4), fix=fake(0.02)), "base", "fix")["numbers"]["removed"] == "deaths"


def test_verdicts_do_not_change_when_the_measuring_budget_is_multiplied_by_4(tmp_path, monkeypatch):
    """The dead count's budget (held-out rows, and the training window sized to its floor) x4 at
    smoke size: TopK k=1 of 64 latents (many die) against k x4, two replicates. The counts move a
    little; the verdicts do not."""
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"sae": {"architecture": "topk", "k": 1, "d_sae": 64}, "penalty": {"form": "none", "alpha": 0.0},
                                "data": {"mean_offset": 0.0, "batch_size": 64}, "optim": {"lr": 3e-3},
                                "schedule": {"shape": "constant", "warmup_steps": 0}}))
    words = {}
    for scale in (1, 4):
        monkeypatch.setattr(stack, "FLOOR_OF_MEAN", 0.1 / scale)
        runs = {}
        for seed in (0, 1):
            built = phases.build("01_l1_penalty", "smoke", seed, str(base), steps=200, overrides={"eval_rows": 256 * scale},
                                 sae_k_multipliers=[4], penalty_form=[], penalty_alpha_task22=False, sae_decoder_constraint="none")
            runs[seed] = train(built.plan.arms, tmp_path / f"{scale}-{seed}", progress=False)
        h = next(h for h in get_phase("01_l1_penalty").hypotheses if h.id == "H16")
        v = h.judge(runs, built.ctx, built.plan.tested["H16"])
        words[scale] = [x["verdict"] for x in (v if isinstance(v, list) else [v])]
        floor = runs[0]["base"].metrics["dead_floor_rate"].iloc[-1]
        assert floor < (0.1 / scale) * 1 / 64 * 1.01, floor  # the count's floor at its target: a tenth (a 40th) of k/d_sae
    assert words[1] == words[4] and "confirmed" in words[1], words


def test_a_fixs_fvu_is_weighed_in_the_bases_original_space():
    """A normalization fix's FVU in its own normalized space (0.1) is not the base's space: the
    numbers the answer weighs are the original-space FVUs (0.5 -> 0.6)."""
    res = removes_deaths(by_seed(base=fake(0.4, fvu=0.5, fvu_orig=0.5), fix=fake(0.02, fvu=0.1, fvu_orig=0.6)), "base", "fix")
    assert res["numbers"]["base_final_fvu"] == pytest.approx(0.5) and res["numbers"]["fix_final_fvu"] == pytest.approx(0.6)
