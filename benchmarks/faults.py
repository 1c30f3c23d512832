"""Fault injection for ``saelab train``, ``saelab export`` and ``saelab lab`` at smoke size (issue 22):
SIGKILL and SIGTERM at random steps, a full disk during a checkpoint and during an export (a file-size limit,
RLIMIT_FSIZE, stands in for a small tmpfs: every write beyond it fails with EFBIG as on a full
disk), a read-only output folder; and whole labs (phase 02, three seeds) killed at a random moment:
in this process (SIGKILL, and Ctrl-C), on ``--cluster local:2`` a worker process (SIGKILL: Dask
retries its job, the lab must finish by itself) and the client (SIGKILL: no process may be left
behind). After each fault the run is recovered the way the messages
say (resume, or the same command again) and compared with an uninterrupted run: metrics, held-out
fire counts and final weights must be equal, or the fault refused with one line and exit code 2,
with nothing written before the fault lost. A lab is recovered the way its message says (the same
command with ``--force``) and compared job by job and verdict by verdict with an uninterrupted lab.

    .venv/bin/python benchmarks/faults.py [--trials 3] [--seed 0] [--no-lab]

Prints one line per fault and the counts: faults injected, resumed exactly, refused cleanly,
finished before the fault landed, wrong results, files lost. Exit code 1 when any result is wrong
or any file lost (CI runs it after the suite: .ci/run).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

STEPS = 300
ARGS = ["--preset", "seed-test1", "--set", f"steps={STEPS}", "--set", "sae.d_sae=64", "--set", "eval_rows=256",
        "--set", "log_interval=10", "--set", "checkpoint_every=25", "--set", "normalize.mode=dataset_scalar"]
SAELAB = [sys.executable, "-m", "saelab.cli"]


def snapshot(folder: Path) -> dict[str, str]:
    """name -> sha256 of every file under ``folder`` (the lock file left out)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"} if folder.exists() else {}


def run(args: list[str], signal_at: int | None = None, sig: int = signal.SIGKILL, fsize: int | None = None,
        timeout: float = 600) -> tuple[int, str, int | None]:
    """Run saelab with ``args``; with ``signal_at`` send ``sig`` once the progress bar shows that
    step; with ``fsize`` no file may grow beyond that many bytes. Returns (exit code, stderr, the
    step the signal was sent at or None)."""
    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails with EFBIG, as on a full disk
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    p = subprocess.Popen([*SAELAB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limit)
    err: list[bytes] = []
    sent: list[int] = []

    def watch() -> None:  # the tqdm bar ("123/300") says which step the training is at
        buf = b""
        while chunk := p.stderr.read1(4096):
            err.append(chunk)
            buf = (buf + chunk)[-200:]
            if signal_at is not None and not sent:
                done = [int(m) for m in re.findall(rb"(\d+)/%d" % STEPS, buf)]
                if done and done[-1] >= signal_at:
                    p.send_signal(sig)
                    sent.append(done[-1])

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    p.stdout.read()
    rc = p.wait(timeout=timeout)
    t.join(timeout=10)
    text = b"".join(err).decode(errors="replace")
    lines = [line for line in re.split(r"[\r\n]", text) if line.strip().startswith("saelab:")]
    return rc, "\n".join(lines), sent[0] if sent else None


def same_run(a: Path, b: Path) -> bool:
    """The numbers of two runs: metrics, held-out fire counts and weights equal (wall times differ)."""
    import pandas as pd
    from safetensors.torch import load_file

    if not (a / "summary.json").exists() or not (b / "summary.json").exists():
        return False
    if not pd.read_parquet(a / "metrics.parquet").equals(pd.read_parquet(b / "metrics.parquet")):
        return False
    for name in ("sae.safetensors", "latents.safetensors"):
        x, y = load_file(str(a / name)), load_file(str(b / name))
        if x.keys() != y.keys() or any(not x[k].equal(y[k]) for k in x):
            return False
    return True


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, fault: str, outcome: str, detail: str = "") -> None:
        self.counts["injected"] += 1
        self.counts[outcome] += 1
        print(f"{fault}: {outcome}{' (' + detail + ')' if detail else ''}", flush=True)


