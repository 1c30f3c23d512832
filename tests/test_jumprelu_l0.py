"""penalty.form "l0" (JumpReLU only): the paper's sparsity loss, alpha x the mean over rows of the
number of latents above their threshold (Rajamanoharan et al. 2024, eq. 10; SAELens' l0_coefficient
with jumprelu_sparsity_loss_mode "step"). Its gradient reaches only the thresholds, through the
rectangle kernel of width sae.jumprelu_bandwidth: d/dtheta = -(1/bandwidth) K((pre - theta)/bandwidth),
none to the pre-activations. Its alpha is in its own unit, so phase 01 never converts an L1 alpha
into it."""

from __future__ import annotations

import pytest
import torch

from saelab.config import RunConfig
from saelab.lab.base import PROFILES
from saelab.lab.causes import l1
from saelab.lab.hypothesis import Context, build_arms
from saelab.training import losses
from saelab.training.models import build
from saelab.training.stack import forward_losses

JUMP = {"sae.architecture": "jumprelu", "sae.d_in": 16, "sae.d_sae": 32, "penalty.form": "l0", "penalty.alpha": 0.01,
        "sae.jumprelu_threshold": 0.3, "sae.jumprelu_bandwidth": 0.2, "steps": 40, "log_interval": 20,
        "data.batch_size": 64, "eval_rows": 256}


def cfg(**changes) -> RunConfig:
    return RunConfig().with_overrides(JUMP | {k.replace("__", "."): v for k, v in changes.items()})


