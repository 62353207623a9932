"""Training and eval throughput: interleaved timed windows of every method (their order rotating round by
round), eval images per second, and step-time ratios over balanced cycles."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

from .compute import synchronize
from .energy import EnergyMeter

@dataclass
class WindowPlan:
    warmup_steps: int
    windows: int
    steps_per_window: int


def interleaved_training_windows(
    steppers: dict[str, Callable],
    next_batch: Callable[[], tuple],
    plan: WindowPlan,
    meters: dict[str, EnergyMeter],
    between_rounds: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Seconds per timed window for each method. Methods take turns window by window (the order rotates
    each round) so drift in machine load hits all of them alike; warm-up steps are not timed.
    between_rounds (the SGEMM probe) runs once before every round, outside the timed windows.

    steppers: name -> callable(images, labels) doing one optimizer step (suite.train.Stepper)."""
    names = list(steppers)
    batches = [next_batch() for _ in range(max(plan.steps_per_window, 1))]
    for name in names:
        for i in range(plan.warmup_steps):
            steppers[name](*batches[i % len(batches)])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for window in range(plan.windows):
        if between_rounds is not None:
            between_rounds()
        shift = window % len(names)
        for name in names[shift:] + names[:shift]:
            images = 0
            meters[name].start()
            start = time.perf_counter()
            for batch in batches:
                float(steppers[name](*batch)[0])  # float() waits for the step (a GPU would run ahead)
                images += batch[1].shape[0]
            seconds[name].append(time.perf_counter() - start)
            meters[name].stop(images)
    return seconds


def eval_throughput(model, batches: list[tuple], placement=None) -> float:
    """Images per second of the model in eval mode over `batches` (the first one is a warm-up), under the
    placement's autocast; the clock stops when the device has finished."""
    import contextlib

    import torch

    autocast = placement.autocast() if placement is not None else contextlib.nullcontext()
    device = placement.device if placement is not None else "cpu"
    model.eval()
    with torch.inference_mode(), autocast:
        model(batches[0][0])
        synchronize(device)
        images, start = 0, time.perf_counter()
        for x, _ in batches[1:]:
            model(x).argmax(1)
            images += x.shape[0]
        synchronize(device)
        return images / (time.perf_counter() - start)


def ratio_estimates(seconds: dict[str, list[float]], baseline: str) -> dict[str, dict]:
    """method -> {"median", "low", "high", "cycles"} of its step-time ratio to the baseline.

    interleaved_training_windows rotates the order every round, so within each cycle of len(seconds)
    consecutive rounds every method runs once in every position. Measured here (quick tier, 1 thread),
    per-round tathe4/fp32 ratios alternated with who ran first after the SGEMM probe: 0.89-0.97 in
    one order, 1.13-1.14 in the other; a cycle's summed times cancel that position effect.
    low/high: the extreme cycles, the resolution a reader should grant the median. With fewer rounds
    than one cycle, rounds stand alone."""
    rounds = len(seconds[baseline])
    cycle = len(seconds) if rounds >= len(seconds) else 1
    spans = [range(start, start + cycle) for start in range(0, rounds - cycle + 1, cycle)]
    out = {}
    for name, times in seconds.items():
        ratios = [sum(times[i] for i in span) / sum(seconds[baseline][i] for i in span) for span in spans]
        out[name] = {"median": statistics.median(ratios), "low": min(ratios), "high": max(ratios), "cycles": len(ratios)}
    return out
