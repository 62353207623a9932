"""The report stays the same size, in pages and pixels, however many results it reads (no timing here: the
1,000-result timing is tests/microbench/report_scale.py). A generated store of 60 valid results from 12 hosts
(tests/report_store.py) rendered by `q4bench report` in a real process: the main page under MAX_HTML_BYTES,
every figure within figures.MAX_WIDTH_PX x MAX_HEIGHT_PX, every table of the page cut at render.MAX_HTML_ROWS
rows (report.md keeps them all), and the first screen one row per host. Past answer.MAX_HOST_ROWS hosts, the
speed-only hosts share one row of the first screen and the per-host summary moves the rest below the divider."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from suite.report import figures, render
from suite.report.sections import answer
from tests.report_store import make_store
from tests.test_report import REPO, _inputs, _sections

MAX_HTML_BYTES = 3_000_000


def _png_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def sixty(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    make_store(root / "store", 60, 12)
    out = root / "out"
    done = subprocess.run([sys.executable, "-m", "suite", "report", "--results", str(root / "store"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def test_sixty_results_make_a_bounded_page_and_bounded_figures(sixty):
    page = (sixty / "report.html").read_text()
    assert len(page.encode()) < MAX_HTML_BYTES
    pngs = list((sixty / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        width, height = _png_size(png.read_bytes())
        assert width <= figures.MAX_WIDTH_PX and height <= figures.MAX_HEIGHT_PX, (png.name, width, height)
    # Every table of the page holds at most MAX_HTML_ROWS rows and says where the others are.
    for body in re.findall(r"<tbody>(.*?)</tbody>", page, re.S):
        assert body.count("<tr>") <= render.MAX_HTML_ROWS
    assert f"The first {render.MAX_HTML_ROWS} of " in page and "report.md beside this page has every row" in page
    assert page.count("FIXTURE") > 0  # generated results are never passed off as measurements


def test_twelve_hosts_keep_one_first_screen_row_each(sixty):
    page = (sixty / "report.html").read_text()
    answer_table = re.search(r"<table id='t-answer'>.*?<tbody>(.*?)</tbody>", page, re.S).group(1)
    hosts = re.findall(r"<tr><td[^>]*>(.*?)</td>", answer_table)
    assert len(hosts) == 12 and len(set(hosts)) == 12
    assert "id='more_hosts'" not in page  # 12 hosts fit the main page's per-host summary


def test_past_twelve_hosts_the_speed_only_hosts_share_one_row(tmp_path):
    make_store(tmp_path / "store", 15, 15)
    secs = _sections(_inputs(tmp_path, ("store",)))
    rows = secs["answer"].tables()["answer"].rows
    assert len(rows) == 1 and rows[0][0].text == "15 hosts, speed only" and "and 9 more" in rows[0][1].text
    assert len(secs["hosts"].tables()["hosts"].rows) == answer.MAX_HOST_ROWS
    assert len(secs["more_hosts"].tables()["hosts"].rows) == 15 - answer.MAX_HOST_ROWS
