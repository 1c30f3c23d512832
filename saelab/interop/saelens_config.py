"""A SAELens config as a saelab base: the fields with a saelab meaning are mapped, the ones that
cannot change the answer are ignored, and any other is refused by name.

Field names are SAELens' (``LanguageModelSAERunnerConfig`` and the ``cfg.json`` an SAE is saved
with; SAELens 3-6). Its standard SAE's loss is ``||x - x_hat||^2`` summed over d_in and averaged
over the batch, plus ``l1_coefficient * sum_i |z_i| * ||W_dec,i||`` averaged over the batch
(``scale_sparsity_penalty_by_decoder_norm``, the default since SAELens 3), which are saelab's
``sum_features`` reconstruction and ``decoder_weighted`` penalty.
"""

from __future__ import annotations

from typing import Any

ARCHITECTURES = {"standard": "relu", "relu": "relu", "topk": "topk", "batchtopk": "batchtopk", "jumprelu": "jumprelu"}
NORMALIZE = {"none": "none", None: "none", "expected_average_only_in": "dataset_scalar",
             "constant_norm_rescale": "constant_norm_rescale", "layer_norm": "layer_norm"}
B_DEC_INIT = {"zeros": "zeros", "mean": "mean", "geometric_median": "geometric_median"}

# Fields that describe where the activations come from, logging, storage or hardware: they do not
# change which latents die on the data the lab is given.
HARMLESS_PREFIXES = ("wandb", "log_", "checkpoint", "n_checkpoints", "hook_", "model_", "dataset_", "neuronpedia",
                     "sae_lens", "store_", "n_batches_in_buffer", "prepend_bos", "context_size", "device", "act_store_device",
                     "dtype", "seed", "verbose", "run_name", "eval_", "n_eval", "autocast", "compile", "streaming",
                     "is_dataset_tokenized", "use_cached_activations", "cached_activations_path", "from_pretrained_path",
                     "save_", "output_path", "resume", "exclude_special_tokens", "disable_concat_sequences",
                     "sequence_separator_token", "seqpos_slice", "metadata", "model_class_name", "hf_", "llm_", "logger",
                     "reshape_activations", "apply_b_dec_to_input_in_eval", "dead_feature_threshold", "feature_sampling_window",
                     "lr_end", "n_restart_cycles", "mse_loss_normalization", "finetuning", "sae_")
REFUSED = {  # field -> why saelab cannot honour it (set to a value that changes training)
    "use_ghost_grads": "ghost grads are not implemented in saelab",
    "decoder_orthogonal_init": "an orthogonal decoder init is not implemented in saelab",
    "noise_scale": "training with input noise is not implemented in saelab",
    "normalize_sae_decoder": "saelab constrains decoder rows with sae.decoder_constraint=unit_norm; set that instead",
}


def _arch(d: dict[str, Any]) -> str:
    arch = d.get("architecture", "standard")
    fn = d.get("activation_fn") or d.get("activation_fn_str")
    if arch == "standard" and fn == "topk":
        arch = "topk"
    if arch not in ARCHITECTURES:
        raise ValueError(f"architecture={arch!r} is not supported; saelab trains {sorted(set(ARCHITECTURES))}")
    return ARCHITECTURES[arch]


