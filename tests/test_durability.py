"""A kill -9 at any write, a full disk, or a second command on the same folder loses nothing.

Kills are deterministic: Q4BENCH_TEST_KILL_AT=NAME[#N] (suite/atomic.py) makes the real CLI SIGKILL itself
just before the Nth rename onto a file called NAME, i.e. with the new file complete in its temporary and the
final path still old; ":STOP" stops it there instead, so a second command meets a live writer. After every
kill, each file under the output is absent or whole, and the same command run again completes."""

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from suite import results
from suite.atomic import KILL_ENV
from suite.export import export
from suite.train import TrainConfig, train
from tests.test_results import make_result

TRAIN = ["--method", "tathe4", "--arch", "simpleresnet4bit", "--recipe", "short", "--synthetic", "--subset", "32",
         "--batch-size", "32", "--threads", "1"]
TINY_VERIFY = ["--threads", "1", "--limit", "16", "--agreement-images", "16", "--speed-rounds", "1",
               "--throughput-runs", "1", "--latency-runs", "1", "--profile-runs", "1"]
TEMP = re.compile(r"^\..+\.tmp$")


def _env(**extra) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    env.pop(KILL_ENV, None)
    return dict(env, **extra)


def q4bench(args, kill_at=None, preexec_fn=None, wait=True):
    env = _env(**({KILL_ENV: kill_at} if kill_at else {}))
    proc = subprocess.Popen([sys.executable, "-m", "suite", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def assert_whole(folder: Path) -> list[Path]:
    """Every file under folder is absent or complete; returns the temporaries a kill left (ignored by readers)."""
    temps = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if TEMP.match(path.name):
            temps.append(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif path.suffix == ".png":
            data = path.read_bytes()
            assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), path
        elif path.suffix in (".md", ".html"):
            text = path.read_text()
            assert text.rstrip().endswith("</html>") if path.suffix == ".html" else text.strip(), path
    return temps


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def stop_at(args, label: str):
    """Start the CLI and return it stopped (SIGSTOP) just before renaming onto ``label``, lock held."""
    proc = q4bench(args, kill_at=f"{label}:STOP", wait=False)
    deadline = time.monotonic() + 120
    while not _stopped(proc.pid):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"never reached {label}"
        time.sleep(0.05)
    return proc


def one_line(err: str) -> str:
    assert err.startswith("q4bench: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------
# Inputs the commands read, made in-process once (no interpreter start-up)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    train(TrainConfig(method="tathe4", arch="simpleresnet4bit", recipe="short", synthetic=True, subset=32,
                      batch_size=32, epochs=1, threads=2, out=str(run)), log=lambda *a: None)
    onnx_dir = run.parent / "onnx"
    export(run / "checkpoint.pt", onnx_dir, calibration_count=8)
    return run, onnx_dir


def _result_file(tmp_path: Path, name="r.json", **changes) -> Path:
    result = dict(make_result(), **changes)
    path = tmp_path / name
    path.write_text(json.dumps(result))
    return path


# ---------------------------------------------------------------------------------------------
# Kills


def _train_case(tmp_path, trained):
    out = tmp_path / "run"
    return [["train", *TRAIN, "--epochs", "1", "--resume", "--out", out]], out


def _export_case(tmp_path, trained):
    out = tmp_path / "onnx"
    return [["export", "--checkpoint", trained[0] / "checkpoint.pt", "--out", out, "--calibration-images", "8",
             "--threads", "1"]], out


def _verify_case(tmp_path, trained):
    out = tmp_path / "onnx"
    out.mkdir()
    for name in ("fp32", "int4", "int8"):
        (out / f"{name}.onnx").write_bytes((trained[1] / f"{name}.onnx").read_bytes())
    return [["verify-onnx", "--checkpoint", trained[0] / "checkpoint.pt", "--onnx", out, *TINY_VERIFY]], out


def _report_case(tmp_path, trained):
    out = tmp_path / "report"
    return [["report", "--runs", trained[0], "--onnx", trained[1], "--out", out]], out


def _submit_case(tmp_path, trained):
    out = tmp_path / "store"
    return [["submit", _result_file(tmp_path), "--store", out]], out


def _compare_case(tmp_path, trained):
    out = tmp_path / "cmp"
    return [["compare", "--method", "tathe4", "--synthetic", "--subset", "32", "--seeds", "1", "--epochs", "1",
             "--threads", "1", "--parallel", "2", "--out", out]], out


SUBMITTED = "20261125T185502-amd-epyc-2t-24g-0035969e-smoke.json"
LONG = pytest.mark.skipif(not os.environ.get("Q4BENCH_LONG_TESTS"),
                          reason="about 50 s; set Q4BENCH_LONG_TESTS=1 (test_compare's kill test covers compare in CI)")
KILLS = [
    # (command, kill point, files the finished command must have written)
    ("train", "checkpoint.pt", ["history.json", "checkpoint.pt", "predictions.npy"]),  # epoch done, unsaved
    ("train", "history.json", ["history.json", "checkpoint.pt", "predictions.npy"]),  # checkpoint ahead of history
    ("export", "int8.onnx", ["fp32.onnx", "int4.onnx", "int8.onnx"]),  # between the files of the set
    ("verify-onnx", "verify.json", ["verify.json"]),
    ("report", "report.html", ["report.md", "report.html", "figures/accuracy_per_epoch.png"]),  # md done, html not
    ("submit", SUBMITTED, [f"amd-epyc-2t-24g-0035969e/{SUBMITTED}"]),
    pytest.param("compare", "compare.json", ["compare.json", "runs/tathe4-seed0/history.json"], marks=LONG),
]
CASES = {"train": _train_case, "export": _export_case, "verify-onnx": _verify_case, "report": _report_case,
         "submit": _submit_case, "compare": _compare_case}


@pytest.mark.parametrize("command,point,expected", KILLS)
def test_kill_9_leaves_whole_files_and_a_rerun_completes(tmp_path, trained, command, point, expected):
    [args], out = CASES[command](tmp_path, trained)
    code, _, err = q4bench(args, kill_at=point)
    assert code == -signal.SIGKILL, err
    temps = assert_whole(out)
    assert [t.name for t in temps if t.name.startswith(f".{point}.")], "the kill point was not a rename"
    assert not list(out.rglob(point))  # a first run: the final path was never written
    if command == "submit":
        assert results.load_results([out]) == []  # the store's reader skips the temporary

    code, stdout, err = q4bench(args)  # the dead writer's lock does not block: flock died with it
    assert code == 0, err
    temps = assert_whole(out)
    for name in expected:
        assert (out / name).is_file(), name
    if command != "submit":  # a locked folder's leftovers are removed by the next writer
        assert temps == [], temps
    if command == "train":
        history = json.loads((out / "history.json").read_text())
        assert [e["epoch"] for e in history["epochs"]] == [1]
    if command == "compare":
        assert "2 runs (2 finished" in stdout  # the finished runs were kept, not retrained


@pytest.mark.slow
def test_kill_9_of_bench_at_its_result_leaves_no_result_and_a_rerun_writes_one(tmp_path):
    out = tmp_path / "results"
    # the small network: where the result is written does not depend on which network was timed
    args = ["bench", "--tier", "smoke", "--arch", "simpleresnet4bit", "--profile", "single-thread", "--no-download",
            "--out", out]
    code, _, err = q4bench(args, kill_at="*-smoke.json")
    assert code == -signal.SIGKILL, err
    temps = assert_whole(out)
    assert len(temps) == 1 and not list(out.glob("*.json"))  # the complete result in its temporary only
    code, _, err = q4bench(args)
    assert code == 0, err
    assert_whole(out)
    [written] = out.glob("*-smoke.json")
    results.validate_result(json.loads(written.read_text()), str(written))


@pytest.mark.slow
def test_kill_9_of_parity_at_its_verdict_and_a_rerun_completes(tmp_path):
    from tests.test_parity import _config

    out, report = tmp_path / "parity", tmp_path / "parity.md"
    config = _config(tmp_path)
    with open(config, "a") as f:  # the control's pairs recorded (made up), so the gate judges them instead of training it
        f.write('\n[control]\nbudget = { arch = "simpleresnet4bit", recipe = "paper", epochs = 1, train_images = 256, '
                'batch_size = 16 }\nseeds = [0, 1]\nreference_acc = [50.0, 50.0]\ncontrol_acc = [10.0, 10.0]\n'
                'measured_on = "made up for the test"\n')
    args = ["parity", "--config", config, "--synthetic", "--out", out, "--report", report]
    code, _, err = q4bench(args, kill_at="parity.json")
    assert code == -signal.SIGKILL, err
    assert not (out / "parity.json").exists() and not report.exists()
    assert_whole(out)
    code, stdout, err = q4bench(args)  # the gate starts afresh (docs/reliability.md): a dead run's lock does not block
    assert code == 0, err
    assert "parity: PASS" in stdout and report.read_text().startswith("# Parity gate: PASS")
    assert json.loads((out / "parity.json").read_text())["passed"] is True
    assert assert_whole(out) == []


# ---------------------------------------------------------------------------------------------
# Two writers


def test_a_second_train_on_a_busy_run_folder_is_refused_and_the_first_completes(tmp_path):
    out = tmp_path / "run"
    args = ["train", *TRAIN, "--epochs", "1", "--out", out]
    first = stop_at(args, "history.json")  # holds the lock, its checkpoint written, history not yet
    try:
        code, _, err = q4bench(args)
        assert code == 2
        assert f"{out} is busy: another q4bench train (pid {first.pid}, started " in one_line(err)
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert_whole(out)
    assert [e["epoch"] for e in json.loads((out / "history.json").read_text())["epochs"]] == [1]


def test_a_racing_submit_of_another_result_under_the_same_name_loses_cleanly(tmp_path):
    store = tmp_path / "store"
    clash = _result_file(tmp_path, "clash.json", wall_seconds=99.0)  # same host, time and tier: same name
    loser = stop_at(["submit", clash, "--store", store], SUBMITTED)  # checked, written, not yet linked
    try:
        assert q4bench(["submit", _result_file(tmp_path), "--store", store])[0] == 0
    finally:
        loser.send_signal(signal.SIGCONT)
    _, err = loser.communicate(timeout=60)
    assert loser.returncode == 2 and "already exists with different content" in one_line(err)
    assert assert_whole(store) == [] and [p.name for p in store.rglob("*.json")] == [SUBMITTED]
    assert json.loads((store / "amd-epyc-2t-24g-0035969e" / SUBMITTED).read_text()) == make_result()


def test_two_bench_results_of_one_second_both_land(tmp_path):
    a = results.write_new_result(tmp_path, make_result())
    b = results.write_new_result(tmp_path, dict(make_result(), wall_seconds=99.0))
    assert a.name == SUBMITTED and b.name == SUBMITTED.replace(".json", "-2.json")
    assert sorted(r["wall_seconds"] for r in results.load_results([tmp_path])) == [12.0, 99.0]


# ---------------------------------------------------------------------------------------------
# A full disk (RLIMIT_FSIZE: a write past the limit fails with EFBIG, as it would with ENOSPC)


def _file_limit(size: int):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_a_full_disk_keeps_the_last_checkpoint_and_says_so_in_one_line(tmp_path):
    from suite.data import write_synthetic

    write_synthetic(tmp_path / "data", "cifar10", num_train=32, num_test=64, seed=0)  # read, not written, below
    out = tmp_path / "run"
    # The paper recipe, whose schedule allows extending a run by an epoch.
    args = ["train", "--method", "tathe4", "--arch", "simpleresnet4bit", "--recipe", "paper", "--data-dir",
            tmp_path / "data", "--batch-size", "32", "--threads", "1", "--resume", "--out", out]
    code, _, err = q4bench([*args, "--epochs", "1"])
    assert code == 0, err
    before = (out / "history.json").read_bytes()
    # The checkpoint (about 900 KB) no longer fits; predictions (64 bytes) and history (KB) would.
    code, _, err = q4bench([*args, "--epochs", "2"], preexec_fn=_file_limit(200_000))
    assert code == 2
    assert f"{out / 'checkpoint.pt'}: cannot write: no space left on the device or over a file size limit" \
        in one_line(err)
    assert torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["epoch"] == 1
    assert (out / "history.json").read_bytes() == before
    assert assert_whole(out) == []  # the failed write's temporary is gone too


def test_a_full_disk_files_nothing_into_the_store(tmp_path):
    store = tmp_path / "store"
    code, _, err = q4bench(["submit", _result_file(tmp_path), "--store", store], preexec_fn=_file_limit(1000))
    assert code == 2 and "cannot write: no space left" in one_line(err) and SUBMITTED in err
    assert assert_whole(store) == [] and not list(store.rglob("*.json"))


def test_atomic_files_get_the_mode_open_would_give(tmp_path):
    """mkstemp creates 0600; a written result, history or report must be as readable as any new file."""
    import os

    from suite.atomic import write_json_atomic

    mask = os.umask(0o022)
    os.umask(mask)
    path = write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
