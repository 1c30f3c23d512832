"""Shared pieces of the benchmarks: alternating timed runs with medians, the FLOP count of one SAE
training step, and the matmul limit at a step's shapes.

Imports only torch, so compare_peers.py's workers can use it inside the peers' own virtual
environments (where saelab is not installed).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def alternate(runners: dict[str, Callable[[], object]], n_runs: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call every runner once per round, rotating the order each round so that no runner always
    follows the same neighbour; the first ``warmup`` rounds are discarded. Returns the seconds of
    each timed run per runner: the wall time of the call, or the float the runner returns (a
    worker process that timed itself, without the round trip)."""
    names = list(runners)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + n_runs):
        shift = r % len(names)
        for n in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            result = runners[n]()
            dt = result if isinstance(result, float) else time.perf_counter() - t0
            if r >= warmup:
                out[n].append(dt)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def step_flops(batch: int, d_sae: int, d_in: int) -> int:
    """FLOPs of the matrix products in one dense SAE training step (a multiply-add counts 2).

    forward:  pre = x W_enc^T (B x d x S), x_hat = codes W_dec (B x S x d)            2 products
    backward: dW_dec = codes^T g_xhat, g_codes = g_xhat W_dec^T, dW_enc = g_pre^T x   3 products
    The input needs no gradient, so g_x = g_pre W_enc is never formed. Each product is 2 B S d, so
    the step is 10 B S d. Element-wise work (ReLU, losses, Adam) is not counted: it is what a
    trainer should keep small next to the products."""
    return 10 * batch * d_sae * d_in


def matmul_shapes(batch: int, d_sae: int, d_in: int) -> list[tuple[str, tuple[int, int], tuple[int, int], bool, bool]]:
    """The five products of step_flops as (name, shape a, shape b, transpose a, transpose b) for
    torch.mm(a or a.T, b or b.T), laid out as autograd lays them out."""
    B, S, d = batch, d_sae, d_in
    return [
        ("x W_enc^T", (B, d), (S, d), False, True),
        ("codes W_dec", (B, S), (S, d), False, False),
        ("codes^T g_xhat", (B, S), (B, d), True, False),
        ("g_xhat W_dec^T", (B, d), (S, d), False, True),
        ("g_pre^T x", (B, S), (B, d), True, False),
    ]


def matmul_limit(batch: int, d_sae: int, d_in: int, min_time: float = 0.5) -> float:
    """GFLOP/s of torch.mm doing the step's five products back to back (as a step does them),
    median over repeats of the sequence: the rate a trainer would reach if the products were all
    it did."""
    g = torch.Generator().manual_seed(0)
    pairs = []
    for _, sa, sb, ta, tb in matmul_shapes(batch, d_sae, d_in):
        a = torch.randn(*sa, generator=g)
        b = torch.randn(*sb, generator=g)
        pairs.append((a.t() if ta else a, b.t() if tb else b))
    outs = [torch.mm(a, b) for a, b in pairs]  # warm-up, and the output buffers
    times, spent = [], 0.0
    while spent < min_time or len(times) < 5:
        t0 = time.perf_counter()
        for (a, b), out in zip(pairs, outs):
            torch.mm(a, b, out=out)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return step_flops(batch, d_sae, d_in) / statistics.median(times) / 1e9
