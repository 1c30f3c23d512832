"""A sparsify config as a saelab base: the SAE's ``cfg.json`` (SparseCoderConfig + d_in) and, when
given, the Trainer's ``config.json`` (TrainConfig, the SAE's config nested as ``sae``), merged.
Every field is mapped, assumed (and said so), ignored or refused as ``saelab.interop.fields``
decides (docs/interop-fields.md).

What sparsify's Trainer does whatever the config says, and saelab therefore sets: b_dec starts at
the first batch's mean and is subtracted before the encoder (``sae.b_dec_init=mean``,
``apply_b_dec_to_input``); the decoder starts as a copy of the encoder's rows, unit-normed
(``sae.init=tied``: the same directions; saelab's tied encoder starts at norm 0.1, sparsify's at
nn.Linear's); the loss is the FVU, the squared error over the batch's total variance
(``sum_features`` up to that per-batch scale); AuxK uses k_aux = d_in / 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saelab.interop.fields import check_known, refusal
from saelab.interop.saelens_config import Mapped

# TrainConfig's defaults (sparsify 1.3), for a cfg.json given without its config.json
TRAIN_DEFAULTS = {"optimizer": "signum", "auxk_alpha": 0.0, "dead_feature_threshold": 10_000_000, "lr_warmup_steps": 1000,
                  "loss_fn": "fvu"}
REFUSED_WHEN = {"multi_topk": bool, "skip_connection": bool, "transcode": bool, "finetune": bool,
                "grad_acc_steps": lambda v: int(v) > 1, "k_decay_steps": lambda v: int(v) > 0,
                "activation": lambda v: v != "topk", "loss_fn": lambda v: v not in ("fvu", None)}


def trainer_config(folder: Path) -> Path | None:
    """The Trainer's config.json for the SAE in ``folder``: sparsify saves each SAE in
    ``<save_dir>/<run>/<hookpoint>/`` and the TrainConfig beside those folders, in ``<run>/``; a
    config.json in the folder itself is taken too."""
    for path in (folder / "config.json", folder.parent / "config.json"):
        try:
            d = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            d = None
        if isinstance(d, dict) and isinstance(d.get("sae"), dict) and is_sparsify(d):
            return path
    return None


def is_sparsify(d: dict[str, Any]) -> bool:
    """A sparsify cfg.json (its SparseCoderConfig names) or the Trainer's config.json."""
    sae = d.get("sae") if isinstance(d.get("sae"), dict) else d
    return "activation" in sae and "normalize_decoder" in sae and "num_latents" in sae


def from_sparsify(cfg: dict[str, Any], train: dict[str, Any] | None = None) -> Mapped:
    """sparsify cfg.json and/or config.json -> Mapped. Raises ValueError naming a field saelab
    cannot honour or does not know."""
    if isinstance(cfg.get("sae"), dict):  # config.json given alone
        cfg, train = {}, cfg
    train = dict(train or {})
    d = {**(train.pop("sae", None) or {}), **cfg, **train}
    check_known("sparsify", d)
    for key, value in d.items():
        if key in REFUSED_WHEN and REFUSED_WHEN[key](value):
            raise ValueError(f"{key}={value!r}: {refusal('sparsify', key)}")
    out: dict[str, dict[str, Any]] = {}
    assumed: list[str] = []

    def put(path: str, value: Any) -> None:
        section, _, leaf = path.rpartition(".")
        (out.setdefault(section, {}) if section else out)[leaf] = value

    put("sae.architecture", "topk")
    d_in = d.get("d_in")
    if d_in is not None:
        put("sae.d_in", int(d_in))
    d_sae = int(d.get("num_latents") or 0) or (int(d_in) * int(d.get("expansion_factor", 32)) if d_in else 0)
    if d_sae:
        put("sae.d_sae", d_sae)
    put("sae.k", int(d.get("k", 32)))
    put("sae.b_dec_init", "mean")
    put("sae.init", "tied")  # SparseCoder: W_dec = a clone of the encoder's weight, then unit-normed
    put("sae.apply_b_dec_to_input", True)
    put("sae.decoder_constraint", "unit_norm" if d.get("normalize_decoder", True) else "none")
    put("penalty.form", "none")
    put("penalty.alpha", 0.0)
    put("penalty.reconstruction", "sum_features")
    given = set(d)
    t = {**TRAIN_DEFAULTS, **train}
    auxk = float(t["auxk_alpha"])
    if auxk > 0:
        put("aux.auxk_coef", auxk)
        if d_in:
            put("aux.auxk_k", max(1, int(d_in) // 2))
        assumed.append(f"auxk_alpha={auxk:g}: sparsify divides the AuxK loss by the batch's input variance, saelab by the "
                       f"residual's, so the same coefficient weighs AuxK more in saelab's arms")
    put("tracking.dead_tokens", int(t["dead_feature_threshold"]))
    if t["optimizer"] != "adam":
        assumed.append(f"optimizer={t['optimizer']}: saelab trains with Adam; every arm does")
    if d.get("lr") is not None:
        put("optim.lr", float(d["lr"]))
    else:
        assumed.append("lr: sparsify picks it from the optimizer and the width; saelab's optim.lr is used")
    if t["optimizer"] == "adam":
        put("schedule.warmup_steps", int(t["lr_warmup_steps"]))
        put("schedule.shape", "warmup_linear_decay")
        put("schedule.decay_fraction", 1.0)
    else:
        put("schedule.warmup_steps", 0)
        put("schedule.shape", "constant")
    if "batch_size" in d:
        put("data.batch_size", int(d["batch_size"]))
        assumed.append(f"batch_size={d['batch_size']}: sparsify counts sequences of ctx_len tokens; saelab takes it as rows per step")
    missing = [k for k in ("batch_size", "auxk_alpha", "dead_feature_threshold", "optimizer") if k not in given]
    if missing:
        assumed.append(f"{', '.join(missing)}: not in this config (sparsify's cfg.json carries no training settings); the lab "
                       f"uses sparsify's TrainConfig defaults (auxk_alpha {TRAIN_DEFAULTS['auxk_alpha']}, dead after "
                       f"{TRAIN_DEFAULTS['dead_feature_threshold']:,} tokens) and the profile's batch; pass the real ones with "
                       f"--base <the folder holding cfg.json and the Trainer's config.json>")
    return Mapped(out, tuple(assumed))
