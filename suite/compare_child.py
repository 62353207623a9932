"""Time a few training steps of one method in a fresh process, for `q4bench compare`'s plan:
`python -m suite.compare_child RESULT.json METHOD ARCH RECIPE DEVICE PRECISION DATA THREADS BATCH [--synthetic]`.

It runs the real training loop (train.train, so the device, precision and recipe are exactly those of
the runs) and stops it after WARMUP + TIMED steps through the per-step callback; the parent sets the
thread variables in this process's environment before torch loads, as it does for the runs."""

from __future__ import annotations

import json
import sys
import tempfile
import time

WARMUP, TIMED = 1, 3


class _Enough(Exception):
    pass


def time_steps(method: str, arch: str, recipe: str, device: str, precision: str, data_dir: str | None, synthetic: bool,
               threads: int, batch: int) -> dict:
    """Seconds per step and per image at ``batch`` images a step (the runs' first step: the recipe's batch,
    or the whole subset when that is smaller)."""
    from .train import TrainConfig, train

    stamps: list[float] = []

    def on_batch(epoch: int, index: int) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) == WARMUP + TIMED:
            raise _Enough

    with tempfile.TemporaryDirectory(prefix="q4bench-time-") as tmp:
        # Just enough images for the timed steps, each a full batch.
        config = TrainConfig(method=method, arch=arch, recipe=recipe, epochs=1, threads=threads, seed=0, data_dir=data_dir,
                             synthetic=synthetic, subset=batch * (WARMUP + TIMED), batch_size=batch, out=tmp,
                             device=device, precision=precision)
        try:
            train(config, on_batch=on_batch, log=lambda line: None)
        except _Enough:
            pass
    if len(stamps) < WARMUP + TIMED:
        raise RuntimeError(f"only {len(stamps)} steps ran; cannot time {method}")
    step = (stamps[-1] - stamps[WARMUP - 1]) / TIMED
    return {"method": method, "seconds_per_step": step, "batch_size": batch, "seconds_per_image": step / batch,
            "steps": WARMUP + TIMED}


def main(argv: list[str]) -> int:
    result, method, arch, recipe, device, precision, data, threads, batch = argv[:9]
    synthetic = "--synthetic" in argv[9:]
    out = time_steps(method, arch, recipe, device, precision, None if data == "-" else data, synthetic, int(threads),
                     int(batch))
    from .atomic import write_json_atomic

    write_json_atomic(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