def from_saelens(cfg: dict[str, Any]) -> dict[str, Any]:
    """SAELens config -> a partial saelab config dict (only the fields the SAELens config sets).
    Raises ValueError naming a field saelab cannot honour."""
    d = dict(cfg)
    if isinstance(d.get("sae"), dict):  # SAELens 6 nests the SAE's own config
        d = {**d.pop("sae"), **d}
    out: dict[str, dict[str, Any]] = {}

    def put(path: str, value: Any) -> None:
        section, _, leaf = path.rpartition(".")
        (out.setdefault(section, {}) if section else out)[leaf] = value

    used: set[str] = set()

    def take(key: str) -> Any:
        used.add(key)
        return d[key]

    arch = _arch(d)
    used |= {"architecture", "activation_fn", "activation_fn_str"}
    put("sae.architecture", arch)
    if "d_in" in d:
        put("sae.d_in", int(take("d_in")))
    if "d_sae" in d and d["d_sae"] is not None:
        put("sae.d_sae", int(take("d_sae")))
    elif "expansion_factor" in d and "d_in" in d:
        put("sae.d_sae", int(take("expansion_factor")) * int(d["d_in"]))
    used.add("expansion_factor")
    kwargs = d.get("activation_fn_kwargs") or {}
    used.add("activation_fn_kwargs")
    k = d.get("k", kwargs.get("k"))
    used.add("k")
    if arch in ("topk", "batchtopk"):
        if k is None:
            raise ValueError(f"architecture {arch} needs k (activation_fn_kwargs.k)")
        put("sae.k", int(k))
        put("penalty.form", "none")
        put("penalty.alpha", 0.0)
    if arch in ("relu", "jumprelu"):
        put("penalty.reconstruction", "sum_features")
        if "l1_coefficient" in d:
            put("penalty.alpha", float(take("l1_coefficient")))
        scaled = d.get("scale_sparsity_penalty_by_decoder_norm", True)
        used.add("scale_sparsity_penalty_by_decoder_norm")
        put("penalty.form", "decoder_weighted" if scaled else "per_sample_sum")
    else:
        used |= {"l1_coefficient", "scale_sparsity_penalty_by_decoder_norm"}
    if "l1_warm_up_steps" in d:
        put("penalty.warmup_steps", int(take("l1_warm_up_steps")))
    if "lr" in d:
        put("optim.lr", float(take("lr")))
    for ours, theirs in (("optim.beta1", "adam_beta1"), ("optim.beta2", "adam_beta2")):
        if theirs in d:
            put(ours, float(take(theirs)))
    if "lr_warm_up_steps" in d or "lr_decay_steps" in d or "lr_scheduler_name" in d:
        warm = int(d.get("lr_warm_up_steps") or 0)
        decay = int(d.get("lr_decay_steps") or 0)
        used |= {"lr_warm_up_steps", "lr_decay_steps", "lr_scheduler_name"}
        name = d.get("lr_scheduler_name", "constant")
        if name not in ("constant", None):
            raise ValueError(f"lr_scheduler_name={name!r} is not supported; saelab has constant with a linear warmup "
                             "and/or a linear decay (lr_warm_up_steps, lr_decay_steps)")
        put("schedule.warmup_steps", warm)
        if decay:
            put("schedule.shape", "warmup_linear_decay")
            total = _steps(d)
            if total:
                put("schedule.decay_fraction", min(1.0, decay / total))
        else:
            put("schedule.shape", "linear_warmup" if warm else "constant")
    if "normalize_activations" in d:
        mode = take("normalize_activations")
        if mode not in NORMALIZE:
            raise ValueError(f"normalize_activations={mode!r} is not supported; saelab maps {[m for m in NORMALIZE if m]}")
        put("normalize.mode", NORMALIZE[mode])
    if "apply_b_dec_to_input" in d:
        put("sae.apply_b_dec_to_input", bool(take("apply_b_dec_to_input")))
    if "b_dec_init_method" in d:
        method = take("b_dec_init_method")
        if method not in B_DEC_INIT:
            raise ValueError(f"b_dec_init_method={method!r} is not supported; use {list(B_DEC_INIT)}")
        put("sae.b_dec_init", B_DEC_INIT[method])
    if d.get("init_encoder_as_decoder_transpose"):
        put("sae.init", "tied")
    used.add("init_encoder_as_decoder_transpose")
    if d.get("decoder_heuristic_init"):
        put("sae.decoder_constraint", "unit_norm")
    used.add("decoder_heuristic_init")
    for ours, theirs in (("sae.jumprelu_threshold", "jumprelu_init_threshold"), ("sae.jumprelu_bandwidth", "jumprelu_bandwidth")):
        if theirs in d:
            put(ours, float(take(theirs)))
    batch = d.get("train_batch_size_tokens")
    used.add("train_batch_size_tokens")
    if batch:
        put("data.batch_size", int(batch))
    if _steps(d):
        put("steps", _steps(d))
    used.add("training_tokens")
    if "dead_feature_window" in d:  # in steps; saelab counts tokens
        put("tracking.dead_tokens", int(take("dead_feature_window")) * int(batch or 4096))
    for key, why in REFUSED.items():
        used.add(key)
        if d.get(key):
            raise ValueError(f"{key}={d[key]!r}: {why}")
    unknown = [k for k in d if k not in used and not k.startswith(HARMLESS_PREFIXES)]
    if unknown:
        raise ValueError(f"SAELens field {unknown[0]!r} has no saelab meaning and could change the answer; remove it "
                         f"(mapped: d_in, d_sae, architecture, k, l1_coefficient, lr, lr_warm_up_steps, "
                         f"normalize_activations, apply_b_dec_to_input, dead_feature_window, ...)")
    return out


def _steps(d: dict[str, Any]) -> int:
    tokens, batch = d.get("training_tokens"), d.get("train_batch_size_tokens")
    return int(tokens) // int(batch) if tokens and batch else 0
