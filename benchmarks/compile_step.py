"""Eager vs ``RunConfig.compile=True`` (torch.compile'd forward and losses) per training step.

    .venv/bin/python benchmarks/compile_step.py                      # every case below, 5 timed runs
    .venv/bin/python benchmarks/compile_step.py --cases relu-test1 jumprelu-pipeline --arms 8

Each case trains K arms (``--arms``, default 1) of one architecture at one of the seed's shapes,
through saelab.training.stack.step_group on in-memory batches: eager and compiled alternate within every
round, medians over ``--runs`` timed runs after a warm-up run (the warm-up round includes the
compilation, whose time is printed separately). Arms differ in LR and L1 coefficient as in
benchmarks/lockstep.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import alternate, median  # noqa: E402
from _stepping import arms, step_runner  # noqa: E402

from saelab import config  # noqa: E402
from saelab.data.sources import make_source, resolve  # noqa: E402

SHAPES = {"test1": {"sae.d_sae": 256, "data.batch_size": 64},  # the seed's Test 1
          "pipeline": {"sae.d_sae": 2048, "data.batch_size": 128}}  # the seed's failed run
ARCH = {"relu": {},
        "topk": {"sae.architecture": "topk", "sae.k": 32, "penalty.form": "none"},
        "batchtopk": {"sae.architecture": "batchtopk", "sae.k": 32, "penalty.form": "none"},
        "jumprelu": {"sae.architecture": "jumprelu"}}
CASES = [f"{a}-{s}" for a in ARCH for s in SHAPES]


def _runner(case: str, n_arms: int, compiled: bool, steps: int):
    arch, shape = case.split("-")
    base = config.seed_test1().with_overrides({**SHAPES[shape], **ARCH[arch], "compile": compiled})
    cfgs = arms(n_arms, base)
    src = make_source(cfgs[0])
    return step_runner([resolve(c, src) for c in cfgs], src, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    ap.add_argument("--arms", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=0, help="steps per timed run (0: 100 at test1, 20 at pipeline)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.arms} arm(s), "
          f"load average {os.getloadavg()}")
    for case in args.cases:
        steps = args.steps or (100 if case.endswith("test1") else 20)
        eager = _runner(case, args.arms, False, steps)
        compiled = _runner(case, args.arms, True, steps)
        t0 = time.perf_counter()
        compiled()  # compiles on its first step
        first = time.perf_counter() - t0
        timed = alternate({"eager": eager, "compiled": compiled}, args.runs)
        e, c = median(timed["eager"]), median(timed["compiled"])
        print(f"{case:>18}: eager {steps / e:7.1f} steps/s, compiled {steps / c:7.1f} steps/s, "
              f"speed-up {e / c:4.2f}x  (first compiled run incl. compilation {first:.1f} s; runs e/c: "
              + ", ".join(f"{steps / a:.0f}/{steps / b:.0f}" for a, b in zip(timed["eager"], timed["compiled"]))
              + ")")
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
