"""The user's own path through the command line (issue 20): a partial base that leaves d_in to the
data, relative --base / --data paths given from another folder, and bad foreign input stopped
with one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saelab.cli import absolute_paths, main
from saelab.data.sources import make_source, resolve
from saelab.lab import phases
from saelab.lab.causes import PHASES
from saelab.lab.plan import plan_lab

pytestmark = pytest.mark.slow


def _rows(path: Path, n: int = 2048, d: int = 24, seed: int = 0) -> None:
    g = np.random.default_rng(seed)
    np.save(path, (np.maximum(g.standard_normal((n, 48)), 0) @ g.standard_normal((48, d)) + 3.0).astype(np.float32))


def test_a_partial_base_without_d_in_and_relative_paths_from_another_folder_run_every_phase(tmp_path, monkeypatch):
    """`saelab lab --base c1/base.json --data file:c1/acts.npy` from the folder above: every notebook
    runs elsewhere, every phase (00 included) is ok, the exit status is 0."""
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "base.json").write_text(json.dumps({"sae": {"architecture": "relu"}}))  # no d_in
    _rows(tmp_path / "c1" / "acts.npy")
    monkeypatch.chdir(tmp_path)
    assert main(["lab", "--profile", "smoke", "--base", "c1/base.json", "--data", "file:c1/acts.npy", "--out", "out"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["stem"], r["status"]) for r in results] == [(s, "ok") for s in (
        "00_reproduce", "01_l1_penalty", "02_lr_warmup", "03_resampling", "04_normalization", "05_reanimation", "06_validation")]
    check = json.loads((tmp_path / "out" / "runs" / "00_reproduce" / "data_check.json").read_text())
    assert check["d_in"] == 24 and check["dead_at_init_rows"] <= 256  # the smoke profile's held-out rows


def test_at_the_quick_profile_a_partial_base_on_a_small_file_fits_every_phase_to_the_file(tmp_path):
    """The quick profile's sizes (1,024 held-out rows, 256 latents, the data check's dead-at-init
    rows) against a 2,048-row file and a base without d_in: every planned arm of every phase
    resolves d_in from the file and gets its held-out rows, and phase 00's data check runs, without
    training anything. (The whole quick lab on this file: all 7 phases ok, exit 0, 3 min 13 s on
    2026-12-04, run by hand; the smoke profile's lab is the test above.)"""
    (tmp_path / "base.json").write_text(json.dumps({"sae": {"architecture": "relu"}}))  # no d_in
    _rows(tmp_path / "acts.npy")
    plan = plan_lab("quick", list(PHASES), {"base": str(tmp_path / "base.json"), "source": f"file:{tmp_path / 'acts.npy'}"},
                    tmp_path / "lab")
    assert set(plan.runs) == set(plan.first) and "00_reproduce" in plan.runs
    for stem, run in plan.runs.items():
        for seed, arms in run.arms.items():
            for arm, cfg in arms.items():
                source = make_source(cfg)
                assert resolve(cfg, source).sae.d_in == 24, (stem, seed, arm)
                assert cfg.eval_rows <= 2048 // 4 and source.eval_set(cfg.eval_rows).shape == (cfg.eval_rows, 24), (stem, seed, arm)
    check = plan.runs["00_reproduce"].data_check()
    assert check["d_in"] == 24 and check["dead_at_init_rows"] == 512  # the quick profile's 1,024 fitted to the file


def test_paths_are_made_absolute_once_against_the_callers_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.json").write_text("{}")
    got = absolute_paths({"base": "b.json", "source": "file:shards/*.safetensors#acts", "steps": 5})
    assert got == {"base": str(tmp_path / "b.json"), "source": f"file:{tmp_path}/shards/*.safetensors#acts", "steps": 5}
    assert absolute_paths({"base": "seed-test1", "source": "synthetic"}) == {"base": "seed-test1", "source": "synthetic"}


def _saelens_folder(folder: Path, cfg: dict, d_in: int = 24, d_sae: int = 48) -> Path:
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(0)
    save_file({"W_enc": torch.randn(d_in, d_sae, generator=g), "b_enc": torch.zeros(d_sae),
               "W_dec": torch.randn(d_sae, d_in, generator=g), "b_dec": torch.zeros(d_in)}, str(folder / "sae_weights.safetensors"))
    return folder


@pytest.mark.parametrize("command, cfg, message", [
    # a checkpoint whose cfg.json disagrees with its tensors
    ("inspect", {"architecture": "standard", "d_in": 24, "d_sae": 300}, "cfg.json says d_sae=300 but the weights have 48 latents"),
    # a config from a newer SAELens with a field saelab does not know
    ("inspect", {"architecture": "standard", "d_in": 24, "d_sae": 48, "warp_drive": True}, "'warp_drive'=True is unknown"),
    ("lab", {"architecture": "standard", "d_in": 24, "d_sae": 48, "warp_drive": True}, "'warp_drive'=True is unknown"),
    # a training config whose d_in differs from the data's width
    ("lab", {"architecture": "standard", "d_in": 32, "d_sae": 48}, "sae.d_in=32 but activation file"),
])
def test_bad_foreign_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, command, cfg, message):
    folder = _saelens_folder(tmp_path / "sae", cfg)
    _rows(tmp_path / "acts.npy")
    out = tmp_path / "out"
    args = ["inspect", str(folder)] if command == "inspect" else ["lab", "--profile", "smoke", "--base", str(folder / "cfg.json")]
    assert main([*args, "--data", f"file:{tmp_path / 'acts.npy'}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    if "d_in=32" in message:
        assert "width d_in=24" in err  # both values named
    assert not out.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]


def test_the_profile_fits_the_held_out_rows_to_a_small_file(tmp_path):
    """The quick profile holds out 1,024 rows; a file of 1,000 keeps 3/4 of its rows for training
    instead of being refused (eval_rows is the profile's to set when the base leaves it open)."""
    _rows(tmp_path / "acts.npy", n=1000)
    (tmp_path / "base.json").write_text(json.dumps({"sae": {"architecture": "relu"}}))
    built = phases.build("00_reproduce", "quick", 0, str(tmp_path / "base.json"), f"file:{tmp_path / 'acts.npy'}")
    assert built.ctx.base.eval_rows == 250 and built.profile_set["eval_rows"] == 250
    (tmp_path / "pinned.json").write_text(json.dumps({"sae": {"architecture": "relu"}, "eval_rows": 100}))
    pinned = phases.build("00_reproduce", "quick", 0, str(tmp_path / "pinned.json"), f"file:{tmp_path / 'acts.npy'}")
    assert pinned.ctx.base.eval_rows == 100
