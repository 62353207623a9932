"""The training loop: recipe (optimizer, schedule) + method (quantizers, clipping, projection);
history and checkpoint written atomically after every epoch; resume."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import data as datamod
from .atomic import write_atomic, write_json_atomic
from .errors import UserError
from .methods import Method, get_method, projected_parameters
from .model import ARCH_NAME, ARCHS, build_arch, check_arch, count_parameters, quant_layers


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    epochs: int
    cosine_t_max: int | None  # None: a monotone cosine over the run's epochs
    batch_size: int = 128
    eval_batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 5e-4  # decoupled (AdamW), on every parameter as in the paper's code


RECIPES = {
    "paper": Recipe(
        "paper",
        "the paper's code: AdamW lr 1e-3 wd 5e-4, batch 128, CosineAnnealingLR(T_max=100) stepped per epoch "
        "for 150 epochs, so the LR reaches 0 at epoch 101 and rises again after it (4.84e-4 by epoch 150)",
        epochs=150,
        cosine_t_max=100,
    ),
    "cosine": Recipe(
        "cosine",
        "the paper's optimizer with a monotone cosine over the run (T_max = epochs), as its own limitations "
        "section recommends",
        epochs=150,
        cosine_t_max=None,
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise UserError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None


@dataclass
class TrainConfig:
    method: str = "tathe4"
    recipe: str = "paper"
    epochs: int | None = None  # None: the recipe's
    threads: int | None = None  # None: torch's default
    seed: int = 0
    dataset: str = "cifar10"
    data_dir: str | None = None
    synthetic: bool = False
    subset: int | None = None
    batch_size: int | None = None  # None: the recipe's
    out: str = "runs/default"
    resume: bool = False
    arch: str = ARCH_NAME  # a key of model.ARCHS


# Fields that must match between a checkpoint and a --resume call (epochs may grow, threads may change).
RESUME_FIELDS = ("method", "recipe", "seed", "dataset", "synthetic", "subset", "batch_size", "arch")


def build_model(method: Method, num_classes: int, arch: str = ARCH_NAME) -> tuple[torch.nn.Module, list]:
    """The network with the method's quantizer attached to each conv and linear layer, and whatever
    the method adds to it (Method.prepare_model: Range BN, DFQ's gates, PFQ's indicator state)."""
    model = build_arch(arch, num_classes)
    layers = quant_layers(model)
    quantizers = []
    for index, (_, layer) in enumerate(layers):
        layer.quantizer = method.layer_quantizer(index, len(layers))
        quantizers.append(layer.quantizer)
    method.prepare_model(model, quantizers)
    return model, quantizers


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def make_scheduler(optimizer, recipe: Recipe, epochs: int) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.cosine_t_max or epochs, eta_min=0.0)


class Stepper:
    """One optimizer step of a method: forward, loss, backward, clip, AdamW, projection.
    Shared by the trainer and the benchmark so both time exactly the same work."""

    def __init__(self, model: torch.nn.Module, method: Method, optimizer, quantizers: list, total_steps: int):
        self.model, self.method, self.optimizer = model, method, optimizer
        self.quantizers, self.total_steps = quantizers, total_steps
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.projected = projected_parameters(self.params)
        self.step_index = 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        """Returns (loss, number of correct predictions) of the batch."""
        self.method.on_step(self.quantizers, self.step_index, self.total_steps)
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        extra = self.method.extra_loss(self.quantizers)  # DFQ's cost regularizer; None for the others
        self.optimizer.zero_grad(set_to_none=True)
        (loss if extra is None else loss + extra).backward()
        if self.method.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.method.grad_clip_norm, foreach=True)
        self.optimizer.step()
        self.method.project_(self.projected)
        self.method.after_step(self.quantizers, loss.detach(), self.step_index)  # PFQ's plateau indicator
        self.step_index += 1
        return loss.item(), int((logits.argmax(1) == labels).sum())


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: datamod.Split, batch_size: int = 100) -> float:
    """Top-1 accuracy in percent, with the method's quantizer on (eval uses the quantized weights too)."""
    model.eval()
    correct = 0
    for images, labels in datamod.batches(split, batch_size):
        correct += int((model(images).argmax(1) == labels).sum())
    return 100.0 * correct / max(len(split), 1)


@torch.no_grad()
def distinct_codes(model: torch.nn.Module) -> dict[str, int]:
    """Quantized layer name -> number of distinct integer weight codes in use (empty for FP32)."""
    out = {}
    for name, layer in quant_layers(model):
        codes = layer.quantizer.codes(layer.weight) if layer.quantizer is not None else None
        if codes is not None:
            out[name] = int(torch.unique(codes).numel())
    return out


def _epoch_seed(seed: int, epoch: int) -> int:
    # Each epoch's shuffle, augmentation and dropout depend only on (seed, epoch): resuming needs no
    # RNG replay, and an interrupted epoch reruns identically.
    return seed * 100_003 + epoch


