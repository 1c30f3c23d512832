"""SAE variants with stacked parameters: K arms share one module and train in lockstep.

Shapes (K arms, B rows, d = d_in, S = d_sae):
    W_enc [K, S, d]   row i is the encoder vector of latent i (as nn.Linear.weight)
    b_enc [K, S]
    W_dec [K, S, d]   row i is the decoder direction of latent i
    b_dec [K, d]
    x [K, B, d] -> pre [K, B, S] -> codes [K, B, S] -> x_hat [K, B, d]

Every variant exposes pre-activations, so remedies (reanimation, AuxK) compose with all of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saelab.config import SAEConfig


class SAE(nn.Module):
    """Linear encoder with bias, an activation, linear decoder with bias (the seed's
    ``sparse_autoencoder.py``). Subclasses only choose the activation."""

    def __init__(self, cfg: SAEConfig, n_arms: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        if cfg.d_in < 1:
            raise ValueError("sae.d_in must be resolved from the data source before building a model")
        self.cfg = cfg
        K, S, d = n_arms, cfg.d_sae, cfg.d_in
        W_enc, W_dec = _init_weights(cfg, K, seed, dtype)
        self.W_enc = nn.Parameter(W_enc)
        self.b_enc = nn.Parameter(torch.full((K, S), cfg.b_enc_init, dtype=dtype))  # sae.b_enc_init (0: the seed's zeros)
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(torch.zeros(K, d, dtype=dtype))

    @property
    def n_arms(self) -> int:
        return self.W_enc.shape[0]

    def encoder_bias(self) -> Tensor:
        """[K, S]: b_enc, or with apply_b_dec_to_input the bias that makes (x - b_dec) W_enc^T + b_enc
        one product of x, b_enc - W_enc b_dec (an O(S d) product per arm instead of a pass over the
        batch; autograd carries its gradient to b_enc, W_enc and b_dec)."""
        if not self.cfg.apply_b_dec_to_input:
            return self.b_enc
        return self.b_enc - torch.bmm(self.W_enc, self.b_dec.unsqueeze(-1)).squeeze(-1)

    def preacts(self, x: Tensor) -> Tensor:
        """[K, B, d] -> [K, B, S]"""
        return _Encode.apply(x, self.W_enc, self.encoder_bias())

    def activate(self, pre: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.preacts(x)
        return pre, self.activate(pre)

    def decode(self, codes: Tensor) -> Tensor:
        """[K, B, S] -> [K, B, d]"""
        return torch.baddbmm(self.b_dec.unsqueeze(1), codes, self.W_dec)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pre, codes = self.encode(x)
        return pre, codes, self.decode(codes)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Unit-norm decoder rows (Bricken 2023); called after each step under decoder_constraint=unit_norm."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component parallel to each decoder row, so the unit-norm step moves
        along the sphere rather than fighting the renormalization (Bricken 2023)."""
        g, w = self.W_dec.grad, self.W_dec
        if g is not None:
            g.sub_((g * w).sum(-1, keepdim=True) * w)

    def arm_state(self, arm: int) -> dict[str, Tensor]:
        """Weights of one arm without the arm dimension (what sae.safetensors stores)."""
        return {name: p.detach()[arm].clone() for name, p in self.named_parameters()} | {
            name: b[arm].clone() for name, b in self.named_buffers()
        }


def _init_weights(cfg: SAEConfig, K: int, seed: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Kaiming-uniform encoder and decoder like nn.Linear; `tied` starts the encoder as the
    decoder's transpose with unit-norm decoder rows (Conerly et al. 2024). Every arm gets the same
    initial weights, so arms differ only in the factor under study."""
    g = torch.Generator().manual_seed(seed)
    S, d = cfg.d_sae, cfg.d_in
    bound_enc = 1 / math.sqrt(d)  # nn.Linear(d, S): kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), ...)
    bound_dec = 1 / math.sqrt(S)
    W_dec = (torch.rand(S, d, generator=g, dtype=torch.float64) * 2 - 1) * bound_dec
    if cfg.init == "tied":
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True) * 0.1  # Conerly 2024: small random directions
        W_enc = W_dec.clone()
    else:
        W_enc = (torch.rand(S, d, generator=g, dtype=torch.float64) * 2 - 1) * bound_enc
    if cfg.decoder_constraint == "unit_norm":
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    stack = lambda w: w.to(dtype).unsqueeze(0).repeat(K, 1, 1)  # noqa: E731
    return stack(W_enc), stack(W_dec)


class _Encode(torch.autograd.Function):
    """pre = x W_enc^T + b_enc as one batched product, x [K, B, d] -> [K, B, S].

    Autograd's own baddbmm backward returns dW_enc as the transpose of a [K, d, S] product, which
    the gradient accumulator then copies into W_enc's [K, S, d] layout every step (a full pass over
    the encoder, about 15% of a step at the seed's shapes). Computing g_pre^T x directly gives the
    gradient in the parameter's own layout."""

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor) -> Tensor:
        ctx.save_for_backward(x, W_enc)
        return torch.baddbmm(b_enc.unsqueeze(1), x, W_enc.transpose(1, 2))

    @staticmethod
    def backward(ctx, g_pre: Tensor):
        x, W_enc = ctx.saved_tensors
        g_x = torch.bmm(g_pre, W_enc) if ctx.needs_input_grad[0] else None
        g_W = torch.bmm(g_pre.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        g_b = g_pre.sum(1) if ctx.needs_input_grad[2] else None
        return g_x, g_W, g_b


class ReLUSAE(SAE):
    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)


