"""One training function: K arms in lockstep, every arm sees the same batch at every step.

Arms whose SAE configs agree are stacked into one module (leading arm dim) and trained with
batched matrix products; arms may differ in everything else (penalty, LR, schedule,
normalization, resampling, auxiliary losses). Data, steps and logging cadence are shared.

    for step: x = source.batch(step)                       (identical for every arm)
      for group: X = normalize_k(x) -> forward -> per-arm losses -> backward -> Adam(lr_k)
                 -> decoder constraint -> trackers -> resampling -> metrics row every log_interval
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelab import diagnose, runs, schedules, stack
from saelab.config import RunConfig
from saelab.data import Source, make_source, resolve

SHARED_FIELDS = ("data", "steps", "log_interval", "eval_rows", "checkpoint_every", "seed", "device", "dtype",
                 "compile")


def _check_shared(cfgs: dict[str, RunConfig]) -> None:
    first_name, first = next(iter(cfgs.items()))
    for name, cfg in cfgs.items():
        for f in SHARED_FIELDS:
            if getattr(cfg, f) != getattr(first, f):
                raise ValueError(
                    f"arms train in lockstep and must share {f!r}: arm {name!r} has {getattr(cfg, f)!r}, "
                    f"arm {first_name!r} has {getattr(first, f)!r}"
                )


@dataclass
class _State:
    """Everything a run accumulates besides weights: restored on resume."""

    rows: dict[str, list[dict]]
    events: dict[str, list[dict]]
    fire_steps: list[int]
    fire_counts: dict[str, list[Tensor]]
    wall: float = 0.0
    eval_rows: int = 0  # held-out rows behind fire_counts (latents.safetensors "eval_rows")


def _checkpoint(out: Path, groups: list[stack.Group], gens: list[torch.Generator], step: int, state: _State,
                dirs: dict[str, Path], names: list[str]) -> None:
    tensors: dict[str, Tensor] = {}
    meta = {"step": step, "wall": state.wall, "normalizers": []}
    for i, g in enumerate(groups):
        tensors |= {f"g{i}.model.{k}": v for k, v in g.model.state_dict().items()}
        tensors |= {f"g{i}.adam.{k}": v for k, v in g.adam.state_dict().items()}
        tensors |= {f"g{i}.tracker.{k}": v for k, v in g.tracker.state_dict().items()}
        meta["normalizers"].append([n.state_dict() for n in g.normalizers])
    tensors |= {f"gen{i}": gen.get_state() for i, gen in enumerate(gens)}
    runs.write_tensors(out / "checkpoint" / "state.safetensors", tensors)
    runs.write_json(out / "checkpoint" / "meta.json", meta)
    for name in names:
        _flush(dirs[name], name, state, names)


def _restore(out: Path, groups: list[stack.Group], gens: list[torch.Generator]) -> tuple[int, float]:
    path = out / "checkpoint" / "state.safetensors"
    if not path.exists():
        raise ValueError(f"cannot resume {out}: no checkpoint at {path}")
    tensors = runs.read_tensors(path)
    meta = runs.read_json(out / "checkpoint" / "meta.json")
    for i, g in enumerate(groups):
        pick = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
        g.model.load_state_dict(pick(f"g{i}.model."))
        g.adam.load_state_dict(pick(f"g{i}.adam."))
        g.tracker.load_state_dict(pick(f"g{i}.tracker."))
        for n, st in zip(g.normalizers, meta["normalizers"][i]):
            n.load_state_dict(st)
    for i, gen in enumerate(gens):
        gen.set_state(tensors[f"gen{i}"])
    return int(meta["step"]), float(meta["wall"])


def _flush(path: Path, name: str, state: _State, names: list[str]) -> None:
    """Write the arm's metrics, events and latent history so far (atomic files)."""
    runs.write_metrics(path / "metrics.parquet", state.rows[name])
    runs.write_jsonl(path / "events.jsonl", state.events[name])
    if state.fire_steps:
        runs.write_tensors(path / "latents.safetensors", {
            "steps": torch.tensor(state.fire_steps, dtype=torch.int64),
            "fire_counts": torch.stack(state.fire_counts[name]).to(torch.int32),
            "eval_rows": torch.tensor(state.eval_rows, dtype=torch.int64),
        })


