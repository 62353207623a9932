"""One config path: every config file (hardware profiles, parity.toml) read by suite.config into dataclasses
checked in __post_init__, each error one line naming the file, the table and the key, the same wording for every
file; the same dataclasses built from the command line name the option instead; rules across fields (the data
source, the budget) live in the dataclasses; the CLI's defaults are the dataclasses'. One schema check for every
JSON document read. spec.py names the shared facts once."""

import ast
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from suite import spec
from suite.cli import build_parser, main
from suite.compare import CompareRequest
from suite.config import Choice, Count, Items, Number, Text, check_fields, read_table, setting
from suite.errors import FieldError, UserError
from suite.parity import ParityBudget, ParityRequest, load_config
from suite.profiles import parse_profile
from suite.state import check_document
from suite.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
PARITY_TOML = (ROOT / "parity.toml").read_text()


@dataclasses.dataclass(frozen=True)
class Example:
    name: str = setting(Text(nonempty=True))
    epochs: int = setting(Count("epochs"))
    rate: float = setting(Number(0, 1), 0.5)
    device: str = setting(Choice(("cpu", "cuda")), "cpu")
    seeds: tuple = setting(Items(Count("seed")), ())
    path: str = ""  # derived by the reader, not a key

    def __post_init__(self):
        check_fields(self)
        if self.device == "cuda" and self.rate > 0.9:
            raise FieldError("rate", "must be at most 0.9 on cuda (lower it or use device = \"cpu\")")


def _read(table: dict) -> Example:
    return read_table(Example, table, "ex.toml [run]", path="ex.toml")


# ---------------------------------------------------------------------------------------------
# The reader


@pytest.mark.parametrize("table, message", [
    ({"name": "a", "epochs": "two"}, "ex.toml [run]: key 'epochs' must be an integer from 1 to 10,000, got 'two'"),
    ({"name": "a", "epochs": 0}, "ex.toml [run]: key 'epochs' must be from 1 to 10,000, got 0"),
    ({"name": "a", "epochs": 1, "rate": True}, "ex.toml [run]: key 'rate' must be a number in (0, 1], got True"),
    ({"name": "a", "epochs": 1, "device": "gpu"}, "ex.toml [run]: key 'device' must be one of 'cpu', 'cuda', got 'gpu'"),
    ({"name": " ", "epochs": 1}, "ex.toml [run]: key 'name' must be non-empty text, got ' '"),
    ({"name": "a", "epochs": 1, "seeds": [0, -1]}, "ex.toml [run]: key 'seeds' must be from 0 to 4,294,967,295, got -1"),
    ({"name": "a", "epochs": 1, "seeds": 3}, "ex.toml [run]: key 'seeds' must be a list, each an integer from 0"),
    ({"name": "a"}, "ex.toml [run]: missing key 'epochs'; add epochs = <an integer from 1 to 10,000>"),
    ({"name": "a", "epochs": 1, "epoch": 2},
     "ex.toml [run]: unknown key 'epoch'; known keys: device, epochs, name, rate, seeds"),
    ({"name": "a", "epochs": 1, "path": "x"}, "ex.toml [run]: unknown key 'path'"),  # derived fields are no keys
    ({"name": "a", "epochs": 1, "device": "cuda", "rate": 1.0},
     "ex.toml [run]: key 'rate' must be at most 0.9 on cuda (lower it or use device = \"cpu\")"),
])
def test_every_bad_table_is_one_line_naming_file_table_and_key(table, message):
    with pytest.raises(UserError) as info:
        _read(table)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_checked_values_are_kept_in_their_type():
    example = _read({"name": " a ", "epochs": 3, "rate": 1, "seeds": [4, 5]})
    assert example == Example("a", 3, 1.0, "cpu", (4, 5), "ex.toml")
    assert isinstance(example.rate, float) and example.seeds == (4, 5)


def test_the_same_dataclass_built_in_code_names_the_option():
    with pytest.raises(UserError, match=r"^--epochs must be from 1 to 10,000, got 0$"):
        Example("a", 0)
    with pytest.raises(UserError, match=r"^--batch-size must be from 2 to 50,000, got 0$"):
        TrainConfig(batch_size=0)
    with pytest.raises(UserError, match=r"^--epochs must be from 1 to 10,000, got 0$"):
        ParityBudget("short", 0, 256, 16, 2, 1, 2)
    with pytest.raises(UserError, match=r"^--rate must be at most 0.9 on cuda"):
        Example("a", 1, 1.0, "cuda")


# ---------------------------------------------------------------------------------------------
# The two config files: the same wording


