"""What saelab does with every field a SAELens or sparsify config carries: one table per library,
read by the mapping code (``saelens_config``, ``sparsify_config``) and printed as
docs/interop-fields.md (a test keeps the two equal, so the page cannot go stale).

Decisions:
  mapped   becomes the saelab field named (exactly the same meaning)
  assumed  becomes the saelab field named, but saelab's version differs; the lab states it in the
           first lines of every page ("Assumed ...") with how to pass the real setting
  read     not a training setting; ``saelab inspect`` reads it (how the SAE was trained, its count)
  ignored  cannot change which latents die on the rows the lab is given (logging, storage,
           hardware, where the activations came from)
  refused  saelab cannot honour it when set (the condition is named); one line, exit 2

Field sources: SAELens 6.54 ``SAEConfig`` / ``TrainingSAEConfig`` subclasses (``cfg.json``; the
training ones also inside ``metadata.training_architecture_details`` of an inference cfg.json),
``LanguageModelSAERunnerConfig`` (``runner_cfg.json``, the SAE's config nested as ``sae``), and the
pre-6.0 names saelab has always read; sparsify 1.3 ``SparseCoderConfig`` (``cfg.json`` + d_in) and
``TrainConfig`` (the Trainer's ``config.json``, SparseCoderConfig nested as ``sae``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

Decision = Literal["mapped", "assumed", "read", "ignored", "refused"]


@dataclass(frozen=True)
class Field:
    name: str  # the field; a trailing * matches a family of old names (hook_*, wandb_*)
    decision: Decision
    detail: str  # mapped/assumed: the saelab field(s) and the difference; else why


def _t(*rows: tuple[str, Decision, str]) -> tuple[Field, ...]:
    return tuple(Field(*r) for r in rows)


_WHERE = "where the activations came from (model, hook, dataset, tokens); the lab reads the rows given with --data"
_LOG = "logging, evaluation or storage"
_HW = "device, precision of storage or speed only"

SAELENS: tuple[Field, ...] = _t(
    # --- the SAE (cfg.json, every version) ---
    ("architecture", "mapped", "sae.architecture: standard -> relu, topk, batchtopk, jumprelu; matryoshka_batchtopk -> batchtopk "
     "(assumed, see matryoshka_widths); gated, abstopk, matching_pursuit, temporal and transcoders are refused by name"),
    ("d_in", "mapped", "sae.d_in (checked against the data's width)"),
    ("d_sae", "mapped", "sae.d_sae"),
    ("k", "mapped", "sae.k (BatchTopK's mean k is rounded to an integer)"),
    ("apply_b_dec_to_input", "mapped", "sae.apply_b_dec_to_input"),
    ("normalize_activations", "mapped", "normalize.mode: none, expected_average_only_in -> dataset_scalar, constant_norm_rescale, "
     "layer_norm; any other value is refused (SAELens has no whitening value: sae.py, October 2025, lists only these "
     "four; saelab's own whitening is normalize.mode=whitening)"),
    ("rescale_acts_by_decoder_norm", "assumed", "true -> sae.decoder_constraint=unit_norm: every latent decodes along a unit "
     "direction in both; SAELens divides by the norm, saelab renormalizes the rows (same model, another parametrization). "
     "When loading weights it is folded in exactly"),
    ("reshape_activations", "ignored", "hook_z: SAELens flattens attention heads into one row; a file's rows are already [rows, d_in]"),
    ("dtype", "ignored", _HW + "; saelab trains float32"),
    ("device", "ignored", _HW),
    ("metadata", "read", "provenance (model, hook, dataset, versions) is ignored; the keys below are read"),
    ("metadata.training_architecture", "read", "the architecture it was trained as (BatchTopK and Matryoshka save as jumprelu)"),
    ("metadata.training_architecture_details", "read", "the training-only fields below, decided one by one"),
    ("metadata.l0", "read", "inspect: the trainer's mean L0 over its last window"),
    ("metadata.num_dead_features", "read", "inspect: SAELens' own dead count (silent for dead_feature_window steps at the end)"),
    # --- training-only fields of the SAE (TrainingSAEConfig; cfg.json of a checkpoint, or metadata.training_architecture_details) ---
    ("decoder_init_norm", "mapped", "0.1 -> sae.init=tied (encoder = decoder transpose at rows of norm 0.1, saelab's tied init); "
     "null -> sae.init=kaiming; another norm: tied, assumed at 0.1"),
    ("use_sparse_activations", "ignored", _HW),
    ("aux_loss_coefficient", "assumed", "aux.auxk_coef, with aux.auxk_k = d_in / 2 (SAELens' k_aux); SAELens does not divide the "
     "AuxK loss by the residual's variance, saelab does (Gao 2024), so the same number is a different strength"),
    ("topk_threshold_lr", "mapped", "0.01 is saelab's BatchTopK threshold EMA rate; another rate is assumed at 0.01"),
    ("matryoshka_widths", "assumed", "the nested Matryoshka losses are not in saelab: the arms train plain BatchTopK"),
    ("use_matryoshka_aux_loss", "assumed", "as matryoshka_widths"),
    ("l1_coefficient", "mapped", "penalty.alpha (with penalty.reconstruction=sum_features); on a jumprelu without "
     "l0_coefficient (SAELens before 6) the alpha of penalty.form=l0"),
    ("lp_norm", "mapped", "1 -> penalty.form=decoder_weighted; any other p is refused"),
    ("l1_warm_up_steps", "mapped", "penalty.warmup_steps"),
    ("l0_warm_up_steps", "mapped", "penalty.warmup_steps"),
    ("jumprelu_init_threshold", "mapped", "sae.jumprelu_threshold"),
    ("jumprelu_bandwidth", "mapped", "sae.jumprelu_bandwidth"),
    ("l0_coefficient", "mapped", "penalty.alpha of penalty.form=l0 (a jumprelu's step L0: the count of latents above "
     "threshold, its gradient to the thresholds through the rectangle kernel); absent: SAELens' default 1.0"),
    ("jumprelu_sparsity_loss_mode", "mapped", "step (or absent) -> penalty.form=l0; tanh (or another surrogate) is "
     "assumed: the step L0 at the same coefficient is trained instead"),
    ("jumprelu_tanh_scale", "assumed", "as jumprelu_sparsity_loss_mode=tanh: the step L0 is trained"),
    ("target_l0", "assumed", "the step L0 at l0_coefficient is trained; no coefficient is adapted to a target"),
    ("jumprelu_ste_to_input", "assumed", "saelab's straight-through estimator reaches the threshold only (false, DeepMind's)"),
    ("pre_act_loss_coefficient", "refused", "when set: Anthropic's pre-activation loss is not in saelab"),
    # --- the runner (runner_cfg.json) ---
    ("sae", "read", "the SAE's config nested in runner_cfg.json; its fields as above"),
    ("lr", "mapped", "optim.lr"),
    ("adam_beta1", "mapped", "optim.beta1"),
    ("adam_beta2", "mapped", "optim.beta2"),
    ("lr_scheduler_name", "mapped", "constant -> schedule.shape constant / linear_warmup / warmup_linear_decay; cosine schedules "
     "are refused"),
    ("lr_warm_up_steps", "mapped", "schedule.warmup_steps"),
    ("lr_decay_steps", "mapped", "schedule.decay_fraction = lr_decay_steps / steps (shape warmup_linear_decay)"),
    ("lr_end", "ignored", "used only by the cosine schedules, which are refused"),
    ("n_restart_cycles", "ignored", "used only by cosineannealingwarmrestarts, which is refused"),
    ("train_batch_size_tokens", "mapped", "data.batch_size"),
    ("training_tokens", "mapped", "steps = training_tokens / train_batch_size_tokens"),
    ("dead_feature_window", "mapped", "tracking.dead_tokens = dead_feature_window x train_batch_size_tokens (AuxK's dead mask)"),
    ("feature_sampling_window", "ignored", "SAELens 6 only logs sparsity over it (no resampling)"),
    ("dead_feature_threshold", "ignored", "unused by SAELens 6's trainer"),
    ("n_batches_for_norm_estimate", "mapped", "normalize.estimate_batches"),
    ("from_pretrained_path", "refused", "when set: training that starts from a trained SAE; the lab's arms start from scratch"),
    ("resume_from_checkpoint", "ignored", "continues the same run"),
    ("autocast", "ignored", _HW + " (bfloat16 autocast); saelab's arms all train float32"),
    ("seed", "ignored", "the lab's replicates are seeded 0, 1, 2"),
    ("activations_mixing_fraction", "ignored", "shuffling of SAELens' buffer; the lab shuffles the file's rows itself (H22 tests order)"),
    ("n_batches_in_buffer", "ignored", "as activations_mixing_fraction"),
    ("logger", "ignored", _LOG + " (W&B)"),
    ("n_checkpoints", "ignored", _LOG),
    ("checkpoint_path", "ignored", _LOG),
    ("save_final_checkpoint", "ignored", _LOG),
    ("output_path", "ignored", _LOG),
    ("n_eval_batches", "ignored", _LOG),
    ("eval_batch_size_prompts", "ignored", _LOG),
    ("verbose", "ignored", _LOG),
    ("sae_lens_version", "ignored", "provenance"),
    ("sae_lens_training_version", "ignored", "provenance"),
    ("llm_device", "ignored", _HW),
    ("act_store_device", "ignored", _HW),
    ("prefetch_llm_batches", "ignored", _HW),
    ("autocast_lm", "ignored", _HW),
    ("compile_llm", "ignored", _HW),
    ("llm_compilation_mode", "ignored", _HW),
    ("compile_sae", "ignored", _HW),
    ("sae_compilation_mode", "ignored", _HW),
    ("model_*", "ignored", _WHERE),
    ("hook_*", "ignored", _WHERE),
    ("dataset_*", "ignored", _WHERE),
    ("streaming", "ignored", _WHERE),
    ("is_dataset_tokenized", "ignored", _WHERE),
    ("use_chat_formatting", "ignored", _WHERE),
    ("context_size", "ignored", _WHERE),
    ("use_cached_activations", "ignored", _WHERE),
    ("cached_activations_path", "ignored", _WHERE),
    ("store_batch_size_prompts", "ignored", _WHERE),
    ("seqpos_slice", "ignored", _WHERE),
    ("disable_concat_sequences", "ignored", _WHERE),
    ("sequence_separator_token", "ignored", _WHERE),
    ("prepend_bos", "ignored", _WHERE),
    ("exclude_special_tokens", "ignored", _WHERE),
    # --- SAELens before 6.0 ---
    ("activation_fn", "mapped", "relu -> relu; topk (with activation_fn_kwargs.k) -> topk; others refused"),
    ("activation_fn_str", "mapped", "as activation_fn"),
    ("activation_fn_kwargs", "mapped", "k -> sae.k"),
    ("expansion_factor", "mapped", "sae.d_sae = expansion_factor x d_in when d_sae is absent"),
    ("b_dec_init_method", "mapped", "sae.b_dec_init (zeros, mean, geometric_median)"),
    ("init_encoder_as_decoder_transpose", "mapped", "true -> sae.init=tied"),
    ("decoder_heuristic_init", "mapped", "true -> sae.decoder_constraint=unit_norm"),
    ("scale_sparsity_penalty_by_decoder_norm", "mapped", "true -> penalty.form=decoder_weighted, false -> per_sample_sum"),
    ("normalize_sae_decoder", "refused", "when true: set sae.decoder_constraint=unit_norm in a saelab base instead"),
    ("use_ghost_grads", "refused", "when true: ghost grads are not in saelab"),
    ("noise_scale", "refused", "when non-zero: training on noised inputs is not in saelab"),
    ("decoder_orthogonal_init", "refused", "when true: an orthogonal decoder init is not in saelab"),
    ("mse_loss_normalization", "refused", "when set: a normalized MSE is not in saelab"),
    ("finetuning_scaling_factor", "refused", "when true: a finetuned output scale is not in saelab"),
    ("finetuning_method", "ignored", "finetuning after the run; the lab studies the run"),
    ("finetuning_tokens", "ignored", "as finetuning_method"),
    ("apply_b_dec_to_input_in_eval", "ignored", _LOG),
    ("neuronpedia_id", "ignored", "provenance"),
    ("run_name", "ignored", _LOG),
    ("wandb_*", "ignored", _LOG),
    ("log_*", "ignored", _LOG),
    ("eval_every_n_wandb_logs", "ignored", _LOG),
)

SPARSIFY: tuple[Field, ...] = _t(
    # --- SparseCoderConfig (cfg.json, with d_in) ---
    ("d_in", "mapped", "sae.d_in (checked against the data's width)"),
    ("activation", "mapped", "topk -> sae.architecture=topk; groupmax is refused"),
    ("k", "mapped", "sae.k"),
    ("num_latents", "mapped", "sae.d_sae (0: expansion_factor x d_in)"),
    ("expansion_factor", "mapped", "sae.d_sae = expansion_factor x d_in when num_latents is 0"),
    ("normalize_decoder", "mapped", "true -> sae.decoder_constraint=unit_norm (sparsify renormalizes rows and projects out the "
     "radial gradient, as saelab does)"),
    ("multi_topk", "refused", "when true: the Multi-TopK loss is not in saelab"),
    ("skip_connection", "refused", "when true: a skip connection is not an SAE saelab trains"),
    ("transcode", "refused", "when true: a transcoder predicts another module's output"),
    # --- TrainConfig (the Trainer's config.json) ---
    ("sae", "read", "the SparseCoderConfig nested in config.json; its fields as above"),
    ("batch_size", "assumed", "data.batch_size: sparsify counts sequences of ctx_len tokens (ctx_len is not saved); saelab takes "
     "batch_size as rows (tokens) per step"),
    ("grad_acc_steps", "refused", "when > 1: gradient accumulation is not in saelab"),
    ("micro_acc_steps", "ignored", "splits a batch for memory; the gradient is the same"),
    ("loss_fn", "assumed", "fvu -> penalty.reconstruction=sum_features (sparsify divides by the batch's total variance, a "
     "per-batch scale); ce and kl need the language model and are refused"),
    ("optimizer", "assumed", "adam -> saelab's Adam; signum (ScheduleFree SignSGD) and muon are not in saelab: the arms train "
     "with Adam"),
    ("lr", "mapped", "optim.lr when set; null: sparsify picks it from the optimizer and width, and saelab's optim.lr is assumed"),
    ("lr_warmup_steps", "mapped", "schedule.warmup_steps (sparsify's Adam warms up linearly, then decays linearly to 0: shape "
     "warmup_linear_decay over the whole run)"),
    ("k_decay_steps", "refused", "when > 0: k that changes during the run is not in saelab"),
    ("auxk_alpha", "assumed", "aux.auxk_coef, with aux.auxk_k = d_in / 2 (sparsify's k_aux); sparsify divides its AuxK loss by the "
     "batch's input variance, saelab by the residual's (OpenAI's reference), so the same coefficient weighs AuxK more in saelab"),
    ("dead_feature_threshold", "mapped", "tracking.dead_tokens (tokens since fired)"),
    ("finetune", "refused", "when set: training that starts from a trained SAE; the lab's arms start from scratch"),
    ("init_seeds", "ignored", "the lab's replicates are seeded 0, 1, 2"),
    ("exclude_tokens", "ignored", _WHERE),
    ("hookpoints", "ignored", _WHERE),
    ("layers", "ignored", _WHERE),
    ("layer_stride", "ignored", _WHERE),
    ("distribute_modules", "ignored", _HW),
    ("save_every", "ignored", _LOG),
    ("save_best", "ignored", _LOG),
    ("log_to_wandb", "ignored", _LOG),
    ("run_name", "ignored", _LOG),
    ("wandb_log_frequency", "ignored", _LOG),
    ("save_dir", "ignored", _LOG),
)

TABLES = {"SAELens": SAELENS, "sparsify": SPARSIFY}


def lookup(table: tuple[Field, ...], name: str) -> Field | None:
    """The row for ``name`` (exact names first, then the * families)."""
    for f in table:
        if f.name == name:
            return f
    for f in table:
        if f.name.endswith("*") and fnmatchcase(name, f.name):
            return f
    return None


def check_known(library: str, d: dict) -> None:
    """Raise ValueError naming the first field of ``d`` that ``library``'s table does not list (a
    newer version's field could change the answer, so it is never dropped silently)."""
    for key, value in d.items():
        if lookup(TABLES[library], key) is None:
            raise ValueError(f"{library} field {key!r}={value!r} is unknown to saelab (a newer {library}?) and could "
                             f"change the answer; remove it or see docs/interop-fields.md")