def _paper(pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The L0 term and its threshold gradient written out: L = (1/B) sum_b sum_i H(pre_bi - theta_i),
    dL/dtheta_i = (1/B) sum_b -(1/bandwidth) rect((pre_bi - theta_i)/bandwidth), rect(u) = 1 on -1/2 < u < 1/2."""
    B = pre.shape[-2]
    value = (pre > theta).double().sum(-1).sum(-1) / B
    u = (pre - theta) / bandwidth
    rect = ((u > -0.5) & (u < 0.5)).double()
    grad = -(rect / bandwidth).sum(-2) / B  # [K, S]
    return value, grad


@pytest.mark.parametrize("bandwidth", [0.5, 0.05])
def test_value_and_threshold_gradient_are_the_papers(bandwidth):
    g = torch.Generator().manual_seed(0)
    K, B, S = 2, 256, 12
    pre = torch.randn(K, B, S, generator=g, dtype=torch.float64).requires_grad_()
    theta = (torch.rand(K, 1, S, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    pen = losses.l0_penalty(pre, theta, bandwidth)
    value, grad = _paper(pre.detach(), theta.detach(), bandwidth)
    assert pen.shape == (K,) and torch.allclose(pen, value)
    weights = torch.tensor([1.0, 3.0], dtype=torch.float64)  # per-arm weights: each arm gets its own gradient
    (weights * pen).sum().backward()
    assert torch.allclose(theta.grad.squeeze(1), weights[:, None] * grad)
    assert bool((theta.grad != 0).any())  # some rows sit inside the window
    assert pre.grad is None  # no gradient to the pre-activations through the step


def test_the_training_step_uses_it_per_arm_and_the_log_threshold_gets_theta_times_the_gradient():
    c = cfg()
    model = build(c.sae, n_arms=2, dtype=torch.float64)
    with torch.no_grad():
        model.log_threshold.copy_(torch.rand(2, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64).log())
    X = torch.randn(2, 64, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pre, codes, x_hat, rec, pen_grad = forward_losses(model, X, ("mse_mean", "mse_mean"), ("l0", "per_sample_sum"))
    pen = pen_grad.detach()
    theta = model.log_threshold.exp().detach().unsqueeze(1)
    value, grad = _paper(pre.detach(), theta, c.sae.jumprelu_bandwidth)
    assert float(pen[0]) == pytest.approx(float(value[0]))
    assert float(pen[1]) == pytest.approx(float(codes[1].detach().abs().sum(-1).mean()))  # the other arm keeps its L1
    assert float(pen[0]) == pytest.approx(float((codes[0] > 0).sum(-1).double().mean()))  # = the L0 of the codes
    model.zero_grad()
    pen_grad[0].backward()
    assert torch.allclose(model.log_threshold.grad[0], theta[0, 0] * grad[0])  # d/d log theta = theta d/dtheta
    assert float(model.W_enc.grad.abs().sum()) == 0 and float(model.b_enc.grad.abs().sum()) == 0  # nothing to pre


def test_refused_for_other_architectures():
    for arch, extra in (("relu", {}), ("topk", {"sae.k": 4}), ("batchtopk", {"sae.k": 4})):
        with pytest.raises(ValueError, match=r"penalty.form='l0'.*sae.architecture='" + arch):
            RunConfig().with_overrides({"sae.architecture": arch, "penalty.form": "l0"} | extra)
    assert cfg().penalty.form == "l0"


def test_a_few_training_steps_raise_the_thresholds(tmp_path):
    from saelab.training import train

    runs = train.train({"l0": cfg(), "l0_x10": cfg(penalty__alpha=0.1)}, tmp_path / "run", progress=False)
    for name, r in runs.items():
        m = r.metrics
        assert m[["l0", "dead_frac"]].notna().all().all(), name
    theta = {n: r.weights["log_threshold"].exp().mean().item() for n, r in runs.items()}
    assert theta["l0_x10"] > theta["l0"] > 0.3  # the L0 term only pushes thresholds up; more alpha, more push


def _ctx(**changes) -> Context:
    params = {"penalty_alpha_multipliers": [0.1, 10], "penalty_form": ["mean_all", "per_sample_sum"],
              "penalty_alpha_task22": True, "sae_decoder_constraint": "unit_norm", "sae_k_multipliers": [4]}
    return Context(cfg(**changes), PROFILES["smoke"], params, False)


def test_phase_01_multiplies_an_l0_alpha_and_never_converts_an_l1_alpha_into_it():
    c = _ctx()
    assert [dict(a.changes) for a in l1.H1S.arms(c)] == [{"penalty.alpha": pytest.approx(0.001)}]
    assert [dict(a.changes) for a in l1.H1.arms(c)] == [{"penalty.alpha": pytest.approx(0.1)}]
    assert "penalty.form=l0" in l1.H1A.applies(c)  # no L1 reduction to change (and no alpha conversion)
    assert "mean-over-all" in l1.H1B.applies(c)
    assert "counts firing latents" in l1.H7.applies(c)
    plan = build_arms(l1.PHASE, c)
    assert all(cfg_.penalty.form == "l0" for cfg_ in plan.arms.values())
    with pytest.raises(ValueError):
        losses.convert_alpha(0.01, "per_sample_sum", "l0", 64, 32)
    l1_base = _ctx(penalty__form="per_sample_sum", penalty__alpha=0.003)  # an L1 base's form arms stay L1
    assert "l0" not in [dict(a.changes).get("penalty.form") for a in l1.H1A.arms(l1_base)]
    with pytest.raises(ValueError, match="penalty_form"):
        l1.H1A.arms(Context(l1_base.base, l1_base.profile, l1_base.params | {"penalty_form": ["l0"]}, False))


SAELENS_JUMPRELU = {"d_in": 16, "d_sae": 32, "architecture": "jumprelu", "jumprelu_init_threshold": 0.01,
                    "jumprelu_bandwidth": 0.05, "l0_coefficient": 2.0, "jumprelu_sparsity_loss_mode": "step"}


@pytest.mark.parametrize("changes, alpha, said", [
    ({}, 2.0, None),  # SAELens 6 with the step L0: mapped, nothing assumed about the penalty
    ({"jumprelu_sparsity_loss_mode": None}, 2.0, None),  # absent (older versions): step
    ({"l0_coefficient": None, "l1_coefficient": 0.5}, 0.5, "SAELens before 6 scaled the step L0"),
    ({"l0_coefficient": None}, 1.0, "l0_coefficient absent"),
    ({"jumprelu_sparsity_loss_mode": "tanh", "jumprelu_tanh_scale": 4.0}, 2.0, "the step L0 (penalty.form=l0)"),
])
def test_a_saelens_jumprelu_trains_the_step_l0(tmp_path, changes, alpha, said):
    import json

    from saelab.interop.saelens_config import from_saelens
    from saelab.lab.base import load_base

    cfg = {k: v for k, v in (SAELENS_JUMPRELU | changes).items() if v is not None}
    m = from_saelens(cfg)
    assert (m.config["penalty"]["form"], m.config["penalty"]["alpha"]) == ("l0", alpha)
    assert m.config["sae"]["jumprelu_bandwidth"] == 0.05
    penalty_said = [a for a in m.assumed if "penalty" in a or "L0" in a]
    assert (said is None and not penalty_said) or (said is not None and any(said in a for a in penalty_said)), m.assumed
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    base = load_base(str(tmp_path / "cfg.json")).config
    assert (base.sae.architecture, base.penalty.form, base.penalty.alpha) == ("jumprelu", "l0", alpha)
