"""The answer first: causes ranked by the deaths their fix removes, confirmed fixes combined into a
fixed configuration at the user's own scale, answer.json and fixed_config.json written."""

from __future__ import annotations

import json

from saelab.config import RunConfig
from saelab.lab import answer, phases
from saelab.lab.base import load_base, sized


def cause(hid: str, word: str, fall: float, changes: dict, arm: str = "fix") -> dict:
    return {"hypothesis": f"{hid} · claim {hid}", "id": hid, "phase": "0x", "verdict": word, "kind": "cause",
            "numbers": {"base_peak_dead": 0.5, f"{arm}_peak_dead": 0.5 - fall, "base_final_dead": 0.4,
                        f"{arm}_final_dead": 0.4 - fall / 2, "peak_reduction": fall, "final_reduction": fall / 2},
            "fix": {"arm": arm, "changes": changes}}


def test_ranking_puts_confirmed_causes_first_by_the_deaths_their_fix_removes():
    found = [cause("H3", "confirmed", 0.1, {"resample.strategy": "off"}),
             cause("H8", "confirmed", 0.3, {"sae.b_dec_init": "mean", "sae.apply_b_dec_to_input": True}),
             cause("H2", "inconclusive", 0.4, {"schedule.shape": "constant"}),
             cause("H6", "refuted", 0.0, {"resample.reset_adam": True}),
             {"id": "R1-relu", "kind": "remedy", "verdict": "confirmed", "numbers": {}, "hypothesis": "R1 · x", "phase": "05"}]
    ranked = answer.ranking(found)
    assert [r["id"] for r in ranked] == ["H8", "H3", "H2", "H6"]
    assert ranked[0]["fix"] == ['sae.b_dec_init="mean"', "sae.apply_b_dec_to_input=True"]
    assert set(ranked[0]["peak_dead"]) == {"base", "with_fix", "fall"}  # no spread in these numbers: none shown
    assert ranked[0]["peak_dead"]["fall"] == 0.3 and ranked[0]["final_dead"]["with_fix"] == 0.4 - 0.15
    assert answer.fixed_changes(ranked) == {"sae.b_dec_init": "mean", "sae.apply_b_dec_to_input": True, "resample.strategy": "off"}
    h8 = cause("H8", "confirmed", 0.48, {"sae.b_dec_init": "mean"})
    h8["numbers"]["fix_final_dead"] = 0.02
    enough = answer.ranking([h8, cause("H3", "confirmed", 0.3, {"resample.strategy": "off"})])
    assert answer.fixed_changes(enough) == {"sae.b_dec_init": "mean"}  # 40% -> 2% dead at the end: the smallest change is enough
    assert enough[1]["combined"] is False and "not needed" in enough[1]["why"]
    h8["numbers"]["fix_final_dead"] = 0.16  # 2% at the peak but 16% left at the end: not enough, the next fix is added
    assert answer.fixed_changes(answer.ranking([h8, cause("H3", "confirmed", 0.3, {"resample.strategy": "off"})])) == {
        "sae.b_dec_init": "mean", "resample.strategy": "off"}
    clash = answer.ranking(
        [cause("H1s", "confirmed", 0.3, {"penalty.alpha": 0.01}), cause("H1x", "confirmed", 0.2, {"penalty.alpha": 0.1})]
    )
    assert answer.fixed_changes(clash) == {"penalty.alpha": 0.01} and clash[1]["combined"] is False


def test_the_fixed_configuration_is_saved_at_the_bases_scale_and_trains(tmp_path):
    base = load_base("seed-test1")
    cfg, _ = sized(base, phases.PROFILES["quick"])
    changes = answer.at_base_scale({"schedule.warmup_steps": 10, "resample.strategy": "off"}, base, cfg)
    assert changes == {"schedule.warmup_steps": 100, "resample.strategy": "off"}  # 10 of 1,000 steps is 100 of 10,000
    ranked = answer.ranking([cause("H3", "confirmed", 0.2, {"resample.strategy": "off"})])
    fixed = base.config.with_overrides(changes)
    path = answer.write(tmp_path, ranked, fixed, base, changes)
    written = json.loads(path.read_text())
    assert written["ranking"][0]["id"] == "H3" and written["fixed_changes"] == ['schedule.warmup_steps=100', 'resample.strategy="off"']
    again = RunConfig.from_json((tmp_path / "fixed_config.json").read_text())
    assert again == fixed and again.resample.strategy == "off"


