"""FracTrain's PFQ (progressive precision, loss-plateau switches) and DFQ (LSTM-gated per-input
bit widths with a cost regularizer) as fractrain-pfq and fractrain-dfq."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from suite import bench
from suite.cli import main as cli_main
from suite.methods import CptQuantizer, DfqQuantizer, PlateauIndicator, get_method
from suite.model import VGG4bit, layer_macs_per_image
from suite.train import Stepper, build_model, read_history

# --- PFQ ------------------------------------------------------------------------------------------------

FALLING = [2.0, 1.8, 1.6, 1.4, 1.2]


def test_indicator_switches_at_a_constructed_plateau_and_not_before():
    """Falling window losses, then flat at 1.0. The scale is the mean of the losses so far (1.6 after
    five windows); the 4th flat window still keeps 1.2 among the last five (|1.2 - 1.0| / scale > 0.05),
    the 5th flat window is the first whose last five are all within eps: the switch comes exactly there."""
    ind = PlateauIndicator(eps=0.05, decay=0.3, switches=3)
    fired = [ind.feed(v) for v in FALLING + [1.0] * 5]
    assert fired == [False] * 9 + [True] and ind.stage == 1
    assert ind.eps == pytest.approx(0.015)  # decayed after the 1st turning point
    # the kept losses were cleared: the next switch needs five new windows, however flat
    assert [ind.feed(1.0) for _ in range(5)] == [False] * 4 + [True] and ind.stage == 2
    assert ind.eps == pytest.approx(0.0045)  # and after the 2nd
    assert [ind.feed(1.0) for _ in range(5)] == [False] * 4 + [True] and ind.stage == 3
    assert ind.eps == pytest.approx(0.0045)  # not after the 3rd (adaptive_threshold's two cases)
    assert not any(ind.feed(1.0) for _ in range(10)) and ind.stage == 3  # no stage beyond the schedule


def test_indicator_waits_while_the_loss_still_falls():
    ind = PlateauIndicator(eps=0.05, decay=0.3, switches=3)
    # a steady fall of 0.05 per window: the last five span 0.2, over the scale (the first ten windows'
    # mean, 1.775) 0.11 > eps. (A geometric fall would end up "flat": the scale stays fixed.)
    assert not any(ind.feed(2.0 - 0.05 * i) for i in range(30))
    assert ind.stage == 0 and ind.windows == 30


def _pfq_model(window: int):
    method = dataclasses.replace(get_method("fractrain-pfq"), window=window)
    model, quantizers = build_model(method, 10, "simpleresnet4bit")
    return method, model, quantizers


def test_pfq_raises_the_bits_at_the_switch_step_and_records_it():
    method, model, quantizers = _pfq_model(window=2)
    quantized = [q for q in quantizers if isinstance(q, CptQuantizer)]
    assert len(quantized) == 6 and quantizers[-1] is None  # the last linear stays FP32
    losses = [v for v in FALLING + [1.0] * 5 for _ in range(2)]  # each window's two steps at its loss
    for step, loss in enumerate(losses):
        assert all(q.forward_bits == 3 and q.grad_bits == 6 and q.eval_bits == 3 for q in quantized), step
        method.after_step(quantizers, torch.tensor(loss), step)
    assert all(q.forward_bits == 4 and q.grad_bits == 6 and q.eval_bits == 4 for q in quantized)
    report = method.epoch_report(quantizers)["pfq"]
    assert report["stage"] == 1 and report["windows"] == 10
    assert report["switches"] == [{"stage": 1, "step": 20, "window": 10, "forward_bits": 4, "grad_bits": 6,
                                   "window_loss": 1.0}]


def test_pfq_state_is_saved_and_restored_with_the_model():
    method, model, quantizers = _pfq_model(window=1)
    for step, loss in enumerate(FALLING + [1.0] * 5 + [0.9, 0.95]):
        method.after_step(quantizers, torch.tensor(loss), step)
    state = model.state_dict()
    _, fresh, fresh_quantizers = _pfq_model(window=1)
    fresh.load_state_dict(state)
    assert method.epoch_report(fresh_quantizers) == method.epoch_report(quantizers)
    assert [q.forward_bits for q in fresh_quantizers if q is not None] == [4] * 6
    # and through torch.save with weights_only=True, as checkpoints are read
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["pfq._extra_state"]["indicator"]["stage"] == 1


# --- DFQ ------------------------------------------------------------------------------------------------


def _dfq(beta=None, target=None, arch="simpleresnet4bit", seed=0):
    method = get_method("fractrain-dfq")
    changes = {k: v for k, v in (("beta", beta), ("target_percent", target)) if v is not None}
    method = dataclasses.replace(method, **changes)
    torch.manual_seed(seed)
    model, quantizers = build_model(method, 10, arch)
    return method, model, quantizers


def test_gated_layers_are_all_but_the_first_and_last():
    for arch, gated in (("simpleresnet4bit", 5), ("vgg4bit", 6)):
        _, _, quantizers = _dfq(arch=arch)
        assert quantizers[0] is None and quantizers[-1] is None
        assert sum(isinstance(q, DfqQuantizer) for q in quantizers) == gated == len(quantizers) - 2


def test_gate_output_is_one_hot_and_gradients_reach_the_gate():
    method, model, quantizers = _dfq()
    model.train()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    loss = F.cross_entropy(model(x), y)
    gates = quantizers[1].gates
    assert len(gates.masks) == 5
    for mask in gates.masks:
        assert mask.shape == (16, 5)
        assert torch.equal(mask.detach(), F.one_hot(mask.detach().argmax(1), 5).float())  # exactly one-hot
    loss.backward()
    for name, p in gates.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name  # through the straight-through argmax
    # the regularizer's term has a gradient of its own into the gate
    model.zero_grad()
    F.cross_entropy(model(x), y)
    term = method.extra_loss(quantizers)
    assert term.shape == () and term.requires_grad
    term.backward()
    assert gates.proj.weight.grad.abs().sum() > 0


def test_choices_are_counted_per_layer_and_reported_once_per_epoch():
    method, model, quantizers = _dfq()
    model.train()
    model(torch.randn(8, 3, 32, 32))
    method.extra_loss(quantizers)
    with torch.inference_mode():  # evaluation passes are not counted
        model.eval()
        model(torch.randn(8, 3, 32, 32))
    report = method.epoch_report(quantizers)["dfq"]
    assert report["options"] == ["3/6", "4/6", "4/8", "6/8", "6/12"]
    assert list(report["chosen_per_layer"]) == ["conv2", "conv3", "conv4", "conv5", "conv6"]
    assert all(sum(row) == 8 for row in report["chosen_per_layer"].values())
    assert 3 <= report["mean_forward_bits"] <= 6 and report["mean_cp_percent"] > 0
    assert method.epoch_report(quantizers)["dfq"]["mean_forward_bits"] is None  # the counts were reset


def test_cost_term_sign_follows_the_target():
    method, model, quantizers = _dfq(target=0.0)
    model.train()
    model(torch.randn(4, 3, 32, 32))
    assert method.extra_loss(quantizers) > 0  # above target: the cost is penalised
    method, model, quantizers = _dfq(target=100.0)
    model.train()
    model(torch.randn(4, 3, 32, 32))
    assert method.extra_loss(quantizers) < 0  # below target: cost is rewarded (pulled up toward it)


def _mean_bits_after_training(beta: float) -> float:
    """12 steps of batch 8 on fixed synthetic images, a high LR for the gates' sake; the mean chosen
    forward bits over the last 6 steps."""
    method, model, quantizers = _dfq(beta=beta, target=0.0, seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.02)
    stepper = Stepper(model, method, optimizer, quantizers, total_steps=12)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    for step in range(12):
        if step == 6:
            method.epoch_report(quantizers)  # reset the counts: measure the last 8 steps
        stepper(x, y)
    return method.epoch_report(quantizers)["dfq"]["mean_forward_bits"]


def test_raising_the_cost_weight_lowers_the_chosen_bits():
    without, with_cost = _mean_bits_after_training(0.0), _mean_bits_after_training(1.0)
    assert with_cost < without - 0.3, (without, with_cost)
    assert with_cost < 3.5  # mostly the cheapest option, 3 bits


# --- both ----------------------------------------------------------------------------------------------------


def test_bitops_estimates():
    macs = layer_macs_per_image(VGG4bit())
    total = sum(macs)
    pfq, dfq = get_method("fractrain-pfq"), get_method("fractrain-dfq")
    # PFQ: equal quarters of FW/BW (3,6), (4,6), (6,8), (8,8); the last linear FP32
    stages = [(3 * 3 + 2 * 6 * 3), (4 * 4 + 2 * 6 * 4), (6 * 6 + 2 * 8 * 6), (8 * 8 + 2 * 8 * 8)]
    expected = sum((total - macs[-1]) * s / 3072 + macs[-1] for s in stages) / 4 / total
    assert pfq.bitops_ratio(macs, 1000) == pytest.approx(expected)
    # DFQ: gated layers at the 3% target, the first conv and the last linear FP32
    assert dfq.bitops_ratio(macs, 1000) == pytest.approx((0.03 * sum(macs[1:-1]) + macs[0] + macs[-1]) / total)
    costs = bench.method_costs(["fractrain-pfq", "fractrain-dfq"])
    for name in costs:
        assert costs[name]["bitops_ratio"]["method"] == "estimated" and costs[name]["kernels"].startswith("simulated")


@pytest.mark.parametrize("method", ["fractrain-pfq", "fractrain-dfq"])
def test_trains_one_epoch_through_the_cli(tmp_path, method):
    out = tmp_path / "run"
    assert cli_main(["train", "--method", method, "--arch", "simpleresnet4bit", "--synthetic", "--subset", "128",
                     "--epochs", "1", "--batch-size", "64", "--threads", "1", "--out", str(out)]) == 0
    entry = read_history(out / "history.json")["epochs"][0]
    assert math.isfinite(entry["train_loss"])
    if method == "fractrain-pfq":
        assert entry["pfq"]["stage"] == 0 and entry["pfq"]["switches"] == []  # 2 steps: no 400-step window yet
    else:
        assert all(sum(row) == 128 for row in entry["dfq"]["chosen_per_layer"].values())


@pytest.mark.slow
def test_new_methods_run_in_the_smoke_bench(tmp_path):
    """The smoke tier end to end for the two new methods whose training step differs most from the
    existing ones (SBM's custom backward, DFQ's gates and mixing); result file schema-validated."""
    from suite.results import read_result

    path = bench.run_bench(bench.BenchConfig(profiles=["single-thread"], tier="smoke", out=str(tmp_path),
                                             methods=["sbm8", "fractrain-dfq"], arch="simpleresnet4bit"),
                           log=lambda line: None)  # the small network: the methods' steps, not the VGG's, are tested
    result = read_result(path)
    entry = result["profiles"][0]
    assert entry["status"] == "ok", entry["status_detail"]
    # fp32 arms, and bf16 arms beside them where this CPU has bf16 instructions (as test_bench checks)
    arms = {"fp32", "sbm8", "fractrain-dfq"}
    assert set(entry["methods"]) in (arms, arms | {f"{a}@bf16" for a in arms})
    for name, m in entry["methods"].items():
        assert m["status"] == "ok" and m["train_images_per_s"] > 0 and m["eval_images_per_s"] > 0, name
        assert entry["step_time_ratio"][name] > 0
    for name in ("sbm8", "fractrain-dfq"):
        assert result["method_costs"][name]["bitops_ratio"]["method"] == "estimated"


@pytest.mark.parametrize("name", ["sbm4", "tathe4-rangebn", "fractrain-pfq"])
def test_bench_child_steps_the_other_new_methods(name):
    """The bench child's stepper (what the smoke tier times) for the remaining new methods."""
    from suite import bench_child

    model, stepper = bench_child._stepper(name, "vgg4bit", 10, 16, 0, steps_per_epoch=4)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    losses = [stepper(x, y)[0] for _ in range(2)]
    assert all(math.isfinite(v) for v in losses)
