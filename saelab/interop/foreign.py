"""Other libraries' SAEs, loaded read-only as saelab models: SAELens, EleutherAI sparsify,
dictionary_learning, and saelab's own run directories. Nothing is ever unpickled.

On-disk formats and forward math, read from each library's source (facts only):

- SAELens (jbloomAus/SAELens, sae_lens/saes/*.py, constants.py): ``cfg.json`` + ``sae_weights.safetensors``
  with W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]; ``architecture`` in
  standard | topk | jumprelu (+ ``threshold`` [d_sae]) | batchtopk (a training checkpoint, + scalar
  ``topk_threshold``; SAELens saves it for inference as jumprelu with that threshold). Encode:
  pre = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc; standard relu(pre); jumprelu
  relu(pre) * (pre > threshold); topk: topk(pre, k) then relu. ``rescale_acts_by_decoder_norm``
  (topk/batchtopk) multiplies pre by ||W_dec row|| and divides the codes by it before decoding,
  which is the same map as folding the norms into W_enc, b_enc and W_dec (SAELens
  ``_fold_norm_topk``). Decode: acts @ W_dec + b_dec. Configs before 6.0 use ``activation_fn`` /
  ``activation_fn_kwargs.k`` instead of ``architecture`` (SAELens ``handle_pre_6_0_config``).
- sparsify (EleutherAI/sparsify, sparse_coder.py, fused_encoder.py): ``cfg.json`` (d_in, k,
  num_latents or expansion_factor, activation, transcode, skip_connection) + ``sae.safetensors`` with
  encoder.weight [S, d_in], encoder.bias [S], W_dec [S, d_in], b_dec [d_in]. Encode: pre_acts =
  relu((x - b_dec) @ encoder.weight^T + encoder.bias), then top-k; decode: sum of the k W_dec rows
  weighted by their acts, + b_dec.
- dictionary_learning (saprmarks/dictionary_learning, dictionary.py, trainers/top_k.py,
  batch_top_k.py): ``ae.pt`` (a state dict of tensors, read with torch.load(weights_only=True)) and
  ``config.json`` {"trainer": {"dict_class", "activation_dim", "dict_size", "k", ...}}. AutoEncoder:
  bias [d], encoder.weight [S, d], encoder.bias [S], decoder.weight [d, S]; relu(enc(x - bias)),
  dec(f) + bias. AutoEncoderTopK / BatchTopKSAE: b_dec, encoder.*, decoder.weight, k, threshold;
  relu(enc(x - b_dec)) then top-k (TopK) or * (relu > threshold) (BatchTopK). JumpReluAutoEncoder:
  W_enc [d, S], b_enc, W_dec [S, d], b_dec, threshold; relu(pre * (pre > threshold)) with
  pre = x @ W_enc + b_enc (no b_dec subtraction). A trained ae.pt already takes raw activations:
  training.py scales the biases back by the norm factor before saving (``scale_biases``).
- saelab: a run directory (``config.json`` + ``sae.safetensors``, saelab.training.runs); its input
  normalization is applied before the model (dataset_scalar from the step-0 norm_stats event).
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from saelab.config import RunConfig, SAEConfig
from saelab.fileio import missing, read_jsonl
from saelab.interop.fields import check_known
from saelab.interop.saelens_config import flat_fields
from saelab.interop.sparsify_config import trainer_config
from saelab.training.models import SAE, build
from saelab.training.normalize import Normalizer
from saelab.training.runs import read_tensors

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


@dataclass(frozen=True)
class Weights:
    """One SAE's parameters in saelab's layout (rows are latents), float32.

    W_enc [S, d]; b_enc [S] (the bias added after W_enc x_in); W_dec [S, d]; b_dec [d].
    ``apply_b_dec`` says whether the encoder sees x - b_dec. ``threshold`` is the per-latent
    JumpReLU threshold [S] or the BatchTopK scalar threshold [] (None otherwise)."""

    architecture: str  # saelab architecture: relu | topk | batchtopk | jumprelu
    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    apply_b_dec: bool
    k: int = 1
    threshold: Tensor | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A loaded SAE: a one-arm saelab model in eval mode, and what turns raw rows into its input.

    ``encode``/``reconstruct`` take raw activations [B, d_in]; ``normalizer`` (saelab runs only,
    None otherwise) is applied first and undone after decoding."""

    model: SAE
    format: str  # saelens | sparsify | dictionary_learning | saelab
    path: Path
    library_architecture: str  # the library's own name, e.g. "standard", "AutoEncoderTopK"
    normalizer: Normalizer | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # how it was trained, as far as its files say (saelens_training, sparsify_training): inspect
    # never recommends a remedy listed here, and says why it did not suffice
    trained: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.model.cfg.architecture

    @property
    def d_in(self) -> int:
        return self.model.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.model.cfg.d_sae

    def model_input(self, x: Tensor) -> Tensor:
        """Raw rows [B, d] -> the rows the model sees (normalized for saelab runs)."""
        return x if self.normalizer is None else self.normalizer(x)[0]

    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw rows [B, d] -> (pre [B, S], acts [B, S])."""
        pre, acts = self.model.encode(self.model_input(x.float()).unsqueeze(0))
        return pre[0], acts[0]

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Raw rows [B, d] -> reconstruction [B, d] in the raw space."""
        x = x.float()
        if self.normalizer is None:
            return self.model.decode(self.model.encode(x.unsqueeze(0))[1])[0]
        n, info = self.normalizer(x)
        return self.normalizer.inverse(self.model.decode(self.model.encode(n.unsqueeze(0))[1])[0], info)