def train(
    arms: RunConfig | dict[str, RunConfig] | None,
    out: str | Path,
    *,
    progress: bool = True,
    resume: bool = False,
    stop_at: int | None = None,
    source: Source | None = None,
    factor: str | None = None,
) -> dict[str, runs.Run]:
    """Train one arm (a RunConfig: ``out`` is its run directory) or several in lockstep (a dict
    name -> RunConfig: ``out/<name>`` per arm plus ``out/arms.json``). ``resume`` continues from
    ``out/checkpoint``; ``stop_at`` checkpoints and returns after that many steps (an interruption
    that ``resume`` undoes). Returns the loaded runs."""
    out = Path(out)
    if resume and (out / "arms.json").exists():
        arms = dict.fromkeys(runs.read_json(out / "arms.json")["arms"])
    elif resume:
        arms = RunConfig()  # placeholder: the config is read back from the run directory
    single = isinstance(arms, RunConfig)
    named = {out.name or "run": arms} if single else dict(arms)
    if not named:
        raise ValueError("train needs at least one arm")
    names = list(named)
    dirs = {n: out if single else out / n for n in names}
    if resume:
        named = {n: runs.load_run(dirs[n]).config for n in names}
    _check_shared(named)
    first = named[names[0]]
    source = source or make_source(first)
    cfgs = [resolve(named[n], source) for n in names]
    first = cfgs[0]
    device, dtype = torch.device(first.device), stack._dtype(first.dtype)
    torch.manual_seed(first.seed)
    groups = stack.build_groups(cfgs, source, device)
    gens = [torch.Generator().manual_seed(first.seed * 7919 + i) for i in range(len(cfgs))]
    x_eval = source.eval_set(first.eval_rows).to(device, dtype)
    truth_dict = source.ground_truth.to(device) if source.ground_truth is not None else None
    arm_of = {a: (g, k) for g in groups for k, a in enumerate(g.idx)}
    sched_events = {n: {e["step"]: e for e in schedules.schedule_events(c)} for n, c in zip(names, cfgs)}

    state = _State({n: [] for n in names}, {n: [] for n in names}, [], {n: [] for n in names}, eval_rows=x_eval.shape[0])
    start = 0
    if resume:
        start, state.wall = _restore(out, groups, gens)
        for n in names:
            old = runs.load_run(dirs[n])
            state.rows[n] = [r for r in old.metrics.to_dict("records") if r["step"] <= start]
            state.events[n] = [e for e in old.events if e["step"] <= start]
            if old.latents:
                keep = old.latents["steps"] <= start
                state.fire_counts[n] = list(old.latents["fire_counts"][keep].to(torch.int64))
                state.fire_steps = old.latents["steps"][keep].tolist()
    else:
        if not single:
            runs.write_json(out / "arms.json", {"arms": names, "factor": factor})
        for n, c in zip(names, cfgs):
            dirs[n].mkdir(parents=True, exist_ok=True)
            runs._atomic(dirs[n] / "config.json", lambda tmp, c=c: Path(tmp).write_text(c.to_json() + "\n"))
        _initial(groups, cfgs, names, dirs, x_eval, source, state)

    end = first.steps if stop_at is None else min(first.steps, stop_at)
    if end < start:  # checkpointing at `end` would label step-`start` weights with an earlier step
        raise ValueError(f"stop_at={stop_at} is before the checkpoint at step {start} in {out}")
    bar = tqdm(total=first.steps, initial=start, disable=not progress, desc=out.name, unit="step", leave=False)
    t0 = time.perf_counter() - state.wall
    completed, in_step = start, False  # steps fully done; whether a step's writes are under way
    interrupt = _DeferInterrupt()
    try:
        for step in range(start, end):
            x = source.batch(step, first.data.batch_size).to(device, dtype)
            in_step = True
            for g in groups:
                try:
                    stack.step_group(g, cfgs, x, step)
                except stack.NonFiniteError as e:  # raised before the update: the state is still good
                    state.events[names[e.arm]].append({"step": e.step, "kind": "nonfinite", "quantity": e.quantity})
                    state.wall = time.perf_counter() - t0
                    _checkpoint(out, groups, gens, step, state, dirs, names)
                    raise RuntimeError(f"arm {names[e.arm]!r}: {e.quantity} is not finite at step {e.step}; "
                                       f"the last good state is checkpointed in {out / 'checkpoint'} "
                                       f"(saelab train --resume {out})") from None
            done = step + 1
            _after_step(groups, cfgs, names, dirs, done, x_eval, source, gens, arm_of, sched_events, truth_dict, state, bar)
            completed, in_step = done, False
            bar.update(1)
            if first.checkpoint_every and done % first.checkpoint_every == 0 and done < end:
                state.wall = time.perf_counter() - t0
                _checkpoint(out, groups, gens, done, state, dirs, names)
            if interrupt.pending:  # a Ctrl-C held while the step ran: stop here, at a step boundary
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        if not in_step:  # mid-step the weights may be updated and the trackers not: keep the last checkpoint
            state.wall = time.perf_counter() - t0
            _checkpoint(out, groups, gens, completed, state, dirs, names)
        raise
    finally:
        interrupt.restore()
        bar.close()
    state.wall = time.perf_counter() - t0
    _checkpoint(out, groups, gens, end, state, dirs, names)
    if end < first.steps:
        return {n: runs.load_run(dirs[n]) for n in names}
    return _finish(groups, cfgs, names, dirs, state, end, source)  # state.wall spans every resumed segment


