"""The fast paths give the plain paths' numbers (benchmarks/ measures their speed; nothing is timed here).

- TopK: sparse encode/decode (embedding bags, gradients only through the selected latents) vs
  the dense reference encode()/decode(), forward and backward
- stacked K-arm training vs K separate one-arm trainings, each arm with its own lr, alpha and form
- StackedAdam (torch's fused kernel on arm slices) vs torch.optim.Adam
- per-arm gradient clipping vs torch.nn.utils.clip_grad_norm_
- the rewritten held-out evaluation vs the plain float64 formulas
- the synthetic source's geometric-skipping sampler vs the Bernoulli pattern it replaces
- RunConfig.compile (torch.compile'd forward and losses) vs eager, every architecture
"""

from __future__ import annotations

import pytest
import torch

from saelab.config import RunConfig, SAEConfig
from saelab.data.sources import SyntheticSource, _active_pairs, _SkipPlan
from saelab.training import losses, stack
from saelab.training.models import build, sparse_decode
from saelab.training.optim import StackedAdam

D_IN, D_SAE, B = 12, 40, 9



def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _topk(K: int, k: int = 5):
    model = build(SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=k), n_arms=K, seed=0)
    with torch.no_grad():  # distinct arms and non-zero biases, so every parameter matters
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=_gen(p.numel())))
    return model


