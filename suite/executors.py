"""Where `q4bench compare` runs its trainings: the executor. One job per (method, seed) run, each the same
`python -m suite train ... --resume` command, so a job that dies and is submitted again continues after the
run's last finished epoch.

- ``local`` (the default): child processes of the compare, P at a time; they die with it.
- ``submitit-local``: the cluster path on this machine (submitit's LocalExecutor): jobs outlive the compare,
  are recorded in OUT/jobs.json and re-attached by a rerun. A rehearsal of ``slurm``.
- ``slurm``: sbatch jobs through submitit, submitted as one array; same records and re-attachment.

The compare loop sees only the Executor interface: submit(jobs) -> tickets, state(ticket), attach(ticket)
(re-attach by a recorded job id) and kill(ticket). submitit is an optional extra, imported only when one of
its executors is chosen."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_json_atomic
from .bounds import check_count
from .child import Child, ChildSpec, last_line
from .config import Count, Items, Text, check_fields, read_table, setting, table_of
from .errors import FieldError, UserError
from .spec import TRAIN_LOG
from .userfiles import RESULT_MAX_BYTES, read_user_json, read_user_toml

KINDS = ("local", "submitit-local", "slurm")
INSTALL_HINT = "pip install 'q4bench[cluster]'"
JOBS_FILE = "jobs.json"  # OUT/jobs.json: per run, its job now and the attempts before
JOBS_FOLDER = "jobs"  # OUT/jobs/: submitit's scripts, pickles and logs, and each job's outcome
DEFAULT_MAX_RETRIES = 3
# A rehearsal job's time limit when --slurm-time is not given (submitit's own default is 2 minutes).
REHEARSAL_MINUTES = 7 * 24 * 60
# sbatch options the study itself sets: another value would break its logs, arrays or timeout signal.
RESERVED_OPTIONS = ("array", "output", "error", "open-mode", "signal", "job-name", "wckey", "ntasks-per-node", "nodes")

# A job's phase: waiting, training, or how it ended (FAILED: will not fix itself; LOST: killed, preempted, timed
# out or its node failed, so submitted again; UNSEEN: it could not see the study folder).
QUEUED, RUNNING, DONE, FAILED, LOST, UNSEEN = "queued", "running", "done", "failed", "lost", "unseen"


# ---------------------------------------------------------------------------------------------
# The choice: which executor, and the Slurm parameters a user sets


@dataclass(frozen=True)
class SbatchOptions:
    """More sbatch options: a TOML table (name = "value", or name = true for a bare flag) or (name, value) pairs;
    kept as pairs."""

    expects: str = 'a table of sbatch options (qos = "high", exclusive = true)'

    def __call__(self, value) -> tuple[tuple[str, str | bool], ...]:
        pairs = tuple(value.items()) if isinstance(value, dict) else value
        if not isinstance(pairs, tuple) or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
            raise FieldError(None, f"must be {self.expects}, got {value!r}")
        for name, option in pairs:
            if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
                raise FieldError(None, f"{name}: not an sbatch option name (e.g. qos=high, or exclusive)")
            if name in RESERVED_OPTIONS:
                raise FieldError(None, f"{name}: set by q4bench itself (one job per run, logs in the study folder); "
                                       "leave it out")
            if not isinstance(option, (str, bool)) or option is False:
                raise FieldError(None, f"{name}: the value must be text (or a bare flag), got {option!r}")
        return pairs


@dataclass(frozen=True)
class SlurmSettings:
    """The Slurm parameters: a [slurm] table's keys, each also a --slurm-* flag."""

    partition: str | None = setting(Text(), None, option="--slurm-partition")
    # each job's time limit; a run that outlives it is submitted again
    time_minutes: int | None = setting(Count("time_minutes"), None, option="--slurm-time")
    cpus_per_task: int | None = setting(Count("cpus_per_task"), None, option="--slurm-cpus-per-task")  # default: threads x ranks
    gpus_per_task: int | None = setting(Count("gpus_per_task"), None, option="--slurm-gpus-per-task")  # default: 1 with cuda
    account: str | None = setting(Text(), None, option="--slurm-account")
    options: tuple[tuple[str, str | bool], ...] = setting(SbatchOptions(), (), option="--slurm-option")  # True: a bare flag
    # shell lines run before each job (module load ..., source venv/bin/activate)
    setup: tuple[str, ...] = setting(Items(Text()), (), option="--slurm-setup")

    def __post_init__(self):
        check_fields(self)

    def merged(self, **flags) -> "SlurmSettings":
        """These settings (from a TOML section) with the flags given on the command line taking precedence."""
        given = {k: v for k, v in flags.items() if v not in (None, ())}
        options = dict(self.options) | dict(given.pop("options", ()))
        setup = given.pop("setup", self.setup)
        return dataclasses.replace(self, **given, options=tuple(options.items()), setup=tuple(setup))