def _fail(path: Path, problem: str) -> ValueError:
    return ValueError(f"checkpoint {path}: {problem}")


def check_finite(tensors: dict[str, Tensor], path: Path) -> None:
    """Refuse weights holding NaN or Inf, naming the tensor and its latents (rows of a [S, d]
    tensor or entries of a [S] one): a NaN latent never compares above its gate, so it would be
    reported dead (or, in the decoder, counted alive) with a confidence nothing supports."""
    for name, t in tensors.items():
        if t is None or not t.is_floating_point():
            continue
        bad = ~torch.isfinite(t)
        if not bad.any():
            continue
        if name == "b_dec" or t.ndim == 0:
            raise _fail(path, f"{name} holds NaN or Inf; the weights are damaged")
        rows = bad.reshape(bad.shape[0], -1).any(-1).nonzero().flatten().tolist()
        which = f"latent {rows[0]}" if len(rows) == 1 else f"latents {', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''}"
        raise _fail(path, f"{name} holds NaN or Inf in {which} ({len(rows)} of {t.shape[0]} latents); the weights are "
                          f"damaged and no latent's state can be read from them")


def to_model(w: Weights, path: Path) -> SAE:
    """Build the one-arm saelab model holding ``w`` (eval mode, no gradients)."""
    S, d = w.W_enc.shape
    for name, t, shape in (("W_dec", w.W_dec, (S, d)), ("b_enc", w.b_enc, (S,)), ("b_dec", w.b_dec, (d,))):
        if tuple(t.shape) != shape:
            raise _fail(path, f"{name} has shape {list(t.shape)} but W_enc implies {list(shape)} (d_sae={S}, d_in={d})")
    if w.threshold is not None and w.threshold.ndim >= 1 and tuple(w.threshold.shape) != (S,):  # [] is BatchTopK's scalar
        raise _fail(path, f"threshold has shape {list(w.threshold.shape)} but there are {S} latents (expected [{S}])")
    check_finite({"W_enc": w.W_enc, "b_enc": w.b_enc, "W_dec": w.W_dec, "b_dec": w.b_dec, "threshold": w.threshold}, path)
    if w.architecture in ("topk", "batchtopk") and not 1 <= w.k <= S:
        raise _fail(path, f"k={w.k} must be between 1 and the number of latents, d_sae={S}")
    cfg = SAEConfig(architecture=w.architecture, d_in=d, d_sae=S, k=min(max(w.k, 1), S), apply_b_dec_to_input=w.apply_b_dec)
    model = build(cfg, n_arms=1)
    with torch.no_grad():
        model.W_enc.copy_(w.W_enc.float()[None])
        model.b_enc.copy_(w.b_enc.float()[None])
        model.W_dec.copy_(w.W_dec.float()[None])
        model.b_dec.copy_(w.b_dec.float()[None])
        if w.architecture == "jumprelu":
            # saelab's JumpReLU is relu(pre) * (relu(pre) > theta); a threshold <= 0 behaves as 0 in
            # every library (relu first), so clamping keeps the map exact (log 0 = -inf, exp -> 0)
            model.log_threshold.copy_(w.threshold.float().clamp_min(0).log()[None])
        if w.architecture == "batchtopk":
            model.threshold.fill_(float(w.threshold))
            model.threshold_set.fill_(True)
    model.eval()
    model.requires_grad_(False)
    return model