def _grads_of(model, x: torch.Tensor, fast: bool, use_pre: bool) -> list[torch.Tensor]:
    model.zero_grad()
    if fast:
        pre, codes, x_hat = model(x)
    else:
        pre, codes = model.encode(x)
        x_hat = model.decode(codes)
    loss = (x_hat - x).square().sum() + 0.3 * codes.abs().sum()
    if use_pre:  # a loss on pre itself (reanimation, AuxK) takes the dense backward
        loss = loss + 0.05 * (pre * pre.detach().sign()).sum()
    loss.backward()
    return [pre.detach(), codes.detach(), x_hat.detach()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("use_pre", [False, True])
@pytest.mark.parametrize("shared_input", [False, True])
def test_sparse_topk_matches_the_dense_reference(K, use_pre, shared_input):
    model = _topk(K)
    x = torch.randn(K, B, D_IN, generator=_gen(1))
    if shared_input:  # what _normalize hands over when every arm normalizes alike: a stride-0 view
        x = x[:1].expand(K, -1, -1)
    fast = _grads_of(model, x, True, use_pre)
    ref = _grads_of(model, x, False, use_pre)
    names = ["pre", "codes", "x_hat"] + [n for n, _ in model.named_parameters()]
    for name, a, b in zip(names, fast, ref):
        if name in ("pre", "codes"):
            assert torch.equal(a, b), name  # the same products and the same selection
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    assert all(g.abs().sum() > 0 for g in fast[3:])


def test_sparse_decode_equals_the_dense_product_and_its_gradients():
    K, S, d, k = 2, 64, 7, 4
    g = _gen(3)
    W = torch.randn(K, S, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(K, d, generator=g, dtype=torch.float64, requires_grad=True)
    idx = torch.stack([torch.randperm(S, generator=g)[:k] for _ in range(K * B)]).view(K, B, k)
    acts = torch.rand(K, B, k, generator=g, dtype=torch.float64, requires_grad=True)
    out = sparse_decode(acts, idx, W, b)
    dense = torch.zeros(K, B, S, dtype=torch.float64).scatter(-1, idx, acts)
    torch.testing.assert_close(out, dense @ W + b.unsqueeze(1))
    assert torch.autograd.gradcheck(lambda a, w, bb: sparse_decode(a, idx, w, bb), (acts, W, b))


def test_sparse_topk_is_deterministic():
    model = _topk(2)
    x = torch.randn(2, B, D_IN, generator=_gen(4))
    a, b = _grads_of(model, x, True, False), _grads_of(model, x, True, False)
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # resume depends on it


def test_dense_encoder_gradient_has_the_parameter_layout():
    """The encoder's own backward returns dW_enc in W_enc's layout, so no copy is needed."""
    model = build(SAEConfig(d_in=D_IN, d_sae=D_SAE), n_arms=2, seed=0)
    x = torch.randn(2, B, D_IN, generator=_gen(5))
    _, codes, x_hat = model(x)
    ((x_hat - x).square().sum() + codes.sum()).backward()
    assert model.W_enc.grad.is_contiguous()
    W, bb = model.W_enc.detach().requires_grad_(), model.b_enc.detach().requires_grad_()
    pre = torch.baddbmm(bb.unsqueeze(1), x, W.transpose(1, 2))
    dec = torch.baddbmm(model.b_dec.detach().unsqueeze(1), torch.relu(pre), model.W_dec.detach())
    ((dec - x).square().sum() + torch.relu(pre).sum()).backward()
    torch.testing.assert_close(model.W_enc.grad, W.grad)
    torch.testing.assert_close(model.b_enc.grad, bb.grad)


# ----- the optimizer ----------------------------------------------------------------------------


def _params(K: int, seed: int) -> dict[str, torch.nn.Parameter]:
    g = _gen(seed)
    return {"W": torch.nn.Parameter(torch.randn(K, 6, 5, generator=g)),
            "b": torch.nn.Parameter(torch.randn(K, 6, generator=g))}


@pytest.mark.parametrize("fused", [True, False])
def test_stacked_adam_is_torch_adam_for_one_arm(fused):
    ours = _params(1, 0)
    ref = {n: torch.nn.Parameter(p.detach().clone()) for n, p in ours.items()}
    opt = StackedAdam(ours, torch.tensor([[0.9, 0.999]], dtype=torch.float64), torch.tensor([1e-8], dtype=torch.float64))
    torch_opt = torch.optim.Adam(list(ref.values()), lr=1e-2, fused=fused, foreach=None if fused else True)
    for step in range(8):
        grads = {n: torch.randn(p.shape, generator=_gen(100 + step)) for n, p in ours.items()}
        for n in ours:
            ours[n].grad, ref[n].grad = grads[n].clone(), grads[n].clone()
        opt.step([1e-2])
        torch_opt.step()
    for n in ours:
        if fused:  # the same kernel: bit for bit
            assert torch.equal(ours[n], ref[n]), n
        else:  # the for-each implementation rounds differently in the last bit
            torch.testing.assert_close(ours[n], ref[n], rtol=1e-6, atol=1e-7)


def test_stacked_adam_keeps_every_arms_hyperparameters():
    K = 4
    ours = _params(K, 1)
    betas = torch.tensor([[0.9, 0.999], [0.8, 0.99], [0.9, 0.999], [0.5, 0.9]], dtype=torch.float64)
    eps = torch.tensor([1e-8, 1e-6, 1e-8, 1e-3], dtype=torch.float64)
    opt = StackedAdam(ours, betas, eps)
    refs = []
    for k in range(K):
        ps = [torch.nn.Parameter(p.detach()[k].clone()) for p in ours.values()]
        refs.append((ps, torch.optim.Adam(ps, lr=1.0, betas=tuple(betas[k].tolist()), eps=float(eps[k]), fused=True)))
    for step in range(6):
        lrs = [1e-2, 3e-3, 1e-2, 0.0] if step % 2 else [1e-2, 1e-2, 2e-2, 1e-3]  # arms 0 and 2 sometimes share
        grads = [torch.randn(p.shape, generator=_gen(7 * step + i)) for i, p in enumerate(ours.values())]
        for p, gr in zip(ours.values(), grads):
            p.grad = gr.clone()
        opt.step(lrs)
        for k, (ps, o) in enumerate(refs):
            o.param_groups[0]["lr"] = lrs[k]
            for p, gr in zip(ps, grads):
                p.grad = gr[k].clone()
            o.step()
    for k, (ps, _) in enumerate(refs):
        for p, (n, q) in zip(ps, ours.items()):
            assert torch.equal(q.detach()[k], p.detach()), f"arm {k} {n}"


def test_weight_decay_is_torch_adamw_on_the_weights_and_leaves_the_biases_alone():
    """optim.weight_decay: arm 1 decays W_enc and W_dec like torch.optim.AdamW (decoupled, applied
    before the Adam step); its biases and arm 0 (no decay) follow plain Adam."""
    g = _gen(3)
    ours = {"W_enc": torch.nn.Parameter(torch.randn(2, 6, 5, generator=g)), "b_enc": torch.nn.Parameter(torch.randn(2, 6, generator=g)),
            "W_dec": torch.nn.Parameter(torch.randn(2, 6, 5, generator=g))}
    betas = torch.tensor([[0.9, 0.999]] * 2, dtype=torch.float64)
    opt = StackedAdam(ours, betas, torch.tensor([1e-8] * 2, dtype=torch.float64), torch.tensor([0.0, 0.5], dtype=torch.float64))
    refs = {}
    for k, decay in ((0, 0.0), (1, 0.5)):
        ps = {n: torch.nn.Parameter(p.detach()[k].clone()) for n, p in ours.items()}
        refs[k] = (ps, torch.optim.AdamW([ps["W_enc"], ps["W_dec"]], lr=1e-2, weight_decay=decay, fused=True),
                   torch.optim.Adam([ps["b_enc"]], lr=1e-2, fused=True))
    for step in range(6):
        grads = {n: torch.randn(p.shape, generator=_gen(50 + step)) for n, p in ours.items()}
        for n, p in ours.items():
            p.grad = grads[n].clone()
        opt.step([1e-2, 1e-2])
        for k, (ps, w, b) in refs.items():
            for n, p in ps.items():
                p.grad = grads[n][k].clone()
            w.step(), b.step()
    for k, (ps, _, _) in refs.items():
        for n, p in ps.items():
            torch.testing.assert_close(ours[n].detach()[k], p.detach(), rtol=1e-6, atol=1e-7, msg=f"arm {k} {n}")
    assert not torch.allclose(ours["W_enc"].detach()[0], ours["W_enc"].detach()[1])  # the decay did act


def test_adam_divides_the_gradients_inside_its_pass():
    """Clipping hands Adam a per-arm divisor instead of rescaling the gradients first."""
    a, b = _params(3, 2), _params(3, 2)
    hyper = (torch.tensor([[0.9, 0.999]] * 3, dtype=torch.float64), torch.tensor([1e-8] * 3, dtype=torch.float64))
    opt_a, opt_b = StackedAdam(a, *hyper), StackedAdam(b, *hyper)
    divisor = torch.tensor([1.0, 2.5, 40.0])
    for step in range(4):
        for n in a:
            grad = torch.randn(a[n].shape, generator=_gen(50 + step))
            a[n].grad = grad.clone()
            b[n].grad = grad / divisor.view(-1, *[1] * (grad.ndim - 1))
        opt_a.step([1e-2, 1e-2, 3e-3], divisor)
        opt_b.step([1e-2, 1e-2, 3e-3])
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-6, atol=1e-7)
    assert not torch.equal(a["W"][2], _params(3, 2)["W"][2])


def test_per_arm_clipping_is_clip_grad_norm_per_arm():
    model = build(SAEConfig(d_in=D_IN, d_sae=D_SAE), n_arms=3, seed=0)
    grads = {n: torch.randn(p.shape, generator=_gen(i)) * (1 + torch.arange(3.0)).view(-1, *[1] * (p.ndim - 1))
             for i, (n, p) in enumerate(model.named_parameters())}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    max_norm = torch.tensor([0.5, 0.0, 4.0])  # 0 disables clipping for that arm
    stack.clip_per_arm(model, max_norm)
    for k in range(3):
        ref = [torch.nn.Parameter(grads[n][k].clone()) for n, _ in model.named_parameters()]
        for r in ref:
            r.grad = r.detach().clone()
        if max_norm[k] > 0:
            torch.nn.utils.clip_grad_norm_(ref, float(max_norm[k]))
        for r, (n, p) in zip(ref, model.named_parameters()):
            torch.testing.assert_close(p.grad[k], r.grad, msg=f"arm {k} {n}")


# ----- stacked arms = separate arms ------------------------------------------------------------

TINY = RunConfig().with_overrides({
    "sae.d_in": 16, "sae.d_sae": 24, "data.n_features": 40, "data.mean_active": 3.0, "data.batch_size": 16,
    "steps": 40, "log_interval": 40, "schedule.warmup_steps": 5, "penalty.form": "per_sample_sum", "penalty.alpha": 0.1,
    "optim.lr": 3e-3, "normalize.mode": "constant_norm_rescale",
})
ARMS = [
    TINY,
    TINY.with_overrides({"optim.lr": 1e-3, "penalty.alpha": 0.3}),
    TINY.with_overrides({"penalty.form": "mean_all", "penalty.alpha": 0.003, "optim.grad_clip": 0.5}),
    TINY.with_overrides({"normalize.mode": "none", "aux.reanimation_coef": 1e-2, "optim.beta2": 0.99}),
]


def _train_steps(cfgs: list[RunConfig], steps: int) -> stack.Group:
    src = SyntheticSource(cfgs[0].data, 16, cfgs[0].seed)
    (group,) = stack.build_groups(cfgs, src, torch.device("cpu"))
    for s in range(steps):
        stack.step_group(group, cfgs, src.batch(s, cfgs[0].data.batch_size), s)
    return group


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_stacked_arms_train_like_separate_arms(arch):
    arms = [c.with_overrides({"sae.architecture": arch, "sae.k": 4}) for c in ARMS]
    stacked = _train_steps(arms, 12)
    assert len(stacked.idx) == len(arms)
    for k, cfg in enumerate(arms):
        alone = _train_steps([cfg], 12)
        for name, p in alone.model.named_parameters():
            torch.testing.assert_close(getattr(stacked.model, name)[k], p[0], rtol=1e-5, atol=1e-6,
                                       msg=f"{arch} arm {k} {name}")
        for name in ("m", "v"):
            torch.testing.assert_close(stacked.adam.state["W_dec"][name][k], alone.adam.state["W_dec"][name][0],
                                       rtol=1e-5, atol=1e-9)
        assert torch.equal(stacked.tracker.tokens_since_fired[k], alone.tracker.tokens_since_fired[0])


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_compiled_steps_train_like_eager_steps(arch):
    """compile=True runs the forward pass and loss terms through torch.compile (inductor); 12 steps
    of four arms with different forms, normalizations, clipping and reanimation end where eager ends."""
    arms = [c.with_overrides({"sae.architecture": arch, "sae.k": 4}) for c in ARMS]
    if arch != "relu":  # the TopK family trains without a |z| penalty, as its presets do
        arms = [c.with_overrides({"penalty.form": "none"}) for c in arms]
    eager = _train_steps(arms, 12)
    compiled = _train_steps([c.replace(compile=True) for c in arms], 12)
    assert compiled.forward is not stack.forward_losses  # the compiled path really ran
    for name, p in eager.model.named_parameters():
        torch.testing.assert_close(getattr(compiled.model, name), p, rtol=1e-4, atol=1e-6, msg=f"{arch} {name}")
    for name, b in eager.model.named_buffers():
        torch.testing.assert_close(getattr(compiled.model, name), b, msg=f"{arch} buffer {name}")
    for key in ("rec", "pen", "loss", "codes"):
        torch.testing.assert_close(compiled.last[key], eager.last[key], rtol=1e-4, atol=1e-6, msg=f"{arch} {key}")
    assert torch.equal(compiled.tracker.tokens_since_fired, eager.tracker.tokens_since_fired)


def test_skipped_terms_are_exact_zeros():
    """stack.step_group skips reanimation when no latent is dead in the batch and AuxK when no latent is
    dead by the tokens detector; computed, both terms would be exactly 0 (so skipping changes nothing)."""
    pre = torch.randn(2, B, D_SAE, generator=_gen(6))
    codes = torch.relu(pre) + 1e-3  # every latent fires on some row
    assert not losses.dead_in_batch(codes).any()
    assert torch.equal(losses.reanimation(pre, codes, torch.tensor([1e-2, 1.0])), torch.zeros(2))
    x = torch.randn(2, B, D_IN, generator=_gen(7))
    W_dec = torch.randn(2, D_SAE, D_IN, generator=_gen(8))
    none_dead = torch.zeros(2, D_SAE, dtype=torch.bool)
    assert torch.equal(losses.auxk(x, x * 0.5, pre, W_dec, none_dead, 4), torch.zeros(2))


# ----- evaluation -------------------------------------------------------------------------------


def test_evaluate_matches_the_plain_float64_formulas():
    arms = [ARMS[0], ARMS[3]]  # two normalizations: the per-arm path
    src = SyntheticSource(arms[0].data, 16, 0)
    group = _train_steps(arms, 5)
    x = src.eval_set(300)
    stack.evaluate(group, src.batch(0, 300))  # the cached variances must follow the tensor evaluated
    ev = stack.evaluate(group, x)
    for k, norm in enumerate(group.normalizers):
        X, info = norm(x)
        with torch.no_grad():
            _, codes, x_hat = group.model(X.unsqueeze(0).expand(2, -1, -1))
        codes, x_hat = codes[k], x_hat[k]
        X64 = X.double()
        sq = (x_hat.double() - X64).square().sum()
        orig = norm.inverse(x_hat, info).double()
        sq_orig = (orig - x.double()).square().sum()
        n, d = x.shape
        torch.testing.assert_close(ev["mse"][k], sq / (n * d), rtol=1e-6, atol=0)
        torch.testing.assert_close(ev["fvu"][k], sq / (X64 - X64.mean(0)).square().sum(), rtol=1e-6, atol=0)
        torch.testing.assert_close(ev["fvu_orig"][k], sq_orig / (x.double() - x.double().mean(0)).square().sum(),
                                   rtol=1e-6, atol=0)
        assert torch.equal(ev["fire"][k], (codes > 0).sum(0))
        assert ev["l0"][k].item() == pytest.approx((codes != 0).sum().item() / n)


# ----- synthetic data ---------------------------------------------------------------------------

P = torch.tensor([1.0, 0.999, 0.5, 0.1, 0.01, 0.0, 0.3, 2e-3], dtype=torch.float32)


@pytest.mark.parametrize("stingy", [False, True])
def test_geometric_skipping_draws_independent_bernoulli_pairs(stingy):
    """Per (row, feature) frequencies and the co-firing of neighbouring rows match independent
    Bernoulli(p). ``stingy`` gives every feature one draw too few at first, so the top-up path runs."""
    n, reps = 20, 3000
    plans = {n: _SkipPlan(P.double(), torch.arange(P.numel()), n, sds=0.0, extra=0)} if stingy else {}
    g = _gen(11)
    hits = torch.zeros(reps, n, P.numel(), dtype=torch.bool)
    for r in range(reps):
        rows, feats = _active_pairs(P, n, g, plans)
        assert (rows >= 0).all() and (rows < n).all()
        hits[r, rows, feats] = True
        assert int(hits[r].sum()) == rows.numel()  # no pair twice
    p = P.double()
    freq = hits.double().mean(0)  # [n, F]
    sd = (p * (1 - p) / reps).sqrt()
    assert ((freq - p).abs() <= 5 * sd + 1e-12).all()  # 5 sd over 160 cells: a false alarm is ~1e-4
    both = (hits[:, 1:] & hits[:, :-1]).double().mean((0, 1))  # neighbouring rows fire together at p^2
    sd2 = (p**2 * (1 - p**2) / (reps * (n - 1))).sqrt()
    assert ((both - p**2).abs() <= 6 * sd2 + 1e-12).all()
    assert freq[:, 0].eq(1).all() and freq[:, 5].eq(0).all()  # p = 1 always, p = 0 never


def test_synthetic_batches_stay_a_pure_function_of_seed_and_step():
    cfg = TINY.data
    a, b = SyntheticSource(cfg, 16, 3), SyntheticSource(cfg, 16, 3)
    b.batch(0, 64)  # a cached plan for another batch size must not change anything
    assert torch.equal(a.batch(7, 16), b.batch(7, 16))
    assert torch.equal(a.batch(7, 16), a.batch(7, 16))
    assert not torch.equal(a.batch(7, 16), a.batch(8, 16))
