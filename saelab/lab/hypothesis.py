"""What a hypothesis is, how a phase turns hypotheses into arms, and the rule of intervention.

A ``Hypothesis`` is one home for one suspected cause (or remedy): its claim, the config fields it
may change (its factor), when it can act on a base (``applies``), the arms that test it and the
rule that judges it. A ``Phase`` groups the hypotheses one notebook shows. ``build_arms`` turns a
phase and a base into the arms to train and the plan each hypothesis is judged on, and refuses
what would make a verdict dishonest: an arm equal to the one it is compared with, two arms with
the same config, an arm that changes a field outside its hypothesis's factor.

``removes_deaths`` is the rule of intervention: a cause is confirmed only when the arm that removes
it (one factor changed) lowers the peak and the final dead fraction beyond the spread over the
replicates (paired by seed); nothing is blamed for being near in time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from saelab.config import RunConfig
from saelab.lab.base import Profile, flatten
from saelab.lab.verdicts import RunsBySeed, peak, pm, stats, tail, verdict
from saelab.lab.wording import MEANING
from saelab.training.metrics import COLLAPSE_FVU

Kind = Literal["cause", "remedy", "fact"]  # what "confirmed" means for the researcher: bad, good, bad
MIN_EFFECT = 0.05  # dead-fraction points: the smallest reduction that counts as removing deaths
SPREAD_FACTOR = 2.0  # ... and it must exceed this many standard errors of the paired falls over the replicates


@dataclass(frozen=True)
class Arm:
    """One arm: ``changes`` (dotted config paths) applied to the phase's base; compared with the
    arm ``against`` ("base", another arm, or None: a reference that no rule compares with the base)."""

    name: str
    changes: Mapping[str, Any]
    against: str | None = "base"


@dataclass(frozen=True)
class Context:
    """What arm builders and rules may read besides the runs."""

    base: RunConfig  # the phase's base (the user's sized base, with the phase's shared settings)
    profile: Profile
    params: Mapping[str, Any]  # the phase's own parameters, validated
    default_case: bool  # the base is the lab's first case (the seed's Test 1 preset)
    steps_explicit: bool = False  # the notebook set `steps` (it then applies to every arm, reproductions too)
    prior_verdicts: tuple[dict, ...] = ()  # the other phases' verdicts, for a phase that reads them (06)


@dataclass(frozen=True)
class Hypothesis:
    id: str  # "H1"; a rule may return several verdicts ("R1-topk")
    claim: str  # what "confirmed" asserts, in the researcher's words
    kind: Kind
    factor: tuple[str, ...]  # config fields its arms may change (with the fields coupled to them)
    applies: Callable[[Context], str | None]  # None when it can act on the base, else why not
    arms: Callable[[Context], list[Arm]]
    judge: Callable[[RunsBySeed, Context, list[Arm]], dict | list[dict]]
    source: str = ""  # where the hypothesis comes from (the seed's plan, a paper)
    # the dose ladder of its one factor, weakest first (lr x0.3, x0.1, x0.03 ...): what the lab's dose
    # search (saelab.lab.dose) tries, one dose at a time, when the confirmed fix still leaves more than
    # MIN_EFFECT dead; None: the factor has no stronger dose (a switch, or already at its limit)
    doses: Callable[[Context], list[Arm]] | None = None


@dataclass(frozen=True)
class Phase:
    """One notebook: its question, the hypotheses it shows and its own parameters (notebook name ->
    (mirrored config field or None, default, help)). ``shared`` sets the phase's base from the
    user's (e.g. resampling off while a reanimation loss is tested); ``evidence`` is the notebook's
    figure code under its heading."""

    stem: str
    title: str
    question: str
    intro: str
    hypotheses: tuple[Hypothesis, ...]
    params: dict[str, tuple[str | None, Any, str]]
    evidence: tuple[str, tuple[str, ...]] = ("", ())
    shared: Callable[[RunConfig, Mapping[str, Any], bool], dict[str, Any]] | None = None  # (base, params, default_case)
    reads_prior: bool = False  # its arms depend on the other phases' verdicts (the fixed configuration)
    # the notebook's own sections, each (Markdown, code): before its training cell, and after it
    # (before the verdicts); ``verdicts_extra``: more arguments of its ``verdicts.write`` call
    before_training: tuple[tuple[str, str], ...] = ()
    after_training: tuple[tuple[str, str], ...] = ()
    verdicts_extra: str = ""

    @property
    def factor(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for h in self.hypotheses for f in h.factor))

    def defaults(self) -> dict[str, Any]:
        return {name: default for name, (_, default, _) in self.params.items()}


@dataclass
class Plan:
    """A phase's arms for one base: the configs to train (base first), each hypothesis's arms, and
    the hypotheses that cannot act with their reasons."""

    arms: dict[str, RunConfig]
    tested: dict[str, list[Arm]] = field(default_factory=dict)  # hypothesis id -> its arms
    not_applicable: dict[str, str] = field(default_factory=dict)  # hypothesis id -> reason
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> fields it changes vs. the base


def diff(a: RunConfig, b: RunConfig) -> dict[str, Any]:
    """Fields in which ``b`` differs from ``a`` -> b's value (the replicate seed ignored)."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return {k: v for k, v in fb.items() if fa.get(k) != v and k != "seed"}


