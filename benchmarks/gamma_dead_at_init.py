"""Outlier severity gamma against dead-at-init: does the data check's prediction rank data sets as
the measured dead fraction of the initialized SAE does?

Synthetic sets whose shared offset gives gamma from 0 to about 8 (d_in 256, the quick profile's
synthetic data otherwise), for a ReLU base (the seed's Test 1, 256 latents) and a TopK base
(k = 16 of 256). For each set it prints gamma, the predicted and the measured dead-at-init, and
the Spearman rank correlation of predicted vs measured over the sets. ``--minilm`` adds every
layer of the bundled MiniLM (each layer's activation cache is built once, minutes on a CPU).

    .venv/bin/python benchmarks/gamma_dead_at_init.py [--minilm] [--rows 20000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from saelab.data.sources import make_source, resolve  # noqa: E402
from saelab.lab import datacheck  # noqa: E402
from saelab.lab.base import load_base  # noqa: E402
from saelab.lab.datacheck import check  # noqa: E402

OFFSETS = (0.0, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 22.0, 30.0)  # std norm ~3.75: gamma ~0 .. 8
BASES = {"relu (seed-test1)": {}, "topk k=16": {"sae.architecture": "topk", "sae.k": 16, "penalty.form": "none", "penalty.alpha": 0.0}}


def one(overrides: dict, rows: int) -> dict:
    cfg = load_base("seed-test1").config.with_overrides({"sae.d_sae": 256, **overrides})
    source = make_source(cfg)
    return check(resolve(cfg, source), source, rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--minilm", action="store_true")
    args = p.parse_args()
    for name, arch in BASES.items():
        print(f"\n{name}: synthetic, d_in 256, 1024 true features")
        print(f"{'offset':>7} {'gamma':>6} {'predicted':>10} {'measured':>9}")
        pred, meas = [], []
        for off in OFFSETS:
            r = one({"sae.d_in": 256, "data.n_features": 1024, "data.mean_offset": off, **arch}, args.rows)
            pred.append(r["dead_at_init_predicted"])
            meas.append(r["dead_at_init_measured"])
            print(f"{off:7.1f} {r['gamma']:6.2f} {100 * pred[-1]:9.1f}% {100 * meas[-1]:8.1f}%")
        rho = datacheck.spearman(pred, meas)
        print(f"Spearman(predicted, measured) over {len(OFFSETS)} sets: {rho:.3f}")
    if args.minilm:
        print("\nMiniLM (all-MiniLM-L6-v2), stdlib corpus, 50,000 tokens, seed's Test 1 ReLU base / TopK k=16")
        print(f"{'layer':>5} {'gamma':>6} {'relu pred':>9} {'relu meas':>9} {'topk pred':>9} {'topk meas':>9}")
        for layer in range(7):
            src = {"data.source": "minilm", "data.layer": layer, "data.max_tokens": 50_000, "sae.d_in": 0}
            a, b = one(src, args.rows), one({**src, **BASES["topk k=16"]}, args.rows)
            print(f"{layer:5d} {a['gamma']:6.2f} {100 * a['dead_at_init_predicted']:8.1f}% {100 * a['dead_at_init_measured']:8.1f}% "
                  f"{100 * b['dead_at_init_predicted']:8.1f}% {100 * b['dead_at_init_measured']:8.1f}%")


if __name__ == "__main__":
    main()
