"""The smoke report in a real browser: headless Debian Chromium (driven by playwright) opens the
index and the phase pages from a local http.server, every plotly figure must draw, a dropdown
must work without a kernel, and the console must stay free of errors.

Needs /usr/bin/chromium: outside CI the test skips with the reason when it is absent, in CI it
fails (see the ``chromium_path`` fixture in conftest.py). Set SAELAB_SCREENSHOTS=<dir> to keep
screenshots of the pages."""

from __future__ import annotations

import functools
import http.server
import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/fake_runs.py, whatever pytest's import mode
from fake_runs import HOSTILE, N_FIGURES_IN_FIGURES_NOTEBOOK, write_test_notebooks  # noqa: E402

from saelab.report.batch import run_lab  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RENDERED = "Array.from(document.querySelectorAll('div.plotly-graph-div')).filter(d => d.querySelector('.main-svg')).length"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served_report(tmp_path_factory):
    """The template and a page with every saelab.report.plots figure, run as a batch and served on
    127.0.0.1; yields the base URL."""
    root = tmp_path_factory.mktemp("browser")
    nbs = write_test_notebooks(root / "notebooks", broken=False, figures=True, hostile=True)
    out = root / "out"
    rc = run_lab(profile="smoke", out=out, notebooks_dir=nbs, progress=False,
                 parameters={"tests_dir": str(Path(__file__).parent), "source": HOSTILE})
    assert rc == 0, (out / "results.json").read_text()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, url: str):
    """Open ``url`` with no network beyond the local server; return (page, list of console
    errors, page errors, dialogs and requests that left 127.0.0.1)."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("http://127.0.0.1", "data:"))
               else (errors.append(f"network: {r.request.url}"), r.abort()))
    page.goto(url, wait_until="load")
    return page, errors


def _all_drawn(page, expected: int) -> None:
    n = page.evaluate("document.querySelectorAll('div.plotly-graph-div').length")
    assert n == expected, f"{n} plotly figures in the page, expected {expected}"
    page.wait_for_function(f"{RENDERED} === {n}", timeout=60_000)
    assert page.evaluate(RENDERED) == n


def _screenshot(page, name: str) -> None:
    folder = os.environ.get("SAELAB_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_index_loads_cleanly_and_links_the_phases(browser, served_report):
    page, errors = _open(browser, f"{served_report}/index.html")
    assert page.title() == "saelab report"
    assert page.locator(".card.ok").count() == 3
    assert page.locator('a[href="00_template.html#Verdict"]').count() == 1
    _all_drawn(page, 0)
    _screenshot(page, "report_index.png")
    assert errors == []
    page.close()


def test_template_page_draws_its_figures(browser, served_report):
    page, errors = _open(browser, f"{served_report}/00_template.html")
    _all_drawn(page, 2)
    assert errors == []
    page.close()


def test_every_plots_builder_draws_and_its_dropdown_works_offline(browser, served_report):
    page, errors = _open(browser, f"{served_report}/02_figures.html")
    _all_drawn(page, N_FIGURES_IN_FIGURES_NOTEBOOK)
    first = "document.querySelectorAll('div.plotly-graph-div')[0]"
    assert page.evaluate(f"{first}.layout.yaxis.title.text").startswith("L0")
    # training curves: open the metric dropdown and pick "dead fraction" (plotly.js alone does it)
    page.locator(".updatemenu-header-group").first.click()
    page.locator(".updatemenu-dropdown-button-group .updatemenu-item-text", has_text="dead fraction").first.click()
    page.wait_for_function(f"{first}.layout.yaxis.title.text.startsWith('dead latents')", timeout=10_000)
    _screenshot(page, "report_phase.png")
    assert errors == []
    page.close()


def test_a_hostile_source_path_shows_as_text_and_never_runs(browser, served_report):
    """Issue 14: file:/x/`<img src=w onerror=alert(4)>`.npy in Markdown, stdout, a figure, a table,
    a verdict and the parameters reaches the pages as text: no element is made of it, no dialog
    opens, and the Content-Security-Policy would block the handler anyway."""
    for name, figures in (("03_hostile.html", 1), ("index.html", 0)):
        page, errors = _open(browser, f"{served_report}/{name}")
        _all_drawn(page, figures)
        assert page.evaluate("document.querySelectorAll('img[src=\"w\"]').length") == 0, name
        assert HOSTILE.split("/x/")[1] in page.evaluate("document.body.innerText"), name
        assert errors == [], name
        page.close()
