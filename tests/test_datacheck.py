"""The data check before training (issue 11): outlier severity gamma, norm outliers, predicted and
measured dead-at-init, on data where the answer is planted; the CLI's JSON and its errors; phase
00 writes the check beside its runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from saelab.cli import main
from saelab.config import RunConfig
from saelab.lab import datacheck, phases
from saelab.lab.base import PROFILES
from saelab.lab.causes import PHASES, normalization
from saelab.lab.hypothesis import Context

SMALL = ["--set", "sae.d_in=64", "--set", "data.n_features=256", "--set", "sae.d_sae=128", "--rows", "8192"]
KEYS = {"rows", "d_in", "gamma", "norm_median", "norm_max_over_median", "dead_at_init_predicted", "dead_at_init_measured"}


def check_json(capsys, *args: str) -> dict:
    assert main(["check-data", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_gamma_ranks_dead_at_init_as_the_initialized_sae_measures_it(capsys):
    found = [check_json(capsys, "synthetic", *SMALL, "--set", f"data.mean_offset={off}") for off in (0, 4, 8, 16, 30)]
    assert all(KEYS <= set(r) for r in found) and found[0]["rows"] == 8192 and found[0]["d_in"] == 64
    gammas = [r["gamma"] for r in found]
    assert gammas == sorted(gammas) and gammas[0] < 1 < 4 < gammas[-1]  # the offset is what raises gamma
    pred = [r["dead_at_init_predicted"] for r in found]
    meas = [r["dead_at_init_measured"] for r in found]
    assert pred[0] < 0.02 and meas[0] < 0.02 and meas[-1] > 0.2  # centered data: nothing dead at init
    assert datacheck.spearman(pred, meas) >= 0.9


def test_rows_far_above_the_median_norm_are_counted(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20_000, 32)).astype(np.float32)
    x[:40] *= 200.0  # 40 sink rows at ~200x the median norm
    np.save(tmp_path / "acts.npy", x)
    r = check_json(capsys, f"file:{tmp_path / 'acts.npy'}")
    assert r["rows"] == 20_000 - 4096 and r["d_in"] == 32  # one pass over the training rows (the last 4,096 are held out)
    assert r["rows_above_100x_median"] == 40 and r["rows_above_10x_median"] == 40
    assert 150 < r["norm_max_over_median"] < 300
    assert "100x the median" in datacheck.markdown(r)


def test_a_bad_source_or_row_count_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["check-data", f"file:{tmp_path / 'missing.npy'}"]) == 2
    assert "missing.npy" in capsys.readouterr().err
    assert main(["check-data", "synthetic", "--rows", "0"]) == 2
    assert "--rows 0" in capsys.readouterr().err


def test_phase_00_writes_the_data_check_beside_its_runs(tmp_path):
    ns = {"profile": "smoke", "seeds": None, "out_dir": str(tmp_path), "source": None, "steps": None, "data_mean_offset": 8.0,
          "overrides": {}, "explorer": False, "base": None, **PHASES["00_reproduce"].defaults()}
    run = phases.prepare("00_reproduce", ns, history=[])
    found = run.data_check(rows=4096)
    saved = json.loads((tmp_path / "data_check.json").read_text())
    assert saved["gamma"] == pytest.approx(found["gamma"]) and found["gamma"] > 1.5
    text = datacheck.markdown(found)
    assert "outlier severity gamma" in text and "dead at init, measured" in text


def test_effective_rank_of_low_rank_and_full_rank_rows_and_whether_h24_applies(tmp_path, capsys):
    """Rows on 4 directions of 32 (plus 1e-3 noise) against isotropic rows: check-data reports how
    many directions hold 99% of the variance, and H24 (phase 04) acts only on the low-rank file."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((32, 4)))[0].T
    files = {"low": rng.standard_normal((12_000, 4)) @ basis + 1e-3 * rng.standard_normal((12_000, 32)),
             "full": rng.standard_normal((12_000, 32))}
    found, applies = {}, {}
    for name, x in files.items():
        np.save(tmp_path / f"{name}.npy", x.astype(np.float32))
        found[name] = check_json(capsys, f"file:{tmp_path / name}.npy", "--set", "sae.d_sae=64", "--rows", "8192")
        cfg = RunConfig().with_overrides({"data.source": f"file:{tmp_path / name}.npy", "sae.d_in": 32, "eval_rows": 1000})
        applies[name] = normalization.H24.applies(Context(cfg, PROFILES["smoke"], {}, False))
    low, full = found["low"], found["full"]
    assert low["rank99"] == 4 and low["rank99_frac"] == 4 / 32 and 3 < low["participation_ratio"] <= 4
    assert full["rank99"] >= 30 and full["participation_ratio"] > 25 and full["top10pct_variance_share"] < 0.2
    assert datacheck.low_rank(low) and not datacheck.low_rank(full)
    assert "4 of 32 directions" in datacheck.format_check(low) and "low-rank" in datacheck.markdown(low)
    assert applies["low"] is None and "not low-rank" in applies["full"]
    on = RunConfig().with_overrides({"data.source": f"file:{tmp_path / 'low'}.npy", "sae.d_in": 32, "sae.init_subspace": 0.99})
    assert "already" in normalization.H24.applies(Context(on, PROFILES["smoke"], {}, False))


def test_the_rank_and_the_sink_rows_are_measured_on_the_stream_shuffled_not_its_first_document():
    """An unshuffled synthetic stream whose 4,096-row documents each use a few features: its first
    rows are one document, which spans about 15 of 32 directions, while the data spans all 32.
    H24 measured the first rows and called the data low-rank (it then outranked H22 on the planted
    unshuffled stream); it must judge the data, shuffled, and not apply."""
    base = {"data.order": "ordered", "data.document_rows": 4096, "data.document_features": 1.0, "sae.d_in": 32, "eval_rows": 1000}
    cfg = RunConfig().with_overrides(base)
    r = normalization._rank(cfg.data, 32, cfg.eval_rows)
    assert r["rank99"] == 32 and not datacheck.low_rank(r)
    assert "not low-rank" in normalization.H24.applies(Context(cfg, PROFILES["smoke"], {}, False))
