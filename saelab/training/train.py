"""One training function: K arms in lockstep, every arm sees the same batch at every step.

Arms whose SAE configs agree are stacked into one module (leading arm dim) and trained with
batched matrix products; arms may differ in everything else (penalty, LR, schedule,
normalization, resampling, auxiliary losses). Data, steps and logging cadence are shared.

    for step: x = source.batch(step)                       (identical for every arm)
      for group: X = normalize_k(x) -> forward -> per-arm losses -> backward -> Adam(lr_k)
                 -> decoder constraint -> trackers -> resampling -> metrics row every log_interval
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelab import fileio
from saelab.config import RunConfig
from saelab.data.sources import SYNTHETIC_D_IN, Source, make_source, resolve
from saelab.training import diagnose, runs, schedules, stack
from saelab.training.identity import data_fingerprint, identity
from saelab.version import provenance

SHARED_FIELDS = ("data", "steps", "log_interval", "eval_rows", "checkpoint_every", "checkpoint_seconds", "seed",
                 "device", "dtype", "compile")


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
    dropped: int = 0  # training rows dropped (data.drop_norm_above) since the last dropped_rows event


CHECKPOINT = "checkpoint.safetensors"  # the resume state: ONE file, tensors plus a JSON "saelab" metadata entry
AUTO_CHECKPOINT_MAX = 1000  # the automatic cadence's longest interval, in steps


def checkpoint_path(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT


def checkpoint_interval(cfg: RunConfig) -> int:
    """Steps between checkpoints: ``checkpoint_every``, or for 0 a tenth of the run, at least one
    log interval (checkpoints are cheap next to the metrics flush that log steps do anyway) and at
    most AUTO_CHECKPOINT_MAX steps. ``checkpoint_seconds`` adds time-based ones."""
    return cfg.checkpoint_every or min(AUTO_CHECKPOINT_MAX, max(cfg.log_interval, cfg.steps // 10), cfg.steps)


def read_checkpoint_meta(out: str | Path) -> dict:
    """The JSON metadata of ``out``'s checkpoint (step, wall, arms, config hashes, normalizers)."""
    path = checkpoint_path(out)
    text = runs.read_tensor_metadata(path).get("saelab")
    try:
        meta = json.loads(text) if text is not None else None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: its metadata is not valid JSON ({e}); the checkpoint is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != 1:
        raise ValueError(f"{path}: not a saelab checkpoint (no 'saelab' metadata of format 1)")
    return meta


def _config_hash(cfg: RunConfig) -> str:
    return hashlib.sha256(cfg.to_json().encode()).hexdigest()[:16]


