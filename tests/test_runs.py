"""A run is a directory; loading is the inverse of saving (STYLE.md item 12)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from saelab import fileio
from saelab.config import RunConfig, seed_test1
from saelab.training import runs


def _run(path: Path) -> runs.Run:
    metrics = pd.DataFrame({
        "step": np.array([0, 50, 100], dtype=np.int64),
        "l0": [10.5, 3.25, 1.0],
        "dead_frac": [0.0, 0.125, 0.5],
        "loss": [float("nan"), 0.5, 0.25],  # step 0 has no training batch yet
    })
    return runs.Run(
        path=path,
        name=path.name,
        config=seed_test1().replace(sae={"d_in": 16, "d_sae": 8}),
        metrics=metrics,
        events=[{"step": 0, "kind": "norm_stats", "min": 0.5}, {"step": 50, "kind": "resample", "indices": [1, 4]}],
        summary={"l0": 1.0, "dead_frac": 0.5, "arm": path.name, "source": {"name": "synthetic"}},
        latents={"steps": torch.tensor([0, 50, 100]), "fire_counts": torch.arange(24, dtype=torch.int32).view(3, 8),
                 "eval_rows": torch.tensor(256)},
        weights={"W_enc": torch.randn(8, 16), "b_enc": torch.zeros(8), "W_dec": torch.randn(8, 16), "b_dec": torch.ones(16)},
        autopsy={"n_collapses": 0, "collapses": []},
        lifecycles={"summary": {"n_deaths": 2}, "deaths": [{"latent": 3, "step": 50}]},
        init={"frac_never_positive": 0.25},
    )


def test_save_then_load_gives_back_every_part(tmp_path):
    run = _run(tmp_path / "arm")
    run.save()
    back = runs.load_run(tmp_path / "arm")
    assert back.path == run.path and back.name == "arm"
    assert back.config == run.config
    pd.testing.assert_frame_equal(back.metrics, run.metrics, check_exact=True)
    assert back.events == run.events
    assert back.summary == run.summary
    for part in ("latents", "weights"):
        mine, theirs = getattr(run, part), getattr(back, part)
        assert set(mine) == set(theirs)
        for k in mine:
            assert torch.equal(mine[k], theirs[k]) and mine[k].dtype == theirs[k].dtype, (part, k)
    assert back.autopsy == run.autopsy and back.lifecycles == run.lifecycles and back.init == run.init
    # and saving what was loaded writes the same bytes
    back.path = tmp_path / "again"
    back.save()
    for f in (tmp_path / "arm").iterdir():
        assert f.read_bytes() == (tmp_path / "again" / f.name).read_bytes(), f.name


def test_json_files_hold_no_nan(tmp_path):
    """JSON has no NaN: non-finite numbers are written as null (strict parsers accept the file)."""
    run = _run(tmp_path / "arm")
    run.summary = {"mmcs": float("nan"), "ratio": float("inf"), "nested": [1.0, float("nan")]}
    run.save()
    text = (tmp_path / "arm" / "summary.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) == {
        "mmcs": None, "ratio": None, "nested": [1.0, None]}
    assert math.isnan(runs.load_run(tmp_path / "arm").metrics["loss"][0])  # parquet keeps NaN


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    _run(tmp_path / "arm").save()
    assert sorted(f.name for f in (tmp_path / "arm").iterdir()) == sorted([
        "config.json", "metrics.parquet", "events.jsonl", "summary.json", "latents.safetensors",
        "sae.safetensors", "autopsy.json", "lifecycles.json", "init.json"])
    target = tmp_path / "arm" / "summary.json"
    before = target.read_bytes()

    def crash(tmp):
        Path(tmp).write_text("half a fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.write_via(target, crash)
    assert target.read_bytes() == before  # the old file is untouched
    assert not [f for f in (tmp_path / "arm").iterdir() if f.name.startswith(".")]  # no temp left behind
    with pytest.raises(TypeError):
        fileio.write_json(target, {"x": object()})
    assert target.read_bytes() == before
    assert not [f for f in (tmp_path / "arm").iterdir() if f.name.startswith(".")]


def test_load_run_on_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a saelab run directory"):
        runs.load_run(tmp_path / "notes")
    with pytest.raises(ValueError, match="missing"):
        runs.load_run(tmp_path / "missing")


def test_a_minimal_run_loads_with_empty_parts(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(RunConfig().to_json())
    run = runs.load_run(tmp_path / "r")
    assert run.config == RunConfig()
    assert run.metrics.empty and run.events == [] and run.summary == {} and run.weights == {}


def test_load_arms_keeps_the_order_of_arms_json(tmp_path):
    for name in ("b", "a"):
        _run(tmp_path / name).save()
    fileio.write_json(tmp_path / "arms.json", {"arms": ["b", "a"], "factor": "penalty.form"})
    arms = runs.load_arms(tmp_path)
    assert list(arms) == ["b", "a"] and arms["a"].name == "a"
    single = runs.load_arms(tmp_path / "a")  # a single arm's directory loads as one arm
    assert list(single) == ["a"]


def test_json_takes_numpy_and_torch_values(tmp_path):
    fileio.write_json(tmp_path / "a.json", {
        "np_nan": np.float32("nan"), "np_int": np.int64(3), "t_scalar": torch.tensor(2.5),
        "t_vec": torch.tensor([1, 2]), "arr": np.array([0.5, np.inf]), "flag": np.bool_(True),
    })
    text = (tmp_path / "a.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert fileio.read_json(tmp_path / "a.json") == {
        "np_nan": None, "np_int": 3, "t_scalar": 2.5, "t_vec": [1, 2], "arr": [0.5, None], "flag": True}
    fileio.write_jsonl(tmp_path / "e.jsonl", [{"step": np.int64(5), "x": np.float64("nan")}])
    assert fileio.read_jsonl(tmp_path / "e.jsonl") == [{"step": 5, "x": None}]


def test_saved_files_are_readable_by_others_and_respect_the_umask(tmp_path):
    """mkstemp creates 0600 and a rename keeps it; a run shared or served must read like any file
    (0644 under umask 022, 0640 under 027): issue 15."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        _run(tmp_path / "a").save()
        os.umask(0o027)
        _run(tmp_path / "b").save()
    finally:
        os.umask(old)
    for name, mode in (("a", 0o644), ("b", 0o640)):
        files = [p for p in (tmp_path / name).iterdir() if p.is_file()]
        assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {mode}, name


def test_config_and_summary_record_which_saelab_wrote_them_and_loading_ignores_it(tmp_path):
    from saelab import __version__
    from saelab.version import commit

    run = _run(tmp_path / "a")
    run.save()
    raw = json.loads((tmp_path / "a" / "config.json").read_text())
    assert raw["saelab"] == {"version": __version__, "commit": commit()}
    assert runs.load_run(tmp_path / "a").config == run.config  # the provenance key is not a field
    from saelab.lab.base import load_base

    base = load_base(str(tmp_path / "a"))
    assert base.config == run.config and not any(f.startswith("saelab") for f in base.pinned)
