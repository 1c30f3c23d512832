"""The command line: presets, train, resume, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from saelab.cli import main
from saelab.config import PRESETS, preset
from saelab.training import runs, train

SMALL = ["--set", "steps=20", "--set", "sae.d_sae=32", "--set", "eval_rows=256", "--set", "log_interval=10"]



def test_presets_lists_every_preset_on_one_line_each(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert all(len(line.split()) > 3 for line in lines)  # a name and a description


def test_train_a_preset_prints_its_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "seed-test1", *SMALL, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed
    for key in ("l0=", "dead_frac=", "fvu=", "l1_recon_ratio="):
        assert key in printed
    run = runs.load_run(out)
    assert run.config == preset("seed-test1").with_overrides(["steps=20", "sae.d_sae=32", "eval_rows=256", "log_interval=10",
                                                              "sae.d_in=768"])
    assert run.metrics["step"].tolist() == [0, 10, 20]
    assert f"{run.summary['l0']:.4g}" in printed


def test_training_into_an_existing_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    before = (out / "metrics.parquet").read_bytes()
    assert main(["train", *SMALL, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "already holds a run" in err and "--resume" in err
    assert (out / "metrics.parquet").read_bytes() == before  # nothing was overwritten


def test_resume_finishes_an_interrupted_run(tmp_path, capsys):
    cfg = preset("seed-test1").with_overrides(["steps=20", "sae.d_sae=32", "eval_rows=256", "log_interval=10"])
    train.train(cfg, tmp_path / "run", progress=False, stop_at=10)
    assert runs.load_run(tmp_path / "run").metrics["step"].tolist() == [0, 10]
    assert main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 0
    assert "run directory" in capsys.readouterr().out
    assert runs.load_run(tmp_path / "run").metrics["step"].tolist() == [0, 10, 20]


@pytest.mark.parametrize(
    "args, field",
    [
        (["--set", "sae.d_sae=-3"], "sae.d_sae"),
        (["--set", "sae.dsae=64"], "sae.d_sae"),  # unknown: the nearest valid name is suggested
        (["--set", "optim.lr=fast"], "optim.lr"),
        (["--set", "penalty.form=l2"], "penalty.form"),
        (["--set", "steps"], "path=value"),
        (["--preset", "seed-tset1"], "seed-test1"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_code_2(tmp_path, capsys, args, field):
    assert main(["train", *args, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saelab: error:") and field in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "r").exists()


def test_resume_of_a_directory_without_a_run_is_one_line(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err


def test_the_installed_entry_point_reports_errors_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "saelab.cli", "train", "--set", "sae.d_sae=0", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "sae.d_sae" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_refuses_settings_it_would_ignore(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--set", "steps=50", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err and "--set" in err


def test_a_config_file_names_the_default_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = preset("seed-test1").with_overrides(["steps=5", "sae.d_sae=16", "eval_rows=64", "log_interval=5"])
    (tmp_path / "mine.json").write_text(cfg.to_json())
    assert main(["train", "--config", "mine.json", "--quiet"]) == 0
    assert runs.load_run(tmp_path / "reports" / "runs" / "mine").config.steps == 5


# ----- issue 14: every bad input is one line naming the file or field, exit code 2 -------------


def _one_line(capsys, *needles):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saelab: error:") and "Traceback" not in captured.err, captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args, field", [
    (["--set", "log_interval=50"], "log_interval=50 must be <= steps=20"),
    (["--set", "checkpoint_every=30"], "checkpoint_every=30 must be <= steps=20"),
    (["--set", "steps=1e20"], "steps="),
    (["--set", "steps=2000000000", "--set", "log_interval=10"], "steps=2000000000 is absurd"),
    (["--set", "data.batch_size=1e9"], "data.batch_size=1000000000 needs about"),
    (["--set", "sae.d_sae=1e9"], "sae.d_sae=1000000000 needs about"),
])
def test_bad_lengths_and_sizes_are_refused_before_any_file_is_written(tmp_path, capsys, args, field):
    assert main(["train", *SMALL, *args, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    _one_line(capsys, field)
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a torch without a usable GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    assert main(["train", *SMALL, "--set", "device=cuda", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    _one_line(capsys, "device='cuda'", "device=cpu")
    assert not (tmp_path / "r").exists()


def test_a_folder_as_config_is_one_line(tmp_path, capsys):
    assert main(["train", "--config", ".", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    _one_line(capsys, "--config .", "folder")
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["train", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    _one_line(capsys, "bad.json", "not valid JSON")


@pytest.fixture()
def unfinished(tmp_path):
    cfg = preset("seed-test1").with_overrides(["steps=20", "sae.d_sae=32", "eval_rows=256", "log_interval=10"])
    train.train(cfg, tmp_path / "run", progress=False, stop_at=10)
    return tmp_path / "run"


@pytest.mark.parametrize("name, damage, problem", [
    ("checkpoint.safetensors", lambda b: b[: len(b) // 2], "checkpoint.safetensors: is not a readable safetensors file"),
    ("latents.safetensors", lambda b: b[: len(b) - 7], "latents.safetensors: is not a readable safetensors file"),
    ("events.jsonl", lambda b: b + b'{"step": 3, "ki', "events.jsonl: line"),
    ("config.json", lambda b: b[:40], "config.json: is not valid JSON"),
    ("config.json", lambda b: b.replace(b'"d_sae": 32', b'"d_sae": -1'), "config.json: sae.d_sae=-1"),
    ("metrics.parquet", lambda b: b[:100], "metrics.parquet: is not a readable parquet file"),
])
def test_a_damaged_run_file_is_one_line_naming_it(unfinished, capsys, name, damage, problem):
    path = unfinished / name
    path.write_bytes(damage(path.read_bytes()))
    assert main(["train", "--resume", str(unfinished), "--quiet"]) == 2
    _one_line(capsys, problem)


def test_sigterm_prints_the_real_path_and_resume_command_then_resume_finishes(tmp_path, capsys, monkeypatch):
    import os
    import signal

    real = train._run

    def terminated(*args, **kwargs):  # a SIGTERM arrives after step 7
        kwargs["on_step"] = lambda done: os.kill(os.getpid(), signal.SIGTERM) if done == 7 else None
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "_run", terminated)
    out = tmp_path / "my run"
    assert main(["train", *SMALL, "--out", str(out), "--quiet"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "DIR" not in err
    assert f"checkpoint at step 7 in {out.resolve()}" in err and f"saelab train --resume '{out}'" in err
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert runs.load_run(out).metrics["step"].tolist() == [0, 10, 20]


def test_version_names_the_package_version(capsys):
    from saelab import __version__
    from saelab.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith(f"saelab {__version__}")
