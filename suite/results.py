"""Result files: the JSON Schema (suite/result_schema.json), strict validation, atomic writes, filing a
result for a pull request (`q4bench submit`), and loading many results as flat rows."""

from __future__ import annotations

import os
from functools import lru_cache
import re
from pathlib import Path

from .atomic import write_json_atomic, write_json_new
from .bounds import check_timestamp, out_of_limits
from .errors import UserError
from .locks import real_folder, real_folder_under
from .provenance import stamp
from .spec import FULL_PRECISION, arm_name
from .state import check_document, load_schema, schema_errors
from .userfiles import RESULT_MAX_BYTES, check_output_dir, read_user_json

SCHEMA_PATH = Path(__file__).resolve().parent / "result_schema.json"
# 2: every new result names the code that made it (a "provenance" block); version-1 files, written
# before that, stay valid and the report says "not recorded" for them.
SCHEMA_VERSION = 2
DEFAULT_RESULTS_DIR = Path("reports/results")
DEFAULT_STORE = Path("reports/submitted")


@lru_cache(maxsize=1)
def schema() -> dict:
    return load_schema(SCHEMA_PATH.name)


@lru_cache(maxsize=1)
def _compiled_schema():
    """The schema compiled to Python by fastjsonschema, run as draft-07: this schema uses no keyword whose meaning
    differs between draft-07 and 2020-12 (no $ref beside other keywords, no format), and a test holds the two
    to the same answers."""
    import fastjsonschema

    return fastjsonschema.compile(dict(schema(), **{"$schema": "http://json-schema.org/draft-07/schema#"}))


def result_schema_errors(result: object) -> list[str]:
    """The schema's reasons, each with its path: the compiled check first, since a report reads many results,
    and jsonschema (suite.state.schema_errors) for the reasons of a file it rejects."""
    import fastjsonschema

    try:
        _compiled_schema()(result)
        return []
    except fastjsonschema.JsonSchemaException:
        pass
    return schema_errors(result, schema()) or [
        "(top level): rejected by the compiled schema check but not by jsonschema: a bug in q4bench, please report it"]


def validation_errors(result: object) -> list[str]:
    """Every reason `result` is not a valid result file, schema first, then the cross-field rules
    the schema cannot state. Empty when it is valid."""
    reasons = result_schema_errors(result)
    if reasons:
        return reasons
    methods = set(result["methods"])
    for i, entry in enumerate(result["profiles"]):
        # arms: every method in fp32 under its own name, and per further precision as "<method>@<precision>"
        arms = {arm_name(m, p) for p in entry.get("precisions", [FULL_PRECISION]) for m in methods}
        if set(entry["methods"]) != arms:
            reasons.append(f"profiles/{i}/methods: holds {sorted(entry['methods'])}, the run lists {sorted(arms)}")
        unknown = set(entry["step_time_ratio"]) - set(entry["methods"])
        if unknown:
            reasons.append(f"profiles/{i}/step_time_ratio: methods {sorted(unknown)} are not in the profile")
        if entry["status"] == "ok" and entry["sgemm_gflops"] is None:
            reasons.append(f"profiles/{i}: status ok but sgemm_gflops is null")
        for name, m in entry["methods"].items():
            if m["status"] == "ok" and (m["train_images_per_s"] is None or m["peak_rss_bytes"] is None):
                reasons.append(f"profiles/{i}/methods/{name}: status ok but a throughput or memory figure is null")
            if m["accuracy"] is not None and not result["accuracy"]["measured"]:
                reasons.append(f"profiles/{i}/methods/{name}/accuracy: a figure although accuracy.measured is false")
    if not result["accuracy"]["measured"] and not result["accuracy"]["reason"]:
        reasons.append("accuracy/reason: accuracy was not measured and no reason is given")
    return reasons + _impossible(result)


def _impossible(result: dict) -> list[str]:
    """What no host could have produced: a figure outside its physical limit, a date that does not exist
    or lies in the future (suite.bounds holds each limit and its reason)."""
    reasons = check_timestamp(result["created_utc"], "created_utc")
    if "provenance" in result:
        reasons += check_timestamp(result["provenance"]["written_at"], "provenance/written_at")
    return reasons + out_of_limits(result)


def validate_result(result: object, source: str = "result") -> None:
    check_document(result, validation_errors, source, "result file")


def read_result(path: str | os.PathLike) -> dict:
    """Parse and strictly validate one result file; a truncated or invalid file is a UserError with the reason."""
    result = read_user_json(path, "result file", RESULT_MAX_BYTES)
    validate_result(result, str(path))
    return result


