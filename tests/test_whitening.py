"""normalize.mode=whitening (ZCA, with an exact inverse so the FVU is measured in the original space)
and H26 (phase 04): anisotropic activations, where a few directions hold most of the variance and
the latents of the quiet ones never win. H26 applies from the data's covariance spectrum, its one arm
changes normalize.mode only, and its judge confirms or refutes on fake runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from saelab.config import NormalizeConfig, RunConfig
from saelab.lab.base import PROFILES
from saelab.lab.causes import normalization as nz
from saelab.lab.hypothesis import Context, diff
from saelab.training import stack, train
from saelab.training.normalize import WHITEN_FLOOR, make_normalizer


def _aniso(n: int, d: int, ratio: float, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Rows with an offset, the first two directions at ``ratio`` times the std of the rest."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[:, :2] *= ratio
    return (x + 3.0).to(dtype)


def _fitted(d: int = 8, ratio: float = 30.0):
    norm = make_normalizer(NormalizeConfig(mode="whitening", estimate_batches=2), d)
    norm.fit(_aniso(64, d, ratio, seed=s) for s in range(10))
    return norm


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("shape", [(200,), (3, 200)], ids=["rows", "arms"])
def test_whitening_round_trips_to_the_original_space(dtype, tol, shape):
    norm = _fitted()
    x = _aniso(200, 8, 30.0, seed=99, dtype=dtype).expand(*shape, 8)
    n, info = norm(x)
    assert n.shape == x.shape and n.dtype == dtype
    torch.testing.assert_close(norm.inverse(n, info), x, rtol=tol, atol=tol * 30)


def test_whitening_gives_unit_variance_in_every_direction_and_floors_empty_ones():
    assert _fitted().spectrum["rows"] == 128  # estimate_batches=2 batches of 64 rows: above 4 rows per dimension
    norm = make_normalizer(NormalizeConfig(mode="whitening", estimate_batches=1), 8)
    rows = _aniso(4000, 8, 100.0, seed=7)
    norm.fit([rows])
    n, _ = norm(rows)
    cov = n.T @ n / n.shape[0]  # on the rows it was fitted on: the identity, the mean zero, to rounding
    torch.testing.assert_close(cov, torch.eye(8, dtype=cov.dtype), atol=1e-9, rtol=0)
    assert n.mean(0).abs().max() < 1e-9
    # a direction with no variance is raised to the floor, not blown up: scaled 1/sqrt(floor) less than the top one
    x = _aniso(2000, 8, 1.0)
    x[:, 5] = 1.0
    flat = make_normalizer(NormalizeConfig(mode="whitening"), 8)
    flat.fit([x])
    assert flat.spectrum["floored"] == 1
    w = torch.linalg.eigvalsh(flat.whiten)
    assert float(w.max() / w.min()) == pytest.approx(1 / math.sqrt(WHITEN_FLOOR), rel=1e-6)  # 1000x, no more
    back = flat.inverse(*flat(x))
    torch.testing.assert_close(back, x, rtol=1e-10, atol=1e-10)


def test_whitening_state_round_trips_and_refuses_before_fit():
    norm = _fitted()
    other = make_normalizer(NormalizeConfig(mode="whitening"), 8)
    with pytest.raises(RuntimeError, match="before fit"):
        other(torch.zeros(2, 8))
    other.load_state_dict(norm.state_dict())
    other.load_tensors(norm.tensors())
    x = _aniso(50, 8, 30.0, seed=5)
    assert torch.equal(other(x)[0], norm(x)[0]) and other.state_dict() == norm.state_dict()
    with pytest.raises(ValueError, match="expected"):
        other.load_tensors(norm.tensors() | {"whiten": torch.eye(4)})
    assert make_normalizer(NormalizeConfig(mode="dataset_scalar"), 8).tensors() == {}


def test_the_original_space_fvu_uses_the_inverse():
    """stack.evaluate's fvu_orig maps each arm's reconstruction back through its normalizer: an SAE
    that reconstructs the whitened rows perfectly has fvu_orig 0 (and fvu 0 in whitened space)."""
    cfg = RunConfig().with_overrides({"sae.d_in": 8, "sae.d_sae": 8, "normalize.mode": "whitening", "data.batch_size": 64})
    x = _aniso(512, 8, 30.0, dtype=torch.float32)
    source = SimpleNamespace(d_in=8, batch=lambda s, b: _aniso(b, 8, 30.0, seed=s, dtype=torch.float32))
    g = stack.build_groups([cfg], source, torch.device("cpu"))[0]
    with torch.no_grad():  # an identity SAE with ReLU: pre-activations W x + b_enc with b_enc large, decode subtracts it back
        m = g.model
        m.W_enc[0] = torch.eye(8)
        m.W_dec[0] = torch.eye(8)
        m.b_enc[0] = 100.0
        m.b_dec[0] = -100.0
    ev = stack.evaluate(g, x)
    assert float(ev["fvu"][0]) < 1e-10 and float(ev["fvu_orig"][0]) < 1e-8


def test_whitening_survives_a_checkpoint_resume(tmp_path):
    base = RunConfig().with_overrides({
        "sae.d_in": 16, "sae.d_sae": 32, "data.n_features": 48, "data.batch_size": 32, "steps": 60, "log_interval": 20,
        "eval_rows": 256, "normalize.mode": "whitening", "normalize.estimate_batches": 2, "tracking.dead_tokens": 320})
    straight = train.train({"w": base}, tmp_path / "a", progress=False)
    train.train({"w": base}, tmp_path / "b", progress=False, stop_at=20)
    meta = train.read_checkpoint_meta(tmp_path / "b")
    assert meta["normalizers"][0][0]["spectrum"]["rows"] >= 64
    resumed = train.train(None, tmp_path / "b", resume=True, progress=False)
    pd.testing.assert_frame_equal(resumed["w"].metrics, straight["w"].metrics, check_exact=True)


# ----- H26 ----------------------------------------------------------------------------------------


def _ctx(spectrum: dict | None = None, **changes) -> Context:
    cfg = RunConfig().with_overrides({"sae.d_in": 64, "sae.d_sae": 64} | {k.replace("__", "."): v for k, v in changes.items()})
    return Context(cfg, PROFILES["smoke"], {}, False)


def _spectrum(pr: float | None, rows: int = 4096, d: int = 64) -> dict:
    return {"participation_ratio": pr, "top1_variance_share": 0.3, "top10pct_variance_share": 0.8, "spectrum_rows": rows, "d_in": d,
            "rank99": 40, "rank99_frac": 40 / d}


@pytest.fixture
def spectrum(monkeypatch):
    """Replace the measured spectrum (phase 04 reads the base's rows once) by a given one."""
    box = {}
    monkeypatch.setattr(nz, "_rank", lambda *a: box["s"])
    return box


def test_h26_applies_only_to_an_anisotropic_spectrum_on_a_base_that_does_not_whiten(spectrum):
    spectrum["s"] = _spectrum(6.0)  # a few directions hold most of the variance
    assert nz.H26.applies(_ctx()) is None
    assert "already whitens" in nz.H26.applies(_ctx(normalize__mode="whitening"))
    spectrum["s"] = _spectrum(48.0)  # near-isotropic: the measured number is named
    why = nz.H26.applies(_ctx())
    assert "not anisotropic" in why and "48" in why and "75%" in why
    spectrum["s"] = _spectrum(nz.ANISOTROPY_PR_FRACTION * 64)  # at the line: anisotropic
    assert nz.H26.applies(_ctx()) is None
    spectrum["s"] = _spectrum(None)
    assert "not measured" in nz.H26.applies(_ctx())
    spectrum["s"] = _spectrum(6.0, rows=100)
    assert "too few rows" in nz.H26.applies(_ctx())


def test_h26_measures_the_real_spectrum_of_planted_rows(tmp_path):
    """The rule on real rows: 2 of 16 directions at 10x the std of the rest applies, the same rows
    isotropic do not."""
    for ratio, applies in ((10.0, True), (1.0, False)):
        path = tmp_path / f"x{ratio}.npy"
        np.save(path, _aniso(8192, 16, ratio, seed=1, dtype=torch.float32).numpy())
        cfg = RunConfig().with_overrides({"data.source": f"file:{path}", "sae.d_sae": 64, "eval_rows": 512})
        c = Context(cfg, PROFILES["smoke"], {}, False)
        assert (nz.H26.applies(c) is None) == applies, nz.H26.applies(c)


def test_h26_arm_changes_normalize_mode_only():
    c = _ctx(normalize__mode="dataset_scalar")
    arms = nz.H26.arms(c)
    assert [a.name for a in arms] == ["whitening"] and nz.H26.factor == ("normalize.mode",)
    assert list(diff(c.base, c.base.with_overrides(dict(arms[0].changes)))) == ["normalize.mode"]
    assert nz.H26 in nz.PHASE.hypotheses and nz.H24 in nz.PHASE.hypotheses  # both may apply: init vs normalization


STEPS = np.arange(0, 401, 50)


def _run(dead: float, fvu: float = 0.1) -> SimpleNamespace:
    m = pd.DataFrame({"step": STEPS, "dead_frac": np.full(STEPS.shape, dead), "l0_frac": np.full(STEPS.shape, 4 / 64),
                      "fvu_orig": np.full(STEPS.shape, fvu)})
    m["l0"] = m["l0_frac"] * 64
    return SimpleNamespace(metrics=m, events=[], autopsy=None, latents={}, weights={}, config=_ctx().base, summary={})


@pytest.mark.parametrize(("white_dead", "word"), [(0.05, "confirmed"), (0.29, "refuted")])
def test_h26_judge_confirms_when_whitening_removes_the_deaths(spectrum, white_dead, word):
    spectrum["s"] = _spectrum(6.0)
    c = _ctx()
    arms = nz.H26.arms(c)
    runs = {s: {"base": _run(0.3, 0.05), "whitening": _run(white_dead, 0.2)} for s in range(3)}
    v = nz.H26.judge(runs, c, arms)
    assert v["id"] == "H26" and v["verdict"] == word, v["effect"]
    assert v["numbers"]["participation_ratio"] == 6.0 and v["numbers"]["whitening_fvu_orig"] == pytest.approx(0.2)
    assert "participation ratio 6" in v["effect"] and "final FVU" in v["effect"]
    assert v["fix"] == {"arm": "whitening", "changes": {"normalize.mode": "whitening"}}


def test_h26_measures_the_data_without_its_sink_rows(tmp_path):
    """A few rows at 1000x the median norm make isotropic data look anisotropic: that is H23's cause
    (sparsify's sink fixture had whitening ranked above dropping the sinks), so H26 does not apply."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20_000, 16)).astype(np.float32)
    x[::50] = 1000 * np.median(np.linalg.norm(x, axis=1)) * np.eye(16, dtype=np.float32)[0]
    np.save(tmp_path / "sinks.npy", x)
    cfg = RunConfig().with_overrides({"data.source": f"file:{tmp_path / 'sinks.npy'}", "sae.d_in": 16, "eval_rows": 1000})
    assert "not anisotropic" in nz.H26.applies(Context(cfg, PROFILES["smoke"], {}, False))
