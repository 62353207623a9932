"""What the suite writes when the files around it come from strangers: symbolic links where its lock or its
folders go, a store with links and impossible results, folders holding someone else's files, edited state
files, broken plugins and command lines the code cannot serve. Every case runs the real CLI in a child
process against real links and files, and expects one line on stderr, a non-zero exit and nothing outside
the output folder touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from suite.locks import LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent
PRECIOUS = b"someone else's file\n"


def cli(*args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """The real `python -m suite` in a child process; PYTHONPATH keeps this checkout's code first."""
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "suite", *map(str, args)], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def refused(proc: subprocess.CompletedProcess, *fragments) -> str:
    """The child's one-line error, after checking it is one line, no traceback and a non-zero exit."""
    err = proc.stderr
    assert proc.returncode not in (0, None), (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err and err.endswith("\n") and err.count("\n") == 1, err
    assert ": error: " in err, err
    for fragment in fragments:
        assert str(fragment) in err, (fragment, err)
    return err


def precious_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PRECIOUS)
    return path


# ---------------------------------------------------------------------------------------------
# 1. Locks and output folders: a link never redirects a write


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real (tiny) tathe4 checkpoint, trained in process: export and --resume read it."""
    from suite.train import TrainConfig, train

    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(TrainConfig(method="tathe4", synthetic=True, subset=64, batch_size=32, epochs=1, threads=2, out=str(out)),
          log=lambda *a, **k: None)
    return out / "checkpoint.pt"


def _lock_commands(tmp: Path, out: Path, checkpoint: Path) -> dict[str, list]:
    return {
        "report": ["report", "--results", tmp / "empty", "--out", out],
        "train": ["train", "--synthetic", "--subset", 16, "--epochs", 1, "--out", out],
        "compare": ["compare", "--method", "tathe4", "--synthetic", "--epochs", 1, "--subset", 16, "--out", out],
        "parity": ["parity", "--synthetic", "--out", out, "--report", tmp / "parity.md"],
        "export": ["export", "--checkpoint", checkpoint, "--out", out, "--calibration-images", 8],
        "verify-onnx": ["verify-onnx", "--checkpoint", checkpoint, "--onnx", out],
    }


@pytest.mark.parametrize("command", ["report", "train", "compare", "parity", "export", "verify-onnx"])
def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(command, checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    target = precious_file(tmp_path / "elsewhere" / "target.txt")
    (out / LOCK_NAME).symlink_to(target)
    refused(cli(*_lock_commands(tmp_path, out, checkpoint)[command]), LOCK_NAME, "symbolic link")
    assert target.read_bytes() == PRECIOUS
    assert (out / LOCK_NAME).is_symlink() and sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


@pytest.mark.parametrize("make, fragment", [(os.mkfifo, "not a plain file"), (os.mkdir, "not a plain file"),
                                            (lambda p: os.link(precious_file(p.parent.parent / "t"), p),
                                             "hard links")])
def test_a_lock_that_is_a_fifo_a_folder_or_a_hard_link_is_refused(make, fragment, tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    make(out / LOCK_NAME)
    refused(cli("report", "--results", tmp_path / "empty", "--out", out, timeout=120), fragment)
    if (tmp_path / "t").exists():
        assert (tmp_path / "t").read_bytes() == PRECIOUS


def test_a_new_lock_is_a_plain_file_of_mode_644(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = cli("report", "--results", tmp_path / "empty", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    lock = tmp_path / "out" / LOCK_NAME
    assert not lock.is_symlink() and lock.is_file()
    assert lock.stat().st_mode & 0o777 == 0o644 & ~_umask()
    assert lock.read_text().startswith("q4bench report (pid ")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("command", ["report", "compare", "bench"])
def test_an_output_folder_that_is_a_symlink_is_refused(command, tmp_path):
    (tmp_path / "empty").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "out"
    link.symlink_to(elsewhere)
    args = {"report": ["report", "--results", tmp_path / "empty", "--out", link],
            "compare": ["compare", "--method", "tathe4", "--synthetic", "--epochs", 1, "--out", link],
            "bench": ["bench", "--tier", "smoke", "--no-download", "--out", link]}[command]
    refused(cli(*args), f"--out {link}: is a symbolic link")
    assert not any(elsewhere.iterdir())


# ---------------------------------------------------------------------------------------------
# 2. The store: links out of it, and results no host can produce


def _result_file(tmp: Path, **changes) -> Path:
    from tests.test_results import make_result

    result = make_result()
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = result
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value
    path = tmp / "result.json"
    path.write_text(json.dumps(result))
    return path


HOST = "amd-epyc-2t-24g-0035969e"  # make_result's host


def test_a_host_folder_that_links_out_of_the_store_is_refused(tmp_path):
    store, outside = tmp_path / "store", tmp_path / "outside"
    store.mkdir()
    outside.mkdir()
    (store / HOST).symlink_to(outside)
    refused(cli("submit", _result_file(tmp_path), "--store", store), f"{store / HOST}: is a symbolic link")
    assert not any(outside.iterdir())


def test_a_store_that_is_a_symlink_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "store").symlink_to(outside)
    refused(cli("submit", _result_file(tmp_path), "--store", tmp_path / "store"), "symbolic link")
    assert not any(outside.iterdir())


def test_a_filed_name_that_is_a_symlink_is_refused(tmp_path):
    store = tmp_path / "store"
    target = precious_file(tmp_path / "outside.json")
    (store / HOST).mkdir(parents=True)
    (store / HOST / "20261125T185502-amd-epyc-2t-24g-0035969e-smoke.json").symlink_to(target)
    refused(cli("submit", _result_file(tmp_path), "--store", store), "symbolic link")
    assert target.read_bytes() == PRECIOUS


@pytest.mark.parametrize("field, value, fragments", [
    ("created_utc", "2026-13-01T00:00:00Z", ["created_utc", "2026-13-01T00:00:00Z", "not a real date"]),
    ("created_utc", "2026-11-25T99:00:00Z", ["created_utc", "2026-11-25T99:00:00Z", "not a real date"]),
    ("created_utc", "2099-01-01T00:00:00Z", ["created_utc", "2099-01-01T00:00:00Z", "in the future"]),
    ("created_utc", "1999-01-01T00:00:00Z", ["created_utc", "1999-01-01T00:00:00Z", "before 2023-03-15"]),
    ("profiles__0__methods__tathe4__train_images_per_s", 1.7e308,
     ["profiles/0/methods/tathe4/train_images_per_s", "1.7e+308", "images/s"]),
    ("profiles__0__sgemm_gflops", 1e12, ["profiles/0/sgemm_gflops", "1000000000000.0", "GFLOP/s"]),
    ("profiles__0__step_time_ratio__tathe4", 1e-300, ["profiles/0/step_time_ratio/tathe4", "1e-300"]),
    ("host__memory_bytes", 2**60, ["host/memory_bytes", str(2**60), "PiB"]),
    ("wall_seconds", 1e300, ["wall_seconds", "1e+300", "seconds"]),
])
def test_submit_refuses_what_no_host_can_produce(field, value, fragments, tmp_path):
    store = tmp_path / "store"
    result = _result_file(tmp_path, **{field: value})
    refused(cli("submit", result, "--store", store), result, "invalid result file", *fragments)
    assert not any(store.rglob("*.json"))


def test_a_future_provenance_time_is_refused_and_a_real_result_is_filed(tmp_path):
    store = tmp_path / "store"
    ok = cli("submit", _result_file(tmp_path), "--store", store)
    assert ok.returncode == 0, ok.stderr
    assert [p.parent.name for p in store.rglob("*.json")] == [HOST]
    provenance = {"code": {"commit": "abc", "dirty": False, "source": "git"},
                  "versions": {"suite": "0.1", "python": "3.11", "torch": None, "onnxruntime": None},
                  "written_at": "2099-06-01T00:00:00+00:00"}
    late = _result_file(tmp_path, schema_version=2, provenance=provenance, created_utc="2026-11-26T00:00:00Z")
    refused(cli("submit", late, "--store", store), "provenance/written_at", "2099-06-01", "in the future")
    assert len(list(store.rglob("*.json"))) == 1


# ---------------------------------------------------------------------------------------------
# 3. Never delete what the suite did not write


def test_parity_over_someone_elses_compare_folder_deletes_nothing(tmp_path):
    out = tmp_path / "theirs"
    precious_file(out / "runs" / "fp32-seed0" / "history.json")
    precious_file(out / "compare.json")
    refused(cli("parity", "--synthetic", "--out", out, "--report", tmp_path / "p.md"),
            "runs, compare.json", "did not write", "--overwrite")
    assert (out / "compare.json").read_bytes() == PRECIOUS
    assert (out / "runs" / "fp32-seed0" / "history.json").read_bytes() == PRECIOUS
    assert not (tmp_path / "p.md").exists()


def test_claim_accepts_its_marker_a_proof_or_overwrite_and_removes_links_not_targets(tmp_path):
    from suite.errors import UserError
    from suite.locks import claim, marker_name, remove_owned

    out = tmp_path / "out"
    precious_file(out / "compare.json")
    with pytest.raises(UserError, match="did not write"):
        claim(out, "parity", ("runs", "compare.json"), overwrite=False)
    assert not (out / marker_name("parity")).exists()
    claim(out, "parity", ("runs", "compare.json"), overwrite=True)
    claim(out, "parity", ("runs", "compare.json"), overwrite=False)  # the marker left by the first claim
    (out / marker_name("parity")).unlink()
    precious_file(out / "parity.json")
    claim(out, "parity", ("runs", "compare.json"), overwrite=False, proof=("parity.json",))
    target = precious_file(tmp_path / "elsewhere" / "keep.txt")
    (out / "runs").symlink_to(target.parent)
    remove_owned(out / "runs")
    assert not os.path.lexists(out / "runs") and target.read_bytes() == PRECIOUS


def test_export_over_onnx_files_it_did_not_write_needs_overwrite(checkpoint, tmp_path):
    out = tmp_path / "onnx"
    precious_file(out / "int8.onnx")
    precious_file(out / "verify.json")
    args = ["export", "--checkpoint", checkpoint, "--out", out, "--calibration-images", 8, "--threads", 2]
    refused(cli(*args), "int8.onnx, verify.json", "--overwrite")
    assert (out / "int8.onnx").read_bytes() == PRECIOUS and (out / "verify.json").read_bytes() == PRECIOUS
    done = cli(*args, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (out / "int8.onnx").read_bytes() != PRECIOUS and not (out / "verify.json").exists()
    again = cli(*args)  # its own files now: no flag needed
    assert again.returncode == 0, again.stderr


def test_a_download_moves_an_incomplete_folder_aside_instead_of_deleting_it(tmp_path):
    from suite import data

    archive, md5 = data.synthetic_archive(tmp_path / "mirror", num_train=40, num_test=20)
    root = tmp_path / "data"
    mine = precious_file(root / "cifar-10-batches-py" / "my_notes.txt")
    train, _ = data.load_dataset("cifar10", root, url=archive.as_uri(), md5=md5)
    assert len(train) == 40
    assert (root / "cifar-10-batches-py.incomplete-1" / "my_notes.txt").read_bytes() == PRECIOUS
    assert not mine.exists()


# ---------------------------------------------------------------------------------------------
# 5. Plugins: found in the working directory by both entry points; a broken one is one line


PLUGIN = '''import dataclasses
from suite.methods import TATHE4, register

register(dataclasses.replace(TATHE4, name="cwdplugin4", summary="a plugin found in the working directory"))
'''
CONSOLE_SCRIPT = Path(sys.executable).with_name("q4bench")


def _entry(kind: str) -> list[str]:
    return [str(CONSOLE_SCRIPT)] if kind == "q4bench" else [sys.executable, "-m", "suite"]


def _run_entry(kind: str, cwd: Path, plugins: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "Q4BENCH_PLUGINS": plugins}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([*_entry(kind), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind", ["q4bench", "python -m suite"])
def test_a_plugin_in_the_working_directory_is_found_by_both_entry_points(kind, tmp_path):
    assert CONSOLE_SCRIPT.is_file(), "make setup installs the q4bench console script beside the interpreter"
    (tmp_path / "cwd_plugin.py").write_text(PLUGIN)
    proc = _run_entry(kind, tmp_path, "cwd_plugin", "train", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "cwdplugin4: a plugin found in the working directory" in proc.stdout


@pytest.mark.parametrize("kind", ["q4bench", "python -m suite"])
@pytest.mark.parametrize("source, fragments", [
    (None, ["'no_such_plugin_module'", "ModuleNotFoundError"]),
    ("raise RuntimeError('the plugin is broken')\n", ["'no_such_plugin_module'", "RuntimeError: the plugin is broken"]),
    ("def (:\n", ["'no_such_plugin_module'", "SyntaxError"]),
])
def test_a_missing_or_failing_plugin_is_one_line(kind, source, fragments, tmp_path):
    if source is not None:
        (tmp_path / "no_such_plugin_module.py").write_text(source)
    refused(_run_entry(kind, tmp_path, "no_such_plugin_module", "profile"), "$Q4BENCH_PLUGINS", *fragments)


# ---------------------------------------------------------------------------------------------
# 6. Command lines the code cannot serve: refused at once, in one line


@pytest.mark.parametrize("batch, fragment", [(127, "does not split evenly over 2 ranks (--ranks-per-run 2)"),
                                             (2, "BatchNorm needs 2 per rank")])
def test_compare_refuses_a_batch_its_ranks_cannot_use_before_starting_anything(batch, fragment, tmp_path):
    out = tmp_path / "cmp"
    refused(cli("compare", "--method", "tathe4", "--synthetic", "--epochs", 1, "--ranks-per-run", 2,
                "--batch-size", batch, "--out", out), f"global batch of {batch} images", fragment)
    assert not out.exists()  # no plan, no timing children


@pytest.mark.slow
def test_torchrun_with_one_image_per_rank_is_refused_on_every_rank(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "suite", "train",
                           "--synthetic", "--subset", "16", "--batch-size", "2", "--epochs", "1", "--threads", "1",
                           "--out", str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("q4bench: error:")]
    assert len(ours) == 2 and all("gives each of 2 ranks 1; BatchNorm needs 2 per rank" in line for line in ours), proc.stderr
    assert "ZeroDivisionError" not in proc.stderr and not (tmp_path / "run").exists()


def test_a_data_dir_that_cannot_take_a_download_is_one_line(tmp_path):
    if os.geteuid() == 0:  # permissions do not stop root: a sysfs folder refuses even root
        data_dir = Path("/sys")
    else:
        data_dir = tmp_path / "readonly"
        data_dir.mkdir()
        data_dir.chmod(0o555)
    refused(cli("train", "--data-dir", data_dir, "--subset", 16, "--epochs", 1, "--out", tmp_path / "run"),
            f"{data_dir} cannot take a download", "--data-dir")


# ---------------------------------------------------------------------------------------------
# 4. Edited state files: checked against suite/state_schema.json before use


@pytest.mark.parametrize("plan, fragment", [
    ({"epochs": 1, "seconds_per_image": {"fp32": 0.0, "tathe4": 0.01}, "startup_seconds": 1.0, "parallel": 1,
      "threads": 1}, "seconds_per_image/fp32: 0.0 is less than or equal to the minimum of 0"),
    ({"epochs": 1, "seconds_per_image": {"fp32": 0.01, "tathe4": 0.01}, "parallel": 1, "threads": 1},
     "'startup_seconds' is a required property"),
    ({"epochs": "1", "seconds_per_image": {"fp32": 0.01, "tathe4": 0.01}, "startup_seconds": 1.0, "parallel": 1,
      "threads": 1}, "epochs: '1' is not of type 'integer'"),
])
def test_an_edited_compare_plan_is_one_line_naming_file_and_field(plan, fragment, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--method", "tathe4", "--synthetic", "--epochs", 1, "--subset", 16, "--out", out]
    out.mkdir()
    (out / "plan.json").write_text(json.dumps(plan))
    refused(cli(*args), out / "plan.json", "invalid compare plan", fragment)


def test_an_object_array_of_predictions_and_a_mistyped_history_are_one_line(tmp_path):
    import numpy as np

    from suite.compare import read_predictions
    from suite.errors import UserError
    from suite.state import read_state

    np.save(tmp_path / "predictions.npy", np.array([1, "two", None], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match=r"predictions.npy: not a predictions file \(Object arrays"):
        read_predictions(tmp_path / "predictions.npy")
    np.save(tmp_path / "floats.npy", np.zeros(4))
    with pytest.raises(UserError, match="1-D integer array, found float64"):
        read_predictions(tmp_path / "floats.npy")
    history = {"method": "fp32", "seed": 0, "final_test_acc": "high", "epochs": [{"epoch": 1, "test_acc": 50.0}]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    with pytest.raises(UserError, match=r"history.json: invalid run history: final_test_acc: 'high' is not of type"):
        read_state(tmp_path / "history.json", "history", "run history")


def _edited_checkpoint(checkpoint: Path, tmp: Path, edit) -> Path:
    import shutil

    import torch

    run = tmp / "run"
    shutil.copytree(checkpoint.parent, run)
    (run / LOCK_NAME).unlink(missing_ok=True)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    edit(state)
    torch.save(state, run / "checkpoint.pt")
    return run / "checkpoint.pt"


CHECKPOINT_EDITS = {
    "epoch as text": (lambda s: s.update(epoch="1"), "epoch: '1' is not of type 'integer'"),
    "no method": (lambda s: s.pop("method"), "'method' is a required property"),
    "num_classes as text": (lambda s: s["arch"].update(num_classes="10"), "arch/num_classes: '10' is not of type"),
    "history without epochs": (lambda s: s["history"].pop("epochs"), "history: 'epochs' is a required property"),
    "no optimizer": (lambda s: s.pop("optimizer"), "'optimizer' is a required property"),
    "rng_state as a float tensor": (lambda s: s.update(rng_state=s["rng_state"].float()), "rng_state: torch.float32"),
}


@pytest.mark.parametrize("edit", ["epoch as text", "no method", "num_classes as text"])
def test_export_of_an_edited_checkpoint_is_one_line(edit, checkpoint, tmp_path):
    change, fragment = CHECKPOINT_EDITS[edit]
    path = _edited_checkpoint(checkpoint, tmp_path, change)
    refused(cli("export", "--checkpoint", path, "--out", tmp_path / "onnx", "--calibration-images", 8),
            path, "invalid checkpoint", fragment)
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("edit", list(CHECKPOINT_EDITS))
def test_resume_from_an_edited_checkpoint_is_one_line(edit, checkpoint, tmp_path):
    change, fragment = CHECKPOINT_EDITS[edit]
    path = _edited_checkpoint(checkpoint, tmp_path, change)
    refused(cli("train", "--method", "tathe4", "--synthetic", "--subset", 64, "--batch-size", 32, "--epochs", 2,
                "--threads", 2, "--resume", "--out", path.parent), path, "invalid checkpoint", fragment)