def build_arms(phase: Phase, ctx: Context) -> Plan:
    """Every applicable hypothesis's arms on ``ctx.base``. Raises ValueError (an error in an arm
    builder, never the user's) when an arm equals the arm it is compared with, two arms have equal
    configs, one name means two configs, or an arm changes a field outside its factor."""
    plan = Plan({"base": ctx.base})
    for h in phase.hypotheses:
        reason = h.applies(ctx)
        if reason:
            plan.not_applicable[h.id] = reason
            continue
        arms = h.arms(ctx)
        if not arms and h.kind != "fact":  # a fact is read from the base's own runs; a cause or remedy needs an arm
            plan.not_applicable[h.id] = "no arm to train: the parameters ask for none, or each would equal the base"
            continue
        for arm in arms:
            cfg = ctx.base.with_overrides(dict(arm.changes))
            if arm.name in plan.arms:
                if plan.arms[arm.name] != cfg:
                    raise ValueError(f"{phase.stem}: arm {arm.name!r} is built twice with different configs")
            else:
                same = [n for n, c in plan.arms.items() if diff(c, cfg) == {} and diff(cfg, c) == {}]
                if same:
                    raise ValueError(f"{phase.stem}/{h.id}: arm {arm.name!r} equals arm {same[0]!r}")
                plan.arms[arm.name] = cfg
            if arm.against is not None:
                if arm.against not in plan.arms:
                    raise ValueError(f"{phase.stem}/{h.id}: arm {arm.name!r} is compared with {arm.against!r}, which is not built")
                changed = diff(plan.arms[arm.against], cfg)
                if not changed:
                    raise ValueError(f"{phase.stem}/{h.id}: arm {arm.name!r} equals {arm.against!r}, the arm it is compared with")
                outside = [f for f in changed if f not in h.factor]
                if outside:
                    raise ValueError(f"{phase.stem}/{h.id}: arm {arm.name!r} changes {outside[0]!r}, outside its factor {list(h.factor)}")
            plan.changes[arm.name] = diff(ctx.base, cfg)
        plan.tested[h.id] = arms
    return plan


# ----- verdicts --------------------------------------------------------------------------------

def judged(h: Hypothesis, phase: str, word: str, effect: str, numbers: dict[str, Any], compared: list[dict] | None = None,
           hid: str | None = None, claim: str | None = None, fix: str | None = None) -> dict[str, Any]:
    """A verdict dict with its evidence: the arms compared (each with the fields it changed), what
    the word means for the researcher (good / bad / unclear) and, for a cause, ``fix``: the arm
    that removes it and its changes (what ``saelab.lab.answer`` ranks and combines)."""
    v = verdict(hid or h.id, claim or h.claim, phase, word, effect, numbers)
    v["kind"] = h.kind
    v["meaning"] = MEANING[h.kind].get(word, "unclear")
    v["compared"] = compared or []
    if fix is not None:
        v["fix"] = next(({"arm": c["arm"], "changes": c["changes"]} for c in v["compared"] if c["arm"] == fix), None)
    return v


def not_applicable(h: Hypothesis, phase: str, reason: str) -> dict[str, Any]:
    v = verdict(h.id, h.claim, phase, "not applicable", reason, {})
    v |= {"kind": h.kind, "meaning": "unclear", "compared": []}
    return v


