"""Figure builders on fake runs: the traces, dropdowns and numbers each figure promises."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/fake_runs.py, whatever pytest's import mode
from fake_runs import fake_arms  # noqa: E402

from saelab.report import plots, tables  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return fake_arms(tmp_path_factory.mktemp("arms"))


@pytest.fixture(autouse=True)
def no_show(monkeypatch):
    """A builder that calls .show() fails the test."""
    monkeypatch.setattr(go.Figure, "show", lambda *a, **k: pytest.fail("a figure builder called .show()"))


def _button(fig: go.Figure, label: str) -> dict:
    return next(b for b in fig.layout.updatemenus[0].buttons if b.label == label).to_plotly_json()


def test_training_curves_dropdown_switches_metric_and_keeps_events(runs):
    fig = plots.training_curves(runs)
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == [c[0] for c in plots.CURVES]
    dead = _button(fig, "dead fraction")
    shown = [t for t, v in zip(fig.data, dead["args"][0]["visible"]) if v and t.meta != "events"]
    # per arm: held-out truth solid and the seed's single-batch count dashed
    assert sorted(t.name for t in shown) == sorted(
        f"{a} · {s}" for a in runs for s in ("held-out truth", "single batch (the seed's count)")
    )
    assert {t.line.dash for t in shown if "single batch" in t.name} == {"dash"}
    assert dead["args"][1]["yaxis.title.text"].startswith("dead latents")
    assert _button(fig, "loss")["args"][1]["yaxis.type"] == "log"
    # initially only the L0 curves (and the event markers) are visible
    assert {t.name for t in fig.data if t.visible is not False and t.meta != "events"} == set(runs)
    events = {t.name: t for t in fig.data if t.meta == "events"}
    assert all(v for t, v in zip(fig.data, dead["args"][0]["visible"]) if t.meta == "events")
    seed_hover = " ".join(events["seed events"].hovertext)
    collapse_step = runs["seed"].autopsy["collapses"][0]["onset_step"]
    assert f"<b>collapse</b> at step {collapse_step}" in seed_hover and "warmup_end" in seed_hover
    assert "resample" in seed_hover and "collapse" not in " ".join(events["fixed events"].hovertext)
    assert any(s.x0 == runs["seed"].config.schedule.warmup_steps for s in fig.layout.shapes)


def test_training_curves_can_open_on_another_metric(runs):
    fig = plots.training_curves(runs, first="dead fraction")
    shown = {t.name for t in fig.data if t.visible is not False and t.meta != "events"}
    assert shown == {f"{a} · {s}" for a in runs for s in ("held-out truth", "single batch (the seed's count)")}
    assert fig.layout.updatemenus[0].active == [c[0] for c in plots.CURVES].index("dead fraction")
    assert fig.layout.yaxis.title.text.startswith("dead latents")
    assert plots.training_curves(runs, first="loss").layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="first='dead'"):
        plots.training_curves(runs, first="dead")


def test_long_series_are_thinned_to_max_points_keeping_the_last_step(tmp_path):
    long = fake_arms(tmp_path, {"long": {}}, steps=30_000, log_interval=5, d_sae=8)
    fig = plots.training_curves(long)
    last = int(long["long"].metrics["step"].iloc[-1])
    lines = [t for t in fig.data if t.meta != "events"]
    assert len(long["long"].metrics) > plots.MAX_POINTS
    assert all(len(t.x) <= plots.MAX_POINTS and t.x[-1] == last for t in lines)


def test_firing_histogram_puts_dead_latents_in_their_own_labelled_bin(runs):
    fig = plots.firing_histogram(runs)
    assert [t.name.split(" ")[0] for t in fig.data] == list(runs)
    assert fig.layout.xaxis.ticktext[0] == "dead"
    for trace, run in zip(fig.data, runs.values()):
        final = plots.to_numpy(run.latents["fire_counts"])[-1]
        assert trace.x[0] == fig.layout.xaxis.tickvals[0]
        assert trace.y[0] == (final == 0).sum()  # the dead bin
        assert sum(trace.y) == len(final)  # every latent lands in exactly one bar
    one = _button(fig, "fixed")["args"][0]["visible"]
    assert one == [False, True, False]


def test_death_order_on_a_hand_made_example():
    # latent 0 fires at log 0 only -> dead from log 1; latent 1 fires until the end -> 3 (alive);
    # latent 2 never fires -> dead from log 0. Earliest death first: 2, 0, 1.
    fc = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0]])
    dead_from, order = plots.death_order(fc)
    assert dead_from.tolist() == [1, 3, 0]
    assert order.tolist() == [2, 0, 1]


def test_death_heatmap_downsamples_latents_and_marks_events(tmp_path):
    run = fake_arms(tmp_path, {"wide": {"collapse": True, "resample_every": 250}}, d_sae=700)["wide"]
    fig = plots.death_heatmap(run)
    heat = fig.data[0]
    z = np.asarray(heat.z)
    assert z.shape[0] <= plots.MAX_HEATMAP_ROWS and z.shape[1] == len(run.metrics)
    assert z.dtype == np.uint8 and z.min() >= 0 and z.max() <= 100  # percent alive
    fc = plots.to_numpy(run.latents["fire_counts"])
    sizes = [len(g) for g in np.array_split(np.arange(700), z.shape[0])]  # 1 or 2 latents per row
    assert np.average(z[:, -1], weights=sizes) == pytest.approx(100 * (fc[-1] > 0).mean(), abs=0.5)
    assert z[0, -1] < z[-1, -1]  # the earliest deaths are at the top
    assert "collapse" in " ".join(fig.data[1].hovertext)


def test_autopsy_table_lists_collapses_with_attribution(runs):
    collapse = runs["seed"].autopsy["collapses"][0]
    table = tables.autopsy_table(runs)
    seed = [r for r in table.rows if r[0] == "seed"]
    assert len(seed) == 1 and seed[0][1] == collapse["onset_step"] and seed[0][3] == "dead_rise+l0_drop"
    assert seed[0][6] == f"warmup_end at step {collapse['coincides_step']} ({collapse['coincides_distance']} steps before onset)"
    assert seed[0][4] == f"{collapse['dead_before']:.4g} → {collapse['dead_after']:.4g}"
    assert [r[6] for r in table.rows if r[0] == "fixed"] == ["no collapse detected"]
    assert "coincides with" in table._repr_html_() and "white-space:nowrap" in table.to_html()


def test_table_escapes_formats_and_never_cuts_names():
    long = "reanimation_coef_0.01_annealed_<b>x</b>"
    df = pd.DataFrame({"arm": [long, "base"], "dead": [0.123456, float("nan")], "n": [3, 4]}).set_index("arm")
    html = tables.Table.from_frame(df, "t").to_html()
    assert "reanimation_coef_0.01_annealed_&lt;b&gt;x&lt;/b&gt;" in html and "<b>x" not in html  # whole, escaped
    assert ">0.1235<" in html and ">—<" in html  # 4 significant digits; NaN as a dash
    cells = re.findall(r'<td style="([^"]*)">', html)
    assert "white-space:nowrap" in cells[0] and "white-space:nowrap" not in cells[1]  # the name column
    assert "text-align:right" in cells[1]


def test_detector_pr_has_precision_and_recall_per_detector_and_an_arm_dropdown(runs):
    fig = plots.detector_pr(runs)
    assert len(fig.data) == len(runs) * 3 * 2
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == [*runs, "all arms"]
    vis = _button(fig, "fixed")["args"][0]["visible"]
    assert {t.name for t, v in zip(fig.data, vis) if v} == {f"fixed · {d}" for d in plots.DETECTORS}
    recall = [t for t in fig.data if t.yaxis == "y2" and t.name == "seed · window"][0]
    assert np.allclose(recall.y, runs["seed"].metrics["det_window_recall"])


def test_largest_lr_jump_on_a_hand_made_schedule():
    # |diff| = 1, 1, 8, 0: the largest is 8 between steps 2 and 3, i.e. 80% of the peak 10
    j = plots.largest_lr_jump(np.arange(5), np.array([0.0, 1.0, 2.0, 10.0, 10.0]))
    assert j == {"delta": 8.0, "from_step": 2.0, "to_step": 3.0, "rel_to_peak": 0.8}


def test_lr_schedules_marks_the_largest_change_at_full_resolution(runs):
    lr = np.r_[np.linspace(0, 1e-4, 300), np.full(700, 3e-4)]  # jumps at step 300
    fig = plots.lr_schedules(runs, lr_by_step={"seed": lr})
    star = [t for t in fig.data if t.name == "seed: largest change"][0]
    assert star.x[0] == 300 and star.y[0] == pytest.approx(3e-4)
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["linear y", "log y"]


def test_dead_vs_l0_places_each_arm_at_its_final_numbers(runs):
    fig = plots.dead_vs_l0(runs)
    for t, (arm, run) in zip(fig.data, runs.items()):
        assert t.name == arm
        assert t.x[0] == pytest.approx(run.summary["l0"]) and t.y[0] == pytest.approx(run.summary["dead_frac"])
    assert "aux.reanimation_coef = 0.001" in fig.data[2].hovertext
    assert all(t.mode == "markers" and t.showlegend is not False for t in fig.data)  # named in the legend, no piled text


def test_norm_ranges_takes_min_and_max_over_events_and_logged_batches(runs):
    df = plots.norm_stats_frame(runs)
    run = runs["seed"]
    ev = [e for e in run.events if e["kind"] == "norm_stats"]
    row = df[(df.arm == "seed") & (df.quantity == plots.NORM_LABELS["x_norm"])].iloc[0]
    assert row["min"] == min([e["x_norm_min"] for e in ev] + run.metrics["norm_x_norm_min"].tolist())
    assert row["max"] == max([e["x_norm_max"] for e in ev] + run.metrics["norm_x_norm_max"].tolist())
    assert row["n"] == len(ev) + len(run.metrics)
    fig = plots.norm_ranges(runs)
    assert len(fig.data) == len(runs) and fig.layout.xaxis.type == "log"
    assert len(fig.layout.yaxis.ticktext) == 3


def test_norm_stats_null_means_infinite():
    class R:  # an unclamped zero-norm row: coef_max was inf, written to JSON as null
        events = [{"step": 0, "kind": "norm_stats", "coef_min": 1.0, "coef_max": None}]
        metrics = pd.DataFrame({"step": [0]})
    df = plots.norm_stats_frame({"a": R()})
    assert math.isinf(df["max"].iloc[0])


def test_validation_table_is_an_arms_by_metrics_grid_shaded_by_pass_and_fail():
    t = tables.validation_table([
        {"arm": "seed", "metric": "dead", "value": 0.6, "target": "<10%", "range": "<20%", "pass": False},
        {"arm": "seed", "metric": "L1/recon", "value": float("nan"), "target": "0.1", "range": "0.01-0.5", "pass": None},
        {"arm": "fixed", "metric": "dead", "value": 0.05, "target": "<10%", "range": "<20%", "pass": True},
        {"arm": "fixed", "metric": "L1/recon", "value": 0.2, "target": "0.1", "range": "0.01-0.5", "pass": True},
    ])
    assert t.header == ["arm", "dead (target <10%, pass <20%)", "L1/recon (target 0.1, pass 0.01-0.5)", "metrics passed"]
    assert t.rows == [["seed", "0.6 FAIL", "— n/a", "0 of 1"], ["fixed", "0.05 pass", "0.2 pass", "2 of 2"]]
    assert t.tones == [["", "bad", "", "bad"], ["", "good", "good", "good"]]
    html = t.to_html()
    assert html.count("background:#f8d7da") == 2 and html.count("background:#dff3e3") == 3


def test_replicate_spread_shows_mean_and_sample_sd_per_arm():
    df = pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                       "dead_frac": [1.0, 2.0, 3.0, 5.0, 5.0, 5.0], "l0": [1.0] * 6})
    fig = plots.replicate_spread(df)
    mean_a = fig.data[0]
    assert mean_a.y[0] == 2.0 and mean_a.error_y.array[0] == pytest.approx(1.0)  # sd of 1,2,3 (ddof=1)
    assert list(fig.data[1].y) == [1.0, 2.0, 3.0]
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["dead_frac", "l0"]
    assert _button(fig, "l0")["args"][0]["visible"] == [False] * 4 + [True] * 4


def test_every_builder_returns_a_serializable_figure(runs):
    figs = [plots.training_curves(runs), plots.firing_histogram(runs), plots.death_heatmap(runs["seed"]),
            plots.detector_pr(runs), plots.lr_schedules(runs), plots.dead_vs_l0(runs), plots.norm_ranges(runs),
            plots.replicate_spread(pd.DataFrame({"arm": ["a"], "seed": [0], "x": [1.0]}))]
    for f in figs:
        assert isinstance(f, go.Figure) and f.layout.title.text
        assert len(f.to_json()) < 200_000  # figures stay small
