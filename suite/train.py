"""The training loop: recipe (optimizer, schedule) + method (quantizers, clipping, projection);
history and checkpoint written atomically after every epoch; resume."""

from __future__ import annotations

import contextlib
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
from .provenance import stamp
from .spec import CHECKPOINT_FILE, FULL_PRECISION, HISTORY_FILE, PAPER_RECIPE, PREDICTIONS_FILE, REFERENCE_4BIT
from .userfiles import check_output_dir
from .bounds import check_count, check_optional_count
from .config import check_data_source
from .errors import UserError
from .state import check_state
from .locks import hold
from .device import Placement
from . import distributed as dist_mod
from .distributed import World
from .methods import Method, get_method, projected_parameters
from .model import ARCH_NAME, ARCHS, build_arch, check_arch, count_parameters, quant_layers
from .recipes import Recipe, get_recipe
from .threads import torch_threads


@dataclass
class TrainConfig:
    method: str = REFERENCE_4BIT
    recipe: str = PAPER_RECIPE
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
    device: str = "cpu"  # cpu | cuda
    precision: str = FULL_PRECISION  # fp32 | bf16 (autocast around forward and loss)
    arch: str = ARCH_NAME  # a key of model.ARCHS

    def __post_init__(self):  # the library API gets the CLI's ranges too (suite.bounds)
        for name in ("epochs", "threads", "subset", "batch_size"):
            check_optional_count(getattr(self, name), name)
        check_count(self.seed, "seed")
        check_data_source(self.data_dir, self.synthetic)


# Fields that must match between a checkpoint and a --resume call (epochs may grow for epoch-stepped recipes,
# threads and device may change).
RESUME_FIELDS = ("method", "recipe", "seed", "dataset", "synthetic", "subset", "batch_size", "precision", "arch")


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
    # On CUDA the fused kernel: the same AdamW update in one launch instead of dozens (same math, other rounding).
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, fused=fused or None)


def make_scheduler(optimizer, recipe: Recipe, epochs: int, steps_per_epoch: int = 1):
    """Epoch-stepped recipes: CosineAnnealingLR (T_max from the recipe or the run). Per-step recipes: LambdaLR
    over epochs * steps_per_epoch optimizer steps, linear warm-up then cosine, 0 after the last step."""
    if not recipe.per_step:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.cosine_t_max or epochs, eta_min=0.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(epochs * steps_per_epoch, round(recipe.warmup_fraction * epochs * steps_per_epoch))
    )


@dataclass(frozen=True)
class WarmupCosine:
    """LR multiplier at optimizer step t: (t+1)/warmup during the warm-up, then 0.5(1 + cos(pi p)) with p the
    share of the remaining steps done; exactly 0 at t = total_steps (after the last step)."""

    total_steps: int
    warmup_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps  # the first step already moves
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class StepOptions:
    """How a Stepper's steps run beyond the model and its optimizer: the loss's label smoothing, the device and
    precision, and the ranks of a torchrun job (defaults: none, fp32 on the CPU, one process)."""

    label_smoothing: float = 0.0
    placement: Placement | None = None
    world: World | None = None


