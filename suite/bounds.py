"""Sane ranges for every count, size and number a user gives (CLI options, config fields, profile keys),
and the one check they all go through: a value outside its range is a one-line UserError naming the
option and the value, never replaced by a default.

The upper bounds only refuse what cannot be meant (a typo, an extra zero), each for a stated reason."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from .errors import FieldError, UserError
from .spec import ARCH_NAMES, DATASET_SIZES

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
# The parity gate's rule (parity.toml [tolerance]). A false-fail rate below 1e-6 is no rate a dozen measured
# pairs can support, and from about 1e-16 on 1 - rate rounds to 1 in floating point (an infinite tolerance).
FALSE_FAIL_RATE = (1e-6, 0.5)
# Accuracy on 10,000 test images moves in steps of 0.01 points: rounding finer than 0.001 adds nothing (and
# 1e-320 overflowed); rounding up by more than 100 points makes every tolerance 100.
ROUND_UP_TO = (1e-3, 100.0)
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
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(name, f"must be an integer from {low} to {high:,}, got {value!r}", label)
    if not low <= value <= high:
        raise FieldError(name, f"must be from {low} to {high:,}, got {value}", label)
    return value


def check_arch_name(name) -> str:
    """A network's name (spec.ARCH_NAMES), checked without building it."""
    if name not in ARCH_NAMES:
        raise UserError(f"unknown --arch {name!r}; known: {', '.join(ARCH_NAMES)}")
    return name


def check_optional_count(value, name: str) -> int | None:
    return None if value is None else check_count(value, name)


