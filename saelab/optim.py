"""Adam over stacked parameters with one learning rate per arm.

torch.optim.Adam takes one LR per parameter tensor; arms share each tensor along dim 0, so the
update is written out here (Kingma & Ba 2015, with bias correction, as torch.optim.Adam does).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class StackedAdam:
    def __init__(self, params: dict[str, nn.Parameter], betas: Tensor, eps: Tensor):
        """params: name -> parameter with a leading arm dim K; betas [K, 2]; eps [K]."""
        self.params = params
        self.betas, self.eps = betas, eps
        self.state = {n: {"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for n, p in params.items()}
        self.step_count = 0

    def _per_arm(self, t: Tensor, like: Tensor) -> Tensor:
        return t.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    @torch.no_grad()
    def step(self, lr: Tensor) -> None:
        """lr [K]: this step's learning rate per arm."""
        self.step_count += 1
        t = self.step_count
        b1, b2 = self.betas[:, 0], self.betas[:, 1]
        bc1 = 1 - b1.pow(t)
        bc2 = 1 - b2.pow(t)
        for name, p in self.params.items():
            g = p.grad
            if g is None:
                continue
            st = self.state[name]
            m, v = st["m"], st["v"]
            m.lerp_(g, self._per_arm(1 - b1, g))
            v.lerp_(g * g, self._per_arm(1 - b2, g))
            denom = (v / self._per_arm(bc2, v)).sqrt_().add_(self._per_arm(self.eps, v))
            p.sub_(m * self._per_arm(lr / bc1, m) / denom)

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
