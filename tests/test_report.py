"""The lab batch on small notebooks: pages, index, failure handling, offline HTML."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/fake_runs.py, whatever pytest's import mode
from fake_runs import TEMPLATE, write_test_notebooks  # noqa: E402

from saelab.report import batch as report  # noqa: E402
from saelab.report.batch import PhaseResult, build_index, find_notebooks, make_offline, render_notebook, run_lab  # noqa: E402

REMOTE_SCRIPT = re.compile(r"""<script[^>]*\bsrc\s*=\s*["']?(https?:)?//""", re.IGNORECASE)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The template and a deliberately failing copy, run once as a batch (about 10 s)."""
    root = tmp_path_factory.mktemp("lab")
    nbs = write_test_notebooks(root / "notebooks", broken=True)
    out = root / "out"
    rc = run_lab(profile="smoke", out=out, notebooks_dir=nbs, progress=False)
    return SimpleNamespace(rc=rc, out=out, nbs=nbs, index=(out / "index.html").read_text())


def _card(index: str, stem: str) -> str:
    m = re.search(rf'<div class="card (\w+)"><h3>{stem} .*?</div>', index, re.S)
    assert m, f"no card for {stem}"
    return m.group(0)


@pytest.mark.slow
def test_batch_writes_every_page_and_exits_nonzero_when_one_fails(lab):
    assert lab.rc == 1
    for stem in ("00_template", "01_broken"):
        assert (lab.out / f"{stem}.ipynb").stat().st_size > 0
        assert (lab.out / f"{stem}.html").stat().st_size > 0
    assert not [p.name for p in lab.out.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.mark.slow
def test_index_marks_the_failed_phase_with_its_error_and_keeps_the_other(lab):
    broken, ok = _card(lab.index, "01_broken"), _card(lab.index, "00_template")
    assert 'class="card failed"' in broken and "RuntimeError: deliberate failure for the test" in broken
    assert 'class="card ok"' in ok and 'href="00_template.html"' in ok and "template: the batch machinery" in ok
    assert '<p class="title">Template phase</p>' in ok  # the notebook's first heading
    assert re.search(r"\d+\.\d s · profile smoke", ok)  # wall time per notebook
    assert "1 of 2 phases ran, 1 failed" in lab.index
    results = {r["stem"]: r for r in json.loads((lab.out / "results.json").read_text())}
    assert results["01_broken"]["status"] == "failed" and results["00_template"]["status"] == "ok"


@pytest.mark.slow
def test_hypotheses_table_links_each_verdict_to_its_evidence_anchor(lab):
    assert 'href="00_template.html#Verdict">evidence</a>' in lab.index
    assert 'id="Verdict"' in (lab.out / "00_template.html").read_text()
    assert "points = 100; seeds = 1" in lab.index


@pytest.mark.slow
def test_pages_share_one_plotly_js_beside_them_and_load_nothing_remote(lab):
    """Issue 15: one plotly.min.js for the folder (not 5 MB inlined per page), still offline."""
    page = (lab.out / "00_template.html").read_text()
    assert "* plotly.js v" not in page and '<script src="plotly.min.js"></script>' in page
    assert (lab.out / "plotly.min.js").read_text().lstrip().startswith("/**\n* plotly.js v")
    assert page.count('class="plotly-graph-div"') == 2
    assert not REMOTE_SCRIPT.search(page) and not REMOTE_SCRIPT.search(lab.index)
    assert '<link rel="icon" href="data:,">' in page
    assert "print(" not in page and "pio.renderers.default" not in page  # code hidden by default
    assert len(page) < 600_000


@pytest.mark.slow
def test_executed_notebooks_keep_the_figures_json_but_not_plotly_js(lab):
    executed = nbformat.read(str(lab.out / "00_template.ipynb"), as_version=4)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) == 2
    assert not any("* plotly.js v" in str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert (lab.out / "00_template.ipynb").stat().st_size < 500_000


@pytest.mark.slow
def test_every_page_has_a_content_security_policy_that_allows_only_its_own_scripts(lab):
    for name in ("00_template.html", "01_broken.html", "index.html"):
        page = (lab.out / name).read_text()
        policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
        assert policy, name
        rules = dict(r.strip().split(" ", 1) for r in policy.group(1).split(";"))
        assert rules["default-src"] == "'none'" and "unsafe-inline" not in rules["script-src"], name
        assert page.index("Content-Security-Policy") < page.index("<script") if "<script" in page else True
    page = (lab.out / "00_template.html").read_text()
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", page, re.S)
    assert inline and all(report.script_hash(src) in page for src in inline)  # each allowed by its hash
    assert "<script" not in lab.index  # the index runs no script at all


@pytest.mark.slow
def test_every_page_names_the_saelab_that_rendered_it(lab):
    from saelab.version import describe

    for name in ("00_template.html", "01_broken.html", "index.html"):
        assert describe() in (lab.out / name).read_text(), name


@pytest.mark.slow
def test_every_file_of_a_report_is_readable_by_others(lab):
    """Issue 15: mkstemp's 0600 made 1,377 of 1,385 report files private; files 0644, folders 0755
    (umask 022, the tests' default) so a report can be served or copied."""
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in lab.out.rglob("*") if p.is_file()]
    folders = [p for p in lab.out.rglob("*") if p.is_dir()]
    assert len(files) >= 7 and folders  # pages, notebooks, plotly.min.js, results.json, index, verdicts.json (runs: test_runs)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files if stat.S_IMODE(p.stat().st_mode) != 0o666 & ~umask} == {}
    assert {p.name for p in folders if stat.S_IMODE(p.stat().st_mode) != 0o777 & ~umask} == set()