def test_phase_06_trains_the_fixed_configuration_from_the_other_phases_verdicts():
    prior = (cause("H8", "confirmed", 0.3, {"sae.b_dec_init": "geometric_median", "sae.apply_b_dec_to_input": True}),)
    built = phases.build("06_validation", "smoke", 0, prior=prior, data_source_real="")
    fixed = built.plan.arms["fixed"]
    assert fixed.sae.apply_b_dec_to_input and fixed.sae.b_dec_init == "geometric_median"
    assert "fixed" not in phases.build("06_validation", "smoke", 0, data_source_real="").plan.arms  # nothing confirmed yet


def test_the_ranking_carries_the_spread_over_replicates_when_the_verdict_has_it():
    c = cause("H3", "confirmed", 0.2, {"resample.strategy": "off"})
    c["numbers"] |= {"base_peak_dead_sd": 0.02, "fix_peak_dead_sd": 0.01, "base_final_dead_sd": 0.03, "fix_final_dead_sd": 0.0}
    r = answer.ranking([c])[0]
    assert r["peak_dead"] == {"base": 0.5, "with_fix": 0.3, "fall": 0.2, "base_sd": 0.02, "with_fix_sd": 0.01}
    assert r["final_dead"]["base_sd"] == 0.03 and r["final_dead"]["with_fix_sd"] == 0.0
    assert "base_sd" not in answer.ranking([cause("H3", "confirmed", 0.2, {})])[0]["peak_dead"]  # one replicate: none


def test_a_fix_that_keeps_latents_alive_by_learning_less_ranks_after_one_that_does_not():
    slow = cause("H9", "confirmed", 0.45, {"optim.lr": 3e-5})
    slow["numbers"] |= {"base_final_fvu": 1.0, "fix_final_fvu": 1.25}  # alive, but barely trained
    right = cause("H1s", "confirmed", 0.40, {"penalty.alpha": 0.01})
    right["numbers"] |= {"base_final_fvu": 1.0, "fix_final_fvu": 0.3}
    ranked = answer.ranking([slow, right])
    assert [r["id"] for r in ranked] == ["H1s", "H9"] and ranked[1]["costs_reconstruction"] is True
    assert answer.fixed_changes(ranked) == {"penalty.alpha": 0.01}
    assert ranked[1]["combined"] is False and "costs reconstruction" in ranked[1]["why"]
    dropped = cause("H23", "confirmed", 0.40, {"data.drop_norm_above": 10})
    dropped["numbers"] |= {"base_final_fvu": 1e-4, "fix_final_fvu": 0.09}  # other held-out rows: not a cost
    assert answer.ranking([dropped])[0]["costs_reconstruction"] is False


def test_causes_whose_fixes_remove_as_many_deaths_within_the_spread_are_tied():
    a, b, c = (cause(h, "confirmed", f, {f"x.{h}": 1}) for h, f in (("H8", 0.265), ("H16", 0.245), ("H3", 0.10)))
    for v in (a, b, c):
        v["numbers"] |= {"peak_reduction_se": 0.02}
    ranked = answer.ranking([c, b, a])
    assert [r["id"] for r in ranked] == ["H8", "H16", "H3"]
    assert [r["tied_with_above"] for r in ranked] == [False, True, False]  # 2 points apart vs 2 x 2.8 SE; 14.5 points apart