def check_number(value, label: str, low: float, high: float, low_inclusive: bool = False,
                 high_inclusive: bool = True) -> float:
    """A finite real in (low, high] ([low, ...] with low_inclusive, [..., high) without high_inclusive); bools and
    NaN/inf are refused."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (value <= high if high_inclusive else value < high)
    if not ok:
        raise FieldError(None, f"must be {number_range(low, high, low_inclusive, high_inclusive)}, got {value!r}", label)
    return float(value)


def number_range(low: float, high: float, low_inclusive: bool = False, high_inclusive: bool = True) -> str:
    """'a number in (0, 100]' (brackets as the interval's ends are in or out)."""
    return f"a number in {'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"


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


# ---------------------------------------------------------------------------------------------
# What a result file may claim: every figure within what one host can physically produce. Results arrive
# from strangers (`q4bench submit`, a pull request) and feed plots and arithmetic in the report, so a value
# no host can produce (1.7e308 images/s, a run dated 2099) is refused with the bound and its reason, never
# clamped. The bounds are wide: each refuses only what cannot be a measurement.


@dataclass(frozen=True)
class Limit:
    low: float
    high: float
    reason: str


# A result's clock may run a little ahead of the checking host's; a day covers any time zone mistake.
CLOCK_SKEW = dt.timedelta(days=1)
# The suite needs torch 2, first released on this day: no result can be older.
EARLIEST_RESULT = dt.datetime(2023, 3, 15, tzinfo=dt.timezone.utc)

_RATE = "the smallest network here costs about 1e8 FLOP per trained image; 1e7 images/s would need 1e15 FLOP/s, beyond any one host"
_GFLOPS = "the fastest single accelerator reaches about 7e4 GFLOP/s in FP32; 1e6 is beyond any one host"
_BYTES = "the largest single hosts hold tens of TiB; 1 PiB is beyond any one host"
_CPUS = "Linux is built for at most 8,192 CPUs; 65,536 is beyond any one host"
_RATIO = "a step 10,000 times slower or faster than FP32's is a unit or timing error, not a method"
_SECONDS = "one timing within a year; longer is a unit error"
_YEAR_SECONDS = MAX_HOURS * 3600
MAX_CPUS = 65_536

# Field name -> its limit. A number without an entry of its own takes that of the nearest enclosing field
# that has one (step_time_ratio/<method>), else ANY_NUMBER.
ANY_NUMBER = Limit(-(2.0**53), 2.0**53, "beyond 2**53 a float no longer holds every integer; no figure of a "
                                          "benchmark reaches it")
RESULT_LIMITS: dict[str, Limit] = {
    **dict.fromkeys(["train_images_per_s", "eval_images_per_s", "train_window_images_per_s"],
                    Limit(1e-6, 1e7, f"images/s: {_RATE}; below 1e-6 (one image in 11 days) nothing was measured")),
    **dict.fromkeys(["sgemm_gflops", "achieved_gflops", "gflops", "samples_gflops"],
                    Limit(1e-6, 1e6, f"GFLOP/s: {_GFLOPS}")),
    **dict.fromkeys(["efficiency", "efficiency_range"],
                    Limit(1e-6, 100.0, "a share of the SGEMM ceiling: kernels may beat SGEMM a little, never 100 times")),
    **dict.fromkeys(["memory_bytes", "peak_rss_bytes", "peak_device_memory_bytes"], Limit(1, 2**50, f"bytes: {_BYTES}")),
    "memory_cap_mib": Limit(1, MAX_MEMORY_CAP_MIB, "MiB: 16 TiB, the cap the profiles accept"),
    "joules_per_epoch": Limit(0, 1e10, "J: a 10 kW host running for 11 days; an epoch takes far less"),
    **dict.fromkeys(["wall_seconds", "seconds", "step_seconds", "step_seconds_median", "step_seconds_per_round"],
                    Limit(0, _YEAR_SECONDS, f"seconds: {_SECONDS}")),
    "cpu_seconds": Limit(0, _YEAR_SECONDS * MAX_CPUS, "CPU seconds: a year on each of 65,536 CPUs"),
    **dict.fromkeys(["step_time_ratio", "step_time_ratio_range", "speedup", "vs_one_process_all_cores", "value"],
                    Limit(1e-4, 1e4, _RATIO)),
    "allreduce_share": Limit(-100.0, 1.0, "1 - (no-sync step / synced step): at most 1; below -100 the timing is broken"),
    **dict.fromkeys(["threads", "torch_threads", "host_usable_cpus", "logical_cpus", "usable_cpus", "physical_cores",
                     "processes", "threads_per_process", "threads_all_cores"], Limit(1, MAX_CPUS, _CPUS)),
    **dict.fromkeys(["train_images", "epoch_images", "batch_size", "global_batch", "batch_per_process"],
                    Limit(1, TRAIN_IMAGES, "images: the largest training split")),
    "test_images": Limit(1, TEST_IMAGES, "images: the largest test split"),
    "epochs": Limit(1, MAX_EPOCHS, "the same bound as --epochs"),
    "train_flops_per_image": Limit(1, 1e12, "FLOP: VGG4bit trains at about 1e9 per image; 1e12 is no CIFAR network"),
    **dict.fromkeys(["top1_percent", "best_top1_percent"], Limit(0, 100, "a percentage")),
}


def limit_for(path: tuple) -> Limit:
    """The limit of the number at ``path`` (keys and indexes from the top of the document)."""
    for key in reversed(path):
        if isinstance(key, str) and key in RESULT_LIMITS:
            return RESULT_LIMITS[key]
    return ANY_NUMBER


def out_of_limits(doc, path: tuple = ()) -> list[str]:
    """'where: value (reason)' for every number in ``doc`` outside its limit; empty when none is."""
    if isinstance(doc, dict):
        return [r for k, v in doc.items() for r in out_of_limits(v, (*path, k))]
    if isinstance(doc, list):
        return [r for i, v in enumerate(doc) for r in out_of_limits(v, (*path, i))]
    if isinstance(doc, bool) or not isinstance(doc, (int, float)):
        return []
    limit = limit_for(path)
    if limit.low <= doc <= limit.high:
        return []
    where = "/".join(map(str, path))
    return [f"{where}: {doc!r} is outside [{limit.low:g}, {limit.high:g}] ({limit.reason})"]


def check_timestamp(text: str, where: str, now: dt.datetime | None = None) -> list[str]:
    """Reasons ISO 8601 ``text`` cannot be when a result was made: not a real date and time (month 13,
    hour 99), no time zone, before EARLIEST_RESULT or later than now + CLOCK_SKEW. Empty when it can."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        return [f"{where}: {text!r} is not a real date and time ({exc})"]
    if when.tzinfo is None:
        return [f"{where}: {text!r} has no time zone (write UTC, ending Z or +00:00)"]
    now = now or dt.datetime.now(dt.timezone.utc)
    if when > now + CLOCK_SKEW:
        return [f"{where}: {text!r} is in the future (more than {CLOCK_SKEW.days} day after now, {now:%Y-%m-%d %H:%M} UTC)"]
    if when < EARLIEST_RESULT:
        return [f"{where}: {text!r} is before {EARLIEST_RESULT:%Y-%m-%d}, when torch 2 (which the suite needs) appeared"]
    return []
