"""The lab's training jobs: one lockstep group of one replicate of one phase, with its configs and
its run directory. A job is planned from a phase's arms (``PhaseRun.jobs``), runs anywhere (in this
process, or on a Dask worker: ``saelab.execution.cluster``) and is resumable: ``run_job`` never retrains a
finished job and continues a half-finished one from its checkpoint. The notebooks only read the
runs the jobs wrote, and train what is missing through the same ``run_job``.

What a job's run directory holds decides what ``run_job`` does (``job_state``)::

    done       every arm has its summary.json and the config the job plans: load it
    resumable  the checkpoint is for these arms and configs: continue from its step
    partial    the job's own training, stopped before its first checkpoint: train afresh
    new        nothing there yet
    conflict   another training (other arms or configs): train afresh over it
    stale      this training, made by another saelab (version or commit), torch or numpy, or on data
               that has changed since (each run's config.json records saelab.training.identity): train afresh
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from saelab import fileio
from saelab.config import RunConfig
from saelab.training import runs
from saelab.training import train as training
from saelab.training.identity import differences, identity
from saelab.version import KEY

State = Literal["done", "resumable", "partial", "new", "conflict", "stale"]
WORKER_THREADS_ENV = "SAELAB_WORKER_THREADS"  # torch threads a cluster worker may use (saelab.execution.cluster sets it)


@dataclass(frozen=True, eq=False)
class Job:
    """One lockstep group of one replicate of one phase."""

    name: str  # "01_l1_penalty/seed0/group1": unique in a lab; the path of ``out`` under the lab's runs/
    arms: Mapping[str, RunConfig]  # arm name -> its config, in the phase's order (sae.d_in may be 0: from the source)
    out: Path  # the group's run directory (arms.json, one folder per arm, the checkpoint while unfinished)
    factor: str  # what the arms vary (arms.json "factor")
    threads: int = 0  # torch intra-op threads while training (the profile's; 0: the worker's or torch's default)

    @property
    def cost(self) -> float:
        """Rough work of the job (steps x arms x batch x latents x width), to start the longest first."""
        c = next(iter(self.arms.values()))
        return float(c.steps * c.data.batch_size * sum(a.sae.d_sae * max(a.sae.d_in, 1) for a in self.arms.values()))


def _same(saved: RunConfig, planned: RunConfig) -> bool:
    """``saved`` (a run's config.json, sae.d_in resolved) is the training ``planned`` asks for."""
    if planned.sae.d_in == 0:
        planned = dataclasses.replace(planned, sae=dataclasses.replace(planned.sae, d_in=saved.sae.d_in))
    return saved == planned


def stale_reason(job: Job) -> str:
    """Why the runs in ``job.out`` are not what this code computes on this data ("" when they are):
    what differs between their recorded identity and this one (saelab.training.identity)."""
    now = identity(next(iter(job.arms.values())).data.source)
    found: list[str] = []
    for name in job.arms:
        try:
            saved = fileio.read_json(Path(job.out) / name / "config.json").get(KEY)
        except (ValueError, AttributeError):
            saved = None
        found += [d for d in differences(saved, now) if d not in found]
    return "; ".join(found)


def job_state(job: Job) -> State:
    """What ``job.out`` holds for this job (the module docstring lists the states)."""
    state = _config_state(job)
    return "stale" if state in ("done", "resumable") and stale_reason(job) else state


def _config_state(job: Job) -> State:
    """``job_state`` from the arms and their configs alone."""
    out = Path(job.out)
    if not out.is_dir() or not any(p.name != runs.LOCK_NAME for p in out.iterdir()):
        return "new"
    if not (out / "arms.json").exists():
        return "conflict"
    try:
        listed = fileio.read_json(out / "arms.json")
    except ValueError:
        return "conflict"
    if not isinstance(listed, dict) or listed.get("arms") != list(job.arms):
        return "conflict"
    complete = True
    for name, cfg in job.arms.items():
        if not (out / name / "config.json").exists():
            return "partial"  # stopped while the arms' folders were being laid out
        try:
            saved = runs.read_config(out / name / "config.json")
        except ValueError:
            return "conflict"
        if not _same(saved, cfg):
            return "conflict"
        complete &= (out / name / "summary.json").exists()
    if complete:
        return "done"
    if training.checkpoint_path(out).exists():
        try:
            meta = training.read_checkpoint_meta(out)
        except ValueError:
            return "partial"
        if meta.get("arms") == list(job.arms):
            return "resumable"
    return "partial"


def run_job(job: Job, progress: bool = False, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Bring ``job`` to done: nothing for a finished job, resume from the checkpoint for a
    half-finished one, else train it. Torch's intra-op threads are set to ``job.threads`` (or, on a
    cluster worker, to $SAELAB_WORKER_THREADS) while training and restored after. Returns
    {"name", "state" (before), "from_step", "wall_s", "pid" (the process that ran it), "stale" (why a
    stale job was retrained)}; a training error is raised."""
    import torch

    state = job_state(job)
    record = {"name": job.name, "state": state, "from_step": None, "wall_s": 0.0, "pid": os.getpid(),
              "stale": stale_reason(job) if state == "stale" else ""}
    if state == "done":
        return record
    threads = job.threads or int(os.environ.get(WORKER_THREADS_ENV, "0") or 0)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    _use_own_gpu(next(iter(job.arms.values())).device)
    t0 = time.perf_counter()
    try:
        if state == "resumable":
            record["from_step"] = training.read_checkpoint_meta(job.out)["step"]
            training.train(None, job.out, resume=True, progress=progress, on_step=on_step)
        else:
            training.train(dict(job.arms), job.out, progress=progress, factor=job.factor, on_step=on_step)
    finally:
        torch.set_num_threads(before)
    record["wall_s"] = round(time.perf_counter() - t0, 3)
    return record


def _use_own_gpu(device: str) -> None:
    """On a Dask worker of a LocalCluster (workers named 0, 1, ...), ``device=cuda`` means the
    worker's own GPU: worker i takes GPU i mod the GPUs visible. Elsewhere (a worker started per GPU
    with CUDA_VISIBLE_DEVICES, a SLURM job with one GPU, this process) "cuda" is the first visible one."""
    if device != "cuda":
        return
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return
    import torch

    if isinstance(name, int) and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        torch.cuda.set_device(name % torch.cuda.device_count())


def load_job(job: Job) -> dict[str, runs.Run]:
    """The runs of a finished job, arm name -> Run."""
    return runs.load_arms(job.out)


def phase_dir_state(run_dir: Path, jobs: list[Job]) -> Literal["empty", "ours", "other"]:
    """Whether a phase's folder can be continued in place by ``jobs``: "ours" when some job has
    started there and nothing in it is another training (every group folder, every arms.json,
    belongs to a job and holds that job's arms and configs); "other" when it holds anything else;
    "empty" when there is nothing (or no folder)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return "empty"
    if not jobs:
        return "other"
    outs = {Path(j.out).resolve() for j in jobs}
    if any(p.parent.resolve() not in outs for p in run_dir.rglob("arms.json")):
        return "other"
    states = [job_state(j) for j in jobs]
    if {"conflict", "stale"} & set(states) or all(s == "new" for s in states):
        return "other"
    return "ours"
