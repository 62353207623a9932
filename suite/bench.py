"""`q4bench bench`: for each hardware profile, fresh child processes (suite.bench_child) measure the
SGEMM ceiling, interleaved training throughput of every method, eval throughput, peak memory, energy and
(once per run) accuracy at the tier's budget; one JSON result file is written atomically.

The parent never measures anything itself: it plans, starts children with the profile's threads and memory
cap, classifies how each ended (ok, oom, failed) and assembles the result."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__
from . import data as datamod
from .bounds import check_arch_name, check_count
from .ceiling import fma_peak
from .child import KILLED, STDOUT_TO_PARENT, TIMED_OUT, ChildEnd, TaskFiles, last_line, module_argv, run, task_spec
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
    usable_cpus,
)
from .scaling import ScalingPlan, measure_scaling, plan_scaling
from .scaling import summary_line as scaling_summary_line
from .scaling import unavailable as scaling_unavailable
from .results import DEFAULT_RESULTS_DIR, SCHEMA_VERSION, write_new_result
from .spec import (ARM_SEPARATOR, BASELINE, CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES, CONV_PASSES, DEFAULT_METHODS,
                   PAPER_ARCH, PAPER_RECIPE, PRECISIONS, arm_name)
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
    arch: str = PAPER_ARCH  # the network every arm trains (model.ARCHS); the paper's VGG unless asked
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
        check_arch_name(self.arch)


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


def resolve_profiles(config: BenchConfig, host_cpus: int) -> list[Profile]:
    names = config.profiles or list(DEFAULT_PROFILES)
    profiles = [resolve_profile(n, config.profiles_dir, host_cpus) for n in names]
    if len({p.name for p in profiles}) != len(profiles):
        raise UserError(f"a profile is named twice in {', '.join(names)}")
    return profiles


def plan_cgroup(config: BenchConfig, profiles: list[Profile]) -> tuple[Path | None, str | None]:
    """(the delegated cgroup v2 root that memory caps are enforced under, or None; why none) for the profiles."""
    if not any(p.memory_cap_mib for p in profiles):
        return None, None
    candidate = Path(config.cgroup_root) if config.cgroup_root else find_delegated_cgroup()
    if candidate is None:
        return None, "no delegated cgroup v2 directory with the memory controller (pass --cgroup-root)"
    note = cgroup_root_usable(candidate)
    if note is not None and config.cgroup_root:
        raise UserError(f"--cgroup-root {candidate}: {note}")
    return (candidate, None) if note is None else (None, note)


def plan_accuracy(tier: Tier, data: DataPlan, profiles: list[Profile], host_cpus: int) -> AccuracyPlan:
    if tier.accuracy is None:
        reason = f"the {tier.name} tier measures no accuracy (synthetic data, a few steps)"
    elif data.kind != "cifar10":
        reason = f"no real CIFAR-10: {data.note}"
    else:
        reason = None
    return AccuracyPlan(pick_accuracy_profile(profiles, host_cpus) if reason is None else None, reason)


def plan_bench_scaling(tier: Tier, host_cpus: int, arch: str) -> tuple[ScalingPlan | None, str | None]:
    if tier.scaling_rounds == 0:
        return None, f"the {tier.name} tier measures no scaling"
    return plan_scaling(host_cpus, tier.scaling_rounds, tier.scaling_steps, arch=arch)


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


CHILD_ARGV = module_argv("suite.bench_child")


def run_child(task: dict, profile: Profile, cap: CapPlan, workdir: Path, name: str, timeout_s: float | None,
              child_argv: tuple[str, ...] = CHILD_ARGV) -> ChildOutcome:
    """Run `python -m suite.bench_child TASK RESULT` (a task child, suite/child.py) with the profile's threads
    and cap; classify how it ended. (Tests pass another child_argv to stand in for a child the kernel kills.)"""
    task = dict(task, threads=profile.threads, memory_cap_mib=profile.memory_cap_mib, cap_enforcement=cap.enforcement)
    slot = None
    if cap.enforcement == "cgroup":
        slot = CgroupSlot.create(cap.cgroup_root, f"q4bench-{os.getpid()}-{name}", profile.memory_cap_mib)
        task["cgroup_dir"] = str(slot.path)
    files = TaskFiles(workdir / f"{name}.task.json", workdir / f"{name}.result.json", workdir / f"{name}.stderr")
    try:
        end = run(task_spec(child_argv, task, files, profile.threads, stdout=STDOUT_TO_PARENT, timeout_s=timeout_s))
        killer = slot if slot is not None and slot.oom_killed() else None
    finally:
        if slot is not None:
            slot.remove()
    status, detail = _classify(end, cap, killer)
    if status == "oom" and cap.enforcement != "none":
        detail = f"{detail} [cap {profile.memory_cap_mib} MiB by {cap.enforcement}]"
    return ChildOutcome(status, detail, end.result if status == "ok" else {}, end.seconds)


def _classify(end: ChildEnd, cap: CapPlan, oom_killer: CgroupSlot | None) -> tuple[str, str | None]:
    """(ok, oom or failed; why): a timeout, then the child's own word, then the kernel's, then its exit."""
    result = end.result or {}
    if end.status == TIMED_OUT:
        return "failed", end.describe()
    if end.returncode == 0 and result.get("status") == "ok":
        return "ok", None
    if result.get("status") in ("oom", "failed"):
        return result["status"], result.get("detail")
    if oom_killer is not None:
        return "oom", f"killed by the kernel OOM killer inside the {oom_killer.describe()}"
    memory_line = _memory_line(end.spec.log.read_text(errors="replace"))
    if cap.enforcement != "none" and memory_line:
        return "oom", f"died under the memory cap: {memory_line}"
    if end.status == KILLED:
        return "failed", end.describe()
    last = last_line(end.spec.log, missing="no output", empty="no output", limit=None)
    return "failed", f"exited with status {end.returncode}: {last}"


# ---------------------------------------------------------------------------------------------
# One profile


@dataclass(frozen=True)
class BenchPlan:
    """What every profile of one bench shares: what is measured (tier, methods), on which data and host, with
    which settings; where the children's files go, where progress lines go, and when the bench began."""

    tier: Tier
    methods: list[str]
    data: DataPlan
    host: dict
    config: BenchConfig
    workdir: Path
    log: Callable[[str], None]
    created: str  # UTC, as the result records it
    started: float  # time.perf_counter() at the start