def refusal(library: str, key: str) -> str:
    """Why ``key`` is refused, without the row's condition ("when true: ...")."""
    detail = lookup(TABLES[library], key).detail
    return detail.split(": ", 1)[1] if detail.startswith("when ") else detail


def markdown(library: str) -> str:
    """The table as docs/interop-fields.md prints it."""
    rows = [f"| `{f.name}` | {f.decision} | {f.detail} |" for f in TABLES[library]]
    return "\n".join([f"| {library} field | decision | what saelab does |", "|---|---|---|", *rows])


def document() -> str:
    """docs/interop-fields.md, whole (tests/test_interop_fields.py checks the file equals it;
    regenerate: ``python -c "from saelab.interop.fields import document; print(document(), end='')" > docs/interop-fields.md``)."""
    return "\n".join([
        "# SAELens and sparsify config fields in saelab",
        "",
        "What `saelab lab --base` and `saelab inspect` do with every field a SAELens 6.x config (`cfg.json`, and",
        "`runner_cfg.json`, the `LanguageModelSAERunnerConfig` as JSON) or a sparsify config (`cfg.json`, and the",
        "Trainer's `config.json`) carries, plus the names SAELens used before 6.0. Generated from",
        "`saelab/interop/fields.py`, which the mapping code reads; a test keeps this page equal to it.",
        "",
        "- **mapped**: becomes the saelab field named, with the same meaning.",
        "- **assumed**: becomes the saelab field named, but saelab's version differs, or the config does not say; the",
        "  lab's pages open with an *Assumed* list naming each one and how to pass the real setting.",
        "- **read**: not a training setting; read to know how the SAE was trained (`saelab inspect`).",
        "- **ignored**: cannot change which latents die on the rows the lab is given.",
        "- **refused**: saelab cannot honour it when set as the condition says: one line naming the field and its",
        "  value, exit code 2, nothing written. A field in no row (a newer library version) is refused the same way.",
        "",
        "A checkpoint's `cfg.json` carries no training settings (lr, batch, length, schedule, dead window): the lab",
        "uses SAELens' defaults (sparsify's TrainConfig defaults) and the profile's sizes, and says so; pass the",
        "real ones with `--base runner_cfg.json` (SAELens) or `--base <the folder with cfg.json and config.json>`",
        "(sparsify).",
        "",
        "## SAELens",
        "",
        markdown("SAELens"),
        "",
        "## sparsify",
        "",
        markdown("sparsify"),
        "",
    ])
