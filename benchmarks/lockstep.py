"""What K arms in lockstep cost next to one arm, at the seed's Test 1 shapes (d_in 768, latent 256,
batch 64; preset seed-test1).

    .venv/bin/python benchmarks/lockstep.py               # K = 8, 5 timed runs
    .venv/bin/python benchmarks/lockstep.py --arms 4 --runs 9

The K arms differ in learning rate and L1 coefficient (so Adam cannot treat them as one, and every
arm keeps its own numbers); they share the SAE shape and so train as one stacked group. Reported,
each a median over ``--runs`` timed runs after a warm-up, the two configurations alternating:
  step   saelab.training.stack.step_group on in-memory batches: K-arm group vs one-arm group
  train  train() end to end (data generation, metrics every log_interval=50 steps on 8192 held-out
         rows, run directories) as a marginal rate: the difference of N and 2N steps
  floor  the K arms' five matrix products (torch.bmm) and one fused Adam pass alone, in the same
         rounds: the least any stacked step can cost, as a ratio to K one-arm steps
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
from _stepping import arms, step_runner  # noqa: E402

from saelab.data.sources import make_source, resolve  # noqa: E402
from saelab.training import train as T  # noqa: E402


def _floor(K: int, B: int, S: int, d: int, steps: int):
    """What no stacked trainer can skip: the step's five products (_harness.step_flops) as torch.bmm
    over K arms with their own weights, and one fused Adam pass over K arms' parameters."""
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    x = r(B, d).expand(K, B, d)  # arms share the batch
    W_enc, W_dec, codes, g_xhat = r(K, S, d), r(K, S, d), r(K, B, S), r(K, B, d)
    params = [W_enc, W_dec, r(K, S), r(K, d)]
    grads, m, v = ([torch.randn_like(p) for p in params] for _ in range(3))
    v = [t.abs() for t in v]
    t = torch.tensor(1.0)

    def run() -> None:
        for _ in range(steps):
            torch.bmm(x, W_enc.transpose(1, 2))
            torch.bmm(codes, W_dec)
            torch.bmm(codes.transpose(1, 2), g_xhat)
            torch.bmm(g_xhat, W_dec.transpose(1, 2))
            torch.bmm(codes.transpose(1, 2), x)
            torch._fused_adam_(params, grads, m, v, [], [t] * 4, lr=1e-9, beta1=0.9, beta2=0.999,
                               weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100, help="steps per timed step-level run")
    ap.add_argument("--e2e-steps", type=int, default=200, help="N of the end-to-end pair (N and 2N steps)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-train", action="store_true", help="only the step-level comparison")
    ap.add_argument("--compile", action="store_true",
                    help="also time RunConfig.compile=True (torch.compile'd forward and losses) at the step level")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")

    many = {f"arm{i}": c for i, c in enumerate(arms(args.arms))}
    one = dict(list(many.items())[:1])
    src = make_source(next(iter(many.values())))
    bs = next(iter(many.values())).data.batch_size
    runners = {}
    modes = ("eager", "compiled") if args.compile else ("eager",)
    for mode in modes:
        for n, named in ((1, one), (args.arms, many)):
            cfgs = [resolve(c, src).replace(compile=mode == "compiled") for c in named.values()]
            runners[(mode, n)] = step_runner(cfgs, src, args.steps)
    cfg0 = resolve(next(iter(many.values())), src)
    floor_runners = {n: _floor(n, bs, cfg0.sae.d_sae, cfg0.sae.d_in, args.steps) for n in (1, args.arms)}
    timed = alternate(runners | {("floor", n): r for n, r in floor_runners.items()}, args.runs)
    print(f"\nstep level ({args.steps} steps per run)")
    for (mode, n), ts in timed.items():
        if mode == "floor":
            continue
        print(f"  {mode:>8} {n} arm{'s' if n > 1 else ' '}: {args.steps / median(ts):8.1f} steps/s  (runs: "
              + ", ".join(f"{args.steps / t:.1f}" for t in ts) + ")")
    for mode in modes:
        t1, tk = median(timed[(mode, 1)]), median(timed[(mode, args.arms)])
        print(f"  {mode}: cost ratio t({args.arms} arms) / ({args.arms} x t(1 arm)) = {tk / (args.arms * t1):.3f}")
    t1, fk = median(timed[("eager", 1)]), median(timed[("floor", args.arms)])
    print(f"  floor: the {args.arms} arms' five products (torch.bmm) and their fused Adam alone take "
          f"{fk / args.steps * 1e3:.2f} ms a step = {fk / (args.arms * t1):.3f} x {args.arms} one-arm steps "
          f"(one arm's: {median(timed[('floor', 1)]) / args.steps * 1e3:.2f} ms of "
          f"{t1 / args.steps * 1e3:.2f} ms)")
    if args.compile:
        t1, tk = median(timed[("eager", 1)]), median(timed[("compiled", args.arms)])
        print(f"  compiled {args.arms} arms against eager 1 arm: {tk / (args.arms * t1):.3f}")

    if args.skip_train:
        return
    tmp = Path(tempfile.mkdtemp(prefix="saelab-lockstep-"))
    n = args.e2e_steps

    def pair(named: dict, label: str):
        def run() -> None:
            times = []
            for steps in (n, 2 * n):
                cfgs = {k: c.replace(steps=steps, log_interval=min(c.log_interval, steps)) for k, c in named.items()}
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
