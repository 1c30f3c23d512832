"""Phases: profiles, the parameter contract, one factor per arm, validation of notebook parameters,
and the live explorer's pure parts."""

from __future__ import annotations

import pytest

from saelab import explorer, phases
from saelab.config import field_paths
from saelab.losses import convert_alpha
from saelab.phase_arms import PHASES
from saelab.train import SHARED_FIELDS

# the config fields each phase's arms may change relative to the seed's arm (its factor)
FACTORS = {
    "00_reproduce": {"sae.d_sae", "data.batch_size", "steps", "schedule.warmup_steps", "resample.interval", "tracking.dead_tokens"},
    "01_l1_penalty": {"penalty.form", "penalty.alpha", "sae.decoder_constraint"},
    "02_lr_warmup": {"schedule.shape", "schedule.warmup_steps"},
    "03_resampling": {"resample.strategy", "resample.detector", "resample.reset_adam"},
    "04_normalization": {"normalize.mode", "sae.b_dec_init", "sae.apply_b_dec_to_input"},  # centering b_dec is one factor in two fields
    "05_reanimation": {"sae.architecture", "sae.k", "penalty.form", "penalty.alpha", "aux.reanimation_coef",
                       "aux.reanimation_schedule", "aux.reanimation_anneal_steps", "aux.auxk_coef", "aux.auxk_k"},
}


def namespace(stem: str, **given) -> dict:
    """A notebook's globals after its parameters cell: every parameter at its default."""
    ns = {"profile": "smoke", "seeds": None, "out_dir": "/tmp/x", "source": "synthetic", "steps": None,
          "data_mean_offset": None, "overrides": {}, "explorer": False, **PHASES[stem].defaults()}
    return ns | given


def test_profiles_scale_and_replicates():
    assert set(phases.PROFILES) == {"smoke", "quick", "full"}
    assert len(phases.PROFILES["quick"].seeds) >= 3 and len(phases.PROFILES["full"].seeds) >= 3
    assert phases.PROFILES["full"].d_sae == 2048 and phases.PROFILES["full"].steps >= 10_000
    smoke, quick = phases.PROFILES["smoke"], phases.PROFILES["quick"]
    assert smoke.steps < quick.steps and smoke.d_sae <= quick.d_sae


def test_base_config_keeps_the_seed_test1_proportions():
    cfg = phases.base_config(phases.PROFILES["quick"], seed=3)
    # Test 1: warmup 500 and resampling every 2,500 of 10,000 steps; the seed's L1 and resampling
    assert cfg.schedule.warmup_steps / cfg.steps == pytest.approx(0.05)
    assert cfg.resample.interval / cfg.steps == pytest.approx(0.25)
    assert (cfg.penalty.form, cfg.penalty.alpha, cfg.resample.strategy, cfg.resample.detector) == ("mean_all", 0.003, "seed", "single_batch")
    assert cfg.normalize.mode == "constant_norm_rescale" and cfg.seed == 3


@pytest.mark.parametrize("stem", list(PHASES))
def test_parameter_contract(stem):
    assert phases.check_mirrors(PHASES[stem]) == []
    paths = field_paths()
    for name, path in PHASES[stem].mirrors().items():
        assert path is None or path in paths, name


@pytest.mark.parametrize("stem", [s for s in PHASES if s in FACTORS])
def test_arms_differ_from_the_seed_arm_in_one_factor(stem):
    for profile in ("smoke", "quick"):
        arms = phases.build_arms(stem, profile, seed=1)
        ref = phases._flat(next(iter(arms.values())).to_dict())
        assert len(arms) >= 2
        for name, cfg in arms.items():
            diff = {k for k, v in phases._flat(cfg.to_dict()).items() if ref[k] != v}
            assert diff <= FACTORS[stem], (name, diff - FACTORS[stem])
            assert cfg.seed == 1
        for group in phases.lockstep_groups(arms):  # what the trainer enforces
            first = next(iter(group.values()))
            assert all(getattr(c, f) == getattr(first, f) for c in group.values() for f in SHARED_FIELDS)


def test_l1_arms_convert_alpha_to_the_seed_gradient():
    arms = phases.build_arms("01_l1_penalty", "quick", 0)
    B, S = arms["seed"].data.batch_size, arms["seed"].sae.d_sae
    assert arms["per_sample_sum"].penalty.alpha == pytest.approx(0.003 / S)  # not x d_sae as the seed's Task 2.2
    assert arms["sum"].penalty.alpha == pytest.approx(0.003 / (B * S))
    assert arms["per_feature_mean"].penalty.alpha == pytest.approx(convert_alpha(0.003, "mean_all", "per_feature_mean", B, S))
    assert arms["task22_alpha_x_d_sae"].penalty.alpha == pytest.approx(0.003 * S)