def test_a_profile_and_parity_toml_word_their_errors_alike(tmp_path):
    profile = tmp_path / "p.toml"
    with pytest.raises(UserError, match=rf"^{re.escape(str(profile))}: key 'batch_size' must be from 2 to 50,000, got 0$"):
        parse_profile(profile, 'description = "x"\nthreads = 1\nbatch_size = 0\n')
    parity = tmp_path / "parity.toml"
    parity.write_text(PARITY_TOML.replace("batch_size = 128\nseeds", "batch_size = 0\nseeds"))
    with pytest.raises(UserError, match=rf"^{re.escape(str(parity))} \[budget\]: key 'batch_size' must be from 2 to 50,000, got 0$"):
        load_config(parity)
    with pytest.raises(UserError, match=rf"^{re.escape(str(profile))}: unknown key 'thread'; known keys: batch_size, "):
        parse_profile(profile, 'description = "x"\nthread = 1\n')
    parity.write_text(PARITY_TOML.replace("latency_runs = 3", "latency_runs = 3\nlatency = 3"))
    with pytest.raises(UserError, match=rf"^{re.escape(str(parity))} \[onnx\]: unknown key 'latency'; known keys: calibration_images, "):
        load_config(parity)
    with pytest.raises(UserError, match=rf"^{re.escape(str(profile))}: missing key 'threads'; add threads = <an integer from 1 to "
                                        r"1,024 or \"all\">$"):
        parse_profile(profile, 'description = "x"\n')
    parity.write_text(PARITY_TOML.replace("speed_rounds = 3\n", ""))
    with pytest.raises(UserError, match=rf"^{re.escape(str(parity))} \[onnx\]: missing key 'speed_rounds'; add speed_rounds = <an "):
        load_config(parity)


@pytest.mark.parametrize("old, new, message", [
    ("\n[control]\n", "\n[controls]\n", r": unknown table \[controls\]; known tables: \[gate\], \[budget\]"),
    ("\n[tolerance]\n", "\n[tolerances]\n", r": unknown table \[tolerances\]"),
    ('files = ["fp32", "int4"]', 'files = ["fp32", "int5"]',
     r" \[onnx\]: key 'files' must be one of 'fp32', 'int4', 'int8', got 'int5'$"),
    ('files = ["fp32", "int4"]', "files = []", r" \[onnx\]: key 'files' must be a non-empty list, each one of"),
    ("seeds = [0, 1, 2, 3]", "seeds = [0, 1, 2]",
     r" \[control\]: seeds, reference_acc and control_acc must be equally long and not empty$"),
    ("budget = { arch = \"simpleresnet4bit\", recipe = \"short\", epochs = 1, train_images = 50000, batch_size = 128 }\n"
     "seeds = [0, 1, 2, 3]", "budget = { arch = \"simpleresnet4bit\", recipe = \"short\", epochs = 2, train_images = "
     "50000, batch_size = 128 }\nseeds = [0, 1, 2, 3]",
     r" \[control\]: the control was measured at another budget than \[budget\] \(epochs differ\): remeasure it"),
    ("first_seed = 12", "first_seed = 4294967294",
     r" \[budget\]: key 'first_seed' must be from 0 to 4,294,967,290, got 4294967294 \(with seeds = 6\)$"),
    ('near_control = "tathe4-3bit"', 'near_control = "tathe4-3bit"\nmax_gap_points = 2.0',
     r" \[gate\]: key 'max_gap_points' is computed from \[spread\] by the rule in \[tolerance\]; remove it$"),
])
def test_parity_toml_tables_keys_and_rules_across_them(old, new, message, tmp_path):
    assert old in PARITY_TOML
    path = tmp_path / "parity.toml"
    path.write_text(PARITY_TOML.replace(old, new, 1))
    with pytest.raises(UserError, match="^" + re.escape(str(path)) + message):
        load_config(path)


def test_the_cli_prints_a_config_error_as_one_line(tmp_path, capsys):
    path = tmp_path / "parity.toml"
    path.write_text(PARITY_TOML.replace("threads = 1\n", 'threads = "one"\n', 1))
    assert main(["parity", "--config", str(path), "--synthetic", "--out", str(tmp_path / "o")]) == spec.EXIT_USER_ERROR
    assert capsys.readouterr().err == (f"q4bench: error: {path} [budget]: key 'threads' must be an integer from 1 to "
                                       f"1,024, got 'one'\n")


# ---------------------------------------------------------------------------------------------
# Rules across fields live in the dataclasses


def test_data_dir_and_synthetic_exclude_each_other_in_every_request(tmp_path):
    for build in (lambda: TrainConfig(data_dir="d", synthetic=True),
                  lambda: CompareRequest(methods=("tathe4",), epochs=1, data_dir="d", synthetic=True),
                  lambda: ParityRequest(data_dir="d", synthetic=True)):
        with pytest.raises(UserError, match=r"^--data-dir and --synthetic exclude each other$"):
            build()
    with pytest.raises(UserError, match=r"^give the budget as exactly one of --epochs E or --hours H$"):
        CompareRequest(methods=("tathe4",), epochs=1, hours=1.0)


