"""``saelab autopsy`` on a long training log: a W&B-style CSV of 3.3M rows (about 190 MB) with two
collapses; wall time and peak resident memory of the whole command, median of a few runs.

    .venv/bin/python benchmarks/autopsy_large.py [--runs 3] [--rows 3300000]

Issue 22 measured 400 s and 1.0 GB on such a file before collapse detection was made O(n log n)
(it compared every log row with every row of its window: a tenth of the log). Target: under 60 s
and 500 MB. Each run is a fresh process (``--one``) that runs the CLI in-process and reports its own
wall time and peak RSS (getrusage ru_maxrss), so runs do not share a peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_log(path: Path, rows: int, seed: int = 0) -> Path:
    """Steps 0, 10, ...; L0 and dead_features of a 16,384-latent SAE with two collapses (a dead
    jump at 40% of the run and an L0 fall at 75%), a warmup then constant LR, a decaying loss;
    columns named as a W&B export of a SAELens run names them. Written in blocks."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    run = "sae_gpt2_blocks.8"
    first = True
    block = 500_000
    for a in range(0, rows, block):
        i = np.arange(a, min(rows, a + block))
        frac = i / rows
        dead = np.where(frac < 0.4, 100, 4000) + rng.integers(0, 20, len(i))
        l0 = np.where(frac < 0.75, 60.0, 8.0) + rng.normal(0, 1, len(i))
        lr = np.minimum(frac / 0.05, 1.0) * 3e-4
        df = pd.DataFrame({"Step": i * 10, f"{run} - metrics/l0": l0.round(3), f"{run} - sparsity/dead_features": dead,
                           f"{run} - details/current_learning_rate": lr, f"{run} - losses/overall_loss": (1 / (1 + frac)).round(5),
                           f"{run} - losses/mse_loss": rng.random(len(i)).round(6),
                           f"{run} - metrics/explained_variance": rng.random(len(i)).round(6)})
        df.to_csv(path, mode="w" if first else "a", header=first, index=False)
        first = False
    return path


def one(log: str, out: str) -> None:
    from saelab import cli

    t0 = time.perf_counter()
    rc = cli.main(["autopsy", log, "--d-sae", "16384", "--out", out])
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    found = json.loads((Path(out) / "autopsy.json").read_text())["n_collapses"] if rc == 0 else None
    print(json.dumps({"rc": rc, "wall_s": wall, "rss_bytes": rss, "collapses": found}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=3_300_000)
    ap.add_argument("--one", nargs=2, metavar=("LOG", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(*args.one)
        return
    with tempfile.TemporaryDirectory() as tmp:
        log = make_log(Path(tmp) / "log.csv", args.rows)
        print(f"log: {args.rows:,} rows, {log.stat().st_size / 1e6:.0f} MB", flush=True)
        results = []
        for r in range(args.runs):
            p = subprocess.run([sys.executable, __file__, "--one", str(log), str(Path(tmp) / f"out{r}")],
                               capture_output=True, text=True, check=True)
            results.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    walls, rss = [r["wall_s"] for r in results], [r["rss_bytes"] for r in results]
    print(f"autopsy of {args.rows:,} rows: median {statistics.median(walls):.1f} s (runs {[round(w, 1) for w in walls]}), "
          f"peak RSS median {statistics.median(rss) / 2**20:.0f} MiB; collapses found {[r['collapses'] for r in results]}")


if __name__ == "__main__":
    main()
