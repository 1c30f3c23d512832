"""A SAELens config as a saelab base: every field is mapped, assumed (and said so), ignored as
harmless, or refused by name, as the table in ``saelab.interop.fields`` decides (printed in
docs/interop-fields.md).

Accepted: the ``cfg.json`` an SAE is saved with (SAELens 3-6; a training checkpoint's carries the
training-only fields at the top, an inference one inside ``metadata.training_architecture_details``)
and the runner's ``runner_cfg.json`` (``LanguageModelSAERunnerConfig``, the SAE's config nested as
``sae``). SAELens' standard SAE's loss is ``||x - x_hat||^2`` summed over d_in and averaged over the
batch, plus ``l1_coefficient * sum_i |z_i| * ||W_dec,i||`` averaged over the batch, which are
saelab's ``sum_features`` reconstruction and ``decoder_weighted`` penalty.

A checkpoint's cfg.json carries no training settings (lr, batch, length, schedule): those missing
take SAELens' own defaults or the profile's sizes, and the ``assumed`` lines say so and how to pass
the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saelab.interop.fields import check_known, refusal

ARCHITECTURES = {"standard": "relu", "relu": "relu", "topk": "topk", "batchtopk": "batchtopk", "jumprelu": "jumprelu",
                 "matryoshka_batchtopk": "batchtopk"}
NORMALIZE = {"none": "none", None: "none", "expected_average_only_in": "dataset_scalar",
             "constant_norm_rescale": "constant_norm_rescale", "layer_norm": "layer_norm"}
B_DEC_INIT = {"zeros": "zeros", "mean": "mean", "geometric_median": "geometric_median"}
REFUSED_WHEN = {  # field -> (is it set to something saelab cannot honour?)
    "pre_act_loss_coefficient": lambda v: v not in (None, 0, 0.0),
    "from_pretrained_path": lambda v: bool(v),
    "normalize_sae_decoder": bool, "use_ghost_grads": bool, "noise_scale": bool, "decoder_orthogonal_init": bool,
    "finetuning_scaling_factor": bool, "mse_loss_normalization": lambda v: v not in (None, "none"),
}
# SAELens' defaults for the training settings a checkpoint's cfg.json does not carry (LanguageModelSAERunnerConfig)
TRAINING_DEFAULTS = {"lr": 3e-4, "lr_warm_up_steps": 0, "adam_beta1": 0.9, "adam_beta2": 0.999}
# the fields read as numbers: a string there ("lr": "fast") is refused by name, not met as float()'s error
NUMBERS = ("d_in", "d_sae", "expansion_factor", "k", "aux_loss_coefficient", "l1_coefficient", "l1_warm_up_steps",
           "l0_warm_up_steps", "l0_coefficient", "jumprelu_init_threshold", "jumprelu_bandwidth", "topk_threshold_lr", "lr",
           "adam_beta1", "adam_beta2", "lr_warm_up_steps", "lr_decay_steps", "train_batch_size_tokens", "training_tokens",
           "dead_feature_window", "n_batches_for_norm_estimate", "decoder_init_norm")
PASS_REAL = ("pass the real ones with --base runner_cfg.json (SAELens' runner saves it beside cfg.json) or a saelab "
             "config.json holding them")


@dataclass(frozen=True)
class Mapped:
    """A foreign config as a partial saelab config, and the sentences saying what was assumed."""

    config: dict[str, Any]  # nested: {"sae": {...}, "optim": {...}, "steps": ...}
    assumed: tuple[str, ...]


def flat_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """The SAELens fields of ``cfg`` in one flat dict: the runner's own over its nested ``sae``, a
    checkpoint's top-level ones over ``metadata.training_architecture_details``."""
    d = dict(cfg)
    if isinstance(d.get("sae"), dict):  # runner_cfg.json
        d = {**d.pop("sae"), **d}
    meta = d.get("metadata") if isinstance(d.get("metadata"), dict) else {}
    details = meta.get("training_architecture_details")
    if isinstance(details, dict):
        d = {**details, **d}
    if meta.get("training_architecture"):  # an inference cfg.json of a BatchTopK / Matryoshka run says jumprelu
        d["architecture"] = meta["training_architecture"]
    return d


def architecture(d: dict[str, Any]) -> str:
    """SAELens' own architecture name (before 6.0: activation_fn topk -> topk)."""
    arch = d.get("architecture") or "standard"
    fn = d.get("activation_fn") or d.get("activation_fn_str")
    if arch == "standard" and fn == "topk":
        return "topk"
    if arch == "standard" and fn not in (None, "relu"):
        return f"standard with activation_fn={fn!r}"
    return arch


