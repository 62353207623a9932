"""Time a few training steps of one method in a fresh process, for `q4bench compare`'s plan: a task child
(suite/child.py), `python -m suite.compare_child TASK.json RESULT.json`, the task a TimingTask.

It runs the real training loop (train.train, so the device, precision and recipe are exactly those of
the runs) and stops it after WARMUP + TIMED steps through the per-step callback; the parent sets the
thread variables in this process's environment before torch loads, as it does for the runs."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass

from .child import serve

WARMUP, TIMED = 1, 3


@dataclass(frozen=True)
class TimingTask:
    """What to time: one method as the runs train it, at ``batch`` images a step."""

    method: str
    arch: str
    recipe: str
    device: str
    precision: str
    data_dir: str | None
    synthetic: bool
    threads: int
    batch: int


class _Enough(Exception):
    pass


def time_steps(task: TimingTask) -> dict:
    """Seconds per step and per image at ``task.batch`` images a step (the runs' first step: the recipe's
    batch, or the whole subset when that is smaller)."""
    from .train import TrainConfig, train

    stamps: list[float] = []

    def on_batch(epoch: int, index: int) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) == WARMUP + TIMED:
            raise _Enough

    with tempfile.TemporaryDirectory(prefix="q4bench-time-") as tmp:
        # Just enough images for the timed steps, each a full batch.
        config = TrainConfig(method=task.method, arch=task.arch, recipe=task.recipe, epochs=1, threads=task.threads,
                             seed=0, data_dir=task.data_dir, synthetic=task.synthetic,
                             subset=task.batch * (WARMUP + TIMED), batch_size=task.batch, out=tmp, device=task.device,
                             precision=task.precision)
        try:
            train(config, on_batch=on_batch, log=lambda line: None)
        except _Enough:
            pass
    if len(stamps) < WARMUP + TIMED:
        raise RuntimeError(f"only {len(stamps)} steps ran; cannot time {task.method}")
    step = (stamps[-1] - stamps[WARMUP - 1]) / TIMED
    return {"method": task.method, "seconds_per_step": step, "batch_size": task.batch,
            "seconds_per_image": step / task.batch, "steps": WARMUP + TIMED}


def main(argv: list[str]) -> int:
    return serve(argv, lambda task: time_steps(TimingTask(**task)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
