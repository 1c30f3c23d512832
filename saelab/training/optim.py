"""Adam (or AdamW) over stacked parameters with one learning rate per arm.

torch.optim.Adam takes one LR per parameter tensor; arms share each tensor along dim 0. The update
runs torch's fused Adam kernel (the one behind ``torch.optim.Adam(fused=True)``: one pass over
parameter, gradient and both moments) on arm slices: arms that share (lr, beta1, beta2, eps) at
this step go in one call, on a single slab when they are adjacent. Kingma & Ba 2015 with bias
correction, exactly as torch.optim.Adam(fused=True) computes it (tests/test_fastpaths.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch
from torch import Tensor, nn

_RETAIN = {"done": False}
DECAYED = ("W_enc", "W_dec")  # the parameters weight decay shrinks; biases and thresholds are left alone


class StackedAdam:
    def __init__(self, params: dict[str, nn.Parameter], betas: Tensor, eps: Tensor, weight_decay: Tensor | None = None):
        """params: name -> parameter with a leading arm dim K; betas [K, 2]; eps [K]; weight_decay
        [K] (None: 0 for every arm), decoupled, on the ``DECAYED`` parameters only."""
        self.params = params
        self.betas, self.eps = betas, eps
        decay = [0.0] * len(eps) if weight_decay is None else weight_decay.tolist()
        # Python floats per arm: the fused kernel takes scalars, and reading them once here keeps
        # the step free of tensor-to-float conversions (device syncs on a GPU).
        self._hyper = [(float(b[0]), float(b[1]), float(e), float(w)) for b, e, w in zip(betas.tolist(), eps.tolist(), decay)]
        self.state = {n: {"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for n, p in params.items()}
        self.step_count = 0

    @torch.no_grad()
    def step(self, lr: Tensor | list[float], grad_divisor: Tensor | None = None) -> None:
        """lr [K] (a tensor or a list of floats): this step's learning rate per arm.
        grad_divisor [K] (optional): divide each arm's gradients by this first, inside the same
        kernel pass (the kernel's grad_scale input, there for AMP); gradient clipping uses it."""
        lr = lr.tolist() if isinstance(lr, Tensor) else list(lr)
        self.step_count += 1
        groups: dict[tuple, list[int]] = {}
        for k, (rate, hyper) in enumerate(zip(lr, self._hyper)):
            # one divisor tensor per kernel call: with divisors, every arm is its own call
            groups.setdefault((float(rate), *hyper, k if grad_divisor is not None else -1), []).append(k)
        live = [(n, p) for n, p in self.params.items() if p.grad is not None]
        if not live:
            return
        # The kernel reads the step count for bias correction (float32, like torch.optim.Adam's
        # state['step']; exact up to 2**24 steps).
        device = live[0][1].device
        t = torch.tensor(float(self.step_count), dtype=torch.float32, device=device)
        for (rate, b1, b2, eps, decay, arm), arms in groups.items():
            ps, gs, ms, vs = [], [], [], []
            for a, b in _runs(arms):
                for n, p in live:
                    st = self.state[n]
                    if decay and n in DECAYED:  # AdamW: decoupled decay before the Adam step
                        p[a:b].mul_(1 - rate * decay)
                    ps.append(p[a:b]), gs.append(p.grad[a:b]), ms.append(st["m"][a:b]), vs.append(st["v"][a:b])
            scale = None if arm < 0 else grad_divisor[arm].to(torch.float32)
            torch._fused_adam_(ps, gs, ms, vs, [], [t] * len(ps), lr=rate, beta1=b1, beta2=b2,
                               weight_decay=0.0, eps=eps, amsgrad=False, maximize=False, grad_scale=scale)

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def state_dict(self) -> dict[str, Tensor]:
        out = {f"{n}.{k}": t for n, st in self.state.items() for k, t in st.items()}
        out["step_count"] = torch.tensor(self.step_count)
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for n, st in self.state.items():
            for k in st:
                st[k].copy_(state[f"{n}.{k}"])
        self.step_count = int(state["step_count"])


def _runs(arms: list[int]) -> list[tuple[int, int]]:
    """[0, 1, 2, 5, 6] -> [(0, 3), (5, 7)]: maximal runs of adjacent arms, as slice bounds."""
    out: list[tuple[int, int]] = []
    for k in arms:
        if out and out[-1][1] == k:
            out[-1] = (out[-1][0], k + 1)
        else:
            out.append((k, k + 1))
    return out


def retain_freed_memory() -> bool:
    """Keep freed memory in the process for reuse instead of returning it to the OS (glibc only).

    A training step frees and re-allocates the same large tensors every step (gradients, [B, S]
    pre-activations and codes: 50-64 MB each at latent 16384, batch 1024). glibc serves blocks
    above 32 MB with mmap and gives them back on free, and trims the heap top above a threshold,
    so each step page-faults its buffers in again: measured here, 30% of a TopK step at that size
    and a few % at the seed's. Turning off mmap for allocations and heap trimming (mallopt) lets
    the next step reuse the pages. The cost: the process keeps its peak memory until it exits.
    The setting cannot be undone (mallopt has no getter, and setting it turns glibc's dynamic mmap
    threshold off for good), so inside a Jupyter kernel it stays off unless SAELAB_RETAIN_MEMORY=1:
    a user's notebook kernel is left as it was found (issue 15), while ``saelab lab`` sets the
    variable for the throwaway kernels it starts. Idempotent; a no-op off glibc or with
    SAELAB_RETAIN_MEMORY=0. Returns whether it is active."""
    if _RETAIN["done"]:
        return _RETAIN.get("active", False)
    _RETAIN["done"] = True
    wanted = os.environ.get("SAELAB_RETAIN_MEMORY", "")
    if wanted == "0" or (wanted != "1" and _in_kernel()):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc malloc.h
    ok = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**30)) and bool(mallopt(M_TOP_PAD, 2**26))
    _RETAIN["active"] = ok
    return ok


def _in_kernel() -> bool:
    """Whether this process is a Jupyter (IPython) kernel."""
    import sys

    return "ipykernel" in sys.modules