def test_a_fix_that_keeps_latents_alive_by_making_the_sae_dense_ranks_after_one_that_keeps_it_sparse():
    """Issue 21's LR-too-high case: alpha x0.01 and LR x0.3 both take dead from 6.4% to 0% (one
    replicate each); alpha does it by making the SAE dense (L0 7.4 -> 110 of 512 latents), LR keeps
    it sparse (L0 16) and reconstructs better. LR comes first, alpha is left out of the fixed
    configuration with the reason in numbers; the falls are equal, so the two are tied only if
    both cost nothing."""
    def arm(hid: str, changes: dict, l0: float, fvu: float) -> dict:
        c = cause(hid, "confirmed", 0.064, changes)
        c["numbers"] |= {"base_final_l0": 7.4, "fix_final_l0": l0, "base_final_l0_frac": 7.4 / 512, "fix_final_l0_frac": l0 / 512,
                         "base_final_fvu": 0.44, "fix_final_fvu": fvu, "replicates": 1}
        return c
    dense = arm("H1s", {"penalty.alpha": 1e-4}, 110.0, 0.20)
    sparse = arm("H9", {"optim.lr": 3e-4}, 16.0, 0.26)
    ranked = answer.ranking([dense, sparse])
    assert [r["id"] for r in ranked] == ["H9", "H1s"]
    assert ranked[1]["costs_sparsity"] is True and ranked[0]["costs_sparsity"] is False
    assert "dense" in ranked[1]["cost"] and "7.4 -> 110" in ranked[1]["cost"] and ranked[1]["tied_with_above"] is False
    assert answer.fixed_changes(ranked) == {"optim.lr": 3e-4}
    assert ranked[1]["combined"] is False and ranked[1]["why"] == ranked[1]["cost"]
    # TopK's k x4 (2 -> 8 of 2,048 latents) quadruples L0 but stays sparse: no cost
    k4 = arm("H16", {"sae.k": 8}, 8.0, 0.4)
    k4["numbers"] |= {"base_final_l0": 2.0, "base_final_l0_frac": 2 / 2048, "fix_final_l0_frac": 8 / 2048}
    assert answer.ranking([k4])[0]["costs_sparsity"] is False
    # from a collapsed base (LR 30x too high: L0 0.98 of 64) L0 27.5 is the recovery, not a cost
    rec = arm("H9", {"optim.lr": 0.01}, 27.5, 0.4)
    rec["numbers"] |= {"base_final_l0": 0.98, "base_final_l0_frac": 0.98 / 64, "fix_final_l0_frac": 27.5 / 64}
    assert answer.ranking([rec])[0]["costs_sparsity"] is False


def test_a_dense_fix_is_a_cost_only_where_a_sparser_fix_removes_as_many_deaths():
    """planted_lab's JumpReLU threshold started 1,000x too high (64 latents, 3 replicates): the base
    left 67.2% dead at L0 1.21; the lower threshold (H12) took it to 3.1% at L0 26.4, the healthy
    density of that toy SAE, while a normalization mode (H4) and a lower LR (H9) kept it sparse but
    left 38.5% and 52.1% dead. No other fix removes as many deaths, so H12's density is the price of
    the fix, not a cost: it comes first. With a sparse fix that removes as many (within the margin),
    the dense one ranks after it and the page names the sparser fix."""
    def arm(hid: str, changes: dict, with_fix: float, l0: float) -> dict:
        c = cause(hid, "confirmed", 0.672, changes)
        c["numbers"] |= {"base_peak_dead": 0.672, "peak_reduction": 0.672 - with_fix, "fix_peak_dead": with_fix, "base_final_l0": 1.21,
                         "fix_final_l0": l0, "base_final_l0_frac": 1.21 / 64, "fix_final_l0_frac": l0 / 64}
        return c
    h12 = arm("H12", {"sae.jumprelu_threshold": 0.01}, 0.031, 26.4)
    h4 = arm("H4", {"normalize.mode": "none"}, 0.385, 3.0)
    h9 = arm("H9", {"optim.lr": 3e-4}, 0.521, 2.0)
    ranked = answer.ranking([h4, h9, h12])
    assert [r["id"] for r in ranked] == ["H12", "H4", "H9"], [(r["id"], r["cost"]) for r in ranked]
    assert ranked[0]["costs_sparsity"] is False and not ranked[0]["cost"]
    alt = arm("H20", {"optim.weight_decay": 0.0}, 0.05, 6.0)  # removes as many (within 5 points) at a quarter of the L0
    ranked = answer.ranking([h4, h12, alt])
    assert [r["id"] for r in ranked][:2] == ["H20", "H4"] and ranked[-1]["id"] == "H12"
    assert ranked[-1]["costs_sparsity"] and "where H20's fix removes as many deaths at L0 6" in ranked[-1]["cost"]
    # a fix that moves the sparsity itself (k x4: 4 -> 16 of 64 latents per row) is dense on its own,
    # even where no sparser fix removes as many deaths (planted_lab's short dead window: H16 40.1% ->
    # 2.1%, the planted H29 39.6% -> 28.1%)
    k4 = arm("H16", {"sae.k": 16}, 0.021, 16.0)
    k4["numbers"] |= {"base_final_l0": 4.0, "base_final_l0_frac": 4 / 64}
    ranked = answer.ranking([k4, h4])
    assert [r["id"] for r in ranked] == ["H4", "H16"] and ranked[1]["costs_sparsity"] and "L0 4 -> 16" in ranked[1]["cost"]


