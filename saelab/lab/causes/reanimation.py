"""Phase 05: does seed 000's reanimation loss revive dead latents without dense noise?

Seed 000: ``loss -= coef * mean(pre_codes * is_dead)``, latents dead in the batch pushed back
towards firing. The phase's base has resampling off (the loss is the remedy under test). Arms on
the base's architecture: each coefficient, an annealed one, and AuxK (Gao 2024); each other
architecture asked for gets a reference arm (the architecture changed, nothing else) with coefficient
0, the middle coefficient and AuxK, compared with that reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saelab.lab.hypothesis import Arm, Context, Hypothesis, Phase, compared, judged
from saelab.lab.verdicts import RunsBySeed, dense_share, paired, pm, rule, stats, tail

STEM = "05_reanimation"
ARCHS = ("relu", "topk", "batchtopk", "jumprelu")
AUX = ("aux.reanimation_coef", "aux.reanimation_schedule", "aux.reanimation_anneal_steps", "aux.auxk_coef", "aux.auxk_k",
       "tracking.dead_tokens")


def _shared(base: Any, params: Mapping[str, Any], default_case: bool) -> dict[str, Any]:
    if params["resample_strategy"] not in ("off", "seed", "seed-fix", "anthropic"):
        raise ValueError(f"resample_strategy={params['resample_strategy']!r}: choose off, seed, seed-fix or anthropic")
    return {"resample.strategy": params["resample_strategy"]}


def _coefs(ctx: Context) -> list[float]:
    coefs = ctx.params["aux_reanimation_coef"]
    if not isinstance(coefs, (list, tuple)) or not coefs or any(
            isinstance(c, bool) or not isinstance(c, (int, float)) or c <= 0 for c in coefs):
        raise ValueError(f"aux_reanimation_coef={coefs!r} must list coefficients > 0 (0, the reference, is always trained)")
    return sorted(float(c) for c in coefs)


def _middle(ctx: Context) -> float:
    c = _coefs(ctx)
    return 1e-3 if 1e-3 in c else c[len(c) // 2]


def _arch_changes(ctx: Context, arch: str) -> dict[str, Any]:
    """The base with another architecture: TopK-family k at 5% of the latents and no L1 (Gao
    2024); relu/jumprelu keep the base's penalty."""
    ch: dict[str, Any] = {"sae.architecture": arch}
    if arch in ("topk", "batchtopk"):
        ch |= {"sae.k": max(1, round(0.05 * ctx.base.sae.d_sae)), "penalty.form": "none", "penalty.alpha": 0.0}
    return ch


