"""The CUDA path and the full profile's training time on a GPU.

Two measurements, written as JSON (``--json``) and printed:

1. **Parity**: one smoke-size lockstep job of phase 02 trained on the CPU and on CUDA from the same
   config and seed; the largest absolute difference of every metrics column at every log step
   (float32 kernels differ in summation order, so the numbers agree closely, not bit for bit).
2. **Full profile**: the lab planned at ``--profile full`` for one replicate (``seeds=[0]``) with
   every arm on CUDA (``overrides={"device": "cuda"}``), then every first-wave job trained in turn
   (phase 06 waits for the others' verdicts and is left out), each job's wall time and steps/s, until
   ``--seconds`` is spent; jobs not reached are listed with their steps and arms.

Only the training path is needed (no papermill, plotly or Dask): this runs on a machine with a GPU
and PyTorch, with saelab on the path::

    PYTHONPATH=. python3 benchmarks/gpu_full_profile.py --json gpu.json --seconds 420
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from saelab.execution.jobs import load_job, run_job  # noqa: E402
from saelab.lab.plan import plan_lab  # noqa: E402


def parity(tmp: Path) -> dict:
    """Largest |cpu - cuda| per metrics column of phase 02's smoke job (one replicate)."""
    out = {}
    runs = {}
    for device in ("cpu", "cuda"):
        plan = plan_lab("smoke", ["02_lr_warmup"], {"overrides": {"device": device}, "seeds": [0]}, tmp / device)
        (job,) = plan.jobs("02_lr_warmup")
        run_job(job, progress=False)
        runs[device] = load_job(job)
    for arm, cpu in runs["cpu"].items():
        gpu = runs["cuda"][arm]
        cols = [c for c in cpu.metrics.columns if c in gpu.metrics.columns and cpu.metrics[c].dtype.kind == "f"]
        diff = {c: float((cpu.metrics[c] - gpu.metrics[c]).abs().max()) for c in cols}
        out[arm] = {"max_abs_diff": max(diff.values()), "worst_column": max(diff, key=diff.get),
                    "final": {c: [float(cpu.metrics[c].iloc[-1]), float(gpu.metrics[c].iloc[-1])]
                              for c in ("dead_frac", "l0", "fvu") if c in cols}}
    return out


def full(tmp: Path, budget: float) -> dict:
    plan = plan_lab("full", [s for s in ("00_reproduce", "01_l1_penalty", "02_lr_warmup", "03_resampling",
                                         "04_normalization", "05_reanimation")],
                    {"overrides": {"device": "cuda"}, "seeds": [0]}, tmp / "full")
    jobs = [j for stem in plan.first for j in plan.jobs(stem)]
    done, left, t_start = [], [], time.perf_counter()
    for job in jobs:
        steps = next(iter(job.arms.values())).steps
        if time.perf_counter() - t_start > budget:
            left.append({"job": job.name, "arms": len(job.arms), "steps": steps})
            continue
        t0 = time.perf_counter()
        run_job(job, progress=False)
        wall = time.perf_counter() - t0
        summary = next(iter(load_job(job).values())).summary
        done.append({"job": job.name, "arms": len(job.arms), "steps": steps, "wall_s": round(wall, 1),
                     "steps_per_s": round(summary.get("steps_per_second", float("nan")), 1),
                     "dead_final_first_arm": summary.get("dead_frac")})
        print(f"{job.name}: {len(job.arms)} arms x {steps} steps in {wall:.1f} s", flush=True)
    return {"jobs_run": done, "jobs_not_reached": left, "wall_s": round(time.perf_counter() - t_start, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--seconds", type=float, default=420, help="time budget for the full-profile jobs")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_full_profile: no CUDA device visible", file=sys.stderr)
        return 2
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        result["parity"] = parity(Path(d))
        result["parity_wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(result["parity"], indent=1), flush=True)
        result["full"] = full(Path(d), args.seconds)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
