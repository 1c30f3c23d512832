"""Dead-latent detectors as counters, not "ever alive" flags (sparsify's num_tokens_since_fired):
counters give any threshold, a time series and an exact resume. All state is stacked over arms:
[K, S] for K arms of S latents."""

from __future__ import annotations

import torch
from torch import Tensor

from saelab.config import TrackingConfig

DETECTORS = ("single_batch", "window", "tokens")


class DeadTracker:
    """Per-step firing counters for K arms.

    single_batch  the seed's ``(z == 0).all(dim=0)``: no firing in the latest batch
    window        firing rate over the last ``window_batches`` batches below ``window_threshold``
                  (the seed's Task 4.1: 50 batches, < 1%)
    tokens        no firing for ``dead_tokens`` tokens (Gao et al. 2024; EleutherAI sparsify)
    """

    def __init__(self, n_arms: int, d_sae: int, cfg: TrackingConfig, device: str | torch.device = "cpu"):
        self.cfg = cfg
        K, S, W = n_arms, d_sae, cfg.window_batches
        self.tokens_since_fired = torch.zeros(K, S, dtype=torch.int64, device=device)
        self.batch_counts = torch.ones(K, S, dtype=torch.int64, device=device)  # nothing is dead before a batch
        self.window_counts = torch.zeros(W, K, S, dtype=torch.int32, device=device)
        self.window_rows = torch.zeros(W, dtype=torch.int64, device=device)
        self.pos = 0
        # batches each latent has lived through since the start or its last revival: the window
        # detector judges a latent only on the batches of its current life
        self.age = torch.zeros(K, S, dtype=torch.int64, device=device)

    def update(self, codes: Tensor) -> None:
        """codes [K, B, S] of the step just taken."""
        counts = (codes > 0).sum(1)
        self.batch_counts = counts
        self.tokens_since_fired += codes.shape[1]
        self.tokens_since_fired.masked_fill_(counts > 0, 0)
        self.window_counts[self.pos] = counts
        self.window_rows[self.pos] = codes.shape[1]
        self.pos = (self.pos + 1) % self.window_counts.shape[0]
        self.age += 1

    def dead(self, detector: str) -> Tensor:
        """bool [K, S]: latents the detector calls dead now."""
        if detector == "single_batch":
            return self.batch_counts == 0
        if detector == "window":
            # rows in the newest n batches, n = 1..W (unfilled slots hold 0 rows)
            recent = self.window_rows.roll(-self.pos).flip(0).cumsum(0)
            n = self.age.clamp(max=recent.shape[0])
            rows = recent[(n - 1).clamp_min(0)]
            rate = self.window_counts.sum(0).to(torch.float64) / rows.clamp_min(1).to(torch.float64)
            return (n > 0) & (rows > 0) & (rate < self.cfg.window_threshold)
        if detector == "tokens":
            return self.tokens_since_fired >= self.cfg.dead_tokens
        raise ValueError(f"unknown detector {detector!r}; use one of {list(DETECTORS)}")

    def revive(self, arm: int, latents: Tensor) -> None:
        """Forget the history of resampled latents: they start a fresh life, and the window and
        tokens detectors call them dead again only on evidence gathered after this call. (The
        single_batch detector keeps reporting the latest batch, which came before the revival.)"""
        self.tokens_since_fired[arm, latents] = 0
        self.window_counts[:, arm, latents] = 0
        self.age[arm, latents] = 0

    def state_dict(self) -> dict[str, Tensor]:
        return {
            "tokens_since_fired": self.tokens_since_fired.clone(),
            "batch_counts": self.batch_counts.clone(),
            "window_counts": self.window_counts.clone(),
            "window_rows": self.window_rows.clone(),
            "pos": torch.tensor(self.pos),
            "age": self.age.clone(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.tokens_since_fired = state["tokens_since_fired"].clone()
        self.batch_counts = state["batch_counts"].clone()
        self.window_counts = state["window_counts"].clone()
        self.window_rows = state["window_rows"].clone()
        self.pos = int(state["pos"])
        # a state saved before ages were tracked: every latent has lived through the whole window
        W = self.window_counts.shape[0]
        self.age = state["age"].clone() if "age" in state else torch.full_like(self.tokens_since_fired, W)


def precision_recall(predicted: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """Per arm, precision and recall of a dead mask against the truth (bool [K, S] each).
    Precision is NaN when nothing is predicted dead; recall is NaN when nothing is truly dead."""
    tp = (predicted & truth).sum(-1).to(torch.float64)
    n_pred = predicted.sum(-1).to(torch.float64)
    n_true = truth.sum(-1).to(torch.float64)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    precision = torch.where(n_pred > 0, tp / n_pred.clamp_min(1), nan)
    recall = torch.where(n_true > 0, tp / n_true.clamp_min(1), nan)
    return precision, recall