@pytest.mark.slow
def test_failed_page_still_renders_with_the_traceback(lab):
    page = (lab.out / "01_broken.html").read_text()
    assert "deliberate failure for the test" in page and "failed: RuntimeError" in page
    assert page.count('class="plotly-graph-div"') >= 1  # cells before the failure kept their output
    executed = nbformat.read(str(lab.out / "01_broken.ipynb"), as_version=4)
    assert executed.metadata.papermill.exception is True


@pytest.mark.slow
def test_parameters_reach_the_notebook(lab):
    executed = nbformat.read(str(lab.out / "00_template.ipynb"), as_version=4)
    assert executed.metadata.papermill.parameters == {"profile": "smoke", "out_dir": str(lab.out / "runs" / "00_template")}
    assert json.loads((lab.out / "runs" / "00_template" / "verdicts.json").read_text())[0]["verdict"] == "inconclusive"


@pytest.mark.slow
def test_rerunning_one_phase_keeps_the_others_and_ignores_stale_verdicts(lab, tmp_path):
    out = shutil.copytree(lab.out, tmp_path / "out")
    stale = [{"hypothesis": "STALE from an earlier run", "phase": "01", "verdict": "confirmed", "effect": "",
              "numbers": {}, "evidence": ""}]
    (out / "runs" / "01_broken" / "verdicts.json").write_text(json.dumps(stale))
    assert run_lab(profile="smoke", out=out, only=["01"], notebooks_dir=lab.nbs, progress=False, force=True) == 1
    index = (out / "index.html").read_text()
    assert "STALE" not in index
    assert 'class="card ok"><h3>00_template' in index and 'class="card failed"><h3>01_broken' in index


def test_kernel_that_never_starts_is_a_failed_phase_with_a_page(tmp_path):
    nb = nbformat.read(str(TEMPLATE), as_version=4)
    nb.metadata.kernelspec.name = "no_such_kernel_for_saelab"
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, str(tmp_path / "nbs" / "03_nokernel.ipynb"))
    assert run_lab(profile="smoke", out=tmp_path / "out", notebooks_dir=tmp_path / "nbs", progress=False) == 1
    page = (tmp_path / "out" / "03_nokernel.html").read_text()
    assert "no_such_kernel_for_saelab" in page
    assert "NoSuchKernel" in _card((tmp_path / "out" / "index.html").read_text(), "03_nokernel")