class Stepper:
    """One optimizer step of a method: forward, loss, backward, clip, AdamW, projection (and the LR
    schedule when it moves per step). Shared by the trainer and the benchmark so both time exactly the
    same work."""

    def __init__(self, model: torch.nn.Module, method: Method, optimizer, quantizers: list, total_steps: int,
                 scheduler=None, options: StepOptions = StepOptions()):
        # model may be DistributedDataParallel-wrapped: its forward then all-reduces gradients in backward.
        self.model, self.method, self.optimizer = model, method, optimizer
        self.world = options.world or World()
        self.quantizers, self.total_steps = quantizers, total_steps
        self.label_smoothing = options.label_smoothing
        self.placement = options.placement or Placement("cpu", FULL_PRECISION)
        self.scheduler = scheduler  # stepped here only for per-step schedules
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.projected = projected_parameters(self.params)
        self.step_index = 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (loss, number of correct predictions) of the batch as 0-d tensors on the model's device:
        no host sync here, so a GPU runs ahead (float() them to wait for the step)."""
        self.method.on_step(self.quantizers, self.step_index, self.total_steps)
        with self.placement.autocast():
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        extra = self.method.extra_loss(self.quantizers)  # DFQ's cost regularizer; None for the others
        self.optimizer.zero_grad(set_to_none=True)
        (loss if extra is None else loss + extra).backward()
        if self.method.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.method.grad_clip_norm, foreach=True)
        self.optimizer.step()
        self.method.project_(self.projected)
        if self.scheduler is not None:
            self.scheduler.step()
        step_loss = loss.detach()
        if self.method.uses_step_loss:  # PFQ's plateau indicator: every rank must see the same, global loss
            step_loss = dist_mod.mean_over_ranks(self.world, step_loss)
        self.method.after_step(self.quantizers, step_loss, self.step_index)
        self.step_index += 1
        return loss.detach(), (logits.argmax(1) == labels).sum()


@torch.inference_mode()
def predict(model: torch.nn.Module, split: datamod.Split, batch_size: int = 100,
            placement: Placement | None = None, flip_tta: bool = False) -> torch.Tensor:
    """Top-1 class of every image of the split (on the CPU, int64), with the method's quantizer on (eval
    uses the quantized weights too). flip_tta: the class of the summed logits of the image and its mirror."""
    placement = placement or Placement("cpu", FULL_PRECISION)
    model.eval()
    out = []
    with placement.autocast():
        for images, _ in datamod.batches(split, batch_size):
            logits = model(images)
            if flip_tta:
                logits = logits.float() + model(images.flip(3)).float()
            out.append(logits.argmax(1))
    return torch.cat(out).cpu() if out else torch.empty(0, dtype=torch.int64)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * int((predictions == labels.cpu()).sum()) / max(labels.shape[0], 1)


def evaluate(model: torch.nn.Module, split: datamod.Split, batch_size: int = 100,
             placement: Placement | None = None) -> float:
    """Top-1 accuracy in percent, with the method's quantizer on."""
    return accuracy(predict(model, split, batch_size, placement), split.labels)


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


def load_checkpoint(path: str | Path, resumable: bool = False) -> dict:
    """A checkpoint dict, loaded with weights_only=True (a checkpoint may come from anyone) and checked against
    state_schema.json (with everything --resume restores when ``resumable``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'not a file' if path.exists() else 'checkpoint not found'} (expected a checkpoint.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to a user
        raise UserError(f"{path}: not a readable q4bench checkpoint ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})") from None
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        raise UserError(f"{path}: not a q4bench checkpoint (no 'model' or 'arch' entry)")
    arch = state["arch"].get("name") if isinstance(state["arch"], dict) else None
    if arch not in ARCHS:
        raise UserError(f"{path}: checkpoint is of architecture {arch!r}, expected one of {', '.join(ARCHS)}")
    check_state(state, "resumable" if resumable else "checkpoint", path, "checkpoint")
    _check_tensors(state, path)
    return state


def _check_tensors(state: dict, path: Path) -> None:
    """The RNG state torch restores, which the schema cannot see (the weights may hold a module's extra state
    beside its tensors: whether they fit is for load_state_dict to say)."""
    rng = state.get("rng_state", torch.zeros(0, dtype=torch.uint8))
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        raise UserError(f"{path}: invalid checkpoint: rng_state: {getattr(rng, 'dtype', type(rng).__name__)}, "
                        f"expected a torch.uint8 tensor")


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


def train(config: TrainConfig, on_batch: Callable[[int, int], None] | None = None, log=print,
          world: World | None = None) -> dict:
    """Train per config; returns the history dict (also written to OUT/history.json by rank 0). Torch's thread
    count is the caller's again afterwards, also when training fails.

    on_batch(epoch, batch_index) is called after every step (tests use it to simulate a kill). world: the
    ranks of a torchrun job (default: read from the environment; one process when not under torchrun)."""
    world = world or dist_mod.world_from_env()
    settings = RunSettings.resolve(config, world)
    log = log if world.is_main else _quiet
    try:
        with (torch_threads(_thread_count(config, world)), dist_mod.process_group(world),
              settings.placement.numerics(), contextlib.ExitStack() as held):
            return Trainer.open(settings, held, log).fit(on_batch)
    except dist_mod.PeerLost as exc:
        raise UserError(f"rank {world.rank} of {world.size}: another rank of the job died or became unreachable "
                        f"({exc}); {settings.out} keeps the last finished epoch: rerun the same torchrun command with "
                        f"--resume") from None
    except dist_mod.StoppedByLauncher:
        raise UserError(f"rank {world.rank} of {world.size}: stopped by torchrun, which ends every rank when one "
                        f"fails; {settings.out} keeps the last finished epoch: rerun the same command with --resume") from None


def _thread_count(config: TrainConfig, world: World) -> int | None:
    """--threads, else for a torchrun rank its share of the cores (torchrun's OMP_NUM_THREADS=1 would leave cores
    idle), else None: torch's own choice."""
    if config.threads is not None:
        return config.threads
    if world.distributed:
        from .profiles import usable_cpus

        return dist_mod.threads_per_rank(world, usable_cpus())
    return None


