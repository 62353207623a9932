"""The shape the report relies on in each file it reads, checked before a field is used: a history.json, a
verify.json and a compare result. A field of the wrong type or out of its range, or a path that leaves its
folder, makes the file unused with one line naming the field; a field that is only missing stays the
compare reader's note (older files lack newer fields). Bench results have their own strict schema
(suite/result_schema.json)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path, PurePosixPath

from ..errors import UserError

_STR = {"type": "string"}
_OPT_STR = {"type": ["string", "null"]}
_OPT_INT = {"type": ["integer", "null"], "minimum": 0}
# A count of images, epochs or seeds: past a billion it cannot be a run of this suite, and larger integers
# overflow the floats that figures and statistics turn them into.
_COUNT = {"type": "integer", "minimum": 0, "maximum": 10**9}
_OPT_COUNT = {**_COUNT, "type": ["integer", "null"]}
_ACC = {"type": "number", "minimum": 0, "maximum": 100}
_OPT_ACC = {**_ACC, "type": ["number", "null"]}
# Seconds, rates, bytes, losses: any finite number a run could record, bounded so sums and axis limits stay finite.
_OPT_NUMBER = {"type": ["number", "null"], "minimum": -1e12, "maximum": 1e12}
_OPT_RATE = {"type": ["number", "null"], "minimum": 0, "maximum": 1e12}
_PROVENANCE = {"type": ["object", "null"], "properties": {
    "code": {"type": "object", "properties": {"commit": _OPT_STR, "dirty": {"type": ["boolean", "null"]},
                                              "source": _OPT_STR}},
    "versions": {"type": "object"}, "written_at": _OPT_STR}}
_TRAINED_ON = {"type": ["object", "null"], "properties": {
    "host_id": _OPT_STR, "cpu_model": _OPT_STR, "commit": _OPT_STR, "isa": {"type": ["object", "null"]}}}

HISTORY = {
    "type": "object",
    "required": ["method", "recipe", "data_source", "train_images", "test_images", "epochs"],
    "properties": {
        "method": _STR, "recipe": _STR, "data_source": _STR, "dataset": _OPT_STR,
        "arch": {"type": ["string", "null"], "minLength": 1}, "seed": _OPT_INT, "train_images": _COUNT,
        "test_images": _COUNT, "planned_epochs": _OPT_COUNT, "batch_size": _OPT_COUNT, "threads": _OPT_COUNT,
        "device": _OPT_STR, "device_name": _OPT_STR, "precision": _OPT_STR, "host_id": _OPT_STR, "command": _OPT_STR,
        "provenance": _PROVENANCE,
        "epochs": {"type": "array", "items": {
            "type": "object", "required": ["epoch", "test_acc"],
            "properties": {
                "epoch": _COUNT, "test_acc": _ACC, "train_acc": _OPT_ACC, "test_acc_tta": _OPT_ACC,
                "train_loss": _OPT_NUMBER, "lr": _OPT_NUMBER, "seconds": _OPT_RATE, "images_per_s": _OPT_RATE,
                "distinct_codes": {"type": ["object", "null"], "additionalProperties": _OPT_COUNT},
                "trained_on": _TRAINED_ON}}},
    },
}

_ONNX_FILE = {"type": "object", "properties": {
    "bytes": _OPT_COUNT, "top1_agreement": _OPT_ACC, "max_abs_logit_diff": _OPT_NUMBER, "test_acc": _OPT_ACC,
    "latency_b1_ms": _OPT_RATE, "throughput_b64": _OPT_RATE,
    "optimizations_off_vs_all_on": {"type": ["object", "null"], "properties": {"top1_agreement": _OPT_ACC}},
    "distinct_codes": {"type": ["object", "null"], "additionalProperties": _OPT_COUNT},
    "codes_identical_to_pytorch": {"type": ["boolean", "null"]}}}
_MS_PER_LAYER = {"type": "object", "additionalProperties": _OPT_RATE}

VERIFY = {
    "type": "object",
    "required": ["files", "method", "test_images"],
    "properties": {
        "files": {"type": "object", "additionalProperties": _ONNX_FILE}, "method": _STR, "test_images": _COUNT,
        "checkpoint": _OPT_STR, "data": _OPT_STR, "command": _OPT_STR, "threads": {"type": ["integer", "string", "null"]},
        "size_ratio_fp32_int4": _OPT_RATE, "provenance": _PROVENANCE,
        "environment": {"type": ["object", "null"], "properties": {"timing_method": _OPT_STR}},
        "layer_times_b64": {"type": ["object", "null"], "properties": {
            "method": _STR, "ms_per_run": {"type": "object", "additionalProperties": _MS_PER_LAYER},
            "int8_speedup_per_layer": _MS_PER_LAYER}},
    },
}

# The compare reader notes what is missing (older results) and tolerates fields from newer ones; it refuses
# only what is there with the wrong type or range.
# A gap is a difference of two accuracies; an interval around a mean of few seeds may reach past +-100.
_GAP = {"type": ["number", "null"], "minimum": -100, "maximum": 100}
_INTERVAL = {"type": ["array", "null"], "items": {"type": "number", "minimum": -1e6, "maximum": 1e6}}
_TOLERATED = {"required", "dependentRequired", "additionalProperties", "const", "minItems"}
_COMPARE_EXTRA = {"type": "object", "properties": {
    "host": {"type": "object", "properties": {"host_id": _OPT_STR, "cpu_model": _OPT_STR}},
    "budget": {"type": "object", "properties": {"epochs": _COUNT, "train_images": _COUNT, "test_images": _COUNT,
                                                "batch_size": _COUNT, "hours": _OPT_RATE}},
    "provenance": _PROVENANCE, "arch": _OPT_STR, "command": _OPT_STR, "data_source": _OPT_STR,
    "margin_points": _OPT_RATE, "comparisons": {"type": "array", "items": {"type": "object", "properties": {
        "n_seeds": _OPT_COUNT, "seeds_needed": _OPT_COUNT, "mean_gap": _GAP, "sd_gap": _OPT_RATE,
        "ci95": _INTERVAL, "ci95_t": _INTERVAL, "ci95_bootstrap": _INTERVAL, "ci90": _INTERVAL, "reason": _OPT_STR}}}}}


@lru_cache(maxsize=None)
def _compare_schema() -> dict:
    return json.loads((Path(__file__).resolve().parents[1] / "compare_schema.json").read_text())


def _first_error(doc: dict, shape: dict, ignored: set[str] = frozenset()):
    import jsonschema

    errors = [e for e in jsonschema.Draft202012Validator(shape).iter_errors(doc) if e.validator not in ignored]
    return min(errors, key=lambda e: list(map(str, e.absolute_path)), default=None)


_EXPECTED = {"type": "of type {}", "minimum": "at least {}", "maximum": "at most {}", "exclusiveMinimum": "above {}",
             "exclusiveMaximum": "below {}", "enum": "one of {}", "minLength": "at least {} characters long",
             "pattern": "a match of {}"}


def _raise(path: Path, what: str, error) -> None:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        raise UserError(f"{path}: {what} has no field '{missing}'" + (f" in {where}" if error.absolute_path else ""))
    value = json.dumps(error.instance, ensure_ascii=True)
    value = value if len(value) <= 60 else value[:57] + "..."
    expected = _EXPECTED.get(error.validator, f"valid ({error.validator})").format(json.dumps(error.validator_value)[:60])
    raise UserError(f"{path}: {what} field {where} is {value}, expected {expected}")


def check_shape(doc: dict, shape: dict, path: Path, what: str) -> None:
    """One UserError naming the first field (by path) that does not fit shape."""
    error = _first_error(doc, shape)
    if error is not None:
        _raise(path, what, error)


def check_compare(doc: dict, path: Path) -> None:
    """A compare result's fields that are there have the types and ranges compare_schema.json gives them, and
    every run's files lie in its folder."""
    runs = doc.get("runs")
    for i, run in enumerate(runs if isinstance(runs, list) else []):
        for key in ("history", "predictions"):
            if isinstance(run, dict) and isinstance(run.get(key), str):
                inside_folder(run[key], path, f"runs.{i}.{key}")
    for shape in (_compare_schema(), _COMPARE_EXTRA):
        error = _first_error(doc, shape, _TOLERATED)
        if error is not None:
            _raise(path, "compare result", error)


def inside_folder(relative: str, beside: Path, field: str) -> Path:
    """beside's folder / relative, for a path a file gives to another in its folder: refused (before anything
    is opened) when absolute, empty or stepping up with '..'."""
    parts = PurePosixPath(relative).parts
    if not relative or relative.startswith(("/", "\\")) or ".." in parts or "\\" in relative or "\0" in relative:
        shown = json.dumps(relative[:60], ensure_ascii=True)
        raise UserError(f"{beside}: compare result field {field} is {shown}, which is not a path inside "
                        f"its folder; not read")
    return beside.parent / relative