def recover(out: Path, rc: int) -> int:
    """What the messages say after a stopped training: resume from the checkpoint, or (stopped
    before the first one) the same command again."""
    if rc == 0:
        return 0
    if (out / "checkpoint.safetensors").exists():
        return run(["train", "--resume", str(out), "--quiet"])[0]
    return run(["train", *ARGS, "--out", str(out), "--quiet"])[0]


def signal_trial(tally: Tally, ref: Path, tmp: Path, sig: int, step: int, name: str) -> None:
    out = tmp / name
    rc, err, at = run(["train", *ARGS, "--out", str(out)], signal_at=step, sig=sig)
    fault = f"{signal.Signals(sig).name} at step {at if at is not None else step}"
    if rc == 0:
        tally.add(fault, "finished_before_fault")
        return
    if recover(out, rc) != 0:
        tally.add(fault, "wrong", "the recovery failed")
    else:
        tally.add(fault, "resumed_exactly" if same_run(out, ref) else "wrong")


def full_disk_checkpoint(tally: Tally, ref: Path, tmp: Path, step: int) -> None:
    """SIGTERM leaves a checkpoint; the resume runs out of space at its next checkpoint: one line,
    the earlier checkpoint intact; a resume with space then finishes with the uninterrupted numbers."""
    out = tmp / "full-disk"
    rc, _, _ = run(["train", *ARGS, "--out", str(out)], signal_at=step, sig=signal.SIGTERM)
    if rc == 0 or not (out / "checkpoint.safetensors").exists():
        tally.add("full disk during checkpoint", "finished_before_fault")
        return
    before = (out / "checkpoint.safetensors").read_bytes()
    rc, err, _ = run(["train", "--resume", str(out), "--quiet"], fsize=(len(before) * 3) // 4)
    clean = rc == 2 and len(err.splitlines()) == 1
    print(f"  resume on a full disk: exit {rc}: {err.strip()[:160]}")
    if (out / "checkpoint.safetensors").read_bytes() != before:
        tally.add("full disk during checkpoint", "lost", "the previous checkpoint changed")
        return
    rc2, err2, _ = run(["train", "--resume", str(out), "--quiet"])
    if rc2 != 0 or not same_run(out, ref):
        tally.add("full disk during checkpoint", "wrong", f"the resume with space: exit {rc2} {err2.strip()[:140]}")
        return
    tally.add("full disk during checkpoint", "refused_cleanly" if clean else "wrong", err.strip()[:140])


def full_disk_export(tally: Tally, ref: Path, tmp: Path) -> None:
    before = snapshot(ref)
    out = tmp / "export"
    rc, err, _ = run(["export", str(ref), "--format", "saelens", str(out)], fsize=4096)
    if snapshot(ref) != before:
        tally.add("full disk during export", "lost", "the run changed")
        return
    ok = run(["export", str(ref), "--format", "saelens", str(tmp / "export-again")])[0] == 0
    clean = rc == 2 and len(err.splitlines()) == 1 and ok
    tally.add("full disk during export", "refused_cleanly" if clean else "wrong", err.strip()[:140])


def read_only(tally: Tally, ref: Path, tmp: Path) -> None:
    """An output folder nothing can be written into (chattr +i as root, whom permissions do not stop)."""
    out = tmp / "read-only"
    out.mkdir()
    (out / "keep.txt").write_text("written before")
    before = snapshot(out)
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
            print("read-only folder: skipped (root, and chattr +i is not available here)")
            return
    else:
        out.chmod(0o555)
    try:
        results = [run(["train", *ARGS, "--out", str(out / "run"), "--quiet"]),
                   run(["export", str(ref), "--format", "saelens", str(out / "exported")])]
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(out)], capture_output=True)
        else:
            out.chmod(0o755)
    for what, (rc, err, _) in zip(("train", "export"), results):
        if snapshot(out) != before:
            tally.add(f"read-only folder ({what})", "lost", "the folder changed")
        else:
            clean = rc == 2 and len(err.splitlines()) == 1
            tally.add(f"read-only folder ({what})", "refused_cleanly" if clean else "wrong", err.strip()[:140])

