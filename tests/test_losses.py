"""Loss terms against hand examples; the seed 000 reanimation term against a literal transcription."""

from __future__ import annotations

import itertools

import pytest
import torch

from saelab.config import SAEConfig
from saelab.training import losses
from saelab.training.losses import L1_FORMS, auxk, convert_alpha, l1_breakdown, l1_penalty, reanimation, reconstruction
from saelab.training.metrics import l0_fraction
from saelab.training.models import build

# |Z| = [[1, 2, 0, 3],
#        [0, 4, 1, 0]]      sum 11 over 2 rows x 4 latents
Z = torch.tensor([[1.0, -2.0, 0.0, 3.0], [0.0, 4.0, -1.0, 0.0]])
# decoder rows (4 latents, d_in 2) with norms 1, 2, 0.5, 1
W_DEC = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.3, 0.4], [0.6, 0.8]])



@pytest.mark.parametrize(
    "form, expected",
    [
        ("mean_all", 11 / 8),  # z.abs().mean(): 11 / (2*4) = 1.375
        ("per_sample_sum", 5.5),  # row sums 6 and 5, mean 5.5
        ("per_feature_mean", 1.375),  # column means 0.5, 3, 0.5, 1.5 -> 5.5 / 4 = 1.375
        ("sum", 11.0),
        ("decoder_weighted", 8.25),  # row 0: 1*1 + 2*2 + 0*0.5 + 3*1 = 8; row 1: 4*2 + 1*0.5 = 8.5; mean 8.25
        ("none", 0.0),
    ],
)
def test_l1_forms_on_a_hand_example(form, expected):
    assert l1_penalty(Z, form, W_DEC).item() == pytest.approx(expected)


def test_l1_penalty_reduces_per_arm():
    """A leading arm dim K: each arm reduces its own [B, S] (and its own decoder)."""
    z = torch.stack([Z, 2 * Z])
    w = torch.stack([W_DEC, W_DEC / 2])
    for form in L1_FORMS:
        out = l1_penalty(z, form, w)
        assert out.shape == (2,)
        for k in range(2):
            assert out[k].item() == pytest.approx(l1_penalty(z[k], form, w[k]).item())
    assert l1_penalty(z, "decoder_weighted", w).tolist() == pytest.approx([8.25, 8.25])  # 2|z| * ||w||/2


def test_l1_penalty_errors():
    with pytest.raises(ValueError, match="W_dec"):
        l1_penalty(Z, "decoder_weighted")
    with pytest.raises(ValueError, match="mean_al"):
        l1_penalty(Z, "mean_al")


def test_per_feature_mean_equals_mean_all():
    z = torch.randn(3, 64, 48, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(l1_penalty(z, "per_feature_mean"), l1_penalty(z, "mean_all"))


def test_reconstruction_forms():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    x_hat = torch.tensor([[1.0, 2.0, 3.0, 3.0], [3.0, 2.0, 1.0, 2.0]])
    # squared errors: row 0 [0, 0, 0, 1], row 1 [0, 0, 0, 4]
    assert reconstruction(x, x_hat, "mse_mean").item() == pytest.approx(5 / 8)
    assert reconstruction(x, x_hat, "sum_features").item() == pytest.approx(2.5)  # (1 + 4) / 2 rows
    with pytest.raises(ValueError, match="reconstruction form"):
        reconstruction(x, x_hat, "l2")


@pytest.mark.parametrize("src, dst", list(itertools.permutations(L1_FORMS, 2)))
def test_convert_alpha_keeps_the_gradient_on_z(src, dst):
    B, S = 16, 24
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, S, generator=g).relu().requires_grad_()
    w = torch.randn(S, 5, generator=g)
    w = w / w.norm(dim=-1, keepdim=True)  # decoder_weighted converts like per_sample_sum for unit rows
    alpha = 0.003
    (grad_src,) = torch.autograd.grad(alpha * l1_penalty(z, src, w), z)
    (grad_dst,) = torch.autograd.grad(convert_alpha(alpha, src, dst, B, S) * l1_penalty(z, dst, w), z)
    torch.testing.assert_close(grad_dst, grad_src)


