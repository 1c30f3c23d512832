"""Command line: ``saelab presets | train | lab | report``. Errors are one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SUMMARY_KEYS = ("steps", "l0", "l0_frac", "dead_frac", "dead_frac_batch", "mse", "fvu", "l1_recon_ratio",
                "mmcs", "frac_recovered", "wall_seconds", "steps_per_second")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saelab", description="Why do SAE latents die? A lab of phases.")
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
    lab.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    lab.add_argument("--out", type=Path, default=Path("reports/lab"))
    lab.add_argument("--only", default="", help="comma-separated phase prefixes, e.g. 01,03")
    lab.add_argument("--force", action="store_true",
                     help="rerun phases into an --out that already holds a report (a phase that fails keeps its previous result)")
    lab.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                     help="extra notebook parameter passed to every phase (value parsed as JSON when possible)")
    rep = sub.add_parser("report", help="re-render the HTML pages and index of executed notebooks")
    rep.add_argument("--out", type=Path, default=Path("reports/lab"))
    return p


def _print_summary(runs: dict) -> None:
    for name, run in runs.items():
        s = run.summary
        print(f"{name}: " + ", ".join(f"{k}={s[k]:.4g}" if isinstance(s.get(k), float) else f"{k}={s.get(k)}"
                                      for k in SUMMARY_KEYS if k in s))
        print(f"  run directory: {run.path}")
        if run.autopsy:
            from saelab.diagnose import format_autopsy

            print("  " + format_autopsy(run.autopsy).replace("\n", "\n  "))


def _train(args: argparse.Namespace) -> int:
    from saelab import config, train

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
            from saelab.runs import _read_config

            cfg = _read_config(args.config)
        else:
            cfg = config.preset(args.preset)
        cfg = cfg.with_overrides(args.overrides)
        out = args.out or Path("reports/runs") / (args.config.stem if args.config else args.preset)
        if (out / "config.json").exists() or (out / "arms.json").exists():
            how = "finished" if (out / "summary.json").exists() else "unfinished"
            raise ValueError(f"{out} already holds a run ({how}); train into another --out (or continue an unfinished "
                             f"one with --resume {out})")
        runs = train.train(cfg, out, progress=not args.quiet, keep_checkpoint=args.keep_checkpoint)
    _print_summary(runs)
    return 0


def _parse_param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise ValueError(f"parameter {text!r} must look like name=value")
    name, raw = text.split("=", 1)
    from saelab.params import check_parameters

    check_parameters({name: raw}, {"-p": None})  # a name is code in papermill's cell: identifiers only
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "presets":
            from saelab.config import PRESETS, preset_summary

            for name in PRESETS:
                print(f"{name:22s} {preset_summary(name)}")
            return 0
        if args.command == "train":
            return _train(args)
        if args.command == "lab":
            from saelab.report import run_lab

            only = [s.strip() for s in args.only.split(",") if s.strip()] or None
            params = dict(_parse_param(p) for p in args.parameter)
            return run_lab(profile=args.profile, out=args.out, only=only, parameters=params or None, force=args.force)
        if args.command == "report":
            from saelab.report import rerender

            return rerender(args.out)
    except (ValueError, RuntimeError, OSError) as e:  # OSError: a folder for a file, no permission, disk full ...
        print(f"saelab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from saelab.train import Interrupted

        if isinstance(e, Interrupted):  # a training: it names its run directory and checkpoint
            print(f"saelab: {e}", file=sys.stderr)
            return 128 + int(e.signum)
        print("saelab: interrupted; completed phases are saved", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