class TopKSAE(SAE):
    """Keep the k largest pre-activations per row, then ReLU (Gao et al. 2024).

    ``forward`` (what training and evaluation call) never builds a dense product with the codes: the
    decoder sums the k selected decoder rows per row (an embedding bag), and the backward pass sends
    gradients only through the selected latents (see ``_TopKEncode``). ``encode``/``decode`` are the
    plain dense reference; tests/test_fastpaths.py checks that both give the same numbers."""

    def activate(self, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.W_enc.dtype not in _BAG_DTYPES:
            return super().forward(x)
        pre, vals, idx = _TopKEncode.apply(x, self.W_enc, self.encoder_bias(), self.cfg.k)
        acts = torch.relu(vals)
        codes = torch.zeros_like(pre).scatter_(-1, idx, acts)
        return pre, codes, sparse_decode(acts, idx, self.W_dec, self.b_dec)


_BAG_DTYPES = (torch.float32, torch.float64)  # dtypes the embedding-bag kernels accept on every device


def _global_rows(idx: Tensor, S: int) -> Tensor:
    """idx [K, B, k] latent indices per arm -> [K*B, k] row indices into the arms' stacked rows [K*S, d]."""
    K = idx.shape[0]
    offsets = torch.arange(K, device=idx.device).mul_(S).view(K, 1, 1)
    return (idx + offsets).flatten(0, 1)


def sparse_decode(acts: Tensor, idx: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """x_hat[a, b] = sum_j acts[a, b, j] * W_dec[a, idx[a, b, j]] + b_dec[a]: the dense
    ``codes @ W_dec + b_dec`` for codes that are zero outside ``idx``, at O(B k d) instead of O(B S d).

    acts, idx [K, B, k]; W_dec [K, S, d]; b_dec [K, d] -> [K, B, d]. Differentiable in acts, W_dec
    and b_dec (torch's embedding-bag backward: a gather-dot for acts, a scatter-add for W_dec)."""
    K, B, k = acts.shape
    S, d = W_dec.shape[1:]
    out = F.embedding_bag(_global_rows(idx, S), W_dec.reshape(K * S, d), mode="sum",
                          per_sample_weights=acts.reshape(K * B, k))
    return out.view(K, B, d) + b_dec.unsqueeze(1)


def _bag_weight_grad(rows: Tensor, weights: Tensor, grad_rows: Tensor, table: Tensor) -> Tensor:
    """out[r] = sum over (n, j) with rows[n, j] == r of weights[n, j] * grad_rows[n]: the gradient an
    embedding bag sends to its table, computed by torch's own (sorted, deterministic) kernel.
    rows, weights [N, k]; grad_rows [N, d]; table [R, d] (only its shape matters) -> [R, d]."""
    leaf = table.detach().requires_grad_()
    with torch.enable_grad():
        out = F.embedding_bag(rows, leaf, mode="sum", per_sample_weights=weights.detach())
        (grad,) = torch.autograd.grad(out, leaf, grad_rows)
    return grad


class _TopKEncode(torch.autograd.Function):
    """pre = x W_enc^T + b_enc and its k largest entries per row (values, indices).

    When only the selected values receive a gradient (the usual TopK loss), backward touches only
    those k latents per row: dW_enc is a scatter-add of x rows into the selected encoder rows, and
    db_enc a scatter-add of the value gradients, instead of a dense [S, B] x [B, d] product. When the
    loss also uses ``pre`` itself (reanimation, AuxK), the gradient is dense and so is the product."""

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int):
        pre = torch.baddbmm(b_enc.unsqueeze(1), x, W_enc.transpose(1, 2))
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        ctx.save_for_backward(x, W_enc, idx)
        ctx.mark_non_differentiable(idx)
        ctx.set_materialize_grads(False)
        return pre, vals, idx

    @staticmethod
    def backward(ctx, g_pre: Tensor | None, g_vals: Tensor | None, _g_idx: Tensor | None):
        x, W_enc, idx = ctx.saved_tensors
        K, S, d = W_enc.shape
        if g_pre is None and g_vals is None:
            return None, None, None, None
        if g_pre is not None:  # dense: the loss used pre directly
            g = g_pre if g_vals is None else g_pre.scatter_add(-1, idx, g_vals)
            g_x = torch.bmm(g, W_enc) if ctx.needs_input_grad[0] else None
            g_W = torch.bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
            return g_x, g_W, g.sum(1), None
        B, k = idx.shape[1:]
        rows = _global_rows(idx, S)
        flat = g_vals.reshape(K * B, k)
        g_x = g_W = None
        if ctx.needs_input_grad[0]:
            g_x = F.embedding_bag(rows, W_enc.reshape(K * S, d), mode="sum", per_sample_weights=flat).view(K, B, d)
        if ctx.needs_input_grad[1]:
            g_W = _bag_weight_grad(rows, flat, x.reshape(K * B, d), W_enc.reshape(K * S, d)).view(K, S, d)
        g_b = g_vals.new_zeros(K, S).scatter_add_(1, idx.flatten(1), g_vals.flatten(1))
        return g_x, g_W, g_b, None


class BatchTopKSAE(SAE):
    """Keep the k*B largest pre-activations over the whole batch (Bussmann et al. 2024). In eval
    mode a latent fires when its pre-activation exceeds a threshold tracked during training (the
    smallest kept value of the first training batch, then an exponential average of it), so eval
    codes do not depend on the batch. Before any training batch the threshold is 0 (plain ReLU)."""

    def __init__(self, cfg: SAEConfig, n_arms: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(cfg, n_arms, seed, dtype)
        self.register_buffer("threshold", torch.zeros(n_arms, dtype=dtype))
        # starting the average at 0 would leave eval codes near-dense for hundreds of steps
        self.register_buffer("threshold_set", torch.zeros(n_arms, dtype=torch.bool))

    def activate(self, pre: Tensor) -> Tensor:
        K, B, S = pre.shape
        post = torch.relu(pre)
        if not self.training:
            return post * (post > self.threshold.view(K, 1, 1))
        flat = post.reshape(K, B * S)
        vals, idx = flat.topk(min(self.cfg.k * B, B * S), dim=-1, sorted=False)
        with torch.no_grad():
            kept_min = vals.masked_fill(vals <= 0, float("inf")).amin(-1)
            found = torch.isfinite(kept_min)
            kept_min = torch.where(found, kept_min, self.threshold)
            weight = torch.where(self.threshold_set, 0.01, 1.0).to(self.threshold.dtype)
            self.threshold.lerp_(kept_min, weight)
            self.threshold_set |= found
        return torch.zeros_like(flat).scatter(-1, idx, vals).view(K, B, S)


class _JumpStep(torch.autograd.Function):
    """z = pre * H(pre - theta). The Heaviside gets a straight-through gradient with respect to
    theta through a rectangle kernel of width `bandwidth` (Rajamanoharan et al. 2024, eq. 11)."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad_out * (pre > theta)
        kernel = ((pre - theta).abs() < eps / 2).to(pre.dtype) / eps
        grad_theta = -(theta * kernel * grad_out)
        grad_theta = grad_theta.sum(dim=1, keepdim=True)  # reduce over the batch
        return grad_pre, grad_theta, None


class JumpReLUSAE(SAE):
    def __init__(self, cfg: SAEConfig, n_arms: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(cfg, n_arms, seed, dtype)
        theta = torch.full((n_arms, cfg.d_sae), max(cfg.jumprelu_threshold, 1e-12), dtype=dtype)
        self.log_threshold = nn.Parameter(theta.log())

    def threshold(self) -> Tensor:
        """theta = exp(log_threshold), [K, 1, S] (broadcasts over the batch)."""
        return self.log_threshold.exp().unsqueeze(1)

    def activate(self, pre: Tensor) -> Tensor:
        # theta = exp(log theta) > 0, so pre * H(pre - theta) is already 0 for pre <= 0: no ReLU
        # first. A ReLU there maps every negative pre-activation to 0, which the kernel counts as
        # inside the window |pre - theta| < bandwidth/2 whenever theta < bandwidth/2 (a threshold
        # x0.1 arm, or one shrinking in training): the threshold's gradient then summed over half
        # the batch (tools/reference_remedies.py measured 1.48 against SAELens' 0.06)
        return _JumpStep.apply(pre, self.threshold(), self.cfg.jumprelu_bandwidth)


MODELS: dict[str, type[SAE]] = {
    "relu": ReLUSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReLUSAE,
}


def build(cfg: SAEConfig, n_arms: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32) -> SAE:
    """Build the registered variant for ``cfg.architecture`` with ``n_arms`` stacked copies."""
    return MODELS[cfg.architecture](cfg, n_arms=n_arms, seed=seed, dtype=dtype)
