import json

import numpy as np
import pandas as pd
import pytest
import torch

from saelab.training.diagnose import (
    attribute,
    autopsy,
    detect_collapses,
    format_autopsy,
    init_diagnostics,
    lifecycle_record,
    lifecycles,
)


def _metrics(steps, dead, l0) -> pd.DataFrame:
    return pd.DataFrame({"step": steps, "dead_frac": dead, "l0": l0, "mse": np.ones(len(steps))})


def _seed_like_run(collapse_at: int = 2500) -> pd.DataFrame:
    """Healthy until `collapse_at` (logged after that step's resample), then 5% -> 92% dead in four logs."""
    steps = np.arange(0, 10_001, 50)
    rng = np.random.default_rng(0)
    dead = 0.05 + 0.005 * rng.standard_normal(len(steps))
    l0 = 30 + 0.5 * rng.standard_normal(len(steps))
    k = int(np.searchsorted(steps, collapse_at))
    dead[k + 1 :] = 0.92
    dead[k + 1 : k + 4] = [0.3, 0.6, 0.85]
    l0[k + 1 :] = 1.5
    l0[k + 1 : k + 4] = [12, 5, 2]
    return _metrics(steps, dead, l0)


EVENTS = [
    {"step": 500, "kind": "warmup_end"},
    {"step": 2000, "kind": "checkpoint"},  # not a cause kind: never attributed
    {"step": 2500, "kind": "resample", "n_resampled": 40, "detector": "single_batch", "indices": [1, 2, 3]},
    {"step": 7000, "kind": "lr_change", "lr_before": 3e-4, "lr_after": 1e-4},
]


def test_collapse_right_after_a_resample_is_attributed_to_it():
    a = autopsy(_seed_like_run(), EVENTS)
    assert a["n_collapses"] == 1 and a["params"]["window_steps"] == 1000  # a tenth of 10k steps
    c = a["collapses"][0]
    assert (c["start_step"], c["onset_step"], c["end_step"]) == (2500, 2550, 2650)
    assert c["trigger"] == "dead_rise+l0_drop"
    assert c["dead_before"] == pytest.approx(0.05, abs=0.02) and c["dead_after"] == pytest.approx(0.85)
    assert c["dead_peak"] == pytest.approx(0.92) and c["l0_after"] == pytest.approx(2.0)
    assert c["coincides_with"] == "resample" and c["coincides_step"] == 2500 and c["coincides_distance"] == 50
    assert c["coincides_details"] == {"n_resampled": 40, "detector": "single_batch"}  # lists left out
    assert [e["kind"] for e in c["events"]] == ["resample"]  # warmup_end at 500 is outside the lookback
    assert c["tied_with"] == [] and c["attribution"] == "resample@2500" and c["step"] == 2550
    json.dumps(a, allow_nan=False)
    text = format_autopsy(a)
    assert "1 collapse" in text and "coincides with: resample at step 2500" in text and "n_resampled=40; detector=single_batch" in text


def test_smooth_run_has_no_collapse():
    steps = np.arange(0, 10_001, 50)
    dead = np.linspace(0.0, 0.3, len(steps))  # 0.03 per 1000 steps
    l0 = np.linspace(40, 10, len(steps))  # 4x over the whole run, ~1.15x per window
    a = autopsy(_metrics(steps, dead, l0), EVENTS)
    assert a["n_collapses"] == 0 and a["collapses"] == [] and a["table"] == []
    assert format_autopsy(a).startswith("autopsy: no collapse")


def test_rise_time_points_on_a_hand_made_curve():
    # steps 0..700; base 0.1, peak 0.9. 10% level 0.18: first above at 300 -> start 200, onset 300;
    # 90% level 0.82: first reached at 600 -> end 600.
    steps = np.arange(0, 800, 100)
    dead = [0.1, 0.1, 0.1, 0.2, 0.5, 0.8, 0.9, 0.9]
    [c] = detect_collapses(_metrics(steps, dead, np.full(8, 10.0)), window_steps=300)
    assert (c["start_step"], c["onset_step"], c["end_step"], c["peak_step"]) == (200, 300, 600, 600)
    assert c["trigger"] == "dead_rise" and c["dead_rise"] == pytest.approx(0.8) and c["l0_factor"] == 1.0


def test_rise_just_below_threshold_or_spread_over_more_than_the_window_is_not_a_collapse():
    steps = np.arange(0, 800, 100)
    assert detect_collapses(_metrics(steps, [0.1] * 4 + [0.29] * 4, np.full(8, 10.0)), window_steps=300) == []
    slow = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]  # 0.1 per 100 steps: > 0.2 only over 300 steps
    assert detect_collapses(_metrics(steps, slow, np.full(8, 10.0)), window_steps=200) == []
    assert len(detect_collapses(_metrics(steps, slow, np.full(8, 10.0)), window_steps=300)) == 1


