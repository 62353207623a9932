"""q4bench compare: seeds pair across methods; a tiny synthetic compare prints its plan, survives a
SIGKILL and finishes on rerun without retraining a finished run; the folder's identity and lock; the plan's
--hours arithmetic; one-line errors for bad options."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from suite import compare as comparemod
from suite import train as trainmod
from suite.cli import main as cli_main
from suite.compare import CompareRequest, check_identity, makespan, validate, validate_result
from suite.errors import UserError
from suite.locks import hold

# The recipe every compare test trains with; 32 images (one step) and the 256 synthetic test images, on the
# small network: what these tests check (plan, resume, files, statistics) does not depend on the network, and
# the paper's VGG is compared end to end by the documented commands' tests.
RECIPE = "short"
ARCH = "simpleresnet4bit"
TINY = ["--synthetic", "--subset", "32", "--seeds", "2", "--epochs", "1", "--threads", "1", "--parallel", "2",
        "--recipe", RECIPE, "--arch", ARCH]


class _Stop(Exception):
    pass


def _first_step(monkeypatch, method: str, seed: int, tmp_path) -> tuple[dict, torch.Tensor]:
    """The initial state_dict and the first training batch of a real train() call, caught in flight."""
    caught = {}
    build = trainmod.build_model

    def build_and_keep(*args, **kwargs):
        model, quantizers = build(*args, **kwargs)
        caught["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        return model, quantizers

    def first_batch(self, images, labels):
        caught["images"] = images.clone()
        raise _Stop

    monkeypatch.setattr(trainmod, "build_model", build_and_keep)
    monkeypatch.setattr(trainmod.Stepper, "__call__", first_batch)
    config = trainmod.TrainConfig(method=method, recipe=RECIPE, epochs=1, threads=1, seed=seed, synthetic=True,
                                  subset=64, out=str(tmp_path / f"{method}-{seed}"))
    with pytest.raises(_Stop):
        trainmod.train(config, log=lambda line: None)
    return caught["state"], caught["images"]


def test_seed_k_of_every_method_starts_alike(monkeypatch, tmp_path):
    """What makes seeds pairs: the same initial weights and the same first (shuffled, augmented) batch."""
    state_a, images_a = _first_step(monkeypatch, "fp32", 3, tmp_path)
    state_b, images_b = _first_step(monkeypatch, "tathe4", 3, tmp_path)
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert torch.equal(images_a, images_b)
    _, images_c = _first_step(monkeypatch, "fp32", 4, tmp_path)  # another seed: another batch
    assert not torch.equal(images_a, images_c)


def _no_child_left(out: Path) -> bool:
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(out) in part for part in proc.info["cmdline"] or []):
                return False
        except psutil.Error:
            continue
    return True


def test_compare_end_to_end_survives_a_kill(tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "suite", "compare", "--method", "tathe4", *TINY, "--out", str(out)]
    log = open(tmp_path / "first.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    runs = out / "runs"
    try:
        deadline = time.monotonic() + 120
        while not list(runs.glob("*/wall.json")):  # the parent records a run when its child has exited
            assert time.monotonic() < deadline, "no run finished in 120 s"
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    first = (tmp_path / "first.log").read_text()
    assert "q4bench compare plan:" in first and "4 runs (0 finished, 0 to resume, 4 to start)" in first
    assert "2 children in parallel" in first and "estimated time:" in first
    finished = {p.parent.name: p.parent.joinpath("history.json").read_bytes() for p in runs.glob("*/wall.json")}
    # The children die with the compare (no orphan keeps writing into the folder the rerun resumes).
    deadline = time.monotonic() + 10
    while not _no_child_left(out):
        assert time.monotonic() < deadline, "a child outlived the killed compare"
        time.sleep(0.2)

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    # At least the runs recorded before the kill count as finished (another may have ended in between).
    assert int(re.search(r"4 runs \((\d) finished", done.stdout).group(1)) >= len(finished) >= 1
    for name, history in finished.items():
        assert (runs / name / "history.json").read_bytes() == history, f"{name} was retrained"
        assert json.loads((runs / name / "wall.json").read_text())["attempts"] == 1
        assert f"starting {name}" not in done.stdout and f"resuming {name}" not in done.stdout

    doc = json.loads((out / "compare.json").read_text())
    validate_result(doc)
    assert doc["schema"] == "q4bench-compare/1" and doc["reference"] == "fp32" and doc["margin_points"] == 0.5
    assert doc["arch"] == ARCH
    assert doc["budget"] == {"recipe": RECIPE, "epochs": 1, "train_images": 32, "test_images": 256,
                             "batch_size": doc["budget"]["batch_size"], "hours": None}
    assert sorted((r["method"], r["seed"]) for r in doc["runs"]) == [("fp32", 0), ("fp32", 1), ("tathe4", 0),
                                                                      ("tathe4", 1)]
    for run in doc["runs"]:
        preds = np.load(out / run["predictions"], allow_pickle=False)
        assert preds.dtype == np.uint8 and preds.shape == (256,)
        assert json.loads((out / run["history"]).read_text())["final_test_acc"] == run["final_test_acc"]
    [comparison] = doc["comparisons"]
    by = {(r["method"], r["seed"]): r["final_test_acc"] for r in doc["runs"]}
    gaps = [by[("fp32", s)] - by[("tathe4", s)] for s in (0, 1)]
    assert [p["gap"] for p in comparison["pairs"]] == pytest.approx(gaps)
    assert comparison["mean_gap"] == pytest.approx(sum(gaps) / 2) and comparison["n_seeds"] == 2
    assert all(sum(p["discordant"]) <= 256 for p in comparison["pairs"])
    summary = f"tathe4 vs fp32: gap {comparison['mean_gap']:+.2f} points"
    assert summary in done.stdout and f"-> {comparison['verdict']}" in done.stdout


def test_first_seed_counts_runs_trained_beforehand_and_refuses_foreign_ones(tmp_path, capsys):
    """--first-seed 7 --seeds 1: the pair is seed 7; runs `q4bench train` made there count, untouched; a
    finished folder from another seed or recipe is refused in one line instead of being compared."""
    out = tmp_path / "cmp"
    for method in ("fp32", "tathe4"):
        trainmod.train(trainmod.TrainConfig(method=method, recipe=RECIPE, epochs=1, threads=1, seed=7, synthetic=True,
                                            subset=32, arch=ARCH, out=str(out / "runs" / f"{method}-seed7")),
                       log=lambda _: None)
    before = {m: (out / "runs" / f"{m}-seed7" / "history.json").read_bytes() for m in ("fp32", "tathe4")}
    args = ["compare", "--method", "tathe4", "--synthetic", "--subset", "32", "--seeds", "1", "--first-seed", "7",
            "--epochs", "1", "--threads", "1", "--parallel", "2", "--recipe", RECIPE, "--arch", ARCH, "--out", str(out)]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "seeds 7..7: 2 runs (2 finished, 0 to resume, 0 to start)" in printed
    assert all((out / "runs" / f"{m}-seed7" / "history.json").read_bytes() == before[m] for m in before)
    doc = json.loads((out / "compare.json").read_text())
    assert [p["seed"] for p in doc["comparisons"][0]["pairs"]] == [7]
    assert sorted(r["seed"] for r in doc["runs"]) == [7, 7]
    # The same folder with another first seed is another study.
    assert cli_main([*args[:-2], "--out", str(out), "--first-seed", "8"]) == 2
    assert "holds a compare with first_seed = 7; this command asks for 8" in capsys.readouterr().err
    # A run folder whose history says another seed is not this compare's run.
    history = json.loads(before["tathe4"])
    history["seed"] = 3
    (out / "runs" / "tathe4-seed7" / "history.json").write_text(json.dumps(history))
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "tathe4-seed7/history.json: seed is 3, this compare needs 7" in err and err.count("\n") == 1


def test_a_folder_from_before_first_seed_resumes(tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    check_identity(out, _request(tmp_path))
    saved = json.loads((out / "request.json").read_text())
    del saved["first_seed"]
    (out / "request.json").write_text(json.dumps(saved))
    check_identity(out, _request(tmp_path))  # no first_seed recorded meant seeds from 0
    with pytest.raises(UserError, match=r"first_seed = 0; this command asks for 5"):
        check_identity(out, _request(tmp_path, first_seed=5))


def _request(tmp_path, **kw) -> CompareRequest:
    base = dict(methods=("tathe4",), seeds=2, epochs=1, recipe=RECIPE, synthetic=True, subset=32, threads=1,
                parallel=2, out=str(tmp_path / "cmp"))
    base.update(kw)
    return validate(CompareRequest(**base))


def test_another_command_on_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    check_identity(out, _request(tmp_path))
    check_identity(out, _request(tmp_path, seeds=3, margin=1.0, parallel=1))  # more seeds, another margin: fine
    with pytest.raises(UserError, match=r"holds a compare with epochs = 1; this command asks for 2"):
        check_identity(out, _request(tmp_path, seeds=3, epochs=2))
    with pytest.raises(UserError, match=r"holds a compare with methods = \['tathe4'\]"):
        check_identity(out, _request(tmp_path, seeds=3, methods=("tathe4-notanh",)))
    with pytest.raises(UserError, match=r"holds a compare with seeds = 3; this command asks for 2"):
        check_identity(out, _request(tmp_path))  # fewer seeds than recorded


def test_a_busy_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    with hold(out, "compare"):
        code = cli_main(["compare", "--method", "tathe4", *TINY, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"{out} is busy: another q4bench compare (pid {os.getpid()}, started " in err
    assert "is writing it; wait for it or choose another --out" in err
    assert err.count("\n") == 1


def test_hours_become_epochs_from_the_measured_step_time(tmp_path, monkeypatch):
    # 0.01 s per image for both methods; 1000 train + 300 test images: 0.01 * (1000 + 300/3) = 11 s per
    # run-epoch; 4 runs on 2 children: 22 s per epoch of all runs. 0.05 h = 180 s, less 2 start-ups of 2 s
    # (4 runs, 2 at a time) = 176 s -> 8 epochs (176 s); the estimate adds the start-ups back: 180 s = 3.0 min.
    monkeypatch.setattr(comparemod, "measure_step_times",
                        lambda req, out, batch, log: ({"fp32": 0.01, "tathe4": 0.01}, 2.0))
    req = _request(tmp_path, epochs=None, hours=0.05)
    out = tmp_path / "cmp"
    out.mkdir()
    plan = comparemod.make_plan(req, out, (1000, 300, 128), log=lambda line: None)
    assert plan["epochs"] == 8
    lines = "\n".join(comparemod.plan_lines(req, plan, (1000, 300), 128, out / "runs"))
    assert "--hours 0.05 -> 8 epoch(s) per run: one epoch of all runs takes 22 s" in lines
    assert "estimated time: 3.0 min" in lines
    # The plan is kept: a rerun does not re-time (the lambda would give the same, a new timing need not).
    monkeypatch.setattr(comparemod, "measure_step_times", lambda *a: pytest.fail("re-timed"))
    assert comparemod.make_plan(req, out, (1000, 300, 128), log=lambda line: None)["epochs"] == 8
    (out / "plan.json").unlink()
    monkeypatch.setattr(comparemod, "measure_step_times", lambda req, out, batch, log: ({"fp32": 1.0, "tathe4": 1.0}, 2.0))
    with pytest.raises(UserError, match=r"--hours 0.05 is too short: one epoch of all 4 runs takes about 0.61 h"):
        comparemod.make_plan(req, out, (1000, 300, 128), log=lambda line: None)


def test_makespan():
    assert makespan([3, 1, 1, 1], 2) == 3  # 3 | 1+1+1
    assert makespan([2, 2, 2], 2) == 4 and makespan([], 2) == 0 and makespan([5], 1) == 5


def test_schema_rejects_a_malformed_result():
    with pytest.raises(UserError, match=r"^c/compare.json: invalid compare result: \(top level\): '\w+' is a "
                                        r"required property \(and \d+ more\)$"):
        validate_result({"schema": "q4bench-compare/1"}, "c/compare.json")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "2", "--epochs", "1"], "--method is required"),
        (["--method", "nope", "--epochs", "1"], "--method/--reference: unknown method 'nope'"),
        (["--method", "fp32", "--epochs", "1"], "--method fp32: it is the reference"),
        (["--method", "tathe4"], "exactly one of --epochs E or --hours H"),
        (["--method", "tathe4", "--epochs", "1", "--hours", "1"], "exactly one of --epochs E or --hours H"),
        (["--method", "tathe4", "--epochs", "0"], "argument --epochs: must be from 1 to 10,000, got 0"),
        (["--method", "tathe4", "--hours", "-1"], "argument --hours: must be a number in (0, 8760], got -1"),
        (["--method", "tathe4", "--epochs", "1", "--seeds", "0"], "argument --seeds: must be from 1 to 1,000, got 0"),
        (["--method", "tathe4", "--epochs", "1", "--first-seed", "-1"], "argument --first-seed: must be from 0 to"),
        (["--method", "tathe4", "--epochs", "1", "--device", "tpu"], "--device 'tpu' is not one of: cpu, cuda"),
        (["--method", "tathe4", "--epochs", "1", "--precision", "fp16"], "--precision 'fp16' is not one of: fp32, bf16"),
        (["--method", "tathe4", "--epochs", "1", "--margin", "0"], "argument --margin: must be a number in (0, 100], got 0"),
        (["--method", "tathe4", "--epochs", "1", "--parallel", "0"], "argument --parallel: must be from 1 to 1,024, got 0"),
        (["--method", "tathe4", "--epochs", "1", "--subset", "1"], "argument --subset: must be from 2 to 50,000, got 1"),
        (["--method", "tathe4", "--epochs", "1", "--recipe", "nope"], "--recipe: unknown recipe 'nope'"),
        (["--method", "tathe4", "--epochs", "1", "--data-dir", "/nonexistent/q4"], "--data-dir /nonexistent/q4: no CIFAR-10"),
    ],
)
def test_bad_options_are_one_line_errors(args, message, tmp_path, capsys):
    if "--data-dir" not in args:
        args = [*args, "--synthetic"]
    assert cli_main(["compare", *args, "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    prefix = "q4bench compare: error: " if message.startswith("argument ") else "q4bench: error: "
    assert err.startswith(prefix) and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "cmp").exists()  # refused before anything was written
