"""What training across processes costs on this host: the bench starts one torchrun job (suite.scaling_child)
and reports, from its interleaved windows, the step time of 1 process against N processes at the same global
batch, the share of a DDP step spent in the exposed gradient all-reduce, and the scaling efficiency.

Formulas (per round, then the median over rounds; the range is the rounds' min-max):
  speedup    = T1 / TN                  T1: one process, the per-rank thread count; TN: N DDP ranks
  efficiency = T1 / (N * TN)            1.0 is perfect strong scaling
  allreduce_share = 1 - TN_no_sync / TN (the part of a step DDP's all-reduce adds and backward does not hide)
  vs_one_process_all_cores = T1_all / TN (N ranks against one process using the same cores as threads)
All are derived from measured step times; nothing is estimated."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .child import STDOUT_DROPPED, TIMED_OUT, TaskFiles, run, task_spec
from .measure.host import load_average
from .spec import PAPER_ARCH

MAX_PROCESSES = 8  # beyond this a laptop-class host only measures oversubscription


@dataclass(frozen=True)
class ScalingPlan:
    processes: int  # N
    threads_per_process: int
    method: str = "tathe4"
    global_batch: int = 128
    rounds: int = 3
    steps_per_window: int = 3
    arch: str = PAPER_ARCH  # the network both sides train

    def __post_init__(self):
        if self.processes < 2:
            raise ValueError(f"ScalingPlan.processes must be at least 2, got {self.processes}")
        if self.global_batch % self.processes:
            raise ValueError(f"ScalingPlan.global_batch {self.global_batch} must be divisible by processes "
                             f"{self.processes}")
        if self.rounds < 1 or self.steps_per_window < 1 or self.threads_per_process < 1:
            raise ValueError("ScalingPlan.rounds, steps_per_window and threads_per_process must be at least 1")


def plan_scaling(cores: int, rounds: int, steps: int, method: str = "tathe4",
                 global_batch: int = 128, arch: str = PAPER_ARCH) -> tuple[ScalingPlan | None, str | None]:
    """(plan, None), or (None, why not): N is the largest power of two up to the usable cores (and
    MAX_PROCESSES), one thread per rank, so the global batch of 128 always splits evenly."""
    if cores < 2:
        return None, f"{cores} usable core: there is nothing to scale to"
    processes = 1
    while processes * 2 <= min(cores, MAX_PROCESSES):
        processes *= 2
    return ScalingPlan(processes, 1, method, global_batch, rounds, steps, arch), None


def unavailable(why: str) -> dict:
    return {"status": "unavailable", "how": "unavailable", "detail": why}


def _median_range(values: list[float]) -> tuple[float, list[float]]:
    return statistics.median(values), [min(values), max(values)]


def summarize(plan: ScalingPlan, raw: dict) -> dict:
    """The result's scaling entry from the child's per-window step times (see the module's formulas)."""
    from .distributed import BACKEND  # here: importing it loads torch, which the bench parent avoids

    s = raw["step_seconds"]
    n = plan.processes
    per_round = {
        "speedup": [one / ddp for one, ddp in zip(s["one"], s["ddp"])],
        "efficiency": [one / (n * ddp) for one, ddp in zip(s["one"], s["ddp"])],
        "allreduce_share": [1.0 - nosync / ddp for nosync, ddp in zip(s["ddp_no_sync"], s["ddp"])],
        "vs_one_process_all_cores": [one_all / ddp for one_all, ddp in zip(s["one_all"], s["ddp"])],
    }
    step, step_range = {}, {}
    for kind, values in s.items():
        step[kind], step_range[kind] = _median_range(values)
    derived, derived_range = {}, {}
    for name, values in per_round.items():
        derived[name], derived_range[name] = _median_range(values)
    return {
        "status": "ok",
        "how": "measured (step times); derived (ratios)",
        "detail": None,
        "launcher": "torchrun --standalone",
        "backend": BACKEND,
        "plan": asdict(plan),
        "threads_all_cores": raw["all_threads"],
        "batch_per_process": raw["local_batch"],
        "step_seconds": step,
        "step_seconds_range": step_range,
        "step_seconds_per_round": s,
        "window_orders": raw["orders"],
        **derived,
        "ranges": derived_range,
    }


def measure_scaling(plan: ScalingPlan, workdir: Path, timeout_s: float | None = 900) -> dict:
    """Run the torchrun job (a task child, suite/child.py: the plan in, rank 0's step times out) and summarise
    it; a job that fails or times out is reported, not raised."""
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                str(plan.processes), "-m", "suite.scaling_child")
    files = TaskFiles(workdir / "scaling.task.json", workdir / "scaling.json", workdir / "scaling.stderr")
    spec = task_spec(torchrun, asdict(plan), files, plan.threads_per_process, stdout=STDOUT_DROPPED,
                     timeout_s=timeout_s, cwd=Path(__file__).resolve().parent.parent)
    load_before, started = load_average(), time.perf_counter()
    end = run(spec)
    if end.status == TIMED_OUT:
        return {"status": "failed", "how": "unavailable", "detail": f"the torchrun job ran past {timeout_s:.0f} s",
                "plan": asdict(plan)}
    if not end.ok:
        stderr = files.log.read_text(errors="replace").splitlines()
        tail = [line for line in stderr if line.strip() and not line.startswith("W")][-1:]
        return {"status": "failed", "how": "unavailable", "plan": asdict(plan),
                "detail": f"torchrun exited {end.returncode}" + (f": {tail[0][:300]}" if tail else "")}
    entry = summarize(plan, end.result)
    entry.update(wall_seconds=time.perf_counter() - started, load_average_before=load_before,
                 load_average_after=load_average())
    return entry


def summary_line(entry: dict) -> str:
    if entry.get("status") != "ok":
        return f"scaling: {entry.get('status')} ({entry.get('detail')})"
    plan, s = entry["plan"], entry["step_seconds"]
    n = plan["processes"]
    return (f"scaling ({plan['method']}, global batch {plan['global_batch']}, torchrun + DDP over {entry['backend']}, "
            f"{plan['threads_per_process']} thread(s) per process): 1 process {s['one']:.3f} s/step, {n} processes "
            f"{s['ddp']:.3f} s/step -> speedup {entry['speedup']:.2f}, efficiency {entry['efficiency']:.2f} "
            f"[{entry['ranges']['efficiency'][0]:.2f}-{entry['ranges']['efficiency'][1]:.2f}], all-reduce "
            f"{100 * entry['allreduce_share']:.1f}% of a step; one process on {entry['threads_all_cores']} threads "
            f"{s['one_all']:.3f} s/step")
