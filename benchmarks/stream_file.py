"""Stream a 2 GB activation file through training and report peak resident memory and rows/s.

    .venv/bin/python benchmarks/stream_file.py                 # 2 GB float32 .npy, d_in 768
    .venv/bin/python benchmarks/stream_file.py --format safetensors --mode stream

The file is generated in a temporary folder (deleted at the end). Each measurement runs in a
fresh child process, and the file is dropped from the page cache first (posix_fadvise
DONTNEED) unless --warm, so the epoch reads from disk. Modes: ``stream`` pulls batches from
saelab.data.sources.make_source (data.source=file:<path>) and does one small matmul per batch;
``train`` runs saelab.training.train.train (one ReLU SAE arm) on the same source. Peak memory is the
child's ru_maxrss and /proc/self/status VmHWM; the file is generated in another child so the
parent stays small (Linux carries ru_maxrss across fork+exec). "baseline" is VmRSS after
importing torch and saelab.config, before the source opens. Results are printed and written to
benchmarks/results/stream_file-<format>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def generate(path: Path, gb: float, d_in: int, fmt: str, seed: int = 0) -> int:
    """Write ~gb GB of float32 rows [rows, d_in] in 64 MB blocks (never the whole array in
    memory). Content: four random blocks of sparse codes times 512 random directions plus noise,
    written in turn with a different scale each time (the content hardly matters for streaming,
    and generating 2 GB of fresh random rows would dominate the run). Returns the row count."""
    rows = int(gb * 2**30) // (4 * d_in)
    block = max(1, (64 * 2**20) // (4 * d_in))
    rng = np.random.default_rng(seed)
    dirs = (rng.standard_normal((512, d_in)) / np.sqrt(d_in)).astype(np.float32)
    pool = []
    for _ in range(4):
        codes = rng.exponential(1.0, (block, 512)).astype(np.float32) * (rng.random((block, 512)) < 0.03)
        pool.append((codes @ dirs + 0.05 * rng.standard_normal((block, d_in), dtype=np.float32)).astype(np.float32))
    with open(path, "wb") as f:
        if fmt == "npy":
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, d_in)})
        else:
            header = json.dumps({"activations": {"dtype": "F32", "shape": [rows, d_in], "data_offsets": [0, rows * d_in * 4]}}).encode()
            header += b" " * (-len(header) % 8)
            f.write(len(header).to_bytes(8, "little") + header)
        for i, start in enumerate(range(0, rows, block)):
            n = min(block, rows - start)
            f.write((pool[i % 4][:n] * np.float32(1 + 0.01 * i)).astype(np.float32, copy=False).tobytes())
        f.flush()
        os.fsync(f.fileno())
    return rows


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def child(args: argparse.Namespace) -> dict:
    """One measurement (runs in its own process)."""
    import torch

    from saelab.config import RunConfig

    baseline = status_mb("VmRSS")
    cfg = RunConfig().with_overrides([
        f"data.source=file:{args.path}", f"data.batch_size={args.batch_size}", f"sae.d_sae={args.d_sae}",
        f"steps={args.steps}", f"log_interval={max(1, args.steps // 4)}", "eval_rows=8192", "schedule.warmup_steps=0",
    ])
    t0 = time.perf_counter()
    if args.mode == "train":
        from saelab.training.train import train

        with tempfile.TemporaryDirectory() as out:
            train(cfg, Path(out) / "run", progress=False)
    else:
        try:
            from saelab.data.sources import make_source
        except ImportError:
            from saelab.data.files import make_file_source as make_source
        source = make_source(cfg)
        w = torch.randn(args.d_in, args.d_sae) / args.d_in**0.5
        total = 0.0
        for step in range(args.steps):
            x = source.batch(step, args.batch_size)
            total += float(torch.relu(x @ w).mean())  # a small matmul per batch, as training would do
    seconds = time.perf_counter() - t0
    return {
        "mode": args.mode,
        "format": args.format,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "d_in": args.d_in,
        "rows_streamed": args.steps * args.batch_size,
        "seconds": round(seconds, 2),
        "rows_per_s": round(args.steps * args.batch_size / seconds),
        "mb_per_s": round(args.steps * args.batch_size * args.d_in * 4 / seconds / 2**20),
        "baseline_rss_mb": round(baseline),
        "peak_rss_mb_ru_maxrss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mb_vmhwm": round(status_mb("VmHWM")),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=2.0)
    p.add_argument("--d-in", type=int, default=768)
    p.add_argument("--format", choices=["npy", "safetensors"], default="npy")
    p.add_argument("--mode", choices=["stream", "train", "both"], default="both")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--d-sae", type=int, default=256)
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training rows")
    p.add_argument("--warm", action="store_true", help="keep the file in the page cache")
    p.add_argument("--dir", default=None, help="where to write the temporary file (default: system temp)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.generate:
        print(generate(Path(args.path), args.gb, args.d_in, args.format))
        return

    results = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / f"acts.{args.format}"
        t0 = time.perf_counter()
        # in a child too: ru_maxrss survives fork+exec, so a big parent would inflate the children's figure
        gen = [
            sys.executable,
            __file__,
            "--generate",
            "--path",
            str(path),
            "--gb",
            str(args.gb),
            "--d-in",
            str(args.d_in),
            "--format",
            args.format,
        ]
        rows = int(subprocess.run(gen, check=True, stdout=subprocess.PIPE, text=True).stdout.split()[-1])
        print(
            f"generated {path.stat().st_size / 2**30:.2f} GiB ({rows} x {args.d_in} float32) in {time.perf_counter() - t0:.0f}s", flush=True
        )
        steps = max(1, int(args.epochs * (rows - 8192) / args.batch_size))
        for mode in (["stream", "train"] if args.mode == "both" else [args.mode]):
            if not args.warm:
                drop_page_cache(path)
            cmd = [sys.executable, __file__, "--child", "--mode", mode, "--format", args.format, "--path", str(path),
                   "--steps", str(steps), "--batch-size", str(args.batch_size), "--d-sae", str(args.d_sae), "--d-in", str(args.d_in)]
            env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
            result = {"file_gib": round(path.stat().st_size / 2**30, 2), "cold": not args.warm, **json.loads(out.strip().splitlines()[-1])}
            results.append(result)
            print(json.dumps(result), flush=True)
    dest = ROOT / "benchmarks" / "results" / f"stream_file-{args.format}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=2) + "\n")
    worst = max(r["peak_rss_mb_vmhwm"] for r in results)
    print(f"peak resident memory {worst} MB ({'under' if worst < 1024 else 'OVER'} 1 GB)")


if __name__ == "__main__":
    main()
