"""saelab's training step as a timed runner, shared by lockstep.py, compile_step.py and
train_step.py (kept out of _harness.py, which must import only torch for compare_peers' workers)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from saelab import config
from saelab.data.sources import Source
from saelab.training import stack


def arms(n: int, base: config.RunConfig | None = None) -> list[config.RunConfig]:
    """n arms of ``base`` (default: preset seed-test1) differing in learning rate and L1 coefficient,
    so that Adam cannot treat them as one and every arm keeps its own numbers."""
    base = base or config.seed_test1()
    return [base.with_overrides({"optim.lr": base.optim.lr * (0.5 + 0.25 * i),
                                 "penalty.alpha": base.penalty.alpha * (1 + 0.5 * i)}) for i in range(n)]


def step_runner(cfgs: list[config.RunConfig], source: Source, steps: int) -> Callable[[], None]:
    """A runner doing ``steps`` calls of stack.step_group for the (resolved) arms, which must stack
    into one group, on 16 in-memory batches in turn; each call continues from the last step,
    starting at the end of the warmup (full LR, as most of a run is)."""
    (group,) = stack.build_groups(cfgs, source, torch.device("cpu"))
    assert len(group.idx) == len(cfgs), "the arms must stack into one group"
    batches = [source.batch(s, cfgs[0].data.batch_size) for s in range(16)]
    state = {"step": cfgs[0].schedule.warmup_steps}

    def run() -> None:
        for _ in range(steps):
            s = state["step"]
            stack.step_group(group, cfgs, batches[s % len(batches)], s)
            state["step"] = s + 1

    return run