def _quiet(*args, **kwargs) -> None:
    """Ranks other than 0 print nothing: one job, one log."""


@dataclass(frozen=True)
class RunSettings:
    """One run's settings with the recipe's defaults filled in (config.epochs and config.batch_size are set),
    the recipe, method, device and ranks they name, and the run folder's files."""

    config: TrainConfig
    recipe: Recipe
    method: Method
    placement: Placement
    world: World

    @classmethod
    def resolve(cls, config: TrainConfig, world: World) -> RunSettings:
        """The settings, or a one-line error for a bad name or a batch the ranks cannot split, before any work."""
        recipe, method = get_recipe(config.recipe), get_method(config.method)
        check_arch(config.arch)  # an unknown --arch fails here, before any data is read
        placement = Placement(config.device, config.precision)
        epochs = config.epochs if config.epochs is not None else recipe.epochs
        # `is None`, not `or`: a batch size of 0 once trained silently at the recipe's 128 (now refused above).
        batch_size = config.batch_size if config.batch_size is not None else recipe.batch_size
        dist_mod.local_batch_size(batch_size, world)
        resolved = dataclasses.replace(config, epochs=epochs, batch_size=batch_size)
        return cls(resolved, recipe, method, placement, world)

    @property
    def epochs(self) -> int:
        return self.config.epochs

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_FILE

    @property
    def history_path(self) -> Path:
        return self.out / HISTORY_FILE

    @property
    def predictions_path(self) -> Path:
        return self.out / PREDICTIONS_FILE


def _open_on_main(settings: RunSettings, held: contextlib.ExitStack) -> dict | None:
    """Rank 0 takes OUT's lock for the run's lifetime (one writer per run folder, suite.locks), decides whether
    OUT may be written and, on --resume, reads the checkpoint; every rank gets the verdict (the same one-line
    error everywhere) and the state. Other ranks never touch OUT: on several machines it need not be shared."""
    verdict: tuple[str | None, dict | None] = (None, None)
    if settings.world.is_main:
        try:
            check_output_dir(settings.out, "--out")
            held.enter_context(hold(settings.out, "train"))
            verdict = (None, _read_resume_state(settings))
        except UserError as exc:
            verdict = (str(exc), None)
    error, state = dist_mod.broadcast_from_main(settings.world, verdict)
    if error is not None:
        raise UserError(error)
    return state


