"""Sane ranges for every count, size and number a user gives (CLI options, config fields, profile keys),
and the one check they all go through: a value outside its range is a one-line UserError naming the
option and the value, never replaced by a default.

The upper bounds only refuse what cannot be meant (a typo, an extra zero), each for a stated reason."""

from __future__ import annotations

import math

from .errors import UserError
from .spec import DATASET_SIZES

# The largest official split: a subset, a batch or a calibration set larger than it cannot be filled.
TRAIN_IMAGES = max(train for train, _ in DATASET_SIZES.values())
TEST_IMAGES = max(test for _, test in DATASET_SIZES.values())
# The largest single hosts have a few hundred logical CPUs; oversubscribing a small host is allowed
# (profiles flag it), but more threads or children than this is a typo.
MAX_THREADS = 1024
# The paper trains 150 epochs; 10,000 is days even on a GPU.
MAX_EPOCHS = 10_000
# Seeds and timing repetitions: each one is a training run or a timed pass, so a thousand is already weeks.
MAX_SEEDS = 1000
MAX_REPEATS = 1000
# torch and numpy take seeds below 2**32 everywhere; the per-epoch seed (seed * 100_003 + epoch) stays in int64.
MAX_SEED = 2**32 - 1
MAX_HOURS = 24 * 365  # a compare time box of a year
MAX_MEMORY_CAP_MIB = 1 << 24  # 16 TiB
MAX_WATTS_PER_THREAD = 1000.0  # a whole server socket is a few hundred watts
MAX_JOB_MINUTES = 366 * 24 * 60  # a cluster job's time limit: a year is already beyond any cluster's
MAX_GPUS_PER_TASK = 64  # the largest single nodes hold 8-16
MAX_RETRIES = 100  # a job lost that often in a row without progress is not coming back

# name -> (lowest, highest): the ranges the CLI, the config dataclasses and the config files share.
COUNTS = {
    "epochs": (1, MAX_EPOCHS),
    "batch_size": (2, TRAIN_IMAGES),  # BatchNorm needs 2 images per batch
    "subset": (2, TRAIN_IMAGES),
    "train_images": (2, TRAIN_IMAGES),
    "threads": (1, MAX_THREADS),
    "parallel": (1, MAX_THREADS),
    "ranks_per_run": (1, MAX_THREADS),  # DDP ranks of one torchrun job, each at least one thread
    "seed": (0, MAX_SEED),
    "seeds": (1, MAX_SEEDS),
    "calibration_images": (1, TRAIN_IMAGES),
    "limit": (1, TEST_IMAGES),
    "test_images": (1, TEST_IMAGES),
    "agreement_images": (1, TEST_IMAGES),
    "speed_rounds": (1, MAX_REPEATS),
    "throughput_runs": (1, MAX_REPEATS),
    "latency_runs": (1, MAX_REPEATS),
    "profile_runs": (1, MAX_REPEATS),
    "memory_cap_mib": (1, MAX_MEMORY_CAP_MIB),
    "time_minutes": (1, MAX_JOB_MINUTES),
    "cpus_per_task": (1, MAX_THREADS),
    "gpus_per_task": (1, MAX_GPUS_PER_TASK),
    "max_retries": (0, MAX_RETRIES),
}


def option(name: str) -> str:
    """The CLI spelling of a field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def check_count(value, name: str, label: str | None = None, bounds: tuple[int, int] | None = None) -> int:
    """value as an int within COUNTS[name] (or bounds); label names it in the message (default: the option)."""
    low, high = bounds or COUNTS[name]
    label = label or option(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{label} must be an integer from {low} to {high:,}, got {value!r}")
    if not low <= value <= high:
        raise UserError(f"{label} must be from {low} to {high:,}, got {value}")
    return value


def check_optional_count(value, name: str) -> int | None:
    return None if value is None else check_count(value, name)


def check_number(value, label: str, low: float, high: float, low_inclusive: bool = False) -> float:
    """A finite real in (low, high] ([low, high] with low_inclusive); bools and NaN/inf are refused."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and value <= high
    if not ok:
        opening = "[" if low_inclusive else "("
        raise UserError(f"{label} must be a number in {opening}{low:g}, {high:g}], got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# argparse types: the same ranges, parsed from the command line's text


def count_type(name: str):
    """An argparse type for COUNTS[name]: a bad value becomes argparse's one-line error naming the option."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        try:
            return check_count(value, name, label="value")
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value ")) from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def number_type(low: float, high: float):
    """An argparse type for a finite float in (low, high]."""
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        try:
            return check_number(value, "value", low, high)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value ")) from None

    parse.__name__ = "number"
    return parse
