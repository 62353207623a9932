"""Result files: the schema accepts what the bench writes and refuses anything else with the reason;
submit files valid results and leaves the store untouched otherwise; writes are atomic."""

import copy
import json
import os
from pathlib import Path

import pytest

from suite import results
from suite.cli import main
from suite.errors import UserError


def method_entry(rate=50.0, energy_method="estimated"):
    energy = {"joules_per_epoch": 1234.5 if energy_method != "unavailable" else None, "method": energy_method,
              "model": "CPU seconds x 4.00 W per busy logical CPU (default)"}
    return {
        "status": "ok", "status_detail": None, "train_images_per_s": rate, "train_window_images_per_s": [rate, rate],
        "step_seconds_median": 128 / rate, "eval_images_per_s": 3 * rate, "achieved_gflops": rate * 0.93,
        "efficiency": 0.5, "peak_rss_bytes": 600 * 2**20, "energy": energy, "accuracy": None,
        "accuracy_note": "the smoke tier measures no accuracy",
    }


def make_result():
    return {
        "schema_version": 1, "suite_version": "0.1.0", "created_utc": "2026-11-25T18:55:02Z",
        "command": "q4bench bench --tier smoke", "wall_seconds": 12.0,
        "host": {"host_id": "amd-epyc-2t-24g-0035969e", "cpu_model": "AMD EPYC", "machine": "x86_64",
                 "physical_cores": 2, "logical_cpus": 2, "usable_cpus": 2, "isa": {"avx2": True, "amx": False},
                 "memory_bytes": 24 * 2**30, "os": "Linux", "python": "3.11.7", "torch": "2.13.0+cpu",
                 "onnxruntime": "1.32.0"},
        "tier": {"name": "smoke", "summary": "synthetic", "plan": {}},
        "data": {"kind": "synthetic", "source": "synthetic CIFAR-10-format data", "note": "smoke"},
        "accuracy": {"measured": False, "profile": None, "reason": "the smoke tier measures no accuracy", "budget": None},
        "methods": ["fp32", "tathe4"], "baseline_method": "fp32", "flop_convention": "2 x MACs ...",
        "profiles": [{"load_average": {"start": [0.5, 0.4, 0.3], "end": None},
            "profile": "colab-free-cpu", "description": "Colab", "threads": 2, "threads_spec": "2", "torch_threads": 2,
            "host_usable_cpus": 2, "oversubscribed": False, "memory_cap_mib": 12288, "cap_enforcement": "rlimit",
            "cap_detail": "RLIMIT_DATA", "batch_size": 16, "status": "ok", "status_detail": None,
            "sgemm_gflops": 70.0, "sgemm": {"gflops": 70.0, "n": 1024, "repeats": 3, "samples_gflops": [70.0]},
            "train_flops_per_image": 925661184, "step_time_ratio": {"fp32": 1.0, "tathe4": 1.02},
            "methods": {"fp32": method_entry(), "tathe4": method_entry(49.0)}, "seconds": 30.0,
        }],
    }


def test_a_bench_shaped_result_is_valid():
    assert results.validation_errors(make_result()) == []


def mutate(path, value):
    result = make_result()
    target = result
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return result


@pytest.mark.parametrize(
    "path, value, fragment",
    [
        (["surprise"], 1, "Additional properties"),
        (["schema_version"], 3, "schema_version"),
        (["profiles"], KeyError, "'profiles' is a required property"),
        (["profiles"], [], "profiles"),
        (["tier", "name"], "weekend", "tier/name"),
        (["host", "host_id"], "../../etc", "host/host_id"),
        (["profiles", 0, "cap_enforcement"], "ulimit", "cap_enforcement"),
        (["profiles", 0, "status"], "maybe", "status"),
        (["profiles", 0, "threads"], 0, "threads"),
        (["profiles", 0, "methods", "fp32", "efficiency"], "high", "efficiency"),
        (["profiles", 0, "methods", "fp32", "extra"], 1, "Additional properties"),
        (["profiles", 0, "methods", "fp32", "energy", "method"], "guessed", "energy/method"),
        (["profiles", 0, "methods", "fp32", "peak_rss_bytes"], KeyError, "peak_rss_bytes"),
        (["profiles", 0, "step_time_ratio", "luq4"], 1.1, "step_time_ratio"),
        (["accuracy", "reason"], None, "accuracy/reason"),
    ],
)
def test_invalid_results_are_refused_with_the_place(path, value, fragment):
    reasons = results.validation_errors(mutate(path, value))
    assert reasons and any(fragment in r for r in reasons), reasons


def test_energy_tag_and_figure_must_agree():
    result = make_result()
    energy = result["profiles"][0]["methods"]["fp32"]["energy"]
    energy.update(method="unavailable", joules_per_epoch=10.0)  # a number tagged unavailable
    assert results.validation_errors(result)
    energy.update(method="estimated", joules_per_epoch=None)  # an estimate without a figure
    assert results.validation_errors(result)
    energy.update(method="measured_rapl", joules_per_epoch=99.0)
    assert results.validation_errors(result) == []


