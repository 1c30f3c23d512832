"""Fixtures made by the real clients: small SAEs trained by SAELens' and sparsify's own code on an
activation file with a planted cause, saved the way each library saves them.

    .venv-sae-lens/bin/python tools/real_clients.py OUT      # SAELens: every architecture it trains
    .venv-sparsify/bin/python tools/real_clients.py OUT      # sparsify: its TopK SparseCoder

Run with the client's own interpreter (the script imports only numpy, torch, safetensors and the
client library, never saelab). It writes, under OUT:

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
- ``sparsify/topk/layers.0``: ``SparseCoder.save_to_disk`` (``cfg.json`` + ``sae.safetensors``),
  and ``sparsify/topk/config.json``, the ``TrainConfig``: where sparsify's Trainer saves them. sparsify's ``Trainer`` runs
  a Hugging Face model for its activations, so the loop here is the Trainer's own step on rows
  from the file: its optimizer and learning rate (signum: ScheduleFree SignSGD), its b_dec start at
  the first batch's mean, its unit-norm decoder and gradient projection, its loss
  ``fvu + auxk_alpha * auxk_loss`` and its tokens-since-fired counter for the dead mask.
- ``manifest.json``: every SAE folder with its library, architecture, the data file and d_in.

Sizes are small (d_in 64, 256 latents, 400 steps of 256 rows): seconds per SAE on a CPU.
"""

from __future__ import annotations

import argparse
import json
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
SAELENS_ARCHS = ("standard", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk", "gated")


# ----- the activations (numpy only) -----------------------------------------------------------


def planted_rows(rows: int = ROWS, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(rows [N, D_IN] float32, offset [D_IN]): power-law sparse features on random unit
    directions, a little noise, and the planted constant offset."""
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
    offset *= OFFSET_NORM * typical / np.linalg.norm(offset)
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


def train_sparsify(x: np.ndarray, out: Path) -> list[dict]:
    """sparsify's Trainer step on rows from the file (see the module docstring); saved as the
    Trainer saves: SparseCoder.save_to_disk and TrainConfig.save_json(config.json)."""
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig, TrainConfig
    from sparsify.sign_sgd import SignSGD

    torch.manual_seed(SEED)
    cfg = TrainConfig(SparseCoderConfig(k=K, num_latents=D_SAE), batch_size=BATCH, auxk_alpha=1 / 32,
                      dead_feature_threshold=DEAD_WINDOW_STEPS * BATCH, log_to_wandb=False, run_name="topk",
                      save_dir=str(out / "sparsify"), hookpoints=["layers.0"])
    sae = SparseCoder(D_IN, cfg.sae, device="cpu", dtype=torch.float32)
    lr = cfg.lr or 5e-3 / (sae.num_latents / (2**14)) ** 0.5  # the Trainer's signum default
    opt = ScheduleFreeWrapper(SignSGD([{"params": sae.parameters(), "lr": lr}]), momentum=0.95)
    opt.train()
    since_fired = torch.zeros(sae.num_latents, dtype=torch.long)
    data = batches(x)
    for step in range(STEPS):
        rows = next(data)
        if step == 0:  # the Trainer centres the preactivations at the first batch
            sae.b_dec.data = rows.mean(0).to(sae.dtype)
        if sae.cfg.normalize_decoder:
            sae.set_decoder_norm_to_unit_norm()
        dead = since_fired > cfg.dead_feature_threshold if cfg.auxk_alpha > 0 else None
        o = sae(x=rows, y=rows, dead_mask=dead)
        (o.fvu + cfg.auxk_alpha * o.auxk_loss + o.multi_topk_fvu / 8).backward()
        if sae.cfg.normalize_decoder:
            sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            fired = torch.zeros(sae.num_latents, dtype=torch.bool)
            fired[o.latent_indices.flatten()] = True
            since_fired += len(rows)
            since_fired[fired] = 0
    opt.eval()  # the Trainer saves the ScheduleFree average, not the training iterate
    run = out / "sparsify" / "topk"  # Trainer.save: <save_dir>/<run_name>/<hookpoint>/ and <run_name>/config.json
    folder = run / cfg.hookpoints[0]
    sae.save_to_disk(folder)
    cfg.save_json(run / "config.json")
    return [{"library": "sparsify", "architecture": "topk", "kind": "final", "folder": str(folder),
             "trainer_dead": int((since_fired > cfg.dead_feature_threshold).sum())}]


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
            done += train_saelens(arch, x, out)
    else:
        done += train_sparsify(x, out)
    for d in done:
        d |= {"data": str(data), "d_in": D_IN, "d_sae": D_SAE, "planted": "offset",
              "offset_norm": float(np.linalg.norm(offset))}
        print(f"real_clients: {d['library']} {d['architecture']} ({d['kind']}) -> {d['folder']} "
              f"[dead by the trainer's own count: {d['trainer_dead']} of {D_SAE}]")
    manifest = out / "manifest.json"
    old = json.loads(manifest.read_text()) if manifest.exists() else []
    keep = [m for m in old if m["folder"] not in {d["folder"] for d in done}]
    manifest.write_text(json.dumps(keep + done, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