def compared(plan_changes: Mapping[str, Mapping[str, Any]], *arms: str) -> list[dict]:
    return [{"arm": a, "changes": {k: _plain(v) for k, v in plan_changes.get(a, {}).items()}} for a in arms]


def _plain(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str)) or v is None else str(v)


def health(run: Any) -> dict[str, float]:
    """A run's final health (``tail`` medians over the last logs): dead (the lab's count), dense
    (latents firing on more than a tenth of the held-out rows), FVU in the original space, L0 per
    row and as a fraction of the latents, collapsed (FVU >= COLLAPSE_FVU or L0 < 1) and the dead count's detection floor. Runs
    logged before these columns existed get them from fvu / l0 (floor and dense: NaN)."""
    fvu = tail(run, "fvu_orig")
    fvu = fvu if math.isfinite(fvu) else tail(run, "fvu")
    l0 = tail(run, "l0")
    return {"dead": tail(run, "dead_frac"), "dense": tail(run, "dense_frac"), "fvu": fvu, "l0": l0, "l0_frac": tail(run, "l0_frac"),
            "collapsed": float(fvu >= COLLAPSE_FVU or l0 < 1), "floor": tail(run, "dead_floor_rate")}


def _removes_collapse(pairs: list[tuple[Any, Any]]) -> str:
    """When the fix does not remove deaths: does it remove the reference's collapse (FVU >=
    COLLAPSE_FVU or L0 < 1 per row: the SAE reconstructs nothing, a way of dying that leaves no
    latent silent) in every replicate, without collapsing itself or adding deaths (its final dead
    fraction at most MIN_EFFECT above the reference's)? Returns a clause with the numbers, or "".
    Dense latents are not removed this way: no cause here is suspected of making the SAE dense,
    and a drop in density measured on other rows (a fix that changes the data) is no evidence."""
    h = [(health(r), health(f)) for r, f in pairs]
    if not all(r["collapsed"] and not f["collapsed"] and f["dead"] <= r["dead"] + MIN_EFFECT for r, f in h):
        return ""
    return (f"removes the collapse: FVU {pm([r['fvu'] for r, _ in h], False)} -> {pm([f['fvu'] for _, f in h], False)}, "
            f"L0 {pm([r['l0'] for r, _ in h], False)} -> {pm([f['l0'] for _, f in h], False)} per row")