def test_find_notebooks_sorts_filters_and_rejects_unknown_names(tmp_path):
    for name in ("10_c", "00_a", "01_b", "_template", "notes"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in find_notebooks(tmp_path)] == ["00_a", "01_b", "10_c"]
    assert [p.stem for p in find_notebooks(tmp_path, ["01", "10_c"])] == ["01_b", "10_c"]
    with pytest.raises(ValueError, match="'7'.*00_a"):
        find_notebooks(tmp_path, ["7"])
    with pytest.raises(FileNotFoundError):
        find_notebooks(tmp_path / "empty")


def _notebook_with_widget() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("SECRET_SOURCE = 1")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="visible output\n"),
                    nbformat.v4.new_output("display_data", data={
                        "text/plain": "VBox()", report.WIDGET_VIEW: {"model_id": "abc", "version_major": 2}})]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    return nb


def test_render_notebook_hides_code_by_default_and_replaces_widgets(tmp_path):
    nbformat.write(_notebook_with_widget(), str(tmp_path / "x.ipynb"))
    render_notebook(tmp_path / "x.ipynb", tmp_path / "hidden.html")
    render_notebook(tmp_path / "x.ipynb", tmp_path / "shown.html", hide_code=False)
    hidden, shown = (tmp_path / "hidden.html").read_text(), (tmp_path / "shown.html").read_text()
    assert "SECRET_SOURCE" not in hidden and "SECRET_SOURCE" in shown
    assert "visible output" in hidden and report.WIDGET_NOTE in hidden
    assert "html-manager" not in hidden and not REMOTE_SCRIPT.search(hidden)
    assert 'href="index.html"' in hidden  # the way back to the index


def test_make_offline_removes_only_remote_scripts():
    page = ('<html><head><title>t</title></head><body><script src="https://cdn.example/x.js"></script>'
            "<script src='//cdn.example/y.js'></script><script src=\"local.js\"></script>"
            "<script>var inline = 1;</script></body></html>")
    out = make_offline(page)
    assert "cdn.example" not in out and 'src="local.js"' in out and "var inline = 1;" in out
    assert out.startswith('<html><head>\n<link rel="icon" href="data:,">')


def test_build_index_renders_verdicts_and_the_validation_table_escaped(tmp_path):
    rows = [{"arm": "seed", "metric": "dead (final)", "value": 0.61, "target": "<10%", "range": "<20%", "pass": False},
            {"arm": "fixed", "metric": "dead (final)", "value": 0.04, "target": "<10%", "range": "<20%", "pass": True}]
    (tmp_path / "runs" / "06_validation").mkdir(parents=True)
    (tmp_path / "runs" / "06_validation" / "validation.json").write_text(json.dumps(rows))
    verdict = {"hypothesis": "Bug #1 <L1 scale>", "id": "H1", "phase": "01_l1_penalty", "verdict": "confirmed",
               "kind": "cause", "meaning": "bad", "effect": "dead 61% -> 4%", "numbers": {"dead_seed": 0.61}, "evidence": "#verdict"}
    results = [PhaseResult("01_l1_penalty", "ok", 3.25, verdicts=[verdict]), PhaseResult("06_validation", "ok", 1.0)]
    index = build_index(tmp_path, results).read_text()
    assert "Bug #1 &lt;L1 scale&gt;" in index and "<L1 scale>" not in index
    assert '<span class="badge bad" title="bad news for this setup">confirmed</span>' in index
    assert "H1 kills latents in this setup" in index  # what the verdict means, in words
    assert 'href="01_l1_penalty.html#verdict"' in index and "dead_seed = 0.61" in index
    assert "validation table" in index
    assert ">0.61 FAIL<" in index and ">0.04 pass<" in index  # the arms x metrics grid
    assert "3.2 s" in index or "3.3 s" in index
    assert "No answer yet" in index  # phase 06 wrote no answer.json


