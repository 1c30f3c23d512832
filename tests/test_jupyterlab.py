"""A phase notebook in JupyterLab itself (issue 23): JupyterLab serves a git checkout of the repo
on 127.0.0.1 with the repo's server settings (as `make notebooks` starts it), headless Debian
Chromium (driven by playwright, no browser download) opens 05_reanimation at the smallest size
with the explorer on, runs all cells from the Run menu and checks: no error output, every plotly
figure drawn, the explorer redraws when its metric changes; then saves, and `git status` is clean.

Needs /usr/bin/chromium: outside CI the test skips when it is absent, in CI it fails (the
``chromium_path`` fixture in conftest.py). Set SAELAB_SCREENSHOTS=<dir> to keep a screenshot."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/checkout.py, whatever pytest's import mode
from checkout import ROOT, git, make_checkout, status  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

STEM = "05_reanimation"  # the most arms (its explorer must list every one) and the dead-vs-L0 scatter
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
STATUS = "Array.from(document.querySelectorAll('.jp-StatusBar-TextItem')).map(e => e.textContent).join(' ')"
ALL_RAN = """() => { const p = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))
    .map(e => e.textContent); return p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t)); }"""
DRAWN = "document.querySelectorAll('.jp-Notebook .js-plotly-plot .main-svg').length"
EXPLORER = ("document.querySelector('.jp-Notebook .widget-output .js-plotly-plot, "
            ".jp-Notebook .jupyter-widgets-output-area .js-plotly-plot')")
# per figure in the notebook: drawn (plotly's SVG is there) and the number of traces it drew
FIGURES = ("Array.from(document.querySelectorAll('.jp-Notebook .js-plotly-plot'))"
           ".map(d => !!d.querySelector('.main-svg') && (d._fullData || []).length)")


def smallest(text: str) -> str:
    """The notebook with its parameters cell set to the smoke profile (one replicate, seconds) and
    the explorer on, as a user would edit it before Run All."""
    nb = nbformat.reads(text, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source, n = re.subn(r'^profile: str = "\w+"', 'profile: str = "smoke"', cell.source, flags=re.M)
    cell.source, m = re.subn(r"^explorer: bool = \w+", "explorer: bool = True", cell.source, flags=re.M)
    assert n == m == 1, "the parameters cell has no profile / explorer line"
    return nbformat.writes(nb) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium_path):
    """JupyterLab on a checkout holding the smallest 05 notebook; yields (url, checkout)."""
    root = tmp_path_factory.mktemp("jupyterlab")
    text = smallest((ROOT / "notebooks" / f"{STEM}.ipynb").read_text())
    repo = make_checkout(root / "repo", {f"{STEM}.ipynb": text})
    # every cell rendered (JupyterLab 4 otherwise draws only the cells in view), no news prompt, and
    # no autosave: the test saves once, from the File menu
    settings = root / "settings" / "@jupyterlab"
    (settings / "docmanager-extension").mkdir(parents=True)
    (settings / "docmanager-extension" / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_DATA_DIR": str(root / "data"),
           "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.prefix) / "bin" / "jupyter-lab"), "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={repo}", f"--config={repo}/tools/jupyter_server_config.py",
         f"--LabApp.user_settings_dir={root / 'settings'}", f"--LabApp.workspaces_dir={root / 'workspaces'}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/notebooks/{STEM}.ipynb?token={token}", repo, root / "server.log"
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def test_run_all_in_jupyterlab_draws_every_figure_and_the_explorer_redraws(lab, chromium_path):
    from playwright.sync_api import sync_playwright

    url, repo, server_log = lab
    committed = (repo / "notebooks" / f"{STEM}.ipynb").read_text()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:"))
                   else (errors.append(f"network: {r.request.url}"), r.abort()))
        try:
            page.goto(url)
            n_cells = len(nbformat.reads(committed, as_version=4).cells)
            page.wait_for_function(f"document.querySelectorAll('.jp-Notebook .jp-Cell').length === {n_cells}", timeout=120_000)
            page.wait_for_function(f"{STATUS}.includes('| Idle')", timeout=120_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            page.wait_for_function(ALL_RAN, timeout=280_000)
            page.wait_for_function(f"{STATUS}.includes('| Idle')", timeout=60_000)

            # no error output: none in the page, none in what the kernel sent
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
            assert page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count() == 0
            # every plotly figure drawn: each figure output of the notebook, and the explorer's
            page.get_by_role("menuitem", name="File", exact=True).click()
            page.get_by_role("menuitem", name=re.compile(r"^Save( Notebook)?\b")).first.click()
            # wait inside playwright: its sync API serves the route handler above (which passes the save's
            # request on) only while a playwright call is running, never during a time.sleep
            saved = wait_for(lambda: _saved(repo, committed), "the save", 300, pause=lambda s: page.wait_for_timeout(1000 * s))
            figures = sum("application/vnd.plotly.v1+json" in o.get("data", {}) for c in saved.cells if c.cell_type == "code"
                          for o in c.outputs)
            assert not [o for c in saved.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
            assert figures >= 5
            page.wait_for_function(f"document.querySelectorAll('.jp-Notebook .js-plotly-plot').length === {figures + 1}", timeout=60_000)
            page.wait_for_function(f"{DRAWN} >= {figures + 1}", timeout=60_000)
            plots = page.evaluate(FIGURES)
            assert len(plots) == figures + 1 and all(plots), plots  # each drawn, with traces

            # the explorer redraws when a control changes: pick another metric, its figure follows
            before = page.evaluate(f"{EXPLORER}.layout.yaxis.title.text")
            metric = page.locator(".jp-Notebook .widget-dropdown select").first
            options = [o for o in metric.locator("option").all_inner_texts() if o.strip()]
            other = next(o for o in options if o.strip() != metric.evaluate("s => s.options[s.selectedIndex].text").strip())
            metric.select_option(label=other)
            page.wait_for_function(f"{EXPLORER} && {EXPLORER}.layout.yaxis.title.text !== {json.dumps(before)}", timeout=60_000)
            shot = os.environ.get("SAELAB_SCREENSHOTS")
            if shot:
                page.screenshot(path=str(Path(shot) / "jupyterlab_05.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(server_log.parent / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert errors == []
    # saved with its outputs on disk, and git sees no change (the filter and the save hook)
    assert (repo / "notebooks" / f"{STEM}.ipynb").stat().st_size > 10 * len(committed)
    assert git(repo, "diff") == ""
    wait_for(lambda: status(repo) == "", "the save hook", 120)
    assert status(repo) == ""


def _saved(repo: Path, committed: str):
    """The saved notebook once JupyterLab wrote it with outputs (None before)."""
    text = (repo / "notebooks" / f"{STEM}.ipynb").read_text()
    return nbformat.reads(text, as_version=4) if text != committed and '"output_type"' in text else None


def wait_for(check, what: str, seconds: float = 60.0, pause=time.sleep):
    deadline = time.monotonic() + seconds
    while True:
        try:
            got = check()
        except (json.JSONDecodeError, ValueError):  # a file caught mid-write
            got = None
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause(0.5)
