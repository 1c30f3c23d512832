"""Loading other libraries' SAEs (saelab.interop.foreign) and inspecting them (saelab.interop.inspection).

Each fixture is written in the library's documented on-disk layout (see saelab/interop/foreign.py for the
sources), and each library's forward pass is written out here as a formula, independently of
saelab's models. The planted SAE has known dead latents, one group per reason."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from saelab.interop import inspection
from saelab.interop.foreign import load_checkpoint

D, S = 16, 32
TOL = 1e-6  # relative to the largest reference value: float32 rounding of sums of 16-32 products
FORWARD_DIFFS: dict[str, float] = {}  # test name -> max abs difference (printed with pytest -s)


def assert_close(got: torch.Tensor, ref: torch.Tensor) -> None:
    diff = float((got - ref).abs().max())
    FORWARD_DIFFS[os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]] = diff
    assert diff <= TOL * max(1.0, float(ref.abs().max())), diff


def planted(seed: int = 0) -> dict:
    """Weights in saelab's layout (W_enc [S, d], W_dec [S, d]) and data rows x = 10 u + noise.

    Dead by construction: 0-1 bias -100 (bias_far_below); 2-3 W_enc = -u (anti_aligned_mean);
    4-5 tiny W_enc and bias -0.01 (encoder_norm_collapsed); 6 W_enc = -u and W_dec = W_dec[10]
    (decoder_duplicate, also anti-aligned). Alive latents lean along u, so 10 u keeps them firing."""
    g = torch.Generator().manual_seed(seed)
    u = torch.zeros(D)
    u[0] = 1.0
    W_enc = torch.randn(S, D, generator=g) / D**0.5 + 0.5 * u
    b_enc = torch.randn(S, generator=g) * 0.1
    W_dec = torch.randn(S, D, generator=g)
    b_dec = torch.zeros(D)
    b_enc[0:2] = -100.0
    W_enc[2:4] = -u
    b_enc[2:4] = 0.0
    W_enc[4:6] = 1e-4 * (u + 0.1 * torch.randn(2, D, generator=g))
    b_enc[4:6] = -0.01
    W_enc[6] = -u
    W_dec[6] = W_dec[10]
    x = 10 * u + torch.randn(2000, D, generator=g)
    return {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "x": x, "dead": list(range(7))}


def write_saelens(path: Path, w: dict, arch: str = "standard", **cfg) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    sd = {"W_enc": w["W_enc"].T.contiguous(), "b_enc": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    sd |= {k: v for k, v in w.items() if k in ("threshold", "topk_threshold")}
    save_file(sd, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"architecture": arch, "d_in": D, "d_sae": S, "dtype": "float32",
                                               "apply_b_dec_to_input": True, "normalize_activations": "none", **cfg}))
    return path


def write_sparsify(path: Path, w: dict, k: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.weight": w["W_enc"].contiguous(), "encoder.bias": w["b_enc"], "W_dec": w["W_dec"],
               "b_dec": w["b_dec"]}, str(path / "sae.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 2, "normalize_decoder": True,
                                               "num_latents": S, "k": k, "multi_topk": False, "skip_connection": False,
                                               "transcode": False, "d_in": D}))
    return path


def write_dl(path: Path, sd: dict, dict_class: str, **trainer) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path / "ae.pt")
    (path / "config.json").write_text(json.dumps({"trainer": {"dict_class": dict_class, "activation_dim": D,
                                                              "dict_size": S, **trainer}}))
    return path


def topk_dense(pre: torch.Tensor, k: int) -> torch.Tensor:
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


# ----- forward passes, each library's formula written out -------------------------------------


def test_saelens_standard_forward_and_planted_dead(tmp_path):
    w = planted()
    w["b_dec"] = torch.linspace(-0.5, 0.5, D)
    ck = load_checkpoint(write_saelens(tmp_path / "sl", w))
    x = w["x"][:300]
    # SAELens StandardSAE: relu((x - b_dec) @ W_enc + b_enc) @ W_dec + b_dec, W_enc [d_in, d_sae]
    ref = torch.relu((x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"]) @ w["W_dec"] + w["b_dec"]
    assert_close(ck.reconstruct(x), ref)
    w["b_dec"] = torch.zeros(D)
    rec = inspection.inspect(load_checkpoint(write_saelens(tmp_path / "sl0", w)), iter(w["x"].split(500)))
    assert rec["dead"] == w["dead"]
    assert rec["reasons"]["0"] == ["bias_far_below"] and rec["reasons"]["1"] == ["bias_far_below"]
    assert "anti_aligned_mean" in rec["reasons"]["2"] and "anti_aligned_mean" in rec["reasons"]["3"]
    assert rec["reasons"]["4"] == ["encoder_norm_collapsed"] and rec["reasons"]["5"] == ["encoder_norm_collapsed"]
    assert set(rec["reasons"]["6"]) == {"anti_aligned_mean", "decoder_duplicate"}
    assert rec["decoder_twins"] == {"6": 10}
    assert rec["n_latents"] == S and rec["n_rows"] == 2000
    assert all(m < 0 for m in (rec["latents"]["margin"][i] for i in w["dead"]))


def test_saelens_jumprelu_forward(tmp_path):
    w = planted()
    w["threshold"] = torch.full((S,), 0.3)
    w["threshold"][:3] = 0.0
    ck = load_checkpoint(write_saelens(tmp_path / "j", w, "jumprelu"))
    x = w["x"][:300]
    pre = (x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"]
    ref = (torch.relu(pre) * (pre > w["threshold"])) @ w["W_dec"] + w["b_dec"]  # SAELens JumpReLUSAE.encode
    assert_close(ck.reconstruct(x), ref)
    assert ck.architecture == "jumprelu"


def test_saelens_topk_rescaled_by_decoder_norm(tmp_path):
    w = planted()
    w["W_dec"] = w["W_dec"] * torch.linspace(0.2, 3.0, S)[:, None]  # decoder norms matter for the selection
    ck = load_checkpoint(write_saelens(tmp_path / "t", w, "topk", k=4, rescale_acts_by_decoder_norm=True))
    x = w["x"][:300]
    n = w["W_dec"].norm(dim=-1)
    pre = ((x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"]) * n  # SAELens TopKSAE.encode with the rescale
    ref = (topk_dense(pre, 4) / n) @ w["W_dec"] + w["b_dec"]  # ... and decode
    assert_close(ck.reconstruct(x), ref)


def test_saelens_pre_6_topk_config(tmp_path):
    w = planted()
    p = write_saelens(tmp_path / "old", w, "standard", k=None)
    cfg = json.loads((p / "cfg.json").read_text())
    del cfg["architecture"]
    cfg |= {"activation_fn_str": "topk", "activation_fn_kwargs": {"k": 5}}
    (p / "cfg.json").write_text(json.dumps(cfg))
    ck = load_checkpoint(p)
    x = w["x"][:200]
    ref = topk_dense((x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"], 5) @ w["W_dec"] + w["b_dec"]
    assert ck.architecture == "topk"
    assert_close(ck.reconstruct(x), ref)


def test_saelens_batchtopk_is_a_threshold(tmp_path):
    w = planted()
    w["topk_threshold"] = torch.tensor(1.5, dtype=torch.float64)
    ck = load_checkpoint(write_saelens(tmp_path / "b", w, "batchtopk", k=4, rescale_acts_by_decoder_norm=False))
    x = w["x"][:300]
    pre = (x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"]
    # SAELens saves BatchTopK for inference as JumpReLU with threshold = topk_threshold
    ref = (pre.relu() * (pre > 1.5)) @ w["W_dec"] + w["b_dec"]
    assert_close(ck.reconstruct(x), ref)


def test_sparsify_forward_and_never_in_topk(tmp_path):
    w = planted()
    w["W_enc"][7] = 0.01 * w["W_enc"][7] / w["W_enc"][7].norm()  # positive but small: never makes the top 4
    w["W_enc"][7, 0] = 0.01
    w["b_enc"][7] = 0.05
    w["b_dec"] = 0.1 * torch.ones(D)
    ck = load_checkpoint(write_sparsify(tmp_path / "sp", w, k=4))
    x = w["x"][:300]
    # sparsify: pre_acts = relu((x - b_dec) @ encoder.weight^T + encoder.bias); top-k; decode + b_dec
    pre = torch.relu((x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"])
    vals, idx = pre.topk(4, dim=-1)
    ref = (vals[..., None] * w["W_dec"][idx]).sum(-2) + w["b_dec"]
    assert_close(ck.reconstruct(x), ref)
    rec = inspection.inspect(ck, iter(w["x"].split(700)))
    assert 7 in rec["dead"] and "never_in_topk" in rec["reasons"]["7"]
    assert rec["architecture"] == "topk"


def test_dictionary_learning_autoencoder(tmp_path):
    w = planted()
    bias = torch.linspace(-0.2, 0.2, D)
    sd = {"bias": bias, "encoder.weight": w["W_enc"], "encoder.bias": w["b_enc"], "decoder.weight": w["W_dec"].T.contiguous()}
    ck = load_checkpoint(write_dl(tmp_path / "dl", sd, "AutoEncoder"))
    x = w["x"][:300]
    # dictionary_learning AutoEncoder: relu(encoder(x - bias)); decoder(f) + bias (decoder.weight [d, S])
    ref = torch.relu((x - bias) @ w["W_enc"].T + w["b_enc"]) @ w["W_dec"] + bias
    assert_close(ck.reconstruct(x), ref)
    sd["bias"] = torch.zeros(D)
    rec = inspection.inspect(load_checkpoint(write_dl(tmp_path / "dl0", sd, "AutoEncoder")), iter(w["x"].split(512)))
    assert rec["dead"] == w["dead"]


def test_dictionary_learning_topk_batchtopk_jumprelu(tmp_path):
    w = planted()
    x = w["x"][:300]
    base = {"b_dec": w["b_dec"] + 0.1, "encoder.weight": w["W_enc"], "encoder.bias": w["b_enc"],
            "decoder.weight": w["W_dec"].T.contiguous(), "k": torch.tensor(4, dtype=torch.int32)}
    topk = load_checkpoint(write_dl(tmp_path / "tk", base | {"threshold": torch.tensor(-1.0)}, "AutoEncoderTopK", k=4))
    post = torch.relu((x - base["b_dec"]) @ w["W_enc"].T + w["b_enc"])
    vals, idx = post.topk(4, dim=-1)
    ref = torch.zeros_like(post).scatter(-1, idx, vals) @ w["W_dec"] + base["b_dec"]
    assert_close(topk.reconstruct(x), ref)
    btk = load_checkpoint(write_dl(tmp_path / "btk", base | {"threshold": torch.tensor(0.8)}, "BatchTopKSAE", k=4))
    ref = (post * (post > 0.8)) @ w["W_dec"] + base["b_dec"]  # BatchTopKSAE.encode(use_threshold=True)
    assert_close(btk.reconstruct(x), ref)
    thr = torch.full((S,), 0.2)
    jr = {"W_enc": w["W_enc"].T.contiguous(), "b_enc": w["b_enc"], "W_dec": w["W_dec"], "b_dec": base["b_dec"], "threshold": thr}
    jump = load_checkpoint(write_dl(tmp_path / "jr", jr, "JumpReluAutoEncoder"))
    pre = x @ w["W_enc"].T + w["b_enc"]  # JumpReluAutoEncoder: no b_dec subtraction
    ref = torch.relu(pre * (pre > thr)) @ w["W_dec"] + base["b_dec"]
    assert_close(jump.reconstruct(x), ref)


def test_saelab_run_round_trip(tmp_path):
    from saelab import config
    from saelab.training import train
    cfg = config.RunConfig().with_overrides({"sae.d_in": 12, "sae.d_sae": 24, "data.n_features": 48, "data.mean_active": 3.0,
                                             "steps": 20, "log_interval": 10, "eval_rows": 128,
                                             "normalize.mode": "dataset_scalar"})
    run = train.train(cfg, tmp_path / "run", progress=False)["run"]
    ck = load_checkpoint(tmp_path / "run")
    assert ck.format == "saelab" and ck.normalizer is not None and ck.normalizer.scalar is not None
    x = torch.randn(50, 12) * 3
    c = ck.normalizer.scalar
    W = run.weights
    ref = (torch.relu(c * x @ W["W_enc"].T + W["b_enc"]) @ W["W_dec"] + W["b_dec"]) / c
    assert_close(ck.reconstruct(x), ref)


# ----- bad input: one line naming the problem -------------------------------------------------


def test_missing_weights_file(tmp_path):
    p = write_saelens(tmp_path / "sl", planted())
    (p / "sae_weights.safetensors").unlink()
    with pytest.raises(ValueError, match="cfg.json but neither sae_weights.safetensors"):
        load_checkpoint(p)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a checkpoint"):
        load_checkpoint(tmp_path / "empty")


def test_unknown_architecture_and_shape_mismatch(tmp_path):
    w = planted()
    with pytest.raises(ValueError, match="architecture 'gated' is not supported"):
        load_checkpoint(write_saelens(tmp_path / "g", w, "gated"))
    p = write_saelens(tmp_path / "s", w)
    cfg = json.loads((p / "cfg.json").read_text()) | {"d_sae": S + 1}
    (p / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"d_sae={S + 1} but the weights have {S} latents"):
        load_checkpoint(p)
    with pytest.raises(ValueError, match="dict_class 'GatedAutoEncoder' is not supported"):
        load_checkpoint(write_dl(tmp_path / "gd", {"encoder.weight": w["W_enc"]}, "GatedAutoEncoder"))


UNPICKLED: list[int] = []


def _side_effect() -> int:
    UNPICKLED.append(1)  # runs only if something unpickles the object below
    return 0


class _NotATensor:
    def __reduce__(self):
        return (_side_effect, ())


def test_pickles_are_refused_never_unpickled(tmp_path):
    p = tmp_path / "dl"
    p.mkdir()
    torch.save({"encoder.weight": torch.zeros(2, 2), "obj": _NotATensor()}, p / "ae.pt")
    (p / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoder"}}))
    with pytest.raises(ValueError, match="refused: saelab loads .pt files only with torch.load"):
        load_checkpoint(p)
    assert UNPICKLED == []
    (tmp_path / "sae.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="is a pickle file; refused"):
        load_checkpoint(tmp_path / "sae.pkl")
    assert UNPICKLED == []


def test_d_in_mismatch_with_data(tmp_path):
    import numpy as np

    np.save(tmp_path / "acts.npy", np.zeros((10, D + 1), dtype=np.float32))
    with pytest.raises(ValueError, match=f"the SAE has d_in={D} but data 'file:.*' has rows of width {D + 1}"):
        inspection.row_chunks(f"file:{tmp_path / 'acts.npy'}", D, 0, 4)


def test_file_rows_stream_in_chunks(tmp_path):
    import numpy as np

    x = np.arange(30 * D, dtype=np.float32).reshape(30, D)
    np.save(tmp_path / "acts.npy", x)
    chunks, info = inspection.row_chunks(f"file:{tmp_path / 'acts.npy'}", D, 25, 7)
    got = list(chunks)
    assert [len(c) for c in got] == [7, 7, 7, 4] and info["rows"] == 25
    assert torch.equal(torch.cat(got), torch.from_numpy(x[5:]))


def test_histogram_and_verdict():
    # fire fractions 0, 1/100, 1/10, 1 of 100 rows: log10 -inf (dead), -2, -1, 0
    h = inspection.histogram(torch.tensor([0.0, 0.01, 0.1, 1.0], dtype=torch.float64), 100)
    assert h["dead"] == 1 and sum(h["counts"]) == 3 and h["edges"][0] == -2.0
    rec = {"n_latents": 4, "n_dead": 2, "n_rows": 100, "source": "s", "n_dead_unexplained": 0,
           "reason_summary": [{"name": "anti_aligned_mean", "n": 2}, {"name": "bias_far_below", "n": 1}],
           "margin": {"dead_median": -1.0, "alive_median": 2.0}}
    text = inspection.verdict(rec)
    assert "2 of 4 latents (50%)" in text and "100% of the dead latents point against the data mean: centre the input" in text
    assert "50% have an encoder bias far below" in text


def test_zz_print_forward_diffs():
    """Not a check: prints each fixture's max abs difference (run with -s to see them)."""
    for name, diff in FORWARD_DIFFS.items():
        print(f"forward max abs diff {name}: {diff:.3g}")