def removes_deaths(runs: RunsBySeed, ref: str, fix: str, after: int = 0, column: str = "dead_frac") -> dict[str, Any]:
    """Does arm ``fix`` remove the deaths of arm ``ref``? Per replicate (the same seed gives both
    arms the same data and initialization, so the comparison is paired), the fall of the peak dead
    fraction (logs at steps >= ``after``) and of the final one (``verdicts.tail``). The fix
    *removes* the deaths when the peak falls by more than MIN_EFFECT in every replicate and its mean fall exceeds the
    margin — the larger of MIN_EFFECT (5 points) and SPREAD_FACTOR standard errors of the paired
    falls over the replicates — and the final dead fraction falls by the margin too (or the
    reference ends below it: nothing left to remove at the end). It does *not* remove them when the
    peak falls by no more than MIN_EFFECT in every replicate. Else inconclusive. ``column``: the
    dead count judged (the lab's ``dead_frac``; ``dead_frac_common`` counts both arms over one
    window when the fix changes the window the lab's count looks back over, H29).

    Deaths are one way an SAE dies; when the fix does not remove them but removes a collapse (the
    SAE reconstructs nothing: L1 33x too strong leaves L0 0.5 per row and FVU 1.03 with no latent
    that never fires) in every replicate, without adding deaths, the cause is confirmed for that
    (``_removes_collapse``). ``numbers["removed"]`` names what the fix removed: "deaths" or
    "collapse" (absent when nothing); each arm's final L0, dense share, collapse share and the
    dead count's floor are in the numbers too. Returns {"word": confirmed |
    refuted | inconclusive, "effect", "numbers"}."""
    pairs = [(a[ref], a[fix]) for a in runs.values() if ref in a and fix in a]
    if not pairs:
        return {"word": "inconclusive", "effect": f"not testable: arms {ref!r} and {fix!r} were not both trained", "numbers": {}}
    pr = [peak(r, column, after) for r, _ in pairs]
    pf = [peak(f, column, after) for _, f in pairs]
    fr = [tail(r, column) for r, _ in pairs]
    ff = [tail(f, column) for _, f in pairs]
    d_peak = [a - b for a, b in zip(pr, pf)]
    d_final = [a - b for a, b in zip(fr, ff)]
    n = len(pairs)
    se_peak, se_final = stats(d_peak)["sd"] / n ** 0.5, stats(d_final)["sd"] / n ** 0.5  # standard errors of the paired falls
    margin = max(MIN_EFFECT, SPREAD_FACTOR * max(se_peak, se_final))
    mean_peak, mean_final, mean_ref_final = stats(d_peak)["mean"], stats(d_final)["mean"], stats(fr)["mean"]
    removed, other = None, ""
    if mean_peak > margin and all(d > MIN_EFFECT for d in d_peak) and (mean_final > margin or mean_ref_final < margin):
        word, removed = "confirmed", "deaths"
    elif other := _removes_collapse(pairs):
        word, removed = "confirmed", "collapse"
    elif all(d <= MIN_EFFECT for d in d_peak):
        word = "refuted"
    else:
        word = "inconclusive"
    since = f" from step {after}" if after else ""
    effect = (f"peak dead{since}: {ref} {pm(pr)}, {fix} {pm(pf)}; final dead: {ref} {pm(fr)}, {fix} {pm(ff)} "
              f"(margin {100 * margin:.1f} points over {n} replicate{'s' * (n != 1)})" + (f"; {other}" if other else ""))
    numbers = {f"{ref}_peak_dead": stats(pr)["mean"], f"{fix}_peak_dead": stats(pf)["mean"],
               f"{ref}_final_dead": stats(fr)["mean"], f"{fix}_final_dead": stats(ff)["mean"],
               # FVU in the original space: a normalization fix's own normalized FVU is another space
               f"{ref}_final_fvu": stats([health(r)["fvu"] for r, _ in pairs])["mean"],
               f"{fix}_final_fvu": stats([health(f)["fvu"] for _, f in pairs])["mean"],
               "peak_reduction": mean_peak, "final_reduction": mean_final, "margin": margin, "replicates": n}
    hr, hf = [health(r) for r, _ in pairs], [health(f) for _, f in pairs]
    for name, hs in ((ref, hr), (fix, hf)):
        numbers |= {f"{name}_final_l0": stats([h["l0"] for h in hs])["mean"],
                    f"{name}_final_l0_frac": stats([h["l0_frac"] for h in hs])["mean"],
                    f"{name}_final_dense": stats([h["dense"] for h in hs])["mean"],
                    f"{name}_collapsed": stats([h["collapsed"] for h in hs])["mean"],
                    f"{name}_dead_floor_rate": stats([h["floor"] for h in hs])["mean"]}
    d_in = getattr(getattr(getattr(pairs[0][0], "config", None), "sae", None), "d_in", None)
    if isinstance(d_in, int):  # the input's width: an L0 that reaches it no longer compresses (answer.ranking)
        numbers["d_in"] = d_in
    if removed:
        numbers["removed"] = removed
    if n > 1:  # the spread over the replicates (sample sd; SE of the paired falls), shown beside each mean
        numbers |= {f"{ref}_peak_dead_sd": stats(pr)["sd"], f"{fix}_peak_dead_sd": stats(pf)["sd"],
                    f"{ref}_final_dead_sd": stats(fr)["sd"], f"{fix}_final_dead_sd": stats(ff)["sd"],
                    "peak_reduction_se": se_peak, "final_reduction_se": se_final}
    return {"word": word, "effect": effect, "numbers": numbers}


def best_fix(runs: RunsBySeed, ref: str, fixes: list[str], after: int = 0,
             column: str = "dead_frac") -> tuple[str | None, dict[str, Any]]:
    """The arm among ``fixes`` that removes the most deaths by ``removes_deaths`` (confirmed ones
    first, then by mean peak reduction; ``column`` the dead count judged); (None, {}) when there is none."""
    results = {f: removes_deaths(runs, ref, f, after, column) for f in fixes}
    if not results:
        return None, {}
    order = sorted(results, key=lambda f: (results[f]["word"] != "confirmed", -results[f]["numbers"].get("peak_reduction", -1)))
    return order[0], results[order[0]]
