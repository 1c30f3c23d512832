"""Phases: profiles, the parameter contract, one factor per arm, validation of notebook parameters
(the live explorer: tests/test_explorer.py)."""

from __future__ import annotations

import html
import json
import re

import pytest

from saelab.config import PRESETS, field_paths
from saelab.lab import phases
from saelab.lab.base import load_base, sized
from saelab.lab.causes import PHASES
from saelab.lab.hypothesis import diff
from saelab.training.losses import convert_alpha
from saelab.training.train import SHARED_FIELDS

BASES = [*PRESETS, "topk", "jumprelu", "jumprelu_l0", "no_penalty", "causes_on", "topk_causes_on"]
# every cause option of issue 11 set at once (weight decay, negative b_enc, ordered stream, sink rows)
CAUSES_ON = {"optim": {"weight_decay": 0.1}, "sae": {"b_enc_init": -0.2},
             "data": {"order": "ordered", "document_features": 0.5, "outlier_fraction": 0.02}}


def base_for(name: str, tmp_path) -> str:
    """A preset name, or a partial saelab config written for a TopK, a JumpReLU and a no-penalty base."""
    if name in PRESETS:
        return name
    partial = {
        "topk": {"sae": {"architecture": "topk", "k": 8}, "penalty": {"form": "none", "alpha": 0.0}},
        "jumprelu": {"sae": {"architecture": "jumprelu", "jumprelu_threshold": 0.01}, "penalty": {"form": "per_sample_sum", "alpha": 1e-3}},
        "jumprelu_l0": {"sae": {"architecture": "jumprelu", "jumprelu_threshold": 0.01}, "penalty": {"form": "l0", "alpha": 1e-2}},
        "no_penalty": {"penalty": {"form": "none", "alpha": 0.0}},
        "causes_on": CAUSES_ON,
        "topk_causes_on": {
            **CAUSES_ON,
            "sae": {"architecture": "topk", "k": 8, "b_enc_init": -0.2},
            "penalty": {"form": "none", "alpha": 0.0},
        },
    }[name]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(partial))
    return str(path)


def namespace(stem: str, **given) -> dict:
    """A notebook's globals after its parameters cell: every parameter at its default."""
    ns = {"profile": "smoke", "seeds": None, "out_dir": "/tmp/x", "base": None, "source": None, "steps": None,
          "data_mean_offset": None, "overrides": {}, "explorer": False, **PHASES[stem].defaults()}
    return ns | given


def test_profiles_scale_and_replicates():
    assert set(phases.PROFILES) == {"smoke", "explore", "quick", "full"}
    assert phases.PROFILES["explore"].seeds == (0,) and phases.PROFILES["explore"].d_sae == phases.PROFILES["quick"].d_sae
    assert len(phases.PROFILES["quick"].seeds) >= 3 and len(phases.PROFILES["full"].seeds) >= 3
    assert phases.PROFILES["full"].d_sae == 2048 and phases.PROFILES["full"].steps >= 10_000
    smoke, quick = phases.PROFILES["smoke"], phases.PROFILES["quick"]
    assert smoke.steps < quick.steps and smoke.d_sae <= quick.d_sae


def test_the_default_base_keeps_the_seed_test1_proportions():
    cfg, profile_set = sized(load_base(None), phases.PROFILES["quick"], seed=3)
    # Test 1: warmup 500 and resampling every 2,500 of 10,000 steps; the seed's L1 and resampling
    assert cfg.schedule.warmup_steps / cfg.steps == pytest.approx(0.05)
    assert cfg.resample.interval / cfg.steps == pytest.approx(0.25)
    assert (cfg.penalty.form, cfg.penalty.alpha, cfg.resample.strategy, cfg.resample.detector) == (
        "mean_all",
        0.003,
        "seed",
        "single_batch",
    )
    assert cfg.normalize.mode == "constant_norm_rescale" and cfg.seed == 3
    assert profile_set["steps"] == 1000 and profile_set["sae.d_sae"] == 256


