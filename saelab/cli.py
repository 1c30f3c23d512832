"""Command line: ``saelab presets | train | lab | report | inspect | autopsy | export``. Errors are one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from saelab import config
from saelab.config import PRESETS, preset_summary
from saelab.fileio import write_atomic, write_json
from saelab.lab.base import DOSE_BUDGET, PROFILES
from saelab.version import describe

# Each command imports what it runs (below, in its function): `saelab autopsy` on a long log never
# loads torch, Dask or the lab (issue 22: 500 MB peak on a 3.3M-row log; the imports alone were 290 MB).

SUMMARY_KEYS = ("steps", "l0", "l0_frac", "dead_frac", "dead_frac_batch", "mse", "fvu", "l1_recon_ratio",
                "mmcs", "frac_recovered", "wall_seconds", "steps_per_second")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saelab", description="Why do SAE latents die? A lab of phases.")
    p.add_argument("--version", action="version", version=describe(), help="the saelab version and git commit")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the named configs")
    t = sub.add_parser("train", help="train one arm into a run directory")
    t.add_argument("--preset", default="seed-test1", help="named config (saelab presets)")
    t.add_argument("--config", type=Path, help="a config.json instead of a preset")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a field by its dotted path, e.g. sae.d_sae=256 (repeatable)")
    t.add_argument("--out", type=Path, help="run directory (default reports/runs/<preset>)")
    t.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the resume state (checkpoint.safetensors) of a finished run; by default it is dropped")
    lab = sub.add_parser("lab", help="run every phase notebook with papermill and render the HTML report")
    lab.add_argument("--profile", default="quick", choices=list(PROFILES))
    lab.add_argument("--out", type=Path, default=Path("reports/lab"))
    lab.add_argument("--only", default="", help="comma-separated phase prefixes, e.g. 01,03")
    lab.add_argument("--base", help="your base config: a preset name, a saelab config.json (full or partial), a run "
                                    "directory, or a SAELens config / cfg.json (default: the seed's Test 1)")
    lab.add_argument("--data", metavar="SOURCE", help="activations: synthetic | minilm | hf:<model> | file:<path> (default: the base's)")
    lab.add_argument("--force", action="store_true",
                     help="rerun phases into an --out that already holds a report: a job finished by this same saelab "
                          "(version and commit), torch and numpy on the same data (size, time, sampled contents) is "
                          "reused, any other retrained; a phase that fails keeps its previous result")
    lab.add_argument("--cluster", metavar="WHERE",
                     help="run the training jobs on Dask: local[:N] (N worker processes on this machine), tcp://HOST:PORT "
                          "(a running scheduler) or slurm (workers as SLURM jobs); default: in this process")
    lab.add_argument("--cluster-config", type=Path, metavar="FILE",
                     help="SLURMCluster options for --cluster slurm (YAML or JSON; see the README)")
    lab.add_argument("--dose-budget", type=int, default=DOSE_BUDGET, metavar="N",
                     help="extra arms the dose search may train (each over every replicate) for confirmed causes whose fix "
                          f"still leaves more than 5%% dead; 0: no search (default {DOSE_BUDGET})")
    lab.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                     help="extra notebook parameter passed to every phase (value parsed as JSON when possible)")
    chk = sub.add_parser("check-data", help="what the activations say before training: outlier severity, norms, "
                                           "predicted and measured dead-at-init")
    chk.add_argument("source", help="synthetic | minilm | hf:<model> | file:<path>")
    chk.add_argument("--base", help="the base config whose SAE is measured at init (default: the seed's Test 1)")
    chk.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                     help="override a field of the base, e.g. data.mean_offset=8 (repeatable)")
    chk.add_argument("--rows", type=int, default=100_000, help="rows to read (streamed; default 100,000)")
    chk.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    rep = sub.add_parser("report", help="re-render the HTML pages and index of executed notebooks")
    rep.add_argument("--out", type=Path, default=Path("reports/lab"))
    _foreign_parsers(sub)
    return p


def _foreign_parsers(sub) -> None:
    """inspect / autopsy / export: SAEs and logs from other libraries (issue 12)."""
    ins = sub.add_parser("inspect", help="which latents of a trained SAE (SAELens, sparsify, dictionary_learning, "
                                         "saelab) are dead on your data, and why")
    ins.add_argument("checkpoint", type=Path, help="checkpoint folder (or a file in it)")
    ins.add_argument("--data", required=True, help="file:<path> | synthetic | minilm | hf:<model>")
    ins.add_argument("--out", type=Path, default=Path("reports/inspect"), help="folder for inspect.html and inspect.json")
    ins.add_argument("--rows", type=int, default=0,
                     help="rows to inspect: the last N of a file (default: all), the held-out set otherwise (default 8192)")
    ins.add_argument("--chunk-rows", type=int, default=0, help="rows per chunk (default: about 16M pre-activations)")
    au = sub.add_parser("autopsy", help="collapse detection on a training log (CSV / JSONL / parquet, W&B exports)")
    au.add_argument("log", type=Path)
    au.add_argument("--out", type=Path, default=Path("reports/autopsy"), help="folder for autopsy.html and autopsy.json")
    au.add_argument("--column", action="append", default=[], metavar="NAME=ROLE",
                    help="map a column to a role (step, l0, dead_frac, dead_count, lr, loss, mse, fvu, ...); repeatable")
    au.add_argument("--event", action="append", default=[], metavar="STEP:NAME", help="an event, e.g. 25000:resample")
    au.add_argument("--d-sae", type=int, default=0, help="number of latents, to turn a dead-latent count into a fraction")
    ex = sub.add_parser("export", help="write a saelab run's SAE in SAELens' or sparsify's format (raw-activation units)")
    ex.add_argument("run", type=Path, help="a saelab run directory (one arm)")
    ex.add_argument("--format", required=True, choices=["saelens", "sparsify"])
    ex.add_argument("out", type=Path)


def _inspect(args: argparse.Namespace) -> int:
    from saelab.interop.foreign import load_checkpoint
    from saelab.interop.inspection import default_chunk_rows, inspect, lab_command, row_chunks
    from saelab.report.pages import inspect_page

    for flag, value in (("--rows", args.rows), ("--chunk-rows", args.chunk_rows)):
        if value < 0:
            raise ValueError(f"{flag} {value} must be >= 0 (0: {'every row' if flag == '--rows' else 'the default'})")
    ckpt = load_checkpoint(args.checkpoint)
    chunk = args.chunk_rows if args.chunk_rows > 0 else default_chunk_rows(ckpt.d_sae)
    chunks, described = row_chunks(args.data, ckpt.d_in, args.rows, chunk)
    rec = inspect(ckpt, chunks, described)
    write_json(args.out / "inspect.json", rec)
    page = inspect_page(rec, args.out / "inspect.html")
    command = lab_command(ckpt, args.data, args.out / "lab")  # issue 20: from inspect to lab in one step
    write_atomic(args.out / "lab_command.txt", command)
    print(rec["verdict"])
    print(f"page: {page}\njson: {args.out / 'inspect.json'}\nto investigate its training: {command.strip()}")
    return 0


def _autopsy(args: argparse.Namespace) -> int:
    from saelab.interop.logs import autopsy_log
    from saelab.report.pages import autopsy_page

    columns = {}
    for text in args.column:
        name, sep, role = text.rpartition("=")
        if not sep or not name or not role:
            raise ValueError(f"--column {text!r} must look like NAME=ROLE, e.g. metrics/l0=l0")
        columns[name] = role
    rec, m = autopsy_log(args.log, columns, args.event, args.d_sae or None)
    write_json(args.out / "autopsy.json", rec)
    page = autopsy_page(rec, m, args.out / "autopsy.html")
    print(rec["verdict"])
    print(f"page: {page}\njson: {args.out / 'autopsy.json'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from saelab.interop.export import export

    out = export(args.run, args.format, args.out)
    print(f"exported {args.run} as {args.format} to {out}")
    return 0


def _print_summary(runs: dict) -> None:
    from saelab.training.diagnose import format_autopsy

    for name, run in runs.items():
        s = run.summary
        print(f"{name}: " + ", ".join(f"{k}={s[k]:.4g}" if isinstance(s.get(k), float) else f"{k}={s.get(k)}"
                                      for k in SUMMARY_KEYS if k in s))
        print(f"  run directory: {run.path}")
        if run.autopsy:
            print("  " + format_autopsy(run.autopsy).replace("\n", "\n  "))


def _train(args: argparse.Namespace) -> int:
    from saelab.training import train
    from saelab.training.runs import read_config

    if args.resume:
        if args.overrides or args.config:
            raise ValueError("--resume continues the run with its own config.json; drop --set/--config "
                             "(or train a new run with --out)")
        runs = train.train(None, args.resume, resume=True, progress=not args.quiet, keep_checkpoint=args.keep_checkpoint)
    else:
        if args.config:
            if not args.config.is_file():
                raise ValueError(f"--config {args.config}: " + ("is a folder, not a config.json file" if args.config.is_dir()
                                                                 else "no such file"))
            cfg = read_config(args.config)
        else:
            cfg = config.preset(args.preset)
        cfg = cfg.with_overrides(args.overrides)
        out = args.out or Path("reports/runs") / (args.config.stem if args.config else args.preset)
        if (out / "config.json").exists() or (out / "arms.json").exists():
            if (out / "summary.json").exists() or train.checkpoint_path(out).exists():
                how = "finished" if (out / "summary.json").exists() else "unfinished"
                raise ValueError(f"{out} already holds a run ({how}); train into another --out (or continue an "
                                 f"unfinished one with --resume {out})")
            # stopped before its first checkpoint (a kill -9): nothing in it can be resumed
            print(f"saelab: {out} holds a run stopped before its first checkpoint; training it again from step 0",
                  file=sys.stderr)
        runs = train.train(cfg, out, progress=not args.quiet, keep_checkpoint=args.keep_checkpoint)
    _print_summary(runs)
    return 0


def _parse_param(text: str) -> tuple[str, object]:
    from saelab.lab.params import check_parameters

    if "=" not in text:
        raise ValueError(f"parameter {text!r} must look like name=value")
    name, raw = text.split("=", 1)
    check_parameters({name: raw}, {"-p": None})  # a name is code in papermill's cell: identifiers only
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def _check_data(args: argparse.Namespace) -> int:
    from saelab.data.files import open_segments
    from saelab.data.sources import make_source, resolve
    from saelab.lab.base import load_base
    from saelab.lab.datacheck import INIT_ROWS, check, format_check

    if args.rows < 1:
        raise ValueError(f"--rows {args.rows} must be >= 1")
    cfg = load_base(args.base).config.with_overrides(args.overrides).with_overrides({"data.source": args.source})
    if not args.source == "synthetic" and "sae.d_in" not in " ".join(args.overrides):
        cfg = cfg.with_overrides({"sae.d_in": 0})
    if args.source.startswith("file:"):  # a small file: hold out at most half of it (the base's 8,192 rows need more)
        total = sum(s.rows for s in open_segments(args.source.removeprefix("file:")))
        cfg = cfg.with_overrides({"eval_rows": max(1, min(cfg.eval_rows, INIT_ROWS, total // 2))})
    source = make_source(cfg)
    result = check(resolve(cfg, source), source, args.rows)
    print(json.dumps(result, indent=2) if args.json else format_check(result))
    return 0


def absolute_paths(params: dict) -> dict:
    """``base`` (when it names an existing file or folder, not a preset) and a ``file:`` source
    made absolute against this process's working directory, so every notebook reads the same files
    wherever its kernel starts. A ``#tensor`` suffix and glob characters are kept."""
    out = dict(params)
    base = out.get("base")
    if isinstance(base, str) and base and Path(base).expanduser().exists():
        out["base"] = os.path.abspath(os.path.expanduser(base))
    src = out.get("source")
    if isinstance(src, str) and src.startswith("file:") and len(src) > 5:
        path, sep, name = src.removeprefix("file:").partition("#")
        out["source"] = f"file:{os.path.abspath(os.path.expanduser(path))}{sep}{name}"
    return out


