"""TopK decoding through the selected latents only vs a dense decode (latent 16384, k 32).

    .venv/bin/python benchmarks/topk_decode.py
    .venv/bin/python benchmarks/topk_decode.py --batch 128 --d-sae 2048 --k 32

dense   codes [B, S] (k non-zeros per row) @ W_dec [S, d] + b_dec: what a TopK SAE does when it
        materializes its codes (overcomplete, SAELens' default)
sparse  saelab.training.models.sparse_decode: sum of the k selected decoder rows per row, weighted by their
        activations (an embedding bag), the decoder TopKSAE.forward uses in training
Timed: forward alone, and forward + backward (gradients for the activations and W_dec, as in
training), each a median over --runs timed runs after a warm-up, the two alternating. The script
first checks that both give the same output and gradients (float tolerance).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import alternate, median  # noqa: E402

from saelab.training.models import sparse_decode  # noqa: E402
from saelab.training.optim import retain_freed_memory  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5, help="decodes per timed run")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as in training (saelab.training.stack.build_groups), for both paths
    B, d, S, k = args.batch, args.d_in, args.d_sae, args.k
    g = torch.Generator().manual_seed(0)
    W = torch.randn(1, S, d, generator=g).div_(d**0.5).requires_grad_()
    b = torch.randn(1, d, generator=g).requires_grad_()
    pre = torch.randn(1, B, S, generator=g)
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    acts = torch.relu(vals).requires_grad_()
    g_out = torch.randn(1, B, d, generator=g)

    def dense(backward: bool):
        codes = torch.zeros(1, B, S).scatter(-1, idx, acts)
        out = torch.baddbmm(b.unsqueeze(1), codes, W)
        if backward:
            out.backward(g_out)
        return out

    def sparse(backward: bool):
        out = sparse_decode(acts, idx, W, b)
        if backward:
            out.backward(g_out)
        return out

    results = {}
    for fn in (dense, sparse):
        W.grad = b.grad = acts.grad = None
        out = fn(True)
        results[fn.__name__] = [out.detach(), W.grad.clone(), acts.grad.clone(), b.grad.clone()]
    for name, a, c in zip(["x_hat", "dW_dec", "d_acts", "db_dec"], results["dense"], results["sparse"]):
        torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-4, msg=name)
        print(f"check {name}: max |sparse - dense| = {float((c - a).abs().max()):.2e}")

    def runner(fn, backward: bool):
        def run() -> None:
            for _ in range(args.reps):
                W.grad = b.grad = acts.grad = None
                if backward:
                    fn(True)
                else:
                    with torch.no_grad():
                        fn(False)
        return run

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    print(f"batch {B}, d_in {d}, latent {S}, k {k}; {args.reps} decodes per run, {args.runs} timed runs")
    for backward in (False, True):
        timed = alternate({"dense": runner(dense, backward), "sparse": runner(sparse, backward)}, args.runs)
        td, ts = median(timed["dense"]) / args.reps, median(timed["sparse"]) / args.reps
        what = "forward + backward" if backward else "forward"
        print(f"  {what:<19} dense {td * 1e3:8.2f} ms   sparse {ts * 1e3:7.2f} ms   speedup {td / ts:6.1f}x")


if __name__ == "__main__":
    main()