def _progress(total: int, desc: str):
    """A tqdm bar with ETA on a terminal; nothing (plain lines are printed per epoch) otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _save_checkpoint(path: Path, model, optimizer, scheduler, epoch: int, config: TrainConfig, history: dict) -> None:
    state = {
        "arch": {"name": model.arch_name, "num_classes": model.num_classes},
        "method": config.method,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_state": torch.get_rng_state(),
        "config": dataclasses.asdict(config),
        "history": history,
    }
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, loaded with weights_only=True (a checkpoint may come from anyone)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to a user
        raise UserError(f"{path}: not a readable q4bench checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        raise UserError(f"{path}: not a q4bench checkpoint (no 'model' or 'arch' entry)")
    arch = state["arch"].get("name") if isinstance(state["arch"], dict) else None
    if arch not in ARCHS:
        raise UserError(f"{path}: checkpoint is of architecture {arch!r}, expected one of {', '.join(ARCHS)}")
    return state


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, Method, dict]:
    """(model in eval mode with the checkpoint's method attached, method, checkpoint)."""
    state = load_checkpoint(path)
    method = get_method(state["method"])
    arch = state["arch"]["name"]
    model, _ = build_model(method, int(state["arch"]["num_classes"]), arch)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"{path}: checkpoint weights do not fit {arch} ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, method, state


def _check_resume(state: dict, config: TrainConfig, path: Path) -> None:
    saved = {"arch": ARCH_NAME, **state.get("config", {})}  # checkpoints from before --arch are VGG4bit
    for field in RESUME_FIELDS:
        if saved.get(field) != getattr(config, field):
            raise UserError(
                f"{path}: cannot resume: {field} was {saved.get(field)!r}, this call asks for {getattr(config, field)!r}"
            )


def train(config: TrainConfig, on_batch: Callable[[int, int], None] | None = None, log=print) -> dict:
    """Train per config; returns the history dict (also written to OUT/history.json).

    on_batch(epoch, batch_index) is called after every step (tests use it to simulate a kill)."""
    recipe, method = get_recipe(config.recipe), get_method(config.method)
    check_arch(config.arch)  # an unknown --arch fails here, before any data is read
    epochs = config.epochs if config.epochs is not None else recipe.epochs
    batch_size = config.batch_size or recipe.batch_size
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    if config.threads is not None:
        if config.threads < 1:
            raise UserError(f"--threads must be at least 1, got {config.threads}")
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    ckpt_path, history_path = out / "checkpoint.pt", out / "history.json"
    if ckpt_path.exists() and not config.resume:
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    train_split, test_split, source = datamod.load_data(
        config.dataset, config.data_dir, config.synthetic, config.subset, config.seed
    )
    num_classes = datamod.dataset_spec(config.dataset).num_classes

    torch.manual_seed(config.seed)
    model, quantizers = build_model(method, num_classes, config.arch)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, epochs)
    steps_per_epoch = datamod.num_train_batches(len(train_split), batch_size)
    stepper = Stepper(model, method, optimizer, quantizers, total_steps=epochs * steps_per_epoch)

    history = {
        "method": method.name,
        "method_summary": method.summary,
        "arch": config.arch,
        "recipe": recipe.name,
        "recipe_summary": recipe.summary,
        "seed": config.seed,
        "threads": torch.get_num_threads(),
        "dataset": config.dataset,
        "data_source": source,
        "train_images": len(train_split),
        "test_images": len(test_split),
        "batch_size": batch_size,
        "planned_epochs": epochs,
        "parameters": count_parameters(model),
        "torch_version": str(torch.__version__),
        "epochs": [],
        "final_test_acc": None,
        "best_test_acc": None,
        "best_epoch": None,
    }
    start_epoch = 1
    if config.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        _check_resume(state, dataclasses.replace(config, batch_size=batch_size), ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_state"])
        history["epochs"] = state["history"]["epochs"]
        start_epoch = int(state["epoch"]) + 1
        stepper.step_index = (start_epoch - 1) * steps_per_epoch
        log(f"resuming {out} after epoch {state['epoch']}")
    config = dataclasses.replace(config, batch_size=batch_size)

    log(
        f"training {method.name} ({recipe.name} recipe) on {source}: {len(train_split)} train / "
        f"{len(test_split)} test images, {epochs} epochs of {steps_per_epoch} steps, {torch.get_num_threads()} threads"
    )
    for epoch in range(start_epoch, epochs + 1):
        generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
        torch.manual_seed(_epoch_seed(config.seed, epoch))  # dropout
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = _progress(steps_per_epoch, f"epoch {epoch}/{epochs}")
        start = time.perf_counter()
        for index, (images, labels) in enumerate(datamod.batches(train_split, batch_size, generator, train=True)):
            loss, right = stepper(images, labels)
            n = labels.shape[0]
            loss_sum, correct, seen = loss_sum + loss * n, correct + right, seen + n
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
            if on_batch is not None:
                on_batch(epoch, index)
        seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
        if not math.isfinite(loss_sum):
            raise RuntimeError(f"training diverged at epoch {epoch}: loss is {loss_sum}")
        test_acc = evaluate(model, test_split, recipe.eval_batch_size)
        scheduler.step()
        entry = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_acc": 100.0 * correct / seen,
            "test_acc": test_acc,
            "lr": lr,
            "seconds": seconds,
            "images_per_s": seen / seconds,
            "distinct_codes": distinct_codes(model),
            **method.epoch_report(quantizers),  # e.g. PFQ's switch points, DFQ's chosen bits per layer
        }
        history["epochs"].append(entry)
        _summarize(history)
        _save_checkpoint(ckpt_path, model, optimizer, scheduler, epoch, config, history)
        write_json_atomic(history_path, history)
        eta = (epochs - epoch) * seconds
        log(
            f"epoch {epoch}/{epochs} loss {entry['train_loss']:.4f} train {entry['train_acc']:.2f}% "
            f"test {test_acc:.2f}% lr {lr:.2e} {seconds:.1f}s {entry['images_per_s']:.0f} img/s "
            f"eta {eta / 60:.1f} min"
        )
    _summarize(history)  # also when resuming a run that had already finished
    write_json_atomic(history_path, history)
    return history


def _summarize(history: dict) -> None:
    epochs = history["epochs"]
    if not epochs:
        return
    best = max(epochs, key=lambda e: e["test_acc"])
    history["final_test_acc"] = epochs[-1]["test_acc"]
    history["best_test_acc"] = best["test_acc"]
    history["best_epoch"] = best["epoch"]


def read_history(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)
