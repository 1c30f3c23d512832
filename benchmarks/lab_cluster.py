"""`make lab`'s lab (quick profile, every phase) in this process and on a LocalCluster of 2
workers (`saelab lab --cluster local:2`), each into a fresh folder so that nothing is reused;
prints both wall times and their ratio (issue 13's target: <= 0.6 on the 2-core CPU).

    .venv/bin/python benchmarks/lab_cluster.py                     # quick: about 20 minutes in all
    .venv/bin/python benchmarks/lab_cluster.py --profile smoke     # a minute: the same comparison, tiny

Both runs are the same command but for --cluster; the in-process one runs first. Real-activation
caches (phase 06's MiniLM arm) are built before either is timed, so neither pays for them. The
load average is printed before and after each, since other processes on the machine slow either one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lab(out: Path, profile: str, only: str, cluster: str | None) -> tuple[float, int, str]:
    cmd = [sys.executable, "-m", "saelab.cli", "lab", "--profile", profile, "--out", str(out)]
    cmd += ["--only", only] if only else []
    cmd += ["--cluster", cluster] if cluster else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stderr.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("jobs:")]
    summary = next((ln for ln in reversed(lines) if " jobs: " in ln), "")
    if p.returncode != 0:
        print("\n".join(lines[-15:]), file=sys.stderr)
    return wall, p.returncode, summary


def warm_caches(profile: str) -> None:
    """Build every activation cache a phase's arms read (once; the labs then find them)."""
    from saelab.data.sources import make_source
    from saelab.lab.causes import PHASES
    from saelab.lab.phases import build

    seen = set()
    for stem in PHASES:
        for cfg in build(stem, profile).plan.arms.values():
            if cfg.data.source != "synthetic" and repr(cfg.data) not in seen:
                seen.add(repr(cfg.data))
                make_source(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default="", help="phase prefixes, e.g. 01,03 (default: every phase)")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs; profile {args.profile}; phases {args.only or 'all'}")
    warm_caches(args.profile)
    walls = {}
    with tempfile.TemporaryDirectory(prefix="saelab-lab-cluster-") as tmp:
        for label, cluster in (("in-process", None), (f"local:{args.workers}", f"local:{args.workers}")):
            before = os.getloadavg()
            wall, rc, summary = lab(Path(tmp) / label.replace(":", "_"), args.profile, args.only, cluster)
            walls[label] = wall
            print(f"  {label:<12} {wall:8.1f} s  exit {rc}  load average {before[0]:.1f} -> {os.getloadavg()[0]:.1f}  "
                  f"({summary.strip()})", flush=True)
    a, b = walls.values()
    print(f"ratio local:{args.workers} / in-process: {b / a:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