def test_l0_only_collapse_and_zero_l0():
    steps = np.arange(0, 1000, 100)
    l0 = [20, 20, 19, 20, 8, 0.5, 0.0, 0.0, 0.0, 0.0]
    [c] = detect_collapses(_metrics(steps, np.full(10, 0.05), l0), window_steps=300)
    assert c["trigger"] == "l0_drop" and c["start_step"] == 300 and c["onset_step"] == 400
    assert c["end_step"] == 500 and c["l0_after"] == 0.5 and c["l0_factor"] == pytest.approx(40.0)  # 90% of the fall
    [z] = detect_collapses(_metrics(steps[:5], np.full(5, 0.05), [20, 20, 20, 0.0, 0.0]), window_steps=300)
    assert z["l0_after"] == 0.0 and z["l0_factor"] is None  # undefined ratio is None, not inf


def test_initial_sparsification_is_reported_but_not_a_collapse():
    """A dense random start whose L0 falls 15x in the first logs with no latent dying is the penalty
    at work; the same fall later in the run, or with latents dying, is still a collapse."""
    steps = np.arange(0, 1000, 100)
    sparsifying = [128, 60, 8.5, 8.6, 8.4, 8.5, 8.6, 8.5, 8.4, 8.5]
    a = autopsy(_metrics(steps, np.zeros(10), sparsifying), [], window_steps=300)
    assert a["n_collapses"] == 0 and a["collapses"] == []
    init = a["initial_sparsification"]
    assert (init["start_step"], init["l0_before"], init["l0_after"]) == (0, 128, 8.5)
    text = format_autopsy(a)
    assert text.startswith("autopsy: no collapse") and "initial sparsification, not a collapse: L0 128 -> 8.5" in text
    dying = autopsy(_metrics(steps, [0.0, 0.2, 0.4] + [0.4] * 7, sparsifying), [], window_steps=300)
    assert dying["n_collapses"] == 1 and dying["initial_sparsification"] is None
    later = autopsy(_metrics(steps, np.zeros(10), [128, 128, 128, 60, 8.5, 8.5, 8.5, 8.5, 8.5, 8.5]), [], window_steps=300)
    assert later["n_collapses"] == 1 and later["initial_sparsification"] is None


def test_two_separate_collapses_stay_separate_and_overlaps_merge():
    steps = np.arange(0, 3000, 100)
    dead = np.full(30, 0.05)
    dead[5:] = 0.4  # first jump at 500
    dead[20:] = 0.8  # second jump at 2000
    out = detect_collapses(_metrics(steps, dead, np.full(30, 10.0)), window_steps=300)
    assert [c["onset_step"] for c in out] == [500, 2000]
    assert out[1]["dead_before"] == pytest.approx(0.4) and out[1]["dead_after"] == pytest.approx(0.8)


def test_attribution_positions_ties_and_no_suspect():
    collapse = {"start_step": 5000, "onset_step": 5100, "end_step": 5400}
    events = [
        {"step": 4200, "kind": "penalty_warmup_end"},
        {"step": 5000, "kind": "warmup_end"},
        {"step": 5000, "kind": "resample", "n_resampled": 479},
        {"step": 5200, "kind": "lr_change"},
        {"step": 9000, "kind": "resample", "n_resampled": 3},
    ]
    [a] = attribute([collapse], events, lookback_steps=1000)
    assert [(e["kind"], e["position"], e["distance"]) for e in a["events"]] == [
        ("penalty_warmup_end", "before", 900),
        ("warmup_end", "before", 100),
        ("resample", "before", 100),
        ("lr_change", "during", -100),
    ]
    assert a["coincides_with"] == "resample" and a["tied_with"] == ["warmup_end"]  # the seed's step-5000 confound
    assert a["attribution"] == "resample@5000+warmup_end"
    [b] = attribute([collapse], [{"step": 5050, "kind": "lr_change"}], lookback_steps=10)
    assert b["events"][0]["position"] == "at_onset" and b["coincides_with"] == "lr_change" and b["coincides_distance"] == 50
    [n] = attribute([collapse], [{"step": 1000, "kind": "resample"}, {"step": 5300, "kind": "resample"}], 1000)
    assert (
        n["coincides_with"] == "none"
        and n["attribution"] == "none"
        and n["coincides_step"] is None
        and [e["step"] for e in n["events"]] == [5300]
    )


def test_format_autopsy_without_suspect():
    a = autopsy(_seed_like_run(), [])
    assert a["collapses"][0]["coincides_with"] == "none"
    assert "coincides with: no event" in format_autopsy(a)
    with pytest.raises(TypeError, match="unknown options"):
        autopsy(_seed_like_run(), [], windw=3)


