"""Why did AuxK leave a TopK base with more dead latents? TopK k=2 on 2,048 latents, trained on a
file of activations from a generator of our own (not saelab's synthetic source): the base, AuxK at
the issue's setting (coefficient 1/32, k_aux 256) and AuxK variants that each change one thing,
over replicates. Each arm's dead fraction is counted twice: on the lab's quick budget (1,024
held-out rows) and on a large streamed held-out set (--eval-rows, default 131,072 rows), with the
detection floor of each count.

    .venv/bin/python benchmarks/auxk_topk.py [--steps 1000] [--seeds 0 1 2] [--eval-rows 131072] [--out DIR]

The generator: n_features unit directions in d_in dimensions, each row has a Poisson number of
features (mean ``active``) drawn with Zipf-like frequencies (exponent 1) and Exp(1) magnitudes,
plus Gaussian noise at 5% of the row norm.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from saelab import config  # noqa: E402
from saelab.interop.foreign import load_checkpoint  # noqa: E402
from saelab.training import train  # noqa: E402

LAB_EVAL_ROWS = 1024  # the quick profile's held-out rows


def generate(path: Path, rows: int, d_in: int, n_features: int, active: float, seed: int) -> None:
    """Write ``rows`` activations [rows, d_in] float32 to an .npy file, in chunks."""
    rng = np.random.default_rng(1234)  # the dictionary is shared by every file
    dirs = rng.standard_normal((n_features, d_in)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    p = 1.0 / np.arange(1, n_features + 1)
    p = p / p.sum()
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, d_in))
    for start in range(0, rows, 8192):
        n = min(8192, rows - start)
        counts = rng.poisson(active, n)
        codes = np.zeros((n, n_features), dtype=np.float32)
        for i, c in enumerate(counts):
            if c:
                idx = rng.choice(n_features, size=min(c, n_features), replace=False, p=p)
                codes[i, idx] = rng.exponential(1.0, idx.size)
        x = codes @ dirs
        norm = np.linalg.norm(x, axis=1, keepdims=True) + 1e-3
        x += 0.05 * norm * rng.standard_normal(x.shape).astype(np.float32) / math.sqrt(d_in)
        out[start:start + n] = x
    out.flush()
    del out


def floor_rate(rows: int) -> float:
    """The firing rate below which a latent that is alive would be called dead (no fire in ``rows``
    rows) with probability > 1%: (1 - r)^rows > 0.01 <=> r < -ln(0.01) / rows (Poisson)."""
    return math.log(100) / rows


def fire_counts(run_dir: Path, held_out: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Times each latent fires on the held-out rows, streamed in chunks, and its largest
    pre-activation there (a dead latent whose pre-activations are all <= 0 gets no AuxK gradient:
    AuxK ReLUs the dead latents' pre-activations, as OpenAI's reference does)."""
    ck = load_checkpoint(run_dir)
    counts = torch.zeros(ck.d_sae, dtype=torch.int64)
    top = torch.full((ck.d_sae,), -float("inf"))
    for s in range(0, held_out.shape[0], chunk):
        pre, acts = ck.encode(torch.from_numpy(np.ascontiguousarray(held_out[s:s + chunk])))
        counts += (acts > 0).sum(0)
        top = torch.maximum(top, pre.amax(0))
    return counts.numpy(), top.numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-rows", type=int, default=131_072)
    ap.add_argument("--d-in", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="auxk_topk_"))
    out.mkdir(parents=True, exist_ok=True)
    batch = 64
    train_file, held_file = out / "train.npy", out / "heldout.npy"
    if not train_file.exists():
        generate(train_file, batch * args.steps + 4 * LAB_EVAL_ROWS, args.d_in, 4096, 8.0, seed=1)
        generate(held_file, args.eval_rows, args.d_in, 4096, 8.0, seed=2)
    held = np.load(held_file, mmap_mode="r")
    window = min(100 * batch, args.steps * batch // 10)  # the quick profile's tracking.dead_tokens
    base = config.RunConfig().with_overrides({
        "data.source": f"file:{train_file}", "data.batch_size": batch, "steps": args.steps, "eval_rows": LAB_EVAL_ROWS,
        "log_interval": max(1, args.steps // 10), "sae.architecture": "topk", "sae.k": 2, "sae.d_sae": 2048,
        "penalty.form": "none", "penalty.alpha": 0.0, "tracking.dead_tokens": window, "sae.d_in": 0, "device": args.device})
    auxk = {"aux.auxk_coef": 1 / 32, "aux.auxk_k": 256}
    arms = {
        "base": {},
        "auxk": auxk,  # the arm
        "auxk_window_x8": auxk | {"tracking.dead_tokens": min(8 * window, args.steps * batch // 2)},
        "auxk_coef_x0.1": auxk | {"aux.auxk_coef": 1 / 320},
        "auxk_k_aux_64": auxk | {"aux.auxk_k": 64},  # = d_in / 2 (Gao 2024 appendix B.1; SAELens, sparsify)
        "lr_x3": {"optim.lr": 1e-3},  # the same pair on a base that learns faster
        "lr_x3_auxk": auxk | {"optim.lr": 1e-3},
    }
    rows = []
    for seed in args.seeds:
        cfgs = {name: base.with_overrides(o | {"seed": seed}) for name, o in arms.items()}
        t0 = time.time()
        res = train.train(cfgs, out / f"seed{seed}", progress=False)
        took = time.time() - t0
        for name, run in res.items():
            lab_counts = run.latents["fire_counts"][-1].numpy()
            big, top = fire_counts(run.path, held)
            s = run.summary
            rows.append({"seed": seed, "arm": name, "lab_dead": float((lab_counts == 0).mean()),
                         "big_dead": float((big == 0).mean()),
                         "big_nearly_dead": float((big < 1e-5 * args.eval_rows).mean() if args.eval_rows >= 1e5 else float("nan")),
                         "big_rare": float((big / args.eval_rows < 2 / 2048 / 10).mean()),
                         "dead_negative_pre": float(((big == 0) & (top <= 0)).sum() / max(1, (big == 0).sum())),
                         "fvu": s.get("fvu"), "l0": s.get("l0"), "tracker_dead": s.get("dead_frac_tokens"),
                         "train_s": took})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\ndetection floor (rate under which an alive latent is called dead with > 1%): "
          f"lab {LAB_EVAL_ROWS} rows -> {floor_rate(LAB_EVAL_ROWS):.2e}; {args.eval_rows} rows -> {floor_rate(args.eval_rows):.2e}; "
          f"mean rate k/d_sae = {2 / 2048:.2e}")
    print(f"{'arm':16s} {'lab dead':>16s} {'dead @' + str(args.eval_rows):>18s} {'rate<k/d/10':>14s} {'FVU':>8s} {'dead, pre<=0':>12s}")
    for name in arms:
        r = [x for x in rows if x["arm"] == name]
        m = lambda key: (float(np.mean([x[key] for x in r])), float(np.std([x[key] for x in r])))  # noqa: E731
        (a, sa), (b, sb), (c, sc) = m("lab_dead"), m("big_dead"), m("big_rare")
        f = [x["fvu"] for x in r if x["fvu"] is not None]
        print(f"{name:16s} {a:8.1%} ± {sa:5.1%} {b:10.1%} ± {sb:5.1%} {c:7.1%} ± {sc:4.1%} "
              f"{(np.mean(f) if f else float('nan')):8.3f} {m('dead_negative_pre')[0]:12.1%}")
    (out / "auxk_topk.json").write_text(json.dumps(rows, indent=1))
    print(f"rows in {out / 'auxk_topk.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
