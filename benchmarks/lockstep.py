"""What K arms in lockstep cost next to one arm, at the seed's Test 1 shapes (d_in 768, latent 256,
batch 64; preset seed-test1).

    .venv/bin/python benchmarks/lockstep.py               # K = 8, 5 timed runs
    .venv/bin/python benchmarks/lockstep.py --arms 4 --runs 9

The K arms differ in learning rate and L1 coefficient (so Adam cannot treat them as one, and every
arm keeps its own numbers); they share the SAE shape and so train as one stacked group. Reported,
each a median over ``--runs`` timed runs after a warm-up, the two configurations alternating:
  step   saelab.train._step_group on in-memory batches: K-arm group vs one-arm group
  train  train() end to end (data generation, metrics every log_interval=50 steps on 8192 held-out
         rows, run directories) as a marginal rate: the difference of N and 2N steps
cost ratio = t(K arms) / (K * t(one arm)); the target is <= 0.5 at K = 8.
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
from _harness import alternate, median  # noqa: E402

from saelab import config, train as T  # noqa: E402
from saelab.data import make_source, resolve  # noqa: E402


def arms(n: int) -> dict[str, config.RunConfig]:
    base = config.seed_test1()
    return {f"arm{i}": base.with_overrides({"optim.lr": base.optim.lr * (0.5 + 0.25 * i),
                                            "penalty.alpha": base.penalty.alpha * (1 + 0.5 * i)})
            for i in range(n)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100, help="steps per timed step-level run")
    ap.add_argument("--e2e-steps", type=int, default=200, help="N of the end-to-end pair (N and 2N steps)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-train", action="store_true", help="only the step-level comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")

    many = arms(args.arms)
    one = dict(list(many.items())[:1])
    src = make_source(next(iter(many.values())))
    bs = next(iter(many.values())).data.batch_size
    batches = [src.batch(s, bs) for s in range(16)]
    runners = {}
    for label, named in (("1 arm", one), (f"{args.arms} arms", many)):
        cfgs = [resolve(c, src) for c in named.values()]
        (group,) = T._build_groups(cfgs, src, torch.device("cpu"))
        assert len(group.idx) == len(cfgs), "the arms must stack into one group"
        state = {"step": cfgs[0].schedule.warmup_steps}

        def run(group=group, cfgs=cfgs, state=state) -> None:
            for _ in range(args.steps):
                s = state["step"]
                T._step_group(group, cfgs, batches[s % len(batches)], s)
                state["step"] = s + 1

        runners[label] = run
    timed = alternate(runners, args.runs)
    t1, tk = median(timed["1 arm"]), median(timed[f"{args.arms} arms"])
    print(f"\nstep level ({args.steps} steps per run)")
    for label, ts in timed.items():
        print(f"  {label:>8}: {args.steps / median(ts):8.1f} steps/s  (runs: "
              + ", ".join(f"{args.steps / t:.1f}" for t in ts) + ")")
    print(f"  cost ratio t({args.arms} arms) / ({args.arms} x t(1 arm)) = {tk / (args.arms * t1):.3f}")

    if args.skip_train:
        return
    tmp = Path(tempfile.mkdtemp(prefix="saelab-lockstep-"))
    n = args.e2e_steps

    def pair(named: dict, label: str):
        def run() -> None:
            times = []
            for steps in (n, 2 * n):
                cfgs = {k: c.replace(steps=steps) for k, c in named.items()}
                t0 = time.perf_counter()
                T.train(cfgs, tmp / f"{label}-{steps}", progress=False, source=src)
                times.append(time.perf_counter() - t0)
            pair_times[label].append(times[1] - times[0])
        return run

    pair_times: dict[str, list[float]] = {"1 arm": [], "K arms": []}
    alternate({"1 arm": pair(one, "1 arm"), "K arms": pair(many, "K arms")}, args.runs)
    e1, ek = median(pair_times["1 arm"][1:]), median(pair_times["K arms"][1:])
    print(f"\ntrain() end to end, marginal over {n} steps (log_interval 50, eval_rows 8192)")
    print(f"  {'1 arm':>8}: {n / e1:8.1f} steps/s")
    print(f"  {str(args.arms) + ' arms':>8}: {n / ek:8.1f} steps/s")
    print(f"  cost ratio = {ek / (args.arms * e1):.3f}")
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
