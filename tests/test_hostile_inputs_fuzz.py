"""Generated hostile inputs (hypothesis): bench results and histories that keep the schema's shape but carry
control characters, HTML, Markdown, '$' mathtext, very long strings, extreme finite numbers and deep nesting.
submit either files a result or refuses it with one line; the report then renders without error, and every
generated string that reaches a page is there escaped (HTML entities in report.html, Markdown escapes in
report.md), never as markup. Bounded and repeatable: a fixed number of examples, derandomized."""

from __future__ import annotations

import copy
import html
import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from suite.errors import UserError
from suite.report import ReportSources, render_report
from suite.report.untrusted import escape_markdown, visible
from suite.results import submit
from tests.test_report import fixture_history, fixture_result

REPO = Path(__file__).resolve().parents[1]
FRAGMENTS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "|", "*", "**", "_", "`", "[a](javascript:x)",
             "![i](http://x/t.png)", "$\\frac{$", "$^$", "# h", "\n", "\r\n", "\x00", "\x1b[31m", "\u202e", "&amp;",
             "\\", "~~s~~", "<br>", "'\"", "\ufffd"]
_PLAIN = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@st.composite
def hostile_text(draw, n: list[int]) -> str:
    """A string with a unique marker (to find it on the page) and hostile fragments, sometimes very long."""
    n[0] += 1
    parts = draw(st.lists(st.one_of(st.sampled_from(FRAGMENTS), _PLAIN), min_size=1, max_size=6))
    text = f"Q4Z{n[0]}Q " + "".join(parts)
    if draw(st.integers(0, 9)) == 0:
        text += "x" * draw(st.integers(1000, 20000))
    return text


EXTREME = st.one_of(st.floats(min_value=0, max_value=1.7e308, allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.0, 5e-324, 1e-300, 1.7e308, 1e15, 1e16]))


def _nested(depth: int):
    doc: object = "leaf"
    for _ in range(depth):
        doc = {"d": [doc]}
    return doc


@st.composite
def hostile_inputs(draw):
    """(result, history, the generated strings)."""
    n = [draw(st.integers(0, 10**6))]
    texts: list[str] = []

    def t() -> str:
        texts.append(draw(hostile_text(n)))
        return texts[-1]

    result = fixture_result("fuzz-host", t(), "2026-01-01T00:00:00Z", 1.0)
    result["host"]["os"] = t()
    result["tier"]["summary"] = t()
    result["data"]["source"] = t()
    result["command"] = "fixture: " + t()
    method = result["profiles"][1]["methods"]["tathe4"]
    method["train_images_per_s"] = draw(EXTREME)
    method["eval_images_per_s"] = draw(EXTREME)
    result["profiles"][0]["sgemm_gflops"] = draw(EXTREME)
    method["energy"]["model"] = t()
    history = fixture_history("tathe4", [36.0, 43.5], 15)
    history["method"] = t()
    history["data_source"] = t()
    history["epochs"][0]["distinct_codes"][t()] = 7
    # Past 1e12 a history is left out (its shape bounds it); below, it is drawn: both paths are taken.
    history["epochs"][1]["seconds"] = draw(st.one_of(EXTREME, st.floats(0, 1e6)))
    history["epochs"][1]["images_per_s"] = draw(st.one_of(st.floats(0, 1e12), EXTREME))
    history["extra"] = _nested(draw(st.integers(0, 200)))  # deep, but under the readers' nesting bound
    return result, history, texts


def _check_escaped(texts: list[str], md: str, page: str) -> None:
    for g in texts:
        shown = visible(g)
        marker = g.split(" ", 1)[0]
        if marker + " " in page:
            assert html.escape(shown) in page or html.escape(shown).replace("\n", " ") in page, g[:80]
        if marker + " " in md:
            assert escape_markdown(shown) in md, g[:80]
    for raw in ("<script>alert", "<img src=x", "\x00", "\x1b"):  # (the page's own script and figures aside)
        assert raw not in md and raw not in page


@settings(max_examples=20, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(hostile_inputs())
def test_submit_files_or_refuses_and_the_report_escapes_everything(tmp_path_factory, inputs):
    result, history, texts = inputs
    root = tmp_path_factory.mktemp("fuzz")
    path = root / "in" / "result.json"
    path.parent.mkdir()
    path.write_text(json.dumps(result))
    try:
        filed = submit(path, root / "store")
        assert filed.exists()
    except UserError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc) or "--store" in str(exc)
    (root / "runs" / "r").mkdir(parents=True)
    (root / "runs" / "r" / "history.json").write_text(json.dumps(history))
    (root / "store").mkdir(exist_ok=True)
    report = render_report(ReportSources(results=(root / "store",), runs=(root / "runs",)), root / "out")
    md, page = ((root / "out" / name).read_text() for name in ("report.md", "report.html"))
    assert all("\n" not in u.reason for u in report.unused)
    _check_escaped(texts, md, page)


def test_one_hostile_result_through_the_real_commands(tmp_path):
    """The same path in real processes: submit (filed or one line, exit 0 or 2, never a traceback), then report."""
    result = fixture_result("fuzz-host", "<b>cpu</b> | $\\frac{$ \x1b[31m", "2026-01-01T00:00:00Z", 1.0)
    result["profiles"][1]["methods"]["tathe4"]["train_images_per_s"] = 1.7e308
    refused = copy.deepcopy(result)
    refused["created_utc"] = "not a date"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "suite", *a], cwd=tmp_path, env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=300)
    for name, doc in (("a.json", result), ("b.json", refused)):
        (tmp_path / name).write_text(json.dumps(doc))
        proc = run("submit", name, "--store", "store")
        assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr
        assert proc.returncode == 0 or len(proc.stderr.strip().splitlines()) == 1
    assert proc.returncode == 2  # the bad date is refused
    (tmp_path / "store").mkdir(exist_ok=True)
    proc = run("report", "--results", "store", "--out", "out")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    md, page = ((tmp_path / "out" / n).read_text() for n in ("report.md", "report.html"))
    assert "<b>cpu" not in md + page and "\x1b" not in md + page