def _read_resume_state(settings: RunSettings) -> dict | None:
    config, out, ckpt_path, epochs = settings.config, settings.out, settings.checkpoint_path, settings.epochs
    if ckpt_path.exists() and not config.resume:
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if not (config.resume and ckpt_path.exists()):
        return None
    state = load_checkpoint(ckpt_path, resumable=True)
    _check_resume(state, config, ckpt_path)
    saved_epochs = state.get("config", {}).get("epochs")
    if settings.recipe.per_step and saved_epochs is not None and saved_epochs != epochs:
        raise UserError(f"{ckpt_path}: cannot resume with --epochs {epochs}: the {settings.recipe.name} recipe's LR "
                        f"schedule was laid out for {saved_epochs} epochs")
    world, saved_world = settings.world, int(state.get("world_size", 1))
    if saved_world != world.size:
        raise UserError(f"{ckpt_path}: cannot resume on {world.size} process(es): the run was trained on "
                        f"{saved_world}, and the ranks' share of each batch (and so BatchNorm's statistics) depends "
                        f"on it; start torchrun with --nproc-per-node x --nnodes = {saved_world}")
    return state


@dataclass(frozen=True)
class RunData:
    """The run's data on its device: the training set, the test set, and the share of it this rank scores."""

    train: datamod.Split
    test: datamod.Split
    eval_part: datamod.Split
    source: str
    num_classes: int

    @classmethod
    def load(cls, settings: RunSettings) -> RunData:
        config, world, device = settings.config, settings.world, settings.placement.torch_device
        train_split, test_split, source = datamod.load_data(
            config.dataset, config.data_dir, config.synthetic, config.subset, config.seed
        )
        train_split, test_split = train_split.to(device), test_split.to(device)
        eval_part = test_split.part(*dist_mod.eval_share(world.rank, world.size, len(test_split)))
        return cls(train_split, test_split, eval_part, source, datamod.dataset_spec(config.dataset).num_classes)


@dataclass(frozen=True)
class EpochTotals:
    """One epoch of training, summed over the ranks."""

    lr: float  # the LR the epoch began at
    loss: float  # summed over the images
    correct: int
    seen: int
    seconds: float


@dataclass(frozen=True)
class Scores:
    """The test set scored after an epoch."""

    predictions: torch.Tensor  # top-1 class per test image, on the CPU
    test_acc: float
    tta_acc: float | None  # with flip test-time augmentation, when the recipe asks for it


