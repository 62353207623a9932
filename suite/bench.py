"""`q4bench bench`: for each hardware profile, fresh child processes (suite.bench_child) measure the
SGEMM ceiling, interleaved training throughput of every method, eval throughput, peak memory, energy and
(once per run) accuracy at the tier's budget; one JSON result file is written atomically.

The parent never measures anything itself: it plans, starts children with the profile's threads and memory
cap, classifies how each ended (ok, oom, failed) and assembles the result."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__
from . import data as datamod
from .bounds import check_count
from .ceiling import fma_peak
from .errors import UserError
from .locks import refuse_link
from .measure.compute import FLOP_CONVENTION
from .measure.energy import POWERCAP_ROOT
from .measure.host import host_fingerprint, load_average
from .profiles import (
    CgroupSlot,
    Profile,
    cgroup_root_usable,
    find_delegated_cgroup,
    resolve_profile,
    thread_environment,
    usable_cpus,
)
from .scaling import ScalingPlan, measure_scaling, plan_scaling
from .scaling import summary_line as scaling_summary_line
from .scaling import unavailable as scaling_unavailable
from .results import DEFAULT_RESULTS_DIR, SCHEMA_VERSION, write_new_result
from .spec import (ARM_SEPARATOR, BASELINE, CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES, CONV_PASSES, DEFAULT_METHODS,
                   PAPER_RECIPE, PRECISIONS, arm_name)
from .userfiles import check_output_dir

DEFAULT_PROFILES = ("single-thread", "colab-free-cpu")


@dataclass(frozen=True)
class AccuracyBudget:
    train_images: int | None  # None: the whole training set
    epochs: int | None  # None: the recipe's (150 for paper)
    recipe: str = PAPER_RECIPE
    resumable: bool = False  # runs live under runs/bench/... and continue where they stopped

    def describe(self) -> str:
        images = f"the first {self.train_images} training images" if self.train_images else "all 50,000 training images"
        epochs = f"{self.epochs} epoch(s)" if self.epochs else f"the {self.recipe} recipe's epochs"
        return f"{epochs} of the {self.recipe} recipe on {images}, scored on the whole test set (q4bench train)"


@dataclass(frozen=True)
class Tier:
    name: str
    summary: str
    data: str  # "synthetic", or "cifar10" (synthetic fallback when not found, except where required)
    sgemm_n: int
    sgemm_repeats: int
    warmup_steps: int
    windows: int
    steps_per_window: int
    eval_images: int
    footprint_steps: int
    accuracy: AccuracyBudget | None
    kernel_repeats: int  # timed calls per conv layer and pass in the kernel breakdown (measure.conv_kernel_rates)
    batch_size: int | None = None  # None: the profile's
    child_timeout_s: float | None = None
    requires_cifar10: bool = False
    synthetic_images: tuple[int, int] = (2000, 500)  # train, test when running on synthetic data
    # 1 vs N processes under torchrun (suite/scaling.py): interleaved rounds of 4 windows; 0 skips it
    scaling_rounds: int = 0
    scaling_steps: int = 2

    def windows_for(self, methods: int) -> int:
        """At least `windows`, rounded up to whole cycles: a cycle gives every method every position once."""
        return -(-self.windows // methods) * methods


TIERS = {
    "smoke": Tier(
        "smoke", "synthetic data, small batches, seconds: checks the harness end to end (what tests use)",
        data="synthetic", sgemm_n=1024, sgemm_repeats=2, warmup_steps=1, windows=4, steps_per_window=1,
        eval_images=100, footprint_steps=1, accuracy=None, kernel_repeats=1, batch_size=16, child_timeout_s=300,
        synthetic_images=(256, 200),
    ),
    "quick": Tier(
        "quick", "real CIFAR-10 when found; 8 timed windows per method and a 1-epoch accuracy run on 4,096 images",
        data="cifar10", sgemm_n=2048, sgemm_repeats=3, warmup_steps=2, windows=8, steps_per_window=2,
        eval_images=1000, footprint_steps=2, accuracy=AccuracyBudget(train_images=4096, epochs=1), kernel_repeats=3,
        child_timeout_s=1500, scaling_rounds=4, scaling_steps=2,
    ),
    "paper": Tier(
        "paper", "the paper's full recipe (150 epochs on CIFAR-10 per method): hours to days, resumable",
        data="cifar10", sgemm_n=2048, sgemm_repeats=5, warmup_steps=3, windows=8, steps_per_window=3,
        eval_images=2000, footprint_steps=2, accuracy=AccuracyBudget(None, None, resumable=True), kernel_repeats=5,
        requires_cifar10=True, scaling_rounds=6, scaling_steps=3,
    ),
}


def get_tier(name: str) -> Tier:
    try:
        return TIERS[name]
    except KeyError:
        raise UserError(f"unknown tier {name!r}; known: {', '.join(TIERS)}") from None


@dataclass
class BenchConfig:
    profiles: list[str] = field(default_factory=list)  # names or .toml paths; empty: DEFAULT_PROFILES
    tier: str = "quick"
    methods: list[str] = field(default_factory=list)  # empty: DEFAULT_METHODS; fp32 is always added
    data_dir: str | None = None
    out: str = str(DEFAULT_RESULTS_DIR)
    seed: int = 0
    profiles_dir: str | None = None
    cgroup_root: str | None = None  # a delegated cgroup v2 directory; None: detect
    powercap_root: str = str(POWERCAP_ROOT)
    runs_dir: str = "runs/bench"  # resumable accuracy runs (paper tier)
    allow_download: bool = True

    def __post_init__(self):
        check_count(self.seed, "seed")


@dataclass(frozen=True)
class DataPlan:
    kind: str  # "cifar10" | "synthetic"
    data_dir: str
    source: str
    note: str | None


@dataclass(frozen=True)
class CapPlan:
    enforcement: str  # "cgroup" | "rlimit" | "none"
    cgroup_root: Path | None
    note: str | None  # why cgroup was not used


# ---------------------------------------------------------------------------------------------
# Planning


def resolve_methods(requested: list[str]) -> list[str]:
    from .methods import get_method

    names = [BASELINE] + [m for m in (requested or DEFAULT_METHODS) if m != BASELINE]
    names = list(dict.fromkeys(names))
    for name in names:
        get_method(name)  # a UserError naming the unknown method and the known ones
    return names


def plan_data(tier: Tier, data_dir: str | None, workdir: Path, allow_download: bool, seed: int) -> DataPlan:
    spec = datamod.dataset_spec("cifar10")
    if tier.data == "synthetic":
        train, test = tier.synthetic_images
        datamod.write_synthetic(workdir / "synthetic", "cifar10", num_train=train, num_test=test, seed=seed)
        return DataPlan("synthetic", str(workdir / "synthetic"), f"synthetic CIFAR-10-format data ({train} train / "
                        f"{test} test images)", f"the {tier.name} tier always runs on synthetic data")
    root = datamod.resolve_data_dir(data_dir)
    folder = datamod.find_folder(spec, root)
    reason = None
    if folder is None and allow_download:
        try:
            folder = datamod.download_archive(spec, root, spec.url, spec.md5, timeout_s=30.0)
        except UserError as exc:
            reason = str(exc)
    elif folder is None:
        reason = f"{spec.name} folder {root / spec.folder} not found (download not attempted)"
    if folder is not None:
        return DataPlan("cifar10", str(folder), f"CIFAR-10 from {folder}", None)
    if tier.requires_cifar10:
        raise UserError(f"the {tier.name} tier needs real CIFAR-10: {reason}")
    train, test = tier.synthetic_images
    datamod.write_synthetic(workdir / "synthetic", "cifar10", num_train=train, num_test=test, seed=seed)
    return DataPlan("synthetic", str(workdir / "synthetic"),
                    f"synthetic CIFAR-10-format data ({train} train / {test} test images)",
                    f"fell back to synthetic data: {reason}")


def plan_cap(profile: Profile, cgroup_root: Path | None, cgroup_note: str | None) -> CapPlan:
    if profile.memory_cap_mib is None:
        return CapPlan("none", None, None)
    if cgroup_root is not None:
        return CapPlan("cgroup", cgroup_root, None)
    return CapPlan("rlimit", None, cgroup_note)


def host_cpu_flags() -> set[str]:
    from .measure.host import cpu_flags

    return cpu_flags()


def require_cuda(profile: Profile) -> None:
    """A cuda profile on a machine without a GPU is refused before anything runs, in one line."""
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"{profile.path}: device 'cuda' but no CUDA GPU is visible to this torch "
                        f"({torch.__version__}); drop the profile or run on a GPU host")


def pick_accuracy_profile(profiles: list[Profile], host_cpus: int) -> Profile:
    """Accuracy does not depend on the profile, so it is measured once: on the profile with the most threads
    that still fit the host (the fastest), the first such one on ties."""
    fitting = [p for p in profiles if p.threads <= host_cpus] or profiles
    return max(fitting, key=lambda p: (p.threads, -profiles.index(p)))


# ---------------------------------------------------------------------------------------------
# Children


@dataclass
class ChildOutcome:
    status: str  # "ok" | "oom" | "failed"
    detail: str | None
    result: dict
    seconds: float


def _memory_line(stderr: str) -> str | None:
    from .bench_child import OOM_MARKERS

    for line in stderr.splitlines():
        if any(m in line.lower() for m in OOM_MARKERS):
            return line.strip()
    return None


CHILD_ARGV = (sys.executable, "-m", "suite.bench_child")


def run_child(task: dict, profile: Profile, cap: CapPlan, workdir: Path, name: str, timeout_s: float | None,
              child_argv: tuple[str, ...] = CHILD_ARGV) -> ChildOutcome:
    """Start `python -m suite.bench_child TASK RESULT` with the profile's thread variables and cap; classify
    how it ended. (Tests pass another child_argv to stand in for a child the kernel kills.)"""
    task = dict(task, threads=profile.threads, memory_cap_mib=profile.memory_cap_mib, cap_enforcement=cap.enforcement)
    slot = None
    if cap.enforcement == "cgroup":
        slot = CgroupSlot.create(cap.cgroup_root, f"q4bench-{os.getpid()}-{name}", profile.memory_cap_mib)
        task["cgroup_dir"] = str(slot.path)
    task_path, result_path, log_path = (workdir / f"{name}.{suffix}" for suffix in ("task.json", "result.json", "stderr"))
    task_path.write_text(json.dumps(task))
    env = dict(os.environ, **thread_environment(profile.threads))
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    start = time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen([*child_argv, str(task_path), str(result_path)],
                                 env=env, stdout=sys.stdout if _stdout_is_real() else subprocess.DEVNULL, stderr=log)
        try:
            code = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            code = None
        except BaseException:
            child.kill()  # interrupted: take our child down with us
            child.wait()
            raise
    seconds = time.perf_counter() - start
    stderr = log_path.read_text(errors="replace")
    try:
        oom_killed = slot is not None and slot.oom_killed()
    finally:
        if slot is not None:
            slot.remove()
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if code is None:
        return ChildOutcome("failed", f"timed out after {timeout_s:.0f} s", {}, seconds)
    if code == 0 and result.get("status") == "ok":
        return ChildOutcome("ok", None, result, seconds)
    if result.get("status") in ("oom", "failed"):
        status, detail = result["status"], result.get("detail")
    elif oom_killed:
        status, detail = "oom", f"killed by the kernel OOM killer inside the {slot.describe()}"
    elif cap.enforcement != "none" and _memory_line(stderr):
        status, detail = "oom", f"died under the memory cap: {_memory_line(stderr)}"
    elif code < 0:
        status, detail = "failed", f"killed by {signal.Signals(-code).name}"
    else:
        last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "no output")
        status, detail = "failed", f"exited with status {code}: {last.strip()}"
    if status == "oom" and cap.enforcement != "none":
        detail = f"{detail} [cap {profile.memory_cap_mib} MiB by {cap.enforcement}]"
    return ChildOutcome(status, detail, {}, seconds)


def _stdout_is_real() -> bool:
    try:
        sys.stdout.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False  # pytest's capture: child output is dropped rather than crash Popen


# ---------------------------------------------------------------------------------------------
# One profile


def _unavailable_energy(why: str) -> dict:
    return {"joules_per_epoch": None, "method": "unavailable", "model": why}


def arms_for(profile: Profile, methods: list[str], cpu_flags: set[str]) -> list[dict]:
    """The timed arms of a profile: every method in fp32 (the first, fp32 itself, is the ratios' baseline),
    then every method again in each further precision the profile measures ("tathe4@bf16")."""
    arms = []
    for precision in profile.precisions(cpu_flags):
        for method in methods:
            arms.append({"name": arm_name(method, precision), "method": method, "precision": precision})
    return arms


def measure_profile(
    profile: Profile,
    tier: Tier,
    methods: list[str],
    data: DataPlan,
    cap: CapPlan,
    host: dict,
    config: BenchConfig,
    measure_accuracy: bool,
    accuracy_reason: str | None,
    workdir: Path,
    log: Callable[[str], None],
) -> dict:
    batch_size = tier.batch_size or profile.batch_size
    base_task = {
        "dataset": "cifar10", "data_dir": data.data_dir, "batch_size": batch_size, "seed": config.seed,
        "epoch_images": CIFAR10_TRAIN_IMAGES, "device": profile.device,
    }
    started, load_start = time.perf_counter(), load_average()
    arms = arms_for(profile, methods, host_cpu_flags())
    windows = tier.windows_for(len(arms))
    # a GPU's ceiling needs a multiply big enough to fill it
    sgemm_n = tier.sgemm_n if profile.device == "cpu" else max(tier.sgemm_n, 8192)
    log(f"[{profile.name}] throughput on {profile.device}: SGEMM {sgemm_n}^3 x{tier.sgemm_repeats} + 1 per round, "
        f"{tier.warmup_steps} warm-up + {windows} x {tier.steps_per_window} timed steps of batch {batch_size} per arm "
        f"({', '.join(a['name'] for a in arms)}), interleaved")
    throughput = run_child(
        dict(base_task, job="throughput", methods=methods, arms=arms, sgemm_n=sgemm_n, sgemm_repeats=tier.sgemm_repeats,
             warmup_steps=tier.warmup_steps, windows=windows, steps_per_window=tier.steps_per_window,
             eval_images=tier.eval_images, kernel_repeats=tier.kernel_repeats, cpu_model=host["cpu_model"],
             watts_per_busy_thread=profile.watts_per_busy_thread, powercap_root=config.powercap_root),
        profile, cap, workdir, f"{profile.name}-throughput", tier.child_timeout_s,
    )
    log(f"[{profile.name}] throughput: {throughput.status} in {throughput.seconds:.0f} s"
        + (f" ({throughput.detail})" if throughput.detail else ""))
    t = throughput.result
    if measure_accuracy and tier.accuracy is not None and t:
        log(f"[{profile.name}] accuracy runs will take about {_accuracy_eta(tier.accuracy, t) / 60:.0f} min "
            f"at the rates just measured")
    entries = {}
    statuses = [throughput.status]
    details = [f"throughput run: {throughput.detail}"] if throughput.detail else []
    for arm in arms:
        name, method = arm["name"], arm["method"]
        accuracy_task = None
        if measure_accuracy and tier.accuracy is not None:
            budget = tier.accuracy
            run_dir = None
            if budget.resumable:
                run_dir = str(Path(config.runs_dir) / host["host_id"] / profile.name / name)
            accuracy_task = {"recipe": budget.recipe, "epochs": budget.epochs, "train_images": budget.train_images,
                             "run_dir": run_dir}
            log(f"[{profile.name}] {name}: accuracy run, {budget.describe()}")
        else:
            log(f"[{profile.name}] {name}: peak memory over {tier.footprint_steps} training step(s) and an eval pass")
        footprint = run_child(
            dict(base_task, job="footprint", method=method, precision=arm["precision"],
                 footprint_steps=tier.footprint_steps, accuracy=accuracy_task),
            profile, cap, workdir, f"{profile.name}-{name.replace(ARM_SEPARATOR, '-')}",
            None if accuracy_task else tier.child_timeout_s,
        )
        log(f"[{profile.name}] {name}: {footprint.status} in {footprint.seconds:.0f} s"
            + (f" ({footprint.detail})" if footprint.detail else ""))
        statuses.append(footprint.status)
        if footprint.detail:
            details.append(f"{name} memory/accuracy run: {footprint.detail}")
        m = t.get("methods", {}).get(name)
        accuracy = footprint.result.get("accuracy")
        if accuracy is not None:
            accuracy = dict(accuracy, data=data.source)
        if accuracy is not None:
            note = None
        elif measure_accuracy and tier.accuracy is not None:
            note = f"the accuracy run ended with status {footprint.status}"
        else:
            note = accuracy_reason
        method_status = throughput.status if throughput.status != "ok" else footprint.status
        entries[name] = {
            "method": method,
            "precision": arm["precision"],
            "precision_support": m.get("precision_support") if m else None,
            "status": method_status,
            "status_detail": "; ".join(filter(None, [throughput.detail, footprint.detail])) or None,
            "train_images_per_s": m["train_images_per_s"] if m else None,
            "train_window_images_per_s": m["train_window_images_per_s"] if m else [],
            "step_seconds_median": m["step_seconds_median"] if m else None,
            "eval_images_per_s": m["eval_images_per_s"] if m else None,
            "achieved_gflops": m["achieved_gflops"] if m else None,
            "efficiency": m["efficiency"] if m else None,
            "efficiency_baseline": m.get("efficiency_baseline") if m else None,
            "efficiency_anomaly": m.get("efficiency_anomaly") if m else None,
            "efficiency_range": m.get("efficiency_range") if m else None,
            "peak_rss_bytes": footprint.result.get("peak_rss_bytes"),
            "peak_device_memory_bytes": footprint.result.get("peak_device_memory_bytes"),
            "energy": m["energy"] if m else _unavailable_energy(f"the throughput run ended with status {throughput.status}"),
            "accuracy": accuracy,
            "accuracy_note": note,
        }
    status = "failed" if "failed" in statuses else "oom" if "oom" in statuses else "ok"
    return {
        "profile": profile.name,
        "description": profile.description,
        "device": profile.device,
        "device_name": t.get("device_name"),
        "precisions": sorted({a["precision"] for a in arms}, key=PRECISIONS.index),
        "threads": profile.threads,
        "threads_spec": profile.threads_spec,
        "torch_threads": t.get("torch_threads"),
        "host_usable_cpus": usable_cpus(),
        "oversubscribed": profile.oversubscribed(),
        "memory_cap_mib": profile.memory_cap_mib,
        "cap_enforcement": cap.enforcement,
        "cap_detail": _cap_detail(profile, cap),
        "batch_size": batch_size,
        "status": status,
        "status_detail": "; ".join(details) or None,
        "sgemm_gflops": t["sgemm"]["gflops"] if t else None,
        "sgemm": t.get("sgemm"),
        "ceiling": dict(t["ceiling"], peak=fma_peak(host, profile.threads, profile.device)) if t.get("ceiling") else None,
        "train_flops_per_image": t.get("train_flops_per_image"),
        "step_time_ratio": t.get("step_time_ratio", {}),
        "step_time_ratio_range": t.get("step_time_ratio_range", {}),
        "step_time_ratio_cycles": t.get("step_time_ratio_cycles"),
        "conv_kernels": t.get("conv_kernels"),
        "methods": entries,
        "seconds": time.perf_counter() - started,
        # Other work on the host slows every figure; the load average lets a reader see it happened.
        "load_average": {"start": load_start, "end": load_average()},
    }


def _accuracy_eta(budget: AccuracyBudget, throughput: dict) -> float:
    """Seconds the accuracy runs should take, from the throughput child's rates (test set: 10,000 images)."""
    from .train import get_recipe

    images = (budget.train_images or CIFAR10_TRAIN_IMAGES) * (budget.epochs or get_recipe(budget.recipe).epochs)
    seconds = 0.0
    for m in throughput["methods"].values():
        evals = (budget.epochs or get_recipe(budget.recipe).epochs) * CIFAR10_TEST_IMAGES / (m["eval_images_per_s"] or 1.0)
        seconds += images / m["train_images_per_s"] + evals
    return seconds


def _cap_detail(profile: Profile, cap: CapPlan) -> str | None:
    if cap.enforcement == "none":
        return None
    if cap.enforcement == "cgroup":
        return f"cgroup v2 memory.max = {profile.memory_cap_mib} MiB, one group per child under {cap.cgroup_root}"
    return (f"RLIMIT_DATA = {profile.memory_cap_mib} MiB in each child (private writable memory, close to resident "
            f"memory for this workload); cgroup not used: {cap.note}")


# ---------------------------------------------------------------------------------------------
# The run


def describe_plan(tier: Tier, profiles: list[Profile], methods: list[str], data: DataPlan,
                  accuracy_profile: Profile | None, accuracy_reason: str | None,
                  scaling_plan: ScalingPlan | None = None, scaling_reason: str | None = None) -> list[str]:
    lines = [f"q4bench bench: tier {tier.name} ({tier.summary})",
             f"  data: {data.source}" + (f"; {data.note}" if data.note else ""),
             f"  methods: {', '.join(methods)} (fp32 is the baseline of step_time_ratio)"]
    steps = len(methods) * (tier.warmup_steps + tier.windows_for(len(methods)) * tier.steps_per_window)
    for p in profiles:
        batch = tier.batch_size or p.batch_size
        cap = f"cap {p.memory_cap_mib} MiB" if p.memory_cap_mib else "no memory cap"
        over = ", OVERSUBSCRIBED" if p.oversubscribed() else ""
        memory = ("the accuracy runs" if accuracy_profile is not None and p.name == accuracy_profile.name
                  else f"{len(methods)} x {tier.footprint_steps} memory steps")
        precisions = p.precisions(host_cpu_flags())
        lines.append(f"  profile {p.name}: {p.device}, {' + '.join(precisions)}, {p.threads} thread(s){over}, {cap}, "
                     f"batch {batch}: {steps * len(precisions)} throughput steps + {memory}")
    if accuracy_profile is not None:
        lines.append(f"  accuracy: per method, {tier.accuracy.describe()}, under profile {accuracy_profile.name}")
    else:
        lines.append(f"  accuracy: not measured ({accuracy_reason})")
    if scaling_plan is not None:
        lines.append(f"  scaling: 1 vs {scaling_plan.processes} processes (torchrun, DDP over gloo, "
                     f"{scaling_plan.threads_per_process} thread each), {scaling_plan.method}, global batch "
                     f"{scaling_plan.global_batch}, {scaling_plan.rounds} interleaved rounds of 4 windows x "
                     f"{scaling_plan.steps_per_window} steps")
    else:
        lines.append(f"  scaling: not measured ({scaling_reason})")
    return lines


def _print(line: str) -> None:
    print(line, flush=True)  # children write to the same stdout; keep the order


def run_bench(config: BenchConfig, log: Callable[[str], None] = _print) -> Path:
    """Run the bench; returns the path of the result file."""
    tier = get_tier(config.tier)
    check_output_dir(config.out, "--out")
    refuse_link(config.out, "--out")  # again when the result is written, hours later
    host_cpus = usable_cpus()
    names = config.profiles or list(DEFAULT_PROFILES)
    profiles = [resolve_profile(n, config.profiles_dir, host_cpus) for n in names]
    if len({p.name for p in profiles}) != len(profiles):
        raise UserError(f"a profile is named twice in {', '.join(names)}")
    methods = resolve_methods(config.methods)
    for profile in profiles:
        if profile.device == "cuda":
            require_cuda(profile)
    host = host_fingerprint()
    cgroup_root, cgroup_note = None, None
    if any(p.memory_cap_mib for p in profiles):
        candidate = Path(config.cgroup_root) if config.cgroup_root else find_delegated_cgroup()
        if candidate is None:
            cgroup_note = "no delegated cgroup v2 directory with the memory controller (pass --cgroup-root)"
        else:
            cgroup_note = cgroup_root_usable(candidate)
            if cgroup_note is None:
                cgroup_root = candidate
            elif config.cgroup_root:
                raise UserError(f"--cgroup-root {candidate}: {cgroup_note}")
    start_wall, created = time.perf_counter(), dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(prefix="q4bench-bench-") as tmp:
        workdir = Path(tmp)
        data = plan_data(tier, config.data_dir, workdir, config.allow_download, config.seed)
        if tier.accuracy is None:
            accuracy_reason = f"the {tier.name} tier measures no accuracy (synthetic data, a few steps)"
        elif data.kind != "cifar10":
            accuracy_reason = f"no real CIFAR-10: {data.note}"
        else:
            accuracy_reason = None
        accuracy_profile = pick_accuracy_profile(profiles, host_cpus) if accuracy_reason is None else None
        if tier.scaling_rounds == 0:
            scaling_plan, scaling_reason = None, f"the {tier.name} tier measures no scaling"
        else:
            scaling_plan, scaling_reason = plan_scaling(host_cpus, tier.scaling_rounds, tier.scaling_steps)
        for line in describe_plan(tier, profiles, methods, data, accuracy_profile, accuracy_reason, scaling_plan,
                                  scaling_reason):
            log(line)
        entries = []
        for profile in profiles:
            cap = plan_cap(profile, cgroup_root, cgroup_note)
            measured_here = accuracy_profile is not None and profile.name == accuracy_profile.name
            reason = accuracy_reason or (None if measured_here else f"measured once per run, under profile "
                                                                     f"{accuracy_profile.name}")
            entries.append(measure_profile(profile, tier, methods, data, cap, host, config, measured_here, reason,
                                           workdir, log))
        scaling = scaling_unavailable(scaling_reason) if scaling_plan is None else measure_scaling(scaling_plan, workdir)
    result = {
        "schema_version": SCHEMA_VERSION,
        "suite_version": __version__,
        "created_utc": created,
        "command": " ".join(["q4bench", "bench", "--tier", tier.name]
                            + [f"--profile {p.name}" for p in profiles] + [f"--method {m}" for m in methods]),
        "wall_seconds": time.perf_counter() - start_wall,
        "host": host,
        "tier": {"name": tier.name, "summary": tier.summary, "plan": _tier_plan(tier)},
        "data": {"kind": data.kind, "source": data.source, "note": data.note},
        "accuracy": {
            "measured": accuracy_profile is not None,
            "profile": accuracy_profile.name if accuracy_profile else None,
            "reason": accuracy_reason,
            "budget": asdict(tier.accuracy) if tier.accuracy and accuracy_profile else None,
        },
        "methods": methods,
        "baseline_method": BASELINE,
        "flop_convention": FLOP_CONVENTION,
        "method_costs": method_costs(methods),
        "profiles": entries,
        "scaling": scaling,
    }
    path = write_new_result(config.out, result)  # beside, never over, a result of the same second
    log(f"result: {path}")
    return path


def method_costs(methods: list[str]) -> dict:
    """Per method: the kernels it really runs here and its bit operations relative to FP32 (an estimate,
    CPT's cost model), over the paper recipe's steps (CPT's bit widths cycle over the run)."""
    from .methods import get_method, method_cost
    from .model import VGG4bit, layer_macs_per_image
    from .train import get_recipe

    recipe = get_recipe(PAPER_RECIPE)
    steps = recipe.epochs * datamod.num_train_batches(CIFAR10_TRAIN_IMAGES, recipe.batch_size)
    macs = layer_macs_per_image(VGG4bit(datamod.dataset_spec("cifar10").num_classes))
    over = f"the {recipe.name} recipe's {steps:,} steps ({recipe.epochs} epochs)"
    return {name: dict(method_cost(get_method(name), macs, steps), steps=over) for name in methods}


def _tier_plan(tier: Tier) -> dict:
    plan = asdict(tier)
    plan.pop("name"), plan.pop("summary")
    plan["synthetic_images"] = list(tier.synthetic_images)
    return plan


def conv_kernels_line(kernels: dict, sgemm_gflops: float, baseline: dict) -> str:
    """One line on where the convolutions' rate stands against SGEMM, pass by pass."""
    passes = ", ".join(
        f"{name.replace('_', '-')} {kernels[name]['gflops']:.0f} GFLOP/s ({kernels[name]['gflops'] / sgemm_gflops:.2f} of SGEMM)"
        for name in CONV_PASSES
    )
    total = sum(kernels[name]["seconds"] for name in CONV_PASSES)
    step = baseline.get("step_seconds_median")
    share = f"; {total:.2f} s together, of the baseline's {step:.2f} s step" if step else ""
    return f"conv kernels timed alone: {passes}{share}"


def ceiling_line(ceiling: dict) -> str:
    """'ceiling: fp32 120.3 GFLOP/s (conv 3 forward), bf16 250.1 (square), of 23 shapes; peak ...'."""
    parts = [f"{p} {ceiling[p]['gflops']:.1f} GFLOP/s ({ceiling[p]['shape']['origin']})"
             for p in PRECISIONS if ceiling.get(p)]
    shapes = len(next((ceiling[p]["shapes"] for p in PRECISIONS if ceiling.get(p)), []))
    peak = ceiling.get("peak") or {}
    said = (f"theoretical FMA peak fp32 {peak['fp32_gflops']:.0f} GFLOP/s (estimated: {peak['formula']}; "
            f"{peak['clock_source']})" if peak.get("fp32_gflops") else f"no theoretical peak: {peak.get('reason')}")
    return f"ceiling, best of {shapes} GEMM shapes: " + ", ".join(parts) + f"; {said}"


def summary_lines(result: dict) -> list[str]:
    """A short human summary of a result (printed after a bench)."""
    lines = []
    costs = result.get("method_costs", {})
    for entry in result["profiles"]:
        sg = entry["sgemm_gflops"]
        lines.append(f"{entry['profile']}: {entry['threads']} thread(s), status {entry['status']}, "
                     f"SGEMM {sg:.1f} GFLOP/s" if sg else f"{entry['profile']}: status {entry['status']}")
        if entry.get("ceiling"):
            lines.append("  " + ceiling_line(entry["ceiling"]))
        kernels = entry.get("conv_kernels")
        if kernels and sg:
            lines.append("  " + conv_kernels_line(kernels, sg, entry["methods"].get(result["baseline_method"], {})))
        for name, m in entry["methods"].items():
            if m["train_images_per_s"] is None:
                lines.append(f"  {name}: {m['status']} ({m['status_detail']})")
                continue
            ratio = entry["step_time_ratio"].get(name)
            spread = entry.get("step_time_ratio_range", {}).get(name)
            acc = m["accuracy"]["top1_percent"] if m["accuracy"] else None
            method = m.get("method", name)
            bitops = costs[method]["bitops_ratio"]["value"] if method in costs else None
            lines.append(
                f"  {name}: train {m['train_images_per_s']:.1f} img/s, step ratio {ratio:.3f}"
                + (f" [{spread[0]:.3f}-{spread[1]:.3f}]" if spread and name != result["baseline_method"] else "") + ", "
                f"{m['achieved_gflops']:.1f} GFLOP/s = {m['efficiency']:.2f} of the "
                f"{m.get('efficiency_baseline') or 'fp32 SGEMM'} ceiling"
                + (f" [ANOMALY: {m['efficiency_anomaly']}]" if m.get("efficiency_anomaly") else "")
                + (f" [rounds {m['efficiency_range'][0]:.2f}-{m['efficiency_range'][1]:.2f}]" if m.get("efficiency_range") else "")
                + ", eval "
                f"{m['eval_images_per_s']:.0f} img/s, peak RSS {(m['peak_rss_bytes'] or 0) / 2**20:.0f} MiB, energy "
                f"{m['energy']['method']}" + (f", top-1 {acc:.2f}%" if acc is not None else "")
                + (f", bf16 {m['precision_support']}" if m.get("precision") == "bf16" else "")
                + (f", bit ops {bitops:.4f} of FP32 (estimated; simulated here on float kernels)" if bitops else "")
            )
    if "scaling" in result:
        lines.append(scaling_summary_line(result["scaling"]))
    return lines
