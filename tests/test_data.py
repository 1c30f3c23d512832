"""Activation sources: synthetic ground truth, determinism per (seed, step), the in-memory source,
dispatch by name and width resolution."""

from __future__ import annotations

import pytest
import torch

from saelab.config import DataConfig, RunConfig
from saelab.data import sources as data
from saelab.data.sources import SyntheticSource, TensorSource, make_source, resolve


def _src(seed: int = 0, d_in: int = 16, **kw) -> SyntheticSource:
    base = {"n_features": 48, "mean_active": 3.0}
    return SyntheticSource(DataConfig(**(base | kw)), d_in, seed)


def test_batches_are_a_pure_function_of_seed_and_step():
    a, b = _src(), _src()
    assert torch.equal(a.batch(5, 32), b.batch(5, 32))
    assert torch.equal(a.batch(5, 32), a.batch(5, 32))  # no hidden state advances between calls
    assert not torch.equal(a.batch(5, 32), a.batch(6, 32))
    assert not torch.equal(a.batch(5, 32), _src(seed=1).batch(5, 32))
    assert torch.equal(a.ground_truth, b.ground_truth)
    assert not torch.equal(a.ground_truth, _src(seed=1).ground_truth)
    assert a.batch(0, 32).dtype == torch.float32 and a.batch(0, 32).shape == (32, 16)


def test_eval_set_is_a_separate_stream():
    src = _src()
    ev = src.eval_set(256)
    assert ev.shape == (256, 16)
    assert torch.equal(ev, src.eval_set(256))
    train = torch.cat([src.batch(s, 64) for s in range(100)])
    assert torch.cdist(ev, train).min() > 0  # no held-out row appears in training batches


def test_ground_truth_rows_are_unit_vectors():
    src = _src(n_features=100, d_in=32)
    assert src.ground_truth.shape == (100, 32)
    torch.testing.assert_close(src.ground_truth.norm(dim=-1), torch.ones(100))


def test_mean_active_and_magnitudes_are_honoured():
    """With d_in >= n_features the true directions are independent, so least squares recovers each
    row's feature coefficients exactly (no noise, no offset)."""
    src = _src(d_in=64, n_features=32, mean_active=4.0, noise_std=0.0, firing_exponent=1.0)
    assert src.probs.sum().item() == pytest.approx(4.0, rel=1e-5)
    assert src.probs[0] > src.probs[-1]  # power law: low-index features fire more often
    x = src.batch(0, 4096)
    coef = torch.linalg.lstsq(src.ground_truth.T.double(), x.T.double()).solution.T  # [rows, features]
    active = coef.abs() > 1e-6
    # the count of active features per row has sd <= sqrt(4) = 2, so its mean over 4096 rows has
    # standard error <= 0.03; 0.2 is more than six of them
    assert active.sum(-1).double().mean().item() == pytest.approx(4.0, abs=0.2)
    mags = coef[active]
    assert mags.min() >= 0.5 - 1e-4 and mags.max() <= 1.5 + 1e-4  # U(0.5, 1.5)
    freq = active.double().mean(0)
    assert (freq - src.probs.double()).abs().max() < 0.03  # each feature fires at its own rate


def test_probabilities_are_capped_at_one():
    src = _src(n_features=8, mean_active=6.0)  # 1/(i+1) scaled to sum 6 puts p_0 = 2.2
    assert src.probs.max() <= 1.0
    assert src.probs.sum().item() == pytest.approx(6.0, rel=1e-4)
    assert src.describe()["always_on_features"] >= 1


def test_mean_offset():
    src = _src(mean_offset=5.0, noise_std=0.0)
    assert src.offset.norm().item() == pytest.approx(5.0, rel=1e-5)
    x = src.batch(0, 2000)
    # the features are non-negative, so the mean row is the offset plus their (small) mean
    features_mean = (src.probs[:, None] * src.ground_truth).sum(0)  # E[magnitude] = 1
    torch.testing.assert_close(x.mean(0), src.offset + features_mean, atol=0.15, rtol=0)


def test_outlier_rows():
    src = _src(tiny_row_fraction=0.2, huge_row_fraction=0.1, noise_std=0.01)
    norms = src.batch(0, 5000).norm(dim=-1)
    assert (norms < 1e-3).double().mean().item() == pytest.approx(0.2, abs=0.03)
    assert (norms > 100).double().mean().item() == pytest.approx(0.1, abs=0.03)
    plain = _src(noise_std=0.01).batch(0, 5000).norm(dim=-1)
    assert plain.min() > 1e-3 and plain.max() < 100


def test_tensor_source_walks_epochs_of_permutations():
    x = torch.arange(12, dtype=torch.float32).unsqueeze(1).repeat(1, 3)  # row i is [i, i, i]
    src = TensorSource(x, eval_rows=2, seed=0)
    assert src.d_in == 3 and src.ground_truth is None
    assert src.eval_set(2)[:, 0].tolist() == [10.0, 11.0]  # the last rows are held out
    ids = torch.cat([src.batch(s, 4)[:, 0] for s in range(5)]).long().tolist()  # 20 rows = 2 epochs of 10
    assert sorted(ids[:10]) == list(range(10)) and sorted(ids[10:]) == list(range(10))
    assert ids[:10] != ids[10:]  # a new permutation each epoch
    assert 10 not in ids and 11 not in ids
    # step 2 straddles the epoch boundary: rows 8-9 of epoch 0, then rows 0-1 of epoch 1
    assert src.batch(2, 4)[:, 0].long().tolist() == ids[8:12]
    assert torch.equal(src.batch(3, 4), TensorSource(x, eval_rows=2, seed=0).batch(3, 4))
    assert not torch.equal(
        torch.cat([src.batch(s, 4) for s in range(3)]),
        torch.cat([TensorSource(x, eval_rows=2, seed=1).batch(s, 4) for s in range(3)]),
    )


