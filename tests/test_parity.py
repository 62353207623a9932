"""q4bench parity on synthetic data: the gate fails, with the reason, on a method that destroys its weights,
and its config file is read strictly. The real-data gate is `make parity` (CI, .ci/run)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from suite import methods as methodsmod
from suite.cli import main
from suite.data import write_synthetic
from suite.errors import UserError
from suite.methods import TatheMethod
from suite.parity import OnnxFigures, ParityOutcome, decide, load_config

# Small enough for a test (16 steps of batch 16, 64 test images), large enough that fp32 learns the
# synthetic classes well above chance (about 55% here) while the broken method stays at one class.
TEST_CONFIG = """
[gate]
reference = "fp32"
candidate = "{candidate}"
max_gap_points = {max_gap}

[budget]
recipe = "paper"
epochs = 1
train_images = 256
batch_size = 16
seed = 0
threads = 2

[onnx]
files = ["fp32", "int4"]
min_top1_agreement = 99.0
test_images = 64
calibration_images = 16
speed_rounds = 1
latency_runs = 1
"""


@dataclasses.dataclass(frozen=True)
class WeightDestroyingMethod(TatheMethod):
    """Deliberately broken: tathe4 whose post-step projection zeroes every conv and linear weight, so the
    network predicts one class whatever it sees. Exists only inside this test."""

    def project_(self, params: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p in params:
                p.zero_()


def _config(tmp_path: Path, candidate: str = "tathe4", max_gap: float = 5.0) -> Path:
    path = tmp_path / "parity.toml"
    path.write_text(TEST_CONFIG.format(candidate=candidate, max_gap=max_gap))
    return path


def test_parity_fails_on_a_gap_over_tolerance(tmp_path, monkeypatch, capsys):
    broken = WeightDestroyingMethod("broken4", "test only: zeroes the weights after every step", projection="tanh")
    monkeypatch.setitem(methodsmod.METHODS, "broken4", broken)
    data = tmp_path / "data"
    write_synthetic(data, "cifar10", num_train=256, num_test=64, seed=0)
    out, report = tmp_path / "parity", tmp_path / "parity.md"
    with pytest.raises(SystemExit) as exit_info:
        main(["parity", "--config", str(_config(tmp_path, "broken4")), "--data-dir", str(data),
              "--out", str(out), "--report", str(report)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "FAIL: accuracy gap" in err and "exceeds the tolerance of 5.00 points" in err
    page = report.read_text()
    assert page.startswith("# Parity gate: FAIL") and "records no seed spread" in page
    # The export of a weightless network still verifies: the gap alone failed the gate.
    assert "int4.onnx" in page and "ONNX export/verify" not in err
    assert (out / "parity.json").is_file() and (out / "runs" / "broken4" / "history.json").is_file()
    assert json.loads((out / "parity.json").read_text())["provenance"]["code"]["commit"]  # names its code


def _outcome(tmp_path: Path, gap: float, agreement: float = 100.0) -> ParityOutcome:
    return ParityOutcome(
        config=load_config(_config(tmp_path)), data="fixture", reference_acc=50.0, candidate_acc=50.0 - gap,
        reference_best=50.0, candidate_best=50.0 - gap, train_images=256, test_images=64, epochs=1,
        onnx=[OnnxFigures("fp32", 100.0, 1e-6, 40.0, 1), OnnxFigures("int4", agreement, 1e-6, 40.0, 1),
              OnnxFigures("int8", 90.0, 0.1, 40.0, 1)],  # int8 is reported, not gated
        onnx_test_images=64,
    )


def test_verdict_rules(tmp_path):
    assert decide(_outcome(tmp_path, 4.9)) == []
    assert decide(_outcome(tmp_path, -20.0)) == []  # a candidate better than the reference passes
    [reason] = decide(_outcome(tmp_path, 5.1))
    assert "exceeds the tolerance" in reason
    [reason] = decide(_outcome(tmp_path, 0.0, agreement=98.0))
    assert "int4.onnx top-1 agreement with PyTorch 98.00% is below 99.00%" in reason


def test_config_errors_name_file_and_field(tmp_path):
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("epochs = 1", 'epochs = "one"'))
    with pytest.raises(UserError, match=r"parity.toml \[budget\]: field 'epochs' must be int"):
        load_config(path)
    path.write_text("[gate]\n")
    with pytest.raises(UserError, match=r"\[gate\]: missing field 'reference'"):
        load_config(path)
    with pytest.raises(UserError, match="parity config not found"):
        load_config(tmp_path / "absent.toml")


def test_repository_config_rests_on_a_measured_spread():
    config = load_config(Path(__file__).resolve().parents[1] / "parity.toml")
    spread = config.spread
    assert spread is not None and len(spread.seeds) >= 3
    assert config.max_gap_points >= max(spread.gaps), "the tolerance must cover every measured seed"
    assert config.budget.train_images <= 20_000 and config.budget.epochs == 1  # CI's 15 minutes on 2 cores