def _auxk_changes(ctx: Context) -> dict[str, Any]:
    """AuxK at the asked weight; its dead window must be able to fire within the run: at most a
    tenth of the run's tokens."""
    c = ctx.base
    run_tokens = c.steps * c.data.batch_size
    return {"aux.auxk_coef": float(ctx.params["aux_auxk_coef"]), "aux.auxk_k": min(c.aux.auxk_k, max(1, c.sae.d_sae // 2)),
            "tracking.dead_tokens": min(c.tracking.dead_tokens, max(1, run_tokens // 10))}


def _arms(ctx: Context) -> list[Arm]:
    c, out = ctx.base, []
    own = c.sae.architecture
    archs = ctx.params["sae_architecture"]
    if not isinstance(archs, (list, tuple)) or any(a not in ARCHS for a in archs):
        raise ValueError(f"sae_architecture={archs!r}: a list from {list(ARCHS)}")
    anneal = ctx.params["aux_reanimation_schedule"]
    if anneal not in ("constant", "linear_anneal"):
        raise ValueError(f"aux_reanimation_schedule={anneal!r}: choose constant or linear_anneal")
    for c_ in _coefs(ctx):
        if c_ != c.aux.reanimation_coef:
            out.append(Arm(f"reanim_{c_:g}", {"aux.reanimation_coef": c_}))
    mid = _middle(ctx)
    if anneal == "linear_anneal":  # to 0 by mid-training (seed 000)
        out.append(Arm(f"reanim_anneal_{mid:g}", {"aux.reanimation_coef": mid, "aux.reanimation_schedule": "linear_anneal",
                                                  "aux.reanimation_anneal_steps": max(1, c.steps // 2)}))
    if ctx.params["aux_auxk_coef"] and c.aux.auxk_coef == 0:
        out.append(Arm("auxk", _auxk_changes(ctx)))
    # other architectures: only from a base whose penalty carries over (relu / jumprelu; a JumpReLU's
    # L0 penalty, penalty.form=l0, counts latents above a threshold a relu does not have)
    for arch in archs:
        if arch == own or (arch in ("relu", "jumprelu") and own not in ("relu", "jumprelu")):
            continue
        if arch == "relu" and c.penalty.form == "l0":
            continue
        ref = _arch_changes(ctx, arch)
        out.append(Arm(arch, ref, against=None))
        out.append(Arm(f"{arch}_reanim_{mid:g}", ref | {"aux.reanimation_coef": mid}, against=arch))
        if ctx.params["aux_auxk_coef"]:
            out.append(Arm(f"{arch}_auxk", ref | _auxk_changes(ctx), against=arch))
    return out


def _revival(runs: RunsBySeed, ref: str, arm: str) -> dict[str, Any]:
    dead = paired(runs, ref, arm, lambda r: tail(r, "dead_frac"))
    dense = paired(runs, ref, arm, dense_share)
    l0 = paired(runs, ref, arm, lambda r: tail(r, "l0"))
    return {"dead": dead, "rev": [b - a for b, a in dead], "inc": [a - b for b, a in dense], "dense": dense,
            "ratio": [a / b if b > 0 else float("inf") for b, a in l0]}


def _judge(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> list[dict]:
    """R1 · the reanimation term revives dead latents without dense noise. Per architecture, the
    arm at coefficient 1e-3 (seed 000's value; else the middle one) vs its reference (the base, or
    the architecture's reference arm), at the end of training: revival = dead(ref) - dead(arm);
    dense share = the fraction of alive latents firing on > 50% of held-out rows. Confirmed when,
    in every replicate, revival > 5 points, the dense share grows by <= 10 points and L0 by at most
    1.5x; refuted when, in every replicate, revival <= 1 point, or the dense share grows by > 20
    points, or L0 over 2x; inconclusive when the reference has under 1% dead at the end in every
    replicate (nothing to revive)."""
    mid, out, names = _middle(ctx), [], {a.name for a in arms}
    groups = [(ctx.base.sae.architecture, "base", f"reanim_{mid:g}")]
    groups += [(a.name, a.name, f"{a.name}_reanim_{mid:g}") for a in arms if a.against is None]
    for arch, ref, arm in groups:
        if arm not in names:
            continue
        x = _revival(runs, ref, arm)
        word = rule([r > 0.05 and i <= 0.10 and q <= 1.5 for r, i, q in zip(x["rev"], x["inc"], x["ratio"])],
                    [r <= 0.01 or i > 0.20 or q > 2 for r, i, q in zip(x["rev"], x["inc"], x["ratio"])])
        if all(b < 0.01 for b, _ in x["dead"]):
            word = "inconclusive"
        others = [a.name for a in arms if a.name not in (ref, arm) and (a.against == ref or (ref == "base" and a.against == "base"))]
        effect = (f"final dead: {ref} {pm([b for b, _ in x['dead']])}, {arm} {pm([a for _, a in x['dead']])} (revival {pm(x['rev'])}); "
                  f"dense share of alive latents {pm([b for b, _ in x['dense']])} -> {pm([a for _, a in x['dense']])}; "
                  f"L0 x{pm(x['ratio'], False)}" + "".join(
                      f"; {o} final dead {pm([a for _, a in paired(runs, ref, o, lambda r: tail(r, 'dead_frac'))])}" for o in others))
        if word == "inconclusive" and all(b < 0.01 for b, _ in x["dead"]):
            effect = f"nothing to revive: {ref} ends with under 1% dead in every replicate; " + effect
        out.append(judged(R1, STEM, word, effect, {"coef": mid, "revival": stats(x["rev"])["mean"],
                                                   "dense_increase": stats(x["inc"])["mean"], "l0_ratio": stats(x["ratio"])["mean"],
                                                   "ref_final_dead": stats([b for b, _ in x["dead"]])["mean"]},
                          compared({a.name: dict(a.changes) for a in arms}, arm, *others), hid=f"R1-{arch}",
                          claim=f"reanimation revives dead latents without dense noise ({arch})"))
    return out


R1 = Hypothesis("R1", "reanimation revives dead latents without dense noise", "remedy", AUX + (
    "sae.architecture", "sae.k", "penalty.form", "penalty.alpha"), lambda ctx: None, _arms, _judge,
    source="seeds/000; Gao 2024 (AuxK)")

INTRO = """Seed 000 proposes an auxiliary loss, `-coef * mean(pre_codes * is_dead)`, that pushes the
pre-activations of latents dead in the batch upwards, and claims it revives them "without simply creating
dense noise". Resampling is off in every arm here (the loss is the remedy under test). Arms on the base's
own architecture: each coefficient, an annealed one and AuxK (Gao 2024); for each other architecture asked
for, a reference arm (the architecture changed) with the middle coefficient and AuxK. "Dense noise" is the
share of alive latents that fire on more than half of the rows."""

PHASE = Phase(
    STEM,
    "Reanimation loss",
    "Does seed 000's auxiliary loss revive dead latents without dense noise?",
    INTRO,
    (R1,),
    {
        "aux_reanimation_coef": (
            "aux.reanimation_coef",
            [1e-4, 1e-3, 1e-2],
            "coefficients > 0 trained besides the base's (seed 000: 1e-4 to 1e-3)",
        ),
        "aux_reanimation_schedule": (
            "aux.reanimation_schedule",
            "linear_anneal",
            "linear_anneal adds an arm annealing the middle coefficient to 0 by mid-training",
        ),
        "aux_auxk_coef": ("aux.auxk_coef", 1 / 32, "weight of the AuxK arm (Gao 2024: 1/32); 0: no AuxK arm"),
        "sae_architecture": (
            "sae.architecture",
            ["topk", "jumprelu"],
            "other architectures, each with a reference arm, the middle coefficient and AuxK",
        ),
        "resample_strategy": ("resample.strategy", "off", "resampling in every arm of this phase (off: the loss alone)"),
    },
    ("Dead latents against L0, per coefficient", ("plots.dead_vs_l0(run.first())",)),
    shared=_shared,
)
