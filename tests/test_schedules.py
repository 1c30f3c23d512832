"""Schedules as pure functions of the step; the seed's LR warmup and its "5x jump" claim."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saelab.config import AuxConfig, PenaltyConfig, RunConfig, ScheduleConfig, seed_pipeline
from saelab.training import schedules as S


def _seed_lr_lambda(warmup_steps):
    """The seed's training_tasks.py lines 348-357, verbatim."""

    def lr_lambda(step):
        if step < warmup_steps:
            return step / warmup_steps
        return 1.0

    return lr_lambda


@pytest.mark.parametrize("warmup, steps", [(50, 120), (7, 20), (0, 10)])
def test_linear_warmup_equals_the_seeds_lambdalr(warmup, steps):
    cfg = RunConfig().replace(optim={"lr": 3e-4}, schedule={"shape": "linear_warmup", "warmup_steps": warmup}, steps=steps,
                              log_interval=min(50, steps))
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=3e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _seed_lr_lambda(warmup))
    for step in range(steps):  # the seed's loop: update with the current LR, then scheduler.step()
        assert S.lr_at(step, cfg) == opt.param_groups[0]["lr"], f"step {step}"
        opt.step()
        sched.step()
    assert S.lr_multiplier(0, cfg.schedule, steps) == (0.0 if warmup else 1.0)  # the first update is a no-op


def test_constant():
    cfg = ScheduleConfig(shape="constant", warmup_steps=100)
    assert {S.lr_multiplier(s, cfg, 1000) for s in (0, 50, 999)} == {1.0}


def test_warmup_cosine():
    cfg = ScheduleConfig(shape="warmup_cosine", warmup_steps=10, min_lr_ratio=0.1)
    total = 110
    assert S.lr_multiplier(5, cfg, total) == 0.5  # warmup: 5 / 10
    assert S.lr_multiplier(10, cfg, total) == pytest.approx(1.0)  # cosine starts at the peak
    # halfway through the 100 decay steps: 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert S.lr_multiplier(60, cfg, total) == pytest.approx(0.55)
    assert S.lr_multiplier(110, cfg, total) == pytest.approx(0.1)  # the floor
    values = [S.lr_multiplier(s, cfg, total) for s in range(10, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay


def test_warmup_linear_decay():
    cfg = ScheduleConfig(shape="warmup_linear_decay", warmup_steps=10, decay_fraction=0.2)
    total = 100  # decay over the last 20 steps: from step 80 to 0 at step 100
    assert S.lr_multiplier(5, cfg, total) == 0.5
    assert S.lr_multiplier(50, cfg, total) == 1.0
    assert S.lr_multiplier(80, cfg, total) == 1.0
    assert S.lr_multiplier(90, cfg, total) == pytest.approx(0.5)  # (100 - 90) / 20
    assert S.lr_multiplier(99, cfg, total) == pytest.approx(0.05)
    assert S.lr_multiplier(100, cfg, total) == 0.0


def test_alpha_warmup():
    cfg = PenaltyConfig(alpha=2.0, warmup_steps=100)
    assert S.alpha_at(0, cfg) == 0.0
    assert S.alpha_at(25, cfg) == 0.5  # 2 * 25 / 100
    assert S.alpha_at(100, cfg) == 2.0
    assert S.alpha_at(10**6, cfg) == 2.0
    assert S.alpha_at(0, PenaltyConfig(alpha=2.0, warmup_steps=0)) == 2.0


def test_reanimation_coefficient_anneals_to_zero():
    cfg = AuxConfig(reanimation_coef=1e-3, reanimation_schedule="linear_anneal", reanimation_anneal_steps=100)
    assert S.reanimation_coef_at(0, cfg) == 1e-3
    assert S.reanimation_coef_at(50, cfg) == pytest.approx(5e-4)
    assert S.reanimation_coef_at(100, cfg) == 0.0
    assert S.reanimation_coef_at(500, cfg) == 0.0  # stays at 0, never negative
    const = AuxConfig(reanimation_coef=1e-3)
    assert S.reanimation_coef_at(10**6, const) == 1e-3


def test_the_seeds_5x_jump_is_not_at_the_end_of_warmup():
    """The seed: "At step 5000, LR jumps from 0.00006 -> 0.0003 (5x increase!)". With its
    LambdaLR(step / 5000), lr(4999) = 0.00029994 and lr(5000) = 0.0003: a relative change of
    1/4999. The 5x is between its log rows at steps 1000 (0.00006) and 5000, 4000 steps apart.
    The largest step-to-step change is at the start of warmup: 1/5000 -> 2/5000 doubles the LR."""
    cfg = seed_pipeline()
    lr = S.lr_curve(cfg)
    assert lr.shape == (50_000,)
    assert lr[1000] == pytest.approx(0.00006)
    assert lr[4999] == pytest.approx(0.00029994)
    assert lr[5000] == 0.0003
    change, at = S.max_relative_change(lr)
    assert (change, at) == (pytest.approx(1.0), 2)
    at_end = (lr[5000] - lr[4999]) / lr[4999]
    assert at_end == pytest.approx(1 / 4999)
    late_change, late_at = S.max_relative_change(lr[4000:])
    assert late_change == pytest.approx(1 / 4000) and late_at == 1  # still not at the warmup end
    assert S.max_relative_change(lr[5000:]) == (0.0, 1)  # flat after warmup


def test_max_relative_change_edge_cases():
    assert S.max_relative_change(np.zeros(5)) == (0.0, 0)
    assert S.max_relative_change(np.array([1.0, 1.0, 5.0, 5.0])) == (4.0, 2)  # a real 5x jump is found
    assert S.max_relative_change(np.array([2.0, 1.0])) == (0.5, 1)  # drops count too


def test_schedule_events():
    cfg = RunConfig().replace(
        schedule={"shape": "warmup_linear_decay", "warmup_steps": 100, "decay_fraction": 0.2},
        penalty={"warmup_steps": 50},
        aux={"reanimation_coef": 1e-3, "reanimation_schedule": "linear_anneal", "reanimation_anneal_steps": 300},
        steps=1000,
    )
    events = S.schedule_events(cfg)
    assert [(e["step"], e["kind"]) for e in events] == [
        (50, "penalty_warmup_end"),
        (100, "warmup_end"),
        (300, "coef_change"),
        (800, "lr_change"),
    ]
    assert S.schedule_events(RunConfig().replace(schedule={"shape": "constant"}, steps=100)) == []
