"""One measured run in a fresh process, a task child (suite/child.py):
`python -m suite.bench_child TASK.json RESULT.json`.

The parent sets the thread variables in this process's environment; here, before torch is imported,
the process joins its cgroup or applies its rlimit. Then it runs one job and writes RESULT.json:
  throughput: SGEMM ceiling, interleaved training windows of every method, eval throughput, energy,
              and the network's conv kernels timed pass by pass;
  footprint:  one method's training (and, when the tier asks, its accuracy run) for peak memory.
Exit status: 0 done, 3 out of memory (RESULT.json says so), 1 any other failure."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .child import serve
from .profiles import apply_rlimit_cap
from .spec import CHECKPOINT_FILE, EXIT_OOM, FULL_PRECISION, PAPER_RECIPE, PRECISIONS

OOM_MARKERS = ("can't allocate memory", "cannot allocate memory", "out of memory", "bad_alloc")


def is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, OSError, ImportError)) and any(m in text for m in OOM_MARKERS)


def _enter_cap(task: dict) -> str | None:
    """Join the cgroup the parent made, or cap this process with an rlimit; before torch allocates anything."""
    if task["cap_enforcement"] == "cgroup":
        # Writing our own pid moves this process (and every thread it starts later) into the group.
        with open(Path(task["cgroup_dir"]) / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
        return None
    if task["cap_enforcement"] == "rlimit":
        return apply_rlimit_cap(task["memory_cap_mib"])
    return None


def _placement(task: dict, precision: str = FULL_PRECISION):
    from .device import Placement

    return Placement(task.get("device", "cpu"), precision)


def _load(task: dict):
    from . import data as datamod

    train, test = datamod.load_dataset(task["dataset"], task["data_dir"], download=False)
    device = task.get("device", "cpu")  # as in training: the uint8 splits live on the device
    return train.to(device), test.to(device)


def _stepper(method_name: str, arch: str, num_classes: int, batch_size: int, seed: int, steps_per_epoch: int,
             placement=None):
    import torch

    from .methods import get_method
    from .train import StepOptions, Stepper, build_model, get_recipe, make_optimizer

    recipe = get_recipe(PAPER_RECIPE)
    method = get_method(method_name)
    torch.manual_seed(seed)  # every method starts from the same initial weights
    model, quantizers = build_model(method, num_classes, arch)
    if placement is not None:
        model.to(placement.torch_device)
    model.train()
    optimizer = make_optimizer(model, recipe)
    return model, Stepper(model, method, optimizer, quantizers, total_steps=recipe.epochs * steps_per_epoch,
                          options=StepOptions(placement=placement))


def _cycle_batches(split, batch_size: int, seed: int):
    import torch

    from . import data as datamod

    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from datamod.batches(split, batch_size, generator, train=True)


def _arms(task: dict) -> list[dict]:
    """The timed arms: {"name", "method", "precision"}; old tasks name methods only (all fp32)."""
    return task.get("arms") or [{"name": m, "method": m, "precision": FULL_PRECISION} for m in task["methods"]]


def _energy_reader(task: dict):
    from . import measure

    if task.get("device", "cpu") == "cuda":
        return measure.NvmlReader()
    return measure.RaplReader(Path(task["powercap_root"]))


def _ceilings(model, task: dict, arms: list[dict], square_samples: list[float]) -> dict:
    """Per precision of the arms, the best GEMM over the square product and the network's convolutions as
    GEMMs (suite/ceiling.py); the fp32 ceiling also counts every square sample taken between rounds."""
    from . import ceiling as ceiling_mod

    shapes = ceiling_mod.conv_gemm_shapes(model, task["batch_size"], task["sgemm_n"])
    device = task.get("device", "cpu")
    found = {}
    for precision in sorted({a["precision"] for a in arms}, key=PRECISIONS.index):
        found[precision] = ceiling_mod.measure_ceiling(shapes, precision, task["sgemm_repeats"], device)
    best_sample = max(square_samples, default=0.0)
    if FULL_PRECISION in found and best_sample > found[FULL_PRECISION]["gflops"]:
        n = task["sgemm_n"]
        found[FULL_PRECISION] = dict(found[FULL_PRECISION], gflops=best_sample,
                                       shape={"m": n, "k": n, "n": n, "origin": "square, sampled between rounds"})
    return found


@dataclass
class _Arms:
    """Every timed arm's model, stepper, placement and energy meter, all from the same initial weights."""

    models: dict = field(default_factory=dict)
    steppers: dict = field(default_factory=dict)
    placements: dict = field(default_factory=dict)
    meters: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)  # per arm, its timed windows' seconds

    @property
    def first_model(self):
        return next(iter(self.models.values()))


