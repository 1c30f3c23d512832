"""The arms of each phase: a builder per notebook and the ``PHASES`` registry.

Every builder takes the profile-scaled seed pipeline (``phases.base_config``), the profile and the
phase's own parameters, and returns ``{arm: RunConfig}`` with the seed's arm first; every other
arm changes ONE factor of it. Each Phase lists its parameters as notebook name -> (the config field
it mirrors, default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from saelab.config import RunConfig
from saelab.losses import convert_alpha
from saelab.phases import Phase, Profile



def _set(cfg: RunConfig, **fields: Any) -> RunConfig:
    """``cfg`` with dotted fields replaced: _set(cfg, **{"penalty.alpha": 1.0})."""
    return cfg.with_overrides(fields)


def _list(name: str, value: Any, allowed: tuple | None = None) -> list:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}={value!r} must be a list")
    if allowed is not None:
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ValueError(f"{name}: {bad[0]!r} is not allowed; choose from {list(allowed)}")
    return list(value)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}pct"


def seed_pipeline_at(base: RunConfig, profile: Profile, steps: int | None) -> RunConfig:
    """The seed's failed pipeline (``config.seed_pipeline``: 2,048 latents, batch 128, warmup and
    resampling interval both 10% of training) at the profile's scale."""
    n = steps or profile.pipeline_steps
    return _set(base, **{"sae.d_sae": profile.pipeline_d_sae, "data.batch_size": profile.pipeline_batch, "steps": n,
                         "schedule.warmup_steps": max(1, n // 10), "resample.interval": max(1, n // 10),
                         "tracking.dead_tokens": 100 * profile.pipeline_batch})


def seed_fixed_at(base: RunConfig) -> RunConfig:
    """All of the seed's "Expected Fixes" on ``base`` (``config.seed_fixed``): per-sample-sum L1 with
    alpha x d_sae (Fix #1, #2), warmup 2% of training (Fix #3), windowed detection with the Task 4.2
    re-init (Fix #4), and the Task 5.1 clamp."""
    return _set(base, **{"penalty.form": "per_sample_sum", "penalty.alpha": base.penalty.alpha * base.sae.d_sae,
                         "schedule.warmup_steps": max(1, base.steps // 50), "resample.strategy": "seed-fix",
                         "resample.detector": "window", "normalize.mode": "constant_norm_rescale_clamped"})


def lab_fixed_at(base: RunConfig) -> RunConfig:
    """This lab's recipe, from what phases 01-05 measure on the quick profile: the per-sample-sum L1
    at an alpha calibrated for a sparse code (01: the seed's scale is far too weak, its Task 2.2
    scale kills), no resampling (03: it drives the collapses) but seed 000's reanimation term at
    1e-2 (05), a unit-norm decoder (01), dataset-wide scalar normalization, a larger LR, and b_dec
    started at the data's geometric median and subtracted before the encoder (04, H8)."""
    return _set(base, **{"penalty.form": "per_sample_sum", "penalty.alpha": LAB_ALPHA, "sae.decoder_constraint": "unit_norm",
                         "resample.strategy": "off", "aux.reanimation_coef": 1e-2, "normalize.mode": "dataset_scalar",
                         "optim.lr": LAB_LR, "sae.b_dec_init": "geometric_median", "sae.apply_b_dec_to_input": True})


LAB_ALPHA = 0.006  # per_sample_sum alpha of the lab recipe (with the seed's mse_mean reconstruction); calibrated on
LAB_LR = 2e-3  # the quick profile's synthetic data for a final L0 near 5% (measured, seed 0: 6.0%, dead 0%, peak dead
# 0.4%; without the centered b_dec: 6.8%, dead 14%, peak 63%)
RECIPES = {"seed-pipeline": lambda b: b, "seed-fixed": seed_fixed_at, "lab-fixed": lab_fixed_at}


def _reproduce(base: RunConfig, profile: Profile, p: dict[str, Any]) -> dict[str, RunConfig]:
    presets = _list("presets", p["presets"], ("seed-pipeline", "seed-test1"))
    steps = None if base.steps == profile.steps else base.steps  # an explicit `steps` applies to both
    return {name: seed_pipeline_at(base, profile, steps) if name == "seed-pipeline" else base for name in presets}


def _l1(base: RunConfig, profile: Profile, p: dict[str, Any]) -> dict[str, RunConfig]:
    alpha, B, S = float(p["penalty_alpha"]), base.data.batch_size, base.sae.d_sae
    arms = {"seed": _set(base, **{"penalty.form": "mean_all", "penalty.alpha": alpha})}
    for form in _list("penalty_form", p["penalty_form"], ("mean_all", "per_sample_sum", "per_feature_mean", "sum", "decoder_weighted")):
        if form != "mean_all":  # the same gradient on z as the seed's (losses.convert_alpha)
            arms[form] = _set(base, **{"penalty.form": form, "penalty.alpha": convert_alpha(alpha, "mean_all", form, B, S)})
    for m in _list("penalty_alpha_multipliers", p["penalty_alpha_multipliers"]):
        arms[f"mean_all_x{m:g}"] = _set(base, **{"penalty.alpha": alpha * float(m)})
    if p["penalty_alpha_task22"]:  # the seed's Task 2.2: per-sample sum with alpha x d_sae
        arms["task22_alpha_x_d_sae"] = _set(base, **{"penalty.form": "per_sample_sum", "penalty.alpha": alpha * S})
    if p["sae_decoder_constraint"] != "none":
        arms[f"decoder_{p['sae_decoder_constraint']}"] = _set(base, **{"sae.decoder_constraint": p["sae_decoder_constraint"]})
    return arms


def _warmup(base: RunConfig, profile: Profile, p: dict[str, Any]) -> dict[str, RunConfig]:
    arms = {"seed": base}
    for shape in _list("schedule_shape", p["schedule_shape"], ("constant", "linear_warmup", "warmup_cosine", "warmup_linear_decay")):
        if shape != "linear_warmup":
            arms["no_warmup" if shape == "constant" else shape] = _set(base, **{"schedule.shape": shape})
    for f in _list("schedule_warmup_steps_fraction", p["schedule_warmup_steps_fraction"]):
        if not isinstance(f, (int, float)) or not 0 < f < 1:
            raise ValueError(f"schedule_warmup_steps_fraction: {f!r} must be a fraction of the steps in (0, 1)")
        w = max(1, round(f * base.steps))
        if w != base.schedule.warmup_steps:
            arms[f"warmup_{_pct(f)}"] = _set(base, **{"schedule.warmup_steps": w})
    return arms


def _resampling(base: RunConfig, profile: Profile, p: dict[str, Any]) -> dict[str, RunConfig]:
    arms = {"seed": base}
    for s in _list("resample_strategy", p["resample_strategy"], ("off", "seed", "seed-fix", "anthropic")):
        if s != "seed":
            arms["off" if s == "off" else f"reinit_{s}"] = _set(base, **{"resample.strategy": s})
    for d in _list("resample_detector", p["resample_detector"], ("single_batch", "window", "tokens")):
        if d != "single_batch":
            arms[f"detect_{d}"] = _set(base, **{"resample.detector": d})
    for r in _list("resample_reset_adam", p["resample_reset_adam"], (False, True)):
        if r:
            arms["reset_adam"] = _set(base, **{"resample.reset_adam": True})
    return arms


def _normalization(base: RunConfig, profile: Profile, p: dict[str, Any]) -> dict[str, RunConfig]:
    data = _set(base, **{"data.tiny_row_fraction": p["data_tiny_row_fraction"], "normalize.clamp_min": p["normalize_clamp_min"],
                         "data.huge_row_fraction": p["data_huge_row_fraction"]})
    arms = {"seed": data}
    modes = ("none", "constant_norm_rescale", "constant_norm_rescale_clamped", "dataset_scalar", "layer_norm")
    for mode in _list("normalize_mode", p["normalize_mode"], modes):
        if mode != "constant_norm_rescale":
            arms["clamped" if mode.endswith("clamped") else mode] = _set(data, **{"normalize.mode": mode})
    center = p["sae_b_dec_init"]
    if center not in (None, "zeros", "mean", "geometric_median"):
        raise ValueError(f"sae_b_dec_init={center!r}: choose mean, geometric_median, or None for no centered arm")
    if center not in (None, "zeros"):  # H8: the seed's arm with b_dec at the data's center, subtracted before the encoder
        arms["centered"] = _set(data, **{"sae.b_dec_init": center, "sae.apply_b_dec_to_input": True})
    return arms


def _reanimation(base: RunConfig, profile: Profile, p: dict[str, Any]) -> dict[str, RunConfig]:
    """Resampling off (the auxiliary loss is the remedy under test). The first architecture gets
    every coefficient, the annealed arm and AuxK; the others coefficient 0, the middle coefficient
    (seed 000's 1e-3 by default) and AuxK, which keeps the quick profile within its budget."""
    base = _set(base, **{"resample.strategy": p["resample_strategy"]})
    coefs = sorted(_list("aux_reanimation_coef", p["aux_reanimation_coef"]))
    if not coefs or any(not isinstance(c, (int, float)) or isinstance(c, bool) or c <= 0 for c in coefs):
        raise ValueError(f"aux_reanimation_coef={coefs!r} must list coefficients > 0 (0, the baseline, is always trained)")
    if p["aux_reanimation_schedule"] not in ("constant", "linear_anneal"):
        raise ValueError(f"aux_reanimation_schedule={p['aux_reanimation_schedule']!r}: choose constant or linear_anneal")
    middle, arms = coefs[len(coefs) // 2], {}
    for i, arch in enumerate(_list("sae_architecture", p["sae_architecture"], ("relu", "topk", "batchtopk", "jumprelu"))):
        a = _set(base, **{"sae.architecture": arch})
        if arch in ("topk", "batchtopk"):  # k at the seed's L0 target (5%), no L1 (Gao 2024)
            a = _set(a, **{"sae.k": max(1, round(0.05 * a.sae.d_sae)), "penalty.form": "none", "penalty.alpha": 0.0})
        arms[f"{arch}_coef0"] = a
        for c in coefs if i == 0 else [middle]:
            arms[f"{arch}_coef{c:g}"] = _set(a, **{"aux.reanimation_coef": float(c)})
        if i == 0 and p["aux_reanimation_schedule"] == "linear_anneal":  # to 0 by mid-training (seed 000)
            arms[f"{arch}_anneal{middle:g}"] = _set(a, **{"aux.reanimation_coef": float(middle), "aux.reanimation_schedule":
                                                           "linear_anneal", "aux.reanimation_anneal_steps": max(1, a.steps // 2)})
        if p["aux_auxk_coef"]:
            arms[f"{arch}_auxk"] = _set(a, **{"aux.auxk_coef": float(p["aux_auxk_coef"]), "aux.auxk_k": min(a.aux.auxk_k, a.sae.d_sae // 2)})
    return arms


def _validation(base: RunConfig, profile: Profile, p: dict[str, Any]) -> dict[str, RunConfig]:
    recipes = _list("recipes", p["recipes"], tuple(RECIPES))
    sources = [base.data.source] + ([p["data_source_real"]] if p["data_source_real"] else [])
    tokens = p["data_max_tokens"] or base.data.max_tokens
    arms = {}
    for src in sources:
        b = _set(base, **{"data.source": src, "sae.d_in": base.sae.d_in if src == "synthetic" else 0, "data.max_tokens": tokens})
        for r in recipes:
            arms[f"{r}_{src.replace(':', '-').replace('/', '-')}"] = RECIPES[r](b)
    return arms


def _phase(stem: str, title: str, question: str, hyps: str, factor: str, params: dict, build: Callable) -> Phase:
    return Phase(stem, title, question, tuple(hyps.split()), factor, params, build)


PHASES: dict[str, Phase] = {p.stem: p for p in [
    _phase("00_reproduce", "Reproduce the collapse", "Does the pipeline the seed describes collapse, and when?",
           "H0 H5", "preset", {"presets": (None, ["seed-pipeline", "seed-test1"])}, _reproduce),
    _phase("01_l1_penalty", "L1 penalty scale", "Is the L1 penalty at the wrong scale (Bug #1)?", "H1 H1a H1b H7",
           "penalty.form / penalty.alpha", {
               "penalty_alpha": ("penalty.alpha", 0.003),
               "penalty_form": ("penalty.form", ["per_sample_sum", "per_feature_mean", "sum", "decoder_weighted"]),
               "penalty_alpha_multipliers": ("penalty.alpha", [100, 1000]),
               "penalty_alpha_task22": ("penalty.alpha", True),
               "sae_decoder_constraint": ("sae.decoder_constraint", "unit_norm")}, _l1),
    _phase("02_lr_warmup", "LR warmup", "Does the warmup transition cause the collapse (Bug #2)?", "H2 H2a",
           "schedule.shape / schedule.warmup_steps", {
               "schedule_shape": ("schedule.shape", ["constant", "warmup_cosine"]),
               "schedule_warmup_steps_fraction": ("schedule.warmup_steps", [0.02, 0.1, 0.2])}, _warmup),
    _phase("03_resampling", "Dead-latent resampling", "Does resampling create the collapse (Bug #3)?", "H3 H3a H3b H6",
           "resample.*", {
               "resample_strategy": ("resample.strategy", ["off", "seed-fix", "anthropic"]),
               "resample_detector": ("resample.detector", ["window", "tokens"]),
               "resample_reset_adam": ("resample.reset_adam", [True])}, _resampling),
    _phase("04_normalization", "Input normalization", "Does normalization break training (Bug #4)?", "H4 H4a H8",
           "normalize.mode / sae.b_dec_init", {
               "data_tiny_row_fraction": ("data.tiny_row_fraction", 0.01),
               "data_huge_row_fraction": ("data.huge_row_fraction", 0.01),
               "normalize_mode": ("normalize.mode", ["none", "constant_norm_rescale_clamped", "dataset_scalar", "layer_norm"]),
               "normalize_clamp_min": ("normalize.clamp_min", 1e-6),
               "sae_b_dec_init": ("sae.b_dec_init", "geometric_median")}, _normalization),
    _phase("05_reanimation", "Reanimation loss", "Does seed 000's auxiliary loss revive dead codes without dense noise?",
           "R1", "aux.reanimation_coef", {
               "aux_reanimation_coef": ("aux.reanimation_coef", [1e-4, 1e-3, 1e-2]),
               "aux_reanimation_schedule": ("aux.reanimation_schedule", "linear_anneal"),
               "aux_auxk_coef": ("aux.auxk_coef", 1 / 32),
               "sae_architecture": ("sae.architecture", ["relu", "topk", "jumprelu"]),
               "resample_strategy": ("resample.strategy", "off")}, _reanimation),
    _phase("06_validation", "Validation", "Does the fixed recipe meet the seed's validation table?", "V1",
           "recipe", {
               "data_source_real": ("data.source", "minilm"),
               "data_max_tokens": ("data.max_tokens", None),
               "recipes": (None, list(RECIPES))}, _validation),
]}