def test_validation_phase_trains_synthetic_and_real_groups():
    arms = phases.build_arms("06_validation", "smoke", 0)
    groups = phases.lockstep_groups(arms)
    assert {next(iter(g.values())).data.source for g in groups} == {"synthetic", "minilm"}
    assert all(c.sae.d_in == 0 for n, c in arms.items() if n.endswith("minilm"))  # width from the source
    skip = phases.build_arms("06_validation", "smoke", 0, data_source_real="")
    assert len(phases.lockstep_groups(skip)) == 1


def test_normalization_phase_adds_the_centered_arm_unless_told_not_to():
    arms = phases.build_arms("04_normalization", "smoke", 0)
    c = arms["centered"]
    assert (c.sae.b_dec_init, c.sae.apply_b_dec_to_input) == ("geometric_median", True)
    assert c.normalize == arms["seed"].normalize  # centered on top of the seed's normalization, nothing else
    assert "centered" not in phases.build_arms("04_normalization", "smoke", 0, sae_b_dec_init=None)
    assert phases.build_arms("04_normalization", "smoke", 0, sae_b_dec_init="mean")["centered"].sae.b_dec_init == "mean"
    with pytest.raises(ValueError, match="sae_b_dec_init='median': choose mean, geometric_median"):
        phases.build_arms("04_normalization", "smoke", 0, sae_b_dec_init="median")


def test_parameter_names_reads_assignment_only_cells():
    history = ["", 'profile: str = "quick"  # help\nseeds = None', "# Parameters\nbogus = 3\n", "import os\nx = 1", "def f(:"]
    assert phases.parameter_names(history) == ["profile", "seeds", "bogus"]


def test_prepare_builds_every_seed():
    run = phases.prepare("02_lr_warmup", namespace("02_lr_warmup", seeds=[4, 5]), history=[])
    assert run.seeds == (4, 5) and set(run.arms) == {4, 5}
    assert run.arms[5]["seed"].seed == 5 and "no_warmup" in run.describe()


@pytest.mark.parametrize("given, message", [
    ({"profile": "huge"}, "profile='huge' is unknown"),
    ({"seeds": [0, -1]}, "seeds="),
    ({"seeds": [1, 1]}, "repeats"),
    ({"steps": 0}, "steps=0"),
    ({"explorer": "yes"}, "explorer="),
    ({"overrides": {"optim.lrr": 1.0}}, "did you mean 'optim.lr'"),
    ({"source": "nowhere"}, "data.source"),
    ({"schedule_shape": ["triangle"]}, "'triangle' is not allowed"),
    ({"schedule_warmup_steps_fraction": [1.5]}, "fraction"),
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


def test_explorer_figure_and_panel(tmp_path):
    from fake_runs import write_fake_arms

    write_fake_arms(tmp_path / "seed0", steps=400, log_interval=20, warmup=100)
    found = explorer.find_runs(tmp_path)
    assert set(found) == {"seed0/seed", "seed0/fixed", "seed0/reanimate"}
    cols = explorer.metric_columns(found)
    assert "dead_frac" in cols and "step" not in cols
    fig = explorer.figure(found, ["seed0/seed", "seed0/fixed"], "l0", steps=(100, 300))
    assert len(fig.data) == 2 and all(100 <= x <= 300 for t in fig.data for x in t.x)
    panel = explorer.explore(tmp_path)
    assert type(panel).__name__ == "VBox"


def test_the_explorer_shows_only_this_executions_runs_labelled_by_profile_and_seed(tmp_path):
    """An earlier execution's runs left in out_dir (seed0 here) never show: the panel lists the
    runs the PhaseRun trained, as '<profile> · seed<s> · <arm>'."""
    from types import SimpleNamespace

    from fake_runs import write_fake_arms

    from saelab.runs import load_arms

    write_fake_arms(tmp_path / "seed0", steps=400, log_interval=20, warmup=100)  # an earlier execution's
    new = load_arms(write_fake_arms(tmp_path / "seed1", steps=400, log_interval=20, warmup=100))
    run = SimpleNamespace(profile=phases.PROFILES["smoke"], out_dir=tmp_path, runs={1: new})
    labels = explorer.phase_runs(run)
    assert list(labels) == [f"smoke · seed1 · {arm}" for arm in new] and len(explorer.find_runs(tmp_path)) == 6
    panel = explorer.explore(run)
    picker = panel.children[0].children[0]
    assert list(picker.options) == list(labels) and set(picker.value) == set(labels)
