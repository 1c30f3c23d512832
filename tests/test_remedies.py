import json

import pytest
import torch
from torch import nn

from saelab.training.remedies import resample

K, S, D = 3, 10, 6
ARM = 1
DEAD = [2, 5, 7]


class Stacked(nn.Module):
    """Stand-in with models.py's attribute names and stacked shapes."""

    def __init__(self, k: int = K, s: int = S, d: int = D, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_enc = nn.Parameter(torch.randn(k, s, d, generator=g))
        self.b_enc = nn.Parameter(torch.randn(k, s, generator=g))
        self.W_dec = nn.Parameter(torch.randn(k, s, d, generator=g))
        self.b_dec = nn.Parameter(torch.randn(k, d, generator=g))


def _adam(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return {
        n: {"m": torch.randn(p.shape, generator=g), "v": torch.rand(p.shape, generator=g) + 0.1}
        for n, p in model.named_parameters()
    }


def _dead(*idx: int, s: int = S) -> torch.Tensor:
    m = torch.zeros(s, dtype=torch.bool)
    m[list(idx)] = True
    return m


def _pool(n: int = 4, d: int = D) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, d, generator=g) * 3
    loss = torch.tensor([0.5, 4.0, 1.0, 2.0, 3.0, 0.1, 0.2, 0.3][:n])  # rank: 1, 4, 3, 2, ...
    return x, loss


def _snapshot(model, adam):
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    moments = {f"{n}.{k}": t.clone() for n, st in adam.items() for k, t in st.items()}
    return params, moments


def _changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """bool [K, S] (or [K, S] for a [K, S] tensor): which (arm, latent) slots differ at all."""
    diff = before != after
    return diff.any(-1) if diff.ndim == 3 else diff


def _expect(rows_of: dict[str, bool], s: int = S) -> dict[str, torch.Tensor]:
    """Expected change mask per name: [K, S] True at [ARM, DEAD] for names mapped to True."""
    out = {}
    for name, touched in rows_of.items():
        m = torch.zeros(K, s, dtype=torch.bool)
        if touched:
            m[ARM, DEAD] = True
        out[name] = m
    return out


def _check_only(model, adam, before, touched_params: set[str], touched_moments: set[str]):
    params, moments = before
    for n, p in model.named_parameters():
        if n == "b_dec":
            assert torch.equal(p, params[n]), "b_dec must never change"
            continue
        exp = _expect({n: n in touched_params})[n]
        got = _changed(params[n], p.detach())
        assert torch.equal(got, exp), f"{n}: changed slots {got.nonzero().tolist()}"
    for key, t in moments.items():
        name, k = key.split(".")
        now = adam[name][k]
        if key in touched_moments:
            assert torch.equal(now[ARM, DEAD], torch.zeros_like(now[ARM, DEAD])), key
            keep = torch.ones(now.shape[:2], dtype=torch.bool)
            keep[ARM, DEAD] = False
            assert torch.equal(now[keep], t[keep]), f"{key} changed outside the dead rows"
        else:
            assert torch.equal(now, t), f"{key} must not change"


@pytest.mark.parametrize("reset_adam", [False, True])
def test_seed_writes_x_times_point_one_into_the_dead_encoder_rows_only(reset_adam):
    model, x, loss = Stacked(), *_pool()
    adam = _adam(model)
    before = _snapshot(model, adam)
    W = model.W_enc  # the parameter object itself: a write into a copy would leave it unchanged
    ptr = W.data_ptr()
    ev = resample("seed", model, adam, ARM, _dead(*DEAD), x, loss, reset_adam, torch.Generator().manual_seed(0))
    assert model.W_enc is W and W.data_ptr() == ptr
    # highest-loss rows first: loss [0.5, 4, 1, 2] -> rows 1, 3, 2 for latents 2, 5, 7
    assert torch.equal(W[ARM, DEAD].detach(), x[[1, 3, 2]] * 0.1)
    assert ev["n_resampled"] == 3 and ev["indices"] == DEAD and ev["sample_rows"] == [1, 3, 2]
    moments = {"W_enc.m", "W_enc.v"} if reset_adam else set()
    _check_only(model, adam, before, {"W_enc"}, moments)
    assert ev["adam_reset"] == (["W_enc"] if reset_adam else [])
    json.dumps(ev)


def test_seed_cycles_the_ranking_when_more_dead_latents_than_rows():
    model = Stacked()
    x, loss = _pool(n=3)  # loss [0.5, 4, 1] -> ranking 1, 2, 0
    dead = [0, 1, 3, 4, 8]
    ev = resample("seed", model, {}, ARM, _dead(*dead), x, loss, False, torch.Generator())
    assert ev["sample_rows"] == [1, 2, 0, 1, 2] and ev["n_unique_rows"] == 3
    assert torch.equal(model.W_enc[ARM, dead].detach(), x[[1, 2, 0, 1, 2]] * 0.1)


def test_seed_ties_keep_the_lower_row_index():
    model = Stacked()
    x = torch.randn(4, D, generator=torch.Generator().manual_seed(5))
    ev = resample("seed", model, {}, ARM, _dead(0, 1, 2, 3), x, torch.tensor([1.0, 2.0, 2.0, 1.0]), False, torch.Generator())
    assert ev["sample_rows"] == [1, 2, 0, 3]


@pytest.mark.parametrize("reset_adam", [False, True])
def test_seed_fix_unit_vector_times_half_the_mean_encoder_norm_with_seeded_fallback(reset_adam):
    model = Stacked()
    adam = _adam(model)
    x, loss = _pool()
    x[3] = 0.0  # rank-2 row has no direction -> latent 5 takes the randn * 0.01 fallback
    typical = model.W_enc[ARM].detach().norm(dim=-1).mean()  # over ALL latents of the arm, before writes
    before = _snapshot(model, adam)
    ev = resample("seed-fix", model, adam, ARM, _dead(*DEAD), x, loss, reset_adam, torch.Generator().manual_seed(7))
    W = model.W_enc.detach()
    for latent, row in [(2, 1), (7, 2)]:
        torch.testing.assert_close(W[ARM, latent], x[row] / x[row].norm() * typical * 0.5)
        assert W[ARM, latent].norm().item() == pytest.approx(0.5 * typical.item(), rel=1e-5)
    expected_noise = torch.randn(1, D, generator=torch.Generator().manual_seed(7))[0] * 0.01
    torch.testing.assert_close(W[ARM, 5], expected_noise)
    assert ev["n_fallback"] == 1 and ev["typical_enc_norm"] == pytest.approx(typical.item())
    _check_only(model, adam, before, {"W_enc"}, {"W_enc.m", "W_enc.v"} if reset_adam else set())


@pytest.mark.parametrize("reset_adam", [False, True])
def test_anthropic_rewrites_decoder_encoder_bias_and_always_resets_those_moments(reset_adam):
    model = Stacked()
    adam = _adam(model)
    x, _ = _pool()
    loss = torch.tensor([0.0, 0.0, 3.0, 0.0])  # only row 2 can be drawn
    alive = torch.ones(S, dtype=torch.bool)
    alive[DEAD] = False
    alive_mean = model.W_enc[ARM, alive].detach().norm(dim=-1).mean()
    before = _snapshot(model, adam)
    ev = resample("anthropic", model, adam, ARM, _dead(*DEAD), x, loss, reset_adam, torch.Generator().manual_seed(3))
    unit = x[2] / x[2].norm()
    for latent in DEAD:
        torch.testing.assert_close(model.W_dec[ARM, latent].detach(), unit)
        torch.testing.assert_close(model.W_enc[ARM, latent].detach(), unit * 0.2 * alive_mean)
        assert model.b_enc[ARM, latent].item() == 0.0
    assert ev["sample_rows"] == [2, 2, 2] and ev["n_alive"] == S - 3 and ev["reset_adam"] is True
    assert ev["alive_enc_norm_mean"] == pytest.approx(alive_mean.item())
    touched = {"W_enc", "W_dec", "b_enc"}
    _check_only(model, adam, before, touched, {f"{n}.{k}" for n in touched for k in "mv"})
    assert ev["adam_reset"] == ["W_enc", "W_dec", "b_enc"]


def test_anthropic_samples_proportionally_to_squared_loss():
    n_dead = 4000
    model = Stacked(s=n_dead, d=4)
    x = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    loss = torch.tensor([1.0, 2.0, 0.0])  # squared: 1, 4, 0 -> P = 0.2, 0.8, 0
    resample("anthropic", model, {}, 0, torch.ones(n_dead, dtype=torch.bool), x, loss, False, torch.Generator().manual_seed(0))
    picked = model.W_dec[0].detach().argmax(-1)  # decoder row = unit copy of the drawn row
    frac = torch.bincount(picked, minlength=3).double() / n_dead
    assert frac[2] == 0
    assert frac[1].item() == pytest.approx(0.8, abs=0.03)  # proportional to loss**2, not loss (0.67)


def test_anthropic_excludes_zero_rows_and_handles_all_dead():
    model = Stacked()
    x, _ = _pool()
    x[1] = 0.0
    loss = torch.tensor([0.0, 9.0, 0.0, 0.0])  # the only lossy row has no direction
    all_dead = torch.ones(S, dtype=torch.bool)
    mean_all = model.W_enc[0].detach().norm(dim=-1).mean()
    ev = resample("anthropic", model, {}, 0, all_dead, x, loss, False, torch.Generator().manual_seed(0))
    assert 1 not in ev["sample_rows"] and ev["n_alive"] == 0
    assert ev["alive_enc_norm_mean"] == pytest.approx(mean_all.item())
    assert torch.isfinite(model.W_enc).all() and torch.isfinite(model.W_dec).all()
    with pytest.raises(ValueError, match="nothing to copy"):
        resample("anthropic", model, {}, 0, all_dead, torch.zeros(3, D), torch.ones(3), False, torch.Generator())


@pytest.mark.parametrize("strategy", ["seed", "seed-fix", "anthropic"])
def test_no_dead_latents_changes_nothing(strategy):
    model, x, loss = Stacked(), *_pool()
    adam = _adam(model)
    before = _snapshot(model, adam)
    ev = resample(strategy, model, adam, ARM, torch.zeros(S, dtype=torch.bool), x, loss, True, torch.Generator())
    assert ev["n_resampled"] == 0
    for n, p in model.named_parameters():
        assert torch.equal(p, before[0][n])
    for key, t in before[1].items():
        n, k = key.split(".")
        assert torch.equal(adam[n][k], t)


def test_event_lists_are_capped_and_json_able():
    s = 120
    model = Stacked(s=s)
    x, loss = _pool()
    ev = resample("seed-fix", model, {}, 0, torch.ones(s, dtype=torch.bool), x, loss, False, torch.Generator())
    assert ev["n_resampled"] == s and len(ev["indices"]) == 50 and len(ev["enc_norms"]) == 50
    assert json.loads(json.dumps(ev)) == ev


def test_invalid_inputs_are_rejected():
    model, x, loss = Stacked(), *_pool()
    g = torch.Generator()
    with pytest.raises(ValueError, match="not allowed"):
        resample("ghost", model, {}, 0, _dead(1), x, loss, False, g)
    with pytest.raises(ValueError, match="bool tensor"):
        resample("seed", model, {}, 0, torch.zeros(S), x, loss, False, g)
    with pytest.raises(ValueError, match="arm=3"):
        resample("seed", model, {}, 3, _dead(1), x, loss, False, g)
    with pytest.raises(ValueError, match="finite"):
        resample("seed", model, {}, 0, _dead(1), x, torch.tensor([1.0, float("nan"), 0, 0]), False, g)
    before = model.W_enc.detach().clone()
    with pytest.raises(ValueError, match="no m/v for 'W_dec'"):
        resample("anthropic", model, {"W_enc": _adam(model)["W_enc"]}, 0, _dead(1), x, loss, False, g)
    assert torch.equal(model.W_enc, before)  # checked before any write


def test_works_on_the_real_stacked_model():
    models = pytest.importorskip("saelab.training.models")
    from saelab.config import SAEConfig

    model = models.build(SAEConfig(d_in=D, d_sae=S, k=4), n_arms=2, seed=0)
    before = model.W_enc.detach().clone()
    x, loss = _pool()
    resample("anthropic", model, {}, 1, _dead(*DEAD), x, loss, False, torch.Generator().manual_seed(0))
    changed = (before != model.W_enc.detach()).any(-1)
    assert changed[1, DEAD].all() and changed.sum() == len(DEAD)
    pre, codes, x_hat = model(x.unsqueeze(0).expand(2, -1, -1).contiguous())
    assert torch.isfinite(x_hat).all()