def test_convert_alpha_numbers_and_the_seeds_task_2_2():
    """Keeping the gradient equal from mean_all (divides by B*S) to per_sample_sum (divides by B)
    divides alpha by d_sae. The seed's Task 2.2 multiplies by d_sae (0.003 -> 6.1), which makes the
    gradient on z d_sae**2 times larger: a strengthening, not a conversion."""
    assert convert_alpha(0.003, "mean_all", "per_sample_sum", 128, 2048) == pytest.approx(0.003 / 2048)
    assert convert_alpha(0.003, "mean_all", "sum", 128, 2048) == pytest.approx(0.003 / (128 * 2048))
    assert convert_alpha(0.003, "mean_all", "per_feature_mean", 128, 2048) == pytest.approx(0.003)
    seed_alpha = 0.003 * 2048
    assert seed_alpha / convert_alpha(0.003, "mean_all", "per_sample_sum", 128, 2048) == pytest.approx(2048**2)
    with pytest.raises(ValueError):
        convert_alpha(0.003, "mean_all", "l2", 128, 2048)


def test_l1_breakdown_numbers():
    pen = l1_penalty(Z, "mean_all")
    out = l1_breakdown(Z, 0.5, pen, torch.tensor(2.0))
    assert out == pytest.approx({
        "l1_sum": 11.0,
        "l1_mean": 1.375,
        "l1_feature_mean": 1.375,
        "alpha": 0.5,
        "l1_penalty": 1.375,
        "alpha_x_penalty": 0.6875,  # 0.5 * 1.375
        "reconstruction": 2.0,
        "l1_recon_ratio": 0.34375,  # 0.6875 / 2
    })
    zero_rec = l1_breakdown(Z, 0.5, pen, torch.tensor(0.0))
    assert zero_rec["l1_recon_ratio"] != zero_rec["l1_recon_ratio"]  # NaN, not a division error


def _seed_000_criterion(x, x_hat, pre_codes, codes):
    """Literal transcription of seeds/000_cea98d1778bab7ba.txt, 'Recommended Auxiliary Loss'."""
    loss = (x - x_hat).square().mean()
    is_dead = ((codes > 0).sum(dim=0) == 0).float().detach()
    reanim_loss = (pre_codes * is_dead[None, :]).mean()
    loss -= reanim_loss * 1e-3
    return loss


def test_reanimation_matches_seed_000_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g)
    x_hat = torch.randn(32, 8, generator=g)
    pre = torch.randn(32, 20, generator=g)
    codes = torch.relu(pre) * (torch.rand(32, 20, generator=g) < 0.05)  # sparse, so several latents never fire
    assert losses.dead_in_batch(codes).sum() >= 5
    pre_a = pre.clone().requires_grad_()
    pre_b = pre.clone().requires_grad_()
    ours = reconstruction(x, x_hat) + reanimation(pre_a, codes, 1e-3)
    seed = _seed_000_criterion(x, x_hat, pre_b, codes)
    torch.testing.assert_close(ours, seed, rtol=0, atol=1e-7)
    ours.backward()
    seed.backward()
    torch.testing.assert_close(pre_a.grad, pre_b.grad, rtol=0, atol=0)


def test_reanimation_hand_example():
    pre = torch.tensor([[1.0, 2.0, 0.5, 3.0], [-2.0, 1.0, 0.5, -4.0]])
    codes = torch.tensor([[1.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]])  # latents 1 and 2 never fire
    # dead pre-codes: latent 1: 2 + 1, latent 2: 0.5 + 0.5 -> sum 4 over 8 entries = 0.5; term = -coef * 0.5
    assert reanimation(pre, codes, 0.01).item() == pytest.approx(-0.005)  # negative for positive pre-codes
    # only never-fired latents count: firing latent 0 and 3's large pre-codes change nothing
    pre2 = pre.clone()
    pre2[:, [0, 3]] = 100.0
    assert reanimation(pre2, codes, 0.01).item() == pytest.approx(-0.005)
    # negative dead pre-codes give a positive term
    assert reanimation(-pre, codes, 0.01).item() == pytest.approx(0.005)
    # its gradient pushes dead pre-codes up: d term / d pre = -coef / (B*S) on dead columns, 0 elsewhere
    p = pre.clone().requires_grad_()
    reanimation(p, codes, 0.01).backward()
    expected = torch.zeros(2, 4)
    expected[:, [1, 2]] = -0.01 / 8
    torch.testing.assert_close(p.grad, expected)