@dataclass(frozen=True)
class ExecutorChoice:
    kind: str = "local"
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    max_retries: int = DEFAULT_MAX_RETRIES  # lost jobs of one run in a row without a newly finished epoch

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"--executor {self.kind!r} is not one of: {', '.join(KINDS)}")
        check_count(self.max_retries, "max_retries")
        if self.kind == "local" and self.slurm != SlurmSettings():
            raise UserError("--slurm-* options and --slurm-config apply to --executor slurm (or its rehearsal, "
                            "submitit-local); add the executor or drop them")
        if self.kind == "slurm" and self.slurm.time_minutes is None:
            raise UserError("--executor slurm needs --slurm-time MINUTES (each job's time limit; a run that "
                            "outlives it is submitted again and resumes), on the command line or in --slurm-config")

    @property
    def detached(self) -> bool:
        return self.kind != "local"


# SlurmSettings field -> its command-line flag (the [slurm] TOML keys are the field names)
def load_slurm_section(path: str | os.PathLike) -> SlurmSettings:
    """The [slurm] table of a TOML file: the keys of SlurmSettings ("options" a table of sbatch options); the
    file's other tables are not read."""
    return read_table(SlurmSettings, table_of(read_user_toml(path, "slurm config"), "slurm", path), f"{path} [slurm]")


def parse_option(text: str) -> tuple[str, str | bool]:
    """--slurm-option NAME=VALUE (or a bare NAME for a flag such as exclusive), a leading -- tolerated."""
    name, sep, value = text.removeprefix("--").partition("=")
    return name, (value if sep else True)


# ---------------------------------------------------------------------------------------------
# The interface


@dataclass(frozen=True)
class JobSpec:
    """One run to train: its `train ... --resume` command, threads, and folder (train.log is its output)."""

    name: str
    command: tuple[str, ...]
    threads: int
    run_dir: Path

    @property
    def log(self) -> Path:
        return self.run_dir / TRAIN_LOG


@dataclass(frozen=True)
class Ticket:
    """A submitted job as the study folder records it: the executor's job id and the files it writes."""

    job_id: str
    log: Path  # where its failure is explained: the run's train.log (local) or the job's own log
    outcome: Path | None = None  # the job's JSON outcome (cluster executors)
    stderr: Path | None = None


@dataclass(frozen=True)
class JobState:
    phase: str  # QUEUED, RUNNING, DONE, FAILED (will not fix itself), LOST (submit again), UNSEEN (folder not shared)
    detail: str = ""  # one line: how it ended
    log: Path | None = None
    wall_seconds: float | None = None  # the training's wall time, once it ended

    @property
    def ended(self) -> bool:
        return self.phase not in (QUEUED, RUNNING)


class Executor(ABC):
    name: str
    slots: int | None  # jobs at once this side decides; None: all at once, the scheduler queues them
    detached: bool  # jobs outlive the compare: recorded in OUT/jobs.json and re-attached by a rerun
    poll_seconds: float

    @abstractmethod
    def submit(self, jobs: list[JobSpec]) -> list[Ticket]: ...

    @abstractmethod
    def state(self, ticket: Ticket) -> JobState: ...

    @abstractmethod
    def kill(self, ticket: Ticket) -> None: ...

    def attach(self, ticket: Ticket) -> Ticket:
        """Follow a job a previous compare submitted (a detached executor's); its state says if it still runs."""
        raise NotImplementedError(f"the {self.name} executor's jobs die with the compare")

    def describe(self) -> str:
        return ""


