"""saelab.training.stack: building groups of stacked arms (the step itself is compared against plain paths
in tests/test_fastpaths.py and trained end to end in tests/test_train.py)."""

from __future__ import annotations

import pytest
import torch

from saelab.config import RunConfig
from saelab.data.sources import SyntheticSource
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
