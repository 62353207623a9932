"""q4bench report over files a stranger shaped: real FIFOs, real symlinks, paths leaving their folder, mathtext,
extreme numbers, wrong types and markup, each through the real command in its own process. The report must
finish (never wait on a FIFO or stdin), leave each bad file out with one line naming it and the field, say on
stderr how many it left out, exit 0, and show every string as written in both HTML and Markdown."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from suite.errors import UserError
from suite.userfiles import read_user_json
from tests.test_report import fixture_compare, fixture_history, fixture_result, fixture_verify

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "<script>alert(1)</script> | *x* _y_ `z` [l](javascript:x) $\\frac{$ # ~"


def _write(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def report(root: Path, *args: str, timeout: int = 300) -> tuple[subprocess.CompletedProcess, str, str]:
    """q4bench report in a child whose stdin is a pipe nobody writes: reading it would hang until the timeout."""
    out = root / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "suite", "report", *args, "--out", "out"], cwd=root, env=env,
                          stdin=subprocess.PIPE, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    md = (out / "report.md").read_text() if (out / "report.md").exists() else ""
    page = (out / "report.html").read_text() if (out / "report.html").exists() else ""
    return proc, md, page


def unused_rows(md: str) -> dict[str, str]:
    """file name -> reason, from the Markdown "Files not used" table."""
    start = md.index("## Files not used")
    rows = {}
    for line in md[start:].split("\n## ")[0].splitlines():
        if line.startswith("| ") and not line.startswith("| file |"):
            file, why = line[2:-2].split(" | ", 1)
            rows[file] = re.sub(r"\\(.)", r"\1", why)  # Markdown's escapes undone: the reason as written
    return rows


def one_note(proc: subprocess.CompletedProcess, count: int) -> None:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f'q4bench: note: {count} input file(s) not used (see "Files not used" in out/report.md)']


# ---------------------------------------------------------------------------------------------
# The primitive


def test_reads_refuse_fifos_devices_and_links_leaving_their_folder(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # opening this for reading would wait for a writer for ever
    for path, expected in ((fifo, "is a FIFO, expected a regular file"), ("/dev/zero", "is a character device"),
                           ("/dev/stdin", "expected a regular file")):
        with pytest.raises(UserError, match=expected):
            read_user_json(path, "result file")
    outside = _write(tmp_path / "outside" / "doc.json", {"a": 1})
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "leaves.json").symlink_to(outside)
    (folder / "stays.json").symlink_to(_write(folder / "real.json", {"b": 2}))
    with pytest.raises(UserError, match=r"leaves.json: result file lies outside .*folder \(it resolves to .*doc.json\)"):
        read_user_json(folder / "leaves.json", "result file", inside=folder)
    assert read_user_json(folder / "stays.json", "result file", inside=folder) == {"b": 2}
    assert read_user_json(folder / "leaves.json", "result file") == {"a": 1}  # a file the user names: followed


# ---------------------------------------------------------------------------------------------
# Paths


def test_compare_paths_leaving_the_folder_are_never_opened(tmp_path):
    """History paths /dev/stdin, ../x and a link out of the folder: the compare is left out (a path it could not
    have written) or the history is (a link), the report finishes with stdin open and unwritten."""
    secret = _write(tmp_path / "secret" / "history.json", fixture_history("fp32", [50.0], None))
    for name, history in (("stdin", "/dev/stdin"), ("up", "../../secret/history.json"), ("abs", str(secret))):
        doc = json.loads(fixture_compare("host-a", [0.1, 0.2], tmp_path, name).read_text())
        doc["runs"][0]["history"] = history
        _write(tmp_path / "results" / name / "compare.json", doc)
    doc = json.loads(fixture_compare("host-a", [0.1, 0.2], tmp_path, "pred").read_text())
    doc["runs"][1]["predictions"] = "/dev/stdin"
    _write(tmp_path / "results" / "pred" / "compare.json", doc)
    linked = fixture_compare("host-a", [0.1, 0.2], tmp_path, "link")
    target = linked.parent / "fp32-seed0" / "history.json"
    target.unlink()
    target.symlink_to(secret)
    proc, md, _ = report(tmp_path, "--results", "results", timeout=240)
    one_note(proc, 5)
    rows = unused_rows(md)
    assert rows["results/stdin/compare.json"] == ('compare result field runs.0.history is "/dev/stdin", which is not '
                                                  "a path inside its folder; not read")
    assert "runs.0.history is \"../../secret/history.json\"" in rows["results/up/compare.json"]
    assert "runs.0.history is \"/" in rows["results/abs/compare.json"]
    assert rows["results/pred/compare.json"].startswith('compare result field runs.1.predictions is "/dev/stdin"')
    why = rows["results/link/fp32-seed0/history.json"]
    assert why.startswith("history.json lies outside results/link") and why.endswith("secret/history.json); not read")
    assert "results/link/compare.json" in md  # the compare itself is used, without that run's history


def test_a_fifo_and_a_device_named_json_in_a_results_folder_are_skipped(tmp_path):
    _write(tmp_path / "results" / "good.json", fixture_result("host-a", "CPU A", "2026-01-01T00:00:00Z", 1.0))
    os.mkfifo(tmp_path / "results" / "fifo.json")
    (tmp_path / "results" / "zero.json").symlink_to("/dev/zero")  # also a link leaving the folder
    (tmp_path / "runs").mkdir()
    os.mkfifo(tmp_path / "runs" / "history.json")
    proc, md, _ = report(tmp_path, "--results", "results", "--runs", "runs", timeout=240)
    one_note(proc, 3)
    rows = unused_rows(md)
    assert rows == {"results/fifo.json": "result file is a FIFO, expected a regular file; not read",
                    "results/zero.json": "result file lies outside results (it resolves to /dev/zero); not read",
                    "runs/history.json": "history.json is a FIFO, expected a regular file; not read"}
    assert "host-a" in md


def test_a_symlinked_result_leaving_the_folder_is_not_read(tmp_path):
    elsewhere = _write(tmp_path / "elsewhere" / "r.json", fixture_result("host-x", "CPU X", "2026-01-01T00:00:00Z", 1.0))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").symlink_to(elsewhere)
    proc, md, _ = report(tmp_path, "--results", "results")
    one_note(proc, 1)
    assert unused_rows(md)["results/r.json"].startswith("result file lies outside results")
    assert "host-x" not in md.split("## Files not used")[0]


# ---------------------------------------------------------------------------------------------
# Rendering


def test_mathtext_extreme_numbers_and_markup_render_as_written(tmp_path):
    """'$' in method and layer names, the largest images/s a result may hold (1e7; 1.7e308 is refused by the
    result limits, suite/bounds.py) beside ordinary ones, HTML and Markdown in host and CPU names: exit 0,
    figures drawn, every string shown as written (HTML-escaped in the page, Markdown-escaped in report.md)."""
    result = fixture_result("host-a", HOSTILE, "2026-01-01T00:00:00Z", 1.0)
    result["profiles"][0]["methods"]["fp32"]["train_images_per_s"] = 1e7
    _write(tmp_path / "results" / "a.json", result)
    history = fixture_history("tathe4", [36.0, 43.5], 15)
    history["method"] = "tathe4 $\\frac{$"
    history["epochs"][0]["distinct_codes"]["$^$ layer"] = 3
    history["data_source"] = HOSTILE
    _write(tmp_path / "runs" / "x" / "history.json", history)
    proc, md, page = report(tmp_path, "--results", "results", "--runs", "runs")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert (tmp_path / "out" / "figures" / "throughput.png").exists()
    assert (tmp_path / "out" / "figures" / "accuracy_per_epoch.png").exists()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<em>x</em>" not in page and "*x* _y_ `z` [l](javascript:x)" in page
    assert "<script>" not in md and not re.search(r"(?<!\\)\]\(javascript", md)  # no tag, no link
    escaped = ("&lt;script&gt;alert(1)&lt;/script&gt; \\| \\*x\\* \\_y\\_ \\`z\\` \\[l\\](javascript:x) "
               "\\$\\\\frac{\\$ \\# \\~")
    assert escaped in md
    assert "tathe4 \\$\\\\frac{\\$" in md


@pytest.mark.parametrize("kind, change, field", [
    ("compare", lambda d: d["budget"].update(epochs="3"), 'budget.epochs is "3", expected of type "integer"'),
    ("compare", lambda d: d["comparisons"][0].update(n_seeds="three"), 'comparisons.0.n_seeds is "three"'),
    ("compare", lambda d: d.update(budget=[1]), "budget is [1], expected of type"),
    ("history", lambda d: d["epochs"][1].update(test_acc="x"), 'epochs.1.test_acc is "x", expected of type "number"'),
    ("history", lambda d: d.update(train_images=10**400), "train_images is 1000000000000000000000000000000000"),
    ("verify", lambda d: d.update(test_images="1000"), 'test_images is "1000", expected of type "integer"'),
    ("verify", lambda d: d["files"]["int4"].update(distinct_codes=[15]), "files.int4.distinct_codes is [15]"),
])
def test_wrong_types_leave_the_file_out_naming_the_field(tmp_path, kind, change, field):
    compare = fixture_compare("host-a", [0.1, 0.2, 0.3], tmp_path)
    histories = tmp_path / "runs" / "h" / "history.json"
    _write(histories, fixture_history("fp32", [38.0, 45.0], None))
    verify = _write(tmp_path / "onnx" / "verify.json", fixture_verify())
    path = {"compare": compare, "history": histories, "verify": verify}[kind]
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    proc, md, _ = report(tmp_path, "--results", "results", "--runs", "runs", "--onnx", "onnx")
    one_note(proc, 1)
    (file, why), = unused_rows(md).items()
    assert file == str(path.relative_to(tmp_path)) and field in why, why


def test_make_report_over_a_store_with_a_hostile_file(tmp_path):
    """`make report`'s own command over a copy of the store holding one file with a wrong type: exit 0, the file
    listed under "Files not used"."""
    store = tmp_path / "reports" / "submitted" / "host-a"
    good = fixture_result("host-a", "CPU A", "2026-01-01T00:00:00Z", 1.0)
    _write(store / "good.json", good)
    bad = copy.deepcopy(good)
    bad["profiles"][0]["threads"] = "two"
    _write(store / "bad.json", bad)
    proc, md, _ = report(tmp_path)  # no --results: the defaults, as `make report` runs it
    one_note(proc, 1)
    assert unused_rows(md)["reports/submitted/host-a/bad.json"].startswith("invalid result file: profiles/0/threads")