def test_the_index_and_the_page_say_when_verdicts_are_indications(tmp_path):
    """Issue 23: the same note as the notebook's verdict cell, on the index and on the phase page,
    when the verdicts rest on fewer replicates than a verdict needs; none at 3 replicates."""
    verdict = {"hypothesis": "H1 · L1 scale", "id": "H1", "phase": "01_l1_penalty", "verdict": "confirmed", "kind": "cause",
               "meaning": "bad", "effect": "dead 61% -> 4%", "numbers": {}, "replicates": 1, "indication": True}
    index = build_index(tmp_path, [PhaseResult("01_l1_penalty", "ok", 1.0, verdicts=[verdict])]).read_text()
    assert "Indications, not evidence: these runs have 1 replicate per arm, and a verdict needs at least 3" in index
    assert "an indication from 1 replicate, not evidence" in index
    banner = report._banner(nbformat.v4.new_notebook(), "", [verdict])
    assert "Indications, not evidence" in banner
    evidence = verdict | {"replicates": 3, "indication": False}
    assert "Indications" not in build_index(tmp_path, [PhaseResult("01_l1_penalty", "ok", 1.0, verdicts=[evidence])]).read_text()
    assert "Indications" not in report._banner(nbformat.v4.new_notebook(), "", [evidence])


def test_verdict_colours_follow_what_the_verdict_means_not_its_word():
    """A confirmed remedy is good news, a refuted one bad; a confirmed cause bad news (issue 15)."""
    from saelab.lab.wording import meaning_of
    from saelab.report.html import verdict_badge

    remedy = {"verdict": "confirmed", "kind": "remedy", "meaning": "good", "id": "R1"}
    validation = {"verdict": "refuted", "kind": "remedy", "id": "V-base"}  # no meaning: read from the kind
    cause = {"verdict": "confirmed", "kind": "cause", "id": "H1"}
    assert [meaning_of(v) for v in (remedy, validation, cause)] == ["good", "bad", "bad"]
    assert meaning_of({"verdict": "inconclusive"}) == "unclear" and meaning_of({"verdict": "not applicable"}) == "na"
    assert 'class="badge good"' in verdict_badge(remedy) and 'class="badge bad"' in verdict_badge(validation)


ANSWER = {"base": "seed-test1", "ranking": [
    {"cause": "H1 · the L1 penalty <b>is</b> at the wrong scale", "id": "H1", "phase": "01_l1_penalty", "verdict": "confirmed",
     "peak_dead": {"base": 0.61, "with_fix": 0.04, "fall": 0.57, "base_sd": 0.021, "with_fix_sd": 0.005},
     "final_dead": {"base": 0.55, "with_fix": 0.02, "fall": 0.53},
     "margin": 0.05, "replicates": 3, "fix": ["penalty.form=\"per_sample_sum\"", "penalty.alpha=0.006"], "combined": True},
    {"cause": "H3 · resampling creates the collapse", "id": "H3", "phase": "03_resampling", "verdict": "refuted",
     "peak_dead": {"base": 0.3, "with_fix": 0.29, "fall": 0.01}, "final_dead": {"base": 0.2, "with_fix": 0.2, "fall": 0.0},
     "margin": 0.05, "replicates": 3, "fix": ["resample.strategy=\"off\""]}],
    "fixed_changes": ["penalty.form=\"per_sample_sum\"", "penalty.alpha=0.006"], "fixed_config": {"steps": 1000}}


