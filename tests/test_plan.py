"""The lab is planned once (issue 19): plan_lab reads the base once and builds every phase's arms
before anything is written; a phase's notebook reads its part back instead of planning again."""

from __future__ import annotations

import json

import pytest

from saelab.lab import phases
from saelab.lab.causes import PHASES
from saelab.lab.params import defaults
from saelab.lab.plan import plan_lab


def namespace(plan, stem: str) -> dict:
    """What the phase's notebook holds after papermill injected the lab's parameters."""
    return {**defaults(PHASES[stem]), **plan.passed(stem)}


def test_the_lab_plan_reads_the_base_once_and_writes_nothing(tmp_path, monkeypatch):
    calls = []
    real = phases.load_base
    monkeypatch.setattr("saelab.lab.plan.load_base", lambda name: calls.append(name) or real(name))
    plan = plan_lab("smoke", list(PHASES), {"steps": 40}, tmp_path / "lab")
    assert calls == [None]  # one read of the (default) base for every phase
    assert not (tmp_path / "lab").exists()  # planning writes nothing
    assert plan.later == ("06_validation",) and "06_validation" not in plan.runs  # it reads the others' verdicts
    assert set(plan.runs) == set(PHASES) - {"06_validation"}
    assert all(r.parameters["steps"] == 40 for r in plan.runs.values())


def test_a_notebook_reads_its_planned_phase_back_without_planning_again(tmp_path, monkeypatch):
    plan = plan_lab("smoke", ["02_lr_warmup", "05_reanimation"], {}, tmp_path / "lab")
    plan.write()
    written = json.loads((tmp_path / "lab" / "plan.json").read_text())
    assert set(written["phases"]) == {"02_lr_warmup", "05_reanimation"}
    assert written["phases"]["02_lr_warmup"]["jobs"][0]["name"] == "02_lr_warmup/seed0"

    def no_base(name):
        raise AssertionError("the base was read again")

    monkeypatch.setattr(phases, "load_base", no_base)
    for stem, planned in plan.runs.items():
        run = phases.prepare(stem, namespace(plan, stem), history=[])
        assert run is not planned
        for seed in planned.seeds:  # the same arms, contexts and reasons, number for number
            a, b = run.built[seed], planned.built[seed]
            assert a.plan.arms == b.plan.arms and a.ctx == b.ctx and a.plan.not_applicable == b.plan.not_applicable
            assert {h: [(x.name, x.against, dict(x.changes)) for x in arms] for h, arms in a.plan.tested.items()} == \
                   {h: [(x.name, x.against, dict(x.changes)) for x in arms] for h, arms in b.plan.tested.items()}
        assert [(j.name, list(j.arms)) for j in run.jobs()] == [(j.name, list(j.arms)) for j in planned.jobs()]


def test_other_parameters_than_the_plans_are_planned_afresh(tmp_path, monkeypatch):
    plan = plan_lab("smoke", ["02_lr_warmup"], {}, tmp_path / "lab")
    plan.write()
    calls = []
    real = phases.load_base
    monkeypatch.setattr(phases, "load_base", lambda name: calls.append(name) or real(name))
    ns = namespace(plan, "02_lr_warmup") | {"steps": 33}
    run = phases.prepare("02_lr_warmup", ns, history=[])
    assert calls == [None] and run.built[0].ctx.base.steps == 33


def test_a_bad_base_stops_the_plan_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="nope"):
        plan_lab("smoke", list(PHASES), {"base": str(tmp_path / "nope.json")}, tmp_path / "lab")
    assert not (tmp_path / "lab").exists()


def test_a_plan_is_stale_when_a_sparsify_trainer_config_changes(tmp_path):
    """A sparsify SAE's base is its cfg.json and the Trainer's config.json one folder up: the plan's
    stamp covers both, so an edited auxk_alpha is planned afresh, not read back."""
    cfg = {"activation": "topk", "expansion_factor": 4, "normalize_decoder": True, "num_latents": 64, "k": 4,
           "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": 16}
    train = {"sae": {k: v for k, v in cfg.items() if k != "d_in"}, "batch_size": 64, "grad_acc_steps": 1, "micro_acc_steps": 1,
             "loss_fn": "fvu", "optimizer": "signum", "lr": None, "lr_warmup_steps": 10, "k_decay_steps": 0, "auxk_alpha": 0.0,
             "dead_feature_threshold": 25600, "hookpoints": ["layers.0"]}
    sae = tmp_path / "run" / "layers.0"
    sae.mkdir(parents=True)
    (sae / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "run" / "config.json").write_text(json.dumps(train))
    plan = plan_lab("smoke", ["02_lr_warmup"], {"base": str(sae)}, tmp_path / "lab")
    plan.write()
    run = plan.runs["02_lr_warmup"]
    assert run.base.files == (str(sae / "cfg.json"), str(tmp_path / "run" / "config.json"))
    ns = namespace(plan, "02_lr_warmup")
    assert phases.read_plan("02_lr_warmup", ns) is not None  # unchanged: read back
    (tmp_path / "run" / "config.json").write_text(json.dumps(train | {"auxk_alpha": 0.03125}))
    assert phases.read_plan("02_lr_warmup", ns) is None  # the Trainer's config changed: planned afresh