def fold_decoder_norms(w: Weights) -> Weights:
    """SAELens' rescale_acts_by_decoder_norm made exact in the weights (SAELens _fold_norm_topk):
    W_enc, b_enc (and a per-latent threshold) times ||W_dec row||, W_dec rows divided by it."""
    n = w.W_dec.norm(dim=-1)
    thr = w.threshold * n if w.threshold is not None and w.threshold.ndim == 1 else w.threshold
    return replace(w, W_enc=w.W_enc * n[:, None], b_enc=w.b_enc * n, W_dec=w.W_dec / n[:, None], threshold=thr)


# ----- reading files --------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
        raise _fail(path.parent, f"{path.name} is not a regular file")
    try:
        obj = json.loads(path.read_text())
    except OSError as e:
        if path.is_symlink() or not path.exists():
            raise _fail(path.parent, f"{path.name} {missing(path)}") from None
        raise _fail(path.parent, f"{path.name} cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path.parent, f"{path.name} is not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise _fail(path.parent, f"{path.name} holds a {type(obj).__name__}, not a JSON object")
    return obj


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    if path.is_symlink() and not path.exists():
        raise _fail(path.parent, f"{path.name} {missing(path)}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise _fail(path.parent, f"{path.name} is not a readable safetensors file ({str(e).splitlines()[0]})") from None


def read_pt_state(path: Path) -> dict[str, Tensor]:
    """A state dict from a .pt file through torch.load(weights_only=True); anything that needs a
    full unpickler is refused, never loaded."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _fail(path.parent, f"{path.name} holds objects other than tensors; refused: saelab loads .pt files only "
                                 f"with torch.load(weights_only=True) and never unpickles") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise _fail(path.parent, f"{path.name} could not be read by torch.load(weights_only=True): {str(e).splitlines()[0]}") from None
    if isinstance(obj, dict) and isinstance(obj.get("ae"), dict):  # dictionary_learning's resume backup
        obj = obj["ae"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise _fail(path.parent, f"{path.name} is not a state dict of tensors")
    return obj


def _field(cfg: dict[str, Any], key: str, kind: str, default: Any = None, file: str = "cfg.json") -> Any:
    """``cfg[key]`` checked to be of ``kind`` (int | str | bool | dict), ``default`` when absent or
    null; anything else is a ValueError naming the field and its value ("32" is not an int: a
    string there means the file was not written by the library it claims)."""
    v = cfg.get(key)
    if v is None:
        return default
    ok = {"int": isinstance(v, int) and not isinstance(v, bool), "str": isinstance(v, str), "bool": isinstance(v, bool),
          "dict": isinstance(v, dict)}[kind]
    if not ok:
        want = {"int": "an integer", "str": "a string", "bool": "true or false (a JSON boolean)", "dict": "an object"}[kind]
        raise ValueError(f"{file} {key}={v!r} must be {want}")
    return v


def _need(sd: dict[str, Tensor], keys: tuple[str, ...], path: Path, what: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise _fail(path, f"{what} weights lack {missing}; found {sorted(sd)}")


def _check_dims(w: Weights, d_in: int | None, d_sae: int | None, path: Path, cfg_name: str) -> None:
    S, d = w.W_enc.shape
    if d_in is not None and d != d_in:
        raise _fail(path, f"{cfg_name} says d_in={d_in} but the weights have d_in={d} (W_enc {list(w.W_enc.shape)})")
    if d_sae is not None and S != d_sae:
        raise _fail(path, f"{cfg_name} says d_sae={d_sae} but the weights have {S} latents (W_enc {list(w.W_enc.shape)})")


# ----- SAELens --------------------------------------------------------------------------------

SAELENS_ARCHS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk",
                 "matryoshka_batchtopk": "batchtopk"}  # a Matryoshka checkpoint encodes as BatchTopK


def saelens_architecture(cfg: dict[str, Any]) -> tuple[str, int | None]:
    """(architecture, k or None) from a SAELens cfg.json, old (< 6.0, activation_fn) or new; a
    field of the wrong type is a ValueError naming it."""
    arch = _field(cfg, "architecture", "str")
    k = _field(cfg, "k", "int")
    if arch is None or arch == "standard":
        fn = _field(cfg, "activation_fn", "str") or _field(cfg, "activation_fn_str", "str", "relu")
        kw = _field(cfg, "activation_fn_kwargs", "dict", {})
        if fn == "topk" and kw.get("k") is not None:  # SAELens handle_pre_6_0_config
            arch, k = "topk", _field(kw, "k", "int", file="cfg.json activation_fn_kwargs:")
        elif fn not in (None, "relu"):
            return f"standard with activation_fn={fn!r}", 0
    return arch or "standard", k


def load_saelens(path: Path) -> Checkpoint:
    cfg = _read_json(path / "cfg.json")
    try:
        arch, k = saelens_architecture(cfg)
        if not isinstance(cfg.get("normalize_activations"), bool):  # true / false: SAELens < 3's flag
            _field(cfg, "normalize_activations", "str")
        apply_b_dec = _field(cfg, "apply_b_dec_to_input", "bool", True)
        d_in, d_sae = _field(cfg, "d_in", "int"), _field(cfg, "d_sae", "int")
    except ValueError as e:
        raise _fail(path, str(e)) from None
    if arch not in SAELENS_ARCHS:
        raise _fail(path, f"SAELens architecture {arch!r} is not supported; supported: {sorted(SAELENS_ARCHS)}")
    try:  # a field from a newer SAELens could change the forward pass (docs/interop-fields.md)
        check_known("SAELens", flat_fields(cfg))
    except ValueError as e:
        raise _fail(path, f"cfg.json: {e}") from None
    norm = cfg.get("normalize_activations", "none")
    norm = {False: "none", True: "expected_average_only_in", None: "none"}.get(norm, norm)
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise _fail(path, f"normalize_activations={norm!r} rescales every row at run time; saelab loads only "
                          f"'none' or 'expected_average_only_in' SAELens SAEs")
    if cfg.get("finetuning_scaling_factor"):
        raise _fail(path, "finetuning_scaling_factor=true is not supported")
    if arch in ("topk", "batchtopk") and k is None:
        raise _fail(path, f"cfg.json has architecture {arch!r} but no k")
    sd = _read_safetensors(path / "sae_weights.safetensors")
    _need(sd, ("W_enc", "b_enc", "W_dec", "b_dec"), path, "SAELens")
    if sd["W_enc"].ndim != 2 or sd["W_dec"].ndim != 2:
        raise _fail(path, f"W_enc {list(sd['W_enc'].shape)} and W_dec {list(sd['W_dec'].shape)} must be 2-D")
    thr = None
    if arch == "jumprelu":
        _need(sd, ("threshold",), path, "SAELens jumprelu")
        thr = sd["threshold"].float()
    if SAELENS_ARCHS[arch] == "batchtopk":
        _need(sd, ("topk_threshold",), path, f"SAELens {arch}")
        thr = sd["topk_threshold"].double().reshape(())
    w = Weights(SAELENS_ARCHS[arch], sd["W_enc"].float().T, sd["b_enc"].float(), sd["W_dec"].float(), sd["b_dec"].float(),
                apply_b_dec=apply_b_dec, k=1 if k is None else k, threshold=thr)
    _check_dims(w, d_in, d_sae, path, "cfg.json")
    notes = []
    if SAELENS_ARCHS[arch] in ("topk", "batchtopk") and cfg.get("rescale_acts_by_decoder_norm", arch != "topk"):
        w = fold_decoder_norms(w)
        notes.append("rescale_acts_by_decoder_norm folded into the weights (SAELens _fold_norm_topk)")
    if norm == "expected_average_only_in":
        notes.append("normalize_activations='expected_average_only_in': SAELens' own forward pass does not scale the "
                     "input either; give activations scaled as in training")
    return Checkpoint(to_model(w, path), "saelens", path, arch, notes=tuple(notes), trained=saelens_training(cfg, path))


def saelens_training(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """What a SAELens checkpoint says about its training: cfg.json's training fields (top level in
    a trainer checkpoint, metadata.training_architecture_details in an inference save), the
    runner_cfg.json beside it when the runner wrote one, and the trainer's own dead count."""
    d = flat_fields(cfg)
    runner = path / "runner_cfg.json"
    if runner.is_file():
        d = {**d, **{k: v for k, v in flat_fields(_read_json(runner)).items() if k not in d}}
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    arch = d.get("architecture") or "standard"
    out: dict[str, Any] = {"library": "saelens", "training_architecture": arch,
                           "apply_b_dec_to_input": bool(d.get("apply_b_dec_to_input", True)),
                           "b_dec_start": d.get("b_dec_init_method") or "zeros",  # SAELens 6 starts b_dec at zero
                           "dead_feature_window_steps": d.get("dead_feature_window"),
                           "num_dead_features": meta.get("num_dead_features"), "l0": meta.get("l0")}
    coef = d.get("aux_loss_coefficient")
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk") and coef:
        window = d.get("dead_feature_window")
        out["auxk"] = {"coefficient": float(coef), "k_aux": int(d["d_in"]) // 2 if d.get("d_in") else None,
                       "dead_after": f"silent for {window} steps" if window else
                       "silent for dead_feature_window steps (not saved in cfg.json; SAELens' default is 1000)"}
    if d.get("use_ghost_grads"):
        out["ghost_grads"] = True
    return out


def sparsify_training(path: Path, d_in: int) -> dict[str, Any]:
    """What a sparsify SAE's folder says about its training: the Trainer's config.json when it is
    there, in the folder or the run folder above it (auxk_alpha, dead_feature_threshold). b_dec
    always starts at the first batch's mean."""
    found = trainer_config(path)
    train = _read_json(found) if found is not None else {}
    out: dict[str, Any] = {"library": "sparsify", "training_architecture": "topk", "apply_b_dec_to_input": True,
                           "b_dec_start": "the first batch's mean", "config_json": bool(train)}
    alpha = train.get("auxk_alpha")
    if alpha:
        out["auxk"] = {"coefficient": float(alpha), "k_aux": d_in // 2,
                       "dead_after": f"silent for {int(train.get('dead_feature_threshold', 10_000_000)):,} tokens"}
    return out


# ----- sparsify -------------------------------------------------------------------------------


def load_sparsify(path: Path) -> Checkpoint:
    cfg = _read_json(path / "cfg.json")
    if "d_in" not in cfg:
        raise _fail(path, "sparsify cfg.json has no d_in")
    try:
        if _field(cfg, "d_in", "int") is None:
            raise ValueError("cfg.json d_in=None must be an integer")
        if "k" in cfg and _field(cfg, "k", "int") is None:
            raise ValueError("cfg.json k=None must be an integer")
        for key in ("num_latents", "expansion_factor"):
            _field(cfg, key, "int")
        _field(cfg, "activation", "str")
        check_known("sparsify", cfg)
    except ValueError as e:
        raise _fail(path, f"cfg.json: {e}" if not str(e).startswith("cfg.json") else str(e)) from None
    act = cfg.get("activation", "topk")
    if act != "topk":
        raise _fail(path, f"sparsify activation {act!r} is not supported; supported: ['topk']")
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise _fail(path, "sparsify transcoders and skip connections are not supported (an SAE reconstructs its input)")
    d_in = int(cfg["d_in"])
    d_sae = int(cfg.get("num_latents") or 0) or d_in * int(cfg.get("expansion_factor", 32))
    sd = _read_safetensors(path / "sae.safetensors")
    _need(sd, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), path, "sparsify")
    w = Weights("topk", sd["encoder.weight"].float(), sd["encoder.bias"].float(), sd["W_dec"].float(), sd["b_dec"].float(),
                apply_b_dec=True, k=int(cfg.get("k", 32)))
    _check_dims(w, d_in, d_sae, path, "cfg.json")
    if w.k > d_sae:
        raise _fail(path, f"cfg.json k={w.k} exceeds num_latents={d_sae}")
    return Checkpoint(to_model(w, path), "sparsify", path, "topk", trained=sparsify_training(path, d_in))