def from_saelens(cfg: dict[str, Any]) -> Mapped:
    """SAELens config -> Mapped (only the fields the config sets, plus SAELens' defaults for the
    training settings it lacks). Raises ValueError naming a field saelab cannot honour or does not know."""
    d = flat_fields(cfg)
    check_known("SAELens", d)
    for key in NUMBERS:
        value = d.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
                                  or value in (float("inf"), float("-inf"))):
            raise ValueError(f"{key}={value!r} must be a finite number")
    for key, value in d.items():
        if key in REFUSED_WHEN and REFUSED_WHEN[key](value):
            raise ValueError(f"{key}={value!r}: {refusal('SAELens', key)}")
    out: dict[str, dict[str, Any]] = {}
    assumed: list[str] = []

    def put(path: str, value: Any) -> None:
        section, _, leaf = path.rpartition(".")
        (out.setdefault(section, {}) if section else out)[leaf] = value

    name = architecture(d)
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture={name!r} is not supported; saelab trains SAELens' "
                         f"{sorted(a for a in ARCHITECTURES if a != 'relu')}")
    arch = ARCHITECTURES[name]
    put("sae.architecture", arch)
    if name == "matryoshka_batchtopk":
        assumed.append(f"architecture=matryoshka_batchtopk (matryoshka_widths={d.get('matryoshka_widths')}): the nested "
                       f"Matryoshka losses are not in saelab; every arm trains plain BatchTopK")
    d_in = d.get("d_in")
    if d_in is not None:
        put("sae.d_in", int(d_in))
    if d.get("d_sae") is not None:
        put("sae.d_sae", int(d["d_sae"]))
    elif d.get("expansion_factor") and d_in:
        put("sae.d_sae", int(d["expansion_factor"]) * int(d_in))
    _sparsity(d, arch, put, assumed)
    _training(d, put, assumed)
    _sae_init(d, arch, put, assumed)
    return Mapped(out, tuple(assumed))


