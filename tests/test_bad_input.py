"""Every bad input is a one-line error naming the option, key or file and the bad value; exit 2,
no traceback, never silently replaced by a default. Most cases go through suite.cli.main in process
(stderr captured); a few run the real CLI in a subprocess."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from suite import data
from suite.cli import build_parser, main
from suite.errors import UserError
from tests.test_results import make_result

ROOT = Path(__file__).resolve().parent.parent


def one_line_error(capsys, argv, *fragments, code=2) -> str:
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and err.startswith("q4bench") and ": error: " in err, err
    for fragment in fragments:
        assert str(fragment) in err, (fragment, err)
    return err


# ---------------------------------------------------------------------------------------------
# 1. Numbers: every count on the command line

BAD_COUNTS = ["0", "-1", "1.5", "nan", "inf", "10000000000", "ten"]  # 1e10: above every bound, the seed's too
COMMANDS = {
    "train": (["train", "--synthetic", "--out", "{tmp}/run"], ["--epochs", "--batch-size", "--subset", "--threads", "--seed"]),
    "compare": (["compare", "--method", "tathe4", "--synthetic", "--out", "{tmp}/cmp"],
                ["--seeds", "--epochs", "--parallel", "--threads", "--subset", "--batch-size"]),
    "export": (["export", "--checkpoint", "{tmp}/c.pt", "--out", "{tmp}/onnx"], ["--calibration-images", "--threads"]),
    "verify-onnx": (["verify-onnx", "--checkpoint", "{tmp}/c.pt", "--onnx", "{tmp}/onnx"],
                    ["--threads", "--limit", "--agreement-images", "--speed-rounds", "--throughput-runs",
                     "--latency-runs", "--profile-runs"]),
    "bench": (["bench", "--out", "{tmp}/res"], ["--seed"]),
}
CASES = [(cmd, opt, value) for cmd, (_, opts) in COMMANDS.items() for opt in opts for value in BAD_COUNTS
         if not (opt == "--seed" and value == "0")]


@pytest.mark.parametrize("command, option, value", CASES)
def test_bad_counts_are_refused_naming_option_and_value(command, option, value, tmp_path, capsys):
    base = [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[command][0]]
    one_line_error(capsys, [*base, option, value], f"q4bench {command}: error: argument {option}:", value)
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("option, value", [("--hours", "0"), ("--hours", "-2"), ("--hours", "nan"), ("--hours", "inf"),
                                           ("--hours", "100000"), ("--margin", "0"), ("--margin", "-1"),
                                           ("--margin", "nan"), ("--margin", "inf"), ("--margin", "1000")])
def test_bad_compare_numbers(option, value, tmp_path, capsys):
    argv = ["compare", "--method", "tathe4", "--synthetic", "--out", tmp_path / "c", option, value]
    if option != "--hours":
        argv += ["--epochs", "1"]
    one_line_error(capsys, argv, f"argument {option}:", value)


def test_library_configs_refuse_what_the_cli_refuses():
    """The dataclasses hold the same ranges, so no caller gets a default in place of its value."""
    from suite.bench import BenchConfig
    from suite.compare import CompareRequest
    from suite.export import export
    from suite.train import TrainConfig
    from suite.verify import VerifyConfig

    # The issue's case: batch_size=0 was falsy, `config.batch_size or recipe.batch_size` trained at 128.
    with pytest.raises(UserError, match=r"^--batch-size must be from 2 to 50,000, got 0$"):
        TrainConfig(batch_size=0)
    for bad in ({"epochs": 0}, {"threads": 0}, {"seed": -1}, {"subset": 10**9}, {"epochs": 2.5}, {"batch_size": True}):
        with pytest.raises(UserError, match=next(iter(bad)).replace("_", "-")):
            TrainConfig(**bad)
    for bad in ({"seeds": 0}, {"epochs": 0}, {"hours": float("nan")}, {"margin": float("inf")}, {"parallel": 0}):
        with pytest.raises(UserError, match=next(iter(bad))):
            CompareRequest(methods=("tathe4",), **bad)
    with pytest.raises(UserError, match="--limit must be from 1 to 10,000, got 0"):
        VerifyConfig("c.pt", "onnx", limit=0)
    with pytest.raises(UserError, match="--seed"):
        BenchConfig(seed=-5)
    with pytest.raises(UserError, match="--calibration-images"):
        export("c.pt", "onnx", calibration_count=0)


def test_help_prints_usage_for_the_tool_and_every_command(capsys):
    assert main(["--help"]) == 0  # a new user's first command
    assert "usage: q4bench" in capsys.readouterr().out
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"train", "compare", "parity", "report", "bench"} <= set(commands)
    for command in commands:
        assert main([command, "--help"]) == 0, command
        assert f"usage: q4bench {command}" in capsys.readouterr().out


def test_real_cli_usage_and_user_errors_are_one_line(tmp_path):
    def run(*argv):
        proc = subprocess.run([sys.executable, "-m", "suite", *map(str, argv)], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
        return proc.returncode, proc.stderr

    assert run("train", "--synthetic", "--batch-size", "0", "--out", tmp_path / "r") == (
        2, "q4bench train: error: argument --batch-size: must be from 2 to 50,000, got 0\n")
    assert run("nope") [0] == 2
    code, err = run("submit", tmp_path)
    assert code == 2 and err == f"q4bench: error: {tmp_path}: result file is a folder, expected a file\n"


# ---------------------------------------------------------------------------------------------
# Numbers in hardware profiles and parity.toml

PROFILE = 'description = "x"\nthreads = 2\n'


@pytest.mark.parametrize("line, key, value", [
    ("threads = 100000", "threads", "100000"),
    ("batch_size = 1000000000", "batch_size", "1000000000"),
    ("batch_size = 0", "batch_size", "0"),
    ("memory_cap_mib = 99999999999", "memory_cap_mib", "99999999999"),
    ("watts_per_busy_thread = inf", "watts_per_busy_thread", "inf"),
    ("watts_per_busy_thread = nan", "watts_per_busy_thread", "nan"),
    ("watts_per_busy_thread = 0", "watts_per_busy_thread", "0"),
    ("batch_size = { a = 1 }", "batch_size", "{'a': 1}"),
    ("batch_size = 64.0", "batch_size", "64.0"),
])
def test_profile_numbers_name_file_key_and_value(line, key, value, tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text(PROFILE.replace("threads = 2", line) if line.startswith("threads") else PROFILE + line + "\n")
    one_line_error(capsys, ["bench", "--profile", path, "--out", tmp_path / "o"], str(path), repr(key), value)


@pytest.mark.parametrize("old, new, fragment", [
    ("epochs = 1\ntrain", "epochs = 10000000\ntrain", "[budget]: key 'epochs' must be from 1 to 10,000, got 10000000"),
    ("batch_size = 128\nseeds", "batch_size = 0\nseeds", "key 'batch_size' must be from 2"),
    ("threads = 1\n", "threads = 100000\n", "key 'threads' must be from 1 to 1,024, got 100000"),
    ("round_up_to = 0.01", "round_up_to = inf", "key 'round_up_to' must be a number in [0.001, 100], got inf"),
    ("round_up_to = 0.01", "round_up_to = 1e-320", "key 'round_up_to' must be a number in [0.001, 100], got 1e-320"),
    ("false_fail_rate = 0.01", "false_fail_rate = 1e-20", "key 'false_fail_rate' must be a number in [1e-06, 0.5), got 1e-20"),
    ("candidate_acc = [46.45, 46.65, 48.30, 47.77, 48.06, 47.51, 47.31, 46.80, 47.41, 47.19, 46.13, 45.90]",
     "candidate_acc = [46.75, 46.42, 48.06, 47.19, 47.93, 47.34, 46.48, 46.59, 48.80, 48.67, 46.48, 46.70]",
     "[spread]: the measured gaps (reference_acc - candidate_acc) all equal 3"),
    ("min_top1_agreement = 99.9", "min_top1_agreement = nan", "key 'min_top1_agreement' must be a number in [0, 100], got nan"),
    ("reference_acc = [49.75, 49.42", "reference_acc = [nan, 49.42", "[spread]: key 'reference_acc' must be a number in [0, 100], got nan"),
    ("seeds = [0, 1, 2, 3", "seeds = [-1, 1, 2, 3", "[spread]: key 'seeds' must be from 0"),
    ("test_images = 2000", "test_images = 2000.5", "key 'test_images' must be an integer from 1 to 10,000, got 2000.5"),
])
def test_parity_config_numbers(old, new, fragment, tmp_path, capsys):
    text = (ROOT / "parity.toml").read_text()
    assert old in text
    path = tmp_path / "parity.toml"
    path.write_text(text.replace(old, new, 1))
    one_line_error(capsys, ["parity", "--config", path, "--synthetic", "--out", tmp_path / "o"], str(path), fragment)


# ---------------------------------------------------------------------------------------------
# 2. Paths


def _out_cases(tmp):
    result = tmp / "result.json"
    result.write_text(json.dumps(make_result()))
    return {
        "train": ["train", "--synthetic", "--out"],
        "compare": ["compare", "--method", "tathe4", "--epochs", "1", "--synthetic", "--out"],
        "export": ["export", "--checkpoint", tmp / "c.pt", "--out"],
        "bench": ["bench", "--out"],
        "report": ["report", "--results", result, "--out"],
        "parity": ["parity", "--synthetic", "--config", ROOT / "parity.toml", "--out"],
        "submit": ["submit", result, "--store"],
    }


@pytest.mark.parametrize("command", ["train", "compare", "export", "bench", "report", "parity", "submit"])
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_output_that_is_or_lies_under_a_file(command, where, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    out = blocker if where == "a file" else blocker / "sub"
    argv = _out_cases(tmp_path)[command]
    option = "--store" if command == "submit" else "--out"
    one_line_error(capsys, [*argv, out], f"{option} {out}: not a folder")
    assert blocker.read_text() == "not a folder\n"


def test_parity_report_that_is_a_folder(tmp_path, capsys):
    one_line_error(capsys, ["parity", "--synthetic", "--config", ROOT / "parity.toml", "--out", tmp_path / "o",
                            "--report", tmp_path], f"--report {tmp_path}: is a folder")


def test_unwritable_output_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as root: permissions do not stop writes (the under-a-file case covers this path)")
    one_line_error(capsys, ["train", "--synthetic", "--out", locked / "run"], "is not writable")


def test_data_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "cifar.txt"
    path.write_text("hi\n")
    one_line_error(capsys, ["train", "--data-dir", path, "--out", tmp_path / "r"], f"--data-dir {path}: not a folder")
    one_line_error(capsys, ["compare", "--method", "tathe4", "--epochs", "1", "--data-dir", path, "--out", tmp_path / "c"],
                   f"--data-dir {path}: not a folder")


def test_existing_run_without_resume(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"x")
    one_line_error(capsys, ["train", "--synthetic", "--out", tmp_path / "run"], "already holds a run; pass --resume")


@pytest.mark.parametrize("kind, fragment", [("folder", "not a file"), ("missing", "checkpoint not found"),
                                            ("empty", "not a readable q4bench checkpoint"),
                                            ("text", "not a readable q4bench checkpoint")])
def test_checkpoint_that_is_not_one(kind, fragment, tmp_path, capsys):
    path = tmp_path / "c.pt"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello\n")
    one_line_error(capsys, ["export", "--checkpoint", path, "--out", tmp_path / "o"], str(path), fragment)


def test_missing_inputs(tmp_path, capsys):
    one_line_error(capsys, ["report", "--results", tmp_path / "nope", "--out", tmp_path / "r"], "--results", "nope")
    one_line_error(capsys, ["parity", "--config", tmp_path / "nope.toml"], "nope.toml: parity config not found")
    one_line_error(capsys, ["parity", "--config", tmp_path], f"{tmp_path}: parity config is a folder")
    one_line_error(capsys, ["bench", "--profile", tmp_path / "nope.toml"], "nope.toml: profile not found")
    (tmp_path / "dir.toml").mkdir()
    one_line_error(capsys, ["bench", "--profile", tmp_path / "dir.toml"], "dir.toml: profile is a folder")
    one_line_error(capsys, ["bench", "--profile", "no-such-profile"], "unknown profile 'no-such-profile'")


# ---------------------------------------------------------------------------------------------
# 3. Text files from users: submit (JSON), report inputs (JSON), profiles and parity (TOML)

JSON_JUNK = {
    "binary": (b"\x00\x01\x02\xff\xfe", "not UTF-8 text"),
    "invalid utf-8": (b'{"a": "\xc3\x28"}', "not UTF-8 text (byte 7 is 0xc3)"),
    "empty": (b"", "is empty"),
    "NaN": (b'{"a": NaN}', "NaN is not a JSON number"),
    "Infinity": (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
    "deep": (b"[" * 100_000, "nested too deeply"),
    "list": (b"[1, 2]", "must be a JSON object at the top level, found list"),
    "huge int": (b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON"),
    "truncated": (b'{"schema_version": 2, "host": {', "not valid JSON (truncated?)"),
}


@pytest.mark.parametrize("name", list(JSON_JUNK))
@pytest.mark.parametrize("command", ["submit", "report"])
def test_junk_json_files(name, command, tmp_path, capsys):
    """submit refuses junk in one line and files nothing; report leaves it out, names it with the reason in
    "Files not used" and still renders (one bad submission must not break the report for everyone)."""
    content, fragment = JSON_JUNK[name]
    path = tmp_path / "r.json"
    path.write_bytes(content)
    if command == "submit":
        one_line_error(capsys, ["submit", path, "--store", tmp_path / "s"], str(path), fragment)
        assert not (tmp_path / "s").exists()
        return
    assert main(["report", "--results", str(path), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'q4bench: note: 1 input file(s) not used (see "Files not used" in {tmp_path / "out" / "report.md"})']
    unused = (tmp_path / "out" / "report.md").read_text().split("## Files not used: 1", 1)[1]
    row = next(line for line in unused.splitlines() if line.endswith(" |") and "r.json |" in line)
    assert fragment.split(" (")[0] in row


def test_oversized_files_are_refused_before_reading(tmp_path, capsys):
    from suite.userfiles import CONFIG_MAX_BYTES, RESULT_MAX_BYTES

    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(RESULT_MAX_BYTES + 1)  # sparse: nothing is written, nothing would be read
    one_line_error(capsys, ["submit", big, "--store", tmp_path / "s"], str(big), "over the 33,554,432-byte limit")
    toml = tmp_path / "big.toml"
    with open(toml, "wb") as f:
        f.truncate(CONFIG_MAX_BYTES + 1)
    one_line_error(capsys, ["bench", "--profile", toml], str(toml), "over the 1,048,576-byte limit")


@pytest.mark.parametrize("content, fragment", [
    (b"\x00\x00junk\xff", "not UTF-8 text"),
    (b'description = "x"\nthreads = ' + b"[" * 100_000, "nested too deeply"),
    (b'description = "x"\nthreads = = 2\n', "not valid TOML"),
    (b"", "is empty"),
])
def test_junk_toml_files(content, fragment, tmp_path, capsys):
    profile, parity = tmp_path / "p.toml", tmp_path / "parity.toml"
    profile.write_bytes(content)
    parity.write_bytes(content)
    one_line_error(capsys, ["bench", "--profile", profile], str(profile), fragment)
    one_line_error(capsys, ["parity", "--config", parity], str(parity), fragment)


def test_compare_resume_with_a_broken_request_file(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "request.json").write_text("[1, 2, 3]")
    one_line_error(capsys, ["compare", "--method", "tathe4", "--epochs", "1", "--synthetic", "--out", out],
                   "request.json: compare request must be a JSON object")
    (out / "request.json").write_text('{"seeds": "two"}')
    one_line_error(capsys, ["compare", "--method", "tathe4", "--epochs", "1", "--synthetic", "--out", out],
                   "holds a compare with")


# ---------------------------------------------------------------------------------------------
# 4. Data: CIFAR batch files


def _folder(tmp_path):
    return data.write_synthetic(tmp_path, num_train=50, num_test=10)


def _dump(path, obj):
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _bad(tmp_path, fragment, subset=None):
    with pytest.raises(UserError) as err:
        data.load_data("cifar10", tmp_path, False, subset)
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_hostile_pickle_runs_nothing(tmp_path):
    folder = _folder(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    _dump(folder / "data_batch_2", {"data": Evil(), "labels": [0]})
    _bad(tmp_path, "data_batch_2: truncated or corrupt batch file (UnpicklingError: refusing to load posix.system)")
    assert not marker.exists()


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.unlink() or p.mkdir(), "data_batch_1: cannot read batch file (Is a directory)"),
    (lambda p: p.write_bytes(b""), "data_batch_1: truncated or corrupt batch file (EOFError"),
    (lambda p: _dump(p, {"data": "x" * 3072, "labels": [0]}), "field 'data' must be uint8 of shape (N, 3072), N >= 1, found str"),
    (lambda p: _dump(p, {"data": __import__("numpy").zeros((2, 3072), "float32"), "labels": [0, 1]}), "found float32 (2, 3072)"),
    (lambda p: _dump(p, {"data": __import__("numpy").zeros((0, 3072), "uint8"), "labels": []}), "N >= 1, found uint8 (0, 3072)"),
    (lambda p: _dump(p, {"data": __import__("numpy").zeros((2, 3072), "uint8"), "labels": [0.5, 1.0]}), "'labels' must be a list of integer class ids, found float64"),
    (lambda p: _dump(p, {"data": __import__("numpy").zeros((2, 3072), "uint8"), "labels": ["cat", "dog"]}), "integer class ids"),
    (lambda p: _dump(p, {"data": __import__("numpy").zeros((2, 3072), "uint8"), "labels": [0, [1]]}), "integer class ids"),
    (lambda p: _dump(p, {"data": __import__("numpy").zeros((2, 3072), "uint8"), "labels": [0, 10]}), "wrong class count: labels span 0..10"),
    (lambda p: _dump(p, {"data": __import__("numpy").zeros((2, 3072), "uint8"), "labels": [-1, 0]}), "wrong class count"),
    (lambda p: _dump(p, [1, 2]), "expected a dict, found list"),
])
def test_bad_batch_files_name_the_file(make, fragment, tmp_path):
    folder = _folder(tmp_path)
    make(folder / "data_batch_1")
    _bad(tmp_path, fragment)


def test_bad_meta_and_a_subset_beyond_the_data(tmp_path):
    folder = _folder(tmp_path)
    _bad(tmp_path, "--subset 51 is more than the 50 training images", subset=51)
    _dump(folder / "batches.meta", {"label_names": 10})
    _bad(tmp_path, "batches.meta: label_names must be a list of class names, found int")


# ---------------------------------------------------------------------------------------------
# 5. Packaging


def test_tomli_fallback_when_tomllib_is_missing(monkeypatch):
    """Python 3.10 has no tomllib; suite.userfiles then uses tomli (a dependency there)."""
    import importlib

    pytest.importorskip("tomli")
    import suite.userfiles

    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` now raises ModuleNotFoundError
    try:
        fresh = importlib.reload(suite.userfiles)
        assert fresh.tomllib.__name__ == "tomli"
        assert fresh.parse_user_toml("p.toml", "threads = 2\n", "profile") == {"threads": 2}
        with pytest.raises(UserError, match="p.toml: profile is not valid TOML"):
            fresh.parse_user_toml("p.toml", "threads = = 2\n", "profile")
    finally:
        monkeypatch.undo()
        importlib.reload(suite.userfiles)


def test_installed_package_ships_the_hardware_profiles(tmp_path):
    """A non-editable install (pip --target, no deps, no network) finds its profiles outside the repository."""
    import shutil

    # A copy: setuptools writes build/ and *.egg-info into the tree it builds from.
    source = shutil.copytree(ROOT, tmp_path / "src", ignore=shutil.ignore_patterns(
        ".git", "reports", "runs", "build", "*.egg-info", "__pycache__", ".venv"))
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(source)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert pip.returncode == 0, pip.stderr[-2000:]
    script = ("import suite, suite.profiles as p, suite.report, suite.methods, suite.cli; "
              "assert suite.__file__.startswith(%r), suite.__file__; "
              "names = p.available_profiles(); print(' '.join(names)); "
              "[p.resolve_profile(n, host_cpus=2) for n in names]" % str(target))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "Q4BENCH_PROFILES")}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env={**env, "PYTHONPATH": str(target)}, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert {"single-thread", "colab-free-cpu", "laptop-4c", "all-cores", "gpu-cuda"} <= set(run.stdout.split())