def _interrupted(e: BaseException) -> bool:
    """A training's own interruption (``saelab.training.train.Interrupted``: a signal, with its
    number); only a command that trained can have raised one, so its module is loaded by then."""
    train = sys.modules.get("saelab.training.train")
    return train is not None and isinstance(e, train.Interrupted)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "presets":
            for name in PRESETS:
                print(f"{name:22s} {preset_summary(name)}")
            return 0
        if args.command == "train":
            return _train(args)
        if args.command == "lab":
            from saelab.execution.cluster import parse_cluster
            from saelab.report.batch import run_lab

            spec = parse_cluster(args.cluster, args.cluster_config) if args.cluster else None
            if args.cluster_config and not args.cluster:
                raise ValueError("--cluster-config is for --cluster slurm; pass --cluster slurm too")
            only = [s.strip() for s in args.only.split(",") if s.strip()] or None
            params = dict(_parse_param(p) for p in args.parameter)
            if args.base:
                params["base"] = args.base
            if args.data:
                params["source"] = args.data
            params = absolute_paths(params)  # once, here: the notebooks' kernels run in other folders
            # run_lab plans every phase (base, arms, data) before anything is trained or written
            return run_lab(profile=args.profile, out=args.out, only=only, parameters=params or None, force=args.force,
                           cluster=spec, dose_budget=args.dose_budget)
        if args.command in ("inspect", "autopsy", "export"):
            return {"inspect": _inspect, "autopsy": _autopsy, "export": _export}[args.command](args)
        if args.command == "check-data":
            return _check_data(args)
        if args.command == "report":
            from saelab.report.batch import rerender

            return rerender(args.out)
    except (ValueError, RuntimeError, OSError) as e:  # OSError: a folder for a file, no permission, disk full ...
        print(f"saelab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if args.command == "lab":  # the lab keeps finished jobs and resumes the interrupted one
            print("saelab: interrupted; completed phases and trained jobs are saved: rerun the same command with --force "
                  "to continue (finished jobs are kept, the interrupted one resumes from its last checkpoint)",
                  file=sys.stderr)
            return 128 + int(e.signum) if _interrupted(e) else 130
        if _interrupted(e):  # a training: it names its run directory and checkpoint
            print(f"saelab: {e}", file=sys.stderr)
            return 128 + int(e.signum)
        print("saelab: interrupted; completed phases are saved", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
