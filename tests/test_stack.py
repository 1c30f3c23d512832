"""saelab.training.stack: building groups of stacked arms (the step itself is compared against plain paths
in tests/test_fastpaths.py and trained end to end in tests/test_train.py)."""

from __future__ import annotations

import pytest
import torch

from saelab.config import RunConfig
from saelab.data.sources import SyntheticSource, TensorSource
from saelab.training import metrics, stack

BASE = RunConfig().with_overrides({
    "sae.d_in": 16, "sae.d_sae": 24, "data.n_features": 40, "data.batch_size": 32, "data.mean_offset": 6.0,
    "normalize.estimate_batches": 3, "steps": 10, "log_interval": 10,
})


def _source(cfg: RunConfig) -> SyntheticSource:
    return SyntheticSource(cfg.data, cfg.sae.d_in, cfg.seed)


def _first_rows(cfg: RunConfig, src: SyntheticSource) -> torch.Tensor:
    return torch.cat([src.batch(s, cfg.data.batch_size) for s in range(cfg.normalize.estimate_batches)])


@pytest.mark.parametrize("center", ["mean", "geometric_median"])
def test_b_dec_starts_at_each_arms_center_of_the_first_batches(center):
    arms = [BASE.with_overrides({"sae.b_dec_init": center, "normalize.mode": mode})
            for mode in ("none", "constant_norm_rescale", "layer_norm")]
    src = _source(BASE)
    (group,) = stack.build_groups(arms, src, torch.device("cpu"))
    assert len(group.idx) == 3  # one stacked model: each arm centered in its own normalized space
    rows = _first_rows(BASE, src)
    for k, n in enumerate(group.normalizers):
        xn = n(rows)[0]
        want = xn.mean(0) if center == "mean" else metrics.geometric_median(xn)
        torch.testing.assert_close(group.model.b_dec[k], want)
    assert float(group.model.b_dec[0].detach().norm()) > 3  # the data's offset (norm 6) is there to find


def test_b_dec_stays_zero_by_default_and_the_encoder_and_decoder_do_not_change():
    src = _source(BASE)
    (plain,) = stack.build_groups([BASE], src, torch.device("cpu"))
    (centered,) = stack.build_groups([BASE.with_overrides({"sae.b_dec_init": "mean"})], src, torch.device("cpu"))
    assert torch.equal(plain.model.b_dec, torch.zeros_like(plain.model.b_dec))
    assert torch.equal(plain.model.W_enc, centered.model.W_enc) and torch.equal(plain.model.W_dec, centered.model.W_dec)


def test_centering_keeps_latents_alive_on_offset_data():
    """The lab's H8 in miniature: with a shared offset and b_dec at zero, some latents never fire
    on the held-out rows before training starts; started at the center and subtracted before the
    encoder, none is dead."""
    src = _source(BASE)
    x_eval = src.eval_set(2048)
    dead = {}
    for name, over in {"zeros": {}, "centered": {"sae.b_dec_init": "geometric_median", "sae.apply_b_dec_to_input": True}}.items():
        cfg = BASE.with_overrides({"normalize.mode": "none", "sae.d_sae": 256, **over})
        (group,) = stack.build_groups([cfg], src, torch.device("cpu"))
        dead[name] = float((stack.evaluate(group, x_eval)["fire"] == 0).double().mean())
    assert dead["zeros"] > 0.05 and dead["centered"] == 0.0, dead


@pytest.mark.parametrize("init", ["kaiming", "tied"])
def test_init_subspace_projects_rows_into_the_datas_span_and_keeps_their_norms(init):
    """Rows of rank 3 in 16 dimensions: the
    subspace init puts every encoder and decoder row inside their span, each at its kaiming/tied norm;
    a tied encoder stays the decoder's direction. Off (0), the rows point anywhere."""
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(16, 3, generator=g))[0].T  # [3, 16]
    rows = torch.randn(4096, 3, generator=g) @ basis
    cfg = BASE.with_overrides({"sae.init": init})
    src = TensorSource(rows, eval_rows=256)
    (plain,) = stack.build_groups([cfg], src, torch.device("cpu"))
    (inside,) = stack.build_groups([cfg.with_overrides({"sae.init_subspace": 0.99})], src, torch.device("cpu"))
    proj = basis.T @ basis
    for name in ("W_enc", "W_dec"):
        w, w0 = getattr(inside.model, name)[0].detach(), getattr(plain.model, name)[0].detach()
        torch.testing.assert_close(w @ proj, w, atol=1e-5, rtol=1e-4)  # in the span
        torch.testing.assert_close(w.norm(dim=-1), w0.norm(dim=-1))  # norms kept
        assert float((w0 - w0 @ proj).norm() / w0.norm()) > 0.7  # the plain init points mostly outside it (13 of 16 dims)
    if init == "tied":
        cos = torch.nn.functional.cosine_similarity(inside.model.W_enc[0], inside.model.W_dec[0], dim=-1)
        torch.testing.assert_close(cos, torch.ones_like(cos))
