"""Phase 02: does the LR warmup cause the collapse? (seeds/004 Bug #2: "LR jumps 5x at step 5,000".)"""

from __future__ import annotations

from saelab.lab.hypothesis import Arm, Context, Hypothesis, Phase, best_fix, compared, judged, removes_deaths
from saelab.lab.verdicts import RunsBySeed, peak, per_seed, pm, rule
from saelab.training.schedules import lr_curve, max_relative_change

STEM = "02_lr_warmup"
SCHEDULE = ("schedule.shape", "schedule.warmup_steps")
SHAPES = ("constant", "linear_warmup", "warmup_cosine", "warmup_linear_decay")


def _has_warmup(ctx: Context) -> str | None:
    s = ctx.base.schedule
    if s.shape == "constant" or s.warmup_steps <= 0:
        return "the base has no LR warmup (schedule.shape=constant or warmup_steps=0)"
    return None


def _arms(ctx: Context) -> list[Arm]:
    """No warmup; the base's warmup length times each multiplier (kept inside the run); the other
    LR shapes asked for, at the base's warmup."""
    s, n = ctx.base.schedule, ctx.base.steps
    arms = [Arm("no_warmup", {"schedule.shape": "constant"})]
    ms = ctx.params["schedule_warmup_steps_multipliers"]
    if not isinstance(ms, (list, tuple)) or any(isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0 for m in ms):
        raise ValueError(f"schedule_warmup_steps_multipliers={ms!r} must be a list of numbers > 0")
    seen = {s.warmup_steps}
    for m in ms:
        w = min(n - 1, max(1, round(s.warmup_steps * m)))
        if w not in seen:
            seen.add(w)
            arms.append(Arm(f"warmup_x{m:g}", {"schedule.warmup_steps": w}))
    shapes = ctx.params["schedule_shape"]
    if not isinstance(shapes, (list, tuple)) or any(x not in SHAPES for x in shapes):
        raise ValueError(f"schedule_shape={shapes!r}: a list of shapes from {list(SHAPES)}")
    arms += [Arm(x, {"schedule.shape": x}) for x in shapes if x not in (s.shape, "constant")]
    return arms