@dataclass(frozen=True)
class AccuracyPlan:
    """Accuracy does not depend on the profile, so it is measured once per bench: under ``profile``, or (None)
    not at all, for ``reason``."""

    profile: Profile | None
    reason: str | None

    def measured_under(self, profile: Profile) -> bool:
        return self.profile is not None and profile.name == self.profile.name

    def note_for(self, profile: Profile) -> str | None:
        """Why a profile's entries have no accuracy of their own; None under the accuracy profile."""
        if self.reason is not None or self.measured_under(profile):
            return self.reason
        return f"measured once per run, under profile {self.profile.name}"


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


# A method entry's fields from the throughput child (None, or [] for the windows, when it gave none).
THROUGHPUT_FIELDS = ("train_images_per_s", "train_window_images_per_s", "step_seconds_median", "eval_images_per_s",
                     "achieved_gflops", "efficiency", "efficiency_baseline", "efficiency_anomaly", "efficiency_range")


def measure_profile(plan: BenchPlan, profile: Profile, cap: CapPlan, accuracy: AccuracyPlan) -> dict:
    """The result's entry for one profile (see ProfileMeasurement)."""
    return ProfileMeasurement(plan, profile, cap, accuracy).run()


class ProfileMeasurement:
    """One profile measured: one throughput child times every arm, interleaved; then one child per arm measures
    its peak memory (or trains its accuracy run); the profile's entry is assembled from what they returned."""

    def __init__(self, plan: BenchPlan, profile: Profile, cap: CapPlan, accuracy: AccuracyPlan):
        self.plan, self.profile, self.cap = plan, profile, cap
        self.measure_accuracy = accuracy.measured_under(profile)
        self.accuracy_note = accuracy.note_for(profile)
        self.batch_size = plan.tier.batch_size or profile.batch_size
        self.base_task = {
            "dataset": "cifar10", "data_dir": plan.data.data_dir, "batch_size": self.batch_size,
            "seed": plan.config.seed, "epoch_images": CIFAR10_TRAIN_IMAGES, "device": profile.device,
            "arch": plan.config.arch,
        }
        self.statuses: list[str] = []  # every child's
        self.details: list[str] = []  # why a child did not end ok

    def run(self) -> dict:
        started, load_start = time.perf_counter(), load_average()
        arms = arms_for(self.profile, self.plan.methods, host_cpu_flags())
        throughput = self._throughput(arms)
        entries = {arm["name"]: self._method_entry(arm, throughput) for arm in arms}
        return {
            **self._entry(arms, throughput.result, entries),
            "seconds": time.perf_counter() - started,
            # Other work on the host slows every figure; the load average lets a reader see it happened.
            "load_average": {"start": load_start, "end": load_average()},
        }

    def _child(self, task: dict, name: str, timeout_s: float | None) -> ChildOutcome:
        return run_child(task, self.profile, self.cap, self.plan.workdir, f"{self.profile.name}-{name}", timeout_s)

    def _record(self, outcome: ChildOutcome, what: str) -> None:
        self.statuses.append(outcome.status)
        if outcome.detail:
            self.details.append(f"{what}: {outcome.detail}")

    def _throughput(self, arms: list[dict]) -> ChildOutcome:
        tier, profile, log = self.plan.tier, self.profile, self.plan.log
        windows = tier.windows_for(len(arms))
        # a GPU's ceiling needs a multiply big enough to fill it
        sgemm_n = tier.sgemm_n if profile.device == "cpu" else max(tier.sgemm_n, 8192)
        log(f"[{profile.name}] throughput on {profile.device}: SGEMM {sgemm_n}^3 x{tier.sgemm_repeats} + 1 per round, "
            f"{tier.warmup_steps} warm-up + {windows} x {tier.steps_per_window} timed steps of batch {self.batch_size} "
            f"per arm ({', '.join(a['name'] for a in arms)}), interleaved")
        outcome = self._child(dict(
            self.base_task, job="throughput", methods=self.plan.methods, arms=arms, sgemm_n=sgemm_n,
            sgemm_repeats=tier.sgemm_repeats, warmup_steps=tier.warmup_steps, windows=windows,
            steps_per_window=tier.steps_per_window, eval_images=tier.eval_images, kernel_repeats=tier.kernel_repeats,
            cpu_model=self.plan.host["cpu_model"], watts_per_busy_thread=profile.watts_per_busy_thread,
            powercap_root=self.plan.config.powercap_root), "throughput", tier.child_timeout_s)
        log(f"[{profile.name}] throughput: {outcome.status} in {outcome.seconds:.0f} s"
            + (f" ({outcome.detail})" if outcome.detail else ""))
        if self.measure_accuracy and outcome.result:
            eta = _accuracy_eta(tier.accuracy, outcome.result)
            log(f"[{profile.name}] accuracy runs will take about {eta / 60:.0f} min at the rates just measured")
        self._record(outcome, "throughput run")
        return outcome

    def _footprint(self, arm: dict) -> ChildOutcome:
        tier, log, name, where = self.plan.tier, self.plan.log, arm["name"], f"[{self.profile.name}]"
        accuracy_task = self._accuracy_task(name) if self.measure_accuracy else None
        if accuracy_task:
            log(f"{where} {name}: accuracy run, {tier.accuracy.describe()}")
        else:
            log(f"{where} {name}: peak memory over {tier.footprint_steps} training step(s) and an eval pass")
        outcome = self._child(dict(self.base_task, job="footprint", method=arm["method"], precision=arm["precision"],
                                   footprint_steps=tier.footprint_steps, accuracy=accuracy_task),
                              name.replace(ARM_SEPARATOR, "-"), None if accuracy_task else tier.child_timeout_s)
        log(f"{where} {name}: {outcome.status} in {outcome.seconds:.0f} s"
            + (f" ({outcome.detail})" if outcome.detail else ""))
        self._record(outcome, f"{name} memory/accuracy run")
        return outcome

    def _accuracy_task(self, arm_name: str) -> dict:
        budget = self.plan.tier.accuracy
        run_dir = None
        if budget.resumable:
            # the paper's network keeps the folders it had before --arch, so its runs still resume
            arch = self.plan.config.arch
            profile_dir = self.profile.name if arch == PAPER_ARCH else f"{self.profile.name}-{arch}"
            run_dir = str(Path(self.plan.config.runs_dir) / self.plan.host["host_id"] / profile_dir / arm_name)
        return {"recipe": budget.recipe, "epochs": budget.epochs, "train_images": budget.train_images,
                "run_dir": run_dir}

    def _method_entry(self, arm: dict, throughput: ChildOutcome) -> dict:
        footprint = self._footprint(arm)
        m = throughput.result.get("methods", {}).get(arm["name"])
        accuracy = footprint.result.get("accuracy")
        if accuracy is not None:
            accuracy, note = dict(accuracy, data=self.plan.data.source), None
        elif self.measure_accuracy:
            note = f"the accuracy run ended with status {footprint.status}"
        else:
            note = self.accuracy_note
        rates = ({k: m.get(k) for k in THROUGHPUT_FIELDS} if m
                 else {k: [] if k == "train_window_images_per_s" else None for k in THROUGHPUT_FIELDS})
        return {
            "method": arm["method"],
            "precision": arm["precision"],
            "precision_support": m.get("precision_support") if m else None,
            "status": throughput.status if throughput.status != "ok" else footprint.status,
            "status_detail": "; ".join(filter(None, [throughput.detail, footprint.detail])) or None,
            **rates,
            "peak_rss_bytes": footprint.result.get("peak_rss_bytes"),
            "peak_device_memory_bytes": footprint.result.get("peak_device_memory_bytes"),
            "energy": m["energy"] if m else _unavailable_energy(f"the throughput run ended with status {throughput.status}"),
            "accuracy": accuracy,
            "accuracy_note": note,
        }

    def _entry(self, arms: list[dict], t: dict, entries: dict) -> dict:
        """The profile's entry up to its methods; ``t`` is the throughput child's result ({} when it failed)."""
        profile, cap, statuses = self.profile, self.cap, self.statuses
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
            "batch_size": self.batch_size,
            "status": "failed" if "failed" in statuses else "oom" if "oom" in statuses else "ok",
            "status_detail": "; ".join(self.details) or None,
            "sgemm_gflops": t["sgemm"]["gflops"] if t else None,
            "sgemm": t.get("sgemm"),
            "ceiling": (dict(t["ceiling"], peak=fma_peak(self.plan.host, profile.threads, profile.device))
                        if t.get("ceiling") else None),
            "train_flops_per_image": t.get("train_flops_per_image"),
            "step_time_ratio": t.get("step_time_ratio", {}),
            "step_time_ratio_range": t.get("step_time_ratio_range", {}),
            "step_time_ratio_cycles": t.get("step_time_ratio_cycles"),
            "conv_kernels": t.get("conv_kernels"),
            "methods": entries,
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