def test_the_index_opens_on_the_answer_with_the_fix_and_the_command_to_train_it(tmp_path):
    """Issue 11: the first section says what kills the latents, ranked, with each fix as --set
    lines, a summary figure and the fixed configuration; run_lab's copies sit at the root."""
    from saelab.report.index import copy_answer

    src = tmp_path / "runs" / "06_validation"
    src.mkdir(parents=True)
    (src / "answer.json").write_text(json.dumps(ANSWER))
    (src / "fixed_config.json").write_text('{"steps": 1000}')
    assert sorted(p.name for p in copy_answer(tmp_path)) == ["answer.json", "fixed_config.json"]
    verdict = {"hypothesis": "H1 · x", "id": "H1", "verdict": "confirmed", "kind": "cause", "effect": "", "numbers": {}}
    index = build_index(tmp_path, [PhaseResult("01_l1_penalty", "ok", 1.0, verdicts=[verdict])]).read_text()
    body = index[index.index("<body>"):]
    assert body.index("What kills the latents of this setup") < body.index("<h2>Hypotheses</h2>")
    answer = body[body.index("What kills"):body.index("<h2>Hypotheses</h2>")]
    assert answer.index("H1") < answer.index("H3")  # ranked, most harmful first
    assert "the L1 penalty &lt;b&gt;is&lt;/b&gt; at the wrong scale" in answer  # escaped
    assert "61.0% ± 2.1 → 4.0% ± 0.5" in answer and "55.0% → 2.0%" in answer  # peak and final dead, base -> fix (± sd)
    assert "<code>--set penalty.alpha=0.006</code>" in answer
    assert "margin 5.0 points over 3 replicates" in answer
    assert '<span class="badge bad"' in answer and '<span class="badge good"' in answer  # confirmed cause red, refuted green
    assert "<svg" in answer and answer.count("<rect") == 4  # the cause not refuted x (base, with fix) x (peak, final)
    assert answer.index("<svg") < answer.index("<table")  # the figure right under the one-sentence answer
    assert "saelab train --config fixed_config.json --out" in answer and 'href="fixed_config.json"' in answer
    assert '<abbr title="the largest dead fraction during training' in answer  # the glossary on hover, too


