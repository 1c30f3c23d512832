"""The lab batch: run every phase notebook with papermill, render each to an offline HTML page,
and write ``index.html`` (``saelab.report.index``): the answer first, then each phase's status and the
verdicts the notebooks computed.

Layout of ``out`` (every page is written to a temporary name and renamed, so an interrupted
batch leaves whole pages from the previous run, never half-written ones; files get the mode of a
normally created file, 0644 under the usual umask, so the folder can be shared or served)::

    <stem>.ipynb, <stem>.html   executed notebook (plotly JSON kept, plotly.js dropped) and its page
    plotly.min.js               the one plotly.js every page loads (offline)
    runs/<stem>/                the phase's run directories, verdicts.json (validation.json for 06)
    answer.json, fixed_config.json   phase 06's answer, copied here (the index links them)
    results.json                status, wall time and verdicts per phase (merged across batches)
    index.html                  the report's front page
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from saelab.execution import cluster as clusters
from saelab.execution.jobs import Job, phase_dir_state
from saelab.fileio import write_atomic
from saelab.lab import dose
from saelab.lab.causes import PHASES
from saelab.lab.params import check_parameters, mirrors
from saelab.lab.phases import plan_phase, validate
from saelab.lab.plan import LabPlan, plan_lab
from saelab.lab.wording import indication_note, shown, summary_sentence, what_it_means
from saelab.report.html import (  # noqa: F401 (re-exported)
    BADGE_CSS,
    CSS,
    PLOTLY_JS,
    csp_meta,
    figure_scripts,
    glossary_html,
    provenance_line,
    script_hash,
    verdict_badge,
    write_plotly_js,
)
from saelab.report.index import BASE_FILE, LAB_TIMING, build_index, copy_answer, index_page  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "<p><i>Interactive widget: open this notebook in JupyterLab to use it.</i></p>"
# A remote script cannot load offline, and a failed load is a console error: nbconvert links
# require.js and MathJax from a CDN and plotly adds a MathJax CDN tag to every figure. None of
# them is needed to draw plotly figures (plotly.js itself is embedded once by the notebook).
REMOTE_SCRIPT = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//[^>]*>\s*</script>""", re.IGNORECASE)


@dataclass
class PhaseResult:
    """Outcome of one phase notebook in a batch."""

    stem: str  # notebook file name without .ipynb, e.g. "01_l1_penalty"
    status: str  # "ok" | "failed"
    wall_s: float  # seconds spent executing the notebook
    error: str = ""  # last line of the error ("ValueError: ...") when failed
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # from runs/<stem>/verdicts.json
    profile: str = ""
    finished: str = ""  # ISO 8601 UTC time the phase finished
    title: str = ""  # the notebook's first markdown heading
    parameters: dict[str, Any] = field(default_factory=dict)  # what papermill passed, out_dir left out
    kept_previous: bool = False  # failed, and the previous good notebook, page and runs were kept


def find_notebooks(notebooks_dir: Path, only: list[str] | None = None) -> list[Path]:
    """Phase notebooks ``NN_*.ipynb`` in ``notebooks_dir``, sorted; ``only`` keeps those whose
    number ("01") or full stem ("01_l1_penalty") is listed and raises on a name that matches none."""
    found = sorted(Path(notebooks_dir).glob(NOTEBOOK_GLOB))
    if not found:
        raise FileNotFoundError(f"no phase notebooks ({NOTEBOOK_GLOB}) in {notebooks_dir}")
    if not only:
        return found
    keep = [p for p in found if p.stem in only or p.stem.split("_", 1)[0] in only]
    unknown = [o for o in only if not any(p.stem == o or p.stem.split("_", 1)[0] == o for p in found)]
    if unknown:
        raise ValueError(f"--only {unknown} matches no notebook; phases: {[p.stem for p in found]}")
    return keep


