"""saelab's training step next to overcomplete's, SAELens', EleutherAI sparsify's and
dictionary_learning's, on the same activations, in one run.

    .venv/bin/python benchmarks/compare_peers.py --setup     # once: the peers' virtual environments
    .venv/bin/python benchmarks/compare_peers.py             # configs a and b, 5 timed runs each

Configs (issue 5):
  a  ReLU + L1, d_in 768, latent 2048, batch 128 (the seed's)
  b  TopK k = 32, d_in 768, latent 16384, batch 1024

Each trainer runs in its own process (the peers in their own virtual environments) and loads the
same activations, generated once by saelab's synthetic source and saved to a temporary file. The
coordinator runs one timed run per trainer per round, rotating the order each round, so the
trainers share the machine's conditions; the first round is a warm-up. In the same rounds it times
torch.mm at the step's five shapes (the matmul limit). Per trainer: median steps/s, GFLOP/s and
fraction of the limit, and saelab's speed over each peer (per round and the median).

FLOPs (benchmarks/_harness.py step_flops): forward x W_enc^T and codes W_dec; backward dW_dec =
codes^T g, g_codes = g W_dec^T, dW_enc = g_pre^T x (the input needs no gradient): 5 products of
2 B S d each, 10 B S d per step. Element-wise work is not counted. For config b saelab's TopK
backward and decoder touch only the k selected latents, so it does far fewer FLOPs than a dense
step; its GFLOP/s there is dense-equivalent (the work a dense trainer does for the same step).

Each trainer's own step, as its documentation and training loop run it:
  saelab        saelab.training.stack.step_group (forward, losses, backward, clipping, Adam, dead-latent
                trackers), seed L1 (mean over all, alpha 0.003) for a; TopK with AuxK (1/32) for b
  overcomplete  overcomplete.sae.train_sae over the batches (its loop: zero_grad, forward,
                criterion, DeadCodeTracker, backward, clip_grad_norm_, Adam step), monitoring=0;
                SAE (linear encoder, l2-normalized dictionary) with mse_l1 (penalty 0.003) for a;
                TopKSAE with a plain MSE criterion (its README's) for b
  sae-lens      SAETrainer.step (the seam SAETrainer.fit calls: training_forward_pass, firing
                statistics, backward, clip_grad_norm_(1.0), Adam, schedulers) with
                StandardTrainingSAE (decoder-norm-weighted L1) for a and TopKTrainingSAE (AuxK
                on dead latents) for b; for b also with use_sparse_activations=True ("sae-lens-sparse"),
                which on CPU with torch 2.13 fails in backward (aten::view has no SparseCPU kernel)
  sparsify      (PyPI eai-sparsify; PyPI `sparsify` is an unrelated package) Trainer.fit's step for
                one hookpoint with loss_fn="fvu": unit-norm decoder, SparseCoder forward with the
                dead mask (tokens since fired > 10M), fvu + auxk_alpha (1/32) x AuxK, backward,
                gradient parallel to the decoder removed, Adam (TrainConfig optimizer="adam"; its
                default is signum), tokens-since-fired update. b only: sparsify has TopK and GroupMax
                coders and no L1 penalty, so config a does not exist in it (the script says so)
  dictionary-learning  trainer.update(step, x), the body of its trainSAE loop: StandardTrainer
                (Towards Monosemanticity: ConstrainedAdam keeps the decoder unit-norm, L1 0.003,
                no clipping) for a; TopKTrainer (AuxK 1/32, clipping at 1, unit-norm decoder) for b
Every trainer runs Adam at lr 3e-4, float32, CPU; saelab, SAELens, overcomplete and
dictionary_learning's TopKTrainer clip gradients at norm 1 (SAELens always does; overcomplete's
default), sparsify and dictionary_learning's StandardTrainer have no clipping in their loops.

Peers' environments (--setup does exactly this; benchmarks/.venv-*/ is git-ignored):
  python -m venv benchmarks/.venv-overcomplete
  benchmarks/.venv-overcomplete/bin/python -m pip install torch==2.13.0
  benchmarks/.venv-overcomplete/bin/python -m pip install -c constraints.txt overcomplete "matplotlib<3.9"
  python -m venv benchmarks/.venv-sae-lens
  benchmarks/.venv-sae-lens/bin/python -m pip install torch==2.13.0
  benchmarks/.venv-sae-lens/bin/python -m pip install -c constraints.txt sae-lens
  (the same three lines for .venv-sparsify with eai-sparsify, .venv-dictionary-learning with
  dictionary-learning, then: benchmarks/.venv-dictionary-learning/bin/python -m pip uninstall -y torchvision)
Known install problems, handled here: dictionary-learning pulls torchvision through nnsight, and
transformers then fails at import ("operator torchvision::nms does not exist"); its trainers never
use it, so --setup uninstalls it from that environment. overcomplete 0.3 imports torchvision at package import
(overcomplete/models.py, for its vision backbones) and PyPI's torchvision is a CUDA build that
fails to load beside the CPU torch ("operator torchvision::nms does not exist"); the worker puts an
empty torchvision module in sys.modules before importing overcomplete (its SAE code never uses
torchvision). overcomplete's visualization calls matplotlib.cm.get_cmap, removed in matplotlib
3.9, at import; hence the matplotlib pin.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _harness import alternate, matmul_limit, median, step_flops  # noqa: E402

CONFIGS = {
    "a": {"label": "ReLU + L1", "arch": "relu", "d_in": 768, "d_sae": 2048, "batch": 128, "k": 0,
          "steps": 30, "n_batches": 16},
    "b": {"label": "TopK k=32", "arch": "topk", "d_in": 768, "d_sae": 16384, "batch": 1024, "k": 32,
          "steps": 3, "n_batches": 4},
}
REMOVE = {"dictionary-learning": ["torchvision"]}  # pulled in by a dependency, breaks imports (see above)
PEERS = {
    "overcomplete": ["overcomplete", "matplotlib<3.9"],
    "sae-lens": ["sae-lens"],
    "sparsify": ["eai-sparsify"],  # EleutherAI's (PyPI `sparsify` is an unrelated package)
    "dictionary-learning": ["dictionary-learning"],
}
LR, CLIP, L1_ALPHA = 3e-4, 1.0, 0.003
TAG = "@@"  # protocol lines start with this; anything else a library prints is passed through


def venv_python(peer: str) -> Path:
    return HERE / f".venv-{peer}" / "bin" / "python"


# ----- workers: one process per trainer, each times its own steps ----------------------------


def _saelab_step(c: dict):
    from saelab.config import RunConfig
    from saelab.training import stack

    over = {"sae.architecture": c["arch"], "sae.d_in": c["d_in"], "sae.d_sae": c["d_sae"],
            "data.batch_size": c["batch"], "optim.lr": LR, "optim.grad_clip": CLIP,
            "schedule.shape": "constant", "schedule.warmup_steps": 0, "normalize.mode": "none",
            "resample.strategy": "off"}
    if c["arch"] == "relu":
        over |= {"penalty.form": "mean_all", "penalty.alpha": L1_ALPHA}
    else:
        over |= {"sae.k": c["k"], "penalty.form": "none", "penalty.alpha": 0.0,
                 "aux.auxk_coef": 1 / 32, "aux.auxk_k": c["d_in"] // 2}
    cfg = RunConfig().with_overrides(over)
    (group,) = stack.build_groups([cfg], None, torch.device("cpu"))
    state = {"step": 0}

    def run(batches: list[torch.Tensor]) -> None:
        for x in batches:
            stack.step_group(group, [cfg], x, state["step"])
            state["step"] += 1

    return run


def _stub_torchvision() -> None:
    import types

    try:
        import torchvision  # noqa: F401
    except Exception:  # the CUDA wheel beside CPU torch: see the module docstring
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tv.transforms


def _overcomplete_step(c: dict):
    _stub_torchvision()
    from overcomplete.sae import SAE, TopKSAE, train_sae
    from overcomplete.sae.losses import mse_l1

    if c["arch"] == "relu":
        sae = SAE(c["d_in"], nb_concepts=c["d_sae"], device="cpu")
        criterion = functools.partial(mse_l1, penalty=L1_ALPHA)
    else:
        sae = TopKSAE(c["d_in"], nb_concepts=c["d_sae"], top_k=c["k"], device="cpu")

        def criterion(x, x_hat, pre_codes, codes, dictionary):
            return (x - x_hat).square().mean()

    optimizer = torch.optim.Adam(sae.parameters(), lr=LR)

    def run(batches: list[torch.Tensor]) -> None:
        train_sae(sae, batches, criterion, optimizer, nb_epochs=1, clip_grad=CLIP, monitoring=0, device="cpu")

    return run


def _sae_lens_step(c: dict, sparse: bool = False):
    import sae_lens
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    if c["arch"] == "relu":
        sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(
            d_in=c["d_in"], d_sae=c["d_sae"], l1_coefficient=L1_ALPHA, dtype="float32", device="cpu"))
    else:
        sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(
            d_in=c["d_in"], d_sae=c["d_sae"], k=c["k"], use_sparse_activations=sparse, dtype="float32", device="cpu"))
    cfg = SAETrainerConfig(total_training_samples=2**40, train_batch_size_samples=c["batch"], lr=LR, lr_end=LR,
                           device="cpu", logger=LoggingConfig(log_to_wandb=False))
    trainer = sae_lens.SAETrainer(cfg=cfg, sae=sae, data_provider=iter(()))

    def run(batches: list[torch.Tensor]) -> None:
        for x in batches:  # SAETrainer.fit's loop body without wandb, checkpoints and the progress bar
            trainer.maybe_reset_sparsity()
            trainer.step(x)
            trainer.n_training_steps += 1

    return run


def _sparsify_step(c: dict):
    from sparsify import SparseCoder, SparseCoderConfig

    if c["arch"] != "topk":  # stated, not approximated: a TopK coder is not a ReLU + L1 SAE
        raise RuntimeError("sparsify trains TopK (or GroupMax) sparse coders only: SparseCoderConfig has k and "
                           "no L1 penalty, so config a (ReLU + L1) does not exist in it")
    sae = SparseCoder(c["d_in"], SparseCoderConfig(num_latents=c["d_sae"], k=c["k"]), device="cpu")
    optimizer = torch.optim.Adam(sae.parameters(), lr=LR)  # TrainConfig(optimizer="adam"); its default is signum
    since_fired = torch.zeros(c["d_sae"], dtype=torch.long)
    auxk_alpha, dead_threshold = 1 / 32, 10_000_000  # sparsify's TrainConfig defaults for AuxK

    def run(batches: list[torch.Tensor]) -> None:
        for x in batches:  # Trainer.fit's step for one hookpoint, loss_fn="fvu", without the model forward
            sae.set_decoder_norm_to_unit_norm()
            out = sae(x, dead_mask=since_fired > dead_threshold)
            (out.fvu + auxk_alpha * out.auxk_loss).backward()
            did_fire = torch.zeros(c["d_sae"], dtype=torch.bool)
            did_fire[out.latent_indices.flatten()] = True
            sae.remove_gradient_parallel_to_decoder_directions()
            optimizer.step()
            optimizer.zero_grad()
            since_fired.add_(x.shape[0])
            since_fired[did_fire] = 0

    return run


def _dictionary_learning_step(c: dict):
    from dictionary_learning.trainers.standard import StandardTrainer
    from dictionary_learning.trainers.top_k import TopKTrainer

    common = {"steps": 10**9, "activation_dim": c["d_in"], "dict_size": c["d_sae"], "layer": 0, "lm_name": "none",
              "lr": LR, "warmup_steps": 1, "device": "cpu", "seed": 0}
    if c["arch"] == "relu":  # Towards Monosemanticity: unit-norm decoder by ConstrainedAdam, no clipping
        trainer = StandardTrainer(**common, l1_penalty=L1_ALPHA, sparsity_warmup_steps=None)
    else:  # Gao et al.: AuxK 1/32, clipping at 1, unit-norm decoder
        trainer = TopKTrainer(**common, k=c["k"])
    state = {"step": 0}

    def run(batches: list[torch.Tensor]) -> None:
        for x in batches:  # trainSAE's loop body: trainer.update(step, activations)
            trainer.update(state["step"], x)
            state["step"] += 1

    return run


def worker(trainer: str, config: str, acts: str, threads: int) -> None:
    torch.set_num_threads(threads)
    c = CONFIGS[config]
    batches = list(torch.load(acts))
    make = {"saelab": _saelab_step, "overcomplete": _overcomplete_step, "sae-lens": _sae_lens_step,
            "sae-lens-sparse": functools.partial(_sae_lens_step, sparse=True), "sparsify": _sparsify_step,
            "dictionary-learning": _dictionary_learning_step}[trainer]
    try:
        run = make(c)
        run(batches[:1])  # one step before reporting ready, so a trainer that cannot train says so now
    except Exception as e:  # noqa: BLE001 - reported to the coordinator, which leaves the trainer out
        print(TAG + json.dumps({"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}), flush=True)
        return
    pos = 1
    print(TAG + json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        chunk = [batches[(pos + i) % len(batches)] for i in range(cmd["steps"])]
        pos += cmd["steps"]
        t0 = time.perf_counter()
        run(chunk)
        print(TAG + json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


class Worker:
    """A trainer's process; ``run(steps)`` returns the seconds it measured for those steps."""

    def __init__(self, trainer: str, python: Path, config: str, acts: Path, threads: int):
        self.name = trainer
        self.proc = subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "--worker", trainer, "--config", config,
             "--acts", str(acts), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, cwd=str(ROOT))
        self.info = self._reply()
        if "error" in self.info:
            self.proc.wait(timeout=60)
            raise RuntimeError(self.info["error"])

    def _reply(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
            sys.stderr.write(f"[{self.name}] {line}")
        raise RuntimeError(f"{self.name}: worker exited with code {self.proc.wait()} (its error is above)")

    def run(self, steps: int) -> float:
        self.proc.stdin.write(json.dumps({"op": "run", "steps": steps}) + "\n")
        return float(self._reply()["seconds"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


# ----- coordinator -----------------------------------------------------------------------------


def setup(peers: list[str]) -> None:
    constraints = ROOT / "constraints.txt"
    for peer in peers:
        venv = HERE / f".venv-{peer}"
        py = venv_python(peer)
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(py), "-m", "pip", "install", "torch==2.13.0"],
                 [str(py), "-m", "pip", "install", "-c", str(constraints), *PEERS[peer]]]
        if peer in REMOVE:
            steps.append([str(py), "-m", "pip", "uninstall", "-y", *REMOVE[peer]])
        for cmd in steps:
            if cmd[0] == sys.executable and py.exists():
                continue
            print("$", " ".join(cmd), flush=True)
            if subprocess.run(cmd).returncode != 0:
                print(f"!! {peer}: `{' '.join(cmd)}` failed; {peer} is left out of the comparison", flush=True)
                break


def activations(c: dict, path: Path) -> None:
    from saelab.config import RunConfig
    from saelab.data.sources import make_source

    src = make_source(RunConfig().with_overrides({"sae.d_in": c["d_in"]}))
    torch.save(torch.stack([src.batch(s, c["batch"]) for s in range(c["n_batches"])]), path)


def compare(config: str, trainers: list[str], runs: int, threads: int, tmp: Path) -> None:
    c = CONFIGS[config]
    B, S, d, steps = c["batch"], c["d_sae"], c["d_in"], c["steps"]
    acts = tmp / f"acts_{config}.pt"
    activations(c, acts)
    workers = {}
    for t in trainers:
        py = Path(sys.executable) if t == "saelab" else venv_python(t.removesuffix("-sparse"))
        try:
            workers[t] = Worker(t, py, config, acts, threads)
        except RuntimeError as e:
            print(f"!! {t}: cannot train here, left out: {e}", flush=True)
    limits: list[float] = []

    def mm() -> float:
        t0 = time.perf_counter()
        limits.append(matmul_limit(B, S, d, min_time=0.3))
        return time.perf_counter() - t0

    runners = {t: (lambda w=w: w.run(steps)) for t, w in workers.items()} | {"matmul": mm}
    try:
        timed = alternate(runners, runs)
    finally:
        for w in workers.values():
            w.close()
    limit = median(limits[1:])  # the first was the warm-up round
    flops = step_flops(B, S, d)
    print(f"\nconfig {config}: {c['label']}, d_in {d}, latent {S}, batch {B}; {steps} steps per run, "
          f"{runs} timed runs after 1 warm-up, {threads} threads, load average {os.getloadavg()}")
    print(f"  matmul limit (torch.mm at the step's 5 shapes): {limit:.1f} GFLOP/s  (runs: "
          + ", ".join(f"{v:.1f}" for v in limits[1:]) + f"); step = {flops / 1e9:.3f} GFLOP")
    print(f"  {'trainer':<16}{'steps/s':>9}{'GFLOP/s':>9}{'of limit':>10}   runs (steps/s)")
    rate = {t: steps / median(ts) for t, ts in timed.items() if t != "matmul"}
    for t in workers:
        g = flops * rate[t] / 1e9
        print(f"  {t:<16}{rate[t]:9.2f}{g:9.1f}{g / limit:10.0%}   " + ", ".join(f"{steps / s:.2f}" for s in timed[t]))
    if "saelab" in workers:
        for t in workers:
            if t == "saelab":
                continue
            per_run = [p / s for p, s in zip(timed[t], timed["saelab"])]
            print(f"  saelab / {t}: {rate['saelab'] / rate[t]:.2f}x (median steps/s ratio); per round: "
                  + ", ".join(f"{r:.2f}" for r in per_run))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", action="store_true", help="create the peers' virtual environments, then run")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    ap.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up (>= 5)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--acts", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.config, args.acts, args.threads)
    torch.set_num_threads(args.threads)  # the matmul limit is measured here, with the trainers' thread count
    if args.setup:
        setup(args.peers)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    trainers = ["saelab"]
    for p in args.peers:
        if venv_python(p).exists():
            trainers.append(p)
        else:
            print(f"!! {p}: no environment at {venv_python(p).parent.parent} (run with --setup); left out")
    with tempfile.TemporaryDirectory(prefix="saelab-peers-") as tmp:
        for config in args.configs:
            extra = ["sae-lens-sparse"] if config == "b" and "sae-lens" in trainers else []
            compare(config, trainers + extra, args.runs, args.threads, Path(tmp))


if __name__ == "__main__":
    main()
