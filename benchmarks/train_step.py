"""Steps per second of saelab's own training step at the seed's two shapes.

    .venv/bin/python benchmarks/train_step.py            # both shapes, 5 timed runs each
    .venv/bin/python benchmarks/train_step.py --runs 9 --shapes pipeline

Shapes: ``pipeline`` is the seed's failed run (preset seed-pipeline: d_in 768, latent 2048, batch
128); ``test1`` is its minimal reproduction (preset seed-test1: 768, 256, batch 64). Each preset
trains one arm exactly as configured (its normalization, L1 form, LR schedule).

Three rates per shape, every one a median over ``--runs`` timed runs after one warm-up run, the
three measurements alternating within each round:
  step   saelab.training.stack.step_group on batches already in memory: forward, losses, backward, Adam,
         trackers (what train() does per step besides fetching the batch)
  data   SyntheticSource.batch alone (the synthetic data generation train() does per step)
  train  train() end to end, marginal rate: (N2 - N1) steps / (t(N2) - t(N1)) for two runs of N1
         and N2 = 2 N1 steps with one metrics row at the end, so start-up, the final evaluation
         and writing the run directory cancel out
The machine is shared: look at the load printed first, and rerun when it is high.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import alternate, median, step_flops  # noqa: E402
from _stepping import step_runner  # noqa: E402

from saelab import config
from saelab.data.sources import make_source, resolve  # noqa: E402
from saelab.training import train as T  # noqa: E402

SHAPES = {"pipeline": config.seed_pipeline, "test1": config.seed_test1}


def _runners(name: str, steps_per_run: int, e2e_steps: int) -> dict:
    cfg = SHAPES[name]()
    src = make_source(cfg)
    cfg = resolve(cfg, src)
    bs = cfg.data.batch_size
    step = step_runner([cfg], src, steps_per_run)
    first = cfg.schedule.warmup_steps

    def data() -> None:
        for s in range(steps_per_run):
            src.batch(first + s, bs)

    e2e = cfg.replace(steps=e2e_steps, log_interval=e2e_steps, resample={"strategy": "off"},
                      schedule={"warmup_steps": 0, "shape": "constant"})
    tmp = Path(tempfile.mkdtemp(prefix="saelab-bench-"))

    def train_pair() -> float:
        times = []
        for n in (e2e_steps, 2 * e2e_steps):
            t0 = time.perf_counter()
            T.train(e2e.replace(steps=n, log_interval=n), tmp / f"run{n}", progress=False, source=src)
            times.append(time.perf_counter() - t0)
        return times[1] - times[0]

    return {"step": step, "data": data, "train": train_pair}, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up run (>= 5)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-train", action="store_true", help="leave out the end-to-end train() rate")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    plan = {"pipeline": (40, 60), "test1": (200, 300)}  # steps per timed run, e2e N1
    for name in args.shapes:
        steps_per_run, n1 = plan[name]
        runners, cfg = _runners(name, steps_per_run, n1)
        timed = alternate({"step": runners["step"], "data": runners["data"]}, args.runs)
        # the end-to-end pair takes long; it gets its own runs (the pair's two lengths alternate)
        e2e = {"train": [float("nan")]} if args.skip_train else alternate({"train": runners["train"]}, args.runs)
        B, S, d = cfg.data.batch_size, cfg.sae.d_sae, cfg.sae.d_in
        step_rate = steps_per_run / median(timed["step"])
        data_ms = median(timed["data"]) / steps_per_run * 1e3
        train_rate = n1 / median(e2e["train"])
        gflops = step_flops(B, S, d) * step_rate / 1e9
        print(f"\n{name}: d_in {d}, latent {S}, batch {B} ({cfg.sae.architecture}, {cfg.penalty.form}, "
              f"normalize {cfg.normalize.mode})")
        print(f"  step   {step_rate:8.1f} steps/s  ({gflops:.1f} GFLOP/s of matmul work; runs: "
              + ", ".join(f"{steps_per_run / t:.1f}" for t in timed["step"]) + ")")
        print(f"  data   {data_ms:8.2f} ms per batch of {B} rows (SyntheticSource.batch)")
        print(f"  train  {train_rate:8.1f} steps/s  (train() end to end, marginal; runs: "
              + ", ".join(f"{n1 / t:.1f}" for t in e2e["train"]) + ")")
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