def test_reanimation_coefficient_per_arm():
    pre = torch.stack([torch.ones(2, 3), torch.ones(2, 3)])
    codes = torch.zeros(2, 2, 3)  # nothing fires
    out = reanimation(pre, codes, torch.tensor([0.0, 2.0]))
    assert out.tolist() == pytest.approx([0.0, -2.0])


def _auxk_case():
    """K=1, B=6, S=5, d=3 with latents 1 and 3 dead."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, 3, generator=g)
    x_hat = 0.5 * x + 0.1 * torch.randn(1, 6, 3, generator=g)
    W_enc = torch.randn(1, 5, 3, generator=g).requires_grad_()
    b_enc = torch.full((1, 5), 3.0).requires_grad_()  # positive pre-codes, so ReLU keeps the chosen ones
    W_dec = torch.randn(1, 5, 3, generator=g).requires_grad_()
    dead = torch.tensor([[False, True, False, True, False]])
    return x, x_hat, W_enc, b_enc, W_dec, dead


def test_auxk_is_zero_without_dead_latents():
    x, x_hat, W_enc, b_enc, W_dec, dead = _auxk_case()
    pre = x @ W_enc.transpose(1, 2) + b_enc.unsqueeze(1)
    out = auxk(x, x_hat, pre, W_dec, torch.zeros_like(dead), k_aux=2)
    assert out.shape == (1,) and out.item() == 0.0


def test_auxk_value_and_gradient_reach_only_dead_latents():
    x, x_hat, W_enc, b_enc, W_dec, dead = _auxk_case()
    pre = x @ W_enc.transpose(1, 2) + b_enc.unsqueeze(1)
    out = auxk(x, x_hat, pre, W_dec, dead, k_aux=4)  # more than the 2 dead latents: only dead ones are used
    e = (x - x_hat)[0]
    z = torch.relu(pre[0].detach()) * dead[0].float()
    e_hat = z @ W_dec[0].detach()
    var = (e - e.mean(0)).square().sum(-1).mean()  # residual variance around its mean
    expected = (e_hat - e).square().sum(-1).mean() / var
    assert out.item() == pytest.approx(expected.item(), rel=1e-5)
    out.sum().backward()
    alive = ~dead[0]
    for name, grad in (("W_enc", W_enc.grad[0]), ("b_enc", b_enc.grad[0]), ("W_dec", W_dec.grad[0])):
        assert grad[alive].abs().sum() == 0, f"AuxK moved alive latents' {name}"
        assert (grad[dead[0]].reshape(2, -1).abs().sum(-1) > 0).all(), f"AuxK did not reach dead {name} rows"


def test_auxk_is_normalized_by_the_residual_variance():
    """Scaling x, x_hat and the decoder by c scales both the error and the variance by c^2."""
    x, x_hat, W_enc, b_enc, W_dec, dead = _auxk_case()
    with torch.no_grad():
        pre = x @ W_enc.transpose(1, 2) + b_enc.unsqueeze(1)
        a = auxk(x, x_hat, pre, W_dec, dead, k_aux=2)
        b = auxk(10 * x, 10 * x_hat, pre, 10 * W_dec, dead, k_aux=2)
    torch.testing.assert_close(a, b)


def test_auxk_uses_the_top_k_aux_dead_latents():
    x, x_hat, W_enc, b_enc, W_dec, dead = _auxk_case()
    with torch.no_grad():
        pre = torch.zeros(1, 6, 5)
        pre[..., 1] = 2.0  # dead, larger
        pre[..., 3] = 1.0  # dead, smaller: left out with k_aux = 1
        pre[..., 0] = 9.0  # alive: never used however large
        only_1 = dead.clone()
        only_1[0, 3] = False
        torch.testing.assert_close(auxk(x, x_hat, pre, W_dec, dead, k_aux=1), auxk(x, x_hat, pre, W_dec, only_1, k_aux=5))


# ----- the seed's Task 2.3 test, ported to the API and run for every L1 form ---------------------
# seeds/004, Task 2.3 `test_l1_penalty_scale`: relu SAE 768 -> 2048, x = randn(128, 768), l1_alpha
# 0.003 on every form (unconverted, as the seed wrote it), then: the L1/recon ratio lies in
# [0.01, 0.5] and L0 falls by >= 20% in 100 Adam steps at lr 1e-3. The seed's shapes are kept: the
# ratio scales with d_sae for per_sample_sum, with batch for sum and with sqrt(d_in) (the init's
# decoder row norm) for decoder_weighted, so smaller shapes would change which forms pass. A form that
# fails its ratio stops at the first assertion, as the seed's test would, so only passing forms pay
# for the 100 steps. Measured at init (torch 2.13 CPU, model seed 0, data seed 0): ratio 0.000656 for
# mean_all and per_feature_mean, 1.343 per_sample_sum, 171.9 sum, 0.475 decoder_weighted. L0
# fraction after 100 steps, from 0.503: mean_all/per_feature_mean 0.356 (-29%; the fixed batch is
# being memorized, not penalized), per_sample_sum 0.0053, sum 0.00001, decoder_weighted 0.0078.
SEED_ALPHA = 0.003
TASK_2_3_XFAIL = {
    "mean_all": "ratio 0.00066 < 0.01: the seed's z.abs().mean() divides sum|z| by B*d_sae = 262,144, "
    "so alpha 0.003 makes the penalty 0.07% of the reconstruction (the seed's Hypothesis 1a)",
    "per_feature_mean": "ratio 0.00066 < 0.01: numerically the same penalty as mean_all (option B is not a fix)",
    "per_sample_sum": "ratio 1.34 > 0.5: dividing by B only makes the same alpha d_sae=2048x stronger than "
    "mean_all; alpha would need converting (the seed's Task 2.2 multiplies instead, making it worse)",
    "sum": "ratio 172 > 0.5: the unnormalized sum grows with batch and d_sae",
}


@pytest.mark.parametrize(
    "form",
    [pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=TASK_2_3_XFAIL[f])) if f in TASK_2_3_XFAIL else f
     for f in L1_FORMS],
)
def test_l1_penalty_scale(form):
    """decoder_weighted passes (ratio 0.475): at the kaiming init every decoder row has norm
    sqrt(d_in / (3 d_sae)) = 0.35, which scales the per-sample sum down by just enough. That is
    a property of the init scale, not of the form: with unit-norm rows it is per_sample_sum (1.34)."""
    sae = build(SAEConfig(d_in=768, d_sae=2048), n_arms=1, seed=0)
    x = torch.randn(1, 128, 768, generator=torch.Generator().manual_seed(0))

    def forward():
        _, z, x_hat = sae(x)
        return reconstruction(x, x_hat), l1_penalty(z, form, sae.W_dec), z

    rec, pen, _ = forward()
    ratio = (SEED_ALPHA * pen / rec).item()
    assert 0.01 <= ratio <= 0.5, f"L1/recon ratio {ratio:.4f} is outside expected range [0.01, 0.5]"

    optimizer = torch.optim.Adam(sae.parameters(), lr=0.001)
    l0_values = []
    for _ in range(100):
        rec, pen, z = forward()
        (rec + SEED_ALPHA * pen).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        l0_values.append(l0_fraction(z).item())
    assert l0_values[-1] < l0_values[0] * 0.8, f"L0 sparsity did not decrease: {l0_values[0]:.4f} -> {l0_values[-1]:.4f}"