def _judge(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H2 · the warmup causes the deaths: base vs no_warmup (constant LR, nothing else changed) by
    ``hypothesis.removes_deaths``. The other warmup lengths and shapes are reported beside it.
    Nothing is blamed because it happened near the deaths."""
    r = removes_deaths(runs, "base", "no_warmup")
    others = {a.name: per_seed(runs, a.name, peak) for a in arms if a.name != "no_warmup"}
    effect = r["effect"] + "".join(f"; {a} peak dead {pm(v)}" for a, v in others.items())
    return judged(
        H2,
        STEM,
        r["word"],
        effect,
        r["numbers"],
        compared({a.name: dict(a.changes) for a in arms}, *[a.name for a in arms]),
        fix="no_warmup",
    )


def _jump_applies(ctx: Context) -> str | None:
    s = ctx.base.schedule
    if s.shape not in ("linear_warmup", "warmup_cosine", "warmup_linear_decay") or s.warmup_steps <= 1:
        return "the base has no linear warmup longer than one step"
    return None


def _judge_jump(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H2a · the LR jumps ~5x at the end of warmup (the seed: "0.00006 -> 0.0003"). From the base's
    schedule (every step): the relative change from the step before warmup end to warmup end.
    Confirmed when it is >= 4 (a 5x jump); refuted when it is < 5%; else inconclusive."""
    cfg = ctx.base
    lr, w = lr_curve(cfg), cfg.schedule.warmup_steps
    jump = float((lr[w] - lr[w - 1]) / lr[w - 1]) if 1 < w < len(lr) and lr[w - 1] > 0 else float("nan")
    word = rule([jump >= 4], [jump < 0.05])
    biggest, at = max_relative_change(lr)
    effect = (f"LR at warmup end (step {w}) rises by {100 * jump:.2f}% over the step before (linear warmup: 1/(warmup-1)); "
              f"the largest step-to-step change anywhere is {100 * biggest:.0f}% at step {at}, at the start of warmup; "
              "the seed's 5x compares step 1,000 with step 5,000, not adjacent steps")
    return judged(H2A, STEM, word, effect, {"relative_jump": jump, "warmup_steps": w, "largest_change": biggest,
                                            "largest_change_step": at})


LR_DOWN = [0.3, 0.1, 0.03, 0.01]  # H9's dose ladder (saelab.lab.dose): the peak LR down in ~3x steps
LR_UP = [3, 10, 30]  # H10's


def _lr_arms(ctx: Context, higher: bool, ladder: list[float] | None = None) -> list[Arm]:
    ms = ctx.params["optim_lr_multipliers"] if ladder is None else ladder
    if not isinstance(ms, (list, tuple)) or any(isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0 for m in ms):
        raise ValueError(f"optim_lr_multipliers={ms!r} must be a list of numbers > 0")
    lr = ctx.base.optim.lr
    return [Arm(f"lr_x{m:g}", {"optim.lr": lr * m}) for m in ms if (m > 1 if higher else m < 1)]


def _judge_lr(h: Hypothesis, word: str):
    def judge(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
        name, r = best_fix(runs, "base", [a.name for a in arms])
        return judged(h, STEM, r["word"], f"best {word} LR {name}: {r['effect']}", r["numbers"] | {"best": name},
                      compared({a.name: dict(a.changes) for a in arms}, *[a.name for a in arms]), fix=name)
    return judge


def _momentum(ctx: Context) -> str | None:
    return None if ctx.base.optim.beta1 > 0 else "the base's Adam has no momentum already (optim.beta1=0)"


def _judge_momentum(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H14 · Adam's momentum keeps pushing dying latents past the point of return (a latent whose
    last gradients pushed its bias down keeps moving down after it stops firing): base vs beta1 = 0
    (no first-moment averaging; Anthropic's April 2024 update trains without it) by ``removes_deaths``."""
    r = removes_deaths(runs, "base", "adam_beta1_0")
    return judged(H14, STEM, r["word"], r["effect"], r["numbers"], compared({a.name: dict(a.changes) for a in arms}, "adam_beta1_0"),
                  fix="adam_beta1_0")


H9 = Hypothesis("H9", "the learning rate is too high: it kills latents", "cause", ("optim.lr",), lambda ctx: None,
                lambda ctx: _lr_arms(ctx, False), lambda runs, ctx, arms: _judge_lr(H9, "lower")(runs, ctx, arms),
                source="Bricken 2023; Conerly 2024 (dead latents at high LR)", doses=lambda ctx: _lr_arms(ctx, False, LR_DOWN))
H10 = Hypothesis("H10", "the learning rate is too low: dead latents never recover", "cause", ("optim.lr",), lambda ctx: None,
                 lambda ctx: _lr_arms(ctx, True), lambda runs, ctx, arms: _judge_lr(H10, "higher")(runs, ctx, arms),
                 source="lab", doses=lambda ctx: _lr_arms(ctx, True, LR_UP))
H14 = Hypothesis("H14", "Adam's momentum carries dying latents past the point of return", "cause", ("optim.beta1",), _momentum,
                 lambda ctx: [Arm("adam_beta1_0", {"optim.beta1": 0.0})], _judge_momentum,
                 source="Kingma & Ba 2015; Anthropic April 2024 (beta1 0)")

def _decays(ctx: Context) -> str | None:
    return None if ctx.base.optim.weight_decay > 0 else "the base trains without weight decay (optim.weight_decay=0)"


def _judge_decay(runs: RunsBySeed, ctx: Context, arms: list[Arm]) -> dict:
    """H20 · weight decay kills latents: AdamW's decoupled decay shrinks every encoder and decoder
    row by lr x weight_decay per step whatever the latent does, while only a firing latent gets
    gradient to push back; a rarely firing latent's encoder row shrinks until its pre-activations
    stay below zero. Base vs the same optimizer without decay (weight_decay 0, nothing else
    changed) by ``removes_deaths``."""
    r = removes_deaths(runs, "base", "no_weight_decay")
    return judged(H20, STEM, r["word"], r["effect"], r["numbers"] | {"base_weight_decay": ctx.base.optim.weight_decay},
                  compared({a.name: dict(a.changes) for a in arms}, "no_weight_decay"), fix="no_weight_decay",
                  claim=f"weight decay (optim.weight_decay={ctx.base.optim.weight_decay:g}) kills latents")


H20 = Hypothesis("H20", "weight decay kills latents", "cause", ("optim.weight_decay",), _decays,
                 lambda ctx: [Arm("no_weight_decay", {"optim.weight_decay": 0.0})], _judge_decay,
                 source="Loshchilov & Hutter 2019 (AdamW's decoupled weight decay); SAE recipes train without it "
                        "(Bricken 2023, Gao 2024)")

H2 = Hypothesis("H2", "the LR warmup causes the deaths", "cause", SCHEDULE, _has_warmup, _arms, _judge, source="seeds/004 Bug #2")
H2A = Hypothesis("H2a", "the LR jumps 5x at the end of warmup", "fact", (), _jump_applies, lambda ctx: [], _judge_jump,
                 source="seeds/004 Bug #2")

INTRO = """The seed's Bug #2: "LR jumps from 0.00006 to 0.0003 (5x) at step 5,000". A linear warmup has no
jump: its largest step-to-step change at warmup end is 1/(warmup - 1). The arms change only the base's LR
schedule: no warmup, its warmup length shorter and longer, and the other shapes asked for. The warmup is a
cause only if removing it removes the deaths; ending near them is not evidence. Beside them: the base's peak
learning rate lower and higher, Adam without momentum (beta1 = 0), and, for a base that trains with AdamW's
weight decay, the same optimizer without it."""

PHASE = Phase(
    STEM,
    "Learning rate, warmup and Adam",
    "Do the learning rate, its warmup, Adam's momentum or weight decay kill latents?",
    INTRO,
    (H2, H2A, H9, H10, H14, H20),
    {
        "schedule_shape": ("schedule.shape", ["warmup_cosine"], "LR shapes besides the base's and constant (no warmup, always trained)"),
        "schedule_warmup_steps_multipliers": ("schedule.warmup_steps", [0.2, 5], "the base's warmup length times each of these"),
        "optim_lr_multipliers": (
            "optim.lr",
            [0.1, 0.3, 3],
            "the base's peak LR times each of these: < 1 tests 'too high' (H9), > 1 'too low' (H10)",
        ),
    },
    (
        "LR schedules and their largest step-to-step change",
        ("plots.lr_schedules(run.first(), {arm: schedules.lr_curve(r.config) for arm, r in run.first().items()})",),
    ),
)
