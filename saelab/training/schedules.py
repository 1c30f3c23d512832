"""LR and coefficient schedules: pure functions of the step returning a multiplier or a value."""

from __future__ import annotations

import math

import numpy as np

from saelab.config import AuxConfig, PenaltyConfig, RunConfig, ScheduleConfig


def lr_multiplier(step: int, cfg: ScheduleConfig, total_steps: int) -> float:
    """Multiplier on the peak LR at ``step`` (0-based, the step about to be taken).

    linear_warmup is the seed's ``LambdaLR(lambda s: s / warmup_steps if s < warmup_steps else 1)``:
    0 at step 0, so the very first update is a no-op, as in the seed.
    """
    w = cfg.warmup_steps
    warm = step / w if step < w else 1.0
    if cfg.shape == "constant":
        return 1.0
    if cfg.shape == "linear_warmup":
        return warm
    if cfg.shape == "warmup_cosine":
        if step < w:
            return warm
        progress = min(1.0, (step - w) / max(1, total_steps - w))
        cos = 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos
    if cfg.shape == "warmup_linear_decay":
        decay_start = total_steps - int(round(cfg.decay_fraction * total_steps))
        if step < w:
            return warm
        if step < decay_start:
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - decay_start))
    raise ValueError(f"unknown schedule.shape {cfg.shape!r}")


def lr_at(step: int, cfg: RunConfig) -> float:
    return cfg.optim.lr * lr_multiplier(step, cfg.schedule, cfg.steps)


def lr_curve(cfg: RunConfig) -> np.ndarray:
    """The LR at every step, [steps]."""
    return np.array([lr_at(s, cfg) for s in range(cfg.steps)])


def max_relative_change(values: np.ndarray) -> tuple[float, int]:
    """Largest step-to-step relative change |v[t+1] - v[t]| / v[t] over steps where v[t] > 0, and
    the step t+1 where it happens. Tests the seed's claim of a "5x jump" at the end of warmup: for
    its linear warmup the largest change after the first steps is 1/(t), tiny at t = warmup."""
    v = np.asarray(values, dtype=np.float64)
    prev, nxt = v[:-1], v[1:]
    ok = prev > 0
    if not ok.any():
        return 0.0, 0
    rel = np.where(ok, np.abs(nxt - prev) / np.where(ok, prev, 1.0), -1.0)
    t = int(rel.argmax())
    return float(rel[t]), t + 1


def alpha_at(step: int, cfg: PenaltyConfig) -> float:
    """Penalty coefficient: linear warmup from 0 over ``warmup_steps`` (Anthropic April 2024)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.alpha * step / cfg.warmup_steps
    return cfg.alpha


def reanimation_coef_at(step: int, cfg: AuxConfig) -> float:
    """Reanimation coefficient: constant, or annealed linearly to 0 at ``reanimation_anneal_steps``
    (seed 000: "anneal the coefficient to 0 once the dictionary utilization stabilizes")."""
    if cfg.reanimation_schedule == "linear_anneal":
        return cfg.reanimation_coef * max(0.0, 1 - step / cfg.reanimation_anneal_steps)
    return cfg.reanimation_coef


def schedule_events(cfg: RunConfig) -> list[dict]:
    """Steps where a schedule changes regime, for event markers and collapse attribution."""
    events = []
    if cfg.schedule.shape != "constant" and 0 < cfg.schedule.warmup_steps < cfg.steps:
        events.append({"step": cfg.schedule.warmup_steps, "kind": "warmup_end", "lr": lr_at(cfg.schedule.warmup_steps, cfg)})
    if cfg.schedule.shape == "warmup_linear_decay":
        start = cfg.steps - int(round(cfg.schedule.decay_fraction * cfg.steps))
        events.append({"step": start, "kind": "lr_change", "what": "linear decay starts"})
    if 0 < cfg.penalty.warmup_steps < cfg.steps:
        events.append({"step": cfg.penalty.warmup_steps, "kind": "penalty_warmup_end", "alpha": cfg.penalty.alpha})
    if cfg.aux.reanimation_schedule == "linear_anneal" and cfg.aux.reanimation_coef > 0:
        events.append(
            {"step": min(cfg.aux.reanimation_anneal_steps, cfg.steps), "kind": "coef_change", "what": "reanimation annealed to 0"}
        )
    return sorted(events, key=lambda e: e["step"])
