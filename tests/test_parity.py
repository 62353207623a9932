"""q4bench parity: on synthetic data the gate trains fp32, tathe4 and a degraded control for two paired seeds
side by side and reports a verdict that follows from what it recorded (no accuracy threshold: those depend on
the host's float kernels); the verdict rules on made-up figures; the tolerance
computed from the config's seed pairs by hand; the config read strictly. The real-data gate is
`make parity` (CI, .ci/run)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from suite import methods as methodsmod
from suite.cli import main
from suite.data import load_data, write_synthetic
from suite.errors import UserError
from suite.methods import PLUGINS_ENV
from suite.parity import OnnxFigures, ParityOutcome, ParityRequest, decide, load_config, trained_controls

# 16 steps of batch 16 on 256 synthetic images with the gate's network (SimpleResNet4bit), scored on 64; broken4
# (tests/broken_methods.py: weights zeroed after every step) predicts one class for every image. The pairs in [spread] are made up: gaps 0, 2, 4 (mean 2, sd 2, n 3) with k 2
# and a false-fail rate 0.05 give 2 + t(0.95, 2) 2.91999 x 2 x sqrt(1/3 + 1/2) 0.912871 = 7.331 -> 7.5.
TEST_CONFIG = """
[gate]
reference = "fp32"
candidate = "tathe4"
control = "{control}"

[budget]
arch = "simpleresnet4bit"
recipe = "paper"
epochs = 1
train_images = 256
batch_size = 16
seeds = 2
threads = 1
parallel = 2

[tolerance]
false_fail_rate = 0.05
round_up_to = 0.5

[onnx]
files = ["fp32", "int4"]
min_top1_agreement = 99.0
test_images = 64
calibration_images = 16
speed_rounds = 1
latency_runs = 1