class LocalPool(Executor):
    """Child processes of this compare, ``slots`` at a time, each dying with it."""

    name, detached, poll_seconds = "local", False, 0.2

    def __init__(self, slots: int):
        self.slots = slots
        self._children: dict[str, Child] = {}

    def submit(self, jobs: list[JobSpec]) -> list[Ticket]:
        tickets = []
        for job in jobs:
            child = Child(ChildSpec(job.command, job.threads, job.log))
            self._children[str(child.pid)] = child
            tickets.append(Ticket(str(child.pid), job.log))
        return tickets

    def state(self, ticket: Ticket) -> JobState:
        end = self._children[ticket.job_id].poll()
        if end is None:
            return JobState(RUNNING)
        del self._children[ticket.job_id]
        log = end.spec.log
        return JobState(DONE if end.returncode == 0 else FAILED, f"exited {end.returncode}: {last_line(log)}", log,
                        end.seconds)

    def kill(self, ticket: Ticket) -> None:
        child = self._children.get(ticket.job_id)
        if child is not None:
            child.stop()


def make_executor(choice: ExecutorChoice, study: Path, parallel: int, cpus_per_task: int, device: str) -> Executor:
    """The executor of ``choice`` for the study folder ``study`` (absolute: the jobs' paths must be)."""
    if choice.kind == "local":
        return LocalPool(parallel)
    from .cluster import SubmititExecutor

    return SubmititExecutor(choice, study, cpus_per_task, device)


# ---------------------------------------------------------------------------------------------
# OUT/jobs.json: the study folder's record of its jobs


def recorded_jobs(study: Path) -> tuple[str | None, dict[str, dict]]:
    """(the executor, per run its job record) from STUDY/jobs.json; (None, {}) when there is none."""
    path = study / JOBS_FILE
    if not path.exists():
        return None, {}
    doc = read_user_json(path, "job record", RESULT_MAX_BYTES)
    runs = doc.get("runs")
    return doc.get("executor"), runs if isinstance(runs, dict) else {}


def live_jobs(runs: dict[str, dict]) -> list[str]:
    """The runs whose job was queued or running when last seen."""
    return sorted(name for name, rec in runs.items() if isinstance(rec, dict) and rec.get("state") in (QUEUED, RUNNING))


class JobBook:
    """Per run: the job now responsible for it (id, state, logs, outcome file) and the attempts before. Written
    by detached executors only (the local executor's children die with the compare, there is nothing to
    re-attach); read by every executor, so a study whose cluster jobs still run is not trained twice."""

    def __init__(self, study: Path, executor: Executor):
        self.path, self.study, self.executor = study / JOBS_FILE, study, executor
        recorded, self.runs = recorded_jobs(study)
        self._check_same_executor(recorded)

    def _check_same_executor(self, recorded) -> None:
        live = live_jobs(self.runs)
        if live and recorded != self.executor.name:
            ids = ", ".join(str(self.runs[n].get("job_id")) for n in live)
            raise UserError(f"{self.path}: {len(live)} run(s) have {recorded} jobs recorded as queued or running "
                            f"({ids}); rerun with --executor {recorded} to re-attach to them, or cancel them and "
                            f"delete {self.path}")

    def live_ticket(self, name: str) -> Ticket | None:
        rec = self.runs.get(name)
        if not rec or rec.get("state") not in (QUEUED, RUNNING) or not rec.get("job_id"):
            return None
        paths = {k: (self.study / rec[k] if rec.get(k) else None) for k in ("log", "outcome", "stderr")}
        return Ticket(str(rec["job_id"]), paths["log"] or self.study / JOBS_FOLDER, paths["outcome"], paths["stderr"])

    def submitted(self, name: str, ticket: Ticket, epochs_done: int) -> None:
        rec = self.runs[name] = self.runs.get(name) if isinstance(self.runs.get(name), dict) else {}
        rec.setdefault("attempts", [])
        rec.update({"job_id": ticket.job_id, "state": QUEUED, "detail": "", "epochs_done_at_submit": epochs_done,
                    "log": self._rel(ticket.log), "stderr": self._rel(ticket.stderr), "outcome": self._rel(ticket.outcome),
                    "train_log": self._rel(self.study / "runs" / name / TRAIN_LOG),
                    "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        rec["attempts"].append({"job_id": ticket.job_id, "state": QUEUED})
        self._save()

    def update(self, name: str, state: JobState) -> None:
        rec = self.runs.get(name)
        if rec is None or (rec.get("state"), rec.get("detail")) == (state.phase, state.detail):
            return
        rec["state"], rec["detail"] = state.phase, state.detail
        rec["attempts"][-1]["state"] = state.phase
        self._save()

    def _rel(self, path: Path | None) -> str | None:
        return os.path.relpath(path, self.study) if path is not None else None

    def _save(self) -> None:
        if self.executor.detached:
            write_json_atomic(self.path, {"executor": self.executor.name, "runs": self.runs})
