import math

import pytest
import torch
import torch.nn.functional as F

from saelab.config import NormalizeConfig
from saelab.training.normalize import Normalizer, NormInfo, make_normalizer

MODES = ["none", "constant_norm_rescale", "constant_norm_rescale_clamped", "dataset_scalar", "layer_norm"]


def _rows(*shape: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # an offset and a spread of row scales, like residual-stream activations
    x = torch.randn(*shape, generator=g, dtype=torch.float64) + 0.5
    scale = torch.exp(torch.randn(*shape[:-1], 1, generator=g, dtype=torch.float64))
    return (x * scale).to(dtype)


def _fitted(mode: str, d: int, dtype=torch.float32) -> Normalizer:
    norm = make_normalizer(NormalizeConfig(mode=mode, estimate_batches=4), d)
    norm.fit(_rows(32, d, dtype=dtype, seed=s) for s in range(10))
    return norm


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(64, 16), (3, 64, 16)], ids=["rows", "arms"])
def test_round_trip_float32(mode, shape):
    x = _rows(*shape)
    norm = _fitted(mode, shape[-1])
    n, info = norm(x)
    assert n.shape == x.shape and n.dtype == x.dtype
    torch.testing.assert_close(norm.inverse(n, info), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_float64_is_exact_to_rounding(mode):
    x = _rows(3, 64, 16, dtype=torch.float64)
    norm = _fitted(mode, 16, dtype=torch.float64)
    n, info = norm(x)
    back = norm.inverse(n, info)
    assert back.dtype == torch.float64
    # one multiply and one divide (plus a shift for layer_norm): a few ulps, nothing more
    torch.testing.assert_close(back, x, rtol=1e-14, atol=1e-14)
    if mode == "none":
        assert torch.equal(back, x)


def test_constant_norm_rescale_matches_the_seed_formula():
    x = _rows(8, 16)
    n, info = make_normalizer(NormalizeConfig(mode="constant_norm_rescale"), 16)(x)
    seed = x * (math.sqrt(16) / x.norm(dim=-1, keepdim=True))  # the seed's lines 106-110, verbatim
    assert torch.equal(n, seed)
    torch.testing.assert_close(n.norm(dim=-1), torch.full((8,), 4.0))
    assert info.coef.shape == (8, 1)


def test_unclamped_zero_row_raises_naming_the_row():
    x = _rows(6, 16)
    x[4] = 0.0
    norm = make_normalizer(NormalizeConfig(mode="constant_norm_rescale"), 16)
    with torch.no_grad():
        seed = x * (math.sqrt(16) / x.norm(dim=-1, keepdim=True))
    assert torch.isnan(seed[4]).all()  # what the seed's code silently does
    with pytest.raises(ValueError, match=r"row 4 has \|\|x\|\| = 0"):
        norm(x)
    with pytest.raises(ValueError, match=r"row \(1, 4\)"):
        norm(torch.stack([_rows(6, 16), x]))


def test_unclamped_tiny_row_passes_with_the_seeds_huge_coefficient():
    x = _rows(4, 16)
    x[1] = x[1] / x[1].norm() * 1e-7  # tiny but non-zero: finite, the seed's behaviour
    n, info = make_normalizer(NormalizeConfig(mode="constant_norm_rescale"), 16)(x)
    assert torch.isfinite(n).all()
    assert info.coef[1].item() == pytest.approx(4.0 / 1e-7, rel=1e-4)


def test_clamped_zero_row_stays_zero_and_coefficient_is_capped():
    x = _rows(5, 16)
    x[2] = 0.0
    norm = make_normalizer(NormalizeConfig(mode="constant_norm_rescale_clamped", clamp_min=1e-6), 16)
    n, info = norm(x)
    assert torch.equal(n[2], torch.zeros(16))
    assert info.coef[2].item() == pytest.approx(4.0 / 1e-6)
    assert torch.equal(norm.inverse(n, info)[2], torch.zeros(16))
    torch.testing.assert_close(n[[0, 1, 3, 4]].norm(dim=-1), torch.full((4,), 4.0))


def test_layer_norm_matches_functional_and_handles_zero_and_constant_rows():
    x = _rows(5, 16)
    x[1] = 0.0
    x[3] = 2.5
    norm = make_normalizer(NormalizeConfig(mode="layer_norm"), 16)
    n, info = norm(x)
    assert torch.equal(n, F.layer_norm(x, (16,)))
    assert torch.equal(n[1], torch.zeros(16)) and torch.equal(n[3], torch.zeros(16))  # eps: no NaN
    back = norm.inverse(n, info)
    assert torch.equal(back[1], torch.zeros(16))
    torch.testing.assert_close(back[3], torch.full((16,), 2.5))


def test_dataset_scalar_sets_mean_norm_to_sqrt_d_and_uses_only_estimate_batches():
    d = 64
    norm = make_normalizer(NormalizeConfig(mode="dataset_scalar", estimate_batches=5), d)
    consumed = []

    def stream():  # an endless stream: fit must stop after 5 batches
        s = 0
        while True:
            consumed.append(s)
            yield _rows(256, d, seed=s) * 7.0
            s += 1

    norm.fit(stream())
    assert consumed == [0, 1, 2, 3, 4]
    fit_rows = torch.cat([_rows(256, d, seed=s) * 7.0 for s in range(5)])
    n, info = norm(fit_rows)
    assert n.norm(dim=-1).mean().item() == pytest.approx(math.sqrt(d), rel=1e-5)
    assert info.coef.ndim == 0
    held_out = torch.cat([_rows(256, d, seed=s) * 7.0 for s in range(100, 105)])
    assert norm(held_out)[0].norm(dim=-1).mean().item() == pytest.approx(math.sqrt(d), rel=0.15)  # heavy-tailed row scales


def test_dataset_scalar_state_dict_round_trip_and_unfitted_error():
    a = _fitted("dataset_scalar", 16)
    b = make_normalizer(NormalizeConfig(mode="dataset_scalar"), 16)
    with pytest.raises(RuntimeError, match="before fit"):
        b(_rows(4, 16))
    b.load_state_dict(a.state_dict())
    x = _rows(4, 16, seed=9)
    assert torch.equal(a(x)[0], b(x)[0])
    with pytest.raises(ValueError, match="mode='dataset_scalar'"):
        make_normalizer(NormalizeConfig(mode="layer_norm"), 16).load_state_dict(a.state_dict())


def test_fit_is_a_noop_for_other_modes_and_rejects_empty_input():
    norm = make_normalizer(NormalizeConfig(mode="constant_norm_rescale"), 4)
    norm.fit([])  # no-op, no error
    assert norm.state_dict()["scalar"] is None
    with pytest.raises(ValueError, match="no batches"):
        make_normalizer(NormalizeConfig(mode="dataset_scalar"), 4).fit([])
    with pytest.raises(ValueError, match="all-zero|finite positive"):
        make_normalizer(NormalizeConfig(mode="dataset_scalar"), 4).fit([torch.zeros(3, 4)])


def test_stats_on_a_hand_made_example():
    # d = 4, sqrt(d) = 2. Rows with norms 2, 0.5 and 0 (and 1e-7, below the 1e-6 tiny threshold).
    x = torch.tensor(
        [
            [2.0, 0.0, 0.0, 0.0],  # ||x|| = 2   -> coef 1
            [0.3, 0.4, 0.0, 0.0],  # ||x|| = 0.5 -> coef 4
            [0.0, 0.0, 0.0, 1e-7],  # ||x|| = 1e-7 -> clamped coef 2/1e-6 = 2e6, out norm 0.2
            [0.0, 0.0, 0.0, 0.0],  # ||x|| = 0   -> clamped coef 2e6, out norm 0
        ]
    )
    s = make_normalizer(NormalizeConfig(mode="constant_norm_rescale_clamped", clamp_min=1e-6), 4).stats(x)
    assert s["n_rows"] == 4 and s["n_tiny"] == 2 and s["n_nonfinite"] == 0
    assert s["x_norm_min"] == 0.0 and s["x_norm_max"] == pytest.approx(2.0)
    assert s["coef_min"] == pytest.approx(1.0) and s["coef_max"] == pytest.approx(2e6)
    assert s["out_norm_min"] == 0.0 and s["out_norm_max"] == pytest.approx(2.0)
    # unclamped: the zero row's coefficient is inf and its output non-finite, reported, not raised
    u = make_normalizer(NormalizeConfig(mode="constant_norm_rescale"), 4).stats(x)
    assert u["coef_max"] == math.inf and u["n_nonfinite"] == 1 and u["n_tiny"] == 2
    assert u["coef_min"] == pytest.approx(1.0)
    none = make_normalizer(NormalizeConfig(mode="none"), 4).stats(x)
    assert none["coef_min"] == none["coef_max"] == 1.0 and none["out_norm_max"] == pytest.approx(2.0)


def test_none_mode_returns_input_and_empty_info():
    x = _rows(3, 8)
    n, info = make_normalizer(NormalizeConfig(mode="none"), 8)(x)
    assert n is x and info == NormInfo()


def test_width_mismatch_and_unknown_mode_are_rejected():
    with pytest.raises(ValueError, match="width 5 != d_in=4"):
        make_normalizer(NormalizeConfig(mode="none"), 4)(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="not allowed"):
        Normalizer("batch_norm", 4)
