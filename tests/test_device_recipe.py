"""Device and precision as run dimensions, and the converged short recipe: the per-step schedule, label
smoothing, flip TTA, the predictions file, the bf16 path and the CUDA refusal on a machine without a GPU."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from suite import data, recipes
from suite.cli import main as cli_main
from suite.device import Placement
from suite.errors import UserError
from suite.methods import get_method
from suite.recipes import RECIPES
from suite.train import TrainConfig, WarmupCosine, build_model, get_recipe, train


def _quiet(*args, **kwargs):
    pass


def _config(tmp_path, **kw):
    base = dict(method="tathe4", recipe="short", epochs=2, threads=1, seed=0, synthetic=True, subset=256,
                batch_size=64, out=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


def test_warmup_cosine_by_hand():
    schedule = WarmupCosine(total_steps=100, warmup_steps=10)
    assert schedule(0) == pytest.approx(0.1)  # the first step already moves: (0+1)/10
    assert schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)  # the cosine starts at its peak
    assert schedule(55) == pytest.approx(0.5)  # half way through the 90 cosine steps: 0.5(1 + cos(pi/2))
    assert schedule(100) == 0.0  # after the last step
    values = [schedule(t) for t in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone after the warm-up


def test_short_recipe_reaches_zero_at_the_budget_and_records_tta_and_predictions(tmp_path):
    history = train(_config(tmp_path), log=_quiet)
    recipe = get_recipe("short")
    steps = 2 * data.num_train_batches(256, 64)  # 8 optimizer steps
    warmup = round(recipe.warmup_fraction * steps)
    expected_first_lr = recipe.lr * (1 / warmup if warmup else 1.0)
    assert history["epochs"][0]["lr"] == pytest.approx(expected_first_lr)
    # the LR the optimizer holds after the run's last step is 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert history["recipe_settings"]["label_smoothing"] == 0.1
    # the epochs the schedule spans (2 here), not the recipe's default budget (5)
    assert history["recipe_settings"]["epochs"] == history["planned_epochs"] == 2 != recipe.epochs
    assert history["device"] == "cpu" and history["precision"] == "fp32"
    assert history["provenance"]["code"]["commit"]
    for entry in history["epochs"]:
        assert entry["test_acc_tta"] is not None and 0 <= entry["test_acc_tta"] <= 100
    predictions = np.load(tmp_path / "run" / "predictions.npy", allow_pickle=False)
    assert predictions.dtype == np.uint8 and predictions.shape == (history["test_images"],)
    # the stored predictions are the final epoch's: their accuracy is the history's final accuracy
    labels = _synthetic_test_labels(tmp_path)
    assert 100.0 * float((torch.from_numpy(predictions.astype(np.int64)) == labels).float().mean()) == pytest.approx(
        history["final_test_acc"]
    )


def _synthetic_test_labels(tmp_path):
    train_split, test_split, _ = data.load_data("cifar10", None, True, 256, 0)
    return test_split.labels


def test_short_recipe_cannot_resume_with_another_budget(tmp_path):
    train(_config(tmp_path, epochs=1), log=_quiet)
    with pytest.raises(UserError, match="laid out for 1 epochs"):
        train(_config(tmp_path, epochs=2, resume=True), log=_quiet)


def test_paper_recipe_is_unchanged():
    paper = RECIPES["paper"]
    assert (paper.lr, paper.cosine_t_max, paper.per_step, paper.label_smoothing, paper.flip_tta) == (
        1e-3, 100, False, 0.0, False)


def test_recipes_are_read_without_torch():
    """The CLI's help, compare's checks and the report read the recipes; none of them should pay for torch."""
    probe = ("import sys; from suite.recipes import RECIPES, get_recipe; "
             "print(sorted(RECIPES), get_recipe('short').lr, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["['cosine',", "'paper',", "'short']", "0.002", "False"]
    assert RECIPES is recipes.RECIPES and get_recipe is recipes.get_recipe  # one home, importable from train too


def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here")
    code = cli_main(["train", "--synthetic", "--epochs", "1", "--device", "cuda", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--device cuda" in err and "no CUDA GPU" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("option,value", [("--device", "tpu"), ("--precision", "fp8")])
def test_unknown_device_or_precision_is_refused(tmp_path, capsys, option, value):
    code = cli_main(["train", "--synthetic", "--epochs", "1", option, value, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and value in err and option in err


def test_bf16_forward_weights_keep_at_most_15_values():
    """Under autocast the conv casts codes x scale to bf16: a function of 15 inputs has at most 15 outputs,
    and the weights the convolution really receives are checked here, captured from inside F.conv2d."""
    torch.manual_seed(0)
    model, _ = build_model(get_method("tathe4"), 10)
    seen = []
    original = torch.nn.functional.conv2d

    def spy(x, w, *args, **kwargs):
        seen.append(w.detach().clone())
        return original(x, w, *args, **kwargs)

    torch.nn.functional.conv2d = spy
    try:
        with Placement("cpu", "bf16").autocast():
            out = model(torch.randn(2, 3, 32, 32))
    finally:
        torch.nn.functional.conv2d = original
    assert out.dtype == torch.bfloat16
    assert len(seen) == 6
    for w in seen:
        assert torch.unique(w.to(torch.bfloat16)).numel() <= 15


# bf16 tests train the small network: autocast and what the run says of it do not depend on the network, and
# where bf16 is emulated (AVX2 CPUs) the paper's VGG is far slower.
SMALL = "simpleresnet4bit"


@pytest.mark.slow
def test_bf16_training_runs_and_says_how_it_ran(tmp_path):
    lines = []
    history = train(_config(tmp_path, precision="bf16", recipe="paper", epochs=1, subset=128, arch=SMALL),
                    log=lines.append)
    assert history["precision"] == "bf16"
    assert history["precision_support"].startswith(("native", "emulated"))
    if history["precision_support"].startswith("emulated"):
        assert any("emulated" in line for line in lines)
    assert math.isfinite(history["epochs"][0]["train_loss"])
    # master weights stay fp32
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state["model"].values())
    assert all(2 <= n <= 15 for n in history["epochs"][0]["distinct_codes"].values())


def test_short_recipe_peak_lr_keeps_15_codes_and_bounded_weights():
    """The tanh step's equilibrium |w| grows as lr^(1/3); at the short recipe's peak LR a layer still uses
    its 15 codes and max|W| stays far inside the +-3 bound (docs/method.md: about (27 lr)^(1/3) = 0.38)."""
    from suite.train import StepOptions, Stepper, make_optimizer

    torch.manual_seed(0)
    recipe = get_recipe("short")
    method = get_method("tathe4")
    model, quantizers = build_model(method, 10)
    optimizer = make_optimizer(model, recipe)  # constant peak LR: the worst case
    stepper = Stepper(model, method, optimizer, quantizers, total_steps=40,
                      options=StepOptions(label_smoothing=recipe.label_smoothing))
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    for _ in range(40):
        stepper(images, labels)
    from suite.train import distinct_codes

    codes = distinct_codes(model)
    assert min(codes.values()) >= 13 and max(codes.values()) == 15
    assert max(float(p.detach().abs().max()) for p in stepper.projected) < 1.5


def test_cpu_batches_draw_the_same_numbers_as_per_batch_augmentation():
    """The epoch's draws are made up front (one transfer for a GPU); on the CPU they equal the per-batch draws."""
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8)
    split = data.Split(images, torch.arange(300))
    got = [x for x, _ in data.batches(split, 128, g1, train=True)]
    order = torch.randperm(300, generator=g2)
    for i, start in enumerate(range(0, 300, 128)):
        index = order[start : start + 128]
        expected = data.normalize(data.augment(images[index], g2))
        assert torch.equal(got[i], expected)


@pytest.mark.slow
def test_bf16_on_a_cpu_without_bf16_instructions_says_emulated(tmp_path, monkeypatch):
    """What a user on an AVX2-only CPU sees: the run goes ahead, one line says bf16 is emulated, and the history
    records it (the flags are read from /proc/cpuinfo; here they are replaced by an AVX2-only set)."""
    import suite.device as device

    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "fma"})
    assert Placement("cpu", "bf16").precision_support().startswith("emulated (no avx512_bf16/amx_bf16")
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert Placement("cpu", "bf16").precision_support() == "native (amx_bf16)"
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2"})
    lines = []
    history = train(_config(tmp_path, precision="bf16", recipe="paper", epochs=1, subset=128, arch=SMALL),
                    log=lines.append)
    notes = [line for line in lines if line.startswith("note: bf16 is emulated")]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert any(line.startswith("training") and "emulated" in line for line in lines)  # the plan line says it too
    assert history["precision_support"].startswith("emulated")
