"""A long study outlives the machine it started on: its run folders are committed under reports/submitted, and
a clean checkout on another host (another commit, another data folder) resumes it with the same compare
command, every epoch naming the host and commit that trained it. And the repository stays small enough to
carry them."""

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from suite import data as datamod
from suite import provenance
from suite.measure import host
from suite.cli import main
from suite.distributed import World
from suite.provenance import COMMIT_ENV
from suite.train import EpochTotals, RunData, RunSettings, Scores, TrainConfig, Trainer, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
# No tracked file may exceed this: a SimpleResNet4bit checkpoint with its optimizer is ~0.9 MB and may be
# committed with its study; a VGG4bit one (~39 MB) must never be.
MAX_TRACKED_BYTES = 2_000_000

STUDY = ["--method", "tathe4", "--arch", "simpleresnet4bit", "--recipe", "paper", "--epochs", "2", "--seeds", "1",
         "--synthetic", "--subset", "64", "--batch-size", "32"]


class _StopAfterFirstEpoch(Exception):
    pass


def _first_epoch_elsewhere(out: Path, method: str, monkeypatch) -> None:
    """Epoch 1 of a 2-epoch run as if trained on another host, under another commit; then 'the machine goes'."""
    real = host.host_fingerprint()
    monkeypatch.setattr(host, "host_fingerprint",
                        lambda: {**real, "host_id": "other-host-00000000", "cpu_model": "Other CPU"})
    monkeypatch.setenv(COMMIT_ENV, "a" * 40)
    provenance.code_version.cache_clear()

    def stop(epoch: int, index: int) -> None:
        if epoch == 2:
            raise _StopAfterFirstEpoch

    config = TrainConfig(method=method, arch="simpleresnet4bit", recipe="paper", epochs=2, seed=0, synthetic=True,
                         subset=64, batch_size=32, threads=1, out=str(out))
    try:
        train(config, on_batch=stop, log=lambda *a, **k: None)
    except _StopAfterFirstEpoch:
        pass
    monkeypatch.undo()
    provenance.code_version.cache_clear()


def test_a_study_begun_on_one_host_resumes_on_another_with_both_recorded(tmp_path, monkeypatch, capsys):
    study = tmp_path / "reports" / "submitted" / "other-host-00000000" / "simpleresnet4bit-paper2"
    for method in ("fp32", "tathe4"):
        _first_epoch_elsewhere(study / "runs" / f"{method}-seed0", method, monkeypatch)
        assert len(json.loads((study / "runs" / f"{method}-seed0" / "history.json").read_text())["epochs"]) == 1

    monkeypatch.setenv(COMMIT_ENV, "b" * 40)  # the children of this compare: this host, another commit
    assert main(["compare", *STUDY, "--out", str(study)]) == 0, capsys.readouterr().err
    here = host.host_fingerprint()["host_id"]
    for method in ("fp32", "tathe4"):
        history = json.loads((study / "runs" / f"{method}-seed0" / "history.json").read_text())
        first, second = (e["trained_on"] for e in history["epochs"])
        assert (first["host_id"], first["cpu_model"], first["commit"]) == ("other-host-00000000", "Other CPU", "a" * 40)
        assert (second["host_id"], second["commit"]) == (here, "b" * 40)
        assert history["resumed_from"][-1]["after_epoch"] == 1
    doc = json.loads((study / "compare.json").read_text())
    assert doc["arch"] == "simpleresnet4bit"
    assert {h["host_id"] for h in doc["trained_on"]} == {"other-host-00000000", here}


def test_an_unfinished_study_is_resumed_by_the_same_command_after_another_arch_is_refused(tmp_path, capsys):
    study = tmp_path / "study"
    assert main(["compare", *STUDY, "--out", str(study)]) == 0
    other = [a if a != "simpleresnet4bit" else "vgg4bit" for a in STUDY]
    assert main(["compare", *other, "--out", str(study)]) == 2
    assert "holds a compare with arch = 'simpleresnet4bit'" in capsys.readouterr().err


def test_no_tracked_file_is_too_big_for_the_repository():
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    sizes = {name: (ROOT / name).stat().st_size for name in listed.decode().split("\0")
             if name and (ROOT / name).is_file()}
    too_big = {name: size for name, size in sizes.items() if size > MAX_TRACKED_BYTES}
    assert not too_big, f"tracked files over {MAX_TRACKED_BYTES:,} bytes: {too_big}"