def _build_arms(task: dict, arms: list[dict]) -> _Arms:
    from . import data as datamod
    from . import measure

    num_classes = datamod.dataset_spec(task["dataset"]).num_classes
    steps_per_epoch = datamod.num_train_batches(task["epoch_images"], task["batch_size"])
    built = _Arms()
    for arm in arms:
        name = arm["name"]
        built.placements[name] = _placement(task, arm["precision"])
        built.models[name], built.steppers[name] = _stepper(
            arm["method"], task["arch"], num_classes, task["batch_size"], task["seed"], steps_per_epoch,
            built.placements[name])
    reader = _energy_reader(task)
    built.meters = {arm["name"]: measure.EnergyMeter(reader) for arm in arms}
    return built


def run_throughput(task: dict) -> dict:
    from . import measure
    from .profiles import apply_threads

    threads = apply_threads(task["threads"])
    arms = _arms(task)
    with _placement(task).numerics():  # CUDA: TF32 off for the fp32 arms and the SGEMM ceiling
        probe = measure.SgemmProbe(task["sgemm_n"], task.get("device", "cpu"))
        for _ in range(task["sgemm_repeats"]):
            probe.sample()
        train_split, test_split = _load(task)
        built = _build_arms(task, arms)
        batch_source = _cycle_batches(train_split, task["batch_size"], task["seed"])
        plan = measure.WindowPlan(task["warmup_steps"], task["windows"], task["steps_per_window"])
        built.seconds = measure.interleaved_training_windows(built.steppers, lambda: next(batch_source), plan,
                                                             built.meters, probe.sample)
        sgemm = probe.result()
        ceilings = _ceilings(built.first_model, task, arms, probe.samples)
        ratios = measure.ratio_estimates(built.seconds, arms[0]["name"])
        flops = measure.train_flops_per_image(built.first_model)
        methods = _method_rates(task, arms, built, ceilings, flops, test_split)
        # Last, so the kernels' warm caches help no training window.
        kernels = measure.conv_kernel_rates(built.first_model, task["batch_size"], task["kernel_repeats"],
                                            task.get("device", "cpu"))
    return {
        "status": "ok",
        "torch_threads": threads,
        "device_name": _placement(task).device_name(),
        "sgemm": sgemm,
        "ceiling": dict(ceilings, max_rows=task["sgemm_n"]),
        "conv_kernels": kernels,
        "train_flops_per_image": flops,
        "step_time_ratio": {name: r["median"] for name, r in ratios.items()},
        "step_time_ratio_range": {name: [r["low"], r["high"]] for name, r in ratios.items()},
        "step_time_ratio_cycles": next(iter(ratios.values()))["cycles"],
        "methods": methods,
    }