# ----- whole labs ---------------------------------------------------------------------------------

LAB = ["lab", "--profile", "smoke", "--only", "02", "-p", "seeds=[0, 1, 2]", "-p", 'overrides={"steps": 300}']


def lab_runs(out: Path) -> list[Path]:
    """The arm folders of a lab's runs (relative), each a trained run."""
    return sorted(p.parent.relative_to(out) for p in (out / "runs").rglob("summary.json"))


def same_lab(a: Path, b: Path) -> str:
    """"" when two labs trained the same runs to the same numbers and reached the same verdicts
    (hypothesis, verdict and effect), else what differs."""
    import json

    if lab_runs(a) != lab_runs(b):
        return f"runs differ: {len(lab_runs(a))} against {len(lab_runs(b))}"
    for rel in lab_runs(a):
        if not same_run(a / rel, b / rel):
            return f"{rel} differs"
    for v in sorted((a / "runs").glob("*/verdicts.json")):
        key = lambda path: [(x["id"], x["verdict"], x["effect"]) for x in json.loads(path.read_text())]  # noqa: E731
        w = b / v.relative_to(a)
        if not w.exists() or key(v) != key(w):
            return f"{v.relative_to(a)} differs"
    return ""


def start_lab(out: Path, cluster: bool) -> subprocess.Popen:
    """The lab in a process of its own, its console into ``<out>.log`` (a pipe nobody reads would fill)."""
    args = [*SAELAB, *LAB, "--out", str(out)] + (["--cluster", "local:2"] if cluster else [])
    with open(f"{out}.log", "wb") as log:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def workers(p: subprocess.Popen) -> list:
    """The lab's Dask worker processes (its children that are neither kernels nor helpers)."""
    import psutil

    try:
        kids = psutil.Process(p.pid).children()
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if "multiprocessing" in " ".join(k.cmdline()) and "resource_tracker" not in " ".join(k.cmdline())]


def jobs_done(out: Path) -> int:
    """The lab's jobs whose every arm has its summary.json (a job killed while writing them is not done)."""
    groups = [g for g in (out / "runs").glob("*/seed*") if g.is_dir()] if (out / "runs").exists() else []
    return sum(1 for g in groups if (arms := [a for a in g.iterdir() if (a / "config.json").exists()])
               and all((a / "summary.json").exists() for a in arms))


def wait_for_training(out: Path, p: subprocess.Popen, rng: random.Random, jobs: int = 3) -> bool:
    """Until a random job of the lab is training (some earlier ones may be done): False if the lab
    finished first. A job trains 300 steps; the fault lands at a random moment of it."""
    target = rng.randrange(jobs)
    while p.poll() is None:
        done = jobs_done(out)
        if done >= target and any((out / "runs").rglob("checkpoint*")):
            time.sleep(rng.uniform(0, 1.5))
            return p.poll() is None
        time.sleep(0.05)
    return False