class Trainer:
    """One run's state in one object: its settings and data, the model with its optimizer, LR schedule and
    stepper, the history, and the first epoch still to train. open() builds it fresh or restored from OUT's
    checkpoint; fit() trains the remaining epochs, each one train_epoch, score, save_epoch."""

    def __init__(self, settings: RunSettings, data: RunData, log: Callable[[str], None]):
        self.settings, self.data, self.log = settings, data, log
        self.precision_support = settings.placement.precision_support()
        if self.precision_support.startswith("emulated"):
            log(f"note: bf16 is {self.precision_support}; the run goes ahead and is recorded as emulated")
        torch.manual_seed(settings.config.seed)
        self.model, self.quantizers = build_model(settings.method, data.num_classes, settings.config.arch)
        self.model.to(settings.placement.torch_device)
        self.optimizer = make_optimizer(self.model, settings.recipe)
        self.steps_per_epoch = datamod.num_train_batches(len(data.train), settings.batch_size, settings.world.size)
        self.scheduler = make_scheduler(self.optimizer, settings.recipe, settings.epochs, self.steps_per_epoch)
        self.history = self.new_history()
        self.trained_on = _trained_on()
        self.first_epoch = 1
        self.stepper: Stepper | None = None  # start_stepper(): after a restore, which DDP's wrap must follow

    @classmethod
    def open(cls, settings: RunSettings, held: contextlib.ExitStack, log: Callable[[str], None]) -> Trainer:
        """OUT checked and locked (rank 0, held until ``held`` closes), the data read, the model built and, on
        --resume, restored from the checkpoint."""
        state = _open_on_main(settings, held)
        trainer = cls(settings, RunData.load(settings), log)
        if state is not None:
            trainer.restore(state)
        trainer.start_stepper()
        return trainer

    def new_history(self) -> dict:
        settings, data, placement, world = self.settings, self.data, self.settings.placement, self.settings.world
        recipe, method = settings.recipe, settings.method
        return {
            "method": method.name,
            "method_summary": method.summary,
            "arch": settings.config.arch,
            "recipe": recipe.name,
            "recipe_summary": recipe.summary,
            "recipe_settings": dataclasses.asdict(dataclasses.replace(recipe, epochs=settings.epochs)),  # the epochs its schedule spans
            "seed": settings.config.seed,
            "threads": torch.get_num_threads(),
            "device": placement.device,
            "device_name": placement.device_name(),
            "precision": placement.precision,
            "precision_support": self.precision_support,
            "dataset": settings.config.dataset,
            "data_source": data.source,
            "train_images": len(data.train),
            "test_images": len(data.test),
            "batch_size": settings.batch_size,
            "planned_epochs": settings.epochs,
            "parameters": count_parameters(self.model),
            "torch_version": str(torch.__version__),
            "cuda_version": torch.version.cuda if placement.device == "cuda" else None,
            "provenance": stamp(),
            "world_size": world.size,  # processes (ranks) of a torchrun job; 1 alone
            "distributed": _distributed_record(world, settings.batch_size) if world.distributed else None,
            "epochs": [],
            "final_test_acc": None,
            "best_test_acc": None,
            "best_epoch": None,
        }

    def restore(self, state: dict) -> None:
        """Weights, optimizer, schedule and RNG from a checkpoint; its epochs continue the history, which records
        where this call resumed and keeps the provenance of the run's start."""
        try:  # the schema checked the fields' types; whether the tensors fit this model only loading tells
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng_state"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{self.settings.checkpoint_path}: cannot resume from this checkpoint ({type(exc).__name__}: "
                            f"{(str(exc).splitlines() or [''])[0]})") from None
        saved, history = state["history"], self.history
        history["epochs"] = saved["epochs"]
        history["resumed_from"] = saved.get("resumed_from", []) + [
            {"after_epoch": int(state["epoch"]), "provenance": history["provenance"]}
        ]
        history["provenance"] = saved.get("provenance", history["provenance"])
        self.first_epoch = int(state["epoch"]) + 1
        self.log(f"resuming {self.settings.out} after epoch {state['epoch']}")

    def start_stepper(self) -> None:
        settings, recipe = self.settings, self.settings.recipe
        trained = dist_mod.wrap(self.model, settings.world)  # after loading: DDP starts every rank from rank 0's weights
        self.stepper = Stepper(trained, settings.method, self.optimizer, self.quantizers,
                               total_steps=settings.epochs * self.steps_per_epoch,
                               scheduler=self.scheduler if recipe.per_step else None,
                               options=StepOptions(recipe.label_smoothing, settings.placement, settings.world))
        self.stepper.step_index = (self.first_epoch - 1) * self.steps_per_epoch

    def fit(self, on_batch: Callable[[int, int], None] | None = None) -> dict:
        """Trains, scores and saves every epoch still to train; returns the history."""
        self.log(self.describe())
        for epoch in range(self.first_epoch, self.settings.epochs + 1):
            totals = self.train_epoch(epoch, on_batch)
            scores = self.score()
            if not self.settings.recipe.per_step:
                self.scheduler.step()
            entry = self.epoch_entry(epoch, totals, scores)
            self.history["epochs"].append(entry)
            _summarize(self.history)
            self.save_epoch(epoch, scores.predictions)
            self.log(_epoch_line(entry, self.settings.epochs))
        _summarize(self.history)  # also when resuming a run that had already finished
        if self.settings.world.is_main:
            write_json_atomic(self.settings.history_path, self.history)
        return self.history

    def describe(self) -> str:
        settings, world, threads = self.settings, self.settings.world, torch.get_num_threads()
        batch = settings.batch_size
        return (
            f"training {settings.method.name} ({settings.recipe.name} recipe, {settings.placement.describe()}) on "
            f"{self.data.source}: {len(self.data.train)} train / {len(self.data.test)} test images, {settings.epochs} "
            f"epochs of {self.steps_per_epoch} steps, "
            + (f"{world.describe()}, global batch {batch} = {world.size} x {batch // world.size} images, "
               if world.distributed else "")
            + f"{threads} thread{'s' if threads != 1 else ''}"
            + (" per rank" if world.distributed else "")
        )

    def train_epoch(self, epoch: int, on_batch: Callable[[int, int], None] | None) -> EpochTotals:
        """One pass over this rank's share of every training batch; RuntimeError if the loss diverged."""
        settings, world = self.settings, self.settings.world
        generator = torch.Generator().manual_seed(_epoch_seed(settings.config.seed, epoch))
        # dropout (every device); each rank its own masks, rank 0 those of a single process
        torch.manual_seed(_epoch_seed(settings.config.seed, epoch) + _RANK_SEED_STRIDE * world.rank)
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        loss_sum = torch.zeros((), device=settings.placement.torch_device)
        correct = torch.zeros((), dtype=torch.int64, device=settings.placement.torch_device)
        seen = 0
        bar = _progress(self.steps_per_epoch, f"epoch {epoch}/{settings.epochs}") if world.is_main else None
        start = time.perf_counter()
        shard = (world.rank, world.size)
        for index, (images, labels) in enumerate(datamod.batches(self.data.train, settings.batch_size, generator,
                                                                 True, shard)):
            loss, right = self.stepper(images, labels)
            n = labels.shape[0]
            loss_sum += loss.float() * n
            correct += right
            seen += n
            _show_step(bar, index, loss)
            if on_batch is not None:
                on_batch(epoch, index)
        loss_total, correct_total = float(loss_sum), int(correct)  # waits for the epoch's last step
        seconds = time.perf_counter() - start
        loss_total, correct_total, seen = dist_mod.sum_over_ranks(world, loss_total, correct_total, seen)
        if bar is not None:
            bar.close()
        if not math.isfinite(loss_total):
            raise RuntimeError(f"training diverged at epoch {epoch}: loss is {loss_total}")
        return EpochTotals(lr, loss_total, int(correct_total), int(seen), seconds)

    def score(self) -> Scores:
        """The whole test set's predictions (each rank scores its share), with rank 0's BatchNorm statistics."""
        dist_mod.broadcast_buffers_from_main(self.settings.world, self.model)  # score (and save) with them
        labels = self.data.test.labels
        predictions = self._predict(flip_tta=False)
        test_acc = accuracy(predictions, labels)
        tta_acc = accuracy(self._predict(flip_tta=True), labels) if self.settings.recipe.flip_tta else None
        return Scores(predictions, test_acc, tta_acc)

    def _predict(self, flip_tta: bool) -> torch.Tensor:
        settings = self.settings
        local = predict(self.model, self.data.eval_part, settings.recipe.eval_batch_size, settings.placement,
                        flip_tta=flip_tta)
        return dist_mod.gather_predictions(settings.world, local, len(self.data.test))

    def epoch_entry(self, epoch: int, totals: EpochTotals, scores: Scores) -> dict:
        return {
            "epoch": epoch,
            "train_loss": totals.loss / totals.seen,
            "train_acc": 100.0 * totals.correct / totals.seen,
            "test_acc": scores.test_acc,
            "test_acc_tta": scores.tta_acc,
            "lr": totals.lr,
            "seconds": totals.seconds,
            "images_per_s": totals.seen / totals.seconds,
            "distinct_codes": distinct_codes(self.model),
            **self.settings.method.epoch_report(self.quantizers),  # e.g. PFQ's switch points, DFQ's chosen bits per layer
            "trained_on": self.trained_on,  # a study resumed on another machine or commit says so, epoch by epoch
        }

    def save_epoch(self, epoch: int, predictions: torch.Tensor) -> None:
        """Rank 0 writes the finished epoch (one writer per job): predictions, checkpoint, history."""
        if not self.settings.world.is_main:
            return
        # Predictions before the checkpoint: a kill between the two writes then leaves the epoch to rerun,
        # never a finished checkpoint beside stale predictions.
        _save_predictions(self.settings.predictions_path, predictions, self.data.num_classes)
        state = self.checkpoint(epoch)
        write_atomic(self.settings.checkpoint_path, lambda f: torch.save(state, f))
        write_json_atomic(self.settings.history_path, self.history)

    def checkpoint(self, epoch: int) -> dict:
        """Everything --resume restores, after ``epoch`` (state_schema.json's "resumable")."""
        settings = self.settings
        return {
            "world_size": settings.world.size,  # a resume needs the same: it sets each rank's batch and BatchNorm statistics
            "arch": {"name": self.model.arch_name, "num_classes": self.model.num_classes},
            "method": settings.config.method,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_state": torch.get_rng_state(),
            "config": dataclasses.asdict(settings.config),
            "history": self.history,
        }