def describe_plan(plan: BenchPlan, profiles: list[Profile], accuracy: AccuracyPlan,
                  scaling: tuple[ScalingPlan | None, str | None]) -> list[str]:
    tier, methods, data = plan.tier, plan.methods, plan.data
    lines = [f"q4bench bench: tier {tier.name} ({tier.summary})",
             f"  data: {data.source}" + (f"; {data.note}" if data.note else ""),
             f"  network: {plan.config.arch}; methods: {', '.join(methods)} (fp32 is the baseline of step_time_ratio)"]
    steps = len(methods) * (tier.warmup_steps + tier.windows_for(len(methods)) * tier.steps_per_window)
    for p in profiles:
        batch = tier.batch_size or p.batch_size
        cap = f"cap {p.memory_cap_mib} MiB" if p.memory_cap_mib else "no memory cap"
        over = ", OVERSUBSCRIBED" if p.oversubscribed() else ""
        memory = ("the accuracy runs" if accuracy.measured_under(p)
                  else f"{len(methods)} x {tier.footprint_steps} memory steps")
        precisions = p.precisions(host_cpu_flags())
        lines.append(f"  profile {p.name}: {p.device}, {' + '.join(precisions)}, {p.threads} thread(s){over}, {cap}, "
                     f"batch {batch}: {steps * len(precisions)} throughput steps + {memory}")
    if accuracy.profile is not None:
        lines.append(f"  accuracy: per method, {tier.accuracy.describe()}, under profile {accuracy.profile.name}")
    else:
        lines.append(f"  accuracy: not measured ({accuracy.reason})")
    scaling_plan, scaling_reason = scaling
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
    profiles = resolve_profiles(config, host_cpus)
    methods = resolve_methods(config.methods)
    for profile in profiles:
        if profile.device == "cuda":
            require_cuda(profile)
    host = host_fingerprint()
    cgroup_root, cgroup_note = plan_cgroup(config, profiles)
    started, created = time.perf_counter(), dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(prefix="q4bench-bench-") as tmp:
        workdir = Path(tmp)
        data = plan_data(tier, config.data_dir, workdir, config.allow_download, config.seed)
        plan = BenchPlan(tier, methods, data, host, config, workdir, log, created, started)
        accuracy = plan_accuracy(tier, data, profiles, host_cpus)
        scaling_plan, scaling_reason = plan_bench_scaling(tier, host_cpus, config.arch)
        for line in describe_plan(plan, profiles, accuracy, (scaling_plan, scaling_reason)):
            log(line)
        entries = [measure_profile(plan, p, plan_cap(p, cgroup_root, cgroup_note), accuracy) for p in profiles]
        scaling = scaling_unavailable(scaling_reason) if scaling_plan is None else measure_scaling(scaling_plan, workdir)
    path = write_new_result(config.out, result_document(plan, profiles, accuracy, entries, scaling))
    log(f"result: {path}")
    return path