def test_ignore_rules_admit_small_study_checkpoints_only():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path]).returncode == 0

    assert not ignored("reports/submitted/h/simpleresnet4bit-paper150/runs/fp32-seed0/checkpoint.pt")
    assert not ignored("reports/submitted/h/any-study/runs/fp32-seed0/history.json")
    assert ignored("reports/submitted/h/vgg4bit-paper150/runs/fp32-seed0/checkpoint.pt")
    assert ignored("runs/x/checkpoint.pt") and ignored("reports/compare/runs/fp32-seed0/history.json")


def test_every_committed_compare_result_names_files_in_the_repository():
    """Evidence that can be checked: each run a committed compare.json uses has its history and predictions
    committed beside it."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "reports/submitted"], capture_output=True,
                            text=True, check=True).stdout.split()
    tracked = set(listed)
    results = [name for name in listed if name.endswith("/compare.json")]
    assert results, "no committed compare result found"
    for name in results:
        doc = json.loads((ROOT / name).read_text())
        folder = Path(name).parent
        for run in doc["runs"]:
            for key in ("history", "predictions"):
                path = (folder / run[key]).as_posix()
                assert path in tracked, f"{name} names {run[key]}, which is not committed"


def test_the_committed_study_checkpoints_resume_with_this_code(tmp_path):
    """A study's checkpoints, written by whichever commit trained them, restore into this code's Trainer: every
    tensor as saved, the LR schedule where it stopped, the history continued; and what this code would write
    next has the same fields in the same order. The weights do not depend on the images, so synthetic data of
    the same dataset stands in for the real set (a whole real epoch would take minutes)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "reports/submitted/*/checkpoint.pt"],
                            capture_output=True, text=True, check=True).stdout.split()
    if not listed:
        pytest.skip("no study checkpoint is committed")
    for name in listed:
        out = tmp_path / name.replace("/", "_")
        out.mkdir()
        for file in ("checkpoint.pt", "history.json"):
            shutil.copy(ROOT / Path(name).parent / file, out / file)
        with torch.random.fork_rng():
            _check_restores(out)


def _check_restores(out: Path) -> None:
    state = load_checkpoint(out / "checkpoint.pt", resumable=True)
    on_disk = json.loads((out / "history.json").read_text())
    assert on_disk["epochs"] == state["history"]["epochs"], "the history beside the checkpoint is of another epoch"
    config = TrainConfig(**{**state["config"], "out": str(out), "resume": True})
    settings = RunSettings.resolve(config, World())
    train_split, test_split, source = datamod.load_data(config.dataset, None, True, 64, config.seed)
    data = RunData(train_split, test_split, test_split, source, datamod.dataset_spec(config.dataset).num_classes)
    trainer = Trainer(settings, data, log=lambda line: None)
    trainer.restore(state)

    epoch = state["epoch"]
    assert trainer.first_epoch == epoch + 1
    for key, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, state["model"][key]), key
    assert trainer.scheduler.state_dict() == state["scheduler"]
    assert torch.equal(torch.get_rng_state(), state["rng_state"])
    recipe = settings.recipe
    if not recipe.per_step:  # the epoch-stepped cosine, where the study stopped
        t_max = recipe.cosine_t_max or settings.epochs
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(
            recipe.lr * 0.5 * (1 + math.cos(math.pi * epoch / t_max)), rel=1e-9)
    history = trainer.history
    assert history["epochs"] == on_disk["epochs"] and history["provenance"] == on_disk["provenance"]
    assert [r["after_epoch"] for r in history["resumed_from"]] == (
        [r["after_epoch"] for r in on_disk.get("resumed_from", [])] + [epoch])
    assert list(history) == [*on_disk, *(["resumed_from"] if "resumed_from" not in on_disk else [])]

    written = trainer.checkpoint(epoch)
    assert list(written) == list(state) and list(written["config"]) == list(state["config"])
    entry = trainer.epoch_entry(epoch + 1, EpochTotals(1e-4, 1.0, 1, 1, 1.0), Scores(torch.zeros(0), 50.0, None))
    assert list(entry) == list(on_disk["epochs"][-1])