def test_a_sparser_alternative_must_itself_keep_the_sae_sparse_and_learning():
    """planted_lab's unshuffled stream (64 latents): the base left 42.2% dead at L0 1.45; shuffling
    (H22) took it to 21.9% at L0 28.6, the control's density. Alpha lowered 10x (H1s) removed about
    as many at L0 7.4, but by moving the sparsity itself (dense on its own), and a lower LR that
    barely trains shows nothing either: neither makes the shuffled stream's density a cost. A sparse
    fix that neither moves the sparsity nor learns less still does."""
    def arm(hid: str, changes: dict, with_fix: float, l0: float, fvu: float = 0.3) -> dict:
        c = cause(hid, "confirmed", 0.422, changes)
        c["numbers"] |= {"base_peak_dead": 0.422, "peak_reduction": 0.422 - with_fix, "fix_peak_dead": with_fix,
                         "base_final_l0": 1.45, "fix_final_l0": l0, "base_final_l0_frac": 1.45 / 64,
                         "fix_final_l0_frac": l0 / 64, "base_final_fvu": 0.3, "fix_final_fvu": fvu}
        return c
    h22 = arm("H22", {"data.order": "shuffled"}, 0.219, 28.6)
    h1s = arm("H1s", {"penalty.alpha": 0.001}, 0.25, 7.4)
    slow = arm("H9", {"optim.lr": 1e-4}, 0.22, 3.0, fvu=0.9)
    ranked = {r["id"]: r for r in answer.ranking([h22, h1s, slow])}
    assert ranked["H22"]["costs_sparsity"] is False and ranked["H22"]["cost"] == "", ranked["H22"]["cost"]
    assert ranked["H1s"]["costs_sparsity"] and ranked["H9"]["costs_reconstruction"]
    sparse = arm("H14", {"optim.beta1": 0.0}, 0.23, 6.0)
    ranked = answer.ranking([h22, sparse])
    assert [r["id"] for r in ranked] == ["H14", "H22"] and "where H14's fix removes as many deaths" in ranked[1]["cost"]


def test_among_costly_fixes_one_whose_code_no_longer_compresses_comes_last():
    """planted_lab's anisotropic activations (TopK k 4 of 64 latents, d_in 16, 3 replicates): k x4
    (H16) removed every death at L0 16, as many latents per row as the input has dimensions;
    a lower LR (H9) and whitening (H26) removed fewer at a reconstruction cost. All three cost
    something; the one whose code could copy the input through d_in latents ranks last, and says so.
    A fix that costs nothing keeps its place whatever its L0."""
    def arm(hid: str, changes: dict, with_fix: float, l0: float, fvu: float) -> dict:
        c = cause(hid, "confirmed", 0.339, changes)
        c["numbers"] |= {"base_peak_dead": 0.339, "peak_reduction": 0.339 - with_fix, "fix_peak_dead": with_fix,
                         "base_final_l0": 4.0, "fix_final_l0": l0, "base_final_l0_frac": 4 / 64, "fix_final_l0_frac": l0 / 64,
                         "base_final_fvu": 0.0145, "fix_final_fvu": fvu, "d_in": 16}
        return c
    k4 = arm("H16", {"sae.k": 16}, 0.0, 16.0, 0.005)
    lr = arm("H9", {"optim.lr": 3e-4}, 0.135, 4.0, 0.198)
    white = arm("H26", {"normalize.mode": "whitening"}, 0.151, 4.0, 0.145)
    ranked = answer.ranking([k4, lr, white])
    assert [r["id"] for r in ranked] == ["H9", "H26", "H16"], [(r["id"], r["cost"]) for r in ranked]
    assert "as many as the input's 16 dimensions: the code no longer compresses" in ranked[2]["cost"]
    # without d_in (runs logged before it was recorded) the fall alone orders them, as before
    for c in (k4, lr, white):
        del c["numbers"]["d_in"]
    assert [r["id"] for r in answer.ranking([k4, lr, white])][0] == "H16"