def _show_step(bar, index: int, loss: torch.Tensor) -> None:
    if bar is None:
        return
    bar.update(1)
    if index % 20 == 0:  # a host sync: only for the terminal's eyes, and rarely
        bar.set_postfix(loss=f"{float(loss):.3f}")


def _epoch_line(entry: dict, epochs: int) -> str:
    eta = (epochs - entry["epoch"]) * entry["seconds"]
    tta = f" (flip TTA {entry['test_acc_tta']:.2f}%)" if entry["test_acc_tta"] is not None else ""
    return (f"epoch {entry['epoch']}/{epochs} loss {entry['train_loss']:.4f} train {entry['train_acc']:.2f}% "
            f"test {entry['test_acc']:.2f}%{tta} lr {entry['lr']:.2e} {entry['seconds']:.1f}s "
            f"{entry['images_per_s']:.0f} img/s eta {eta / 60:.1f} min")


def _trained_on() -> dict:
    """The host and code that train this process's epochs (a resumed run may have begun elsewhere)."""
    from .measure.host import host_fingerprint

    host, code = host_fingerprint(), stamp()["code"]
    return {"host_id": host["host_id"], "cpu_model": host["cpu_model"], "isa": host["isa"],
            "isa_caps": host["isa_caps"], "commit": code["commit"], "dirty": code["dirty"]}


_RANK_SEED_STRIDE = 1_000_003  # far from _epoch_seed's own stride, so no two (rank, epoch) pairs share a seed


def _distributed_record(world: World, batch_size: int) -> dict:
    return {
        "backend": dist_mod.BACKEND,
        "launcher": "torchrun",
        "world_size": world.size,
        "nodes": world.nodes,
        "local_ranks": world.local_size,
        "global_batch": batch_size,
        "batch_per_rank": batch_size // world.size,
        "threads_per_rank": torch.get_num_threads(),
        "batchnorm": "per rank (no SyncBatchNorm on gloo/CPU); rank 0's running statistics broadcast before eval",
    }


def _save_predictions(path: Path, predictions: torch.Tensor, num_classes: int) -> None:
    """The epoch's top-1 class per test image, as a numpy uint8 array (10 KB for CIFAR-10): what paired tests
    (McNemar) compare between methods. Read with np.load(path, allow_pickle=False)."""
    import numpy as np

    dtype = np.uint8 if num_classes <= 256 else np.uint16
    write_atomic(path, lambda f: np.save(f, predictions.numpy().astype(dtype), allow_pickle=False))


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