def _method_rates(task: dict, arms: list[dict], built: _Arms, ceilings: dict, flops: float, test_split) -> dict:
    """Per arm: training rate (median and per window), efficiency against its precision's ceiling, eval rate,
    energy."""
    from . import ceiling as ceiling_mod
    from . import data as datamod
    from . import measure

    batch_size = task["batch_size"]
    eval_batches = list(datamod.batches(test_split.head(task["eval_images"] + 100), 100))
    # GPU energy is measured (NVML) or unavailable; the CPU-time power model says nothing about a GPU.
    power = (None if task.get("device", "cpu") == "cuda"
             else measure.power_model(task["cpu_model"], task.get("watts_per_busy_thread")))
    methods = {}
    for arm in arms:
        name, seconds = arm["name"], built.seconds[arm["name"]]
        images_per_window = batch_size * task["steps_per_window"]
        rates = [images_per_window / s for s in seconds]
        median_rate = images_per_window / statistics.median(seconds)
        achieved = flops * median_rate / 1e9
        ceiling = ceilings[arm["precision"]]["gflops"]
        # Each round's window against the same ceiling: the spread the rounds' rates give the efficiency.
        per_round = [flops * rate / 1e9 / ceiling for rate in rates]
        methods[name] = {
            "method": arm["method"],
            "precision": arm["precision"],
            "precision_support": built.placements[name].precision_support(),
            "train_images_per_s": median_rate,
            "train_window_images_per_s": rates,
            "step_seconds_median": 1.0 / median_rate * batch_size,
            "eval_images_per_s": (measure.eval_throughput(built.models[name], eval_batches, built.placements[name])
                                  if len(eval_batches) > 1 else None),
            "achieved_gflops": achieved,
            **ceiling_mod.efficiency_against(achieved, ceiling, arm["precision"]),
            "efficiency_range": [min(per_round), max(per_round)] if per_round else None,
            "energy": measure.energy_result(built.meters[name], power, task["epoch_images"]),
        }
    return methods


def run_footprint(task: dict) -> dict:
    """One method trained in this process alone, so the high-water mark is that method's. With an
    accuracy budget this is `q4bench train` itself (subset, epochs), scored on the test set."""
    from . import data as datamod
    from . import measure
    from .profiles import apply_threads
    from .train import TrainConfig, evaluate, train

    threads = apply_threads(task["threads"])
    device, precision = task.get("device", "cpu"), task.get("precision", FULL_PRECISION)
    budget = task.get("accuracy")
    accuracy = None
    if budget:
        run_dir = budget.get("run_dir") or tempfile.mkdtemp(prefix="q4bench-accuracy-")
        resume = (Path(run_dir) / CHECKPOINT_FILE).exists()
        history = train(
            TrainConfig(method=task["method"], recipe=budget["recipe"], epochs=budget["epochs"], threads=threads,
                        seed=task["seed"], dataset=task["dataset"], data_dir=task["data_dir"],
                        subset=budget["train_images"], batch_size=task["batch_size"], out=run_dir, resume=resume,
                        device=device, precision=precision, arch=task["arch"]),
            log=lambda line: print(line, flush=True),
        )
        accuracy = {
            "top1_percent": history["final_test_acc"],
            "best_top1_percent": history["best_test_acc"],
            "epochs": len(history["epochs"]),
            "train_images": history["train_images"],
            "test_images": history["test_images"],
            "recipe": history["recipe"],
            "seconds": sum(e["seconds"] for e in history["epochs"]),
        }
    else:
        placement = _placement(task, precision)
        with placement.numerics():
            train_split, test_split = _load(task)
            num_classes = datamod.dataset_spec(task["dataset"]).num_classes
            model, stepper = _stepper(task["method"], task["arch"], num_classes, task["batch_size"], task["seed"], 1, placement)
            source = _cycle_batches(train_split, task["batch_size"], task["seed"])
            for _ in range(task["footprint_steps"]):
                float(stepper(*next(source))[0])
            evaluate(model, test_split.head(200), 100, placement)
    result = {"status": "ok", "torch_threads": threads, "peak_rss_bytes": measure.peak_rss_bytes(), "accuracy": accuracy}
    if device == "cuda":
        import torch

        result["peak_device_memory_bytes"] = int(torch.cuda.max_memory_allocated())
    return result


JOBS = {"throughput": run_throughput, "footprint": run_footprint}


def _work(task: dict) -> dict:
    detail = _enter_cap(task)
    if detail:
        print(f"memory cap: {detail}", flush=True)
    return JOBS[task["job"]](task)


def _failure(exc: BaseException) -> tuple[dict, int]:
    """Every failure becomes a result the parent reads: out of memory (EXIT_OOM) or failed (1)."""
    status = "oom" if is_memory_error(exc) else "failed"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return {"status": status, "detail": f"{type(exc).__name__}: {message}"[:500]}, EXIT_OOM if status == "oom" else 1


def main(argv: list[str]) -> int:
    return serve(argv, _work, _failure)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