def test_a_partial_config_pins_its_fields_and_the_profile_sets_the_rest(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"steps": 300, "sae": {"d_sae": 96}, "optim": {"lr": 1e-3}}))
    base = load_base(str(path))
    assert base.origin == "saelab config" and {"steps", "sae.d_sae", "optim.lr"} <= base.pinned
    cfg, profile_set = sized(base, phases.PROFILES["smoke"])
    assert (cfg.steps, cfg.sae.d_sae, cfg.optim.lr) == (300, 96, 1e-3)
    assert "steps" not in profile_set and "sae.d_sae" not in profile_set and profile_set["eval_rows"] == 256
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(load_base("seed-fixed").config.to_json())
    assert load_base(str(run_dir)).origin == "run directory"


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"sae": {"d_sea": 3}}', "did you mean 'd_sae'"),
    ('{"d_in": 768, "d_sae": 4096, "architecture": "gated", "lr": 1e-4}', "architecture='gated'"),
    ('{"d_in": 768, "d_sae": 4096, "architecture": "standard", "use_ghost_grads": true}', "ghost grads"),
    ('{"d_in": 768, "d_sae": 4096, "architecture": "standard", "mystery_knob": 3}', "'mystery_knob'"),
])
def test_an_unreadable_base_is_refused_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "base.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_base(str(path))
    with pytest.raises(ValueError, match="neither a preset"):
        load_base(str(tmp_path / "absent.json"))


def test_a_saelens_config_maps_the_fields_with_a_saelab_meaning(tmp_path):
    cfg = {"d_in": 384, "d_sae": 1536, "architecture": "standard", "l1_coefficient": 5.0, "lr": 4e-5,
           "lr_warm_up_steps": 100, "normalize_activations": "expected_average_only_in", "apply_b_dec_to_input": True,
           "b_dec_init_method": "geometric_median", "dead_feature_window": 1000, "train_batch_size_tokens": 4096,
           "training_tokens": 4096 * 2000, "hook_name": "blocks.3.hook_resid_pre", "model_name": "gpt2", "dtype": "float32",
           "wandb_project": "x", "context_size": 128}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    base = load_base(str(path))
    c = base.config
    assert base.origin == "SAELens config"
    assert (c.sae.d_in, c.sae.d_sae, c.sae.architecture, c.penalty.alpha, c.penalty.form) == (384, 1536, "relu", 5.0, "decoder_weighted")
    assert (c.optim.lr, c.schedule.warmup_steps, c.normalize.mode, c.sae.apply_b_dec_to_input) == (4e-5, 100, "dataset_scalar", True)
    assert (c.tracking.dead_tokens, c.data.batch_size, c.steps, c.penalty.reconstruction) == (4096 * 1000, 4096, 2000, "sum_features")
    topk = {"d_in": 384, "d_sae": 1536, "architecture": "topk", "activation_fn_kwargs": {"k": 24}}
    path.write_text(json.dumps(topk))
    t = load_base(str(path)).config
    assert (t.sae.architecture, t.sae.k, t.penalty.form) == ("topk", 24, "none")


@pytest.mark.parametrize("stem", list(PHASES))
def test_parameter_contract(stem):
    assert phases.check_mirrors(PHASES[stem]) == []
    paths = field_paths()
    for name, path in phases.mirrors(PHASES[stem]).items():
        assert path is None or path in paths, name


@pytest.mark.parametrize("base", BASES)
def test_no_two_equal_arms_are_compared_and_no_inapplicable_hypothesis_is_judged(base, tmp_path):
    """Every phase on every preset base and on a TopK, a JumpReLU and a no-penalty base: the arms of
    each hypothesis differ from the arm they are compared with, only in the hypothesis's factor;
    no two arms share a config; a hypothesis that cannot act trains nothing."""
    spec = base_for(base, tmp_path)
    for stem, phase in PHASES.items():
        for profile in ("smoke", "quick"):
            built = phases.build(stem, profile, 0, spec)
            arms = built.plan.arms
            configs = [c.to_json() for c in arms.values()]
            assert len(set(configs)) == len(configs), f"{base}/{stem}: two arms share a config"
            for h in phase.hypotheses:
                if h.id in built.plan.not_applicable:
                    assert h.id not in built.plan.tested and built.plan.not_applicable[h.id]
                    continue
                for arm in built.plan.tested[h.id]:
                    if arm.against is None:
                        continue
                    changed = diff(arms[arm.against], arms[arm.name])
                    assert changed, f"{base}/{stem}/{h.id}: {arm.name} equals {arm.against}"
                    assert set(changed) <= set(h.factor), f"{base}/{stem}/{h.id}: {arm.name} changes {set(changed) - set(h.factor)}"
            for group in phases.lockstep_groups(arms):
                first = next(iter(group.values()))
                assert all(getattr(c, f) == getattr(first, f) for c in group.values() for f in SHARED_FIELDS)