def test_identical_falls_are_tied_whatever_the_number_of_replicates_and_cheaper_first():
    a = cause("H9", "confirmed", 0.064, {"optim.lr": 3e-4})
    b = cause("H20", "confirmed", 0.064, {"optim.weight_decay": 0.0})
    for c, l0 in ((a, 16.0), (b, 9.0)):  # one replicate: no standard error
        c["numbers"] |= {"base_final_l0": 7.4, "fix_final_l0": l0, "base_final_l0_frac": 0.01, "fix_final_l0_frac": 0.02}
    ranked = answer.ranking([a, b])
    assert [r["id"] for r in ranked] == ["H20", "H9"]  # the same deaths removed: the one that grows L0 less first
    assert ranked[1]["tied_with_above"] is True
    assert answer.ranking([a, cause("H3", "confirmed", 0.05, {})])[1]["tied_with_above"] is False


def test_a_collapse_removed_is_ranked_and_named():
    c = cause("H1s", "confirmed", 0.0, {"penalty.alpha": 0.0033})
    c["numbers"] |= {"removed": "collapse", "base_final_fvu": 1.03, "fix_final_fvu": 0.4}
    (r,) = answer.ranking([c])
    assert r["removed"] == "collapse" and r["cost"] == ""
    assert answer.fixed_changes([r]) == {"penalty.alpha": 0.0033}


def _found_with_fixed_run(**run):
    m = {"arm": "fixed", "replicates": 2, "dead": 0.01, "peak_dead": 0.03, "l0": 8.0, "l0_frac": 0.03, "dense": 0.0,
         "fvu": 0.2, "meets_margin": True, "cost": ""} | run
    return {"fixed_config": {"steps": 1}, "fixed_run": m, "ranking": []}


def test_the_proof_weighs_the_fixed_runs_own_sparsity_and_reconstruction_against_the_base_run():
    # a fixed run that is alive and sparse: within the margin, nothing to weigh
    ok = answer.proof(_found_with_fixed_run())
    assert "within the 5% margin." in ok and "weigh" not in ok
    # as dense as a dense base (the seed's case: L0 250 of 256 where the base had 146): no cost, but not sparse either
    text = answer.proof(_found_with_fixed_run(l0=250.0, l0_frac=250 / 256, base_l0=146.0))
    assert "the SAE is not sparse: 97.7% of the latents" in text and "base's own run: L0 146" in text
    # alive only by being dense (L0 250 of 256 where the base had 8): the margin is met on deaths, the cost is named
    dense = {"costs_sparsity": True, "l0": {"base": 8.0, "with_fix": 250.0, "with_fix_frac": 250 / 256}}
    text = answer.proof(_found_with_fixed_run(l0=250.0, l0_frac=250 / 256, cost=answer.cost_sentence(dense)))
    assert "margin on deaths" in text and "L0 8 -> 250 per row (98% of the latents)" in text and "weigh that" in text
    # the rule the fixed run is held to is the ranking's own
    # alive because it learned nothing (a smoke-size run: FVU 1.0): said, not passed
    text = answer.proof(_found_with_fixed_run(fvu=1.002))
    assert "learned nothing (FVU 1 >= 0.99)" in text and "within the 5% margin." not in text
    assert answer.costs_sparsity({"base": 8.0, "with_fix": 250.0, "with_fix_frac": 250 / 256})
    assert not answer.costs_sparsity({"base": 8.0, "with_fix": 12.0, "with_fix_frac": 12 / 256})


