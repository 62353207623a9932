"""Every child process the suite starts, started one way: its environment (the thread variables, set before
torch loads; the suite on PYTHONPATH; no torchrun variables, so a child never joins a job around its
parent), a death signal so that no child outlives its parent, an optional timeout, and how it ended:

  ok         exit status 0 (and, for a task child, its result written)
  failed     a nonzero exit status
  killed     ended by a signal (the kernel's OOM killer, kill -9, the scheduler)
  timed out  ran past its timeout; the parent killed it
  no result  a task child that exited 0 without writing a readable result

A task child does one piece of work and speaks one protocol: the parent writes TASK.json and starts
`ARGV TASK.json RESULT.json`; the child (through serve()) reads the task and writes RESULT.json atomically.
The long training runs of compare keep the train command as their job (its resume is on disk), but start
through Child all the same. Torch-free: the bench and compare parents import this."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .atomic import write_json_atomic

# Variables the OpenMP, MKL and BLAS runtimes read once, when torch loads them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
# What torchrun gives its ranks: a child that inherited them would try to join its parent's job.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

OK, FAILED, KILLED, TIMED_OUT, NO_RESULT = "ok", "failed", "killed", "timed out", "no result"
# Where a child's standard output goes; its standard error always goes to its log.
STDOUT_TO_LOG, STDOUT_TO_PARENT, STDOUT_DROPPED = "log", "parent", "dropped"


# ---------------------------------------------------------------------------------------------
# The environment and the death signal


def thread_environment(threads: int) -> dict[str, str]:
    """The variables a child needs in its environment before torch (and its OpenMP/MKL) is loaded."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def python_path() -> str:
    """This checkout's suite first on PYTHONPATH, then whatever the parent had."""
    root = str(Path(__file__).resolve().parent.parent)
    return root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")


def child_environment(threads: int) -> dict[str, str]:
    """The environment of every child: ours, less torchrun's variables, with ``threads`` in every thread variable."""
    env = {name: value for name, value in os.environ.items() if name not in TORCHRUN_VARIABLES}
    env.update(thread_environment(threads))
    env["PYTHONPATH"] = python_path()
    return env


def die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when ``parent`` dies, even by SIGKILL, so no orphan keeps
    writing into a folder that a rerun resumes (Linux; elsewhere a no-op)."""

    def arm() -> None:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arm


# ---------------------------------------------------------------------------------------------
# What to start, and how it ended


@dataclass(frozen=True)
class ChildSpec:
    argv: tuple[str, ...]
    threads: int  # every thread variable of its environment
    log: Path  # its standard error (and output, by default), appended
    stdout: str = STDOUT_TO_LOG
    timeout_s: float | None = None  # None: no limit
    cwd: Path | None = None
    result: Path | None = None  # a task child's RESULT.json

    def __post_init__(self):
        if self.stdout not in (STDOUT_TO_LOG, STDOUT_TO_PARENT, STDOUT_DROPPED):
            raise ValueError(f"ChildSpec.stdout {self.stdout!r}: use STDOUT_TO_LOG, STDOUT_TO_PARENT or STDOUT_DROPPED")
        if self.threads < 1:
            raise ValueError(f"ChildSpec.threads must be at least 1, got {self.threads}")


@dataclass(frozen=True)
class ChildEnd:
    status: str  # OK, FAILED, KILLED, TIMED_OUT or NO_RESULT
    returncode: int | None  # None when it timed out; negative: the signal that ended it
    seconds: float  # from its start until the parent saw it end
    spec: ChildSpec
    result: dict | None = None  # a task child's RESULT.json, whenever it wrote one

    @property
    def ok(self) -> bool:
        return self.status == OK

    def describe(self) -> str:
        """How it ended, in words: 'exited with status 3', 'killed by SIGKILL', 'timed out after 60 s'."""
        if self.status == TIMED_OUT:
            return f"timed out after {self.spec.timeout_s:.0f} s"
        if self.status == KILLED:
            return f"killed by {signal_name(-self.returncode)}"
        if self.status == NO_RESULT:
            return f"exited 0 without writing its result {self.spec.result}"
        return f"exited with status {self.returncode}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def last_line(path: Path, missing: str = "no log", empty: str = "empty log", limit: int | None = 300) -> str:
    """The last non-blank line of a child's log (cut to ``limit`` characters), or what stands in for one."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return missing
    return lines[-1].strip()[:limit] if lines else empty


