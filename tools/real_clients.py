"""Fixtures made by the real clients: small SAEs trained by SAELens' and sparsify's own code on an
activation file with a planted cause, saved the way each library saves them.

    .venv-sae-lens/bin/python tools/real_clients.py OUT      # SAELens: every architecture it trains
    .venv-sparsify/bin/python tools/real_clients.py OUT      # sparsify: its Trainer, three TopK cases

Run with the client's own interpreter (the script imports only numpy, torch, safetensors and the
client library (and transformers, which sparsify's Trainer needs), never saelab). It writes, under OUT:

- ``acts_offset.npy``: the activations, generated here with numpy (independent of saelab's own
  synthetic source): sparse non-negative features in superposition plus a constant offset whose
  norm is OFFSET_NORM times the typical norm of the features' part. The planted cause is the
  offset: with b_dec started at zero (SAELens 6 and sparsify both start there or at the mean of
  one batch) every latent whose encoder row points against the offset is held below zero.
- ``saelens/<arch>/checkpoint``: what ``SAETrainer`` saves itself (``save_final_checkpoint``): the
  training ``cfg.json`` (architecture, k, aux_loss_coefficient, ... and ``metadata``),
  ``sae_weights.safetensors``, ``sparsity.safetensors``, ``activation_scaler.json`` and its
  ``trainer_state.pt``;
  ``saelens/<arch>/final``: what ``LanguageModelSAERunner.save_final_sae`` saves: the inference
  ``cfg.json`` (BatchTopK and Matryoshka become JumpReLU), the weights, ``sparsity.safetensors`` and
  ``runner_cfg.json`` (the ``LanguageModelSAERunnerConfig`` as JSON, the runner's own to_dict).
  Architectures: standard, topk, batchtopk, jumprelu, matryoshka_batchtopk, and gated (which saelab
  refuses by name).
- ``sparsify/<case>/layers.0``: sparsify's own ``Trainer`` (fit, then its save: ``cfg.json`` +
  ``sae.safetensors`` in the hookpoint's folder, the ``TrainConfig`` as ``sparsify/<case>/config.json``),
  its "model" a PreTrainedModel that looks rows of the file up by index (see ``train_sparsify``).
  Cases: ``topk`` on ``acts_offset.npy`` (the Trainer's mean start removes the offset: not a cause
  there); ``sinks`` on ``acts_sinks.npy``, the planted cause that survives sparsify's training:
  the same features without the offset, 2% of the rows replaced by sink rows (one direction, 100x
  the median norm); ``healthy`` on ``acts_healthy.npy``, the same generator without the sinks (the
  control). For the sink case sparsify also trains once on the file without rows above 10x the
  median norm (saelab's one-factor arm), and the manifest records both dead counts.
- ``manifest.json``: every SAE folder with its library, architecture, the data file and d_in.

Sizes are small (d_in 64, 256 latents, 400 steps of 256 rows): seconds per SAE on a CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)  # tiny matrices: a second thread only adds synchronization (and the CPU is shared)

D_IN = 64
D_SAE = 256
N_FEATURES = 512  # true directions, 8x d_in: superposition
MEAN_ACTIVE = 6.0  # true features active per row, on average
ROWS = 32_768
OFFSET_NORM = 6.0  # the offset's norm over the typical norm of a row's feature part
BATCH = 256
STEPS = 400
K = 8
LR = 1e-3
DEAD_WINDOW_STEPS = 100  # SAELens dead_feature_window (steps); sparsify's threshold is this many batches of tokens
SEED = 0
SINK_FRACTION = 0.02  # the sink case: 2% of rows ...
SINK_NORM = 100.0  # ... at 100x the median row norm, in one direction
SAELENS_ARCHS = ("standard", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk", "gated")


# ----- the activations (numpy only) -----------------------------------------------------------


def planted_rows(rows: int = ROWS, seed: int = SEED, offset_norm: float = OFFSET_NORM) -> tuple[np.ndarray, np.ndarray]:
    """(rows [N, D_IN] float32, offset [D_IN]): power-law sparse features on random unit
    directions, a little noise, and the planted constant offset (none at offset_norm=0)."""
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((N_FEATURES, D_IN))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    p = 1.0 / np.arange(1, N_FEATURES + 1)
    p *= MEAN_ACTIVE / p.sum()
    active = rng.random((rows, N_FEATURES)) < np.minimum(p, 1.0)
    mags = rng.exponential(1.0, (rows, N_FEATURES)) * active
    x = mags @ dirs + 0.01 * rng.standard_normal((rows, D_IN))
    typical = float(np.median(np.linalg.norm(x, axis=1)))
    offset = rng.standard_normal(D_IN)
    offset *= offset_norm * typical / np.linalg.norm(offset)
    return (x + offset).astype(np.float32), offset.astype(np.float32)


def batches(x: np.ndarray, seed: int = SEED):
    """An endless in-memory activation iterator (SAELens' DataProvider): shuffled batches of BATCH rows."""
    g = torch.Generator().manual_seed(seed)
    t = torch.from_numpy(x)
    while True:
        for idx in torch.randperm(len(t), generator=g).split(BATCH):
            if len(idx) == BATCH:
                yield t[idx]


# ----- SAELens --------------------------------------------------------------------------------


def saelens_sae_config(arch: str):
    """The training config of one architecture, at SAELens' defaults except the sizes."""
    from sae_lens.registry import get_sae_training_class

    _, cfg_cls = get_sae_training_class(arch)
    kw: dict = {"d_in": D_IN, "d_sae": D_SAE}
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        kw["k"] = K
    if arch == "matryoshka_batchtopk":
        kw["matryoshka_widths"] = [D_SAE // 4, D_SAE // 2, D_SAE]
    if arch in ("standard", "gated"):
        kw["l1_coefficient"] = 5.0
    if arch == "jumprelu":
        kw["l0_coefficient"] = 1.0
    return cfg_cls(**kw)


def train_saelens(arch: str, x: np.ndarray, out: Path) -> list[dict]:
    """Train one SAE the way ``LanguageModelSAERunner`` does, minus the language model: the runner
    config, its SAETrainer config, SAETrainer.fit on an in-memory iterator, then the runner's final
    save (inference cfg.json, weights, sparsity, runner_cfg.json)."""
    from sae_lens.config import LanguageModelSAERunnerConfig, LoggingConfig
    from sae_lens.constants import RUNNER_CFG_FILENAME, SPARSITY_FILENAME
    from sae_lens.saes.sae import TrainingSAE
    from sae_lens.training.sae_trainer import SAETrainer
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    folder = out / "saelens" / arch
    shutil.rmtree(folder, ignore_errors=True)  # this script's own fixture of an earlier run: trained again from scratch
    runner = LanguageModelSAERunnerConfig(
        sae=saelens_sae_config(arch), model_name="planted-offset", hook_name="blocks.0.hook_resid_post",
        dataset_path="planted/acts_offset.npy", training_tokens=STEPS * BATCH, train_batch_size_tokens=BATCH,
        lr=LR, dead_feature_window=DEAD_WINDOW_STEPS, feature_sampling_window=STEPS // 2,
        logger=LoggingConfig(log_to_wandb=False), checkpoint_path=str(folder / "checkpoints"), save_final_checkpoint=True,
        output_path=str(folder / "final"), n_batches_for_norm_estimate=10, verbose=False, seed=SEED, context_size=16)
    sae = TrainingSAE.from_dict(runner.get_training_sae_cfg_dict())
    for key, value in (("dataset_path", runner.dataset_path), ("hook_name", runner.hook_name),
                       ("model_name", runner.model_name), ("model_class_name", runner.model_class_name),
                       ("context_size", runner.context_size), ("prepend_bos", runner.prepend_bos)):
        setattr(sae.cfg.metadata, key, value)  # what LanguageModelSAERunner._set_sae_metadata records
    trainer = SAETrainer(cfg=runner.to_sae_trainer_config(), sae=sae, data_provider=batches(x))
    sae = trainer.fit()
    final = Path(runner.output_path)
    sae.save_inference_model(str(final))
    save_file({"sparsity": trainer.log_feature_sparsity}, final / SPARSITY_FILENAME)
    (final / RUNNER_CFG_FILENAME).write_text(json.dumps(runner.to_dict()))
    (ckpt,) = Path(runner.checkpoint_path).iterdir()  # final_<samples>, written by SAETrainer itself
    ckpt.rename(folder / "checkpoint")
    Path(runner.checkpoint_path).rmdir()
    dead = int(trainer.dead_neurons.sum())
    return [{"library": "saelens", "architecture": arch, "kind": kind, "folder": str(folder / kind),
             "trainer_dead": dead} for kind in ("checkpoint", "final")]


# ----- sparsify -------------------------------------------------------------------------------


def sink_rows(rows: int = ROWS, seed: int = SEED, fraction: float = SINK_FRACTION) -> np.ndarray:
    """The sink case's rows [N, D_IN] float32: the same features as ``planted_rows`` without the
    offset, and ``fraction`` of the rows replaced by sinks: one fixed direction at SINK_NORM times
    the median row norm plus 1% noise (attention sinks, BOS positions). fraction=0: the healthy
    control, the same generator without the planted cause."""
    x, _ = planted_rows(rows, seed, offset_norm=0.0)
    rng = np.random.default_rng(seed + 1)
    med = float(np.median(np.linalg.norm(x, axis=1)))
    v = rng.standard_normal(D_IN)
    v /= np.linalg.norm(v)
    sinks = rng.random(rows) < fraction
    x[sinks] = SINK_NORM * med * v + 0.01 * med * rng.standard_normal((int(sinks.sum()), D_IN))
    return x.astype(np.float32)


def train_sparsify(case: str, x: np.ndarray, out: Path) -> tuple[Path, int]:
    """sparsify's own Trainer (Trainer.fit, Trainer.save) on rows of ``x``. Its model is a
    transformers PreTrainedModel whose one layer looks rows up by index: a "token" is a row of the
    file, a sequence is one row (ctx_len 1, so TrainConfig.batch_size counts rows, as saelab reads
    it), and the dataset is STEPS x BATCH row indices in shuffled order (sparsify's CLI shuffles
    the dataset; the Trainer reads it in order). Everything else is the Trainer's: its signum
    optimizer and default lr, b_dec started at the first batch's mean, the unit-norm decoder,
    the AuxK loss on latents silent for dead_feature_threshold tokens, its tokens-since-fired
    counter. Saved where Trainer.save puts it: <save_dir>/<run_name>/layers.0/ (cfg.json,
    sae.safetensors) and <run_name>/config.json. Returns (the SAE's folder, dead latents by the
    Trainer's own count at the end)."""
    from sparsify import SparseCoderConfig, TrainConfig, Trainer
    from transformers import PretrainedConfig, PreTrainedModel

    class RowsConfig(PretrainedConfig):
        model_type = "rows"

    class Rows(PreTrainedModel):
        config_class = RowsConfig

        def __init__(self, acts: np.ndarray):
            super().__init__(RowsConfig(num_hidden_layers=1))
            self.layers = torch.nn.ModuleList([torch.nn.Embedding.from_pretrained(torch.from_numpy(acts), freeze=True)])

        def forward(self, input_ids, **_):
            return self.layers[0](input_ids)

    class Sequences(torch.utils.data.Dataset):
        def __init__(self, ids: np.ndarray):
            self.ids = torch.from_numpy(ids).reshape(-1, 1)

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": self.ids[i]}

    g = np.random.default_rng(SEED)
    need = STEPS * BATCH
    ids = np.concatenate([g.permutation(len(x)) for _ in range(-(-need // len(x)))])[:need]
    cfg = TrainConfig(SparseCoderConfig(k=K, num_latents=D_SAE), batch_size=BATCH, auxk_alpha=1 / 32,
                      dead_feature_threshold=DEAD_WINDOW_STEPS * BATCH, log_to_wandb=False, run_name=case,
                      save_dir=str(out / "sparsify"), hookpoints=["layers.0"], init_seeds=[SEED], save_every=10**9)
    trainer = Trainer(cfg, Sequences(ids), Rows(x))
    trainer.fit()  # ends with Trainer.save
    dead = int((trainer.num_tokens_since_fired["layers.0"] > cfg.dead_feature_threshold).sum())
    return out / "sparsify" / case / "layers.0", dead


def sparsify_cases(out: Path) -> list[dict]:
    """The offset case (the Trainer's mean start removes it), the sink case (planted: sinks kill
    latents in sparsify's own run), its healthy control, and, for the record, sparsify's own run on
    the sink file without the rows above 10x the median norm (saelab's one-factor arm; not saved
    as a fixture)."""
    x, offset = planted_rows()
    folder, dead = train_sparsify("topk", x, out)
    done = [{"architecture": "topk", "folder": str(folder), "trainer_dead": dead, "data": str(out / "acts_offset.npy"),
             "planted": "offset", "offset_norm": float(np.linalg.norm(offset))}]
    for case, fraction in (("sinks", SINK_FRACTION), ("healthy", 0.0)):
        x = sink_rows(fraction=fraction)
        data = out / f"acts_{case}.npy"
        np.save(data, x)
        folder, dead = train_sparsify(case, x, out)
        entry = {"architecture": "topk", "case": case, "folder": str(folder), "trainer_dead": dead, "data": str(data),
                 "planted": "sinks" if fraction else "none"}
        if fraction:
            norms = np.linalg.norm(x, axis=1)
            kept = x[norms <= 10 * np.median(norms)]
            _, entry["trainer_dead_without_cause"] = train_sparsify("sinks_dropped", kept, out / "arm")
            shutil.rmtree(out / "arm")
        done.append(entry)
    return [d | {"library": "sparsify", "kind": "final"} for d in done]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the activation file and the SAEs (made if absent)")
    ap.add_argument("--only", nargs="*", default=None, help="SAELens architectures to train (default: all)")
    args = ap.parse_args()
    try:
        import sae_lens  # noqa: F401

        library = "saelens"
    except ImportError:
        try:
            import sparsify  # noqa: F401

            library = "sparsify"
        except ImportError:
            print("real_clients: error: neither sae_lens nor sparsify imports in this interpreter", file=sys.stderr)
            return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    x, offset = planted_rows()
    data = out / "acts_offset.npy"
    if not data.exists():
        np.save(data, x)
    done: list[dict] = []
    if library == "saelens":
        for arch in args.only or SAELENS_ARCHS:
            done += [d | {"data": str(data), "planted": "offset", "offset_norm": float(np.linalg.norm(offset))}
                     for d in train_saelens(arch, x, out)]
    else:
        done += sparsify_cases(out)
    for d in done:
        d |= {"d_in": D_IN, "d_sae": D_SAE}
        extra = f"; without the cause: {d['trainer_dead_without_cause']}" if "trainer_dead_without_cause" in d else ""
        print(f"real_clients: {d['library']} {d['architecture']} ({d['kind']}, planted {d['planted']}) -> {d['folder']} "
              f"[dead by the trainer's own count: {d['trainer_dead']} of {D_SAE}{extra}]")
    manifest = out / "manifest.json"
    old = json.loads(manifest.read_text()) if manifest.exists() else []
    keep = [m for m in old if m["folder"] not in {d["folder"] for d in done}]
    manifest.write_text(json.dumps(keep + done, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