def test_template_notebook_is_a_stripped_parameterized_phase():
    nb = nbformat.read(str(TEMPLATE), as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata.tags == ["parameters"]
    ns: dict = {}
    exec(code[0].source, ns)
    assert (ns["profile"], ns["out_dir"], ns["seeds"]) == ("smoke", "reports/_template", [0])
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert any('pio.renderers.default = "plotly_mimetype+notebook"' in c.source for c in code)


# ----- issue 14: nothing overwritten -------------------------------------------------------------


def _guarded_notebooks(nb_dir: Path) -> Path:
    """The template as 00_guarded and 01_other; 00 fails when given seeds=[99] (a bad parameter)."""
    nb_dir.mkdir(parents=True)
    nb = nbformat.read(str(TEMPLATE), as_version=4)
    params_at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(params_at + 1, nbformat.v4.new_code_cell('if seeds == [99]:\n    raise ValueError("seeds=[99] is refused")'))
    nbformat.write(nb, str(nb_dir / "00_guarded.ipynb"))
    nbformat.write(nbformat.read(str(TEMPLATE), as_version=4), str(nb_dir / "01_other.ipynb"))
    return nb_dir


def _snapshot(folder: Path, stem: str) -> dict[str, bytes]:
    files = [folder / f"{stem}.ipynb", folder / f"{stem}.html", *sorted((folder / "runs" / stem).rglob("*"))]
    return {str(p.relative_to(folder)): p.read_bytes() for p in files if p.is_file()}


@pytest.mark.slow
def test_an_existing_report_is_refused_without_force_and_a_failing_rerun_keeps_the_good_result(tmp_path):
    nbs, out = _guarded_notebooks(tmp_path / "nbs"), tmp_path / "out"
    assert run_lab(profile="smoke", out=out, notebooks_dir=nbs, progress=False) == 0
    good = _snapshot(out, "00_guarded")
    assert any(k.endswith("verdicts.json") for k in good)
    with pytest.raises(ValueError, match="already holds a report; pass --force"):
        run_lab(profile="smoke", out=out, only=["00"], notebooks_dir=nbs, progress=False)
    assert run_lab(profile="smoke", out=out, only=["00"], notebooks_dir=nbs, parameters={"seeds": [99]},
                   progress=False, force=True) == 1
    assert _snapshot(out, "00_guarded") == good  # notebook, page, runs and verdicts.json: byte-identical
    assert "seeds=[99] is refused" in (out / "00_guarded.failed.html").read_text()
    card = _card((out / "index.html").read_text(), "00_guarded")
    assert "previous result was kept" in card and "00_guarded.failed.html" in card and "inconclusive" in card
    assert not [p.name for p in (out / "runs").iterdir() if p.name.startswith(".")]
    # a good rerun with other parameters replaces it, and the index states the parameters that differ
    assert run_lab(profile="smoke", out=out, only=["00"], notebooks_dir=nbs, parameters={"seeds": [1]},
                   progress=False, force=True) == 0
    assert not (out / "00_guarded.failed.html").exists()
    index = (out / "index.html").read_text()
    assert "parameters: profile=&#x27;smoke&#x27;, seeds=[1]" in _card(index, "00_guarded")
    assert "parameters: profile=&#x27;smoke&#x27;" in _card(index, "01_other")


def test_a_batch_killed_mid_phase_gets_the_previous_runs_back(tmp_path):
    """run_phase moves the previous runs aside while a phase runs; a kill -9 leaves them there and
    the next batch restores them before it starts (here it fails at once: no such kernel)."""
    from saelab.report.batch import run_phase

    runs_dir = tmp_path / "out" / "runs" / "00_x"
    aside = runs_dir.with_name(".00_x.previous")
    aside.mkdir(parents=True)
    (aside / "verdicts.json").write_text("[]")
    runs_dir.mkdir()
    (runs_dir / "half.txt").write_text("from the killed run")
    nb = nbformat.read(str(TEMPLATE), as_version=4)
    nb.metadata.kernelspec.name = "no_such_kernel_for_saelab"
    nbformat.write(nb, str(tmp_path / "00_x.ipynb"))
    r = run_phase(tmp_path / "00_x.ipynb", tmp_path / "out", {"profile": "smoke", "out_dir": str(runs_dir)},
                  progress=False, keep_previous=True)
    assert r.status == "failed" and r.kept_previous
    assert sorted(p.name for p in runs_dir.iterdir()) == ["verdicts.json"] and not aside.exists()


@pytest.mark.slow
def test_a_phase_page_opens_on_its_verdicts_what_they_mean_and_the_glossary(lab):
    page = (lab.out / "00_template.html").read_text()
    top = page[page.index("<body"):page.index('class="jp-Cell')]  # the banner, before the notebook's first cell
    assert '<span class="badge unclear"' in top and "template: the batch machinery runs a phase" in top
    assert "Template: the batch machinery runs a phase not settled." in top or "not settled" in top  # the one sentence
    assert "Terms used in this report" in top and "FVU" in top and "replicate" in top
    assert str(lab.out) not in top  # no machine path in the banner


def test_the_answer_marks_ties_and_fixes_that_cost_reconstruction(tmp_path):
    from saelab.report.index import answer_section

    tied = {**ANSWER["ranking"][0], "id": "H8", "cause": "H8 · uncentered b_dec", "tied_with_above": True}
    costly = {**ANSWER["ranking"][0], "id": "H9", "cause": "H9 · lr too high", "costs_reconstruction": True,
              "fvu": {"base": 1.0, "with_fix": 1.25}, "combined": False, "why": "costs reconstruction: final FVU 1 with the base"}
    html = answer_section({**ANSWER, "ranking": [ANSWER["ranking"][0], tied, costly]})
    assert "Tied with it within the spread over replicates: <b>uncentered b_dec</b>" in html
    assert '<td title="tied with the cause above' in html and "costs reconstruction: final FVU 1 → 1.25" in html
    assert "not in the fixed configuration: costs reconstruction" in html