[spread]
command = "test fixture"
budget = {{ arch = "simpleresnet4bit", recipe = "paper", epochs = 1, train_images = 256, batch_size = 16 }}
seeds = [0, 1, 2]
reference_acc = [50.0, 50.0, 50.0]
candidate_acc = [50.0, 48.0, 46.0]
measured_on = "made up for the test"
"""


def _config(tmp_path: Path, control: str = "broken4") -> Path:
    path = tmp_path / "parity.toml"
    path.write_text(TEST_CONFIG.format(control=control))
    return path


def test_tolerance_is_computed_from_the_recorded_pairs(tmp_path):
    assert load_config(_config(tmp_path)).max_gap_points == 7.5  # the arithmetic is in the comment above


def test_gate_end_to_end_reports_what_it_measured(tmp_path, monkeypatch, capsys):
    """The whole gate on synthetic data: runs, ONNX files, parity.json, the page and the exit code.
    What two networks learn in 16 steps depends on the host's float kernels (AVX2 and AVX-512 code paths
    give other accuracies), so this asserts only what holds on every CPU: the files, that the verdict and
    the exit code follow from the accuracies the gate recorded (by the rules test_verdict_rules pins on
    constructed figures), that those accuracies are the ones in the runs' histories, and that the control,
    whose weights are zeroed after every step, predicts one class for every image."""
    monkeypatch.setenv(PLUGINS_ENV, "tests.broken_methods")  # the children register broken4
    monkeypatch.setattr(methodsmod, "METHODS", dict(methodsmod.METHODS))  # and so does this process, for now
    from tests.broken_methods import BROKEN4

    methodsmod.METHODS.setdefault(BROKEN4.name, BROKEN4)
    data = tmp_path / "data"
    write_synthetic(data, "cifar10", num_train=256, num_test=64, seed=0)
    out, report = tmp_path / "parity", tmp_path / "parity.md"
    code = main(["parity", "--config", str(_config(tmp_path)), "--data-dir", str(data), "--out", str(out),
                 "--report", str(report)])
    captured = capsys.readouterr()
    result = json.loads((out / "parity.json").read_text())
    assert result["provenance"]["code"]["commit"]  # names its code
    assert code == (0 if result["passed"] else 1), captured.err
    for name in ("fp32-seed0", "fp32-seed1", "tathe4-seed0", "tathe4-seed1", "broken4-seed0", "broken4-seed1"):
        assert (out / "runs" / name / "predictions.npy").is_file(), name
    assert (out / "compare.json").is_file()

    # The recorded accuracies are the runs' own, and the verdict is the rule applied to them.
    def final(method, seed):
        return json.loads((out / "runs" / f"{method}-seed{seed}" / "history.json").read_text())["final_test_acc"]

    for pair in result["pairs"]:
        assert pair["reference_acc"] == final("fp32", pair["seed"])
        assert pair["candidate_acc"] == final("tathe4", pair["seed"])
    tolerance = result["max_gap_points"]
    assert tolerance == 7.5  # from [spread] by the rule in test_tolerance_is_computed_from_the_recorded_pairs
    gap = sum(p["reference_acc"] - p["candidate_acc"] for p in result["pairs"]) / len(result["pairs"])
    [control] = result["controls"]
    assert control["method"] == "broken4" and control["source"] == "trained"
    control_gap = sum(p["gap"] for p in control["pairs"]) / len(control["pairs"])
    onnx_ok = all(f["top1_agreement"] >= 99.0 for f in result["onnx"] if f["file"] in ("fp32", "int4"))
    assert result["passed"] == (gap <= tolerance and control_gap > tolerance and onnx_ok)
    assert f"tathe4 mean gap {gap:+.2f} points over 2 seed pair(s) (tolerance 7.50)" in captured.out
    page = report.read_text()
    assert page.startswith(f"# Parity gate: {'PASS' if result['passed'] else 'FAIL'}")
    assert "int4.onnx" in page and "-> **7.50 points**" in page
    assert "- Sensitivity (derived from the measured spread" in page and "A regression gate" in page
    assert result["false_fail_rate_at_measured_spread"] < 0.05
    assert set(result["fail_probability_if_worse_by"]) == {"0.5", "1", "2"}

    # broken4 predicts one class for every test image on any CPU, so its accuracy is that class's share.
    labels = load_data("cifar10", str(data), False, None, 0)[1].labels.numpy()
    for seed in (0, 1):
        predictions = np.load(out / "runs" / f"broken4-seed{seed}" / "predictions.npy", allow_pickle=False)
        assert len(set(predictions.tolist())) == 1
        share = 100.0 * float(np.mean(labels == predictions[0]))
        assert final("broken4", seed) == pytest.approx(share)
    if control_gap > tolerance:
        assert "fails as it must" in captured.out and "the gate fails it, as it must" in page


def _outcome(tmp_path: Path, gaps, control_gaps=(), agreement: float = 100.0) -> ParityOutcome:
    pairs = [{"seed": s, "reference_acc": 50.0, "candidate_acc": 50.0 - g, "gap": g} for s, g in enumerate(gaps)]
    control = [{"seed": s, "reference_acc": 50.0, "candidate_acc": 50.0 - g, "gap": g}
               for s, g in enumerate(control_gaps)]
    return ParityOutcome(
        config=load_config(_config(tmp_path)), candidate="tathe4", data="fixture", pairs=pairs, train_images=256,
        test_images=64, epochs=1, controls={"broken4": control} if control else {},
        onnx=[OnnxFigures("fp32", 100.0, 1e-6, 40.0, 1), OnnxFigures("int4", agreement, 1e-6, 40.0, 1),
              OnnxFigures("int8", 90.0, 0.1, 40.0, 1)],  # int8 is reported, not gated
        onnx_test_images=64,
    )


def test_verdict_rules(tmp_path):
    # Tolerance 7.5; the gate judges the mean over its seeds.
    assert decide(_outcome(tmp_path, [7.0, 8.0], [30.0, 30.0])) == []  # mean 7.5: on the line passes
    assert decide(_outcome(tmp_path, [-20.0, -10.0])) == []  # a candidate better than the reference passes
    [reason] = decide(_outcome(tmp_path, [7.0, 8.2]))
    assert "mean accuracy gap 7.60 points over 2 seed pair(s)" in reason and "tolerance of 7.50" in reason
    [reason] = decide(_outcome(tmp_path, [1.0, 1.0], [7.0, 7.4]))
    assert "the degraded control broken4 passed (mean gap 7.20 <= tolerance 7.50" in reason
    [reason] = decide(_outcome(tmp_path, [0.0, 0.0], agreement=98.0))
    assert "int4.onnx top-1 agreement with PyTorch 98.00% is below 99.00%" in reason


def test_config_errors_name_file_and_field(tmp_path):
    path = _config(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("epochs = 1\ntrain", 'epochs = "one"\ntrain'))
    with pytest.raises(UserError, match=r"parity.toml \[budget\]: key 'epochs' must be an integer from 1 to 10,000, got 'one'$"):
        load_config(path)
    path.write_text(text.replace("train_images = 256\nbatch", "train_images = 512\nbatch"))
    with pytest.raises(UserError, match=r"measured at another budget than \[budget\] \(train_images differ\)"):
        load_config(path)
    path.write_text(text.replace('control = "broken4"', 'control = "broken4"\nmax_gap_points = 2.0'))
    with pytest.raises(UserError, match=r"'max_gap_points' is computed from \[spread\]"):
        load_config(path)
    path.write_text(text.replace("seeds = [0, 1, 2]", "seeds = [0]").replace("[50.0, 50.0, 50.0]", "[50.0]")
                    .replace("[50.0, 48.0, 46.0]", "[50.0]"))
    with pytest.raises(UserError, match="at least 2 measured seed pairs, got 1"):
        load_config(path)
    path.write_text("[gate]\n")
    with pytest.raises(UserError, match=r"\[gate\]: missing key 'reference'; add reference = <text>$"):
        load_config(path)
    with pytest.raises(UserError, match="parity config not found"):
        load_config(tmp_path / "absent.toml")


def test_repository_config_rests_on_a_measured_spread():
    config = load_config(Path(__file__).resolve().parents[1] / "parity.toml")
    spread = config.spread
    assert len(spread.seeds) >= 6, "the tolerance rests on at least 6 measured seed pairs"
    assert config.control is not None and config.near_control is not None and config.budget.seeds >= 2
    assert config.max_gap_points >= sum(spread.gaps) / len(spread.gaps)
    # The gate trains new pairs, not the measured ones again.
    assert not set(config.budget.seed_numbers) & set(spread.seeds)


def test_repository_gate_fails_the_measured_control_and_passes_the_measured_candidate():
    """The gate's teeth on real numbers: with the tolerance parity.toml computes, the measured tathe4 seeds taken
    k at a time as the gate takes them pass at the 1% rule's design rate or better, the gate catches a tathe4
    2 points worse than measured almost surely, and the degraded control's measured accuracies fail by far."""
    import itertools

    from suite.parity import decide

    config = load_config(Path(__file__).resolve().parents[1] / "parity.toml")
    tol = config.max_gap_points
    gaps = config.spread.gaps
    k = config.budget.seeds
    means = [sum(c) / k for c in itertools.combinations(gaps, k)]
    assert sum(m > tol for m in means) / len(means) <= 0.05
    assert config.fail_probability(0.0) <= config.rule.false_fail_rate
    assert config.fail_probability(2.0) >= 0.95
    control = config.recorded_control.pairs()
    assert min(p["gap"] for p in control) > tol + 3  # "at least 3 points worse", with room
    pairs = [{"seed": s, "reference_acc": r, "candidate_acc": c, "gap": r - c}
             for s, r, c in zip(config.spread.seeds, config.spread.reference_acc, config.spread.candidate_acc)][:k]
    outcome = ParityOutcome(config=config, candidate="tathe4", data="parity.toml", pairs=pairs, train_images=50000,
                            test_images=10000, epochs=1, controls={config.control: control}, recorded_controls=(config.control,),
                            onnx=[OnnxFigures("fp32", 100.0, 0.0, 70.0, 1), OnnxFigures("int4", 100.0, 0.0, 70.0, 1)],
                            onnx_test_images=2000)
    assert decide(outcome) == []
    failing = ParityOutcome(config=config, candidate="tathe4-2bit", data="parity.toml", pairs=control[:k],
                            train_images=50000, test_images=10000, epochs=1,
                            onnx=outcome.onnx, onnx_test_images=2000)
    reasons = decide(failing)
    assert len(reasons) == 1 and f"exceeds the tolerance of {tol:.2f}" in reasons[0]


