"""The rendered report in a real browser (headless Chromium, no network): it loads with no console error,
every image decodes, the answer is on the first screen, and clicking a sortable header sorts numerically.
Both on generated fixtures and on the report of the committed evidence (reports/submitted) at 1366x768,
the screen a reader most often has: every host's answer row must be on it without scrolling, and the main
page (details folded) must stay under MAX_PAGE_HEIGHT. Skipped, with the reason, where no Chromium is
installed (.ci/run installs Debian's)."""

from __future__ import annotations

import contextlib
import os

import pytest

from tests.browser import Browser, BrowserError, find_browser
from tests.test_report import (SUBMITTED, _write, fixture_compare, fixture_history, fixture_result, fixture_verify,
                               snapshot_submitted)
from suite.cli import main

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium found (apt-get install chromium; "
                                                        "or set $Q4BENCH_BROWSER)")
WIDTH, HEIGHT = 1280, 900
SCREEN_WIDTH, SCREEN_HEIGHT = 1366, 768  # the most common laptop screen
# Six screens of 900 px: the answer, the key figure, the per-host summary, the claims and the terms, with every
# detail folded below the divider (the committed evidence renders about 3,200 px at 1366 wide).
MAX_PAGE_HEIGHT = 6 * 900


@contextlib.contextmanager
def _opened(page, size: tuple[int, int], screenshot_env: str):
    """The page in headless Chromium at this window size; with $<screenshot_env> set, its first screen is saved
    there for a human to look at."""
    try:
        browser = Browser(BROWSER, *size)
    except (BrowserError, OSError) as exc:
        pytest.skip(f"{BROWSER} did not start headless: {exc}")
    try:
        browser.open(page.as_uri())
        yield browser
    finally:
        shot = os.environ.get(screenshot_env)
        if shot:
            browser.evaluate("window.scrollTo(0, 0)")
            browser.screenshot(type(page)(shot))
        browser.close()


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    # Train rates 18.5-100 images/s: text order ("100.0" < "18.5") differs from numeric order.
    _write(root / "results" / "a.json", fixture_result("fixture-host-a", "Fixture CPU A", "2026-01-01T00:00:00Z", 1.0))
    _write(root / "results" / "b.json", fixture_result("fixture-host-b", "Fixture CPU B", "2026-01-02T00:00:00Z", 2.5))
    fixture_compare("fixture-host-a", [0.4, -0.2, 0.7], root)
    _write(root / "runs" / "fp32" / "history.json", fixture_history("fp32", [38.0, 45.0], None))
    _write(root / "runs" / "tathe4" / "history.json", fixture_history("tathe4", [36.0, 43.5], 15))
    _write(root / "onnx" / "verify.json", fixture_verify())
    out = root / "out"
    assert main(["report", "--results", str(root / "results"), "--runs", str(root / "runs"),
                 "--onnx", str(root / "onnx"), "--out", str(out)]) == 0
    with _opened(out / "report.html", (WIDTH, HEIGHT), "Q4BENCH_REPORT_SCREENSHOT") as browser:
        yield browser, out


def test_loads_without_console_errors_and_every_image_decodes(report_page):
    browser, _ = report_page
    assert browser.console_errors() == []
    images = browser.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == 5  # gap against budget, accuracy against time, per epoch, distinct codes, throughput
    assert all(complete and w > 0 and h > 0 for complete, w, h in images), images


def test_the_answer_is_in_the_first_viewport(report_page):
    browser, _ = report_page
    browser.evaluate("window.scrollTo(0, 0)")
    box = browser.evaluate("""(() => {
        const cell = document.querySelector('#t-answer tbody tr td:nth-child(2)');
        const r = cell.getBoundingClientRect();
        return {top: r.top, bottom: r.bottom, text: cell.textContent, height: window.innerHeight};
    })()""")
    assert box["height"] == HEIGHT
    assert "tathe4 is 0.30 points below fp32 [95% CI -0.40, 1.00], 3 paired seeds" in box["text"]
    assert 0 <= box["top"] and box["bottom"] <= HEIGHT, box


def test_clicking_a_header_sorts_rows_numerically(report_page):
    browser, _ = report_page
    browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")  # folded below the divider
    column = "train images/s"
    values_js = f"""Array.from(document.querySelectorAll('#t-hardware tbody tr')).map(r =>
        parseFloat(r.cells[Array.from(document.querySelectorAll('#t-hardware th'))
                   .findIndex(th => th.textContent === '{column}')].dataset.sort))"""
    before = browser.evaluate(values_js)
    assert len(before) == 8 and sorted(before) != sorted(before, key=str)  # text order would differ

    def click_header() -> None:
        box = browser.evaluate(f"""(() => {{
            const th = Array.from(document.querySelectorAll('#t-hardware th')).find(t => t.textContent === '{column}');
            th.scrollIntoView({{block: 'center', inline: 'center'}});
            const r = th.getBoundingClientRect();
            return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
        }})()""")
        browser.click(box["x"], box["y"])

    click_header()
    assert browser.evaluate(values_js) == sorted(before)
    click_header()
    assert browser.evaluate(values_js) == sorted(before, reverse=True)
    assert browser.console_errors() == []


# ---------------------------------------------------------------------------------------------
# The report of the committed evidence, on a 1366x768 screen


@pytest.fixture(scope="module")
def committed_page(tmp_path_factory):
    if not SUBMITTED.is_dir():
        pytest.skip("no reports/submitted in this checkout")
    tmp = tmp_path_factory.mktemp("committed")
    root, out = snapshot_submitted(tmp), tmp / "out"
    assert main(["report", "--results", str(root), "--runs", str(root), "--out", str(out)]) == 0
    with _opened(out / "report.html", (SCREEN_WIDTH, SCREEN_HEIGHT), "Q4BENCH_COMMITTED_SCREENSHOT") as browser:
        yield browser


def test_every_hosts_answer_is_on_the_first_1366x768_screen(committed_page):
    browser = committed_page
    browser.evaluate("window.scrollTo(0, 0)")
    screen = browser.evaluate("""(() => {
        const box = e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom]; };
        return {height: window.innerHeight, width: window.innerWidth,
                rows: Array.from(document.querySelectorAll('#t-answer tbody tr')).map(r => [r.cells[0].textContent, ...box(r)]),
                figure: box(document.querySelector('#f-gap_vs_budget img'))};
    })()""")
    assert (screen["width"], screen["height"]) == (SCREEN_WIDTH, SCREEN_HEIGHT)
    hosts = [p for p in SUBMITTED.iterdir() if p.is_dir()]
    assert len(screen["rows"]) == len(hosts)
    for label, top, bottom in screen["rows"]:
        assert 0 <= top and bottom <= SCREEN_HEIGHT, (label, top, bottom)
    assert screen["figure"][0] < SCREEN_HEIGHT  # the gap-versus-budget figure starts on the first screen too


def test_committed_page_is_short_loads_cleanly_and_every_image_decodes(committed_page):
    browser = committed_page
    assert browser.console_errors() == []
    height = browser.evaluate("document.documentElement.scrollHeight")
    assert height <= MAX_PAGE_HEIGHT, height
    images = browser.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    assert images and all(complete and w > 0 and h > 0 for _, complete, w, h in images), images
    # The details open on request, and the page stays free of errors.
    browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert browser.evaluate("document.documentElement.scrollHeight") > height
    assert browser.console_errors() == []
