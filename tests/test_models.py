"""Contract test over every registry variant (STYLE.md item 11), plus each variant's own rule."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from saelab.config import AuxConfig, RunConfig, SAEConfig
from saelab.training import runs
from saelab.training.models import MODELS, build

D_IN, D_SAE, B = 16, 32, 8



def _cfg(arch: str, **kw) -> SAEConfig:
    base = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "k": 4}
    if arch == "jumprelu":  # a threshold inside the pre-activation range and a kernel that catches some of it
        # (bandwidth/2 < threshold, so the zeros that ReLU makes stay outside the kernel)
        base |= {"jumprelu_threshold": 0.1, "jumprelu_bandwidth": 0.15}
    return SAEConfig(**(base | kw))


def _x(k: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, B, D_IN, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("K", [1, 3])
def test_shapes_and_exposed_preactivations(arch, K):
    model = build(_cfg(arch), n_arms=K, seed=0)
    x = _x(K)
    pre, codes, x_hat = model(x)
    assert pre.shape == codes.shape == (K, B, D_SAE)
    assert x_hat.shape == (K, B, D_IN)
    assert model.W_enc.shape == model.W_dec.shape == (K, D_SAE, D_IN)
    assert model.b_enc.shape == (K, D_SAE) and model.b_dec.shape == (K, D_IN)
    # pre-activations are the affine map itself, before any activation
    torch.testing.assert_close(pre, x @ model.W_enc.transpose(1, 2) + model.b_enc.unsqueeze(1))
    # encode/decode compose to forward
    pre2, codes2 = model.encode(x)
    assert torch.equal(pre2, pre) and torch.equal(codes2, codes)
    torch.testing.assert_close(model.decode(codes), x_hat)
    torch.testing.assert_close(x_hat, codes @ model.W_dec + model.b_dec.unsqueeze(1))
    assert (codes >= 0).all()
    assert ((codes == 0) | (codes == pre)).all()  # every variant keeps pre where it fires


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_arm_starts_from_the_same_weights(arch):
    model = build(_cfg(arch), n_arms=3, seed=5)
    for p in model.parameters():
        assert torch.equal(p[0], p[1]) and torch.equal(p[0], p[2])
    other = build(_cfg(arch), n_arms=1, seed=6)
    assert not torch.equal(other.W_enc[0], model.W_enc[0])  # the seed matters


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_gradients_reach_every_parameter(arch):
    model = build(_cfg(arch), n_arms=1, seed=0)
    x = _x(1)
    _, codes, x_hat = model(x)
    loss = (x_hat - x).square().mean() + codes.abs().mean()
    loss.backward()
    names = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"log_threshold"} if arch == "jumprelu" else set())
    assert {n for n, _ in model.named_parameters()} == names
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{arch}: no gradient reaches {name}"


def test_jumprelu_threshold_gradient_is_the_straight_through_estimate():
    """Rajamanoharan 2024 eq. 11: dz/dtheta = -(theta/eps) * rect((pre - theta)/eps); the parameter is
    log theta, so autograd multiplies by theta once more."""
    cfg = _cfg("jumprelu")
    model = build(cfg, n_arms=1, seed=0)
    x = _x(1)
    pre, codes, _ = model(x)
    g_codes = torch.randn(codes.shape, generator=torch.Generator().manual_seed(1))
    (codes * g_codes).sum().backward()
    theta, eps = cfg.jumprelu_threshold, cfg.jumprelu_bandwidth
    r = torch.relu(pre.detach())
    kernel = ((r - theta).abs() < eps / 2).float() / eps
    expected = (-(theta * kernel * g_codes)).sum(1) * theta  # [1, S]
    assert kernel.sum() > 0, "the example must put some pre-activations inside the kernel"
    torch.testing.assert_close(model.log_threshold.grad, expected)
    # codes fire only above the threshold
    assert torch.equal(codes.detach() > 0, r > theta)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_arms_are_independent(arch):
    model = build(_cfg(arch), n_arms=3, seed=0)
    x = _x(3)
    _, codes, x_hat = model(x)
    ((x_hat[0] - x[0]).square().mean() + codes[0].sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad[0].abs().sum() > 0, name
        assert torch.all(p.grad[1:] == 0), f"{arch}: a loss on arm 0 moved {name} of other arms"


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_save_load_round_trip_through_a_run_directory(arch, tmp_path):
    model = build(_cfg(arch), n_arms=1, seed=0)
    with torch.no_grad():  # move every parameter off its init, and set batchtopk's threshold
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        model.train()
        for s in range(5):
            model(_x(1, seed=s))
    model.eval()
    cfg = RunConfig(sae=_cfg(arch), aux=AuxConfig(auxk_k=4))
    runs.Run(tmp_path / "r", "r", cfg, pd.DataFrame({"step": [0]}), [], {}, weights=model.arm_state(0)).save()
    loaded = runs.load_run(tmp_path / "r")
    assert set(loaded.weights) == set(model.state_dict())
    fresh = build(loaded.config.sae, n_arms=1, seed=123)
    fresh.load_state_dict({k: v.unsqueeze(0) for k, v in loaded.weights.items()})
    fresh.eval()
    x = _x(1, seed=9)
    for a, b in zip(model(x), fresh(x)):
        assert torch.equal(a, b)


def test_topk_keeps_exactly_k_per_row():
    model = build(_cfg("topk", k=5), n_arms=2, seed=0)
    with torch.no_grad():
        model.b_enc.fill_(10.0)  # every pre-activation positive, so ReLU never removes a kept value
    pre, codes, _ = model(_x(2))
    assert torch.equal((codes != 0).sum(-1), torch.full((2, B), 5))
    kept_min = codes.masked_fill(codes == 0, float("inf")).amin(-1)
    dropped_max = pre.masked_fill(codes != 0, float("-inf")).amax(-1)
    assert (kept_min >= dropped_max).all()  # the kept ones are the largest


def test_batchtopk_keeps_k_times_batch_per_arm_in_training():
    model = build(_cfg("batchtopk", k=3), n_arms=2, seed=0)
    with torch.no_grad():
        model.b_enc.fill_(10.0)
    model.train()
    pre, codes, _ = model(_x(2))
    assert torch.equal((codes != 0).sum((1, 2)), torch.tensor([3 * B, 3 * B]))
    rows = (codes != 0).sum(-1)
    assert rows.min() != rows.max(), "batch top-k lets rows differ in how many latents they use"
    # the first training batch sets the threshold to its smallest kept value
    kept_min = codes.masked_fill(codes == 0, float("inf")).amin((1, 2))
    torch.testing.assert_close(model.threshold, kept_min)


def test_batchtopk_uses_its_threshold_in_eval_mode():
    model = build(_cfg("batchtopk", k=3), n_arms=2, seed=0)
    with torch.no_grad():
        model.threshold.copy_(torch.tensor([0.1, 0.3]))
    model.eval()
    x = _x(2)
    pre, codes, _ = model(x)
    r = torch.relu(pre)
    expected = r * (r > torch.tensor([0.1, 0.3]).view(2, 1, 1))
    assert torch.equal(codes, expected)
    # eval codes of a row do not depend on the rest of the batch
    _, codes_one, _ = model(x[:, :1])
    torch.testing.assert_close(codes_one, codes[:, :1])
    before = model.threshold.clone()
    model(x)
    assert torch.equal(model.threshold, before)  # eval never updates the threshold


def test_unit_norm_decoder_constraint():
    model = build(_cfg("relu", decoder_constraint="unit_norm"), n_arms=2, seed=0)
    torch.testing.assert_close(model.W_dec.norm(dim=-1), torch.ones(2, D_SAE))
    x = _x(2)
    _, _, x_hat = model(x)
    (x_hat - x).square().sum().backward()
    raw = model.W_dec.grad.clone()
    model.project_decoder_grad()
    g, w = model.W_dec.grad, model.W_dec.detach()
    assert (raw * w).sum(-1).abs().max() > 1e-3, "the example needs a radial gradient to remove"
    assert (g * w).sum(-1).abs().max() < 1e-5  # orthogonal to every row
    torch.testing.assert_close(g, raw - (raw * w).sum(-1, keepdim=True) * w)
    with torch.no_grad():
        model.W_dec.sub_(0.5 * g)
    model.normalize_decoder()
    torch.testing.assert_close(model.W_dec.norm(dim=-1), torch.ones(2, D_SAE))


def test_tied_init_starts_encoder_as_decoder_transpose():
    model = build(_cfg("relu", init="tied"), n_arms=1, seed=0)
    assert torch.equal(model.W_enc, model.W_dec)  # both [K, S, d]: row i of each is latent i


def test_build_needs_a_resolved_width():
    with pytest.raises(ValueError, match="d_in"):
        build(SAEConfig(d_in=0, d_sae=8))


def test_batchtopk_threshold_starts_at_the_first_batch_then_averages():
    # An average started at 0 left eval codes near-dense for hundreds of steps (eval L0 122
    # against a training L0 of 8 at d_sae 256, k 8); the first batch now sets it outright.
    model = build(_cfg("batchtopk", k=3), n_arms=2, seed=0)
    model.train()
    with torch.no_grad():
        _, codes, _ = model(_x(2, seed=1))
    first = torch.where(codes > 0, codes, torch.inf).flatten(1).amin(-1)
    assert torch.equal(model.threshold, first)
    with torch.no_grad():
        _, codes2, _ = model(_x(2, seed=2))
    second = torch.where(codes2 > 0, codes2, torch.inf).flatten(1).amin(-1)
    torch.testing.assert_close(model.threshold, first + 0.01 * (second - first))


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_apply_b_dec_to_input_encodes_x_minus_b_dec(arch):
    """apply_b_dec_to_input folds -W_enc b_dec into the encoder bias; forward and every gradient equal
    the plain (x - b_dec) W_enc^T + b_enc, and shifting x and b_dec together leaves the codes alone."""
    torch.manual_seed(0)
    model = build(_cfg(arch, apply_b_dec_to_input=True), n_arms=2, seed=0)
    with torch.no_grad():
        model.b_dec.copy_(torch.randn(2, D_IN))
        model.b_enc.copy_(0.1 * torch.randn(2, D_SAE))
    x = _x(2) + 3.0
    pre, codes, x_hat = model(x)
    loss = (x_hat - x).square().sum() + 0.1 * codes.sum() + 0.01 * pre.square().sum()
    fast = torch.autograd.grad(loss, [model.W_enc, model.b_enc, model.b_dec])
    ref_pre = (x - model.b_dec.unsqueeze(1)) @ model.W_enc.transpose(1, 2) + model.b_enc.unsqueeze(1)
    torch.testing.assert_close(pre, ref_pre, rtol=1e-5, atol=1e-5)
    # reference gradients: the same loss with the encoder written out, activations taken from the model
    ref_codes = model.activate(ref_pre) if arch != "topk" else torch.zeros_like(ref_pre).scatter(
        -1, ref_pre.topk(4, -1).indices, ref_pre.topk(4, -1).values.relu())
    ref_hat = ref_codes @ model.W_dec + model.b_dec.unsqueeze(1)
    ref_loss = (ref_hat - x).square().sum() + 0.1 * ref_codes.sum() + 0.01 * ref_pre.square().sum()
    for got, want, name in zip(fast, torch.autograd.grad(ref_loss, [model.W_enc, model.b_enc, model.b_dec]),
                               ("W_enc", "b_enc", "b_dec")):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"{arch} d{name}")
    shift = torch.randn(D_IN)
    with torch.no_grad():
        model.b_dec.add_(shift)
        torch.testing.assert_close(model(x + shift)[0], pre, rtol=1e-4, atol=1e-4)


def test_b_enc_init_sets_every_encoder_bias_at_step_0():
    cfg = SAEConfig(d_in=8, d_sae=16, b_enc_init=-0.5)
    m = build(cfg, n_arms=2)
    assert torch.equal(m.b_enc.detach(), torch.full((2, 16), -0.5))
    assert torch.equal(build(SAEConfig(d_in=8, d_sae=16), n_arms=1).b_enc.detach(), torch.zeros(1, 16))