def test_a_topk_base_makes_the_l1_hypotheses_not_applicable(tmp_path):
    built = phases.build("01_l1_penalty", "smoke", 0, base_for("topk", tmp_path))
    assert set(built.plan.not_applicable) >= {"H1", "H1s", "H1a", "H1b", "H7"}
    assert "H16" in built.plan.tested and all(n == "base" or n.startswith(("k_", "auxk")) for n in built.plan.arms)
    assert "sparsity comes from k" in built.plan.not_applicable["H1"]
    resampling = phases.build("03_resampling", "smoke", 0, base_for("topk", tmp_path))
    assert "does not resample" in resampling.plan.not_applicable["H3"]


def test_arms_vary_around_the_bases_own_value(tmp_path):
    path = tmp_path / "strong.json"
    path.write_text(json.dumps({"penalty": {"form": "per_sample_sum", "alpha": 0.5}, "schedule": {"warmup_steps": 200}, "steps": 1000}))
    l1 = phases.build("01_l1_penalty", "smoke", 0, str(path)).plan.arms
    assert l1["alpha_x0.1"].penalty.alpha == pytest.approx(0.05) and l1["alpha_x10"].penalty.alpha == pytest.approx(5.0)
    assert "per_sample_sum" not in l1 and l1["mean_all"].penalty.alpha == pytest.approx(
        convert_alpha(0.5, "per_sample_sum", "mean_all", l1["base"].data.batch_size, l1["base"].sae.d_sae))
    warm = phases.build("02_lr_warmup", "smoke", 0, str(path)).plan.arms
    assert warm["warmup_x0.2"].schedule.warmup_steps == 40 and warm["warmup_x5"].schedule.warmup_steps == 999


def test_overrides_may_not_set_the_factor_a_phase_varies():
    with pytest.raises(ValueError, match="overrides set 'penalty.alpha', a field this phase varies"):
        phases.build("01_l1_penalty", "smoke", 0, overrides={"penalty.alpha": 0.01})
    built = phases.build("01_l1_penalty", "smoke", 0, overrides={"optim.lr": 1e-3})  # shared by every arm
    assert all(c.optim.lr == 1e-3 for c in built.plan.arms.values())


def test_normalization_phase_adds_the_centered_arm_unless_told_not_to():
    assert "centered" in phases.build("04_normalization", "smoke", 0).plan.arms
    none = phases.build("04_normalization", "smoke", 0, sae_b_dec_init=None)
    assert "centered" not in none.plan.arms and "H8" in none.plan.not_applicable
    centered = phases.build("04_normalization", "smoke", 0, "anthropic-april-2024",
                            overrides={"sae.b_dec_init": "mean", "sae.apply_b_dec_to_input": True})
    assert "already starts b_dec" in centered.plan.not_applicable["H8"]


def test_parameter_names_reads_assignment_only_cells():
    history = ["", 'profile: str = "quick"  # help\nseeds = None', "# Parameters\nbogus = 3\n", "import os\nx = 1", "def f(:"]
    assert phases.parameter_names(history) == ["profile", "seeds", "bogus"]