def _flush(path: Path, name: str, state: _State, names: list[str]) -> None:
    """Write the arm's metrics, events and latent history so far (atomic files)."""
    runs.write_metrics(path / "metrics.parquet", state.rows[name])
    fileio.write_jsonl(path / "events.jsonl", state.events[name])
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
    keep_checkpoint: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, runs.Run]:
    """Train one arm (a RunConfig: ``out`` is its run directory) or several in lockstep (a dict
    name -> RunConfig: ``out/<name>`` per arm plus ``out/arms.json``). ``resume`` continues from
    ``out/checkpoint.safetensors``; ``stop_at`` checkpoints and returns after that many steps (an
    interruption that ``resume`` undoes). A finished run drops its checkpoint unless
    ``keep_checkpoint``. ``on_step(done)`` is called after every completed step (tests use it to
    send signals at a known step). SIGINT and SIGTERM stop at the next step boundary with a
    checkpoint and raise ``Interrupted``. Everything is validated (device, memory) before the first
    file is written; the run directory is locked while training. Returns the loaded runs."""
    out = Path(out)
    if resume and (out / "arms.json").exists():
        listed = fileio.read_json(out / "arms.json")
        if not isinstance(listed, dict) or not isinstance(listed.get("arms"), list):
            raise ValueError(f"{out / 'arms.json'}: must be {{\"arms\": [names...], \"factor\": ...}}")
        arms = dict.fromkeys(map(str, listed["arms"]))
    elif resume:
        arms = RunConfig()  # placeholder: the config is read back from the run directory
    single = isinstance(arms, RunConfig)
    named = {out.name or "run": arms} if single else dict(arms)
    if not named:
        raise ValueError("train needs at least one arm")
    names = list(named)
    dirs = {n: out if single else out / n for n in names}
    if resume:
        loaded = {n: runs.load_run(dirs[n]) for n in names}
        named = {n: r.config for n, r in loaded.items()}
        saved = loaded[names[0]].made.get("data")
        if saved is not None and saved != data_fingerprint(named[names[0]].data.source):
            raise ValueError(f"cannot resume {out}: its data ({named[names[0]].data.source}) changed since the run started; "
                             f"the rest of the run would train on other rows: train a new run instead")
    _check_shared(named)
    first = named[names[0]]
    device = check_device(first.device)
    if source is None and first.data.source == "synthetic":  # its feature directions are allocated on creation
        check_memory([dataclasses.replace(c, sae=dataclasses.replace(c.sae, d_in=c.sae.d_in or SYNTHETIC_D_IN))
                      for c in named.values()], device)
    source = source or make_source(first)
    cfgs = [resolve(named[n], source) for n in names]
    check_memory(cfgs, device)
    with runs.locked(out):  # from here on files are written: one writer per run directory
        for d in {out, *dirs.values()}:
            runs.remove_stale_temps(d)
        ls = _Lockstep.build(cfgs, names, dirs, out, source, device)
        return _run(ls, single=single, progress=progress, resume=resume, stop_at=stop_at, factor=factor,
                    keep_checkpoint=keep_checkpoint, on_step=on_step)


def _run(ls: _Lockstep, *, single: bool, progress: bool, resume: bool, stop_at: int | None, factor: str | None,
         keep_checkpoint: bool, on_step: Callable[[int], None] | None) -> dict[str, runs.Run]:
    """The training loop of ``train``: from step 0 or the checkpoint, to ``stop_at`` or the end."""
    first, out, state = ls.cfgs[0], ls.out, ls.state
    if resume:
        start = ls.resume()
    else:
        start = 0
        ls.start_fresh(single, factor)
    end = first.steps if stop_at is None else min(first.steps, stop_at)
    if end < start:  # checkpointing at `end` would label step-`start` weights with an earlier step
        raise ValueError(f"stop_at={stop_at} is before the checkpoint at step {start} in {out}")
    dtype, device = ls.x_eval.dtype, ls.x_eval.device
    every, every_s = checkpoint_interval(first), first.checkpoint_seconds
    bar = tqdm(total=first.steps, initial=start, disable=not progress, desc=out.name, unit="step", leave=False)
    t0 = time.perf_counter() - state.wall
    last_ck = time.perf_counter()
    completed, in_step = start, False  # steps fully done; whether a step's writes are under way
    interrupt = _DeferInterrupt()
    try:
        for step in range(start, end):
            x = ls.source.batch(step, first.data.batch_size).to(device, dtype)
            state.dropped += getattr(ls.source, "last_dropped", 0)  # data.drop_norm_above (data.NormFilter)
            in_step = True
            ls.step(step, x, t0)
            done = step + 1
            ls.after_step(done, bar)
            completed, in_step = done, False
            bar.update(1)
            if done < end and (done % every == 0 or (every_s and time.perf_counter() - last_ck >= every_s)):
                state.wall = time.perf_counter() - t0
                ls.checkpoint(done)
                last_ck = time.perf_counter()
            if on_step is not None:
                on_step(done)
            if interrupt.pending:  # a signal held while the step ran: stop here, at a step boundary
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        saved = None
        if not in_step:  # mid-step the weights may be updated and the trackers not: keep the last checkpoint
            state.wall = time.perf_counter() - t0
            ls.checkpoint(completed)
            saved = completed
        elif checkpoint_path(out).exists():
            saved = read_checkpoint_meta(out)["step"]
        raise Interrupted(interrupt.signum or signal.SIGINT, out, completed, saved) from None
    finally:
        interrupt.restore()
        bar.close()
    state.wall = time.perf_counter() - t0
    ls.checkpoint(end)
    if end < first.steps:
        return {n: runs.load_run(ls.dirs[n]) for n in ls.names}
    result = ls.finish(end)  # state.wall spans every resumed segment
    if not keep_checkpoint:  # the run is complete: its resume state is only disk space now
        checkpoint_path(out).unlink(missing_ok=True)
    return result


