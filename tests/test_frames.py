"""suite.frames and `q4bench results`: every result as one tidy table, typed, with bad files named, not fatal."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from suite import frames
from suite.cli import main
from suite.spec import split_arm, arm_name

REPO = Path(__file__).resolve().parents[1]
SUBMITTED = REPO / "reports" / "submitted"


def test_the_committed_store_as_one_typed_table():
    table = frames.frame([SUBMITTED])
    assert list(table.columns) == list(frames.COLUMNS)
    assert {str(t) for t in table.dtypes} <= {"string", "Int64", "Float64"}
    assert {"bench", "compare-run", "comparison", "history"} <= set(table["kind"])
    # every comparison row carries exactly what its compare.json says
    for path in SUBMITTED.rglob("compare.json"):
        doc = json.loads(path.read_text())
        rows = table[(table["kind"] == "comparison") & (table["file"] == str(path))]
        assert len(rows) == len(doc["comparisons"])
        for c in doc["comparisons"]:
            row = rows[rows["method"] == c["candidate"]].iloc[0]
            assert row["mean_gap"] == c["mean_gap"] and row["n_seeds"] == c["n_seeds"]
            assert (row["ci95_low"], row["ci95_high"]) == tuple(c["ci95"]) and row["verdict"] == c["verdict"]
        runs = table[(table["kind"] == "compare-run") & (table["file"] == str(path))]
        assert sorted(zip(runs["method"], runs["seed"])) == sorted((r["method"], r["seed"]) for r in doc["runs"])


def test_bench_rows_split_arms_into_method_and_precision(tmp_path):
    result = next(p for p in sorted(SUBMITTED.rglob("*-quick.json")))
    doc = json.loads(result.read_text())
    table = frames.frame([result])
    arms = [(e["profile"], arm) for e in doc["profiles"] for arm in e["methods"]]
    assert len(table) == len(arms)
    for (profile, arm), (_, row) in zip(arms, table.iterrows()):
        assert (row["profile"], row["method"], row["precision"]) == (profile, *split_arm(arm))
    assert split_arm(arm_name("tathe4", "bf16")) == ("tathe4", "bf16") and arm_name("fp32", "fp32") == "fp32"


def test_a_bad_file_is_skipped_and_named(tmp_path):
    good = next(SUBMITTED.rglob("*-quick.json"))
    (tmp_path / "good.json").write_bytes(good.read_bytes())
    (tmp_path / "broken.json").write_text('{"schema_version": 2, "host": 5}')
    (tmp_path / "other.json").write_text('{"hello": 1}')
    history = tmp_path / "run" / "history.json"
    history.parent.mkdir()
    history.write_text(json.dumps({"method": "fp32", "recipe": "short", "seed": 0, "epochs": "many"}))
    found = frames.collect([tmp_path])
    skipped = dict(found.skipped)
    assert set(skipped) == {str(tmp_path / n) for n in ("broken.json", "other.json", "run/history.json")}
    assert all(reason.startswith(path) and "\n" not in reason for path, reason in skipped.items())
    assert "epochs" in skipped[str(history)]
    assert len(found.rows) == len(frames.frame([good]))


def test_cli_writes_csv_to_stdout_as_documented():
    proc = subprocess.run([sys.executable, "-m", "suite", "results", "reports/submitted", "--format", "csv"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(io.StringIO(proc.stdout))
    assert list(table.columns) == list(frames.COLUMNS) and len(table) == len(frames.frame([SUBMITTED]))
    assert "Traceback" not in proc.stderr


def test_cli_out_file_and_formats(tmp_path, capsys):
    out = tmp_path / "all.json"
    assert main(["results", str(SUBMITTED), "--format", "json", "--out", str(out)]) == 0
    assert len(pd.read_json(out)) == len(frames.frame([SUBMITTED]))
    assert main(["results", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    assert main(["results", str(SUBMITTED), "--format", "parquet", "--out", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("q4bench: error: --format parquet needs pyarrow: pip install 'q4bench[parquet]'")
    assert not (tmp_path / "x.parquet").exists()


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow is the optional [parquet] extra")
    out = tmp_path / "x.parquet"
    assert main(["results", str(SUBMITTED), "--format", "parquet", "--out", str(out)]) == 0
    back = pd.read_parquet(out)
    assert list(back.columns) == list(frames.COLUMNS) and len(back) == len(frames.frame([SUBMITTED]))


def test_every_column_is_documented():
    text = (REPO / "docs" / "results.md").read_text()
    documented = [line.split("`")[1] for line in text.splitlines() if line.startswith("| `")]
    assert documented == list(frames.COLUMNS)
    assert "q4bench results reports/submitted --format csv" in text