# ---------------------------------------------------------------------------------------------
# Starting and waiting


class Child:
    """A child, started when made: poll() while it runs, wait() for its end (its timeout applied), stop() to
    end it early."""

    def __init__(self, spec: ChildSpec):
        self.spec = spec
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log, "ab") as log:
            self.proc = subprocess.Popen(list(spec.argv), env=child_environment(spec.threads), cwd=spec.cwd,
                                         stdin=subprocess.DEVNULL, stdout=_stdout_target(spec.stdout, log),
                                         stderr=log, preexec_fn=die_with(os.getpid()))
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> ChildEnd | None:
        code = self.proc.poll()
        return None if code is None else self._ended(code)

    def wait(self) -> ChildEnd:
        """Its end; past its timeout it is killed. Interrupted (Ctrl-C, an exception), it dies before we go on."""
        try:
            code = self.proc.wait(timeout=self.spec.timeout_s)
        except subprocess.TimeoutExpired:
            self._kill()
            return ChildEnd(TIMED_OUT, None, time.monotonic() - self.started, self.spec, self._result())
        except BaseException:
            self._kill()
            raise
        return self._ended(code)

    def stop(self) -> None:
        """SIGTERM, then wait for it."""
        self.proc.terminate()
        self.proc.wait()

    def _kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def _ended(self, code: int) -> ChildEnd:
        result = self._result()
        if code == 0:
            status = NO_RESULT if self.spec.result is not None and result is None else OK
        else:
            status = KILLED if code < 0 else FAILED
        return ChildEnd(status, code, time.monotonic() - self.started, self.spec, result)

    def _result(self) -> dict | None:
        if self.spec.result is None:
            return None
        try:
            doc = json.loads(self.spec.result.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None


def _stdout_target(where: str, log):
    if where == STDOUT_TO_LOG:
        return log
    if where == STDOUT_TO_PARENT and _stdout_is_real():
        return sys.stdout
    return subprocess.DEVNULL


def _stdout_is_real() -> bool:
    try:
        sys.stdout.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False  # pytest's capture: child output is dropped rather than crash Popen


def run(spec: ChildSpec) -> ChildEnd:
    """Start the child and wait for its end."""
    return Child(spec).wait()


# ---------------------------------------------------------------------------------------------
# The task protocol: TASK.json in, RESULT.json out


@dataclass(frozen=True)
class TaskFiles:
    task: Path
    result: Path
    log: Path

    @classmethod
    def named(cls, folder: Path, name: str) -> "TaskFiles":
        return cls(folder / f"{name}.task.json", folder / f"{name}.result.json", folder / f"{name}.log")


def module_argv(module: str) -> tuple[str, ...]:
    """`python -m MODULE` with this interpreter."""
    return (sys.executable, "-m", module)


def task_spec(argv: Sequence[str], task: dict, files: TaskFiles, threads: int, **options) -> ChildSpec:
    """Write TASK.json now (atomically; a result left by an earlier child is removed) and describe the child
    `ARGV TASK.json RESULT.json`; ``options`` are ChildSpec's (stdout, timeout_s, cwd)."""
    write_json_atomic(files.task, task)
    files.result.unlink(missing_ok=True)
    return ChildSpec((*argv, str(files.task), str(files.result)), threads, files.log, result=files.result, **options)


def serve(argv: Sequence[str], work: Callable[[dict], dict | None],
          on_error: Callable[[BaseException], tuple[dict, int]] | None = None) -> int:
    """The child's side: read TASK.json, run ``work`` on it, write what it returns to RESULT.json (None:
    nothing, e.g. a torchrun rank other than 0) and return the exit status, 0. ``on_error`` turns an
    exception into (a result to write, an exit status); without it the exception propagates (exit 1)."""
    task_path, result_path = argv
    task = json.loads(Path(task_path).read_text())
    try:
        result = work(task)
    except BaseException as exc:  # noqa: BLE001 - with on_error, every outcome becomes a result the parent reads
        if on_error is None:
            raise
        traceback.print_exc()
        result, status = on_error(exc)
        write_json_atomic(result_path, result)
        return status
    if result is not None:
        write_json_atomic(result_path, result)
    return 0
