"""Export a trained saelab run to SAELens' or sparsify's on-disk format, taking raw activations.

A dataset-wide normalization n = c x (normalize.mode = dataset_scalar, c = sqrt(d_in) / E||x||)
is folded into the weights the way SAELens folds its own scaling factor
(``SAE.fold_activation_norm_scaling_factor``: W_enc *= c, W_dec /= c, b_dec /= c): then
pre = (c W_enc) (x - b_dec / c) + b_enc = W_enc (n - b_dec) + b_enc, and the decoder's output
(codes W_dec + b_dec) / c is the reconstruction in raw units. Per-row modes
(constant_norm_rescale*, layer_norm) depend on each row and cannot be folded into fixed weights.

Formats (see saelab.interop.foreign for where they come from):
  saelens   cfg.json (SAELens >= 6: architecture, d_in, d_sae, apply_b_dec_to_input, ...) +
            sae_weights.safetensors (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec,
            threshold for jumprelu). relu -> standard, topk -> topk, jumprelu -> jumprelu,
            batchtopk -> jumprelu with every threshold at the BatchTopK threshold (what SAELens
            does when it saves a BatchTopK SAE for inference).
  sparsify  cfg.json (d_in, k, num_latents, activation topk, ...) + sae.safetensors
            (encoder.weight [S, d_in], encoder.bias, W_dec [S, d_in], b_dec); TopK only. sparsify
            always encodes x - b_dec, so a run without apply_b_dec_to_input gets
            encoder.bias = b_enc + W_enc b_dec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saelab.fileio import write_json
from saelab.interop.foreign import dataset_scalar, run_weights
from saelab.training.runs import write_tensors

FORMATS = ("saelens", "sparsify")
SAELENS_ARCH = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
SAELENS_VERSION = "6.0.0"  # the cfg.json layout written here (SAELens handle_config_defaulting reads it)


def folded(path: Path) -> tuple[Any, dict[str, Tensor], float]:
    """(RunConfig, weights in raw units, c) for the run in ``path``: W_enc * c, W_dec / c,
    b_dec / c, b_enc unchanged (the thresholds act on pre-activations, which do not change)."""
    cfg, sd = run_weights(path)
    mode = cfg.normalize.mode
    if mode not in ("none", "dataset_scalar"):
        why = ("whitens with a fitted map the run does not save" if mode == "whitening"
               else "rescales every row by its own norm, which no fixed weights can reproduce")
        raise ValueError(f"run {path}: normalize.mode={mode!r} {why}; only none or dataset_scalar can be exported")
    c = dataset_scalar(path) if mode == "dataset_scalar" else 1.0
    w = {k: v.detach().to(torch.float32).clone() for k, v in sd.items()}
    w["W_enc"] = w["W_enc"] * c
    w["W_dec"] = w["W_dec"] / c
    w["b_dec"] = w["b_dec"] / c
    return cfg, w, c


def to_saelens(cfg: Any, w: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    arch = cfg.sae.architecture
    tensors = {"W_enc": w["W_enc"].T.contiguous(), "b_enc": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    out = {"architecture": SAELENS_ARCH[arch], "d_in": cfg.sae.d_in, "d_sae": cfg.sae.d_sae, "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": cfg.sae.apply_b_dec_to_input, "normalize_activations": "none",
           "reshape_activations": "none",
           "metadata": {"sae_lens_version": SAELENS_VERSION, "exported_by": "saelab",
                        "dataset_path": cfg.data.source}}
    if arch == "topk":
        out |= {"k": cfg.sae.k, "rescale_acts_by_decoder_norm": False}
    if arch == "jumprelu":
        tensors["threshold"] = w["log_threshold"].exp()
    if arch == "batchtopk":
        if not bool(w["threshold_set"]):
            raise ValueError("batchtopk run has no threshold yet (threshold_set is false): nothing to export")
        tensors["threshold"] = torch.full_like(w["b_enc"], float(w["threshold"]))
    return out, tensors


def to_sparsify(cfg: Any, w: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    if cfg.sae.architecture != "topk":
        raise ValueError(f"sparsify SAEs are TopK only; this run is sae.architecture={cfg.sae.architecture!r}")
    bias = w["b_enc"] if cfg.sae.apply_b_dec_to_input else w["b_enc"] + w["W_enc"] @ w["b_dec"]
    S, d = cfg.sae.d_sae, cfg.sae.d_in
    out = {"activation": "topk", "expansion_factor": max(1, S // d), "normalize_decoder": False, "num_latents": S,
           "k": cfg.sae.k, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": d}
    return out, {"encoder.weight": w["W_enc"], "encoder.bias": bias, "W_dec": w["W_dec"], "b_dec": w["b_dec"]}


# every file an export writes, and the files that make a folder a saelab run or training: an export
# never replaces the first nor writes beside the second
WRITTEN = ("cfg.json", "sae_weights.safetensors", "sae.safetensors", "saelab_export.json")
RUN_MARKERS = ("config.json", "arms.json", "checkpoint.safetensors")


def check_target(run: Path, out: Path) -> None:
    """Refuse (ValueError, one line) an ``out`` where the export would destroy something: the run's
    own folder or another saelab run or training, or a folder holding any file the export writes
    (an earlier export: replacing one of its files would leave the other stale beside it)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"export to {out}: it is a file, not a folder")
    if out.resolve() == run.resolve():
        raise ValueError(f"export to {out}: that is the run's own folder; its sae.safetensors would be replaced; "
                         f"export to a new folder")
    marker = next((m for m in RUN_MARKERS if (out / m).exists()), None)
    if marker:
        raise ValueError(f"export to {out}: it holds a saelab run or training ({marker}); export to a new folder")
    held = [f for f in WRITTEN if (out / f).exists()]
    if held:
        raise ValueError(f"export to {out}: it already holds {', '.join(held)} (an earlier export?), which this export "
                         f"would replace; export to a new or empty folder, or remove them first")


def export(run: str | Path, fmt: str, out: str | Path) -> Path:
    """Write the run's SAE to ``out`` in format ``fmt`` (saelens | sparsify); returns ``out``.
    Nothing is written when ``out`` would lose a file (``check_target``)."""
    run, out = Path(run), Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is unknown; choose one of {list(FORMATS)}")
    if not (run / "config.json").exists():
        raise ValueError(f"run {run}: not a saelab run directory (no config.json)")
    check_target(run, out)
    cfg, w, c = folded(run)
    meta, tensors = (to_saelens if fmt == "saelens" else to_sparsify)(cfg, w)
    weights = "sae_weights.safetensors" if fmt == "saelens" else "sae.safetensors"
    write_tensors(out / weights, tensors)
    write_json(out / "cfg.json", meta)
    write_json(out / "saelab_export.json", {"run": str(run), "format": fmt, "architecture": cfg.sae.architecture,
                                            "normalize_mode": cfg.normalize.mode, "folded_scale": c})
    return out
