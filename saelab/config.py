"""Run configuration: frozen dataclasses, validation, presets and a JSON round trip.

A config never changes during a run; anything that varies with the step (LR, penalty alpha,
reanimation coefficient) is a schedule, a pure function of the step (see ``schedules.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

from saelab.version import provenance as which

Architecture = Literal["relu", "topk", "batchtopk", "jumprelu"]
PenaltyForm = Literal["none", "mean_all", "per_sample_sum", "per_feature_mean", "sum", "decoder_weighted", "l0"]
RecForm = Literal["mse_mean", "sum_features"]
LRShape = Literal["constant", "linear_warmup", "warmup_cosine", "warmup_linear_decay"]
NormMode = Literal["none", "constant_norm_rescale", "constant_norm_rescale_clamped", "dataset_scalar", "layer_norm", "whitening"]
ResampleStrategy = Literal["off", "seed", "seed-fix", "anthropic"]
Detector = Literal["single_batch", "window", "tokens"]
CoefSchedule = Literal["constant", "linear_anneal"]


MAX_INT = 10**15  # no count in a config is this large; beyond 2**63 torch's int64 tensors overflow
MAX_STEPS = 10**9  # a billion optimizer steps: over a year at the seed's ~26 steps/s
PROVENANCE_KEY = "saelab"  # config.json's {"version", "commit"} of the saelab that wrote it (saelab.version.KEY)


class _Section:
    """Shared validation helpers for config sections."""

    def _check(self) -> None:
        hints = get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            hint = hints[f.name]
            if get_origin(hint) is Literal:
                allowed = get_args(hint)
                if value not in allowed:
                    raise ValueError(f"{self._path(f.name)}={value!r} is not allowed; choose one of {list(allowed)}")
            elif hint is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"{self._path(f.name)}={value!r} must be true or false")
            elif hint is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{self._path(f.name)}={value!r} must be an integer")
                if abs(value) > MAX_INT:  # keeps sizes and step x batch products well inside int64
                    raise ValueError(f"{self._path(f.name)}={value!r} is absurdly large (the limit is {MAX_INT:.0e})")
            elif hint is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"{self._path(f.name)}={value!r} must be a finite number")
            elif hint is str:
                if not isinstance(value, str):
                    raise ValueError(f"{self._path(f.name)}={value!r} must be a string")

    _prefix = ""

    def _path(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def _require(self, ok: bool, name: str, what: str) -> None:
        if not ok:
            raise ValueError(f"{self._path(name)}={getattr(self, name)!r} {what}")


@dataclass(frozen=True)
class SAEConfig(_Section):
    _prefix = "sae"
    architecture: Architecture = "relu"  # relu: the seed's SAE; topk/batchtopk: Gao 2024 / Bussmann 2024; jumprelu: Rajamanoharan 2024
    d_in: int = 0  # width of the activations; 0 takes it from the source (synthetic: 768, the seed's hidden size)
    d_sae: int = 2048  # number of latents (the seed's latent_dim)
    k: int = 32  # active latents per row for topk; mean active per row for batchtopk
    jumprelu_threshold: float = 0.001  # initial threshold theta of every JumpReLU latent, in activation units
    jumprelu_bandwidth: float = 0.001  # width of the straight-through kernel for d/dtheta (Rajamanoharan 2024)
    decoder_constraint: Literal["none", "unit_norm"] = "none"  # unit_norm: renormalize rows and project out the radial gradient
    init: Literal["kaiming", "tied"] = "kaiming"  # tied: encoder starts as the decoder's transpose (Conerly 2024)
    # decoder bias at step 0: zeros (the seed), or the center of the first normalize.estimate_batches
    # training batches in normalized space, their mean or geometric median (Bricken 2023; SAELens
    # b_dec_init_method). With a shared offset in the data, a zero b_dec leaves every latent to
    # explain the offset first.
    b_dec_init: Literal["zeros", "mean", "geometric_median"] = "zeros"
    # encode x - b_dec instead of x (Bricken 2023; SAELens apply_b_dec_to_input): the decoder bias is
    # the origin for the encoder too, so latents see the data around its center
    apply_b_dec_to_input: bool = False
    # encoder bias b_enc at step 0, in pre-activation units (0: nn.Linear-style zeros, the seed). A
    # negative start puts a latent's pre-activations below zero on every row before any update: a
    # ReLU latent that never fires gets no gradient and stays dead (phase 04, H21)
    b_enc_init: float = 0.0
    # start every latent's encoder and decoder row inside the data's active subspace: the top
    # principal components of x - b_dec (the first normalize.estimate_batches training batches, in
    # normalized space) that hold this share of its second moment; each initial row is projected
    # there and keeps its norm. 0: off (rows point anywhere in d_in). On activations confined to a
    # low-dimensional subspace (attention outputs), rows started outside it stay dead; Wang et al.
    # 2025 (arXiv 2508.16929) keep 99% and cut dead latents from 87% to under 1% (phase 04, H24)
    init_subspace: float = 0.0

    def __post_init__(self) -> None:
        self._check()
        self._require(self.d_in >= 0, "d_in", "must be >= 0 (0: take the width from the data source)")
        self._require(self.init_subspace == 0 or 0 < self.init_subspace <= 1, "init_subspace",
                      "must be 0 (off) or in (0, 1] (the share of the data's variance the initial rows' subspace keeps)")
        self._require(self.d_sae >= 1, "d_sae", "must be >= 1")
        self._require(self.k >= 1, "k", "must be >= 1")
        if self.architecture in ("topk", "batchtopk"):
            self._require(self.k <= self.d_sae, "k", f"must be <= d_sae={self.d_sae} for {self.architecture}")
        self._require(self.jumprelu_threshold >= 0, "jumprelu_threshold", "must be >= 0")
        self._require(self.jumprelu_bandwidth > 0, "jumprelu_bandwidth", "must be > 0")


@dataclass(frozen=True)
class PenaltyConfig(_Section):
    _prefix = "penalty"
    # how |z| is reduced; mean_all is the seed's line 216 z.abs().mean(); l0 (JumpReLU only): the
    # count of latents above their threshold per row, its gradient reaching the thresholds through
    # the rectangle kernel (Rajamanoharan 2024, eq. 10-12; SAELens' l0_coefficient)
    form: PenaltyForm = "mean_all"
    alpha: float = 0.003  # coefficient on the reduced penalty (the seed's l1_alpha)
    warmup_steps: int = 0  # alpha rises linearly from 0 over these steps (Anthropic April 2024: 5% of training)
    reconstruction: RecForm = "mse_mean"  # mse_mean: the seed's mean over all elements; sum_features: sum over d_in, mean over batch

    def __post_init__(self) -> None:
        self._check()
        self._require(self.alpha >= 0, "alpha", "must be >= 0")
        self._require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")


@dataclass(frozen=True)
class OptimConfig(_Section):
    _prefix = "optim"
    lr: float = 3e-4  # peak Adam learning rate
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 0.0  # max global gradient norm per arm; 0 disables clipping
    # AdamW's decoupled weight decay (Loshchilov & Hutter 2019): each step W <- W (1 - lr x
    # weight_decay) on W_enc and W_dec only, never on the biases; 0 (the default) is plain Adam.
    # SAE recipes train without it (Bricken 2023, Gao 2024); a latent that fires rarely gets little
    # gradient to offset the shrink, so its encoder row decays toward zero (phase 02, H20)
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        self._check()
        self._require(self.lr > 0, "lr", "must be > 0")
        self._require(0 <= self.beta1 < 1, "beta1", "must be in [0, 1)")
        self._require(0 <= self.beta2 < 1, "beta2", "must be in [0, 1)")
        self._require(self.eps > 0, "eps", "must be > 0")
        self._require(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables clipping)")
        self._require(self.weight_decay >= 0, "weight_decay", "must be >= 0 (0: plain Adam, no decay)")


@dataclass(frozen=True)
class ScheduleConfig(_Section):
    _prefix = "schedule"
    shape: LRShape = "linear_warmup"  # linear_warmup is the seed's LambdaLR(step / warmup_steps)
    warmup_steps: int = 5000  # steps of linear warmup from 0
    decay_fraction: float = 0.2  # warmup_linear_decay: final fraction of training decaying to 0
    min_lr_ratio: float = 0.0  # warmup_cosine: floor of the cosine as a fraction of the peak

    def __post_init__(self) -> None:
        self._check()
        self._require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        self._require(0 < self.decay_fraction <= 1, "decay_fraction", "must be in (0, 1]")
        self._require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")


@dataclass(frozen=True)
class DataConfig(_Section):
    _prefix = "data"
    source: str = "synthetic"  # synthetic | minilm | hf:<model or path> | file:<path>
    batch_size: int = 128  # rows per training step (tokens)
    # synthetic source (ground truth known)
    n_features: int = 4096  # true directions; more than d_in means superposition
    firing_exponent: float = 1.0  # feature i fires with probability ~ (i+1)^-exponent (power law)
    mean_active: float = 16.0  # expected number of true features active per row
    mean_offset: float = 0.0  # norm of a constant offset added to every row (real residual streams have one)
    noise_std: float = 0.01  # iid Gaussian noise per coordinate
    tiny_row_fraction: float = 0.0  # fraction of rows scaled by 1e-6 (near-zero norm outliers)
    huge_row_fraction: float = 0.0  # fraction of rows scaled by 1e3
    # high-norm sink rows (attention sinks, BOS positions): this fraction of rows is replaced by one
    # fixed direction at outlier_norm times the median row norm (synthetic only; phase 04, H23)
    outlier_fraction: float = 0.0
    outlier_norm: float = 100.0  # a sink row's norm as a multiple of the median row norm (> 1)
    # order of the training stream (phase 04, H22). shuffled: rows mixed (synthetic: independent
    # rows; file and transformer sources: chunks and rows within each of data.shuffle_buffer rows
    # permuted). ordered: consecutive rows as they come (files: file order; synthetic: documents of
    # document_rows consecutive rows, each raising the firing of its own subset of the features)
    order: Literal["shuffled", "ordered"] = "shuffled"
    document_rows: int = 4096  # synthetic ordered stream: rows per document
    # synthetic ordered stream: weight of the document's own feature subset in its rows' firing
    # probabilities (feature i fires with (1 - w) p_i + w [i in the subset]; the subset is drawn like
    # a row's active features, so every row keeps the shuffled distribution). 1: every row of a
    # document has the same features active; 0: no drift
    document_features: float = 0.1
    # drop training and held-out rows whose norm is above this multiple of the median row norm
    # (measured once on the first training rows), for every source; dropped rows are replaced by
    # the next kept ones and counted in the run's dropped_rows events. 0: keep every row
    drop_norm_above: float = 0.0
    # transformer sources (minilm / hf:)
    layer: int = 3  # hidden-state index; 0 is the embeddings
    text: str = "stdlib"  # stdlib: docstrings of the Python standard library; else a file or folder of .txt/.md
    max_tokens: int = 400_000  # tokens of text to run through the model (activations cached)
    # tokens per sequence: fed to the model (transformer sources); for file sources, the rows of one
    # sequence (a SAELens cache's context_size), which gives each row its position when
    # data.exclude_first_positions is set
    context_length: int = 128
    # drop the rows at the first N positions of every sequence (position = row index mod
    # data.context_length, file and transformer sources) from training and held-out rows alike:
    # the BOS position's activations have a huge, nearly constant norm in real LMs (SAELens #333
    # excludes it by seqpos; sparsify #104 by token id). Counted in a dropped_rows event. 0: keep all
    exclude_first_positions: int = 0
    drop_special_tokens: bool = True  # drop [CLS]/[SEP]/padding positions
    shuffle_buffer: int = 65_536  # rows mixed before batching (file and transformer sources)
    # file sources: train without rows holding NaN/Inf (their count goes into the run's events)
    # instead of refusing the file; the file is checked whole before training either way
    skip_nonfinite: bool = False

    def __post_init__(self) -> None:
        self._check()
        ok = self.source in ("synthetic", "minilm") or (
            self.source.startswith(("hf:", "file:")) and len(self.source.split(":", 1)[1]) > 0
        )
        self._require(ok, "source", "is unknown; use synthetic | minilm | hf:<model> | file:<path>")
        self._require(self.batch_size >= 1, "batch_size", "must be >= 1")
        self._require(self.n_features >= 1, "n_features", "must be >= 1")
        self._require(self.firing_exponent >= 0, "firing_exponent", "must be >= 0")
        self._require(0 < self.mean_active <= self.n_features, "mean_active", "must be in (0, n_features]")
        self._require(self.mean_offset >= 0, "mean_offset", "must be >= 0")
        self._require(self.noise_std >= 0, "noise_std", "must be >= 0")
        self._require(0 <= self.tiny_row_fraction < 1, "tiny_row_fraction", "must be in [0, 1)")
        self._require(0 <= self.huge_row_fraction < 1, "huge_row_fraction", "must be in [0, 1)")
        self._require(self.tiny_row_fraction + self.huge_row_fraction < 1, "huge_row_fraction", "plus tiny_row_fraction must be < 1")
        self._require(0 <= self.outlier_fraction < 1, "outlier_fraction", "must be in [0, 1)")
        self._require(self.outlier_fraction == 0 or self.source == "synthetic", "outlier_fraction",
                      f"plants sink rows in the synthetic source only, not in data.source={self.source!r}; set it to 0")
        self._require(self.outlier_norm > 1, "outlier_norm", "must be > 1 (a multiple of the median row norm)")
        self._require(self.document_rows >= 1, "document_rows", "must be >= 1")
        self._require(0 <= self.document_features <= 1, "document_features", "must be in [0, 1]")
        self._require(self.drop_norm_above == 0 or self.drop_norm_above > 1, "drop_norm_above",
                      "must be 0 (keep every row) or > 1 (a multiple of the median row norm)")
        self._require(self.layer >= 0, "layer", "must be >= 0")
        self._require(self.max_tokens >= 1, "max_tokens", "must be >= 1")
        self._require(self.context_length >= 2, "context_length", "must be >= 2")
        self._require(self.exclude_first_positions >= 0, "exclude_first_positions", "must be >= 0 (0: keep every position)")
        self._require(self.exclude_first_positions < self.context_length, "exclude_first_positions",
                      f"must be < data.context_length={self.context_length} (it would drop every row of a sequence)")
        self._require(self.exclude_first_positions == 0 or self.source != "synthetic", "exclude_first_positions",
                      "needs rows with positions (a file: or transformer source); the synthetic source's rows are independent")
        self._require(self.shuffle_buffer >= 1, "shuffle_buffer", "must be >= 1")


@dataclass(frozen=True)
class NormalizeConfig(_Section):
    _prefix = "normalize"
    mode: NormMode = "none"  # constant_norm_rescale is the seed's lines 106-110: x * sqrt(d_in)/||x||, no clamp
    clamp_min: float = 1e-6  # the seed's Task 5.1 clamp on ||x|| (constant_norm_rescale_clamped only)
    # dataset_scalar: batches used once to estimate E||x||; whitening: the least batches its mean and
    # covariance are estimated from (more when they hold under 4 rows per dimension)
    estimate_batches: int = 20

    def __post_init__(self) -> None:
        self._check()
        self._require(self.clamp_min > 0, "clamp_min", "must be > 0")
        self._require(self.estimate_batches >= 1, "estimate_batches", "must be >= 1")


@dataclass(frozen=True)
class TrackingConfig(_Section):
    _prefix = "tracking"
    window_batches: int = 50  # the seed's Task 4.1: last 50 batches
    window_threshold: float = 0.01  # ... and dead below a 1% activation rate
    dead_tokens: int = 100_000  # tokens-since-fired threshold (Gao 2024 / sparsify use 10M at scale)

    def __post_init__(self) -> None:
        self._check()
        self._require(self.window_batches >= 1, "window_batches", "must be >= 1")
        self._require(0 <= self.window_threshold < 1, "window_threshold", "must be in [0, 1)")
        self._require(self.dead_tokens >= 1, "dead_tokens", "must be >= 1")


@dataclass(frozen=True)
class ResampleConfig(_Section):
    _prefix = "resample"
    strategy: ResampleStrategy = "off"  # seed: lines 926-971; seed-fix: Task 4.2; anthropic: Bricken 2023 appendix
    detector: Detector = "single_batch"  # which dead detector selects the latents to resample
    interval: int = 5000  # resample every this many steps
    first_step: int = 0  # never before this step
    after_warmup: bool = True  # the seed's `step >= warmup_steps` condition
    reset_adam: bool = False  # zero the Adam moments of the rewritten parameters

    def __post_init__(self) -> None:
        self._check()
        self._require(self.interval >= 1, "interval", "must be >= 1")
        self._require(self.first_step >= 0, "first_step", "must be >= 0")


@dataclass(frozen=True)
class AuxConfig(_Section):
    _prefix = "aux"
    reanimation_coef: float = 0.0  # seed 000: loss -= coef * mean(pre_codes of latents dead in the batch)
    reanimation_schedule: CoefSchedule = "constant"  # linear_anneal: coef falls linearly to 0 at anneal_steps
    reanimation_anneal_steps: int = 0
    auxk_coef: float = 0.0  # Gao 2024 AuxK weight (1/32 in the paper); 0 disables
    auxk_k: int = 256  # dead latents used by AuxK (k_aux; Gao use 512 at d_sae 16M... scaled down here)

    def __post_init__(self) -> None:
        self._check()
        self._require(self.reanimation_coef >= 0, "reanimation_coef", "must be >= 0")
        self._require(self.reanimation_anneal_steps >= 0, "reanimation_anneal_steps", "must be >= 0")
        self._require(
            self.reanimation_schedule == "constant" or self.reanimation_anneal_steps > 0,
            "reanimation_anneal_steps",
            "must be > 0 when reanimation_schedule is linear_anneal",
        )
        self._require(self.auxk_coef >= 0, "auxk_coef", "must be >= 0")
        self._require(self.auxk_k >= 1, "auxk_k", "must be >= 1")


@dataclass(frozen=True)
class RunConfig(_Section):
    sae: SAEConfig = field(default_factory=SAEConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    resample: ResampleConfig = field(default_factory=ResampleConfig)
    aux: AuxConfig = field(default_factory=AuxConfig)
    steps: int = 10_000  # optimizer steps
    log_interval: int = 50  # evaluate on the held-out set and append a metrics row every this many steps
    eval_rows: int = 8192  # held-out rows for metrics and the 'truth' dead detector
    # steps between checkpoints, so a kill -9 loses at most this many; 0: automatic,
    # min(1000, max(log_interval, steps // 10)) (train.checkpoint_interval). A finished run drops
    # its checkpoint unless asked to keep it (saelab train --keep-checkpoint)
    checkpoint_every: int = 0
    # also checkpoint when this many seconds of training passed since the last checkpoint, so a
    # slow run loses minutes at most whatever its step rate; 0: by steps only
    checkpoint_seconds: float = 120.0
    seed: int = 0  # seeds the data, the initialization and every sampler
    device: str = "cpu"  # cpu | cuda | cuda:N
    dtype: Literal["float32", "float64", "bfloat16"] = "float32"
    # torch.compile the forward pass and the loss terms (inductor fuses the element-wise passes; the
    # products stay library calls). Same numbers as eager within float tolerance
    # (tests/test_fastpaths.py); the first step pays the compilation (seconds to a minute), so it
    # pays off on long runs and many arms (benchmarks/README.md). Off by default.
    compile: bool = False

    def __post_init__(self) -> None:
        self._check()
        self._require(self.steps >= 1, "steps", "must be >= 1")
        self._require(self.steps <= MAX_STEPS, "steps", f"is absurd: at most {MAX_STEPS:.0e} steps (over a year at 26 steps/s)")
        self._require(self.log_interval >= 1, "log_interval", "must be >= 1")
        # a longer interval logs only the untrained step-0 row and the last one: no curve to judge
        self._require(self.log_interval <= self.steps, "log_interval", f"must be <= steps={self.steps}")
        self._require(self.eval_rows >= 1, "eval_rows", "must be >= 1")
        self._require(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0 (0: automatic)")
        # a longer interval never checkpoints before the end: a kill would lose the whole run
        self._require(self.checkpoint_every <= self.steps, "checkpoint_every",
                      f"must be <= steps={self.steps} (0: automatic)")
        self._require(self.checkpoint_seconds >= 0, "checkpoint_seconds", "must be >= 0 (0: by steps only)")
        self._require(self.seed >= 0, "seed", "must be >= 0")
        self._require(re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is not None, "device", "must be cpu, cuda or cuda:N")
        if self.penalty.form == "l0" and self.sae.architecture != "jumprelu":
            raise ValueError(f"penalty.form='l0' counts latents above a JumpReLU threshold; sae.architecture="
                             f"{self.sae.architecture!r} has no threshold (use an L1 form, or none for topk/batchtopk)")
        if self.aux.auxk_coef > 0 and self.aux.auxk_k > self.sae.d_sae:
            raise ValueError(f"aux.auxk_k={self.aux.auxk_k} must be <= sae.d_sae={self.sae.d_sae}")
        run_tokens = self.steps * self.data.batch_size
        if self.aux.auxk_coef > 0 and self.tracking.dead_tokens >= run_tokens:
            # AuxK acts on latents silent for dead_tokens tokens: a window as long as the run never opens
            raise ValueError(f"tracking.dead_tokens={self.tracking.dead_tokens} is not below the run's {run_tokens} tokens "
                             f"(steps x data.batch_size), so AuxK (aux.auxk_coef={self.aux.auxk_coef:g}) would never act")

    # ----- dict / JSON round trip -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, provenance: bool | dict[str, Any] = False) -> str:
        """Sorted, indented JSON; with ``provenance`` also the saelab version and commit that wrote
        it (under ``"saelab"``, which ``from_json`` skips), or that dict itself (a run's identity,
        saelab.training.identity)."""
        d = self.to_dict()
        if isinstance(provenance, dict):
            d[PROVENANCE_KEY] = provenance
        elif provenance:
            d[PROVENANCE_KEY] = which()
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """The inverse of ``to_dict``; the ``"saelab"`` key (which saelab wrote the file, see
        saelab.version) is provenance, not a field, and is skipped."""
        if isinstance(d, dict) and PROVENANCE_KEY in d:
            d = {k: v for k, v in d.items() if k != PROVENANCE_KEY}
        return _build(cls, d, "")

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **sections: Any) -> RunConfig:
        """Copy with whole fields replaced; nested dicts update a section field by field."""
        d = self.to_dict()
        for key, value in sections.items():
            if dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            if isinstance(value, dict) and isinstance(d.get(key), dict):
                d[key] = {**d[key], **value}
            else:
                d[key] = value
        return RunConfig.from_dict(d)

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> RunConfig:
        """Apply dotted-path overrides: ``["sae.d_sae=256", "steps=200"]`` or ``{"sae.d_sae": 256}``."""
        items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
        d = self.to_dict()
        for path, value in items:
            set_path(d, path, value)
        return RunConfig.from_dict(d)


def field_paths(cls: type = RunConfig, prefix: str = "") -> dict[str, type]:
    """Every leaf field as a dotted path -> its type hint."""
    out: dict[str, type] = {}
    for name, hint in get_type_hints(cls).items():
        if name.startswith("_"):
            continue
        if dataclasses.is_dataclass(hint):
            out.update(field_paths(hint, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = hint
    return out


def _nearest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid: {sorted(options)}"


def _build(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {d!r}")
    hints = {k: v for k, v in get_type_hints(cls).items() if not k.startswith("_")}
    kwargs = {}
    for key, value in d.items():
        if key not in hints:
            raise ValueError(f"unknown config field {prefix + key!r}" + _nearest(key, list(hints)))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            if hint is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if hint is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            kwargs[key] = value
    return cls(**kwargs)


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like path=value (for example sae.d_sae=256)")
    path, raw = text.split("=", 1)
    return path.strip(), parse_value(path.strip(), raw.strip())


def parse_value(path: str, raw: str) -> Any:
    """Turn a command-line string into the type of the field at ``path``."""
    hint = field_paths().get(path)
    if hint is None:
        return raw  # set_path reports the unknown path with a suggestion
    try:
        if hint is bool:
            low = raw.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return low in ("true", "1", "yes")
        if hint is int:
            try:
                return int(raw)
            except ValueError:
                as_float = float(raw)  # accept 1e4 / 256.0, reject 2.5
                if not as_float.is_integer():
                    raise
                return int(as_float)
        if hint is float:
            return float(raw)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[hint]
        raise ValueError(f"{path}={raw!r} must be {kind}") from None
    return raw


def set_path(d: dict[str, Any], path: str, value: Any) -> None:
    """Set ``d[a][b] = value`` for ``path='a.b'``, rejecting unknown paths with a suggestion."""
    paths = field_paths()
    if path not in paths:
        raise ValueError(f"unknown config field {path!r}" + _nearest(path, list(paths)))
    *parents, leaf = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    node[leaf] = value


# ----- presets ---------------------------------------------------------------------------------


def seed_pipeline() -> RunConfig:
    """The seed's failed run train_00c727f7 (latent 2048, batch 128, 50k steps).

    lr 3e-4, linear warmup 5,000, l1_alpha 0.003 on the mean-over-all L1 (seed line 216), per-sample
    constant_norm_rescale (lines 106-110) and single-batch resampling every 5,000 steps after warmup
    with x*0.1 re-init (lines 926-971)."""
    return RunConfig(
        sae=SAEConfig(d_sae=2048),
        penalty=PenaltyConfig(form="mean_all", alpha=0.003),
        optim=OptimConfig(lr=3e-4),
        schedule=ScheduleConfig(shape="linear_warmup", warmup_steps=5000),
        data=DataConfig(batch_size=128),
        normalize=NormalizeConfig(mode="constant_norm_rescale"),
        resample=ResampleConfig(strategy="seed", detector="single_batch", interval=5000),
        steps=50_000,
        log_interval=100,
    )


def seed_test1() -> RunConfig:
    """The seed's Test 1, its minimal reproduction (latent 256, batch 64, 10k steps).

    l1_alpha 0.003, warmup 500, resampling every 2,500 steps, log every 50; otherwise the seed pipeline."""
    base = seed_pipeline()
    return base.replace(
        sae={"d_sae": 256},
        data={"batch_size": 64},
        schedule={"warmup_steps": 500},
        resample={"interval": 2500},
        steps=10_000,
        log_interval=50,
    )


def seed_fix_changes(base: RunConfig) -> dict[str, Any]:
    """All of the seed's "Expected Fixes" as changes to ``base`` (dotted fields): per-sample-sum L1
    (Fix #1) with alpha rescaled by d_sae (Fix #2), warmup cut to 2% of training (Fix #3), windowed
    dead detection (Fix #4) with the Task 4.2 re-init, and the Task 5.1 clamp on the normalization."""
    return {"penalty.form": "per_sample_sum", "penalty.alpha": base.penalty.alpha * base.sae.d_sae,
            "schedule.warmup_steps": max(1, base.steps // 50), "resample.strategy": "seed-fix", "resample.detector": "window",
            "normalize.mode": "constant_norm_rescale_clamped"}


def seed_fixed() -> RunConfig:
    """All of the seed's "Expected Fixes" applied to Test 1 (``seed_fix_changes``)."""
    base = seed_test1()
    return base.with_overrides(seed_fix_changes(base))


def anthropic_2023() -> RunConfig:
    """Towards Monosemanticity (Bricken et al. 2023) on Test 1's shapes.

    Per-sample L1 sum, constant LR, Anthropic
    neuron resampling (loss-weighted inputs, Adam state reset), unit-norm decoder rows."""
    base = seed_test1()
    return base.replace(
        sae={"decoder_constraint": "unit_norm"},
        penalty={"form": "per_sample_sum", "alpha": 0.003 * base.sae.d_sae},
        schedule={"shape": "constant", "warmup_steps": 0},
        normalize={"mode": "none"},
        resample={"strategy": "anthropic", "detector": "window", "interval": 2500, "after_warmup": False, "reset_adam": True},
    )


def anthropic_april_2024() -> RunConfig:
    """Anthropic's April 2024 training update on Test 1's shapes.

    Decoder-norm-weighted L1 with alpha warmup over the
    first 5% of training, dataset-wide scalar normalization (E||x|| = sqrt(d_in)), tied init, LR
    decaying linearly to 0 over the last 20%, gradient clipping at 1, no resampling."""
    base = seed_test1()
    return base.replace(
        sae={"init": "tied"},
        penalty={"form": "decoder_weighted", "alpha": 5.0, "warmup_steps": base.steps // 20},
        optim={"lr": 5e-5 * 10, "beta1": 0.9, "beta2": 0.999, "grad_clip": 1.0},
        schedule={"shape": "warmup_linear_decay", "warmup_steps": 0, "decay_fraction": 0.2},
        normalize={"mode": "dataset_scalar"},
        resample={"strategy": "off"},
    )


def gao_topk_auxk() -> RunConfig:
    """Gao et al. 2024, TopK with the AuxK loss, on Test 1's shapes.

    Scaling and evaluating sparse autoencoders: TopK, no L1, unit-norm decoder,
    tied init, AuxK with weight 1/32 on latents dead for dead_tokens tokens, no resampling."""
    base = seed_test1()
    return base.replace(
        sae={"architecture": "topk", "k": 16, "decoder_constraint": "unit_norm", "init": "tied"},
        penalty={"form": "none", "alpha": 0.0},
        schedule={"shape": "constant", "warmup_steps": 0},
        normalize={"mode": "dataset_scalar"},
        resample={"strategy": "off"},
        aux={"auxk_coef": 1 / 32, "auxk_k": 64},
    )


PRESETS = {
    "seed-pipeline": seed_pipeline,
    "seed-test1": seed_test1,
    "seed-fixed": seed_fixed,
    "anthropic-2023": anthropic_2023,
    "anthropic-april-2024": anthropic_april_2024,
    "gao-topk-auxk": gao_topk_auxk,
}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}" + _nearest(name, list(PRESETS)))
    return PRESETS[name]()


def preset_summary(name: str) -> str:
    """First paragraph of a preset's docstring, on one line, for ``saelab presets``."""
    doc = (PRESETS[name].__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())
