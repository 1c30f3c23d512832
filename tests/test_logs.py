"""saelab.interop.logs (autopsy of a foreign training log), saelab.interop.export and the three CLI commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from saelab import cli
from saelab.interop import logs


def saelens_wandb_csv(path: Path) -> Path:
    """A W&B chart export of a SAELens run: 'Step', '<run> - <metric>' and __MIN/__MAX companions.
    2,048 latents; dead_features jumps from 20 to 1,500 between steps 5,000 and 5,500; the LR
    warms up linearly to 3e-4 at step 5,000."""
    steps = np.arange(0, 10_001, 500)
    dead = np.where(steps < 5500, 20, 1500)
    l0 = np.where(steps < 5500, 60.0, 12.0)
    lr = np.minimum(steps / 5000, 1.0) * 3e-4
    run = "sae_gpt2_blocks.8"
    df = pd.DataFrame({"Step": steps, f"{run} - metrics/l0": l0, f"{run} - metrics/l0__MIN": l0,
                       f"{run} - sparsity/dead_features": dead, f"{run} - details/current_learning_rate": lr,
                       f"{run} - losses/overall_loss": 1.0 / (1 + steps)})
    df.to_csv(path, index=False)
    return path


def test_saelens_export_maps_columns_and_finds_the_collapse(tmp_path):
    rec, m = logs.autopsy_log(saelens_wandb_csv(tmp_path / "log.csv"), d_sae=2048, events=["5000:resample"])
    assert rec["columns"]["step"] == "Step" and rec["columns"]["l0"] == "metrics/l0"
    assert rec["columns"]["dead_count"] == "sparsity/dead_features" and rec["columns"]["lr"] == "details/current_learning_rate"
    assert rec["n_collapses"] == 1
    c = rec["collapses"][0]
    assert c["start_step"] == 5000 and c["onset_step"] == 5500
    assert c["dead_before"] == pytest.approx(20 / 2048) and c["dead_after"] == pytest.approx(1500 / 2048)
    kinds = {(e["kind"], e["step"], e["position"]) for e in c["coinciding"]}
    assert ("resample", 5000, "before") in kinds and ("warmup_end", 5000, "before") in kinds
    assert "suspect" not in c  # a log holds no counterfactual: coinciding, never a cause
    assert "coinciding with resample at step 5000" in rec["verdict"] and "not as its cause" in rec["verdict"]


def test_sparsify_jsonl_and_parquet(tmp_path):
    steps = np.arange(0, 2000, 100)
    rows = [{"step": int(s), "dead_pct/layers.6": 0.01 if s < 1000 else 0.6, "fvu/layers.6": 0.2, "k": 32} for s in steps]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rec, _ = logs.autopsy_log(tmp_path / "log.jsonl")
    assert rec["columns"]["dead_frac"] == "dead_pct/layers.6" and rec["columns"]["l0"] == "k"
    assert rec["n_collapses"] == 1 and rec["collapses"][0]["onset_step"] == 1000
    pd.DataFrame(rows).rename(columns={"k": "active"}).to_parquet(tmp_path / "log.parquet")
    rec, _ = logs.autopsy_log(tmp_path / "log.parquet", columns={"active": "l0"})
    assert rec["columns"]["l0"] == "active" and rec["n_collapses"] == 1


def test_bad_logs(tmp_path):
    pd.DataFrame({"when": [1, 2], "metrics/l0": [1.0, 2.0]}).to_csv(tmp_path / "nostep.csv", index=False)
    with pytest.raises(ValueError, match="has no step column"):
        logs.autopsy_log(tmp_path / "nostep.csv")
    pd.DataFrame({"step": [1, 2], "loss": [1.0, 2.0]}).to_csv(tmp_path / "nol0.csv", index=False)
    with pytest.raises(ValueError, match="has no L0 or dead-latent column"):
        logs.autopsy_log(tmp_path / "nol0.csv")
    with pytest.raises(ValueError, match="give --d-sae N"):
        logs.autopsy_log(saelens_wandb_csv(tmp_path / "log.csv"))
    with pytest.raises(ValueError, match="must look like STEP:name"):
        logs.parse_event("resample")
    with pytest.raises(ValueError, match="unknown role"):
        logs.autopsy_log(tmp_path / "nol0.csv", columns={"loss": "banana"})


def test_lr_events():
    m = pd.DataFrame({"step": [0, 10, 20, 30, 40], "lr": [0.1, 0.5, 1.0, 1.0, 0.5]})
    ev = logs.lr_events(m)
    assert [(e["kind"], e["step"]) for e in ev] == [("warmup_end", 20), ("lr_change", 40)]


# ----- export -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from saelab import config
    from saelab.training import train
    base = config.RunConfig().with_overrides({
        "sae.d_in": 12, "sae.d_sae": 24, "data.n_features": 48, "data.mean_active": 3.0, "data.mean_offset": 3.0,
        "steps": 30, "log_interval": 10, "eval_rows": 128, "normalize.mode": "dataset_scalar"})
    arms = {"relu": base.with_overrides({"sae.apply_b_dec_to_input": True, "sae.b_dec_init": "mean"}),
            "topk": base.with_overrides({"sae.architecture": "topk", "sae.k": 4, "sae.b_dec_init": "mean"}),
            "rescale": base.with_overrides({"normalize.mode": "constant_norm_rescale"})}
    out = tmp_path_factory.mktemp("runs")
    train.train(arms, out, progress=False)
    return out


def test_export_saelens_takes_raw_activations(runs, tmp_path):
    from saelab.interop.foreign import load_checkpoint

    assert cli.main(["export", str(runs / "relu"), "--format", "saelens", str(tmp_path / "sl")]) == 0
    cfg = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    sd = load_file(str(tmp_path / "sl" / "sae_weights.safetensors"))
    assert cfg["architecture"] == "standard" and cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"]
    assert sd["W_enc"].shape == (12, 24) and sd["W_dec"].shape == (24, 12)
    x = torch.randn(40, 12) * 2 + 1
    # SAELens StandardSAE on raw x, the formula written out
    y = torch.relu((x - sd["b_dec"]) @ sd["W_enc"] + sd["b_enc"]) @ sd["W_dec"] + sd["b_dec"]
    ours = load_checkpoint(runs / "relu")
    assert ours.normalizer.scalar != pytest.approx(1.0)  # the fold is exercised
    assert (y - ours.reconstruct(x)).abs().max() < 1e-5


def test_export_sparsify_documented_format(runs, tmp_path):
    from saelab.interop.foreign import load_checkpoint

    assert cli.main(["export", str(runs / "topk"), "--format", "sparsify", str(tmp_path / "sp")]) == 0
    cfg = json.loads((tmp_path / "sp" / "cfg.json").read_text())
    sd = load_file(str(tmp_path / "sp" / "sae.safetensors"))
    assert cfg["d_in"] == 12 and cfg["num_latents"] == 24 and cfg["k"] == 4 and cfg["activation"] == "topk"
    x = torch.randn(40, 12) * 2 + 1
    # sparsify SparseCoder: relu((x - b_dec) @ encoder.weight^T + encoder.bias), top-k, decode + b_dec
    pre = torch.relu((x - sd["b_dec"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
    vals, idx = pre.topk(4, dim=-1)
    y = (vals[..., None] * sd["W_dec"][idx]).sum(-2) + sd["b_dec"]
    assert (y - load_checkpoint(runs / "topk").reconstruct(x)).abs().max() < 1e-5


def test_export_refusals(runs, tmp_path, capsys):
    assert cli.main(["export", str(runs / "rescale"), "--format", "saelens", str(tmp_path / "x")]) == 2
    assert "rescales every row" in capsys.readouterr().err
    assert cli.main(["export", str(runs / "relu"), "--format", "sparsify", str(tmp_path / "y")]) == 2
    assert "TopK only" in capsys.readouterr().err


# ----- the CLI ----------------------------------------------------------------------------------


def test_cli_inspect_and_autopsy(runs, tmp_path, capsys):
    np.save(tmp_path / "acts.npy", (torch.randn(600, 12) + 1).numpy())
    out = tmp_path / "ins"
    assert cli.main(["inspect", str(runs / "relu"), "--data", f"file:{tmp_path / 'acts.npy'}", "--out", str(out),
                     "--chunk-rows", "256"]) == 0
    rec = json.loads((out / "inspect.json").read_text())
    assert rec["n_latents"] == 24 and rec["n_rows"] == 600 and set(rec) >= {"dead", "reasons", "verdict"}
    page = (out / "inspect.html").read_text()
    assert "Verdict" in page and 'src="plotly.min.js"' in page and (out / "plotly.min.js").stat().st_size > 1e6
    head = page.split("<body>")[0]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", head)  # nothing loaded from the network
    assert "Content-Security-Policy" in head and "connect-src 'none'" in head
    assert cli.main(["autopsy", str(runs / "relu" / "metrics.parquet"), "--out", str(tmp_path / "au"),
                     "--event", "20:resample"]) == 0
    assert json.loads((tmp_path / "au" / "autopsy.json").read_text())["events"][0]["kind"] == "resample"
    assert (tmp_path / "au" / "autopsy.html").exists()
    capsys.readouterr()
    np.save(tmp_path / "wide.npy", np.zeros((10, 13), dtype=np.float32))
    assert cli.main(["inspect", str(runs / "relu"), "--data", f"file:{tmp_path / 'wide.npy'}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "d_in=12" in err and "width 13" in err
    assert cli.main(["inspect", str(tmp_path), "--data", "synthetic", "--out", str(out)]) == 2
    assert "is not a checkpoint" in capsys.readouterr().err
    assert cli.main(["autopsy", str(tmp_path / "acts.npy")]) == 2
    assert "unknown format" in capsys.readouterr().err
