"""Every metric against a hand-computed 2x4 example, the arithmetic in a comment (STYLE.md item 8)."""

from __future__ import annotations

import pytest
import torch

from saelab.training import metrics as M

# codes: 2 rows x 4 latents
CODES = torch.tensor([[0.0, 2.0, 0.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
# x and a reconstruction; squared errors: row 0 [0, 0, 0, 1], row 1 [0, 0, 0, 4] -> sum 5
X = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
X_HAT = torch.tensor([[1.0, 2.0, 3.0, 3.0], [3.0, 2.0, 1.0, 2.0]])


def test_l0_and_l0_fraction():
    # active per row: 2 and 1 -> mean 1.5; over a dictionary of 4 -> 0.375
    assert M.l0(CODES).item() == 1.5
    assert M.l0_fraction(CODES).item() == 0.375


def test_fire_counts_frequency_and_dead_fraction():
    # latent 0 fires on row 1, latent 1 on row 0, latent 2 never, latent 3 on row 0
    counts = M.fire_counts(CODES)
    assert counts.tolist() == [1, 1, 0, 1]
    assert M.firing_frequency(CODES).tolist() == [0.5, 0.5, 0.0, 0.5]  # counts / 2 rows
    assert M.dead_fraction(counts).item() == 0.25  # 1 of 4 never fired
    # as the seed measured it, on one row only: row 0 fires latents 1 and 3 -> 2 of 4 dead
    assert M.dead_fraction(M.fire_counts(CODES[:1])).item() == 0.5


def test_mse_fvu_explained_variance():
    # mse: 5 / 8 elements = 0.625
    assert M.mse(X, X_HAT).item() == 0.625
    # mean row [2, 2, 2, 2]; centered rows [-1, 0, 1, 2] and [1, 0, -1, -2]: 6 + 6 = 12
    # fvu = 5 / 12; explained variance = 7 / 12
    assert M.fvu(X, X_HAT).item() == pytest.approx(5 / 12)
    assert M.explained_variance(X, X_HAT).item() == pytest.approx(7 / 12)
    # around zero (SAELens issue 659) it would be 1 - 5/44: sum of squares 1+4+9+16+9+4+1+0 = 44
    assert M.explained_variance(X, X_HAT).item() != pytest.approx(1 - 5 / 44)


def test_explained_variance_is_measured_around_the_mean():
    """SAELens issue 659: data with a large mean offset and a model that only outputs the mean.
    Around the mean EV is 0 (the model explains nothing); around zero it would be ~1."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 8, generator=g) + 100.0
    x_hat = x.mean(0, keepdim=True).expand_as(x)
    assert M.explained_variance(x, x_hat).item() == pytest.approx(0.0, abs=1e-4)
    assert M.fvu(x, x_hat).item() == pytest.approx(1.0, abs=1e-4)
    around_zero = 1 - (x_hat - x).square().sum() / x.square().sum()
    assert around_zero.item() > 0.99  # what the bug reported


def test_metrics_keep_leading_arm_dims():
    codes = torch.stack([CODES, 2 * CODES, torch.zeros(2, 4)])
    assert M.l0(codes).tolist() == [1.5, 1.5, 0.0]
    assert M.fire_counts(codes).shape == (3, 4)
    assert M.dead_fraction(M.fire_counts(codes)).tolist() == [0.25, 0.25, 1.0]
    x, x_hat = torch.stack([X, X]), torch.stack([X_HAT, X])
    assert M.fvu(x, x_hat).tolist() == pytest.approx([5 / 12, 0.0])
    assert M.mse(x, x_hat).tolist() == [0.625, 0.0]


def test_l1_recon_ratio():
    # alpha 0.5 * penalty 1.375 / reconstruction 2 = 0.34375
    assert M.l1_recon_ratio(0.5, torch.tensor(1.375), torch.tensor(2.0)).item() == 0.34375


def test_shrinkage():
    # row norms: x [3, 4] -> 5 and [6, 8] -> 10; x_hat [1.5, 2] -> 2.5 and [6, 8] -> 10
    # ratios 0.5 and 1 -> mean 0.75
    x = torch.tensor([[3.0, 4.0], [6.0, 8.0]])
    x_hat = torch.tensor([[1.5, 2.0], [6.0, 8.0]])
    assert M.shrinkage(x, x_hat).item() == pytest.approx(0.75)


def test_mmcs_and_frac_recovered():
    # true features e0, e1; decoder rows [2, 0], [1, 1], [0, -1] -> unit [1, 0], [.707, .707], [0, -1]
    # e0: best cosine 1 (row 0); e1: cosines 0, .707, -1 -> .707; mmcs = (1 + .7071) / 2 = .8536
    truth = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    W_dec = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    assert M.max_cosines(W_dec, truth).tolist() == pytest.approx([1.0, 2**-0.5])
    assert M.mmcs(W_dec, truth).item() == pytest.approx((1 + 2**-0.5) / 2)
    assert M.frac_recovered(W_dec, truth).item() == 0.5  # only e0 above 0.9
    assert M.frac_recovered(W_dec, truth, threshold=0.7).item() == 1.0
    # a stacked decoder gives one value per arm; a flipped dictionary recovers nothing
    stacked = torch.stack([W_dec, -W_dec])
    assert M.mmcs(stacked, truth).tolist() == pytest.approx([(1 + 2**-0.5) / 2, (0 + 1) / 2])
    assert M.frac_recovered(stacked, truth).tolist() == [0.5, 0.5]


def test_geometric_median():
    # 1-D: the median, however far the outlier (the mean of [0, 1, 100] is 33.7)
    assert float(M.geometric_median(torch.tensor([[0.0], [1.0], [100.0]]))) == pytest.approx(1.0, abs=1e-4)
    # a square's corners: its center
    sq = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    torch.testing.assert_close(M.geometric_median(sq), torch.tensor([1.0, 1.0]))
    # anywhere: the unit vectors towards the rows sum to ~0 (the optimality condition), and moving
    # one row of 200 a million times further moves the median only a little
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 4.0
    gm = M.geometric_median(x, tol=1e-12)
    pull = ((x - gm) / (x - gm).norm(dim=-1, keepdim=True)).sum(0)
    assert float(pull.norm()) < 1e-4
    far = x.clone()
    far[0] *= 1e6
    assert float((M.geometric_median(far) - gm).norm()) < 0.05
    assert float((far.mean(0) - x.mean(0)).norm()) > 1e3
    with pytest.raises(ValueError, match="rows"):
        M.geometric_median(torch.zeros(0, 3))


def test_detection_floor_and_the_rows_it_needs():
    # an alive latent at rate r is silent on n rows with probability (1 - r)^n; the floor is the r at
    # which that is 1%: 1 - 0.01^(1/1024) = 4.487e-3 for the quick profile's 1,024 held-out rows
    assert M.detection_floor(1024) == pytest.approx(4.4873e-3, rel=1e-4)
    assert M.detection_floor(0) == 1.0
    rate = 2 / 2048 / 10  # a tenth of the mean rate of TopK k=2 on 2,048 latents
    n = M.observations_for(rate)
    assert M.detection_floor(n) <= rate < M.detection_floor(n - 1)
    assert 47_000 < n < 47_300  # ln(100) / 9.77e-5 = 47,155
    with pytest.raises(ValueError, match="rate"):
        M.observations_for(0.0)


def test_dense_fraction_and_collapse():
    counts = torch.tensor([[0, 5, 11, 50]])  # fired on 0, 5, 11 and 50 of 100 rows: two above 10%
    assert M.dense_fraction(counts, 100).tolist() == [0.5]
    # FVU >= 0.99 (learned nothing) or L0 < 1 per row (L1 33x too strong: 0.5) is a collapse
    assert M.collapsed(torch.tensor([1.03, 0.4, 0.4]), torch.tensor([5.0, 0.5, 3.0])).tolist() == [True, True, False]


def test_spectrum_measures_on_hand_computed_eigenvalues():
    ev = torch.tensor([4.0, 3.0, 2.0, 1.0])
    assert M.components_for(ev, 0.7) == 2  # 4 + 3 = 7 of 10
    assert M.components_for(ev, 0.71) == 3 and M.components_for(ev, 1.0) == 4
    assert M.participation_ratio(ev) == pytest.approx(100 / 30)  # (4+3+2+1)^2 / (16+9+4+1)
    assert M.entropy_rank(torch.tensor([1.0, 1.0, 0.0, 0.0])) == pytest.approx(2.0)  # exp(ln 2)
    assert M.entropy_rank(torch.ones(5)) == pytest.approx(5.0) and M.participation_ratio(torch.ones(5)) == pytest.approx(5.0)
    # rows (1, 0) and (-1, 0): centered covariance diag(1, 0), largest first
    torch.testing.assert_close(M.spectrum(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])), torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_principal_basis_spans_the_rows_subspace():
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(10, 3, generator=g, dtype=torch.float64))[0].T  # [3, 10] orthonormal
    x = torch.randn(200, 3, generator=g, dtype=torch.float64) @ q
    basis = M.principal_basis(x, 0.99)
    assert basis.shape == (3, 10)
    torch.testing.assert_close(basis @ basis.T, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(x @ basis.T @ basis, x)  # every row lies in the span found
