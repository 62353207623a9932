"""The report's tidy tables (suite/report/tidy.py): its rows are the rows `q4bench results` writes, and the
aggregations built on them (newest result per host, fp32 beside each method, means and medians per budget)
choose and compute what the hand-written loops they replace did."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from suite import frames
from suite.report import tidy
from suite.report.cells import run_label
from suite.report.claims import AccuracyEntry, gaps
from suite.report.inputs import Budget, Inputs, ReportSources, ResultFile, RunHistory, load_inputs
from suite.report.sections.time_to_accuracy import budget_table
from tests.test_report import fixture_result, short_history

SUBMITTED = Path(__file__).resolve().parents[1] / "reports" / "submitted"


def test_the_reports_bench_rows_are_the_results_tables_rows():
    inputs = load_inputs(ReportSources(results=(SUBMITTED,)))
    assert inputs.results
    exported = frames.frame([r.path for r in inputs.results])
    columns = list(frames.COLUMNS)
    pd.testing.assert_frame_equal(inputs.bench[columns], exported[columns])
    row = inputs.bench.iloc[-1]
    result = inputs.results[row["result"]]
    assert row["arm"] in result.data["profiles"][row["profile_index"]]["methods"]


def test_a_history_row_reads_what_an_old_file_does_not_say(tmp_path):
    history = short_history("fp32", 0, [60.0, 70.0])
    for key in ("arch", "device", "precision", "seed"):
        history.pop(key, None)
    del history["epochs"][0]["seconds"]
    path = tmp_path / "submitted" / "some-host-2t-8g-0123abcd" / "run" / "history.json"
    row = tidy.history_table([RunHistory(path, history, False)]).iloc[0]
    assert (row["host_id"], row["arch"], row["device"], row["precision"]) == (
        "some-host-2t-8g-0123abcd", "vgg4bit", "cpu", "fp32")  # the folder it was filed in; the old defaults
    assert pd.isna(row["seed"]) and pd.isna(row["training_seconds"])  # not every epoch timed: no sum
    exported = frames.history_row(path, history)
    assert exported["arch"] is None and "host_id" not in exported and exported["final_test_acc"] == 70.0


def _result(host: str, created: str, speed: float, threads_first: bool = False) -> ResultFile:
    doc = copy.deepcopy(fixture_result(host, "Fixture CPU", created, speed))
    if threads_first:
        doc["profiles"].reverse()  # the 2-thread profile first: the choice is by threads, not by order
    return ResultFile(Path(f"{host}-{created}.json"), doc, True)


def test_the_speed_shown_is_the_newest_result_then_the_profile_with_most_threads():
    older, newer = _result("host-a", "2026-01-01T00:00:00Z", 3.0), _result("host-a", "2026-02-01T00:00:00Z", 1.0)
    untimed = _result("host-a", "2026-03-01T00:00:00Z", 1.0)
    for p in untimed.data["profiles"]:
        p["methods"]["tathe4"]["train_images_per_s"] = 0  # timed nothing: never the speed shown
    other = _result("host-b", "2026-01-15T00:00:00Z", 2.0, threads_first=True)
    inputs = Inputs(results=[older, newer, untimed, other])
    result, profile = tidy.newest_speed_profile(inputs, "host-a")
    assert result is newer and profile["threads"] == 2
    assert tidy.newest_speed_profile(inputs, "host-b")[1]["threads"] == 2
    assert tidy.newest_speed_profile(inputs, "host-c") is None
    assert tidy.hosts_with_rapl(inputs.bench) == {"host-a", "host-b"}  # speed > 1: tathe4's energy by RAPL


def test_a_bench_of_the_small_network_is_its_own_row_never_the_paper_network_s_speed():
    paper = _result("host-a", "2026-01-01T00:00:00Z", 1.0)
    small = _result("host-a", "2026-02-01T00:00:00Z", 9.0)
    small.data["arch"] = "simpleresnet4bit"  # newer and faster, but of the other network
    inputs = Inputs(results=[paper, small])
    result, _ = tidy.newest_speed_profile(inputs, "host-a")
    assert result is paper  # the per-host answer's speed is the paper's network's
    assert tidy.newest_speed_profile(Inputs(results=[small]), "host-a") is None
    assert list(inputs.bench["arch"]) == ["vgg4bit"] * 4 + ["simpleresnet4bit"] * 4  # absent: the paper's network
    newest = tidy.newest_arms(inputs.bench)
    assert len(newest) == 8 and set(newest["result"]) == {0, 1}  # one row per network, not the newer one only
    assert run_label(small).split(", ")[1] == "SimpleResNet4bit" and run_label(paper).split(", ")[1] == "VGG4bit"


def test_the_newest_arm_of_each_combination_keeps_the_order_combinations_first_appeared():
    first, second = _result("host-a", "2026-01-01T00:00:00Z", 1.0), _result("host-a", "2026-01-01T00:00:00Z", 2.0)
    later = _result("host-a", "2026-02-01T00:00:00Z", 1.5)
    for p in later.data["profiles"]:
        p["methods"] = dict(reversed(p["methods"].items()))  # tathe4 before fp32 in the newest file
    newest = tidy.newest_arms(Inputs(results=[first, second, later]).bench)
    assert len(newest) == 4 and set(newest["result"]) == {2}
    assert list(zip(newest["profile"], newest["arm"])) == [("single-thread", "fp32"), ("single-thread", "tathe4"),
                                                           ("colab-free-cpu", "fp32"), ("colab-free-cpu", "tathe4")]
    tie = tidy.newest_arms(Inputs(results=[first, second]).bench)
    assert set(tie["result"]) == {1}  # of results written at one time, the last


def _entry(method: str, final, best, group: str) -> AccuracyEntry:
    budget = Budget("CIFAR-10", True, 4096, 1, 10000, "paper")
    return AccuracyEntry(method, budget, final, best, None, "fixture", (group,), True)


def test_gaps_to_fp32_pivot_on_the_first_fp32_of_each_group():
    entries = [_entry("tathe4", 38.5, 39.0, "a"), _entry("fp32", 40, 41, "a"), _entry("fp32", 50.0, 50.0, "a"),
               _entry("luq4", 37, None, "a"), _entry("tathe4", 30.0, 30.0, "b")]
    found = gaps(entries)
    assert found == {0: (1.5, 2.0), 3: (3, None)}  # no gap for fp32 itself nor for group b, which has no fp32
    assert isinstance(found[3][0], int)  # integer accuracies give the integer difference they always gave


def test_a_budget_row_is_the_mean_range_and_medians_of_its_runs(tmp_path):
    def run(method: str, seed: int, final: float, seconds: float | None) -> RunHistory:
        h = short_history(method, seed, [70.0, final])
        for e in h["epochs"]:
            e["seconds"] = seconds
        return RunHistory(tmp_path / f"{method}-{seed}" / "history.json", h, False)

    runs = [run("tathe4", 0, 80.0, 100.0), run("fp32", 0, 81.0, 90.0), run("tathe4", 1, 79.0, 120.0),
            run("tathe4", 2, 78.5, None)]
    budgets = budget_table(runs)
    assert list(budgets["method"]) == ["fp32", "tathe4"]  # fp32 first within a budget
    tathe4 = budgets.iloc[1]
    assert tathe4["final"] == pytest.approx((80.0 + 79.0 + 78.5) / 3)
    assert (tathe4["low"], tathe4["high"], sorted(tathe4["runs"])) == (78.5, 80.0, [0, 2, 3])
    assert tathe4["seconds"] == 220.0  # the median of 200 s and 240 s: the untimed run has no total
    assert tathe4["per_epoch"] == 110.0 and tathe4["tta"] == pytest.approx(tathe4["final"] + 0.5)
    assert json.dumps(budgets.iloc[0]["runs"]) == "[1]"
