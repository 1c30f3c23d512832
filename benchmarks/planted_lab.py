"""The whole lab on setups with a planted cause of death: does ``answer.json`` rank the planted cause
first?

``planted_causes.py`` runs only the phase that tests each cause (fast, with a healthy control); this
script runs every phase, as ``saelab lab --base planted.json`` does for a user, so every other
hypothesis of the catalogue competes with the planted one for the top of the answer. Each case is
the planted base of ``planted_causes.CASES`` (64 latents, d_in 32, 3 replicates, smoke profile for
the fields it leaves open).

    .venv/bin/python benchmarks/planted_lab.py [--only NAME ...] [--out DIR]

A case passes when the planted cause is first, or confirmed and tied with the first within the
spread over replicates (``tied``: ``answer.ranking`` cannot order them), or confirmed behind only
confirmed co-causes the case names (``planted_causes.CO_CAUSES``). Prints one line per case:
the answer's first three causes with their verdicts and peak dead
fractions (base -> with the fix), and the wall time of the lab.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from planted_causes import CASES, CO_CAUSES, materialize, parse_args  # noqa: E402


def lab(base: dict, out: Path) -> dict:
    """Run the whole lab on ``base`` into ``out`` and return its answer.json."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "base.json"
    path.write_text(json.dumps(materialize(base, out.parent / "files")))
    cmd = [str(ROOT / ".venv/bin/saelab"), "lab", "--profile", "smoke", "--base", str(path), "--out", str(out / "report"),
           "-p", "seeds=[0, 1, 2]"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    for where in (out / "report" / "answer.json", out / "report" / "runs" / "06_validation" / "answer.json"):
        if where.exists():
            return json.loads(where.read_text())
    raise RuntimeError(f"the lab wrote no answer.json (exit {done.returncode}): {done.stderr.strip()[-400:]}")


def main() -> int:
    args, root = parse_args(__doc__, "planted-lab-")
    ok = True
    pct = lambda v: "?" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for name, (_stem, planted, _control, _params, hid) in CASES.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            ranked = lab(planted, root / name.replace(" ", "_"))["ranking"]
        except RuntimeError as e:
            print(f"FAIL {name:28s} {e}", flush=True)
            ok = False
            continue
        ids = [r["id"] for r in ranked]
        at = ids.index(hid) if hid in ids else -1
        first = at == 0 and ranked[0]["verdict"] == "confirmed"
        tied = at > 0 and ranked[at]["verdict"] == "confirmed" and all(r.get("tied_with_above") for r in ranked[1:at + 1])
        co = at > 0 and ranked[at]["verdict"] == "confirmed" and all(
            r["id"] in CO_CAUSES.get(name, ()) and r["verdict"] == "confirmed" for r in ranked[:at])
        good = first or tied or co
        ok &= good
        cost = lambda r: f" ({r['cost']})" if r.get("cost") else " (costs reconstruction)" if r.get("costs_reconstruction") else ""  # noqa: E731
        top = "; ".join(f"{'= ' if r.get('tied_with_above') else ''}{r['id']} {r['verdict']}{cost(r)} "
                        f"{pct(r['peak_dead']['base'])} -> {pct(r['peak_dead']['with_fix'])}"
                        for r in ranked[:3]) or "no cause ranked"
        print(
            f"{'ok ' if first else 'tied' if tied else 'co  ' if co else 'MISS'} {name:28s} planted {hid}; answer: {top} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
