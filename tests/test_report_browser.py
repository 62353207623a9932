"""The rendered report in a real browser (headless Chromium, no network): it loads with no console error,
every image decodes, the answer is on the first screen, and clicking a sortable header sorts numerically.
Skipped, with the reason, where no Chromium is installed (.ci/run installs Debian's)."""

from __future__ import annotations

import os

import pytest

from tests.browser import Browser, BrowserError, find_browser
from tests.test_report import fixture_compare, fixture_history, fixture_result, fixture_verify, _write
from suite.cli import main

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium found (apt-get install chromium; "
                                                        "or set $Q4BENCH_BROWSER)")
WIDTH, HEIGHT = 1280, 900


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
    try:
        browser = Browser(BROWSER, WIDTH, HEIGHT)
    except (BrowserError, OSError) as exc:
        pytest.skip(f"{BROWSER} did not start headless: {exc}")
    try:
        browser.open((out / "report.html").as_uri())
        yield browser, out
    finally:
        shot = os.environ.get("Q4BENCH_REPORT_SCREENSHOT")
        if shot:  # for a human to look at: the first screen as a reader sees it
            browser.page("Runtime.evaluate", expression="window.scrollTo(0, 0)")
            browser.screenshot(type(out)(shot))
        browser.close()


def test_loads_without_console_errors_and_every_image_decodes(report_page):
    browser, _ = report_page
    assert browser.console_errors() == []
    images = browser.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == 4  # accuracy against time, per epoch, distinct codes, throughput
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
    assert "tathe4 vs fp32: gap +0.30 points [95% CI -0.40, +1.00]" in box["text"] and "inconclusive" in box["text"]
    assert 0 <= box["top"] and box["bottom"] <= HEIGHT, box


def test_clicking_a_header_sorts_rows_numerically(report_page):
    browser, _ = report_page
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
