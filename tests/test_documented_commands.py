"""Every command the README (and docs/*.md) shows in a code block runs as written, from a fresh copy of the
repository (its tracked and unignored files, nothing built), as a real process. A documented line that
DOCUMENTED below does not cover fails the first test, so a new README command can never go untested; a
table entry no longer documented fails it too. Where a line's budget is too big for a test (real CIFAR-10,
150 epochs) the table says how it is shrunk; the heavy runs are marked slow."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_report import fixture_result

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
TINY = "--synthetic --subset 256 --epochs 1"


@dataclass(frozen=True)
class Run:
    """How the test runs one documented line. line: the shell line run in the copy ({data}: a synthetic
    CIFAR folder, {tmp}: a scratch folder, {venv}, {stamp}: make's setup stamp), None when it is not run
    (why says why); before: lines run first (a checkpoint for export); check: a file the run must write."""

    line: str | None
    why: str = ""
    slow: bool = False
    before: tuple[str, ...] = ()
    check: str = ""


_MAKE = "make {target} VENV={venv} STAMP={stamp}"  # the project's venv, already set up: make setup does nothing
_TRAIN = "q4bench train --method tathe4 --recipe paper --epochs 1 --subset 256 --threads 2 --data-dir {data} --out runs/x"

DOCUMENTED: dict[str, Run] = {
    # Quick start
    "make bench": Run(_MAKE.format(target="bench", venv="{venv}", stamp="{stamp}")
                      + ' BENCH_ARGS="--tier smoke --profile single-thread --out {tmp}/bench"',
                      "the smoke tier on one profile instead of the quick tier on two", slow=True, check="{tmp}/bench"),
    "make test": Run(None, "this test runs under it: `make test` is what runs this line"),
    "q4bench train --method tathe4 --recipe paper --epochs 1 --subset 5000 --threads 2 --data-dir DIR --out runs/x":
        Run(_TRAIN, "DIR: a synthetic CIFAR-10 folder; --subset 256", check="runs/x/history.json"),
    # torchrun
    "torchrun --nproc-per-node 2 -m suite train --method tathe4 --epochs 1 --synthetic --out runs/ddp":
        Run("torchrun --nproc-per-node 2 -m suite train --method tathe4 --epochs 1 --synthetic --out runs/ddp "
            "--subset 256", "--subset 256", slow=True, check="runs/ddp/history.json"),
    # Data
    ".venv/bin/pip install pillow": Run(None, "installs into the project's venv; pillow is in the test extra"),
    ".venv/bin/python ../shared/datasets/make_cifar10.py ~/.cache/q4bench":
        Run(None, "the script lies outside the repository (../shared), so a fresh copy cannot run it"),
    # compare
    "q4bench compare --method tathe4 --seeds 3 --epochs 3 --data-dir ~/.cache/q4bench --out reports/compare":
        Run(f"q4bench compare --method tathe4 --seeds 2 {TINY} --out reports/compare",
            "2 seeds, 1 epoch, synthetic data", slow=True, check="reports/compare/compare.json"),
    "q4bench compare --method tathe4 --seeds 2 --epochs 1 --synthetic --subset 512":
        Run("q4bench compare --method tathe4 --seeds 2 --epochs 1 --synthetic --subset 512", slow=True),
    ("q4bench compare --method tathe4 --arch simpleresnet4bit --recipe paper --epochs 150 --seeds 5 --data-dir "
     "~/.cache/q4bench --out reports/submitted/amd-epyc-2t-24g-e69f2aa1/simpleresnet4bit-paper150"):
        Run(f"q4bench compare --method tathe4 --arch simpleresnet4bit --recipe paper --seeds 2 {TINY} "
            "--out {tmp}/study", "2 seeds, 1 epoch, synthetic data, a scratch folder (never the committed study)",
            slow=True, check="{tmp}/study/compare.json"),
    ("q4bench compare --method tathe4 --method nvfp4-w --method mxfp4-w --method nvfp4 --method mxfp4 --arch "
     "simpleresnet4bit --recipe short --epochs 1 --seeds 3 --threads 1 --parallel 2 --data-dir ~/.cache/q4bench --out "
     "reports/submitted/HOST/fp4-simpleresnet4bit-short1"):
        Run("q4bench compare --method tathe4 --method nvfp4-w --method mxfp4-w --method nvfp4 --method mxfp4 "
            "--arch simpleresnet4bit --recipe short --seeds 2 --threads 1 --parallel 2 --synthetic --subset 128 --epochs 1 --out {tmp}/fp4",
            "2 seeds, 128 synthetic images, a scratch folder", slow=True, check="{tmp}/fp4/compare.json"),
    # a Slurm cluster
    "pip install 'q4bench[cluster]'": Run(None, "installs an extra; the test extra includes it (submitit)"),
    ("q4bench compare --method tathe4 --seeds 10 --epochs 150 --recipe paper --data-dir /shared/datasets/cifar10 "
     "--threads 4 --executor slurm --slurm-partition cpu --slurm-time 720 --slurm-account proj42 --slurm-option "
     "qos=normal --slurm-setup 'source /shared/q4bench/.venv/bin/activate' --out /shared/studies/tathe4-paper150"):
        Run(None, "needs a Slurm cluster: tests/test_executors.py builds the sbatch script submitit would submit "
                  "for it against stand-in sbatch/sacct, and runs the same study through --executor submitit-local"),
    # results as tidy data
    "q4bench results reports/submitted --format csv": Run("q4bench results reports/submitted --format csv"),
    "q4bench results reports/submitted --format json --out all.json":
        Run("q4bench results reports/submitted --format json --out all.json", check="all.json"),
    # ONNX
    "q4bench export --checkpoint RUN/checkpoint.pt --out ONNX":
        Run(None, "runs (RUN: a tiny train run) as the verify-onnx line's step before it, which reads what it wrote: "
                  "one training and export for both lines"),
    "q4bench verify-onnx --checkpoint RUN/checkpoint.pt --onnx ONNX [--data-dir D] [--threads 2]":
        Run("q4bench verify-onnx --checkpoint runs/x/checkpoint.pt --onnx {tmp}/onnx --data-dir {data} --threads 2",
            "RUN: a tiny train run, exported first", slow=True,
            before=(_TRAIN, "q4bench export --checkpoint runs/x/checkpoint.pt --out {tmp}/onnx"),
            check="{tmp}/onnx/verify.json"),
}

# Commands the README and docs give in running text (`...`), not in a code block: each must still be there.
INLINE: dict[str, Run] = {
    "q4bench profile": Run("q4bench profile"),
    "q4bench submit reports/results/FILE.json": Run("q4bench submit reports/results/FILE.json --store {tmp}/store",
                                                    "FILE.json: a generated result; a scratch store"),
    "make report": Run(_MAKE.format(target="report", venv="{venv}", stamp="{stamp}"),
                       "over the copy's committed results", slow=True, check="reports/report/report.html"),
    "q4bench report --out reports/report": Run(None, "what `make report` runs, word for word (Makefile): that "
                                                     "line's test renders the copy's committed results once"),
}

# Code blocks that are not commands, by the first word of their first line.
NOT_COMMANDS = {"suite/": "the source tree's layout", "hardware_profiles/": "the source tree's layout",
                "[slurm]": "a TOML example"}


def documented_lines() -> set[str]:
    """Each non-empty line of each fenced code block in README.md and docs/*.md, its trailing comment cut."""
    lines: set[str] = set()
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", doc.read_text(), flags=re.S | re.M):
            body = [line.strip() for line in block.splitlines() if line.strip()]
            if body and body[0].split()[0] in NOT_COMMANDS:
                continue
            lines |= {re.sub(r"\s{2,}#.*$", "", line) for line in body}
    return lines


def test_every_documented_command_is_covered():
    documented = documented_lines()
    assert sorted(documented - DOCUMENTED.keys()) == [], "documented but not in DOCUMENTED: add how to run them"
    assert sorted(DOCUMENTED.keys() - documented) == [], "in DOCUMENTED but no longer documented: remove them"
    texts = "\n".join(doc.read_text() for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    assert [c for c in INLINE if f"`{c}`" not in texts and f"({c})" not in texts] == []


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> dict[str, str]:
    """A fresh copy of the repository (tracked and unignored files only), a synthetic data folder and make's stamp."""
    root = tmp_path_factory.mktemp("checkout")
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    from suite.data import write_synthetic

    data = tmp_path_factory.mktemp("data")
    write_synthetic(data, "cifar10", num_train=300, num_test=100, seed=0)
    stamp = root / ".stamp"
    stamp.touch()  # newer than the copy's pyproject.toml: make's setup has nothing to do
    result = root / "reports" / "results" / "FILE.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    import json

    result.write_text(json.dumps(fixture_result("docs-host", "Docs CPU", "2026-01-01T00:00:00Z", 1.0)))
    return {"root": str(root), "data": str(data), "venv": str(VENV), "stamp": str(stamp)}


@pytest.fixture
def copy(checkout, tmp_path) -> dict[str, str]:
    """The checkout copied again for one command: each documented line starts from a clean tree, as a reader's
    first try would (two lines writing the same default folder do not meet)."""
    root = tmp_path / "checkout"
    shutil.copytree(checkout["root"], root, symlinks=True)
    (tmp_path / "scratch").mkdir()
    return {**checkout, "root": str(root), "stamp": str(root / ".stamp"), "tmp": str(tmp_path / "scratch")}


def _shell(line: str, places: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": places["root"], "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", line.format(**places)], cwd=places["root"], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _cases(table: dict[str, Run]):
    return [pytest.param(run, id=doc[:60], marks=[pytest.mark.slow] if run.slow else [])
            for doc, run in table.items() if run.line is not None]


@pytest.mark.parametrize("run", _cases(DOCUMENTED) + _cases(INLINE))
def test_documented_command_runs(copy, run):
    for line in run.before:
        assert _shell(line, copy, 900).returncode == 0, line
    proc = _shell(run.line, copy, 900 if run.slow else 300)
    assert proc.returncode == 0, f"{run.line}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr
    if run.check:
        assert Path(copy["root"], run.check.format(**copy)).exists(), run.check


def _subcommands() -> list[str]:
    from suite.cli import build_parser

    action = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


@pytest.mark.parametrize("sub", ["", *_subcommands()])
def test_every_subcommand_help(copy, sub):
    proc = _shell(f"q4bench {sub} --help", copy, 300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"usage: q4bench {sub}".rstrip())