def test_from_a_base_that_learned_nothing_density_is_recovery_and_a_still_collapsed_fix_comes_after():
    """planted_lab's unshuffled stream as measured: the base fitted its last document (FVU 1.24 on
    shuffled held-out rows, L0 1.45 of 64, every replicate collapsed); the shuffle (H22) left 21.9%
    dead at FVU 0.043, L0 28.6; Adam's beta1 = 0 (H14) left 26.0% dead at L0 2.9 but FVU 1.20, still
    collapsed. H22's L0 is the recovery of an SAE that learned nothing, not a density cost, and H14,
    whose SAE still reconstructs nothing, neither shows one nor ranks above it. The same fall from a
    base that learned (FVU 0.3) keeps the density rule."""
    def arm(hid: str, changes: dict, with_fix: float, l0: float, fvu: float, collapsed: float, base_fvu: float = 1.24) -> dict:
        c = cause(hid, "confirmed", 0.422, changes)
        c["numbers"] |= {"base_peak_dead": 0.422, "peak_reduction": 0.422 - with_fix, "fix_peak_dead": with_fix,
                         "base_final_l0": 1.45, "fix_final_l0": l0, "base_final_l0_frac": 1.45 / 64, "fix_final_l0_frac": l0 / 64,
                         "base_final_fvu": base_fvu, "fix_final_fvu": fvu,
                         "base_collapsed": float(base_fvu >= 0.99), "fix_collapsed": collapsed}
        return c
    h22 = arm("H22", {"data.order": "shuffled"}, 0.219, 28.6, 0.043, 0.0)
    h14 = arm("H14", {"optim.beta1": 0.0}, 0.26, 2.9, 1.20, 1.0)
    ranked = answer.ranking([h14, h22])
    assert [r["id"] for r in ranked] == ["H22", "H14"], [(r["id"], r["cost"]) for r in ranked]
    assert ranked[0]["cost"] == "" and ranked[1]["still_collapsed"]
    assert ranked[1]["cost"].startswith("leaves the SAE collapsed: it still reconstructs nothing (final FVU 1.2, L0 2.9")
    learned = [arm("H22", {"data.order": "shuffled"}, 0.219, 28.6, 0.043, 0.0, base_fvu=0.3),
               arm("H14", {"optim.beta1": 0.0}, 0.23, 2.9, 0.3, 0.0, base_fvu=0.3)]
    ranked = answer.ranking(learned)
    assert [r["id"] for r in ranked] == ["H14", "H22"] and ranked[1]["costs_sparsity"]


def test_the_fixed_runs_cost_follows_the_collapse_rule_of_the_ranking():
    """Phase 06 weighs the fixed run against the base's own run by the ranking's rules: from a base
    that learned nothing (the unshuffled stream: FVU 1.24 at L0 1.45 of 64 in every replicate) the
    fixed run's L0 28.6 is the recovery, not a density cost; from a base that learned (FVU 0.3) the
    same rise is one."""
    fixed = {"l0": 28.6, "l0_frac": 28.6 / 64, "fvu": 0.043, "collapsed": 0.0}
    collapsed_base = {"l0": 1.45, "fvu": 1.24, "collapsed": 1.0}
    assert answer.fixed_run_cost(collapsed_base, fixed) == ""
    learned_base = {"l0": 1.45, "fvu": 0.3, "collapsed": 0.0}
    assert "keeps latents alive by making the SAE dense: L0 1.45 -> 28.6" in answer.fixed_run_cost(learned_base, fixed)
    # worse reconstruction is a cost whatever the base's collapse
    assert "costs reconstruction" in answer.fixed_run_cost({"l0": 8.0, "fvu": 0.05, "collapsed": 0.0},
                                                            {"l0": 8.0, "l0_frac": 0.125, "fvu": 0.5, "collapsed": 0.0})