def test_which_controls_a_gate_run_trains():
    """The default trains no control whose pairs the config records (they are judged instead); "near" trains the
    near-threshold one, "all" both; a control is never trained as its own control; a control without recorded
    pairs is always trained, so a gate run always judges both."""
    config = load_config(Path(__file__).resolve().parents[1] / "parity.toml")
    assert set(config.recorded) == {config.control, config.near_control}
    assert ParityRequest(synthetic=True).controls == "recorded"
    assert trained_controls(config, "recorded", "tathe4") == ()
    assert trained_controls(config, "near", "tathe4") == (config.near_control,)
    assert trained_controls(config, "all", "tathe4") == (config.control, config.near_control)
    assert trained_controls(config, "all", config.control) == (config.near_control,)
    unrecorded_near = dataclasses.replace(config, recorded_near_control=None)
    assert trained_controls(unrecorded_near, "recorded", "tathe4") == (config.near_control,)
    nothing_recorded = dataclasses.replace(unrecorded_near, recorded_control=None)
    assert trained_controls(nothing_recorded, "near", "tathe4") == (config.control, config.near_control)
    with pytest.raises(UserError, match="--controls 'some': choose one of recorded, near, all"):
        ParityRequest(synthetic=True, controls="some")


def test_the_recorded_controls_are_judged_and_fail_the_repository_gate():
    """Judged from parity.toml's records by its own tolerance, both controls fail the gate, each named as
    recorded, while the measured tathe4 pairs pass."""
    from suite.parity import _outcome

    config = load_config(Path(__file__).resolve().parents[1] / "parity.toml")
    pairs = [{"seed": s, "reference_acc": r, "candidate_acc": c, "gap": r - c}
             for s, r, c in zip(config.spread.seeds, config.spread.reference_acc, config.spread.candidate_acc)]
    doc = {"comparisons": [{"candidate": "tathe4", "pairs": pairs[: config.budget.seeds]}], "data_source": "made up",
           "budget": {"train_images": 50000, "test_images": 10000}}
    outcome = _outcome(config, doc, "tathe4", ())
    assert outcome.recorded_controls == (config.control, config.near_control)
    assert list(outcome.controls) == [config.control, config.near_control]
    outcome.onnx, outcome.onnx_test_images = [OnnxFigures("fp32", 100.0, 0.0, 70.0, 1),
                                              OnnxFigures("int4", 100.0, 0.0, 70.0, 1)], 2000
    assert decide(outcome) == []
    tol = config.max_gap_points
    assert all(gap > tol for gap in outcome.control_gaps.values())
    assert outcome.control_gaps[config.near_control] < 2 * tol  # near the threshold, as its name says
