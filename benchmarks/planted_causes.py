"""Planted causes of death: for each, a small base where one cause is planted and a control (the
same base without it, or with it in a regime where it does not kill: AdamW's default decay, a
slightly negative b_enc, the sink rows without normalization, documents that share no features).
The phase that tests the cause trains its arms (3 replicates, smoke widths: d_in 32, 64 latents)
and ``saelab.lab.answer.ranking`` ranks the causes; the planted cause must come first and be
confirmed (or behind only a confirmed co-cause the case names, ``CO_CAUSES``), and in the control
it must not be confirmed.

    .venv/bin/python benchmarks/planted_causes.py [--only NAME ...] [--out DIR]

Prints one line per case: the answer's first cause, its verdict and the dead fractions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from saelab.lab import (
    answer,
    phases,  # noqa: E402
)

SMALL = {"steps": 400, "sae": {"d_sae": 64}, "data": {"mean_offset": 0.0, "batch_size": 64},
         "penalty": {"form": "per_sample_sum", "alpha": 0.01}, "schedule": {"shape": "constant", "warmup_steps": 0},
         "optim": {"lr": 3e-3}}
TOPK = {"sae": {"d_sae": 64, "architecture": "topk", "k": 8}, "penalty": {"form": "none", "alpha": 0.0}}
# b_dec started at the data's geometric median and subtracted: H8 (centring) has nothing to change
CENTRED = {"b_dec_init": "geometric_median", "apply_b_dec_to_input": True}


def merge(a: dict, b: dict) -> dict:
    out = json.loads(json.dumps(a))
    for k, v in b.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


ONLY_L1 = {"penalty_form": [], "penalty_alpha_task22": False, "sae_decoder_constraint": "none"}
ONLY_02 = {"optim_lr_multipliers": [], "schedule_shape": [], "schedule_warmup_steps_multipliers": []}
ONLY_04 = {"normalize_mode": [], "data_tiny_row_fraction": 0.0, "data_huge_row_fraction": 0.0, "sae_b_dec_init": None}
SINKS = {"data": {"outlier_fraction": 0.02, "outlier_norm": 1000.0}}  # 2% of rows at 1000x the median norm
# documents of 4,096 rows (64 steps) each firing its own features, over 800 steps (12 documents)
ORDERED = {"data": {"order": "ordered", "document_rows": 4096, "document_features": 1.0}, "steps": 800}


def low_rank_rows(path: Path, d_in: int, rank: int, rows: int = 60_000, seed: int = 0, scale: float = 1.0) -> None:
    """Activations on a ``rank``-dimensional subspace of R^d_in, made here with numpy (not saelab's
    synthetic source): 256 unit features inside the subspace, each firing on 4/256 of the rows with
    an exponential magnitude, plus isotropic noise of std 1e-3 in all d_in directions (attention
    outputs are low-rank, not exactly rank-deficient). ``rank = d_in`` is the full-rank control;
    ``scale`` multiplies every row (raw residual streams have norms of 100+)."""
    g = np.random.default_rng(seed)
    basis = np.linalg.qr(g.standard_normal((d_in, rank)))[0].T  # [rank, d_in], orthonormal rows
    feats = g.standard_normal((256, rank))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    codes = g.exponential(1.0, (rows, 256)) * (g.random((rows, 256)) < 4 / 256)
    x = codes @ (feats @ basis) + 1e-3 * g.standard_normal((rows, d_in))
    np.save(path, (scale * x).astype(np.float32))


def anisotropic_rows(path: Path, d_in: int, loud: int, ratio: float, feats: int = 256, rows: int = 60_000, seed: int = 0) -> None:
    """Full-rank activations in R^d_in whose first ``loud`` orthonormal directions have ``ratio``
    times the std of the other d_in - loud, made here with numpy: 32 unit features inside the loud
    directions firing on 1/8 of the rows each (4 per row) and 224 in the quiet ones firing on 4/256
    (3.5 per row), exponential magnitudes, plus isotropic noise of std 1e-3. The loud features'
    amplitude is set so that each loud direction's std is ``ratio`` times each quiet one's:
    ``ratio = 1`` is the isotropic control (the same features, the same firing)."""
    g = np.random.default_rng(seed)
    basis = np.linalg.qr(g.standard_normal((d_in, d_in)))[0].T  # [d_in, d_in], orthonormal rows
    n_loud, p_loud, n_quiet, p_quiet = feats // 2, 4 / feats, feats - feats // 2, 4 / feats
    # per-direction variance of unit-amplitude features: n p E[a^2] / width (E[a^2] = 2 for Exp(1))
    amp = ratio * np.sqrt((n_quiet * p_quiet / (d_in - loud)) / (n_loud * p_loud / loud))
    blocks, codes = [], []
    for n, p, sub, a in ((n_loud, p_loud, basis[:loud], amp), (n_quiet, p_quiet, basis[loud:], 1.0)):
        f = g.standard_normal((n, sub.shape[0]))
        blocks.append(a * (f / np.linalg.norm(f, axis=1, keepdims=True)) @ sub)
        codes.append(g.exponential(1.0, (rows, n)) * (g.random((rows, n)) < p))
    x = np.concatenate(codes, axis=1) @ np.concatenate(blocks) + 1e-3 * g.standard_normal((rows, d_in))
    np.save(path, x.astype(np.float32))
def rare_feature_rows(path: Path, d_in: int, n_features: int, top_rate: float, exponent: float, rows: int = 200_000,
                      seed: int = 0) -> None:
    """Activations whose features fire at Zipf-like rates, made here with numpy (not saelab's
    synthetic source): ``n_features`` random unit directions in R^d_in, feature i firing on
    ``top_rate * (i + 1) ** -exponent`` of the rows (so most fire once per hundreds or thousands of
    rows) with a magnitude 1 + exponential(1), plus isotropic noise of std 1e-2."""
    g = np.random.default_rng(seed)
    feats = g.standard_normal((n_features, d_in))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    rate = top_rate * np.arange(1, n_features + 1, dtype=np.float64) ** -exponent
    x = np.zeros((rows, d_in), np.float32)
    for lo in range(0, rows, 50_000):  # in chunks: [rows, n_features] at once is large
        n = min(50_000, rows - lo)
        codes = (1.0 + g.exponential(1.0, (n, n_features))) * (g.random((n, n_features)) < rate)
        x[lo:lo + n] = codes @ feats + 1e-2 * g.standard_normal((n, d_in))
    np.save(path, x)


def bos_rows(path: Path, ratio: float, seq: int = 16, d_in: int = 16, sequences: int = 4000, spread: float = 0.25,
             seed: int = 0, n_features: int = 512, mean_active: float = 8.0) -> None:
    """Sequences of ``seq`` rows, made here with numpy (not saelab's synthetic source): rows 1..seq-1
    of each are ordinary sparse activations (``n_features`` unit features in R^d_in, feature i firing
    with probability ~ 1/(i+1), ``mean_active`` per row, with an exponential magnitude, plus noise of
    std 1e-2), row 0 a BOS row: one fixed unit
    direction at ``ratio`` x the ordinary rows' median norm, times a factor uniform in
    [1 - spread, 1 + spread] (real BOS norms vary by layer and sequence), plus noise of std 2% of
    the median norm per coordinate. ``ratio = 1`` is the control: the same BOS rows at an ordinary norm."""
    g = np.random.default_rng(seed)
    feats = g.standard_normal((n_features, d_in))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    p = 1.0 / np.arange(1, n_features + 1)
    p = np.minimum(1.0, p * mean_active / p.sum())
    n = seq * sequences
    codes = g.exponential(1.0, (n, n_features)).astype(np.float32) * (g.random((n, n_features)) < p)
    x = codes @ feats + 1e-2 * g.standard_normal((n, d_in))
    med = float(np.median(np.linalg.norm(x, axis=1)))
    v = g.standard_normal(d_in)
    v /= np.linalg.norm(v)
    scale = ratio * med * g.uniform(1 - spread, 1 + spread, sequences)
    x[::seq] = scale[:, None] * v + 0.02 * med * g.standard_normal((sequences, d_in))
    np.save(path, x.astype(np.float32))


# files a case's base reads (data.source "file:planted:<name>"), written on first use into the output folder
FILES = {"lowrank_d64_r4.npy": lambda p: low_rank_rows(p, 64, 4), "fullrank_d64.npy": lambda p: low_rank_rows(p, 64, 64),
         **{f"aniso_d64_l8_x{a}.npy": (lambda a: lambda p: anisotropic_rows(p, 64, 8, float(a)))(a) for a in (1, 3, 10, 30, 100)},
         **{f"aniso_d16_l2_x{a}.npy": (lambda a: lambda p: anisotropic_rows(p, 16, 2, float(a), 64))(a) for a in (1, 3, 10, 30, 100)},
         "rare_d32_f128.npy": lambda p: rare_feature_rows(p, 32, 128, 0.5, 1.2),
         "rare_d32_f128_e15.npy": lambda p: rare_feature_rows(p, 32, 128, 0.5, 1.5),
         "bos300_s16_d16.npy": lambda p: bos_rows(p, 300.0), "bos1_s16_d16.npy": lambda p: bos_rows(p, 1.0),
         "fullrank_d64_x36.npy": lambda p: low_rank_rows(p, 64, 64, scale=36.0)}


def materialize(base: dict, root: Path) -> dict:
    """``base`` with a "file:planted:<name>" source written under ``root`` and pointed at."""
    src = base.get("data", {}).get("source", "")
    if not src.startswith("file:planted:"):
        return base
    name = src.split(":", 2)[2]
    path = root / name
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        FILES[name](path)
    return merge(base, {"data": {"source": f"file:{path}"}})


# tied init (the encoder started as the decoder's transpose), as SAELens, sparsify, Gao et al. and Wang et
# al. start their SAEs: with independent rows (kaiming) the untied start is a second cause (H11), which
# on 8 of 64 directions removed more of the deaths (27.6% -> 2.1%) than the subspace init (-> 9.4%)
LOW_RANK = merge(SMALL, merge(TOPK, {"sae": {"init": "tied"}, "data": {"source": "file:planted:lowrank_d64_r4.npy"}}))
UNSHUFFLED = merge(SMALL, merge(TOPK, merge(ORDERED, {"sae": CENTRED})))  # centred TopK at the healthy LR 3e-3
ANISO = merge(SMALL, merge(TOPK, {"sae": {"k": 4}, "data": {"source": "file:planted:aniso_d16_l2_x30.npy"}}))
# TopK with AuxK mis-set (a hundredth of Gao's weight); its dead window a tenth of the run, k_aux = d_in/2;
# centred, as Gao et al. train TopK (uncentred on 64 latents, centring alone took the whole lab's base
# 44.8% -> 9.4%); 128 latents, so that k x4 (H16) is dense (12.5% of the latents per row)
AUXK_TOPK = merge(SMALL, merge(TOPK, {"sae": {"k": 4, "d_sae": 128, **CENTRED}, "steps": 2000, "optim": {"lr": 0.01},
                                     "aux": {"auxk_coef": 1 / 3200, "auxk_k": 16}, "tracking": {"dead_tokens": 12800}}))
# TopK k=4 of 64 latents on features firing at Zipf rates (most of the SAE's latents fire once per
# hundreds to a thousand rows), resampled (Anthropic's re-init) every 100 steps by the tokens detector
# with a 128-token window: a fifth of the 735 tokens a latent at a tenth of the mean rate needs. Centred
# (uncentred, the whole lab put a normalization mode, H4, first: 40.1% -> 24.0%, tied with H29 and H3)
RARE_RESAMPLE = merge(SMALL, merge(TOPK, {"sae": {"k": 4, **CENTRED}, "steps": 2000, "data": {"source": "file:planted:rare_d32_f128.npy"},
                                          "resample": {"strategy": "anthropic", "detector": "tokens", "interval": 100,
                                                       "first_step": 0, "after_warmup": False, "reset_adam": True},
                                          "tracking": {"dead_tokens": 128}}))
# JumpReLU on the paper's L0 penalty (penalty.form=l0) at raw scale (RMS row norm ~100, normalize none):
# its straight-through kernel 1,000x wider than the matched 0.001 x 100 = 0.1
WIDE_L0 = merge(SMALL, {"sae": {"architecture": "jumprelu", "jumprelu_threshold": 1.0, "jumprelu_bandwidth": 100.0},
                        "penalty": {"form": "l0", "alpha": 3.0}, "normalize": {"mode": "none"}, "optim": {"lr": 0.01},
                        "steps": 600, "data": {"source": "file:planted:fullrank_d64_x36.npy"}})
# BOS rows (position 0 of 16-row sequences, d_in 16) at 300x the other rows' median norm (+-25%), under a
# dataset scalar they inflate; TopK k=8 of 64 latents, tied and centred (as SAELens, sparsify and Gao et
# al. start TopK). Control: the same BOS rows at the median norm (H27 not applicable)
BOS = merge(SMALL, merge(TOPK, {"sae": {"k": 8, "init": "tied", **CENTRED}, "normalize": {"mode": "dataset_scalar"},
                                "data": {"source": "file:planted:bos300_s16_d16.npy", "context_length": 16}}))
# name -> (phase, planted base, control base, phase parameters, the hypothesis that must come first)
CASES = {
    "lr too high": ("02_lr_warmup", merge(SMALL, {"optim": {"lr": 0.1}}), SMALL, {"schedule_shape": []}, "H9"),
    "l1 too strong": ("01_l1_penalty", merge(SMALL, {"penalty": {"alpha": 1.0}, "steps": 600}), merge(SMALL, {"steps": 600}),
                      ONLY_L1 | {"penalty_alpha_multipliers": [0.01, 0.1]}, "H1s"),
    # 33x the healthy alpha: the SAE collapses (L0 0.02 per row, FVU 1.005; 31% dead by the lab's count)
    "l1 collapses the sae": ("01_l1_penalty", merge(SMALL, {"penalty": {"alpha": 0.33}, "steps": 600}), merge(SMALL, {"steps": 600}),
                             ONLY_L1 | {"penalty_alpha_multipliers": [0.01, 0.1]}, "H1s"),
    # k=1 of 64 latents, centred (as Gao et al. train TopK; uncentred, centring removed more of the deaths,
    # 87.0% -> 55.7%, than k x4, -> 62.5%: the rows' mean was a second cause). Control: k = 32 of the 64
    # latents stays healthy on this data (k = 16 loses ~11% of its latents uncentred, so its 4x arm, k = 64,
    # "removed" deaths too)
    "topk k too small, no auxk": ("01_l1_penalty", merge(SMALL, merge(TOPK, {"sae": {"k": 1, **CENTRED}})),
                                  merge(SMALL, merge(TOPK, {"sae": {"k": 32, **CENTRED}})), {"sae_k_multipliers": [4]}, "H16"),
    "offset, uncentered b_dec": ("04_normalization", merge(SMALL, {"data": {"mean_offset": 8.0}}), SMALL,
                                 {"normalize_mode": [], "data_tiny_row_fraction": 0.0, "data_huge_row_fraction": 0.0}, "H8"),
    "jumprelu threshold too high": ("01_l1_penalty", merge(SMALL, {"sae": {"architecture": "jumprelu", "jumprelu_threshold": 1.0}}),
                                    merge(SMALL, {"sae": {"architecture": "jumprelu", "jumprelu_threshold": 0.001}}),
                                    ONLY_L1 | {"penalty_alpha_multipliers": []}, "H12"),
    "weight decay": ("02_lr_warmup", merge(SMALL, {"optim": {"weight_decay": 10.0}}), merge(SMALL, {"optim": {"weight_decay": 0.01}}),
                     ONLY_02, "H20"),
    "negative b_enc init": ("04_normalization", merge(SMALL, {"sae": {"b_enc_init": -1.0}}), merge(SMALL, {"sae": {"b_enc_init": -0.01}}),
                            ONLY_04, "H21"),
    "sink rows, dataset scalar": ("04_normalization", merge(SMALL, merge(SINKS, {"normalize": {"mode": "dataset_scalar"}})),
                                  merge(SMALL, SINKS), ONLY_04, "H23"),
    # TopK k=8 of 64 latents, centred (as Gao et al. train TopK), at the healthy LR 3e-3: the only planted
    # cause is the order. Control: the same stream's documents share no features (only the order left)
    "unshuffled stream": ("04_normalization", UNSHUFFLED, merge(UNSHUFFLED, {"data": {"document_features": 0.0}}),
                          ONLY_04, "H22"),
    # 99% of the variance in 4 of 64 directions; TopK k=8 of 64 latents, tied init: 16.7% die (14.6% on the
    # generator's seed 1; 41.1% with 128 latents, 40.1% at k=4), 0-6% with rows started in the data's
    # subspace. At 6 of 64 directions 4.7% die (inconclusive), at 8 of 64 2.1%. Control: the same
    # generator at full rank (H24 not applicable)
    "low-rank activations": ("04_normalization", LOW_RANK, merge(LOW_RANK, {"data": {"source": "file:planted:fullrank_d64.npy"}}),
                             ONLY_04, "H24"),
    # AuxK on at a hundredth of Gao's weight: TopK k=4 of 128 latents, centred, at LR 1e-2 over 2,000
    # steps, judged from two dead windows on (AuxK revives; it cannot stop the first deaths). Centred on
    # 64 latents the deaths AuxK removes were too few (9.4% -> 6.2% peak); uncentred, centring removed
    # more than AuxK (at 400 steps AuxK barely acts: k=2 left 67.7% -> 65.6% dead). Control: AuxK at Gao's 1/32,
    # where every AuxK setting is Gao's and H25 has nothing to change. H16 (k x4) is not trained:
    # a larger k removes deaths whatever AuxK does
    "auxk weight too weak": ("01_l1_penalty", AUXK_TOPK, merge(AUXK_TOPK, {"aux": {"auxk_coef": 1 / 32}}),
                             {"sae_k_multipliers": []}, "H25"),
    # (H26) 2 of 16 directions at 30x the std of the other 14, each holding half of the 64 features
    # (participation ratio 2.0 of 16); TopK k=4 of 64 latents: 33.9% die, 15.1% with the input whitened
    # (FVU in the original space 0.01 -> 0.15: whitening spends latents on the quiet features). At 10x
    # 32.8% -> 15.1%, at 100x 37.0% -> 15.1%; at 3x (participation ratio 35% of d_in, H26 not
    # applicable) 27.1% die and the tied init (H11) removes them. On d_in 64 with 256 features (8 loud
    # directions at 10x or 30x, TopK k=8) nothing died: 64 latents for 256 features all find work.
    # H24 applies here too (99% of the variance in 2 of 16 directions): its subspace init is
    # refuted (37% -> 58% dead at 100x: the rows start in the loud directions only) and H11 is
    # inconclusive, so no co-cause is named. Control: the same generator isotropic (ratio 1). The whole
    # lab (planted_lab.py) misses it: k x4 (H16, dense) and a lower LR (H9) remove the deaths too
    # (benchmarks/README.md)
    "anisotropic activations": ("04_normalization", ANISO, merge(ANISO, {"data": {"source": "file:planted:aniso_d16_l2_x1.npy"}}),
                                ONLY_04, "H26"),
    # the dead window (tracking.dead_tokens 128) far shorter than the rare latents' firing interval: the
    # resampler re-initializes alive latents (H29). Control: the window at 1,280 tokens, beyond the 735
    # a latent at a tenth of the mean rate needs. Only resampling off (H3) is trained beside H29's arm
    "dead window too short": ("03_resampling", RARE_RESAMPLE, merge(RARE_RESAMPLE, {"tracking": {"dead_tokens": 1280}}),
                              {"resample_strategy": [], "resample_detector": []}, "H29"),
    # H28 on the L0 penalty: a kernel far wider than the pre-activations' scale puts every row in the
    # window, so the L0 term pushes every threshold up (alpha / bandwidth per row) whatever the rows do,
    # while the reconstruction's pull sums over rows that mostly do not care; the thresholds run away
    # and the code collapses (the lab's other way of dying: no latent is silent; peak dead 1.6% in the
    # base). Control: the matched bandwidth (H28 not applicable). Tried: bandwidth 0.001 (100x narrow)
    # at thresholds 3-30, alpha 0.01-1, LR 3e-3-2e-2: thresholds freeze, L0 stays where it started, no
    # deaths and no collapse in either arm (#494's symptom is a code that stays dense, not deaths). Only a
    # kernel wider than the whole pre-activation range collapses the code: at alpha 1 and 3 (threshold 1,
    # 600 steps, seed 0) bandwidth 1 (10x wide) ends L0 19.4 / 9.1 and bandwidth 10 (100x) L0 17.0 / 8.9,
    # as healthy as the matched one; bandwidth 100 at alpha 1 ends L0 0.8, at alpha 3 0.3-0.4
    "jumprelu l0 bandwidth too wide": ("01_l1_penalty", WIDE_L0, merge(WIDE_L0, {"sae": {"jumprelu_bandwidth": 0.102}}),
                                       ONLY_L1 | {"penalty_alpha_multipliers": [0.1]}, "H28"),
    # On the L1 penalty, H28 (JumpReLU bandwidth mismatched to the input scale) has no case: no dose tried kills latents
    # that the matched bandwidth (0.001 x the RMS row norm) spares. On low_rank_rows at full rank, d_in
    # 64, scaled to RMS norm ~100 (normalize none), bandwidth 0.001 vs the matched 0.101: threshold 10
    # 0% dead; 30: peak 63.5% both, final 3.1% vs 6.2%; 60: 99.5% / 89.6% both; 45 at LR 1e-2, 1,200
    # steps: 97.4% / 14.6% both (H12's x0.1 arm: 0%). Bandwidths 1 and 5 at threshold 30 leave the
    # same 63.5% peak. Too wide: bandwidth 10 at threshold 45 ends 65.6% dead where the matched one
    # ends 14.6%, but both peak at 97.4% from the start (the threshold's, H12). The lab's JumpReLU
    # latents die below a threshold that starts too high (H12) or under the L1 (H1s); the kernel
    # reaches only rows within half a width of the threshold, and the L1's straight-through gradient
    # pushes the threshold up, not down.
    # (H27) BOS rows kill only at norms far above H23's 10x cut, through the dataset scalar they inflate (as
    # sink rows do): 26.6% die, none without position 0 (or without rows above 10x: H23, the named
    # co-cause: on this data both fixes drop the same rows). At 100x 2.6% die (tied init), at 300x with
    # kaiming rows and k=4, 41.7% -> 13.0% (the kaiming start itself leaves 13%). Below the 10x cut, where
    # only the position rule would act, no dose tried killed: at 8x (+-25%), TopK k=2 of 64, LR 1e-2, peak
    # dead 35.4% with them, 31.8% without, 31.2% in the control; ReLU + L1 (alpha 0.01-1.0, no
    # normalization or a dataset scalar, LR 3e-3..3e-2, ratio 6-30, sequences of 8-64 rows, d_in 16/64):
    # 0% dead with or without; TopK k=4 18.2% vs 15.1% (control 15.1%)
    "bos rows at position 0": ("04_normalization", BOS, merge(BOS, {"data": {"source": "file:planted:bos1_s16_d16.npy"}}),
                               ONLY_04, "H27"),
}


# a case whose planted cause has a co-cause: another single-factor fix the lab may rightly rank first.
# JumpReLU's runaway thresholds collapse the code (L0 0.3-0.4 per row, FVU 0.80-0.84); the matched bandwidth
# removes the collapse (L0 9.5-9.9, FVU 0.31) and so does alpha x0.1 (L0 1.7, FVU 0.64): a weaker push on the
# same runaway, ranked first for keeping the code sparser
CO_CAUSES = {"jumprelu l0 bandwidth too wide": ("H1s",), "bos rows at position 0": ("H23",)}


def run_case(stem: str, base: dict, params: dict, out: Path) -> list[dict]:
    path = out / "base.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(materialize(base, out.parent.parent / "files")))
    ns = {"profile": "smoke", "seeds": [0, 1, 2], "out_dir": str(out / "runs"), "base": str(path), "source": None, "steps": None,
          "data_mean_offset": None, "overrides": {}, "explorer": False, **phases.get_phase(stem).defaults(), **params}
    run = phases.prepare(stem, ns, history=[])
    run.train(progress=False)
    return run.verdicts()


def parse_args(doc: str, prefix: str) -> tuple[argparse.Namespace, Path]:
    """``--only NAME ...`` and ``--out DIR`` (default: a new temporary folder named ``prefix``...)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    return args, args.out or Path(tempfile.mkdtemp(prefix=prefix))


def main() -> int:
    args, root = parse_args(__doc__, "planted-")
    ok = True
    for name, (stem, planted, control, params, hid) in CASES.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        ranked = answer.ranking(run_case(stem, planted, params, root / name.replace(" ", "_") / "planted"))
        ctrl = {v["id"]: v for v in run_case(stem, control, params, root / name.replace(" ", "_") / "control")}
        first = ranked[0] if ranked else None
        ids = [r["id"] for r in ranked]
        at = ids.index(hid) if hid in ids else -1
        above_ok = at >= 0 and all(r["id"] in CO_CAUSES.get(name, ()) and r["verdict"] == "confirmed" for r in ranked[:at])
        good = (at >= 0 and above_ok and ranked[at]["verdict"] == "confirmed"
                and ctrl.get(hid, {}).get("verdict") != "confirmed")
        planted = ranked[at] if at >= 0 else None
        ok &= good
        pct = lambda v: "?" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        head = (f"first: {first['id']} {first['verdict']}, peak dead {pct(first['peak_dead']['base'])} -> "
                f"{pct(first['peak_dead']['with_fix'])} with {' '.join(first['fix'])}") if first else "no cause ranked"
        if planted is not None and at > 0:
            head += (f"; planted {hid} ranked {at + 1}: {planted['verdict']}, peak dead {pct(planted['peak_dead']['base'])} -> "
                     f"{pct(planted['peak_dead']['with_fix'])} with {' '.join(planted['fix'])}")
        print(f"{'ok ' if good else 'MISS'} {name:28s} {head}; control {hid}: {ctrl.get(hid, {}).get('verdict')} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