def result_document(plan: BenchPlan, profiles: list[Profile], accuracy: AccuracyPlan, entries: list[dict],
                    scaling: dict) -> dict:
    tier = plan.tier
    return {
        "schema_version": SCHEMA_VERSION,
        "suite_version": __version__,
        "created_utc": plan.created,
        "command": " ".join(["q4bench", "bench", "--tier", tier.name, "--arch", plan.config.arch]
                            + [f"--profile {p.name}" for p in profiles] + [f"--method {m}" for m in plan.methods]),
        "wall_seconds": time.perf_counter() - plan.started,
        "host": plan.host,
        "tier": {"name": tier.name, "summary": tier.summary, "plan": _tier_plan(tier)},
        "data": {"kind": plan.data.kind, "source": plan.data.source, "note": plan.data.note},
        "accuracy": {
            "measured": accuracy.profile is not None,
            "profile": accuracy.profile.name if accuracy.profile else None,
            "reason": accuracy.reason,
            "budget": asdict(tier.accuracy) if tier.accuracy and accuracy.profile else None,
        },
        "arch": plan.config.arch,
        "methods": plan.methods,
        "baseline_method": BASELINE,
        "flop_convention": FLOP_CONVENTION,
        "method_costs": method_costs(plan.methods, plan.config.arch),
        "profiles": entries,
        "scaling": scaling,
    }


def method_costs(methods: list[str], arch: str = PAPER_ARCH) -> dict:
    """Per method: the kernels it really runs here and its bit operations relative to FP32 (an estimate,
    CPT's cost model) on the network `arch`, over the paper recipe's steps (CPT's bit widths cycle over the
    run)."""
    from .methods import get_method, method_cost
    from .model import build_arch, layer_macs_per_image
    from .train import get_recipe

    recipe = get_recipe(PAPER_RECIPE)
    steps = recipe.epochs * datamod.num_train_batches(CIFAR10_TRAIN_IMAGES, recipe.batch_size)
    macs = layer_macs_per_image(build_arch(arch, datamod.dataset_spec("cifar10").num_classes))
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
    lines = [f"network: {result.get('arch', PAPER_ARCH)}"]
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
