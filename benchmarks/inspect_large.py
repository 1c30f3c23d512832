"""``saelab inspect`` on a large file: 100,000 x 384 float32 activations (147 MiB) and a
4,096-latent SAE in SAELens' format; wall time and peak resident memory, median of a few runs.

    .venv/bin/python benchmarks/inspect_large.py [--runs 3] [--rows 100000]

Each run is a fresh process (``--one``) that runs the CLI in-process and reports its own wall time
and peak RSS (getrusage ru_maxrss), so runs do not share a peak. A baseline run on 1,000 rows
gives the memory of the interpreter, torch and the SAE alone; the difference is what streaming
the file costs (one chunk of pre-activations, about 64 MB at 4,096 latents, and its temporaries).
The SAE has 5% of its latents planted dead (encoder bias -100), so the reasons are computed too.
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

D_IN, D_SAE = 384, 4096


def make_inputs(folder: Path, rows: int) -> tuple[Path, Path]:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    acts = folder / "acts.npy"
    mm = np.lib.format.open_memmap(acts, mode="w+", dtype=np.float32, shape=(rows, D_IN))
    offset = torch.randn(D_IN, generator=g)
    for i in range(0, rows, 10_000):  # written in blocks: the benchmark itself stays small
        mm[i:i + 10_000] = (torch.randn(min(10_000, rows - i), D_IN, generator=g) + offset).numpy()
    mm.flush()
    del mm
    sae = folder / "sae"
    sae.mkdir()
    W_enc = torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5
    b_enc = torch.zeros(D_SAE)
    b_enc[: D_SAE // 20] = -100.0
    save_file({"W_enc": W_enc, "b_enc": b_enc, "W_dec": torch.randn(D_SAE, D_IN, generator=g) / D_SAE**0.5,
               "b_dec": torch.zeros(D_IN)}, str(sae / "sae_weights.safetensors"))
    (sae / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE,
                                              "apply_b_dec_to_input": True}))
    return acts, sae


def one(sae: str, acts: str, rows: int, out: str) -> None:
    from saelab import cli
    t0 = time.perf_counter()
    rc = cli.main(["inspect", sae, "--data", f"file:{acts}", "--out", out, "--rows", str(rows)])
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    print(json.dumps({"rc": rc, "wall_s": wall, "peak_rss_mib": rss}))


def run_one(sae: Path, acts: Path, rows: int, out: Path) -> dict:
    res = subprocess.run([sys.executable, __file__, "--one", str(sae), str(acts), str(rows), str(out)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.one[0], args.one[1], int(args.one[2]), args.one[3])
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        acts, sae = make_inputs(tmp, args.rows)
        base = run_one(sae, acts, 1000, tmp / "base")
        runs = [run_one(sae, acts, 0, tmp / f"out{i}") for i in range(args.runs)]
        rec = json.loads((tmp / "out0" / "inspect.json").read_text())
    wall = statistics.median(r["wall_s"] for r in runs)
    rss = statistics.median(r["peak_rss_mib"] for r in runs)
    each = ", ".join(f"{r['wall_s']:.2f}" for r in runs)
    print(f"inspect {args.rows:,} x {D_IN} float32 ({args.rows * D_IN * 4 / 2**20:.0f} MiB), {D_SAE} latents, "
          f"{args.runs} runs: wall median {wall:.2f} s (runs {each}), "
          f"peak RSS median {rss:.0f} MiB; baseline (1,000 rows) {base['peak_rss_mib']:.0f} MiB, {base['wall_s']:.2f} s; "
          f"dead found {rec['n_dead']} (planted {D_SAE // 20})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
