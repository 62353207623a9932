"""The submitit executors of `q4bench compare`: ``slurm`` (sbatch jobs, one array per submission) and
``submitit-local`` (the same path on this machine, for a rehearsal and for the tests). submitit is an optional
extra (pip install 'q4bench[cluster]') imported only here.

Each job runs TrainJob: the run's `train ... --resume` command in a child process, then a JSON outcome in
OUT/jobs/outcomes/. A job's state comes from that outcome when there is one (exit 0: done; killed by a signal:
lost, submitted again; another exit: a failure that will not fix itself), else from the scheduler (Slurm's
sacct, or the local controller's process). A job that ended without an outcome was lost (preempted, timed
out, its node failed); one that ran but left not even its log in the study folder could not see that folder."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_json_atomic
from .child import ChildSpec, last_line, python_path, signal_name
from .child import run as run_child
from .errors import UserError
from .executors import (DONE, FAILED, INSTALL_HINT, JOBS_FOLDER, LOST, QUEUED, REHEARSAL_MINUTES, RUNNING, UNSEEN,
                        Executor, ExecutorChoice, JobSpec, JobState, SlurmSettings, Ticket)
from .userfiles import RESULT_MAX_BYTES, read_user_json

SLURM_WAITING = {"PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED",
                 "UNKNOWN"}  # UNKNOWN: sacct does not list a job just submitted yet
SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
SLURM_RAN = {"COMPLETED", "FAILED"}  # the job started: it would have left its log in a folder it could see
LOCAL_CONTROLLER = "submitit.local._local"  # the process a submitit-local job is, by its command line


def import_submitit(kind: str):
    try:
        import submitit
    except ImportError:
        raise UserError(f"--executor {kind} needs submitit, an optional extra: {INSTALL_HINT}") from None
    return submitit


# ---------------------------------------------------------------------------------------------
# What one job runs


@dataclass(frozen=True)
class TrainJob:
    """The callable submitit pickles for one run: the run's training command in a child process (output
    appended to the run's train.log, as with the local executor), then a JSON outcome the compare reads, so
    the compare never unpickles anything a job wrote. The training dies with the job, however it dies."""

    command: tuple[str, ...]
    threads: int
    train_log: str
    outcome: str

    def __call__(self) -> dict:
        # A signal from the scheduler or the compare interrupts the wait, and the training is killed with it.
        end = run_child(ChildSpec(self.command, self.threads, Path(self.train_log)))
        result = {"returncode": end.returncode, "host": socket.gethostname(), "wall_seconds": end.seconds,
                  "last_line": last_line(Path(self.train_log))}
        write_json_atomic(self.outcome, result)
        return result


def read_outcome(path: Path | None) -> dict | None:
    """A job's outcome, or None while it has none."""
    if path is None or not path.is_file():
        return None
    doc = read_user_json(path, "job outcome", RESULT_MAX_BYTES)
    if not isinstance(doc.get("returncode"), int):
        raise UserError(f"{path}: not a job outcome (no integer returncode); delete it and rerun")
    return doc


def outcome_state(where: str, outcome: dict) -> JobState:
    """0: done; killed by a signal (the scheduler's, the OOM killer's, kill -9): lost, submitted again; another
    exit: a failure that will not fix itself (the training's one-line error: bad arguments, corrupt data)."""
    code, wall = outcome["returncode"], outcome.get("wall_seconds")
    where = f"{where} on {outcome.get('host', '?')}"
    if code < 0:
        return JobState(LOST, f"{where}: the training was killed by {signal_name(-code)}", None, wall)
    return JobState(DONE if code == 0 else FAILED, f"{where} exited {code}: {outcome.get('last_line', '')}", None, wall)


# ---------------------------------------------------------------------------------------------
# The executors


def slurm_parameters(settings: SlurmSettings, cpus_per_task: int, device: str) -> dict:
    """submitit.SlurmExecutor parameters: one task per job (a run; torchrun inside it for DDP ranks)."""
    params = {"job_name": "q4bench", "nodes": 1, "ntasks_per_node": 1, "time": settings.time_minutes,
              "cpus_per_task": settings.cpus_per_task or cpus_per_task}
    gpus = settings.gpus_per_task or (1 if device == "cuda" else None)
    for key, value in (("partition", settings.partition), ("account", settings.account), ("gpus_per_task", gpus)):
        if value is not None:
            params[key] = value
    if settings.options:
        params["additional_parameters"] = dict(settings.options)
    if settings.setup:
        params["setup"] = list(settings.setup)
    return params