class _DeferInterrupt:
    """Hold a Ctrl-C (SIGINT) until the running step completes, so that the checkpoint written on
    interrupt is a consistent state; a second Ctrl-C interrupts at once. Signal handlers belong to
    the main thread: elsewhere (or under a handler Python did not install) this does nothing."""

    def __init__(self) -> None:
        self.pending = False
        self._previous = None
        try:
            if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not None:
                self._previous = signal.signal(signal.SIGINT, self._hold)
        except ValueError:  # not the main interpreter
            self._previous = None

    def _hold(self, signum, frame) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _initial(groups, cfgs, names, dirs, x_eval, source, state: _State) -> None:
    """Step-0 metrics row, init diagnostics and the Task 5.1 norm numbers on the held-out set."""
    state.fire_steps.append(0)
    for g in groups:
        ev = stack.evaluate(g, x_eval)
        X, _ = stack.normalize_batch(g, x_eval)
        with torch.no_grad():
            pre = g.model.preacts(X)
        truth = source.ground_truth
        for k, arm in enumerate(g.idx):
            n = names[arm]
            state.rows[n].extend(stack.metric_rows(g, cfgs, ev, 0, truth.to(x_eval.device) if truth is not None else None)[k:k + 1])
            state.fire_counts[n].append(ev["fire"][k].cpu())
            init = diagnose.init_diagnostics(x_eval.cpu(), pre[k].cpu())
            runs.write_json(dirs[n] / "init.json", init)
            stats = g.normalizers[k].stats(x_eval)
            state.events[n].append({"step": 0, "kind": "norm_stats", "where": "held-out set", **stats})


def _after_step(groups, cfgs, names, dirs, done, x_eval, source, gens, arm_of, sched_events, truth_dict,
                state: _State, bar) -> None:
    """Schedule events, resampling and the metrics row for the step just completed."""
    for n in names:
        if done in sched_events[n]:
            state.events[n].append(sched_events[n][done])
    for a, (n, cfg) in enumerate(zip(names, cfgs)):
        if stack.resample_due(cfg, done):
            g, k = arm_of[a]
            state.events[n].append(stack.resample(g, cfgs, k, done, source, x_eval, gens[a]))
    if done % cfgs[0].log_interval and done != cfgs[0].steps:
        return
    for g in groups:
        for name, p in g.model.named_parameters():
            bad = ~torch.isfinite(p.detach()).flatten(1).all(1)
            if bad.any():
                arm = names[g.idx[int(bad.nonzero()[0])]]
                raise RuntimeError(f"arm {arm!r}: weights {name} became non-finite by step {done}; the last good "
                                   f"state is the latest checkpoint (saelab train --resume)")
    state.fire_steps.append(done)
    postfix = {}
    for g in groups:
        ev = stack.evaluate(g, x_eval)
        for k, row in enumerate(stack.metric_rows(g, cfgs, ev, done, truth_dict)):
            n = names[g.idx[k]]
            state.rows[n].append(row)
            state.fire_counts[n].append(ev["fire"][k].cpu())
            postfix[n[:12]] = f"dead {row['dead_frac']:.0%} L0 {row['l0']:.1f}"
    if len(postfix) <= 3:
        bar.set_postfix(postfix, refresh=False)
    for n in names:
        _flush(dirs[n], n, state, names)


def _finish(groups, cfgs, names, dirs, state: _State, steps_run: int, source: Source) -> dict[str, runs.Run]:
    """Final weights, summary, autopsy and lifecycles per arm."""
    out = {}
    for g in groups:
        for k, arm in enumerate(g.idx):
            n, cfg = names[arm], cfgs[arm]
            run = runs.load_run(dirs[n])
            run.weights = g.model.arm_state(k)
            last = state.rows[n][-1]
            run.autopsy = diagnose.autopsy(run.metrics, run.events)
            life = diagnose.lifecycles(run.latents["steps"], run.latents["fire_counts"], run.events)
            # lifecycles.json is JSON: per-latent tensors become lists; alive [T, S] is left out
            # (it is latents.safetensors' fire_counts > 0)
            run.lifecycles = {key: v.tolist() if isinstance(v, Tensor) else v for key, v in life.items() if key != "alive"}
            run.summary = {
                **last,
                "arm": n,
                "steps": cfg.steps,
                "wall_seconds": state.wall,
                "steps_per_second": steps_run / state.wall if state.wall > 0 else float("nan"),
                "n_arms_in_lockstep": len(cfgs),
                "source": source.describe(),
                "n_collapses": len(run.autopsy.get("collapses", [])),
            }
            run.save()
            out[n] = run
    return out
