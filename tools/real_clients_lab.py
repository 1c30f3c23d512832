"""Every SAE that tools/real_clients.py had SAELens and sparsify train goes through saelab as a user
would run it: ``saelab inspect`` on the checkpoint folder, then ``saelab lab --profile smoke`` with
the library's own saved config as the base; then the ranking check on the planted offset.

    .venv/bin/python tools/real_clients_lab.py FIXTURES [--skip-lab]

The labs run on SAELens' trainer checkpoints (their cfg.json carries no training settings: the
harder case), on the runner's runner_cfg.json of the TopK SAE, and on sparsify's folder; inspect
runs on every saved SAE. Exit status 1 when any command that must succeed does not (every architecture saelab supports:
exit 0; gated: exit 2 with one line naming it), or when the ranking check fails; the table printed
names each command, its exit status and its first line.

The ranking checks (RANK_ARGS) run phase 04 (data and init, where H8 the uncentered input and H23
the sink rows live) and phase 06 (the answer) at the smoke profile with three replicates: a cause
is confirmed only when its fix removes the deaths in every replicate beyond the spread over them,
and one replicate has no spread to compare with; the other phases' causes (L1 forms, warmup,
resampling) cannot act on a TopK base with no penalty, no warmup and no resampling, which is what
SAELens' and sparsify's configs say.
- SAELens TopK: the planted offset must come first (H8 confirmed and ranked first): SAELens 6 starts
  b_dec at zero, so the offset holds most latents below the top k from the first step.
- sparsify TopK on the offset file: sparsify's Trainer starts b_dec at the first batch's mean,
  which removes the offset, so the lab must not blame the offset: H8 is not confirmed. Whatever
  else it confirms there is printed, not asserted: it is the lab's finding, not a planted answer.
- sparsify TopK on the sink file (2% rows at 100x the median norm, one direction): the sinks kill
  latents in sparsify's own run (the manifest holds its dead count with and without them), so
  H23 must be confirmed and ranked first, the lab running on sparsify's saved cfg.json and
  config.json as the base.
- sparsify TopK on the healthy control (the same generator without the sinks): H23 must not be
  confirmed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

SAELAB = [sys.executable, "-m", "saelab.cli"]
REFUSED = {"gated"}  # SAELens architectures saelab refuses by name
RANK_ARGS = ["--profile", "smoke", "--only", "04,06", "-p", "seeds=[0, 1, 2]"]
# the planted cause: confirmed and first
RANKED = {"saelens-topk-checkpoint": "H8", "sparsify-sinks-final": "H23"}
# a cause the library's own training removed, or a control without the planted cause: never confirmed
NOT_BLAMED = {"sparsify-topk-final": "H8", "sparsify-healthy-final": "H23"}


def tag_of(m: dict) -> str:
    """library-case-kind: the case (sparsify's three TopK runs) or the architecture."""
    return f"{m['library']}-{m.get('case', m['architecture'])}-{m['kind']}"


def run(cmd: list[str]) -> tuple[int, str]:
    res = subprocess.run(cmd, capture_output=True, text=True)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("saelab: error")]
    progress = re.compile(r"^(jobs:|training jobs|\[\d+/\d+\]|\d+ jobs:)")
    out = [ln.strip() for ln in res.stdout.replace("\r", "\n").splitlines() if ln.strip() and not progress.match(ln.strip())]
    return res.returncode, (errors or out or [""])[0]


def described(r: dict) -> str:
    """A ranked cause, its verdict and its arm's peak dead fraction beside the base's."""
    peak = r.get("peak_dead") or {}
    if peak.get("base") is None or peak.get("with_fix") is None:
        return f"{r['cause']} {r['verdict']}"
    return f"{r['cause']} {r['verdict']} (peak dead {peak['base']:.1%} -> {peak['with_fix']:.1%})"


def base_of(folder: Path) -> Path:
    """The library's own saved config for the lab: SAELens' runner_cfg.json when the runner wrote
    one, else the SAE's cfg.json; sparsify's folder (its cfg.json, and the Trainer's config.json
    one folder up, where the Trainer saves it)."""
    if (folder / "runner_cfg.json").exists():
        return folder / "runner_cfg.json"
    if (folder / "sae.safetensors").exists():
        return folder
    return folder / "cfg.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fixtures", type=Path)
    ap.add_argument("--skip-lab", action="store_true", help="inspect only")
    args = ap.parse_args()
    manifest = json.loads((args.fixtures / "manifest.json").read_text())
    out = args.fixtures / "saelab"
    failed = 0
    for m in manifest:
        folder = Path(m["folder"])
        tag = tag_of(m)
        want = 2 if m["architecture"] in REFUSED else 0
        cmds = [("inspect", SAELAB + ["inspect", str(folder), "--data", f"file:{m['data']}", "--out", str(out / tag / "inspect")])]
        # the smoke lab on every kind of saved config (sparsify's sink and control cases save the
        # same config as its offset case: their labs are the ranking runs below)
        smoke = m["kind"] == "checkpoint" or m["library"] == "sparsify" or m["architecture"] == "topk"
        if not args.skip_lab and "case" not in m and smoke:
            cmds.append(("lab", SAELAB + ["lab", "--profile", "smoke", "--base", str(base_of(folder)), "--data",
                                          f"file:{m['data']}", "--out", str(out / tag / "lab")]))
        for what, cmd in cmds:
            rc, first = run(cmd)
            ok = rc == want and (want == 0 or m["architecture"] in first)
            failed += not ok
            print(f"{'ok ' if ok else 'BAD'} {what:7s} {tag:40s} exit {rc} (want {want}): {first[:160]}")
        key = tag
        if (key in RANKED or key in NOT_BLAMED) and not args.skip_lab:
            rank_out = out / tag / "rank"
            rc, first = run(SAELAB + ["lab", *RANK_ARGS, "--base", str(base_of(folder)), "--data", f"file:{m['data']}",
                                      "--out", str(rank_out)])
            answer = rank_out / "answer.json"
            ranking = json.loads(answer.read_text())["ranking"] if answer.exists() else []
            confirmed = [r for r in ranking if r["verdict"] == "confirmed"]
            top = confirmed[0]["cause"].split(" ")[0] if confirmed else None
            ids = [r["cause"].split(" ")[0] for r in confirmed]
            if key in RANKED:
                ok, want = rc == 0 and top == RANKED[key], f"{RANKED[key]} first"
            else:
                ok, want = rc == 0 and NOT_BLAMED[key] not in ids, f"{NOT_BLAMED[key]} not confirmed"
            failed += not ok
            own = (f"; the trainer's own dead count {m['trainer_dead']} of {m['d_sae']}"
                   + (f", {m['trainer_dead_without_cause']} without the cause" if "trainer_dead_without_cause" in m else ""))
            print(f"{'ok ' if ok else 'BAD'} ranking {tag:40s} exit {rc}: first cause {top} (want {want}){own}; "
                  + "; ".join(described(r) for r in ranking[:4]))
    print(f"real clients through saelab: {len(manifest)} SAEs, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