# ----- dictionary_learning --------------------------------------------------------------------

DL_CLASSES = {"AutoEncoder": "relu", "AutoEncoderNew": "relu", "AutoEncoderTopK": "topk", "BatchTopKSAE": "batchtopk",
              "JumpReluAutoEncoder": "jumprelu", "MatryoshkaBatchTopKSAE": "batchtopk"}


def load_dictionary_learning(path: Path) -> Checkpoint:
    sd = read_pt_state(path / "ae.pt")
    trainer = {}
    if (path / "config.json").exists():
        trainer = _read_json(path / "config.json").get("trainer", {})
    try:
        if not isinstance(trainer, dict):
            raise ValueError(f"config.json trainer={trainer!r} must be an object")
        for key in ("activation_dim", "dict_size", "k"):
            _field(trainer, key, "int", file="config.json trainer")
        cls = _field(trainer, "dict_class", "str", file="config.json trainer") or _guess_dl_class(sd)
    except ValueError as e:
        raise _fail(path, str(e)) from None
    if cls not in DL_CLASSES:
        raise _fail(path, f"dictionary_learning dict_class {cls!r} is not supported; supported: {sorted(DL_CLASSES)}")
    arch = DL_CLASSES[cls]
    if cls == "AutoEncoder":
        _need(sd, ("bias", "encoder.weight", "encoder.bias", "decoder.weight"), path, cls)
        w = Weights(arch, sd["encoder.weight"], sd["encoder.bias"], sd["decoder.weight"].T, sd["bias"], apply_b_dec=True)
    elif cls == "AutoEncoderNew":
        _need(sd, ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"), path, cls)
        w = Weights(arch, sd["encoder.weight"], sd["encoder.bias"], sd["decoder.weight"].T, sd["decoder.bias"], apply_b_dec=False)
    elif cls == "JumpReluAutoEncoder":
        _need(sd, ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"), path, cls)
        w = Weights(arch, sd["W_enc"].T, sd["b_enc"], sd["W_dec"], sd["b_dec"], apply_b_dec=False, threshold=sd["threshold"])
    elif cls == "MatryoshkaBatchTopKSAE":
        _need(sd, ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "k"), path, cls)
        w = Weights(arch, sd["W_enc"].T, sd["b_enc"], sd["W_dec"], sd["b_dec"], apply_b_dec=True,
                    k=int(sd["k"]), threshold=sd["threshold"].double().reshape(()))
    else:  # AutoEncoderTopK, BatchTopKSAE
        _need(sd, ("b_dec", "encoder.weight", "encoder.bias", "decoder.weight", "k"), path, cls)
        thr = sd["threshold"].double().reshape(()) if "threshold" in sd else torch.tensor(-1.0, dtype=torch.float64)
        w = Weights(arch, sd["encoder.weight"], sd["encoder.bias"], sd["decoder.weight"].T, sd["b_dec"], apply_b_dec=True,
                    k=int(sd["k"]), threshold=thr)
    w = replace(w, W_enc=w.W_enc.float(), b_enc=w.b_enc.float(), W_dec=w.W_dec.float(), b_dec=w.b_dec.float())
    if w.W_enc.ndim != 2:
        raise _fail(path, f"encoder weight has shape {list(w.W_enc.shape)}; expected 2-D")
    _check_dims(w, trainer.get("activation_dim"), trainer.get("dict_size"), path, "config.json")
    return Checkpoint(to_model(w, path), "dictionary_learning", path, cls)


def _guess_dl_class(sd: dict[str, Tensor]) -> str:
    """dict_class from the state-dict keys when config.json is absent."""
    if "threshold" in sd and "W_enc" in sd:
        return "JumpReluAutoEncoder"
    if "bias" in sd:
        return "AutoEncoder"
    if "decoder.bias" in sd:
        return "AutoEncoderNew"
    return "AutoEncoderTopK" if "k" in sd else "unknown (no config.json and unrecognised state-dict keys)"


# ----- saelab runs ----------------------------------------------------------------------------


def run_weights(path: Path) -> tuple[Any, dict[str, Tensor]]:
    """(RunConfig, weights) of a saelab run directory, with its shapes checked."""
    try:
        cfg = RunConfig.from_json((path / "config.json").read_text())
    except (ValueError, TypeError) as e:
        raise _fail(path, f"config.json is not a saelab config ({str(e).splitlines()[0]})") from None
    if not (path / "sae.safetensors").exists():
        raise _fail(path, "saelab run has no sae.safetensors (training did not finish?)")
    sd = read_tensors(path / "sae.safetensors")
    S, d = cfg.sae.d_sae, cfg.sae.d_in
    _need(sd, ("W_enc", "b_enc", "W_dec", "b_dec"), path, "saelab")
    if tuple(sd["W_enc"].shape) != (S, d) or tuple(sd["W_dec"].shape) != (S, d):
        raise _fail(path, f"config.json says d_sae={S}, d_in={d} but W_enc is {list(sd['W_enc'].shape)}")
    check_finite({k: v for k, v in sd.items() if k in ("W_enc", "b_enc", "W_dec", "b_dec", "log_threshold", "threshold")},
                 path)
    return cfg, sd


def dataset_scalar(path: Path) -> float:
    """The fitted dataset_scalar coefficient sqrt(d_in)/E||x|| of a saelab run, from its step-0
    norm_stats event (coef_min = coef_max = the scalar; train._Lockstep.initial writes it)."""
    for e in read_jsonl(path / "events.jsonl"):
        if e.get("kind") == "norm_stats" and e.get("mode") == "dataset_scalar" and e.get("coef_min"):
            return float(e["coef_min"])
    raise _fail(path, "normalize.mode=dataset_scalar but events.jsonl has no norm_stats event with the fitted scalar")


def load_saelab(path: Path) -> Checkpoint:
    cfg, sd = run_weights(path)
    model = build(cfg.sae, n_arms=1)
    try:  # arm_state dropped the arm dimension of every parameter and buffer
        model.load_state_dict({k: v.unsqueeze(0) for k, v in sd.items()})
    except RuntimeError as e:
        raise _fail(path, f"sae.safetensors does not match config.json ({str(e).splitlines()[0]})") from None
    model.eval()
    model.requires_grad_(False)
    mode = cfg.normalize.mode
    if mode == "whitening":  # its fitted mean and W live only in the training checkpoint, not in the run's files
        raise _fail(path, "normalize.mode=whitening: the fitted whitening map is not saved with the run, so its SAE "
                          "cannot be applied to raw activations here")
    normalizer = Normalizer(mode, cfg.sae.d_in, clamp_min=cfg.normalize.clamp_min) if mode != "none" else None
    if mode == "dataset_scalar":
        c = dataset_scalar(path)
        normalizer.load_state_dict({"mode": mode, "d_in": cfg.sae.d_in, "scalar": c, "mean_norm": math.sqrt(cfg.sae.d_in) / c})
    return Checkpoint(model, "saelab", path, cfg.sae.architecture, normalizer=normalizer)


# ----- dispatch -------------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """saelens | sparsify | dictionary_learning | saelab for a checkpoint folder; raises naming the
    missing file when the folder is none of them."""
    files = {p.name for p in path.iterdir()}
    if "cfg.json" in files:
        if "sae_weights.safetensors" in files:
            return "saelens"
        if "sae.safetensors" in files:
            return "sparsify"
        raise _fail(path, "has cfg.json but neither sae_weights.safetensors (SAELens) nor sae.safetensors (sparsify)")
    if "ae.pt" in files:
        return "dictionary_learning"
    if "config.json" in files:
        if not (path / "config.json").is_file():
            raise _fail(path, "config.json is not a regular file")
        try:
            trainer = json.loads((path / "config.json").read_text()).get("trainer")
        except (OSError, ValueError, AttributeError):
            trainer = None
        if trainer is not None:
            raise _fail(path, "has a dictionary_learning config.json but no ae.pt")
        return "saelab"
    raise _fail(path, "is not a checkpoint: expected cfg.json + sae_weights.safetensors (SAELens), cfg.json + "
                      "sae.safetensors (sparsify), ae.pt + config.json (dictionary_learning) or a saelab run directory")


LOADERS = {"saelens": load_saelens, "sparsify": load_sparsify, "dictionary_learning": load_dictionary_learning,
           "saelab": load_saelab}


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load an SAE checkpoint folder (or a file inside one) of any supported library."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise _fail(p, "is a pickle file; refused: saelab never unpickles (save a state dict of tensors or safetensors)")
        p = p.parent
    if not p.exists():
        raise _fail(p, missing(p, "no such file or folder"))
    return LOADERS[detect_format(p)](p)