def test_tensor_source_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        TensorSource(torch.zeros(4), eval_rows=1)
    with pytest.raises(ValueError, match="eval_rows"):
        TensorSource(torch.zeros(4, 2), eval_rows=4)
    bad = torch.zeros(6, 2)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="row 3"):
        TensorSource(bad, eval_rows=1)


def test_make_source_dispatch(monkeypatch):
    cfg = RunConfig()
    src = make_source(cfg)
    assert isinstance(src, SyntheticSource) and src.d_in == data.SYNTHETIC_D_IN == 768
    assert make_source(cfg.replace(sae={"d_in": 24})).d_in == 24

    calls = []  # the dispatch's own names for the two makers (sources imports them at its top)
    monkeypatch.setattr(data, "make_transformer_source", lambda c: calls.append(("transformer", c.data.source)) or "T")
    monkeypatch.setattr(data, "make_file_source", lambda c: calls.append(("file", c.data.source)) or "F")
    assert make_source(cfg.replace(data={"source": "minilm"})) == "T"
    assert make_source(cfg.replace(data={"source": "hf:some/model"})) == "T"
    assert make_source(cfg.replace(data={"source": "file:acts.safetensors"})) == "F"
    assert calls == [("transformer", "minilm"), ("transformer", "hf:some/model"), ("file", "file:acts.safetensors")]


def test_resolve_takes_the_width_from_the_source_and_rejects_a_mismatch():
    src = TensorSource(torch.randn(20, 8), eval_rows=4, name="acts.npy")
    cfg = RunConfig().replace(data={"source": "file:acts.npy"})
    assert resolve(cfg, src).sae.d_in == 8
    assert resolve(cfg.replace(sae={"d_in": 8}), src).sae.d_in == 8
    with pytest.raises(ValueError) as err:
        resolve(cfg.replace(sae={"d_in": 16}), src)
    msg = str(err.value)
    assert "16" in msg and "8" in msg and "acts.npy" in msg


def test_the_ordered_stream_drifts_by_document_with_the_shuffled_distribution():
    """Documents of 200 rows, w = 1: every row of a document has the same active features; over many
    documents each feature fires at its shuffled rate; the held-out set is the shuffled one."""
    kw = {"n_features": 48, "mean_active": 3.0, "noise_std": 0.0}
    ordered = _src(**kw, order="ordered", document_rows=200, document_features=1.0)
    shuffled = _src(**kw)
    assert torch.equal(ordered.eval_set(64), shuffled.eval_set(64))
    topic = ordered._doc_probs(0)
    assert set(topic.unique().tolist()) <= {0.0, 1.0}  # w = 1: a document's features fire on all its rows, the others on none

    def off_span(rows: torch.Tensor, doc: int) -> torch.Tensor:  # norm of each row's part outside document doc's features
        G = ordered.ground_truth[ordered._doc_probs(doc) == 1].T  # [d, n_topic]
        coef = torch.linalg.lstsq(G, rows.T).solution
        return (rows.T - G @ coef).norm(dim=0)

    x = ordered.batch(0, 150)  # rows 0..149: document 0
    assert float(off_span(x, 0).max()) < 1e-4
    y = ordered.batch(1, 150)  # rows 150..299 straddle documents 0 and 1
    assert float(off_span(y[:50], 0).max()) < 1e-4 and float(off_span(y[50:], 1).max()) < 1e-4
    assert float(off_span(y[50:], 0).min()) > 1e-2  # document 1 has other features
    on = torch.stack([ordered._doc_probs(j) for j in range(4000)]).mean(0)
    torch.testing.assert_close(on, shuffled.probs, atol=0.03, rtol=0)  # E over documents = p_i
    assert torch.equal(_src(**kw, document_rows=7, document_features=0.5).batch(3, 32), shuffled.batch(3, 32))  # shuffled ignores them
    half = _src(**kw, order="ordered", document_rows=200, document_features=0.0)
    torch.testing.assert_close(half._doc_probs(3), shuffled.probs)  # w = 0: no drift


def test_sink_rows_sit_in_one_direction_at_the_asked_multiple_of_the_median_norm():
    s = _src(outlier_fraction=0.05, outlier_norm=50.0)
    x = s.batch(0, 4000)
    n = x.norm(dim=-1)
    clean = _src().batch(0, 4000).norm(dim=-1).median()
    sink = n > 20 * n.median()
    assert 0.04 < float(sink.double().mean()) < 0.06
    assert torch.allclose(x[sink], x[sink][0].expand_as(x[sink]))  # one fixed direction
    assert float(n[sink][0] / clean) == pytest.approx(50.0, rel=0.05)


def test_drop_norm_above_drops_high_norm_rows_keeps_the_batch_size_and_stays_pure():
    cfg = RunConfig().replace(sae={"d_in": 16}, data={"n_features": 48, "mean_active": 3.0, "outlier_fraction": 0.05,
                                                      "drop_norm_above": 10.0}, eval_rows=500)
    src, again = make_source(cfg), make_source(cfg)
    assert isinstance(src, data.NormFilter)
    x = src.batch(4, 400)
    assert x.shape == (400, 16) and float(x.norm(dim=-1).max()) <= src.threshold
    assert 5 < src.last_dropped < 40 and torch.equal(x, again.batch(4, 400))
    ev = src.eval_set(500)
    assert ev.shape[0] == 500 - src.eval_dropped and src.eval_dropped > 5
    assert src.describe()["drop_norm_above"] == 10.0 and src.ground_truth is not None
    plain = make_source(cfg.replace(data={"drop_norm_above": 0.0}))
    assert not isinstance(plain, data.NormFilter)
