"""The live explorer (saelab.report.explorer): runs grouped by arm and replicate, every arm of the
phase offered and picked, metrics by their glossary names with the raw column as the tooltip, and
a legend instead of cut names. The panel's redraw in a browser: tests/test_jupyterlab.py."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))  # tests/fake_runs.py, whatever pytest's import mode
from fake_runs import write_fake_arms  # noqa: E402

from saelab.lab import phases  # noqa: E402
from saelab.report import explorer  # noqa: E402
from saelab.training.runs import load_arms  # noqa: E402

MANY = {f"arm_with_a_long_name_{i}": {} for i in range(12)}  # more than the 8 the panel once picked


def panel_parts(panel):
    arms, side = panel.children[0].children
    reps, metric, log = side.children
    return arms, reps, metric, log, panel.children[1], panel.children[2]


def test_a_folder_is_grouped_by_arm_and_replicate(tmp_path):
    write_fake_arms(tmp_path / "seed0", steps=400, log_interval=20, warmup=100)
    write_fake_arms(tmp_path / "seed1" / "group0", steps=400, log_interval=20, warmup=100)
    found = explorer.find_runs(tmp_path)
    assert set(found) == {(a, s) for a in ("seed", "fixed", "reanimate") for s in ("seed0", "seed1")}
    assert explorer.replicates_of(found) == ["seed0", "seed1"]
    fig = explorer.figure(found, ["seed", "fixed"], ["seed0", "seed1"], "l0", steps=(100, 300))
    assert len(fig.data) == 4 and all(100 <= x <= 300 for t in fig.data for x in t.x)
    by_arm = {t.legendgroup: t.line.color for t in fig.data}
    assert len(by_arm) == 2 and len(set(by_arm.values())) == 2  # colour follows the arm ...
    assert {t.line.dash for t in fig.data} == {"solid", "dash"}  # ... the line style the replicate
    assert fig.layout.yaxis.title.text == "L0 (active latents per row) [l0]"


def test_every_arm_of_the_phase_is_offered_and_picked_the_first_replicate_only(tmp_path):
    """Issue 23: 05's JumpReLU arms were missing until picked (the panel picked the first 8 runs)."""
    runs = {s: load_arms(write_fake_arms(tmp_path / f"seed{s}", MANY, steps=400, log_interval=20, warmup=100)) for s in (0, 1)}
    write_fake_arms(tmp_path / "seed9", steps=400, log_interval=20, warmup=100)  # an earlier execution's: never shown
    run = SimpleNamespace(profile=phases.PROFILES["smoke"], out_dir=tmp_path, runs=runs)
    assert list(explorer.phase_runs(run))[:2] == [("arm_with_a_long_name_0", "seed0"), ("arm_with_a_long_name_1", "seed0")]
    panel = explorer.explore(run)
    arms, reps, metric, log, span, out = panel_parts(panel)
    assert list(arms.options) == list(MANY) and list(arms.value) == list(MANY)
    assert arms.layout.width == f"{len('arm_with_a_long_name_10') + 16}ch"  # names whole, beside the label
    assert list(reps.options) == ["seed0", "seed1"] and list(reps.value) == ["seed0"]
    fig = panel.figure
    assert len(fig.data) == 12 and {t.legendgroup for t in fig.data} == set(MANY)
    (shown,) = out.outputs  # the figure in the Output widget's state, as plotly's JSON mimetype
    assert len(shown["data"]["application/vnd.plotly.v1+json"]["data"]) == 12


def test_metrics_by_glossary_name_with_the_column_as_tooltip_and_a_change_redraws(tmp_path):
    run = SimpleNamespace(profile=phases.PROFILES["smoke"], out_dir=tmp_path,
                          runs={0: load_arms(write_fake_arms(tmp_path / "seed0", steps=400, log_interval=20, warmup=100))})
    panel = explorer.explore(run)
    arms, reps, metric, log, span, out = panel_parts(panel)
    labels = dict(metric.options)
    assert labels["dead fraction (held-out rows and training window)"] == "dead_frac" == metric.value
    assert labels["FVU (fraction of variance unexplained)"] == "fvu"
    assert metric.tooltip.startswith("column dead_frac: a latent that fired on none of the held-out rows")
    assert list(metric.options)[0][1] == "dead_frac"  # the named metrics first
    metric.value = "fvu"
    assert panel.figure.layout.yaxis.title.text == "FVU (fraction of variance unexplained) [fvu]"
    assert metric.tooltip.startswith("column fvu: fraction of variance unexplained")
    reps.value = ()
    assert panel.figure.data == ()


def test_a_column_without_a_name_is_offered_under_its_own():
    assert explorer.metric_name("norm_n_tiny") == "norm_n_tiny" and explorer.metric_tooltip("norm_n_tiny") == "column norm_n_tiny"