def test_rows_keep_measured_and_estimated_energy_apart():
    result = make_result()
    result["profiles"][0]["methods"]["tathe4"]["energy"]["method"] = "measured_rapl"
    rows = {r["method"]: r for r in results.result_rows(result)}
    assert rows["fp32"]["energy_estimated_j_per_epoch"] == 1234.5 and rows["fp32"]["energy_measured_j_per_epoch"] is None
    assert rows["tathe4"]["energy_measured_j_per_epoch"] == 1234.5 and rows["tathe4"]["energy_estimated_j_per_epoch"] is None
    assert rows["tathe4"]["step_time_ratio"] == 1.02


def store_snapshot(store):
    return sorted((str(p.relative_to(store)), p.read_bytes()) for p in store.rglob("*") if p.is_file())


def test_submit_files_a_valid_result_and_refuses_truncated_or_invalid(tmp_path):
    good = tmp_path / "run.json"
    good.write_text(json.dumps(make_result(), indent=2))
    store = tmp_path / "store"
    filed = results.submit(good, store)
    assert filed.parent == store / "amd-epyc-2t-24g-0035969e"
    assert json.loads(filed.read_text()) == make_result()
    assert results.submit(good, store) == filed  # identical resubmission: nothing changes
    before = store_snapshot(store)

    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(UserError, match="truncated"):
        results.submit(truncated, store)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps(mutate(["profiles", 0, "status"], "great")))
    with pytest.raises(UserError, match="profiles/0/status"):
        results.submit(invalid, store)
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps(mutate(["wall_seconds"], 99.0)))  # same host, time and tier, other content
    with pytest.raises(UserError, match="already exists"):
        results.submit(clash, store)
    assert store_snapshot(store) == before


def test_submit_cli_is_one_line_and_exit_2(tmp_path, capsys):
    truncated = tmp_path / "t.json"
    truncated.write_text('{"schema_version": 1, "host": {')
    assert main(["submit", str(truncated), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("q4bench: error:") and "\n" not in err and "t.json" in err
    assert not (tmp_path / "store").exists()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(make_result()))
    assert main(["submit", str(good), "--store", str(tmp_path / "store")]) == 0


def test_write_result_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out" / "r.json"
    with pytest.raises(UserError):
        results.write_result(target, mutate(["tier", "name"], "nope"))
    assert not target.exists()

    results.write_result(target, make_result())
    original = target.read_bytes()
    changed = copy.deepcopy(make_result())
    changed["wall_seconds"] = 77.0

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        results.write_result(target, changed)
    assert target.read_bytes() == original  # the old file is intact
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]  # and no temporary is left behind


def test_load_results_reads_folders(tmp_path):
    for i in range(2):
        (tmp_path / f"{i}.json").write_text(json.dumps(mutate(["wall_seconds"], float(i))))
    assert [r["wall_seconds"] for r in results.load_results([tmp_path])] == [0.0, 1.0]


def test_new_results_must_name_their_code_and_old_ones_stay_valid(tmp_path):
    old = make_result()  # schema_version 1: written before provenance existed
    assert results.validation_errors(old) == []
    new = {**old, "schema_version": 2}
    assert any("provenance" in r for r in results.validation_errors(new))
    # write_result stamps what made the file, so a caller cannot forget it.
    target = results.write_result(tmp_path / "r.json", make_result())
    written = json.loads(target.read_text())
    assert written["schema_version"] == 2
    assert written["provenance"]["code"]["commit"]  # a hash, or "unknown" outside a checkout
    assert written["provenance"]["versions"]["suite"] and written["provenance"]["written_at"]
    broken = {**new, "provenance": {"code": {"commit": "abc"}, "versions": {}, "written_at": "x"}}
    assert any("provenance/code" in r for r in results.validation_errors(broken))


def _jsonschema_valid(doc) -> bool:
    import jsonschema

    return jsonschema.Draft202012Validator(results.schema()).is_valid(doc)


def _compiled_valid(doc) -> bool:
    import fastjsonschema

    try:
        results._compiled_schema()(doc)
        return True
    except fastjsonschema.JsonSchemaException:
        return False


COMMITTED_RESULTS = sorted((Path(__file__).resolve().parent.parent / "reports" / "submitted").glob("*/*.json"))


@pytest.mark.parametrize("path, value", [
    (["surprise"], 1), (["schema_version"], 3), (["profiles"], KeyError), (["profiles"], []),
    (["tier", "name"], "weekend"), (["host", "host_id"], "../../etc"), (["profiles", 0, "threads"], 0),
    (["profiles", 0, "methods", "fp32", "efficiency"], "high"), (["profiles", 0, "methods", "fp32", "extra"], 1),
    (["profiles", 0, "methods", "fp32", "energy", "method"], "guessed"), (["profiles", 0, "sgemm_gflops"], 0),
    (["profiles", 0, "methods", "fp32", "energy", "joules_per_epoch"], None), (["accuracy", "measured"], "yes"),
])
def test_the_compiled_schema_check_answers_as_jsonschema_does(path, value):
    """The fast check a report runs on every result rejects exactly what jsonschema (2020-12) rejects."""
    doc = mutate(path, value)
    assert _compiled_valid(doc) == _jsonschema_valid(doc) is False
    assert _compiled_valid(make_result()) and _jsonschema_valid(make_result())


def test_the_compiled_schema_check_accepts_every_committed_result():
    assert COMMITTED_RESULTS
    for path in COMMITTED_RESULTS:
        doc = json.loads(path.read_text())
        assert _compiled_valid(doc) == _jsonschema_valid(doc) is True, path