def test_lifecycles_on_a_hand_made_fire_count_matrix():
    steps = torch.tensor([0, 100, 200, 300, 400, 500])
    fire = torch.tensor(
        [  # latent: 0 always alive | 1 dies, revives, dies | 2 never | 3 dead at first log, revives
            [3, 2, 0, 0],
            [2, 0, 0, 0],
            [5, 0, 0, 1],
            [1, 3, 0, 1],
            [1, 0, 0, 1],
            [4, 0, 0, 1],
        ],
        dtype=torch.int32,
    )
    events = [
        {"step": 50, "kind": "warmup_end"},
        {"step": 250, "kind": "resample", "n_resampled": 2},
        {"step": 300, "kind": "checkpoint"},
        {"step": 400, "kind": "lr_change"},
    ]
    life = lifecycles(steps, fire, events)
    assert torch.equal(life["alive"], fire > 0)
    assert life["last_fired_step"].tolist() == [500, 300, -1, 500]
    assert life["deaths"] == [
        {"latent": 1, "step": 100, "event": "warmup_end", "event_step": 50},
        {"latent": 1, "step": 400, "event": "lr_change", "event_step": 400},  # "at or before" includes 400
    ]
    assert life["revivals"] == [
        {"latent": 3, "step": 200, "event": "warmup_end", "event_step": 50},
        {"latent": 1, "step": 300, "event": "resample", "event_step": 250},  # checkpoint is not a cause
    ]
    assert life["n_deaths"].tolist() == [0, 2, 0, 0] and life["n_revivals"].tolist() == [0, 1, 0, 1]
    assert life["revived_then_dead"].tolist() == [False, True, False, False]
    s = life["summary"]
    assert (s["alive_first"], s["alive_last"], s["never_alive"]) == (2, 2, 1)
    assert (s["n_deaths"], s["n_revivals"], s["latents_died"], s["latents_revived"], s["revived_then_dead"]) == (2, 2, 1, 2, 1)
    assert s["by_event"] == [
        {"kind": "warmup_end", "step": 50, "deaths": 1, "revivals": 1},
        {"kind": "resample", "step": 250, "deaths": 0, "revivals": 1},
        {"kind": "lr_change", "step": 400, "deaths": 1, "revivals": 0},
    ]
    rec = lifecycle_record(life, max_items=1)
    assert json.loads(json.dumps(rec, allow_nan=False)) == rec
    assert rec["last_fired_step"] == [500, 300, -1, 500] and rec["revived_then_dead"] == [1]
    assert rec["deaths"] == life["deaths"][:1] and rec["deaths_truncated"] == 1 and rec["summary"] == s


def test_lifecycles_before_any_event_and_single_log():
    life = lifecycles(torch.tensor([0, 10]), torch.tensor([[1, 0], [0, 1]]), [{"step": 50, "kind": "resample"}])
    assert life["deaths"] == [{"latent": 0, "step": 10, "event": None, "event_step": None}]
    assert life["summary"]["by_event"][0] == {"kind": "none", "step": None, "deaths": 1, "revivals": 1}
    one = lifecycles(torch.tensor([0]), torch.tensor([[0, 2]]), [])
    assert one["summary"]["n_deaths"] == 0 and one["last_fired_step"].tolist() == [-1, 0]
    with pytest.raises(ValueError, match="must match"):
        lifecycles(torch.tensor([0, 1, 2]), torch.zeros(2, 3), [])


def test_init_diagnostics_on_a_hand_made_example():
    # rows = offset (3, 4) + unit steps: mean vector (3, 4), ||mean|| = 5; centered rows all have
    # norm 1, so the RMS is 1 and the severity 5.
    x = torch.tensor([[4.0, 4.0], [2.0, 4.0], [3.0, 5.0], [3.0, 3.0]])
    pre = torch.tensor([[1.0, -1.0, 0.0], [-2.0, -0.5, 0.0], [0.1, -3.0, -1.0], [-1.0, -1.0, 0.0]])
    d = init_diagnostics(x, pre)
    assert d["mean_vector_norm"] == pytest.approx(5.0) and d["rms_centered_norm"] == pytest.approx(1.0)
    assert d["outlier_severity"] == pytest.approx(5.0)
    norms = np.sqrt([32.0, 20.0, 34.0, 18.0])
    assert d["norm_min"] == pytest.approx(norms.min()) and d["norm_max"] == pytest.approx(norms.max())
    assert d["norm_p50"] == pytest.approx(np.quantile(norms, 0.5))
    assert d["norm_p1"] == pytest.approx(np.quantile(norms, 0.01))
    assert d["frac_tiny_rows"] == 0.0
    assert d["n_never_positive"] == 2 and d["frac_never_positive"] == pytest.approx(2 / 3)  # 0 is not positive
    json.dumps(d, allow_nan=False)


def test_init_diagnostics_tiny_rows_and_degenerate_spread():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1e-5, 0.0]])  # median norm 1: one row below 1e-3
    assert init_diagnostics(x, torch.ones(4, 2))["frac_tiny_rows"] == 0.25
    same = init_diagnostics(torch.ones(3, 2), torch.ones(3, 2))
    assert same["outlier_severity"] is None and same["frac_never_positive"] == 0.0  # no spread: undefined
