"""Every SAELens / sparsify config field has one decision (saelab.interop.fields), the page that
prints them is that table, and the mapping code follows it: mapped fields land in the base,
assumed ones are said, unknown and refused ones stop with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saelab.cli import main
from saelab.interop import fields
from saelab.interop.saelens_config import from_saelens
from saelab.interop.sparsify_config import from_sparsify
from saelab.lab import phases
from saelab.lab.base import load_base
from saelab.lab.causes import PHASES
from saelab.report.index import index_page

REPO = Path(__file__).resolve().parents[1]

# What SAELens 6.54.12 writes (tools/real_clients.py, trainer checkpoint of a TopK SAE), abridged to its keys.
SAELENS_TOPK_CHECKPOINT = {
    "d_in": 64, "d_sae": 256, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
    "normalize_activations": "none", "reshape_activations": "none",
    "metadata": {"sae_lens_version": "6.54.12", "sae_lens_training_version": "6.54.12", "training_architecture": "topk",
                 "training_architecture_details": {"decoder_init_norm": 0.1, "use_sparse_activations": False,
                                                   "aux_loss_coefficient": 1.0},
                 "model_name": "m", "hook_name": "blocks.0.hook_resid_post", "l0": 8.0, "num_dead_features": 241},
    "decoder_init_norm": 0.1, "k": 8, "use_sparse_activations": False, "aux_loss_coefficient": 1.0,
    "rescale_acts_by_decoder_norm": True, "architecture": "topk"}
SPARSIFY_CFG = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": 256, "k": 8,
                "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": 64}
SPARSIFY_TRAIN = {"sae": {k: v for k, v in SPARSIFY_CFG.items() if k != "d_in"}, "batch_size": 256, "grad_acc_steps": 1,
                  "micro_acc_steps": 1, "loss_fn": "fvu", "optimizer": "signum", "lr": None, "lr_warmup_steps": 1000,
                  "k_decay_steps": 0, "auxk_alpha": 0.03125, "dead_feature_threshold": 25600, "exclude_tokens": [],
                  "hookpoints": ["layers.0"], "init_seeds": [0], "layers": [], "layer_stride": 1, "distribute_modules": False,
                  "save_every": 1000, "save_best": False, "finetune": None, "log_to_wandb": False, "run_name": "topk",
                  "wandb_log_frequency": 1, "save_dir": "checkpoints"}


def test_the_page_is_the_table():
    page = (REPO / "docs" / "interop-fields.md").read_text()
    assert page == fields.document(), "regenerate docs/interop-fields.md from saelab.interop.fields.document()"


def test_every_row_has_a_decision_and_no_field_is_listed_twice():
    for table in fields.TABLES.values():
        names = [f.name for f in table]
        assert len(names) == len(set(names))
        assert all(f.decision in ("mapped", "assumed", "read", "ignored", "refused") and f.detail for f in table)


@pytest.mark.parametrize("row", [f for f in fields.SAELENS if not f.name.endswith("*") and "." not in f.name],
                         ids=lambda f: f.name)
def test_every_saelens_field_the_table_accepts_passes_the_mapping(row):
    """Each named field, set to a value saelab honours, is accepted by from_saelens: the table and the
    code cannot disagree about which fields exist."""
    harmless = {"architecture": "topk", "normalize_activations": "none", "lp_norm": 1.0, "lr_scheduler_name": "constant",
                "activation_fn": "relu", "activation_fn_str": "relu", "activation_fn_kwargs": {}, "b_dec_init_method": "zeros",
                "metadata": {}, "sae": {}, "decoder_init_norm": 0.1, "topk_threshold_lr": 0.01, "k": 8}
    value = harmless.get(row.name, None if row.decision == "refused" else 1)
    cfg = {"d_in": 16, "d_sae": 32, "architecture": "topk", "k": 4, row.name: value}
    if row.name == "expansion_factor":
        cfg.pop("d_sae")
    from_saelens(cfg)


@pytest.mark.parametrize("row", [f for f in fields.SPARSIFY if f.name != "sae"], ids=lambda f: f.name)
def test_every_sparsify_field_the_table_accepts_passes_the_mapping(row):
    value = {"activation": "topk", "loss_fn": "fvu", "optimizer": "adam", "grad_acc_steps": 1}.get(
        row.name, 0 if row.decision == "refused" else 1)
    from_sparsify({**SPARSIFY_CFG, row.name: value})


def test_what_saelens_writes_maps_and_says_what_it_assumed():
    m = from_saelens(SAELENS_TOPK_CHECKPOINT)
    c = m.config
    assert c["sae"] == {"architecture": "topk", "d_in": 64, "d_sae": 256, "k": 8, "apply_b_dec_to_input": True,
                        "init": "tied", "decoder_constraint": "unit_norm"}
    assert c["aux"] == {"auxk_coef": 1.0, "auxk_k": 32}
    said = " ".join(m.assumed)
    for name in ("lr", "train_batch_size_tokens", "training_tokens", "dead_feature_window", "rescale_acts_by_decoder_norm",
                 "aux_loss_coefficient", "runner_cfg.json"):
        assert name in said


def test_the_inference_cfg_of_a_batchtopk_run_is_the_batchtopk_it_was_trained_as():
    inference = {"d_in": 64, "d_sae": 256, "architecture": "jumprelu", "apply_b_dec_to_input": True,
                 "metadata": {"training_architecture": "batchtopk",
                              "training_architecture_details": {"k": 8.0, "aux_loss_coefficient": 1.0, "topk_threshold_lr": 0.01,
                                                                "rescale_acts_by_decoder_norm": True, "decoder_init_norm": 0.1}}}
    sae = from_saelens(inference).config["sae"]
    assert (sae["architecture"], sae["k"]) == ("batchtopk", 8)


def test_sparsify_maps_its_trainers_own_behaviour():
    m = from_sparsify(SPARSIFY_CFG, SPARSIFY_TRAIN)
    c = m.config
    assert c["sae"]["b_dec_init"] == "mean" and c["sae"]["apply_b_dec_to_input"] and c["sae"]["d_sae"] == 256
    assert c["aux"] == {"auxk_coef": 0.03125, "auxk_k": 32} and c["tracking"]["dead_tokens"] == 25600
    assert c["sae"]["init"] == "tied"  # SparseCoder starts W_dec as the encoder's rows: the lab must not offer that as a fix
    assert any("optimizer=signum" in a for a in m.assumed)
    assert any(a.startswith("auxk_alpha=0.03125") and "input variance" in a for a in m.assumed)


@pytest.mark.parametrize("cfg, message", [
    ({**SAELENS_TOPK_CHECKPOINT, "flux_capacitor": 3}, "SAELens field 'flux_capacitor'=3 is unknown"),
    ({**SAELENS_TOPK_CHECKPOINT, "architecture": "gated", "metadata": {}}, "architecture='gated' is not supported"),
    ({"d_in": 16, "d_sae": 32, "architecture": "standard", "lp_norm": 2.0}, "lp_norm=2.0"),
    ({**SAELENS_TOPK_CHECKPOINT, "normalize_activations": "covariance_whitening"}, "normalize_activations='covariance_whitening'"),
])
def test_a_field_saelab_cannot_honour_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, cfg, message):
    base = tmp_path / "cfg.json"
    base.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_base(str(base))
    out = tmp_path / "out"
    assert main(["lab", "--profile", "smoke", "--base", str(base), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.split("=")[0].strip("( ") in err and not out.exists()


def test_sparsify_unknown_and_refused_fields(tmp_path):
    with pytest.raises(ValueError, match="sparsify field 'warp'=1 is unknown"):
        from_sparsify({**SPARSIFY_CFG, "warp": 1})
    with pytest.raises(ValueError, match="transcode=True"):
        from_sparsify({**SPARSIFY_CFG, "transcode": True})


def test_the_report_opens_with_what_the_base_assumed_and_how_to_pass_the_real_settings(tmp_path):
    base = tmp_path / "cfg.json"
    base.write_text(json.dumps(SAELENS_TOPK_CHECKPOINT))
    ns = {"profile": "smoke", "seeds": None, "out_dir": str(tmp_path / "o"), "source": None, "steps": None,
          "data_mean_offset": None, "overrides": {}, "explorer": False, "base": str(base), **PHASES["04_normalization"].defaults()}
    page = phases.prepare("04_normalization", ns, history=[]).describe().replace("&#95;", "_")  # _md escapes underscores
    assert "**Assumed**" in page and "runner_cfg.json" in page and "aux_loss_coefficient" in page
    b = load_base(str(base))
    html = index_page([], [], None, base={"name": b.name, "origin": b.origin, "assumed": list(b.assumed)})
    assert html.index("Assumed about your base") < html.index("Hypotheses") and "runner_cfg.json" in html
    assert "Assumed" not in index_page([], [], None, base={"name": "seed-test1", "origin": "preset", "assumed": []})