def _sparsity(d: dict[str, Any], arch: str, put, assumed: list[str]) -> None:
    """k, the penalty, AuxK and the JumpReLU threshold."""
    if arch in ("topk", "batchtopk"):
        k = d.get("k", (d.get("activation_fn_kwargs") or {}).get("k"))
        if k is None:
            raise ValueError(f"architecture {arch} needs k (activation_fn_kwargs.k before SAELens 6)")
        if float(k) != int(float(k)):
            assumed.append(f"k={k}: saelab's BatchTopK keeps an integer mean k; {round(float(k))} is used")
        put("sae.k", max(1, round(float(k))))
        put("penalty.form", "none")
        put("penalty.alpha", 0.0)
        coef = d.get("aux_loss_coefficient")
        if coef:
            put("aux.auxk_coef", float(coef))
            if d.get("d_in"):
                put("aux.auxk_k", max(1, int(d["d_in"]) // 2))
            assumed.append(f"aux_loss_coefficient={coef} -> aux.auxk_coef={coef}, aux.auxk_k=d_in/2: SAELens does not divide "
                           f"the AuxK loss by the residual's variance, saelab does (Gao 2024)")
        lr = d.get("topk_threshold_lr")
        if arch == "batchtopk" and lr not in (None, 0.01):
            assumed.append(f"topk_threshold_lr={lr}: saelab's BatchTopK threshold moves at 0.01 per step")
        return
    put("penalty.reconstruction", "sum_features")
    if d.get("lp_norm", 1.0) != 1.0:
        raise ValueError(f"lp_norm={d['lp_norm']!r}: saelab's penalties are L1 (lp_norm 1)")
    for theirs in ("l1_warm_up_steps", "l0_warm_up_steps"):
        if theirs in d:
            put("penalty.warmup_steps", int(d[theirs]))
    if arch == "jumprelu":
        _jumprelu(d, put, assumed)
        return
    if "l1_coefficient" in d:
        put("penalty.alpha", float(d["l1_coefficient"]))
    scaled = d.get("scale_sparsity_penalty_by_decoder_norm", True)
    put("penalty.form", "decoder_weighted" if scaled else "per_sample_sum")


L0_COEFFICIENT_DEFAULT = 1.0  # SAELens 6's JumpReLUTrainingSAEConfig.l0_coefficient


def _jumprelu(d: dict[str, Any], put, assumed: list[str]) -> None:
    """SAELens trains a JumpReLU on the step L0 (Rajamanoharan 2024): penalty.form=l0 at
    l0_coefficient (before SAELens 6, its l1_coefficient scaled that same L0 term)."""
    for ours, theirs in (("sae.jumprelu_threshold", "jumprelu_init_threshold"), ("sae.jumprelu_bandwidth", "jumprelu_bandwidth")):
        if theirs in d:
            put(ours, float(d[theirs]))
    put("penalty.form", "l0")
    if "l0_coefficient" in d:
        put("penalty.alpha", float(d["l0_coefficient"]))
    elif "l1_coefficient" in d:
        put("penalty.alpha", float(d["l1_coefficient"]))
        assumed.append(f"l1_coefficient={d['l1_coefficient']} on a jumprelu: SAELens before 6 scaled the step L0 by it, "
                       f"so it is penalty.alpha of penalty.form=l0")
    else:
        put("penalty.alpha", L0_COEFFICIENT_DEFAULT)
        assumed.append(f"l0_coefficient absent: SAELens' default {L0_COEFFICIENT_DEFAULT:g} -> penalty.alpha of penalty.form=l0; "
                       + PASS_REAL)
    mode = d.get("jumprelu_sparsity_loss_mode") or "step"
    if mode != "step":
        assumed.append(f"jumprelu_sparsity_loss_mode={mode!r}: SAELens' {mode} surrogate of the L0 is not in saelab; "
                       f"the step L0 (penalty.form=l0) at the same coefficient is trained instead")
    if d.get("jumprelu_ste_to_input"):
        assumed.append("jumprelu_ste_to_input=true: saelab's straight-through estimator reaches the threshold only")


def _training(d: dict[str, Any], put, assumed: list[str]) -> None:
    """Optimizer, schedule, batch, length, the dead window and the normalization."""
    missing = [k for k in ("lr", "train_batch_size_tokens", "training_tokens", "lr_warm_up_steps") if k not in d]
    for theirs, ours in (("lr", "optim.lr"), ("adam_beta1", "optim.beta1"), ("adam_beta2", "optim.beta2")):
        put(ours, float(d.get(theirs, TRAINING_DEFAULTS[theirs])))
    name = d.get("lr_scheduler_name") or "constant"
    if name != "constant":
        raise ValueError(f"lr_scheduler_name={name!r} is not supported; saelab has constant with a linear warmup "
                         "and/or a linear decay (lr_warm_up_steps, lr_decay_steps)")
    warm = int(d.get("lr_warm_up_steps") or 0)
    decay = int(d.get("lr_decay_steps") or 0)
    put("schedule.warmup_steps", warm)
    total = _steps(d)
    if decay and total:
        put("schedule.shape", "warmup_linear_decay")
        put("schedule.decay_fraction", min(1.0, decay / total))
    else:
        put("schedule.shape", "linear_warmup" if warm else "constant")
    batch = d.get("train_batch_size_tokens")
    if batch:
        put("data.batch_size", int(batch))
    if total:
        put("steps", total)
    if "dead_feature_window" in d and batch:  # in steps; saelab counts tokens
        put("tracking.dead_tokens", int(d["dead_feature_window"]) * int(batch))
    elif "dead_feature_window" not in d:
        missing.append("dead_feature_window")
    if "n_batches_for_norm_estimate" in d:
        put("normalize.estimate_batches", int(d["n_batches_for_norm_estimate"]))
    if "normalize_activations" in d:
        mode = d["normalize_activations"]
        if mode not in NORMALIZE:
            raise ValueError(f"normalize_activations={mode!r} is not supported; saelab maps {[m for m in NORMALIZE if m]}")
        put("normalize.mode", NORMALIZE[mode])
    if missing:
        assumed.append(f"{', '.join(missing)}: not in this config (a checkpoint's cfg.json carries no training settings); the "
                       f"lab uses SAELens' defaults (lr {TRAINING_DEFAULTS['lr']:g}, no warmup) and the profile's batch, "
                       f"length and dead window; {PASS_REAL}")


def _sae_init(d: dict[str, Any], arch: str, put, assumed: list[str]) -> None:
    """b_dec, the encoder/decoder start and the decoder's norm."""
    if "apply_b_dec_to_input" in d:
        put("sae.apply_b_dec_to_input", bool(d["apply_b_dec_to_input"]))
    if "b_dec_init_method" in d:
        method = d["b_dec_init_method"]
        if method not in B_DEC_INIT:
            raise ValueError(f"b_dec_init_method={method!r} is not supported; use {list(B_DEC_INIT)}")
        put("sae.b_dec_init", B_DEC_INIT[method])
    if "decoder_init_norm" in d:
        norm = d["decoder_init_norm"]
        put("sae.init", "kaiming" if norm is None else "tied")
        if norm is not None and float(norm) != 0.1:
            assumed.append(f"decoder_init_norm={norm}: saelab's tied init starts the rows at norm 0.1")
    if d.get("init_encoder_as_decoder_transpose"):
        put("sae.init", "tied")
    if d.get("decoder_heuristic_init"):
        put("sae.decoder_constraint", "unit_norm")
    if arch in ("topk", "batchtopk") and d.get("rescale_acts_by_decoder_norm"):
        put("sae.decoder_constraint", "unit_norm")
        assumed.append("rescale_acts_by_decoder_norm=true -> sae.decoder_constraint=unit_norm: the same model (every latent "
                       "decodes along a unit direction), reached by renormalizing the rows instead of dividing by their norm")


def _steps(d: dict[str, Any]) -> int:
    tokens, batch = d.get("training_tokens"), d.get("train_batch_size_tokens")
    return int(tokens) // int(batch) if tokens and batch else 0