class SubmititExecutor(Executor):
    """Jobs through submitit, all submitted at once (an array on Slurm); they outlive the compare."""

    slots, detached = None, True

    def __init__(self, choice: ExecutorChoice, study: Path, cpus_per_task: int, device: str):
        self.name, self.study = choice.kind, study
        self.folder = study / JOBS_FOLDER
        self.poll_seconds = 0.5 if choice.kind == "submitit-local" else 15.0
        self.submitit = import_submitit(choice.kind)
        # The job's Python must import suite (to unpickle TrainJob) wherever it runs, as the local children do.
        python = shlex.join(["env", f"PYTHONPATH={python_path()}", sys.executable])
        if choice.kind == "submitit-local":
            self._backend = self.submitit.LocalExecutor(self.folder, python=python)
            # submitit hides every GPU from a local job unless told how many it gets (CUDA_VISIBLE_DEVICES).
            gpus = choice.slurm.gpus_per_task or (1 if device == "cuda" else 0)
            self._backend.update_parameters(timeout_min=choice.slurm.time_minutes or REHEARSAL_MINUTES,
                                            gpus_per_node=gpus)
        else:
            try:
                self._backend = self.submitit.SlurmExecutor(self.folder, python=python)
            except RuntimeError as exc:  # no srun on this machine
                raise UserError(f"--executor slurm: {exc} (run the compare on the cluster's login node)") from None
            self._backend.update_parameters(**slurm_parameters(choice.slurm, cpus_per_task, device))
        self._jobs: dict[str, object] = {}

    def describe(self) -> str:
        if self.name == "submitit-local":
            return "submitit-local: one job per run on this machine, all at once (a rehearsal of --executor slurm)"
        p = self._backend.parameters
        return (f"slurm: one job per run, submitted as an array; partition {p.get('partition', '(default)')}, "
                f"{p['time']} min per job, {p['cpus_per_task']} CPU(s)"
                + (f" and {p['gpus_per_task']} GPU(s)" if p.get("gpus_per_task") else "") + " per job")

    def submit(self, jobs: list[JobSpec]) -> list[Ticket]:
        outcomes = [self.folder / "outcomes" / f"{job.name}.{uuid.uuid4().hex[:12]}.json" for job in jobs]
        calls = [TrainJob(job.command, job.threads, str(job.log), str(out)) for job, out in zip(jobs, outcomes)]
        submitted = self._backend.submit_array(calls)
        tickets = []
        for job, outcome in zip(submitted, outcomes):
            self._jobs[job.job_id] = job
            tickets.append(Ticket(job.job_id, job.paths.stdout, outcome, job.paths.stderr))
        return tickets

    def attach(self, ticket: Ticket) -> Ticket:
        if self.name == "slurm":
            self._jobs[ticket.job_id] = self.submitit.SlurmJob(self.folder, ticket.job_id)
        return ticket

    def state(self, ticket: Ticket) -> JobState:
        where = f"{self.name} job {ticket.job_id}"
        outcome = read_outcome(ticket.outcome)
        if outcome is None:
            phase, word = self._scheduler_state(ticket)
            if phase is not None:
                return JobState(phase, word)
            outcome = read_outcome(ticket.outcome)  # written just before the job ended?
            if outcome is None:
                return self._ended_without_outcome(ticket, where, word)
        return outcome_state(where, outcome)

    def _ended_without_outcome(self, ticket: Ticket, where: str, word: str) -> JobState:
        if self.name == "slurm" and word in SLURM_RAN and not ticket.log.exists():
            return JobState(UNSEEN, f"{where} ended ({word}) without writing its log {ticket.log}: the job cannot "
                            f"see the study folder {self.study}; put it on storage every node shares", ticket.log)
        log = ticket.stderr if ticket.stderr is not None and ticket.stderr.exists() else ticket.log
        return JobState(LOST, f"{where} ended ({word}) without finishing: {last_line(log)}", log)

    def _scheduler_state(self, ticket: Ticket) -> tuple[str | None, str]:
        """(QUEUED or RUNNING, or None once ended; the scheduler's word for it)."""
        if self.name == "submitit-local":
            return (RUNNING, "RUNNING") if self._controller_alive(ticket.job_id) else (None, "EXITED")
        job = self._jobs.get(ticket.job_id) or self.submitit.SlurmJob(self.folder, ticket.job_id)
        word = (job.state or "UNKNOWN").split()[0].upper()  # "CANCELLED by 1234" -> CANCELLED
        if word in SLURM_WAITING:
            return QUEUED, word
        return (RUNNING, word) if word in SLURM_RUNNING else (None, word)

    def _controller_alive(self, job_id: str) -> bool:
        """A submitit-local job is its controller process (the id is its pid): alive, not a zombie, and by its
        command line that controller for this folder (a reused pid is not)."""
        import psutil

        job = self._jobs.get(job_id)
        if job is not None and job.state == "RUNNING":  # our own child: polled, so reaped once it exits
            return True
        try:
            proc = psutil.Process(int(job_id))
            cmdline = " ".join(proc.cmdline())
            return proc.status() != psutil.STATUS_ZOMBIE and LOCAL_CONTROLLER in cmdline and str(self.folder) in cmdline
        except (psutil.Error, ValueError):
            return False

    def kill(self, ticket: Ticket) -> None:
        if self.name == "slurm":
            subprocess.run(["scancel", ticket.job_id], capture_output=True, check=False, timeout=60)
        elif self._controller_alive(ticket.job_id):
            os.kill(int(ticket.job_id), signal.SIGINT)  # the controller stops its task, whose training dies with it
