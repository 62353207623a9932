"""`q4bench compare`: a reference (fp32) and one or more candidates trained for N paired seeds each at one
budget, in parallel child processes, and judged with suite.stats. Writes DIR/compare.json
(schema suite/compare_schema.json, "q4bench-compare/1").

Layout of DIR: request.json (the command's identity: a rerun must match it), plan.json (the measured
step times and the epochs they gave, so a rerun of an --hours command keeps its budget), .q4bench.lock
(suite.locks: one writer at a time), and runs/<method>-seed<k>/ holding each run's history.json,
predictions.npy, checkpoint.pt, train.log and wall.json. Resuming is cheap because every child is started with --resume: a run with a checkpoint
continues after its last finished epoch, a finished run is skipped, a fresh folder starts fresh.
With a cluster executor (suite/executors.py: --executor slurm or submitit-local) each run is a job instead
of a child, and DIR also holds jobs.json (per run: job id, state, logs, attempts) and jobs/ (submitit's files)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .atomic import write_json_atomic
from .bounds import MAX_HOURS, MAX_SEED, check_count, check_number, check_optional_count
from .child import Child, ChildSpec, TaskFiles, last_line, module_argv, task_spec
from .compare_child import TimingTask
from .config import check_data_source
from .errors import FieldError, UserError
from .executors import (DONE, JOBS_FILE, LOST, Executor, ExecutorChoice, JobBook, JobSpec, JobState, Ticket,
                        make_executor)
from .locks import hold
from .recipes import get_recipe
from .spec import (BASELINE, COMPARE_FILE, FULL_PRECISION, HISTORY_FILE, PAPER_ARCH, PLAN_FILE, PREDICTIONS_FILE,
                   REQUEST_FILE, SHORT_RECIPE, TRAIN_LOG, WALL_FILE)
from .state import check_document, load_schema, read_state
from .userfiles import CONFIG_MAX_BYTES, check_output_dir, read_user_json

SCHEMA = "q4bench-compare/1"
DEFAULT_MARGIN = 0.5
DEFAULT_OUT = "reports/compare"
DEFAULT_RECIPE = SHORT_RECIPE
DEFAULT_GPU_CHILDREN = 2
# Scoring an image is a forward pass only, about a third of a training step's forward + backward.
EVAL_COST_PER_IMAGE = 1 / 3
# Fields of request.json a rerun may change: statistics and scheduling only, never what a run trains.
MAY_CHANGE = ("margin", "parallel")
# What a request.json without the key meant (folders from before --ranks-per-run, --first-seed, --arch).
OLD_FOLDER_DEFAULTS = {"ranks_per_run": 1, "first_seed": 0, "arch": PAPER_ARCH}


@dataclass(frozen=True)
class CompareRequest:
    methods: tuple[str, ...]  # the candidates
    reference: str = BASELINE
    seeds: int = 2
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1: fresh seeds beside a study made elsewhere
    epochs: int | None = None
    hours: float | None = None
    recipe: str = DEFAULT_RECIPE
    subset: int | None = None
    synthetic: bool = False
    data_dir: str | None = None
    device: str = "cpu"
    precision: str = FULL_PRECISION
    parallel: int | None = None  # None: cores // threads on CPU, DEFAULT_GPU_CHILDREN on cuda
    threads: int | None = None  # per child; None: 1 on CPU, cores // parallel on cuda
    margin: float = DEFAULT_MARGIN
    out: str = DEFAULT_OUT
    dataset: str = "cifar10"
    batch_size: int | None = None  # None: the recipe's
    ranks_per_run: int = 1  # > 1: each run is a torchrun job of that many DDP ranks (suite/distributed.py)
    arch: str = PAPER_ARCH  # a key of model.ARCHS: the network every run trains
    # Where the runs train (local children, or cluster jobs through submitit); not part of the study's identity.
    executor: ExecutorChoice = field(default_factory=ExecutorChoice)

    def __post_init__(self):  # ranges shared with the CLI (suite.bounds), rules across fields; the rest: validate()
        check_count(self.seeds, "seeds")
        check_count(self.first_seed, "seed", label="--first-seed", bounds=(0, MAX_SEED - self.seeds + 1))
        for name in ("epochs", "subset", "parallel", "threads", "batch_size", "ranks_per_run"):
            check_optional_count(getattr(self, name), name)
        if self.hours is not None:
            check_number(self.hours, "--hours", 0, MAX_HOURS)
        check_number(self.margin, "--margin", 0, 100)
        if (self.epochs is None) == (self.hours is None):
            raise FieldError(None, "give the budget as exactly one of --epochs E or --hours H")
        check_data_source(self.data_dir, self.synthetic)

    @property
    def seed_numbers(self) -> range:
        return range(self.first_seed, self.first_seed + self.seeds)


@dataclass(frozen=True)
class Run:
    method: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-seed{self.seed}"


# ---------------------------------------------------------------------------------------------
# Validation: every bad option is one line naming the option and its value, before anything starts


def _cores() -> int:
    from .profiles import usable_cpus

    return usable_cpus()


def validate(req: CompareRequest) -> CompareRequest:
    """The request with defaults resolved; UserError on the first bad option."""
    _check_names(req)
    _check_options(req)
    parallel, threads = _children(req)
    data_dir = None if req.synthetic else str(_data_folder(req))
    return dataclasses.replace(req, parallel=parallel, threads=threads, data_dir=data_dir)


def _check_names(req: CompareRequest) -> None:
    """The methods, the network and the recipe exist, and the candidates are distinct from each other and the
    reference."""
    from .methods import get_method
    from .model import check_arch

    if not req.methods:
        raise UserError("--method is required (a candidate to compare with the reference, e.g. --method tathe4)")
    for name in (*req.methods, req.reference):
        try:
            get_method(name)
        except UserError as exc:
            raise UserError(f"--method/--reference: {exc}") from None
    if req.reference in req.methods:
        raise UserError(f"--method {req.reference}: it is the reference; name candidates only")
    if len(set(req.methods)) != len(req.methods):
        raise UserError(f"--method: a candidate is named twice ({' '.join(req.methods)})")
    try:
        check_arch(req.arch)
    except UserError as exc:
        raise UserError(f"--arch: {exc}") from None
    try:
        get_recipe(req.recipe)
    except UserError as exc:
        raise UserError(f"--recipe: {exc}") from None


def _check_options(req: CompareRequest) -> None:
    """Where the runs train fits this machine (the budget and data-source rules are CompareRequest's own)."""
    if "WORLD_SIZE" in os.environ:
        raise UserError("q4bench compare starts its own runs: do not start it under torchrun; pass "
                        "--ranks-per-run N to train each run as a torchrun job of N ranks")
    if req.ranks_per_run > 1 and req.device != "cpu":
        raise UserError(f"--ranks-per-run {req.ranks_per_run}: runs across processes use gloo on the CPU; "
                        f"drop it for --device {req.device}")
    if req.ranks_per_run > 1:  # refused now, not after the step timing: every run would fail the same way
        from .distributed import split_batch

        split_batch(req.batch_size or get_recipe(req.recipe).batch_size, req.ranks_per_run,
                    f"ranks (--ranks-per-run {req.ranks_per_run})")
    from .device import Placement

    Placement(req.device, req.precision)  # one-line errors for a bad device, precision, or no visible GPU
    if req.executor.detached:
        from .cluster import import_submitit

        import_submitit(req.executor.kind)  # a missing extra is one line, before anything is written


def _children(req: CompareRequest) -> tuple[int, int]:
    """(runs side by side, threads per run's process) with the defaults filled in."""
    cores = _cores()
    if req.device == "cuda":
        parallel = req.parallel or DEFAULT_GPU_CHILDREN
        return parallel, req.threads or max(1, cores // parallel)
    # Measured on 2 cores: two 1-thread trainings side by side made 266 img/s together, one 2-thread
    # process 244-254; so by default each child gets one thread and the cores are filled with children.
    threads = req.threads or 1
    return req.parallel or max(1, cores // (threads * req.ranks_per_run)), threads


def _data_folder(req: CompareRequest) -> Path:
    from . import data as datamod

    root = datamod.resolve_data_dir(req.data_dir)
    spec = datamod.dataset_spec(req.dataset)
    if datamod.find_folder(spec, root) is None:
        raise UserError(
            f"--data-dir {root}: no {spec.name} there (python -m suite train --data-dir {root} ... downloads it; "
            f"or pass --synthetic)"
        )
    return root.resolve()


# ---------------------------------------------------------------------------------------------
# The folder: identity, lock, plan


def identity(req: CompareRequest) -> dict:
    return {
        "reference": req.reference,
        "methods": list(req.methods),
        "seeds": req.seeds,
        "first_seed": req.first_seed,
        "epochs": req.epochs,
        "hours": req.hours,
        "recipe": req.recipe,
        "subset": req.subset,
        "batch_size": req.batch_size,
        "dataset": req.dataset,
        "data": "synthetic" if req.synthetic else req.data_dir,
        "device": req.device,
        "precision": req.precision,
        "threads": req.threads,
        "margin": req.margin,
        "parallel": req.parallel,
        "ranks_per_run": req.ranks_per_run,
        "arch": req.arch,
    }


def check_identity(out: Path, req: CompareRequest) -> None:
    """Refuse a command that would train something else into this folder; record it when new.
    More seeds are allowed (they only add runs), as are another margin and another --parallel.

    Besides the identity, request.json keeps "seeds_first" (the seed count first recorded) and
    "seeds_raised_after_result" (seeds were raised while a compare.json existed: a look before extending,
    which the result's reason mentions, since it bends the nominal error rates)."""
    path, mine = out / REQUEST_FILE, identity(req)
    history = {"seeds_first": req.seeds, "seeds_raised_after_result": False}
    if path.exists():
        saved = read_user_json(path, "compare request", CONFIG_MAX_BYTES)
        for key, value in mine.items():
            old = saved.get(key, OLD_FOLDER_DEFAULTS.get(key))
            if key in MAY_CHANGE or _same_setting(key, old, value):
                continue
            raise UserError(
                f"{out} holds a compare with {key} = {old!r}; this command asks for {value!r} "
                f"(rerun the original command to resume it, or choose another --out)"
            )
        history = _seed_history_after(saved, req, (out / COMPARE_FILE).exists())
    write_json_atomic(path, {**mine, **history})


def _seed_history_after(saved: dict, req: CompareRequest, result_exists: bool) -> dict:
    first = saved.get("seeds_first", saved["seeds"])  # a folder from before seeds_first: its count then
    raised_now = req.seeds > saved["seeds"] and result_exists
    return {"seeds_first": first if isinstance(first, int) else saved["seeds"],
            "seeds_raised_after_result": saved.get("seeds_raised_after_result") is True or raised_now}


def seed_history(out: Path) -> tuple[int | None, bool]:
    """(seeds first recorded, raised after a result?) from OUT/request.json; (None, False) when unknown."""
    try:
        saved = json.loads((out / REQUEST_FILE).read_text())
    except (OSError, ValueError):
        return None, False
    first = saved.get("seeds_first") if isinstance(saved, dict) else None
    return (first, saved.get("seeds_raised_after_result") is True) if isinstance(first, int) else (None, False)


def _same_setting(key: str, old, new) -> bool:
    if key == "seeds":  # more seeds only add runs
        return isinstance(old, int) and new >= old
    if key == "data":  # the real data's folder differs from machine to machine; a study moves between them
        return (old == "synthetic") == (new == "synthetic")
    return old == new


def all_runs(req: CompareRequest) -> list[Run]:
    # Seed-major, reference first: with two children the two halves of a pair run side by side.
    return [Run(m, s) for s in req.seed_numbers for m in (req.reference, *req.methods)]


# ---------------------------------------------------------------------------------------------
# Children


def _data_args(req: CompareRequest) -> list[str]:
    return ["--synthetic"] if req.synthetic else ["--data-dir", str(req.data_dir)]


def _device_args(req: CompareRequest) -> list[str]:
    return ["--device", req.device, "--precision", req.precision]


def train_command(req: CompareRequest, run: Run, epochs: int, out: Path) -> list[str]:
    launcher = [sys.executable]
    if req.ranks_per_run > 1:  # PyTorch's own launcher; --standalone: a private rendezvous on a free port
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(req.ranks_per_run)]
    cmd = [*launcher, "-m", "suite", "train", "--method", run.method, "--arch", req.arch, "--recipe", req.recipe,
           "--epochs", str(epochs), "--seed", str(run.seed), "--threads", str(req.threads),
           "--dataset", req.dataset, *_data_args(req), *_device_args(req), "--out", str(out), "--resume"]
    if req.subset is not None:
        cmd += ["--subset", str(req.subset)]
    if req.batch_size is not None:
        cmd += ["--batch-size", str(req.batch_size)]
    return cmd


def run_finished(run_dir: Path, epochs: int) -> bool:
    history = run_dir / HISTORY_FILE
    if not history.is_file() or not (run_dir / PREDICTIONS_FILE).is_file():
        return False
    try:
        return len(read_state(history, "history", "run history")["epochs"]) >= epochs
    except UserError:
        return False


def epochs_done(run_dir: Path) -> int:
    try:
        return len(read_state(run_dir / HISTORY_FILE, "history", "run history")["epochs"])
    except UserError:
        return 0


# ---------------------------------------------------------------------------------------------
# The plan: step times measured in children, the budget, the estimated time


def measure_step_times(req: CompareRequest, out: Path, batch: int,
                       log: Callable[[str], None]) -> tuple[dict[str, float], float]:
    """Seconds per training image of each method, timed in children run P at a time like the runs, and the
    longest child's start-up (its wall time beyond the timed steps: imports, data, model), paid once per run."""
    methods = [req.reference, *req.methods]
    tmp = out / "timing"
    tmp.mkdir(parents=True, exist_ok=True)
    result: dict[str, float] = {}
    startup = 0.0
    for first in range(0, len(methods), req.parallel):
        wave = methods[first : first + req.parallel]
        children = {m: Child(_timing_child(req, m, batch, tmp)) for m in wave}
        for m, child in children.items():
            end = child.wait()
            if not end.ok:
                raise UserError(f"timing {m} failed (exit {end.returncode}): {last_line(end.spec.log)}")
            result[m] = end.result["seconds_per_image"]
            startup = max(startup, end.seconds - end.result["steps"] * end.result["seconds_per_step"])
    log(f"compare: timed {', '.join(f'{m} {1 / s:.0f} img/s' for m, s in result.items())} per child "
        f"({req.threads} thread(s), {min(req.parallel, len(methods))} side by side)")
    return result, startup


def _timing_child(req: CompareRequest, method: str, batch: int, folder: Path) -> ChildSpec:
    """The task child (suite/compare_child.py) that times ``method``: TIMING/METHOD.task.json in,
    METHOD.json and METHOD.log out."""
    task = TimingTask(method, req.arch, req.recipe, req.device, req.precision,
                      str(req.data_dir) if req.data_dir else None, req.synthetic, req.threads, batch)
    files = TaskFiles(folder / f"{method}.task.json", folder / f"{method}.json", folder / f"{method}.log")
    return task_spec(module_argv("suite.compare_child"), dataclasses.asdict(task), files, req.threads)


def makespan(durations: list[float], slots: int) -> float:
    """Wall time of running jobs in this order on ``slots`` workers, each job to the first free one."""
    free = [0.0] * max(1, slots)
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free) if durations else 0.0


def epoch_seconds(spi: float, train_images: int, test_images: int) -> float:
    return spi * (train_images + EVAL_COST_PER_IMAGE * test_images)


def make_plan(req: CompareRequest, out: Path, sizes: tuple[int, int, int], log: Callable[[str], None]) -> dict:
    """plan.json: reused on a rerun (so --hours keeps the epochs it first gave), else measured now."""
    path = out / PLAN_FILE
    if path.exists():
        plan = read_state(path, "plan", "compare plan (delete it to measure anew)")
        missing = [m for m in (req.reference, *req.methods) if m not in plan["seconds_per_image"]]
        if not missing:
            return plan
    train_images, test_images, batch = sizes
    spi, startup = measure_step_times(req, out, min(batch, train_images), log)
    if req.hours is not None:
        per_epoch = [epoch_seconds(spi[r.method], train_images, test_images) for r in all_runs(req)]
        # Start-ups are not part of an epoch; the hours left after them buy the epochs.
        hours_left = req.hours * 3600 - makespan([startup] * len(per_epoch), req.parallel)
        one_epoch = makespan(per_epoch, req.parallel)
        epochs = int(max(0.0, hours_left) // one_epoch)
        if epochs < 1:
            raise UserError(
                f"--hours {req.hours:g} is too short: one epoch of all {len(per_epoch)} runs takes about "
                f"{one_epoch / 3600:.2f} h here at the measured step times"
            )
    else:
        epochs = req.epochs
    plan = {"epochs": epochs, "seconds_per_image": spi, "startup_seconds": startup, "parallel": req.parallel,
            "threads": req.threads, "hours": req.hours}
    write_json_atomic(path, plan)
    return plan


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


def plan_lines(req: CompareRequest, plan: dict, sizes: tuple[int, int], batch: int, runs_dir: Path) -> list[str]:
    train_images, test_images = sizes
    epochs, spi = plan["epochs"], plan["seconds_per_image"]
    runs = all_runs(req)
    done = {r: epochs_done(runs_dir / r.name) for r in runs}
    finished = [r for r in runs if run_finished(runs_dir / r.name, epochs)]
    remaining = [plan["startup_seconds"] + epoch_seconds(spi[r.method], train_images, test_images)
                 * (epochs - min(done[r], epochs)) for r in runs if r not in finished]
    steps = math.ceil(train_images / batch)
    if req.hours is not None:
        budget = (f"--hours {req.hours:g} -> {epochs} epoch(s) per run: one epoch of all runs takes "
                  f"{_fmt_seconds(makespan([epoch_seconds(spi[r.method], *sizes) for r in runs], req.parallel))} "
                  f"at the step times measured in children before this plan")
    else:
        budget = f"{epochs} epoch(s) per run"
    return [
        "q4bench compare plan:",
        f"  runs: {req.reference} (reference) and {', '.join(req.methods)}, "
        f"seeds {req.first_seed}..{req.seed_numbers[-1]}: {len(runs)} runs "
        f"({len(finished)} finished, {sum(1 for r in runs if r not in finished and done[r])} to resume, "
        f"{sum(1 for r in runs if r not in finished and not done[r])} to start)",
        f"  budget: {budget}, {req.recipe} recipe; {epochs} x {train_images:,} = {epochs * train_images:,} training "
        f"images per run ({epochs * steps} steps of batch {batch}); scored on {test_images:,} test images",
        f"  device: {req.device}, {req.precision}; {req.threads} thread(s) per child, {req.parallel} children in parallel"
        + (f"; each run a torchrun job of {req.ranks_per_run} DDP ranks ({req.threads} thread(s) each)"
           if req.ranks_per_run > 1 else ""),
        "  step time per child: " + ", ".join(f"{m} {1 / s:.0f} img/s" for m, s in spi.items()),
        f"  estimated time: {_fmt_seconds(makespan(remaining, req.parallel))} for what is left "
        f"(a child's start-up {plan['startup_seconds']:.0f} s per run; scoring counted as a third of a training "
        f"step per image)",
        *_power_lines(req, epochs, runs_dir),
        f"  folder: {runs_dir.parent} (rerun the same command to resume)",
    ]


def _finished_gaps(req: CompareRequest, candidate: str, epochs: int, runs_dir: Path) -> list[float]:
    """Reference minus candidate final accuracy of the seed pairs already finished in this folder."""
    gaps = []
    for seed in req.seed_numbers:
        dirs = [runs_dir / Run(m, seed).name for m in (req.reference, candidate)]
        if not all(run_finished(d, epochs) for d in dirs):
            continue
        try:
            ref, cand = (read_state(d / HISTORY_FILE, "history", "run history")["final_test_acc"] for d in dirs)
        except UserError:
            continue  # a broken history is refused later, by build_result, with its path
        if ref is None or cand is None:
            continue
        gaps.append(ref - cand)
    return gaps


def _power_lines(req: CompareRequest, epochs: int, runs_dir: Path) -> list[str]:
    """Per candidate, what the planned seed count can show: with the sd of the pairs already finished here
    when there are stats.MIN_PAIRS_FOR_SD of them, else with the assumed pilot sd."""
    from . import stats

    lines = []
    for cand in req.methods:
        gaps = _finished_gaps(req, cand, epochs, runs_dir)
        sd = statistics.stdev(gaps) if len(gaps) >= stats.MIN_PAIRS_FOR_SD else 0.0
        source = f"sd of the {len(gaps)} finished pairs here" if sd > 0 else stats.PILOT_SD_SOURCE
        power = stats.plan_power(req.seeds, sd if sd > 0 else stats.PILOT_SD, req.margin, source)
        lines.append(f"  power, {cand}: {stats.power_text(power, req.margin)}")
    return lines


# ---------------------------------------------------------------------------------------------
# Running


def execute(req: CompareRequest, runs: list[Run], epochs: int, runs_dir: Path, log: Callable[[str], None],
            executor: Executor | None = None) -> None:
    """Train every unfinished run through ``executor`` (default: the one req.executor names; --executor local
    runs P children at a time). After a failure nothing new starts: local children are let finish, a cluster
    study's other jobs are cancelled (either way their finished epochs are kept for the rerun); then it raises.
    Cluster jobs are recorded in OUT/jobs.json: a rerun re-attaches to those still queued or running, and a
    lost job (killed, preempted, timed out) is submitted again, up to req.executor.max_retries times in a row
    without a newly finished epoch."""
    if executor is None:
        executor = make_executor(req.executor, runs_dir.parent.resolve(), req.parallel,
                                 req.threads * req.ranks_per_run, req.device)
    jobs = _StudyJobs(req, epochs, runs_dir.resolve() if executor.detached else runs_dir, log, executor)
    try:
        jobs.reattach_or_queue(runs)
        jobs.run()
    finally:
        jobs.stop()
    if jobs.failures:
        failures = jobs.failures
        raise UserError(f"run {failures[0]}" + (f"; {len(failures) - 1} more failed" if len(failures) > 1 else ""))


class _StudyJobs:
    """One execute(): runs waiting here, runs active as jobs, and the failures that stop the study."""

    def __init__(self, req: CompareRequest, epochs: int, runs_dir: Path, log: Callable[[str], None],
                 executor: Executor):
        self.req, self.epochs, self.runs_dir, self.log, self.executor = req, epochs, runs_dir, log, executor
        self.book = JobBook(runs_dir.parent, executor)
        self.queue: list[Run] = []
        self.active: dict[Run, Ticket] = {}
        self.failures: list[str] = []
        self.begun: dict[Run, int] = {}  # epochs the run had when its current job started
        self.lost: dict[Run, int] = {}  # its jobs lost in a row without a newly finished epoch

    def reattach_or_queue(self, runs: list[Run]) -> None:
        """Follow the jobs recorded as queued or running (even of a finished run: the record then ends as it
        did), and queue the other unfinished runs."""
        for run in runs:
            ticket = self.book.live_ticket(run.name)
            if ticket is None:
                if not run_finished(self.runs_dir / run.name, self.epochs):
                    self.queue.append(run)
                continue
            record = self.book.runs[run.name]
            self.active[run] = self.executor.attach(ticket)
            self.begun[run] = record.get("epochs_done_at_submit") or 0
            self.log(f"compare: re-attached to {run.name} ({self.executor.name} job {ticket.job_id}, "
                     f"{record['state']} when last seen)")

    def run(self) -> None:
        while self.queue or self.active:
            self._start_next()
            if self.failures and (self.executor.detached or not self.active):
                break
            time.sleep(self.executor.poll_seconds)
            for run, ticket in list(self.active.items()):
                state = self.executor.state(ticket)
                self.book.update(run.name, state)
                if state.ended:
                    del self.active[run]
                    self._settle(run, state)

    def _start_next(self) -> None:
        free = len(self.queue) if self.executor.slots is None else self.executor.slots - len(self.active)
        if self.failures or free <= 0 or not self.queue:
            return
        batch, self.queue = self.queue[:free], self.queue[free:]
        done = {run: epochs_done(self.runs_dir / run.name) for run in batch}
        specs = [JobSpec(run.name, tuple(train_command(self.req, run, self.epochs, self.runs_dir / run.name)),
                         self.req.threads, self.runs_dir / run.name) for run in batch]
        for run, ticket in zip(batch, self.executor.submit(specs)):
            self.active[run], self.begun[run] = ticket, done[run]
            self.book.submitted(run.name, ticket, done[run])
            job = f" ({self.executor.name} job {ticket.job_id})" if self.executor.detached else ""
            self.log(f"compare: {'resuming' if done[run] else 'starting'} {run.name}"
                     f"{f' after epoch {done[run]}' if done[run] else ''}{job}")

    def _settle(self, run: Run, state: JobState) -> None:
        run_dir = self.runs_dir / run.name
        if state.wall_seconds is not None:
            _add_wall(run_dir, state.wall_seconds)
        detail = state.detail
        if state.phase == LOST:
            progressed = epochs_done(run_dir) > self.begun.get(run, 0)
            self.lost[run] = 0 if progressed else self.lost.get(run, 0) + 1
            limit = self.req.executor.max_retries
            if self.lost[run] <= limit:
                self.log(f"compare: {run.name}: {detail}; submitting it again "
                         f"({'it had finished an epoch' if progressed else f'retry {self.lost[run]} of {limit}'})")
                self.queue.append(run)
                return
            detail += f"; lost {self.lost[run]} times in a row without finishing an epoch (--max-retries {limit})"
        if state.phase != DONE or not run_finished(run_dir, self.epochs):
            self.failures.append(f"{run.name} {detail} (log {state.log or run_dir / TRAIN_LOG})")
            return
        history = read_state(run_dir / HISTORY_FILE, "history", "run history")
        self.log(f"compare: finished {run.name}: test {history['final_test_acc']:.2f}% after "
                 f"{len(history['epochs'])} epoch(s)")

    def stop(self) -> None:
        """Interrupted or failed with jobs active: local children die (their finished epochs are on disk);
        cluster jobs are cancelled after a failure, and otherwise keep running for a rerun to re-attach."""
        if not self.active:
            return
        if self.executor.detached and not self.failures:
            self.log(f"compare: {len(self.active)} {self.executor.name} job(s) keep running; rerun the same command "
                     "to re-attach to them")
            return
        for ticket in self.active.values():
            self.executor.kill(ticket)
        if self.executor.detached:
            self.log(f"compare: cancelled the study's {len(self.active)} other job(s); their finished epochs are kept")


def _add_wall(run_dir: Path, seconds: float) -> None:
    # Cumulative across reruns: what the compare spent on this run in child processes that exited.
    path = run_dir / WALL_FILE
    wall = read_state(path, "wall", "run wall time") if path.exists() else {"wall_seconds": 0.0, "attempts": 0}
    write_json_atomic(path, {"wall_seconds": wall["wall_seconds"] + seconds, "attempts": wall["attempts"] + 1})


# ---------------------------------------------------------------------------------------------
# The result


def _sizes(req: CompareRequest) -> tuple[int, int, int]:
    """(train images, test images, batch size) the runs will see."""
    from . import data as datamod

    train, test, _ = datamod.load_data(req.dataset, req.data_dir, req.synthetic, req.subset, 0)
    return len(train), len(test), req.batch_size if req.batch_size is not None else get_recipe(req.recipe).batch_size


def _labels_loader(req: CompareRequest):
    """seed -> test labels (numpy). Synthetic data is generated from the seed, real data is one set."""
    from . import data as datamod

    cache: dict[int, object] = {}

    def labels(seed: int):
        key = seed if req.synthetic else 0
        if key not in cache:
            _, test, _ = datamod.load_data(req.dataset, req.data_dir, req.synthetic, req.subset, seed)
            cache[key] = test.labels.numpy()
        return cache[key]

    return labels


def _device_name(req: CompareRequest, history: dict) -> str:
    # What the children ran on, as they recorded it; the parent never touches the GPU itself.
    if history.get("device_name"):
        return history["device_name"]
    from .device import Placement

    return Placement(req.device, req.precision).device_name()


def _check_run_matches(run_dir: Path, history: dict, run: Run, req: CompareRequest, epochs: int) -> None:
    """A finished run folder counts only if it is the run this compare would have trained (it may have been
    trained by `q4bench train` beforehand, or copied in): same method, seed, recipe, budget and precision."""
    expected = {"method": run.method, "seed": run.seed, "arch": req.arch, "recipe": req.recipe,
                "planned_epochs": epochs, "precision": req.precision}
    older = {"precision": FULL_PRECISION, "planned_epochs": epochs, "arch": PAPER_ARCH}  # what older histories lacking a key meant
    for key, want in expected.items():
        got = history.get(key, older.get(key))
        if got != want:
            raise UserError(f"{run_dir / HISTORY_FILE}: {key} is {got!r}, this compare needs {want!r}; move that "
                            "run folder away (or choose another --out) and rerun")
    if len(history.get("epochs", [])) < epochs:  # never compare a run that did not finish its budget
        raise UserError(f"{run_dir / HISTORY_FILE}: {len(history.get('epochs', []))} of {epochs} epoch(s) trained; "
                        "rerun the same compare command to finish it")
    if history["final_test_acc"] is None or not history["epochs"]:
        raise UserError(f"{run_dir / HISTORY_FILE}: final_test_acc is null or epochs is empty, in a run that "
                        f"should be finished; move that run folder away and rerun")


@dataclass(frozen=True)
class _FinishedRun:
    run: Run
    history: dict
    predictions: object  # numpy: the top-1 class of every test image
    row: dict  # its entry in compare.json's "runs"


def build_result(req: CompareRequest, epochs: int, out: Path) -> dict:
    """The compare.json document from the finished runs in OUT/runs (every statistic from suite.stats)."""
    from .measure.host import host_fingerprint
    from .provenance import stamp

    labels_of = _labels_loader(req)
    finished = {run: _read_finished_run(out, run, req, epochs, labels_of) for run in all_runs(req)}
    seeds_first, raised_after_result = seed_history(out)
    extended_from = seeds_first if seeds_first is not None and req.seeds > seeds_first else None
    comparisons = _comparisons(req, finished, labels_of, extended_from if raised_after_result else None)
    first = finished[Run(req.reference, req.first_seed)].history
    return {
        "schema": SCHEMA,
        "provenance": stamp(command="q4bench compare", **_executor_note(req)),
        "host": host_fingerprint(),
        "device": req.device,
        "device_name": _device_name(req, first),
        "precision": req.precision,
        "arch": req.arch,
        "budget": {"recipe": req.recipe, "epochs": epochs, "train_images": first["train_images"],
                   "test_images": first["test_images"], "batch_size": first["batch_size"], "hours": req.hours},
        "data_source": first["data_source"],
        "reference": req.reference,
        "margin_points": req.margin,
        "seeds_extended_from": extended_from,
        "trained_on": trained_on(f.history for f in finished.values()),
        "runs": [f.row for f in finished.values()],
        "comparisons": comparisons,
    }


def _read_finished_run(out: Path, run: Run, req: CompareRequest, epochs: int, labels_of) -> _FinishedRun:
    """A run's history and predictions, checked to be this compare's run, finished, and consistent."""
    run_dir = out / "runs" / run.name
    history = read_state(run_dir / HISTORY_FILE, "history", "run history")
    _check_run_matches(run_dir, history, run, req, epochs)
    preds = read_predictions(run_dir / PREDICTIONS_FILE)
    _check_predictions(run_dir / PREDICTIONS_FILE, preds, labels_of(run.seed), history["final_test_acc"])
    wall = run_dir / WALL_FILE
    row = {
        "method": run.method,
        "seed": run.seed,
        "final_test_acc": history["final_test_acc"],
        "best_test_acc": history["best_test_acc"],
        "final_test_acc_tta": history["epochs"][-1].get("test_acc_tta"),
        "wall_seconds": read_state(wall, "wall", "run wall time")["wall_seconds"] if wall.exists() else None,
        "history": os.path.relpath(run_dir / HISTORY_FILE, out),
        "predictions": os.path.relpath(run_dir / PREDICTIONS_FILE, out),
    }
    return _FinishedRun(run, history, preds, row)


def _check_predictions(path: Path, preds, labels, final_test_acc: float) -> None:
    """The predictions must give the accuracy the history reports, or they are not this run's."""
    import numpy as np

    if preds.shape != labels.shape:
        raise UserError(f"{path}: {preds.size} predictions for {labels.size} test images")
    acc = 100.0 * float(np.mean(preds == labels))
    if abs(acc - final_test_acc) > 1e-6:
        raise UserError(f"{path} scores {acc:.4f}%, its history.json says "
                        f"{final_test_acc:.4f}%: they are not from the same epoch or test set")


def _comparisons(req: CompareRequest, finished: dict, labels_of, looked_from: int | None) -> list[dict]:
    """Each candidate against the reference, paired seed by seed. looked_from: the seed count a result was
    seen at before seeds were added (it bends the nominal error rates), else None."""
    from . import stats

    comparisons = []
    for cand in req.methods:
        pairs = []
        for seed in req.seed_numbers:
            ref, other = finished[Run(req.reference, seed)], finished[Run(cand, seed)]
            pairs.append(stats.make_pair(seed, ref.history["final_test_acc"], other.history["final_test_acc"],
                                         labels_of(seed), ref.predictions, other.predictions))
        comparisons.append(stats.compare(cand, pairs, req.margin, looked_from).to_json())
    return comparisons


def _executor_note(req: CompareRequest) -> dict:
    # The cluster executors say where the runs trained; the local one's document stays as it always was.
    return {"executor": req.executor.kind} if req.executor.detached else {}


def trained_on(histories) -> list[dict]:
    """The hosts that trained the runs' epochs (a study may move from machine to machine), with epochs and
    commits per host; histories from before epochs recorded it count under "unrecorded"."""
    hosts: dict[str, dict] = {}
    for history in histories:
        for entry in history["epochs"]:
            where = entry.get("trained_on") or {"host_id": "unrecorded", "cpu_model": "unrecorded", "commit": None}
            host = hosts.setdefault(where["host_id"], {"host_id": where["host_id"], "cpu_model": where["cpu_model"],
                                                       "isa_caps": where.get("isa_caps") or {}, "epochs": 0,
                                                       "commits": []})
            host["epochs"] += 1
            if where.get("commit") and where["commit"] not in host["commits"]:
                host["commits"].append(where["commit"])
    return list(hosts.values())


def schema() -> dict:
    return load_schema("compare_schema.json")


def validate_result(doc: dict, source: str | os.PathLike = COMPARE_FILE) -> None:
    """A compare result (read, or built before it is written) fits compare_schema.json; else one line naming
    source and the first field that does not fit."""
    check_document(doc, schema(), source, "compare result")


def read_predictions(path: Path):
    """A run's predicted classes: a 1-D integer array (no pickled objects), else one line naming the file."""
    import numpy as np

    try:
        preds = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # an object array, a truncated or foreign file
        raise UserError(f"{path}: not a predictions file ({' '.join(str(exc).split())})") from None
    if not isinstance(preds, np.ndarray) or preds.ndim != 1 or preds.dtype.kind not in "iu":
        raise UserError(f"{path}: predictions must be a 1-D integer array, found "
                        f"{getattr(preds, 'dtype', type(preds).__name__)} of shape {getattr(preds, 'shape', '?')}")
    return preds


def summary_line(doc: dict, comparison: dict) -> str:
    b, n = doc["budget"], comparison["n_seeds"]
    ci, method = comparison["ci95"], comparison.get("ci95_method") or ""
    kind = "; seeds x test images" if method.startswith("two-way") else ("; t" if method else "")
    ci_text = f"[95% CI {ci[0]:+.2f}, {ci[1]:+.2f}{kind}]" if ci else "[no 95% CI from 1 seed]"
    return (f"{comparison['candidate']} vs {doc['reference']}: gap {comparison['mean_gap']:+.2f} points {ci_text}, "
            f"{n} seed{'s' if n != 1 else ''}, {doc.get('arch', PAPER_ARCH)}, budget {b['recipe']} recipe {b['epochs']} epoch(s) x "
            f"{b['train_images']:,} images -> {comparison['verdict']}")


def run_compare(req: CompareRequest, log: Callable[[str], None] = print) -> dict:
    req = validate(req)
    out = check_output_dir(req.out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    with hold(out, "compare"):
        check_identity(out, req)
        train_images, test_images, batch = _sizes(req)
        plan = make_plan(req, out, (train_images, test_images, batch), log)
        for line in plan_lines(req, plan, (train_images, test_images), batch, out / "runs"):
            log(line)
        executor = make_executor(req.executor, out.resolve(), req.parallel, req.threads * req.ranks_per_run, req.device)
        if executor.detached:
            log(f"  executor: {executor.describe()}; jobs recorded in {out / JOBS_FILE}")
        execute(req, all_runs(req), plan["epochs"], out / "runs", log, executor)
        doc = build_result(req, plan["epochs"], out)
        validate_result(doc, out / COMPARE_FILE)
        write_json_atomic(out / COMPARE_FILE, doc)
    for comparison in doc["comparisons"]:
        log(summary_line(doc, comparison))
        log(f"  {comparison['reason']}")
    log(f"compare: wrote {out / COMPARE_FILE}")
    return doc