def lab_trial(tally: Tally, ref: Path, tmp: Path, rng: random.Random, name: str, what: str) -> None:
    """One whole-lab fault: ``what`` is "kill" (SIGKILL the lab in this process), "interrupt" (Ctrl-C),
    "worker" (SIGKILL a worker of --cluster local:2) or "client" (SIGKILL the lab on local:2)."""
    import psutil

    out = tmp / name
    fault = {"kill": "lab: SIGKILL", "interrupt": "lab: Ctrl-C (SIGINT)", "worker": "lab on local:2: SIGKILL a worker",
             "client": "lab on local:2: SIGKILL the client"}[what]
    p = start_lab(out, cluster=what in ("worker", "client"))
    if not wait_for_training(out, p, rng):
        tally.add(fault, "finished_before_fault")
        return
    left: list = []
    if what == "worker":
        ws = workers(p)
        if not ws:
            p.kill()
            tally.add(fault, "wrong", "no worker process found")
            return
        for w in ws:
            w.cpu_percent()
        time.sleep(0.3)
        max(ws, key=lambda w: w.cpu_percent()).kill()  # the busiest: the one training a job
        rc = p.wait(timeout=900)  # Dask retries the job elsewhere: the lab finishes by itself
        err = Path(f"{out}.log").read_text(errors="replace")
        jobs_line = next((line.strip() for line in re.split(r"[\r\n]", err) if " jobs: " in line or line.startswith("jobs")), "")
        if rc != 0:
            tally.add(fault, "wrong", f"the lab exited {rc} after the worker died: {err.strip()[-200:]}")
            return
    else:
        ws = workers(p)
        kids = psutil.Process(p.pid).children(recursive=True)
        p.send_signal(signal.SIGINT if what == "interrupt" else signal.SIGKILL)
        rc = p.wait(timeout=300)
        err = Path(f"{out}.log").read_text(errors="replace")
        if what == "interrupt" and (rc != 130 or "--force" not in err):
            tally.add(fault, "wrong", f"exit {rc}, the message does not say to rerun with --force: {err.strip()[-200:]}")
            return
        _, alive = psutil.wait_procs(kids, timeout=30)
        left = [k for k in alive if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
        for k in left:
            k.kill()
        before = snapshot(out / "runs")
        done_before = jobs_done(out)
        again = subprocess.run([*SAELAB, *LAB, "--out", str(out), "--force"] + (["--cluster", "local:2"] if what == "client" else []),
                               capture_output=True, text=True, timeout=900)
        rc, err = again.returncode, again.stderr
        jobs_line = (f"{done_before} of 3 jobs done at the fault; rerun: "
                     + next((line.strip() for line in re.split(r"[\r\n]", err) if " jobs: " in line), "?"))
        if rc != 0:
            tally.add(fault, "wrong", f"the rerun with --force exited {rc}: {err.strip()[-200:]}")
            return
        gone = [k for k, h in before.items() if k.endswith("summary.json") and k not in snapshot(out / "runs")]
        if gone:
            tally.add(fault, "lost", f"{len(gone)} finished runs were not kept")
            return
    differs = same_lab(ref, out)
    if left:
        tally.add(fault, "wrong", f"{len(left)} processes outlived the lab ({len(ws)} workers)")
    else:
        tally.add(fault, "wrong" if differs else "resumed_exactly", differs or jobs_line)



def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3, help="SIGKILL and SIGTERM faults each, at random steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-lab", action="store_true", help="only the faults of saelab train and export")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tally = Tally()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ref = tmp / "uninterrupted"
        rc, err, _ = run(["train", *ARGS, "--out", str(ref), "--quiet"])
        if rc != 0:
            print(f"the uninterrupted run failed: {err}")
            return 1
        for i in range(args.trials):
            signal_trial(tally, ref, tmp, signal.SIGKILL, rng.randrange(0, STEPS), f"kill{i}")
            signal_trial(tally, ref, tmp, signal.SIGTERM, rng.randrange(1, STEPS), f"term{i}")
        full_disk_checkpoint(tally, ref, tmp, rng.randrange(30, STEPS - 60))
        full_disk_export(tally, ref, tmp)
        read_only(tally, ref, tmp)
        shutil.rmtree(tmp / "read-only", ignore_errors=True)
        if not args.no_lab:
            lab_ref = tmp / "lab-uninterrupted"
            rc, err, _ = run([*LAB, "--out", str(lab_ref)])
            if rc != 0:
                print(f"the uninterrupted lab failed: {err}")
                return 1
            for what in ("kill", "interrupt", "worker", "client"):
                lab_trial(tally, lab_ref, tmp, rng, f"lab-{what}", what)
    c = tally.counts
    print(f"faults injected {c['injected']}: resumed exactly {c['resumed_exactly']}, refused cleanly "
          f"{c['refused_cleanly']}, finished before the fault {c['finished_before_fault']}, wrong {c['wrong']}, "
          f"lost {c['lost']} ({time.perf_counter() - t0:.0f} s)")
    return 1 if c["wrong"] or c["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