def with_provenance(result: dict) -> dict:
    """The result with a provenance block (commit, dirty flag, versions, time) when it has none yet; a
    version-1 result (written before provenance existed) is upgraded to version 2 with it. Stamped here,
    in the one place results are written, so no caller can forget it."""
    if "provenance" in result:
        return result
    return {**result, "schema_version": max(result.get("schema_version", SCHEMA_VERSION), SCHEMA_VERSION),
            "provenance": stamp()}


def write_result(path: str | os.PathLike, result: dict) -> Path:
    """Stamp provenance, validate, then write atomically: a reader never sees half a file, an invalid
    result is never written."""
    return write_json_atomic(path, _ready(result, path))


def _ready(result: dict, where: str | os.PathLike) -> dict:
    result = with_provenance(result)
    validate_result(result, str(where))
    return result


def write_new_result(folder: str | os.PathLike, result: dict) -> Path:
    """write_result under result_filename in ``folder``, never replacing a file: when another bench took the
    name (same host, tier and second) this one lands beside it as NAME-2.json, NAME-3.json, ..."""
    result = _ready(result, folder)
    name = real_folder(folder) / result_filename(result)
    for n in range(1, 1000):
        path = name if n == 1 else name.with_stem(f"{name.stem}-{n}")
        try:
            return write_json_new(path, result)
        except FileExistsError:
            continue
    raise UserError(f"{folder}: 999 results named {name.name} already; choose another --out")


def result_filename(result: dict) -> str:
    stamp = re.sub(r"[^0-9T]", "", result["created_utc"])
    return f"{stamp}-{result['host']['host_id']}-{result['tier']['name']}.json"


def submit(path: str | os.PathLike, store: str | os.PathLike = DEFAULT_STORE) -> Path:
    """File a validated result under STORE/<host-id>/ for a pull request. Nothing in the store changes
    when the file is refused; resubmitting an identical file is a no-op. STORE and STORE/<host-id> must be
    real folders and the filed name no link: a link committed there would carry the file out of the store."""
    result = read_result(path)
    check_output_dir(store, "--store")
    host_id = result["host"]["host_id"]  # the schema's pattern keeps it a plain folder name
    target = real_folder_under(Path(store), (host_id,), "--store") / result_filename(result)
    if target.is_symlink():
        raise UserError(f"--store {target}: is a symbolic link; the store holds only plain files: delete it")
    try:
        # Created only if absent (no check-then-write race): of two concurrent submits one files, and the
        # other finds the file complete (a link appears whole) and compares.
        return write_json_new(target, result)
    except FileExistsError:
        pass
    try:
        same = read_user_json(target, "filed result", RESULT_MAX_BYTES) == result
    except UserError:
        same = False
    if not same:
        raise UserError(f"{target} already exists with different content; refusing to overwrite it")
    return target


def load_results(paths: list[str | os.PathLike]) -> list[dict]:
    """Read many result files (folders are searched for *.json), each validated."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.rglob("*.json")) if p.is_dir() else [p])
    return [read_result(f) for f in files]


def result_rows(result: dict) -> list[dict]:
    """One flat row per (profile, method). Measured and estimated energy land in separate columns, so a
    table built from these rows never mixes them."""
    rows = []
    for entry in result["profiles"]:
        for name, m in entry["methods"].items():
            energy = m["energy"]
            accuracy = m["accuracy"] or {}
            rows.append({
                "host_id": result["host"]["host_id"],
                "cpu_model": result["host"]["cpu_model"],
                "tier": result["tier"]["name"],
                "data": result["data"]["kind"],
                "profile": entry["profile"],
                "threads": entry["threads"],
                "oversubscribed": entry["oversubscribed"],
                "memory_cap_mib": entry["memory_cap_mib"],
                "cap_enforcement": entry["cap_enforcement"],
                "profile_status": entry["status"],
                "method": name,
                "status": m["status"],
                "sgemm_gflops": entry["sgemm_gflops"],
                "step_time_ratio": entry["step_time_ratio"].get(name),
                "train_images_per_s": m["train_images_per_s"],
                "eval_images_per_s": m["eval_images_per_s"],
                "achieved_gflops": m["achieved_gflops"],
                "efficiency": m["efficiency"],
                "peak_rss_bytes": m["peak_rss_bytes"],
                "energy_measured_j_per_epoch": energy["joules_per_epoch"] if energy["method"] == "measured_rapl" else None,
                "energy_estimated_j_per_epoch": energy["joules_per_epoch"] if energy["method"] == "estimated" else None,
                "energy_method": energy["method"],
                "top1_percent": accuracy.get("top1_percent"),
            })
    return rows