@pytest.mark.parametrize("command", [["train"], ["compare", "--method", "tathe4", "--epochs", "1"], ["parity"]])
def test_the_conflict_is_refused_by_the_real_cli_before_any_work(command, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "suite", *command, "--data-dir", str(tmp_path), "--synthetic",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert (done.returncode, done.stderr) == (2, "q4bench: error: --data-dir and --synthetic exclude each other\n")
    assert not out.exists()


@pytest.mark.parametrize("argv, cls", [
    (["train", "--out", "o"], TrainConfig),
    (["compare", "--method", "tathe4", "--epochs", "1"], CompareRequest),
    (["parity"], ParityRequest),
    (["verify-onnx", "--checkpoint", "c.pt", "--onnx", "o"], None),
    (["bench"], None),
])
def test_cli_defaults_are_the_dataclasses(argv, cls):
    from suite.bench import BenchConfig
    from suite.verify import VerifyConfig

    cls = cls or {"verify-onnx": VerifyConfig, "bench": BenchConfig}[argv[0]]
    args = build_parser().parse_args(argv)
    options = {a.dest for a in build_parser()._subparsers._group_actions[0].choices[argv[0]]._actions}
    compared = 0
    for f in dataclasses.fields(cls):
        given = "--" + f.name.replace("_", "-") in argv
        if f.name in options and f.default is not dataclasses.MISSING and not given:
            assert getattr(args, f.name) == f.default, (argv[0], f.name)
            compared += 1
    assert compared >= 3, "the test compared too few options to mean anything"


# ---------------------------------------------------------------------------------------------
# One schema check


def test_one_schema_check_one_wording_for_results_and_compare(tmp_path):
    from suite import compare, results
    from tests.test_results import make_result

    bad_result = make_result()
    del bad_result["host"]["cpu_model"]
    with pytest.raises(UserError, match=r"^r.json: invalid result file: host: 'cpu_model' is a required property$"):
        results.validate_result(bad_result, "r.json")
    with pytest.raises(UserError, match=r"^c.json: invalid compare result: \(top level\): '\w+' is a required "
                                        r"property \(and \d+ more\)$"):
        compare.validate_result({"schema": "q4bench-compare/1"}, "c.json")
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert check_document({"a": 1}, schema, "x.json", "thing") == {"a": 1}
    with pytest.raises(UserError, match=r"^x.json: invalid thing: a: 'one' is not of type 'integer'$"):
        check_document({"a": "one"}, schema, "x.json", "thing")
    with pytest.raises(UserError, match=r"^x.json: invalid thing: b: too big \(and 1 more\)$"):
        check_document({}, lambda doc: ["b: too big", "c: too small"], "x.json", "thing")


def test_q4bench_results_names_the_file_and_field_of_a_broken_compare_result(tmp_path):
    from suite import frames

    path = tmp_path / "compare.json"
    path.write_text(json.dumps({"schema": "q4bench-compare/1", "reference": "fp32"}))
    found = frames.collect([path])
    [(_, reason)] = found.skipped
    assert reason.startswith(f"{path}: invalid compare result: (top level): ") and "\n" not in reason, reason


# ---------------------------------------------------------------------------------------------
# spec.py names the shared facts once


def test_arm_names_round_trip_and_bench_uses_them():
    from suite.bench import arms_for
    from suite.profiles import Profile

    assert spec.arm_name("tathe4", spec.FULL_PRECISION) == "tathe4"
    assert spec.arm_name("tathe4", "bf16") == "tathe4@bf16"
    for method in ("fp32", "tathe4", "fractrain-pfq"):
        for precision in spec.PRECISIONS:
            assert spec.split_arm(spec.arm_name(method, precision)) == (method, precision)
    profile = Profile("p", "test", 1, None, 16, None, Path("p.toml"), precision="bf16")
    arms = arms_for(profile, ["fp32", "tathe4"], set())
    assert [a["name"] for a in arms] == ["fp32", "tathe4", "fp32@bf16", "tathe4@bf16"]
    assert all(spec.split_arm(a["name"]) == (a["method"], a["precision"]) for a in arms)


def test_no_module_spells_a_shared_file_name_again():
    """Every string constant in suite/ equal to one of spec's file names, outside spec.py, is a re-spelling."""
    names = {value for key, value in vars(spec).items() if key.endswith(("_FILE", "_LOG")) and isinstance(value, str)}
    assert {"history.json", "checkpoint.pt", "predictions.npy", "compare.json"} <= names
    found = []
    for path in sorted((ROOT / "suite").rglob("*.py")):
        if path.name == "spec.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not found, found