@dataclass
class _Lockstep:
    """One training's fixed parts and what it accumulates: the arms (configs, names, run
    directories under ``out``), the data, the arms stacked into groups, one generator per arm, the
    held-out rows, and the metrics, events and firing history (``state``)."""

    cfgs: list[RunConfig]
    names: list[str]
    dirs: dict[str, Path]
    out: Path
    source: Source
    groups: list[stack.Group]
    gens: list[torch.Generator]
    x_eval: Tensor
    truth_dict: Tensor | None  # the synthetic source's true feature directions, on the device
    arm_of: dict[int, tuple[stack.Group, int]]  # arm index -> its group and its index there
    sched_events: dict[str, dict[int, dict]]  # arm -> step -> the schedule event at that step
    state: _State

    @classmethod
    def build(cls, cfgs: list[RunConfig], names: list[str], dirs: dict[str, Path], out: Path, source: Source,
              device: torch.device) -> _Lockstep:
        first = cfgs[0]
        dtype = stack.dtype_of(first.dtype)
        torch.manual_seed(first.seed)
        groups = stack.build_groups(cfgs, source, device)
        gens = [torch.Generator().manual_seed(first.seed * 7919 + i) for i in range(len(cfgs))]
        x_eval = source.eval_set(first.eval_rows).to(device, dtype)
        truth = source.ground_truth.to(device) if source.ground_truth is not None else None
        arm_of = {a: (g, k) for g in groups for k, a in enumerate(g.idx)}
        sched = {n: {e["step"]: e for e in schedules.schedule_events(c)} for n, c in zip(names, cfgs)}
        state = _State({n: [] for n in names}, {n: [] for n in names}, [], {n: [] for n in names}, eval_rows=x_eval.shape[0])
        return cls(cfgs, names, dirs, out, source, groups, gens, x_eval, truth, arm_of, sched, state)

    def checkpoint(self, step: int) -> None:
        """Save everything resume needs. The arms' files go first and the checkpoint file last: its
        rename is the commit point. A kill in between leaves files ahead of the previous checkpoint,
        which resume cuts back to that checkpoint's step."""
        for name in self.names:
            _flush(self.dirs[name], name, self.state, self.names)
        tensors: dict[str, Tensor] = {}
        meta = {
            "format": 1,
            "step": step,
            "wall": self.state.wall,
            "arms": self.names,
            "configs": [_config_hash(c) for c in self.cfgs],
            "last_log": self.state.fire_steps[-1] if self.state.fire_steps else None,
            "normalizers": [],
            "dropped_rows": self.state.dropped,
        }
        for i, g in enumerate(self.groups):
            tensors |= {f"g{i}.model.{k}": v for k, v in g.model.state_dict().items()}
            tensors |= {f"g{i}.adam.{k}": v for k, v in g.adam.state_dict().items()}
            tensors |= {f"g{i}.tracker.{k}": v for k, v in g.tracker.state_dict().items()}
            meta["normalizers"].append([n.state_dict() for n in g.normalizers])
            for k, n in enumerate(g.normalizers):  # whitening's matrices (too large for the JSON)
                tensors |= {f"g{i}.norm{k}.{name}": t for name, t in n.tensors().items()}
        tensors |= {f"gen{i}": gen.get_state() for i, gen in enumerate(self.gens)}
        text = json.dumps(fileio.clean_json(meta), allow_nan=False)
        runs.write_tensors(checkpoint_path(self.out), tensors, metadata={"saelab": text})

    def restore(self) -> tuple[int, float]:
        """Load the checkpoint into the groups and generators after checking that it belongs to this
        run and agrees with itself (arm names, configs, the Adam step counts of every group); refuse
        rather than continue from a state that differs from the one the step claims."""
        path = checkpoint_path(self.out)
        if not path.exists():
            finished = all((self.dirs[n] / "summary.json").exists() for n in self.names)
            if finished:
                raise ValueError(f"cannot resume {self.out}: the run is finished and its checkpoint was dropped "
                                 f"(train with --keep-checkpoint to keep one)")
            raise ValueError(f"cannot resume {self.out}: no checkpoint at {path} (the run stopped before its first "
                             f"one), so nothing to resume; start it again with the same saelab train command, which "
                             f"replaces this unfinished run")
        meta = read_checkpoint_meta(self.out)
        tensors = runs.read_tensors(path)

        def refuse(why: str) -> ValueError:
            return ValueError(f"cannot resume {self.out}: the checkpoint {path.name} {why}; refusing to continue from an "
                              f"inconsistent state")

        if meta.get("arms") != self.names:
            raise refuse(f"is for arms {meta.get('arms')}, the run has {self.names}")
        if meta.get("configs") != [_config_hash(c) for c in self.cfgs]:
            raise refuse("was written for other configs than the run's config.json files (edited since?)")
        step = meta.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= self.cfgs[0].steps:
            raise refuse(f"has step {step!r}, not in 0..{self.cfgs[0].steps}")
        try:
            for i, g in enumerate(self.groups):
                pick = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
                g.model.load_state_dict(pick(f"g{i}.model."))
                g.adam.load_state_dict(pick(f"g{i}.adam."))
                g.tracker.load_state_dict(pick(f"g{i}.tracker."))
                for k, (n, st) in enumerate(zip(g.normalizers, meta["normalizers"][i], strict=True)):
                    n.load_state_dict(st)
                    n.load_tensors(pick(f"g{i}.norm{k}."))
            for i, gen in enumerate(self.gens):
                gen.set_state(tensors[f"gen{i}"])
        except (RuntimeError, KeyError, IndexError, TypeError, ValueError) as e:
            raise refuse(f"does not fit the run's arms ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        for i, g in enumerate(self.groups):  # one Adam update per step: the counts must equal the checkpoint's step
            if g.adam.step_count != step:
                raise refuse(f"says step {step} but group {i}'s Adam state has taken {g.adam.step_count} steps")
        return step, float(meta["wall"])

    def resume(self) -> int:
        """Restore the checkpoint and the arms' files up to its step; returns the step."""
        first, out = self.cfgs[0], self.out
        start, self.state.wall = self.restore()
        self.state.dropped = int(read_checkpoint_meta(out).get("dropped_rows", 0))
        for n in self.names:
            old = runs.load_run(self.dirs[n])
            self.state.rows[n] = [r for r in old.metrics.to_dict("records") if r["step"] <= start]
            self.state.events[n] = [e for e in old.events if e["step"] <= start]
            if old.latents:
                keep = old.latents["steps"] <= start
                self.state.fire_counts[n] = list(old.latents["fire_counts"][keep].to(torch.int64))
                self.state.fire_steps = old.latents["steps"][keep].tolist()
            # the files are flushed before the checkpoint is committed, so they reach its step's last
            # log row; fewer rows means they were replaced or cut since, and resume would drop them
            want = start if start == first.steps else start // first.log_interval * first.log_interval
            got = [r["step"] for r in self.state.rows[n]]
            if not got or got[-1] != want or self.state.fire_steps[-1:] != [want]:
                raise ValueError(f"cannot resume {out}: {self.dirs[n]}'s metrics/latents end at step "
                                 f"{got[-1] if got else None} but the checkpoint at step {start} needs them up to "
                                 f"step {want}; the run's files do not match its checkpoint")
        return start

    def start_fresh(self, single: bool, factor: str | None) -> None:
        """Write the arms' configs (and arms.json for several), drop an earlier run's summary and
        checkpoint, and record step 0."""
        if not single:
            fileio.write_json(self.out / "arms.json", {"arms": self.names, "factor": factor})
        made = identity(self.cfgs[0].data.source)  # what produced the runs: a rerun by other code or on other data retrains
        for n, c in zip(self.names, self.cfgs):
            self.dirs[n].mkdir(parents=True, exist_ok=True)
            (self.dirs[n] / "summary.json").unlink(missing_ok=True)  # an earlier run's here would say "finished"
            fileio.write_via(self.dirs[n] / "config.json", lambda tmp, c=c: Path(tmp).write_text(c.to_json(provenance=made) + "\n"))
        checkpoint_path(self.out).unlink(missing_ok=True)
        self.initial()

    def initial(self) -> None:
        """Step-0 metrics row, init diagnostics and the Task 5.1 norm numbers on the held-out set."""
        self.state.fire_steps.append(0)
        skipped = getattr(self.source, "skipped_rows", 0)  # data.skip_nonfinite: say how many rows training never sees
        for n in self.names if skipped else ():
            self.state.events[n].append({"step": 0, "kind": "skipped_rows", "rows": skipped, "why": "NaN or Inf",
                                    "source": getattr(self.source, "label", "")})
        if getattr(self.source, "exclude_first", 0):  # data.exclude_first_positions: rows never served, by position
            for n in self.names:
                src = self.source
                self.state.events[n].append({"step": 0, "kind": "dropped_rows", "where": "positions", "positions": src.exclude_first,
                                             "sequence_rows": src.sequence_rows, "rows": src.excluded_rows,
                                             "held_out_rows": src.excluded_eval_rows})
        if hasattr(self.source, "threshold"):  # data.drop_norm_above: the threshold, and the held-out rows left out
            for n in self.names:
                self.state.events[n].append({"step": 0, "kind": "dropped_rows", "where": "held-out set", "rows": self.source.eval_dropped,
                                        "threshold": self.source.threshold, "median_norm": self.source.median})
        for g in self.groups:
            ev = stack.evaluate(g, self.x_eval)
            X, _ = stack.normalize_batch(g, self.x_eval)
            with torch.no_grad():
                pre = g.model.preacts(X)
            truth = self.source.ground_truth
            for k, arm in enumerate(g.idx):
                n = self.names[arm]
                self.state.rows[n].extend(
                    stack.metric_rows(g, self.cfgs, ev, 0, truth.to(self.x_eval.device) if truth is not None else None)[k : k + 1]
                )
                self.state.fire_counts[n].append(ev["fire"][k].cpu())
                init = diagnose.init_diagnostics(self.x_eval.cpu(), pre[k].cpu())
                fileio.write_json(self.dirs[n] / "init.json", init)
                stats = g.normalizers[k].stats(self.x_eval)
                self.state.events[n].append({"step": 0, "kind": "norm_stats", "where": "held-out set", **stats})

    def step(self, step: int, x: Tensor, t0: float) -> None:
        """One optimizer step of every group on the batch ``x``; a non-finite loss or gradient
        checkpoints the last good state and raises RuntimeError naming the arm."""
        for gi, g in enumerate(self.groups):
            try:
                stack.step_group(g, self.cfgs, x, step)
            except stack.NonFiniteError as e:  # raised before the update: the state is still good
                self.state.events[self.names[e.arm]].append({"step": e.step, "kind": "nonfinite", "quantity": e.quantity})
                self.state.wall = time.perf_counter() - t0
                if gi == 0:  # later groups would already have taken this step's update
                    self.checkpoint(step)
                else:
                    for n in self.names:
                        _flush(self.dirs[n], n, self.state, self.names)
                raise RuntimeError(f"arm {self.names[e.arm]!r}: {e.quantity} is not finite at step {e.step}; "
                                   f"the last good state is checkpointed in {checkpoint_path(self.out)} "
                                   f"(saelab train --resume {shlex.quote(str(self.out))})") from None

    def after_step(self, done: int, bar: Any) -> None:
        """Schedule events, resampling and the metrics row for the step just completed."""
        for n in self.names:
            if done in self.sched_events[n]:
                self.state.events[n].append(self.sched_events[n][done])
        for a, (n, cfg) in enumerate(zip(self.names, self.cfgs)):
            if stack.resample_due(cfg, done):
                g, k = self.arm_of[a]
                self.state.events[n].append(stack.resample(g, self.cfgs, k, done, self.source, self.x_eval, self.gens[a]))
        if done % self.cfgs[0].log_interval and done != self.cfgs[0].steps:
            return
        for g in self.groups:
            for name, p in g.model.named_parameters():
                bad = ~torch.isfinite(p.detach()).flatten(1).all(1)
                if bad.any():
                    arm = self.names[g.idx[int(bad.nonzero()[0])]]
                    raise RuntimeError(f"arm {arm!r}: weights {name} became non-finite by step {done}; the last good "
                                       f"state is the latest checkpoint (saelab train --resume)")
        self.state.fire_steps.append(done)
        if self.state.dropped:  # training rows dropped by data.drop_norm_above since the last log (replaced by kept ones)
            for n in self.names:
                self.state.events[n].append({"step": done, "kind": "dropped_rows", "where": "training batches", "rows": self.state.dropped})
            self.state.dropped = 0
        postfix = {}
        for g in self.groups:
            ev = stack.evaluate(g, self.x_eval)
            for k, row in enumerate(stack.metric_rows(g, self.cfgs, ev, done, self.truth_dict)):
                n = self.names[g.idx[k]]
                self.state.rows[n].append(row)
                self.state.fire_counts[n].append(ev["fire"][k].cpu())
                postfix[n[:12]] = f"dead {row['dead_frac']:.0%} L0 {row['l0']:.1f}"
        if len(postfix) <= 3:
            bar.set_postfix(postfix, refresh=False)
        for n in self.names:
            _flush(self.dirs[n], n, self.state, self.names)

    def finish(self, steps_run: int) -> dict[str, runs.Run]:
        """Final weights, summary, autopsy and lifecycles per arm."""
        out: dict[str, runs.Run] = {}
        for g in self.groups:
            for k, arm in enumerate(g.idx):
                n, cfg = self.names[arm], self.cfgs[arm]
                run = runs.load_run(self.dirs[n])
                run.weights = g.model.arm_state(k)
                last = self.state.rows[n][-1]
                run.autopsy = diagnose.autopsy(run.metrics, run.events)
                life = diagnose.lifecycles(run.latents["steps"], run.latents["fire_counts"], run.events)
                # lifecycles.json is JSON: per-latent tensors become lists; alive [T, S] is left out
                # (it is latents.safetensors' fire_counts > 0)
                run.lifecycles = {key: v.tolist() if isinstance(v, Tensor) else v for key, v in life.items() if key != "alive"}
                run.summary = {
                    **last,
                    "arm": n,
                    "steps": cfg.steps,
                    "wall_seconds": self.state.wall,
                    "steps_per_second": steps_run / self.state.wall if self.state.wall > 0 else float("nan"),
                    "n_arms_in_lockstep": len(self.cfgs),
                    "source": self.source.describe(),
                    "n_collapses": len(run.autopsy.get("collapses", [])),
                    "saelab": provenance(),  # which saelab computed these numbers
                }
                run.save()
                out[n] = run
        return out


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM. ``step``: steps completed; ``saved``: the step of the
    checkpoint to resume from (None: there is none). ``str()`` is the message for the user."""

    def __init__(self, signum: int, out: Path, step: int, saved: int | None):
        super().__init__(signum, out, step, saved)
        self.signum, self.out, self.step, self.saved = signum, Path(out), step, saved

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        if self.saved is None:
            return f"interrupted by {name} at step {self.step} of {self.out}; no checkpoint was written yet, nothing to resume"
        return (f"interrupted by {name} at step {self.step}; checkpoint at step {self.saved} in {self.out.resolve()}; "
                f"resume with: saelab train --resume {shlex.quote(str(self.out))}")


def check_device(name: str) -> torch.device:
    """The torch device for ``device=name``, refusing one this torch build or machine lacks."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device={name!r}: {why} (torch {torch.__version__}); use --set device=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


def memory_estimate(cfgs: list[RunConfig]) -> dict[str, int]:
    """Rough peak bytes a training needs, by the config field that sets each part: the weights
    with their gradients and Adam moments (x2 for fused slabs and the resampling copies), one
    step's batch and [batch, d_sae] intermediates per arm, the held-out set with one evaluation
    chunk, and the synthetic source's feature directions. An upper estimate meant to catch
    sizes off by orders of magnitude, not to budget tightly. ``sae.d_in`` must be resolved."""
    c, k = cfgs[0], len(cfgs)
    item = stack.dtype_of(c.dtype).itemsize
    d_in, d_sae = c.sae.d_in, max(cfg.sae.d_sae for cfg in cfgs)
    parts = {
        "sae.d_sae": 8 * sum(cfg.sae.d_sae * d_in for cfg in cfgs) * item,
        "data.batch_size": k * c.data.batch_size * (8 * d_sae + 6 * d_in) * item
        + c.data.batch_size * (d_in * 4 + int(c.data.mean_active * 32)),
        "eval_rows": c.eval_rows * d_in * (4 + item) + k * min(c.eval_rows, stack.EVAL_CHUNK) * d_sae * 4 * item,
    }
    if c.data.source == "synthetic":
        parts["data.n_features"] = c.data.n_features * d_in * 4 * 2
    return parts


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None  # unknown: do not refuse


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**40 else f"{n / 2**40:,.1f} TiB"


def check_memory(cfgs: list[RunConfig], device: torch.device) -> None:
    """Refuse, naming the field that needs most of it, a training whose estimated memory
    (``memory_estimate``) exceeds what the device has free, before anything is allocated."""
    parts = memory_estimate(cfgs)
    total, free = sum(parts.values()), _available_bytes(device)
    if free is None or total <= free:
        return
    field_, need = max(parts.items(), key=lambda kv: kv[1])
    value = {"sae.d_sae": max(c.sae.d_sae for c in cfgs), "data.batch_size": cfgs[0].data.batch_size,
             "eval_rows": cfgs[0].eval_rows, "data.n_features": cfgs[0].data.n_features}[field_]
    raise ValueError(f"{field_}={value} needs about {_gib(need)} ({len(cfgs)} arm(s), d_in={cfgs[0].sae.d_in}; "
                     f"{_gib(total)} in all) but {device.type} has {_gib(free)} available; lower {field_}")


class _DeferInterrupt:
    """Hold a Ctrl-C (SIGINT) or a SIGTERM (``timeout``, a cluster preemption, a closed terminal)
    until the running step completes, so that the checkpoint written on interrupt is a consistent
    state; a second signal interrupts at once. Signal handlers belong to the main thread:
    elsewhere (or under a handler Python did not install) this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        try:
            if threading.current_thread() is threading.main_thread():
                for sig in self.SIGNALS:
                    if signal.getsignal(sig) is not None:
                        self._previous[sig] = signal.signal(sig, self._hold)
        except ValueError:  # not the main interpreter
            self.restore()

    def _hold(self, signum, frame) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending, self.signum = True, signum

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


