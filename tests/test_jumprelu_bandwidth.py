"""H28 (phase 01): the JumpReLU threshold cannot learn because its straight-through bandwidth is
mismatched to the scale of the pre-activations (SAELens #494). It acts only on a jumprelu base
whose bandwidth is more than 10x off the paper's 0.001 per unit of input RMS norm (measured on the
first training rows after the base's normalization); its arm rescales that one field; its judge
names the bandwidth that removes the deaths. The mechanism: the rectangle kernel gives the
threshold a gradient only from rows within half a bandwidth of it, so the count of such rows is
scale-invariant only when the bandwidth scales with the input."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from saelab.config import RunConfig
from saelab.lab.base import PROFILES
from saelab.lab.causes import l1
from saelab.lab.hypothesis import Context, build_arms, diff
from saelab.training.models import _JumpStep, build

STEPS = np.arange(0, 401, 50)
JUMP = {"sae.architecture": "jumprelu", "sae.d_sae": 64, "sae.jumprelu_threshold": 0.001, "penalty.form": "per_sample_sum",
        "penalty.alpha": 0.01, "steps": 400, "data.batch_size": 64, "eval_rows": 1024}
PARAMS = {"penalty_alpha_multipliers": [], "penalty_form": [], "penalty_alpha_task22": False, "sae_decoder_constraint": "none",
          "sae_k_multipliers": [4]}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[float, Path]:
    """Rows of RMS norm ~1 and ~100 (the same Gaussian rows scaled), d_in 16."""
    root = tmp_path_factory.mktemp("bw")
    x = np.random.default_rng(0).standard_normal((6000, 16)).astype(np.float32) / 4  # RMS row norm ~1
    out = {}
    for scale in (1.0, 100.0):
        out[scale] = root / f"x{scale:g}.npy"
        np.save(out[scale], x * scale)
    return out


def ctx(path: Path, **changes) -> Context:
    fields = JUMP | {"data.source": f"file:{path}"} | {k.replace("__", "."): v for k, v in changes.items()}
    return Context(RunConfig().with_overrides(fields), PROFILES["smoke"], PARAMS, False)


def test_applies_only_when_the_bandwidth_is_far_from_the_inputs_scale(files):
    rms, matched = l1.matched_bandwidth(ctx(files[100.0]))
    assert rms == pytest.approx(100, rel=0.05) and matched == pytest.approx(0.1, rel=0.05)
    assert l1.H28.applies(ctx(files[100.0])) is None  # 0.001 at RMS norm 100: 100x too narrow
    why = l1.H28.applies(ctx(files[1.0]))  # the paper's 0.001 at unit RMS norm
    assert "within 10x" in why and "RMS row norm 0.999" in why and "normalize.mode=none" in why
    assert l1.H28.applies(ctx(files[100.0], sae__jumprelu_bandwidth=0.1)) is not None  # matched: the healthy control
    assert l1.H28.applies(ctx(files[1.0], sae__jumprelu_bandwidth=0.5)) is None  # 500x too wide is mismatched too
    # the scale is measured after the base's normalization: sqrt(d_in) = 4 per row, within 10x of 0.001
    assert l1.H28.applies(ctx(files[100.0], normalize__mode="constant_norm_rescale")) is not None
    relu = ctx(files[100.0], sae__architecture="relu")
    assert "relu SAE" in l1.H28.applies(relu)


def test_the_arm_changes_only_the_bandwidth_to_the_matched_value(files):
    c = ctx(files[100.0])
    arms = l1.H28.arms(c)
    assert len(arms) == 1 and list(arms[0].changes) == ["sae.jumprelu_bandwidth"]
    assert arms[0].changes["sae.jumprelu_bandwidth"] == pytest.approx(0.1, rel=0.05)
    assert list(diff(c.base, c.base.with_overrides(dict(arms[0].changes)))) == ["sae.jumprelu_bandwidth"]
    doses = [a.changes["sae.jumprelu_bandwidth"] for a in l1.H28.doses(c)]
    assert doses == sorted(doses) and doses[0] == arms[0].changes["sae.jumprelu_bandwidth"]  # weakest (the arm) first
    plan = build_arms(l1.PHASE, c)  # beside H12's lower thresholds
    assert arms[0].name in plan.arms and "threshold_x0.1" in plan.arms and "H28" not in plan.not_applicable


def run(dead: float) -> SimpleNamespace:
    m = pd.DataFrame({"step": STEPS, "dead_frac": np.full(STEPS.shape, dead), "l0_frac": np.full(STEPS.shape, 4 / 64)})
    m["l0"] = m["l0_frac"] * 64
    return SimpleNamespace(metrics=m, events=[], autopsy=None, latents={}, weights={}, config=None, summary={})


@pytest.mark.parametrize(("arm_dead", "word"), [(0.02, "confirmed"), (0.39, "refuted")])
def test_the_judge_compares_the_matched_bandwidth_with_the_base(files, arm_dead, word):
    c = ctx(files[100.0])
    arms = l1.H28.arms(c)
    runs = {s: {"base": run(0.4), arms[0].name: run(arm_dead)} for s in range(3)}
    v = l1.H28.judge(runs, c, arms)
    assert v["id"] == "H28" and v["verdict"] == word, v["effect"]
    assert "input RMS row norm 99" in v["effect"] or "input RMS row norm 100" in v["effect"]
    if word == "confirmed":
        assert v["fix"] == {"arm": arms[0].name, "changes": dict(arms[0].changes)}


def _rows_with_gradient(pre: torch.Tensor, theta: float, bandwidth: float) -> int:
    """Rows whose threshold gradient is non-zero: each row is put on its own latent (pre [1, 1, B])
    with the same threshold, so the gradient per latent is the gradient per row."""
    t = torch.full((1, 1, pre.numel()), theta, dtype=pre.dtype, requires_grad=True)
    _JumpStep.apply(pre.view(1, 1, -1), t, bandwidth).sum().backward()
    return int((t.grad != 0).sum())


def test_a_bandwidth_that_does_not_scale_with_the_input_starves_the_threshold():
    # 20,000 pre-activations of std 1 around a threshold at 0.5: the paper's 0.001 catches the rows
    # within 0.0005 of it (~0.035% of them, 7 rows); the same rows at 100x the scale with the same
    # bandwidth catch almost none; a bandwidth scaled 100x catches exactly the same rows again
    pre = torch.randn(20_000, generator=torch.Generator().manual_seed(0)).double()
    unit = _rows_with_gradient(pre, 0.5, 0.001)
    assert unit >= 3
    assert _rows_with_gradient(pre * 100, 50.0, 0.001) <= 1
    assert _rows_with_gradient(pre * 100, 50.0, 0.1) == unit


def test_the_log_threshold_gradient_carries_an_extra_factor_theta():
    """d/d log theta = theta d/d theta (SAELens PR #718): a small threshold barely moves."""
    cfg = RunConfig().with_overrides({"sae.architecture": "jumprelu", "sae.d_in": 2, "sae.d_sae": 1,
                                      "sae.jumprelu_threshold": 0.01, "sae.jumprelu_bandwidth": 0.1}).sae
    m = build(cfg, dtype=torch.float64)
    pre = torch.tensor([[[0.02], [0.5], [-0.3]]], dtype=torch.float64)  # only the first row is inside the window
    m.activate(pre).sum().backward()
    # d z / d theta = -(theta / eps) K((pre - theta) / eps): -(0.01 / 0.1) for the one row inside the window
    d_theta = -(0.01 / 0.1)
    assert float(m.log_threshold.grad) == pytest.approx(0.01 * d_theta)