def test_prepare_builds_every_replicate():
    run = phases.prepare("02_lr_warmup", namespace("02_lr_warmup", seeds=[4, 5]), history=[])
    assert run.seeds == (4, 5) and set(run.arms) == {4, 5}
    assert run.arms[5]["base"].seed == 5 and "no_warmup" in html.unescape(run.describe())
    assert "Fields the profile set" in run.describe()
    hostile = "file:/x/`<img src=w onerror=alert(4)>`.npy"
    tricky = phases.prepare("02_lr_warmup", namespace("02_lr_warmup", source=hostile), history=[])
    assert "<img" not in tricky.describe() and "&lt;img" in tricky.describe()
    # as nbconvert renders the Markdown cell: the path shows exactly as typed, and is no markup
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    page = markdown2html_mistune(tricky.describe())
    assert "<img" not in page and hostile in html.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.mark.parametrize("given, message", [
    ({"profile": "huge"}, "profile='huge' is unknown"),
    ({"seeds": [0, -1]}, "seeds="),
    ({"seeds": [1, 1]}, "repeats"),
    ({"steps": 0}, "steps=0"),
    ({"explorer": "yes"}, "explorer="),
    ({"overrides": {"optim.lrr": 1.0}}, "did you mean 'optim.lr'"),
    ({"source": "nowhere"}, "data.source"),
    ({"schedule_shape": ["triangle"]}, "schedule_shape="),
    ({"schedule_warmup_steps_multipliers": [-1]}, "numbers > 0"),
    ({"base": "no-such-preset"}, "neither a preset"),
])
def test_prepare_rejects_invalid_values(given, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        phases.prepare("02_lr_warmup", namespace("02_lr_warmup", **given), history=[])


def test_prepare_rejects_an_unknown_parameter_with_a_suggestion():
    history = ["profile = 'smoke'", "# Parameters\nschedule_shap = ['constant']\n"]
    with pytest.raises(ValueError, match="unknown parameter 'schedule_shap'.*did you mean 'schedule_shape'"):
        phases.prepare("02_lr_warmup", namespace("02_lr_warmup", schedule_shap=["constant"]), history=history)
    with pytest.raises(ValueError, match="unknown phase"):
        phases.prepare("99_nothing", {}, history=[])


def test_the_cause_options_get_their_single_factor_arms_and_the_default_base_gets_none(tmp_path):
    on = {stem: phases.build(stem, "smoke", 0, base_for("causes_on", tmp_path)).plan for stem in ("02_lr_warmup", "04_normalization")}
    assert on["02_lr_warmup"].changes["no_weight_decay"] == {"optim.weight_decay": 0.0}
    normalization = on["04_normalization"]
    assert normalization.changes["b_enc_zero"] == {"sae.b_enc_init": 0.0}
    assert normalization.changes["shuffled"] == {"data.order": "shuffled"}
    assert normalization.changes["drop_sinks"] == {"data.drop_norm_above": 10.0}
    default = {stem: phases.build(stem, "smoke", 0, None).plan for stem in ("02_lr_warmup", "04_normalization")}
    assert "weight decay" in default["02_lr_warmup"].not_applicable["H20"]
    assert {"H21", "H22", "H23"} <= set(default["04_normalization"].not_applicable)
    assert not {"no_weight_decay", "b_enc_zero", "shuffled", "drop_sinks"} & {
        *default["02_lr_warmup"].arms,
        *default["04_normalization"].arms,
    }
    dropping = tmp_path / "dropping.json"
    dropping.write_text(json.dumps({"data": {"outlier_fraction": 0.02, "drop_norm_above": 5.0}}))
    assert "already drops" in phases.build("04_normalization", "smoke", 0, str(dropping)).plan.not_applicable["H23"]


def test_sink_rows_in_a_file_are_found_on_the_data(tmp_path):
    import numpy as np

    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    np.save(tmp_path / "clean.npy", x)
    x[::50] *= 200.0
    np.save(tmp_path / "sinks.npy", x)
    clean = phases.build("04_normalization", "smoke", 0, None, source=f"file:{tmp_path / 'clean.npy'}").plan
    sinks = phases.build("04_normalization", "smoke", 0, None, source=f"file:{tmp_path / 'sinks.npy'}").plan
    assert "no row of the first" in clean.not_applicable["H23"] and "drop_sinks" not in clean.arms
    assert sinks.changes["drop_sinks"] == {"data.drop_norm_above": 10.0}


def test_phase_04_plants_the_seeds_tiny_and_huge_rows_only_in_the_labs_first_case(tmp_path):
    """On the user's base, phase 04's base is their setup as the other phases judge it."""
    seed = phases.build("04_normalization", "smoke", 0).ctx.base
    assert seed.data.tiny_row_fraction == 0.01 and seed.data.huge_row_fraction == 0.01
    mine = tmp_path / "mine.json"
    mine.write_text('{"sae": {"d_sae": 64}}')
    theirs = phases.build("04_normalization", "smoke", 0, str(mine)).ctx.base
    assert theirs.data.tiny_row_fraction == 0.0 and theirs.data.huge_row_fraction == 0.0
    asked = phases.build("04_normalization", "smoke", 0, str(mine), data_huge_row_fraction=0.02).ctx.base
    assert asked.data.huge_row_fraction == 0.02