def load_verdicts(path: Path) -> list[dict[str, Any]]:
    """A phase's verdicts.json as a list of dicts (empty when absent); raises ValueError naming the
    file when it is not a list of objects."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if not isinstance(data, list) or not all(isinstance(v, dict) for v in data):
        raise ValueError(f"{path} must hold a list of verdict objects")
    return data


def _error_line(exc: BaseException) -> str:
    if hasattr(exc, "ename"):  # papermill.PapermillExecutionError: the notebook raised
        return f"{exc.ename}: {exc.evalue}".strip()
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".strip()


def set_aside(run_dir: Path, jobs: list | None = None) -> None:
    """Before a phase trains into ``run_dir``: a folder the phase's ``jobs`` can continue (their
    own finished or half-finished training, saelab.execution.jobs.phase_dir_state) stays where it is and is
    resumed; anything else (another training, an unknown notebook's files) waits aside in
    ``.<name>.previous`` until the phase succeeds (issue 14). A kill -9 leaves it aside, and the next
    batch puts it back first unless the folder holds this phase's interrupted training."""
    run_dir = Path(run_dir)
    previous = run_dir.with_name(f".{run_dir.name}.previous")
    if previous.exists():
        if phase_dir_state(run_dir, jobs or []) == "ours":
            return  # the interrupted new training: continue it, the good result stays aside
        shutil.rmtree(run_dir, ignore_errors=True)
        os.replace(previous, run_dir)
    if phase_dir_state(run_dir, jobs or []) == "other":
        os.replace(run_dir, previous)


class _KnownParameters(logging.Filter):
    """Drops papermill's "Passed unknown parameter: out_dir": its parser skips every ``x: str | None``
    line of a parameters cell, and saelab checked each name against the phase's own parameters
    before anything ran (_check_lab_parameters), so the warning was noise on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


logging.getLogger("papermill").addFilter(_KnownParameters())


def run_phase(notebook: Path, out: Path, parameters: dict[str, Any], progress: bool = True,
              keep_previous: bool = False, jobs: list | None = None, error: str = "") -> PhaseResult:
    """Execute one notebook into ``out/<stem>.ipynb`` and render ``out/<stem>.html``. A failure in
    the notebook is recorded in the result (and shown on its page), never raised. ``jobs``: the
    phase's training jobs (the notebook finds them trained and resumes or trains what is missing);
    the run folder is handled by ``set_aside``. ``error`` (a training job failed): the notebook is
    not run and the phase fails with it. With ``keep_previous`` (the phase's last result was good) a
    failure leaves the previous notebook, page and run folder in place and writes
    ``<stem>.failed.ipynb`` / ``.html`` instead."""
    import papermill as pm

    stem = notebook.stem
    run_dir = Path(parameters["out_dir"])
    set_aside(run_dir, jobs)
    previous = run_dir.with_name(f".{run_dir.name}.previous")
    partial = out / f".{stem}.partial.ipynb"
    partial.unlink(missing_ok=True)
    t0 = time.perf_counter()
    if not error:
        try:
            with _kernel_env(SAELAB_RETAIN_MEMORY="1"):  # a throwaway kernel: keep freed memory (saelab.training.optim)
                pm.execute_notebook(str(notebook), str(partial), parameters=parameters, progress_bar=progress,
                                    cwd=str(REPO), kernel_manager_class=logged_kernel(kernel_log(out, stem)))
        except Exception as exc:  # noqa: BLE001 - one failing phase must not stop the batch
            error = _error_line(exc)
        except BaseException:  # Ctrl-C: leave the previous page in place, no partial file behind
            partial.unlink(missing_ok=True)
            raise
    wall = time.perf_counter() - t0
    if error and keep_previous:  # never replace a good result by a failed one
        if previous.exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            os.replace(previous, run_dir)
        if partial.exists():
            slim_notebook(partial)
            os.replace(partial, out / f"{stem}.failed.ipynb")
            render_notebook(out / f"{stem}.failed.ipynb", out / f"{stem}.failed.html", error=error)
        else:
            write_atomic(out / f"{stem}.failed.html", _error_page(stem, error))
        return PhaseResult(stem=stem, status="failed", wall_s=round(wall, 2), error=error, profile=str(parameters.get("profile", "")),
                           finished=datetime.now(UTC).isoformat(timespec="seconds"), title=notebook_title(notebook),
                           parameters=_shown(parameters), kept_previous=True)
    if previous.exists():  # renamed first: a kill during the removal never leaves a half "previous"
        trash = previous.with_name(f".{run_dir.name}.trash")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(previous, trash)
        shutil.rmtree(trash, ignore_errors=True)
    for stale in (f"{stem}.failed.ipynb", f"{stem}.failed.html"):
        (out / stale).unlink(missing_ok=True)
    executed = out / f"{stem}.ipynb"
    try:
        verdicts = [] if error and not executed.exists() else load_verdicts(run_dir / "verdicts.json")
    except ValueError as exc:
        verdicts, error = [], error or str(exc)
    if partial.exists():
        slim_notebook(partial)
        os.replace(partial, executed)
        render_notebook(executed, out / f"{stem}.html", error=error, verdicts=verdicts)
    else:  # the kernel never started: no notebook to render
        executed.unlink(missing_ok=True)
        write_atomic(out / f"{stem}.html", _error_page(stem, error))
    return PhaseResult(stem=stem, status="failed" if error else "ok", wall_s=round(wall, 2), error=error,
                       verdicts=verdicts, profile=str(parameters.get("profile", "")),
                       finished=datetime.now(UTC).isoformat(timespec="seconds"), title=notebook_title(notebook),
                       parameters=_shown(parameters))


def kernel_log(out: Path, stem: str) -> Path:
    """Where phase ``stem``'s kernel writes its own output (its stdout and stderr: the IPKernelApp
    warnings, a KeyboardInterrupt it caught), so the console shows only the lab's progress."""
    return Path(out) / "logs" / f"{stem}.log"


def logged_kernel(log: Path) -> type:
    """A jupyter_client kernel manager whose kernel process writes its stdout and stderr to ``log``
    (truncated at each start) instead of this process's terminal (nbclient's kernel_manager_class)."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as fh:  # the child keeps its own copy of the descriptor
                kw["stdout"] = kw["stderr"] = fh
                return await super()._async_launch_kernel(kernel_cmd, **kw)

    return LoggedKernelManager


@contextlib.contextmanager
def _kernel_env(**values: str) -> Iterator[None]:
    """Environment variables for the kernels started inside the block (they inherit this
    process's environment), restored afterwards."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _shown(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters worth stating on the index: everything but out_dir (always the report's)."""
    return {k: v for k, v in parameters.items() if k != "out_dir"}


def notebook_title(notebook: Path) -> str:
    """Text of the first markdown heading of a notebook ("" when there is none)."""
    try:
        cells = json.loads(Path(notebook).read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return ""
    for c in cells:
        if c.get("cell_type") == "markdown":
            src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            m = re.search(r"^#+\s+(.+)$", src, re.M)
            if m:
                return m.group(1).strip()
    return ""


def run_lab(
    profile: str = "quick",
    out: Path = Path("reports/lab"),
    only: list[str] | None = None,
    notebooks_dir: Path = REPO / "notebooks",
    parameters: dict[str, Any] | None = None,
    progress: bool = True,
    force: bool = False,
    cluster: Any = None,
    dose_budget: int = dose.DOSE_BUDGET,
) -> int:
    """Run the phase notebooks (sorted; ``only`` filters by number or stem) with papermill,
    passing ``profile``, ``out_dir=out/runs/<stem>`` and ``parameters``; write each executed
    notebook and its HTML page to ``out`` and then ``out/index.html``.

    Jobs, then notebooks: every phase's training jobs (one lockstep group of one replicate,
    saelab.execution.jobs) are planned first and run on ``cluster`` (a saelab.execution.cluster.ClusterSpec; None: in
    this process); each phase's notebook runs once its jobs are done and finds its runs trained.
    A finished job is never retrained and a half-finished one resumes from its checkpoint, so a
    rerun after an interruption picks up where it stopped. A phase that reads the others' verdicts
    (06) is planned once their jobs are done (``plan_later``), after the dose search
    (saelab.lab.dose: at most ``dose_budget`` extra arms, stronger doses of a confirmed cause's one
    factor while its fix leaves more than 5% dead). A failing job is reported by name and fails
    its phase; the other jobs and phases go on.

    An ``out`` that already holds a report is refused unless ``force``; then a phase that fails
    keeps its previous good result (see ``run_phase``). Every parameter name must be a parameter
    of every phase run (a name is code in papermill's injected cell). Returns 0 when every phase
    of this batch succeeded, else 1."""
    started = time.perf_counter()
    out = Path(out).resolve()
    notebooks = find_notebooks(Path(notebooks_dir), only)
    _check_lab_parameters(notebooks, parameters or {})  # issue 14: before anything is written
    if isinstance(dose_budget, bool) or not isinstance(dose_budget, int) or dose_budget < 0:
        raise ValueError(f"--dose-budget {dose_budget!r}: must be an integer >= 0 (extra arms; 0: no dose search)")
    if not force and _holds_report(out):
        raise ValueError(f"{out} already holds a report; pass --force to rerun phases into it (a phase that fails "
                         f"keeps its previous result), or choose another --out")
    plan = plan_lab(profile, [nb.stem for nb in notebooks], parameters or {}, out)  # ValueError before anything is written
    runner = clusters.start(cluster, progress, log_dir=out / "logs")  # an unreachable cluster is refused before anything is written
    batch = _Batch(plan, notebooks, runner, progress, cluster, started, dose_budget)
    try:
        batch.run()
    finally:
        runner.close()
    if progress:
        print(clusters.summary(runner), file=sys.stderr, flush=True)
        print(f"report: {out / 'index.html'}", file=sys.stderr, flush=True)
    return 0 if all(r.status == "ok" for r in batch.results) else 1


class _Batch:
    """One ``run_lab``: the plan's jobs submitted to the runner wave by wave, and each phase's
    notebook executed as soon as its jobs are done; the index rewritten after every phase."""

    def __init__(self, plan: LabPlan, notebooks: list[Path], runner: Any, progress: bool, cluster: Any,
                 started: float, dose_budget: int = dose.DOSE_BUDGET) -> None:
        self.plan, self.notebooks, self.runner, self.cluster = plan, notebooks, runner, cluster
        self.dose_budget = dose_budget
        self.started = started  # time.perf_counter() when run_lab began: the index's wall clock (lab.json)
        self.say = runner.write if progress else (lambda line: None)
        self.submitted: set[str] = set()
        self.executed: set[str] = set()
        self.results: list[PhaseResult] = []
        self.merged = {r.stem: r for r in _previous_results(plan.out)}

    def run(self) -> None:
        self.plan.out.mkdir(parents=True, exist_ok=True)
        self.plan.write()
        base = self.plan.base  # the index opens with what the base had to assume (issue 20); a preset assumes nothing
        write_atomic(self.plan.out / BASE_FILE, json.dumps({"name": base.name, "origin": base.origin,
                                                            "assumed": list(base.assumed)}, indent=2))
        # one bar over the jobs, then the notebooks (each notebook one step once it ran)
        self.runner.bar.set_description("lab", refresh=False)
        self.runner.bar.unit = "step"
        self.say(f"training jobs run {clusters.describe(self.cluster)}")
        self.runner.bar.total += len(self.notebooks)
        self.submit(self.plan.first)
        for nb in sorted(self.notebooks, key=lambda nb: nb.stem in self.plan.later):  # the first wave, then the late phases
            if nb.stem not in self.submitted:  # a late phase: every first-wave notebook has run by now
                self.plan_later()
            self.execute(nb)

    def submit(self, stems: list[str]) -> None:
        for stem in stems:
            set_aside(self.plan.run_dir(stem), self.plan.jobs(stem))  # before any job trains into it
        self.plan.write()  # set_aside may have moved an older plan aside with the folder
        self.runner.submit([j for stem in stems for j in self.plan.jobs(stem)])
        self.submitted |= set(stems)

    def plan_later(self) -> None:
        """Once every first-wave job is done, judge the first-wave phases whose notebooks have not
        run yet (their notebooks write the same verdicts again), then plan and submit the phases
        that read those verdicts, so that their jobs train while the last notebooks execute."""
        late = [s for s in self.plan.later if s not in self.submitted]
        first_jobs = [j.name for s in self.plan.first for j in self.plan.jobs(s)]
        if not late or not self.runner.all_done(first_jobs):
            return
        for stem in self.plan.first:
            jobs = self.plan.jobs(stem)
            if stem not in self.executed and jobs and all(self.runner.outcome[j.name] is None for j in jobs):
                try:
                    self.plan.judge(stem)
                except Exception:  # noqa: BLE001 - then plan after that notebook ran (it reports the problem)
                    return
        self.dose_search()
        for stem in late:
            self.plan.plan_later(stem)
        self.submit(late)

    def dose_search(self) -> None:
        """Rounds of stronger doses (saelab.lab.dose) for the first-wave phases' confirmed causes whose
        fix leaves more than 5% dead, each round's jobs trained before the next is planned, until
        every cause meets the margin or runs out of doses or budget; runs/dose/doses.json records it
        for phase 06. A lab with no first-wave phase (``--only 06``) keeps the search on disk."""
        runs = {s: self.plan.runs[s] for s in self.plan.first if s in self.plan.runs}
        if not runs:
            return
        search = dose.DoseSearch(runs, self.plan.out / "runs", self.dose_budget)
        while jobs := search.next_round():
            self.say(f"dose search, round {search.round}: " + ", ".join(
                f"{c.h.id} {c.tried[-1]['arm']}" for c in dict.fromkeys(search.arms.values())))
            self.runner.submit(jobs)
            search.judge_round(self.runner.wait(j.name for j in jobs))
        rec = search.write()
        for c in rec["causes"]:
            self.say(f"dose search: {c['id']} {c['outcome']}" + (f", chosen {c['chosen']}" if c["chosen"] else ""))

    def execute(self, nb: Path) -> None:
        """Wait for the phase's jobs, run its notebook, and rewrite results.json and the index."""
        i, n = self.notebooks.index(nb) + 1, len(self.notebooks)
        jobs = self.plan.jobs(nb.stem)
        failed = {name: e for name, e in self.runner.wait(j.name for j in jobs).items() if e}
        self.plan_later()
        error = (f"training job {next(iter(failed))} failed: {next(iter(failed.values()))}"
                 + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")) if failed else ""
        self.runner.bar.set_postfix_str(f"notebook {nb.stem}", refresh=True)
        before = self.merged.get(nb.stem)
        r = run_phase(nb, self.plan.out, self.plan.passed(nb.stem), False,
                      keep_previous=before is not None and before.status == "ok", jobs=jobs, error=error)
        self.executed.add(nb.stem)
        self.results.append(r)
        if r.kept_previous:  # the index keeps the good result and says that a rerun failed
            self.merged[r.stem] = replace(before, error=f"a rerun ({r.finished[:16].replace('T', ' ')} UTC) failed and this "
                                                        f"previous result was kept; see {r.stem}.failed.html: {r.error}")
        else:
            self.merged[r.stem] = r
        everything = [self.merged[k] for k in sorted(self.merged)]
        copy_answer(self.plan.out)
        # after every phase, so an interrupted batch still has an index of what finished
        write_atomic(self.plan.out / "results.json", json.dumps([asdict(x) for x in everything], indent=2, default=str))
        write_atomic(self.plan.out / LAB_TIMING, json.dumps({
            "wall_s": round(time.perf_counter() - self.started, 1), "notebooks_s": round(sum(x.wall_s for x in self.results), 1),
            "training_s": round(sum(rec["wall_s"] for rec in self.runner.records.values()), 1),
            "jobs": clusters.summary(self.runner), "finished": datetime.now(UTC).isoformat(timespec="seconds")}))
        build_index(self.plan.out, everything)
        self.runner.bar.update(1)
        # success is the bar alone; a failure once: a job's error was said when it failed (with its
        # traceback's file), a notebook's names the phase's kernel log
        if failed:
            self.say(f"[{i}/{n}] {nb.stem} failed: not run, its training job {next(iter(failed))} failed (above)")
        elif r.error:
            self.say(f"[{i}/{n}] {nb.stem} failed in {r.wall_s:.1f} s: {r.error} (log: {kernel_log(self.plan.out, r.stem)})")


def plan_jobs(stem: str, parameters: dict[str, Any]) -> list[Job]:
    """The training jobs of phase ``stem`` under the notebook ``parameters`` (the rest at their
    defaults): what its notebook would train. [] for a notebook that is not a phase."""
    if stem not in PHASES:
        return []
    return plan_phase(stem, validate(stem, parameters)).jobs()


def _holds_report(out: Path) -> bool:
    return out.is_dir() and any((out / name).exists() for name in ("results.json", "index.html", "runs"))


def _check_lab_parameters(notebooks: list[Path], parameters: dict[str, Any]) -> None:
    """Refuse a parameter name that is not an identifier, or not a parameter of a phase to run."""
    check_parameters({k: v for k, v in parameters.items() if k not in ("profile", "out_dir")},
                     {nb.stem: list(mirrors(PHASES[nb.stem])) if nb.stem in PHASES else None for nb in notebooks})


def rerender(out: Path = Path("reports/lab"), hide_code: bool = True) -> int:
    """Re-render every executed notebook in ``out`` to HTML and rebuild the index, without running
    anything (``saelab report``). Returns 0, or 1 when ``out`` holds no executed phase."""
    out = Path(out).resolve()
    results = _previous_results(out)
    if not results:
        raise ValueError(f"{out} holds no executed phase notebooks (run saelab lab first)")
    for r in results:
        executed = out / f"{r.stem}.ipynb"
        if executed.exists():
            r.verdicts = load_verdicts(out / "runs" / r.stem / "verdicts.json")
            render_notebook(executed, out / f"{r.stem}.html", hide_code=hide_code, error=r.error, verdicts=r.verdicts)
    copy_answer(out)
    build_index(out, results)
    print(f"report: {out / 'index.html'}", file=sys.stderr)
    return 0


def _previous_results(out: Path) -> list[PhaseResult]:
    """Results of earlier batches into ``out`` whose page still exists (kept for ``--only``)."""
    try:
        rows = json.loads((out / "results.json").read_text())
        return [PhaseResult(**r) for r in rows if (out / f"{r['stem']}.html").exists()]
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or written by another version
        return []


def make_offline(page: str) -> str:
    """Drop remote ``<script src=http...>`` tags and give the page an inline favicon, so it loads
    with no network and no failed request."""
    page = REMOTE_SCRIPT.sub("", page)
    return re.sub(r"<head>", '<head>\n<link rel="icon" href="data:,">', page, count=1)


def _is_plotly_bundle(output: dict[str, Any]) -> bool:
    """The output plotly's notebook renderer adds once per kernel: plotly.js itself (~5 MB)."""
    html = output.get("data", {}).get("text/html", "")
    html = "".join(html) if isinstance(html, list) else html
    return "application/vnd.plotly.v1+json" not in output.get("data", {}) and PLOTLY_BANNER.search(html[:5000]) is not None


def slim_notebook(path: Path) -> int:
    """Rewrite an executed notebook without plotly.js (the ~5 MB bundle the notebook renderer
    embeds once): every figure keeps its plotly JSON (drawn natively by JupyterLab) and its HTML;
    the report's pages load the shared plotly.min.js instead. Returns the outputs removed."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    removed = _drop_bundles(nb)
    if removed:
        write_atomic(Path(path), nbformat.writes(nb))
    return removed


def _drop_bundles(nb: Any) -> int:
    removed = 0
    for cell in nb.cells:
        outs = cell.get("outputs", [])
        keep = [o for o in outs if not _is_plotly_bundle(o)]
        removed += len(outs) - len(keep)
        if len(keep) != len(outs):
            cell["outputs"] = keep
    return removed


PLOTLY_BANNER = re.compile(r"\*\s*plotly\.js v\d")
# inline scripts a page never needs offline: nbconvert's mermaid loader (imports from a CDN) and
# plotly's per-figure MathJax configuration (MathJax is a CDN script, removed by make_offline)
NEEDLESS_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?(?:jp-Mermaid|window\.MathJax|init_mathjax)(?:(?!</script>).)*?</script>",
                             re.S | re.IGNORECASE)


def render_notebook(executed: Path, html: Path, hide_code: bool = True, error: str = "",
                    verdicts: list[dict[str, Any]] | None = None) -> None:
    """Render an executed notebook to an offline HTML page beside the shared ``plotly.min.js``
    (code and prompts hidden by default; widgets replaced by a note since they cannot render
    offline). The page opens with a banner (the way back, which saelab rendered it, the
    parameters, ``error`` in red when given) and the phase's ``verdicts``, coloured by what they
    mean, with one sentence on what they mean together, and the glossary. A Content-Security-
    Policy lets only plotly.js and the figures' own scripts run."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata.pop("widgets", None)
    _drop_bundles(nb)  # a notebook executed before slim_notebook existed
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if WIDGET_VIEW in o.get("data", {}):
                o["data"] = {"text/html": WIDGET_NOTE}
    exporter = HTMLExporter(template_name="lab", exclude_input=hide_code, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    title = Path(executed).stem.replace("_", " ")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    body = NEEDLESS_SCRIPT.sub("", make_offline(body))
    figures = figure_scripts(body)
    write_plotly_js(Path(html).parent)
    # the policy first: it governs only what follows it
    head = f'{csp_meta(figures, plotly=True)}\n<link rel="icon" href="data:,"><script src="{PLOTLY_JS}"></script>'
    body = body.replace('<link rel="icon" href="data:,">', head, 1)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + _banner(nb, error, verdicts or []), body, count=1)
    write_atomic(Path(html), body)


def _banner(nb: Any, error: str = "", verdicts: list[dict[str, Any]] | None = None) -> str:
    pm = nb.metadata.get("papermill", {})
    # out_dir is this machine's path, the same for every page of the report: not worth a reader's time
    params = ", ".join(f"{k}={shown(v)}" for k, v in (pm.get("parameters") or {}).items() if k != "out_dir")
    took = f" in {pm['duration']:.1f} s" if isinstance(pm.get("duration"), (int, float)) else ""
    when = f" · executed {pm['end_time'][:19].replace('T', ' ')} UTC{took}" if pm.get("end_time") else ""
    font = "font:14px/1.5 system-ui,sans-serif"
    found = verdicts or []
    rows = "".join(f'<li style="margin:3px 0">{verdict_badge(v)} <b>{escape(str(v.get("hypothesis", "")))}</b>: '
                   f"{escape(what_it_means(v))}</li>" for v in found)
    note = indication_note(found)  # too few replicates: the same note as the notebook's verdict cell
    note = f'<div style="color:#6e4b00;font-weight:600;margin-top:4px">{escape(note)}</div>' if note else ""
    verdict_box = (f'<div style="margin:8px 0 4px"><div style="font-size:16px;font-weight:600">{escape(summary_sentence(found))}</div>'
                   f'{note}<ul style="list-style:none;padding:0;margin:6px 0">{rows}</ul>'
                   '<div style="color:#57606a;font-size:12px">Colours: red = bad news for this setup, green = good news, '
                   "amber = not settled, grey = not applicable. The numbers and figures behind each verdict follow.</div></div>"
                   if found else "")
    return (f'<div style="{font};padding:10px 16px;background:#f4f6fa;border-bottom:1px solid #d0d7e2">'
            f"<style>{BADGE_CSS}</style>"
            f'<a href="index.html">&larr; lab index</a> · {escape(provenance_line())}'
            f"{' · parameters: ' + escape(params) if params else ''}{escape(when)}"
            + (f'<div style="color:#b42318;font-weight:600">failed: {escape(error)}</div>' if error else "")
            + verdict_box + glossary_html() + "</div>")


def _error_page(stem: str, error: str) -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8">{csp_meta()}<link rel="icon" href="data:,">'
            f"<title>{escape(stem)}</title></head><body style=\"font-family:system-ui,sans-serif\">"
            f'<p><a href="index.html">&larr; lab index</a> · {escape(provenance_line())}</p><h1>{escape(stem)} did not run</h1>'
            f"<pre>{escape(error)}</pre></body></html>")
