"""Results as tidy data: every bench result, compare result and run history under some paths as one pandas
DataFrame, one row per measured thing, typed columns; `q4bench results` writes it as CSV, JSON or Parquet.

Rows, told apart by `kind`:
- "bench": one per (result file, profile, arm) of a `q4bench bench` result; an arm is a method at a
  precision ("tathe4@bf16": method tathe4, precision bf16).
- "comparison": one per candidate of a `q4bench compare` result (its gap to the reference and verdict).
- "compare-run": one per run of a compare result (final and best accuracy of that method and seed).
- "history": one per run folder's history.json (what `q4bench train` wrote, finished or not).
A file that is not one of these, or does not validate, is skipped and named in `skipped` (path, reason).
Every column is listed in COLUMNS with its type; docs/results.md says what each holds."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .spec import (COMPARE_SCHEMA_PREFIX, FULL_PRECISION, HISTORY_FILE, PAPER_ARCH, PARITY_FILE, PLAN_FILE, REQUEST_FILE,
                   VERIFY_FILE, WALL_FILE, split_arm)
from .userfiles import RESULT_MAX_BYTES, read_user_json

# column -> pandas dtype; every row has every column (missing values are <NA>/NaN).
COLUMNS = {
    "kind": "string", "file": "string", "host_id": "string", "cpu_model": "string", "written_utc": "string",
    "commit": "string", "profile": "string", "device": "string", "threads": "Int64", "arch": "string",
    "recipe": "string", "epochs": "Int64", "train_images": "Int64", "method": "string", "precision": "string",
    "seed": "Int64", "status": "string",
    # bench
    "sgemm_gflops": "Float64", "step_time_ratio": "Float64", "train_images_per_s": "Float64",
    "eval_images_per_s": "Float64", "achieved_gflops": "Float64", "efficiency": "Float64",
    "peak_rss_bytes": "Int64", "energy_j_per_epoch": "Float64", "energy_method": "string",
    "top1_percent": "Float64",
    # compare runs and histories
    "final_test_acc": "Float64", "best_test_acc": "Float64", "final_test_acc_tta": "Float64",
    "epochs_done": "Int64", "training_seconds": "Float64",
    # comparisons
    "reference": "string", "n_seeds": "Int64", "mean_gap": "Float64", "ci95_low": "Float64",
    "ci95_high": "Float64", "ci95_method": "string", "tost_p": "Float64", "tost_power_at_0": "Float64",
    "verdict": "string", "margin_points": "Float64",
}
FORMATS = ("csv", "json", "parquet")
DEFAULT_PATHS = ("reports/results", "reports/submitted")
# The suite's bookkeeping beside its results: not rows of this table.
COMPANION_FILES = {PLAN_FILE, REQUEST_FILE, WALL_FILE, PARITY_FILE, VERIFY_FILE}
COMPARE_TIMING_DIR = "timing"  # compare's step-time probes


@dataclass
class Frame:
    rows: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def dataframe(self):
        return table(self.rows)


def table(rows: list[dict]):
    """Rows (dicts keyed by COLUMNS, any missing) as the typed DataFrame."""
    import pandas as pd

    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS)


def frame(paths: list[str | os.PathLike]):
    """The tidy DataFrame of every result and history found under paths (see the module's docstring)."""
    return collect(paths).dataframe()


def collect(paths: list[str | os.PathLike]) -> Frame:
    out = Frame()
    for path in _json_files(paths):
        try:
            doc = read_user_json(path, "result file", RESULT_MAX_BYTES)
            out.rows.extend(_rows_of(path, doc))
        except (UserError, KeyError, TypeError, ValueError, AttributeError) as exc:
            out.skipped.append((str(path), _reason(path, exc)))
    return out


def _json_files(paths: list[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(f for f in sorted(p.rglob("*.json"))
                         if f.name not in COMPANION_FILES and f.parent.name != COMPARE_TIMING_DIR
                         and f.is_file() and not f.is_symlink())
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or folder (give result files, compare folders or run folders)")
    return files


def _reason(path: Path, exc: Exception) -> str:
    """One line that starts with the file's path."""
    text = str(exc) if isinstance(exc, UserError) else f"unexpected content ({type(exc).__name__}: {exc})"
    return text if text.startswith(str(path)) else f"{path}: {text}"


def _rows_of(path: Path, doc: dict) -> list[dict]:
    from . import compare, results

    if str(doc.get("schema", "")).startswith(COMPARE_SCHEMA_PREFIX):
        compare.validate_result(doc, path)
        return compare_rows(path, doc)
    if path.name == HISTORY_FILE:
        return [history_row(path, doc)]
    if "schema_version" in doc:
        results.validate_result(doc, str(path))
        return bench_rows(path, doc)
    raise UserError("not a q4bench result, compare result or history.json")


def _common(kind: str, path: Path, provenance: dict | None) -> dict:
    provenance = provenance or {}
    return {"kind": kind, "file": str(path), "written_utc": provenance.get("written_at"),
            "commit": (provenance.get("code") or {}).get("commit")}


def bench_rows(path: Path, result: dict) -> list[dict]:
    """One row per profile and arm, in the file's order."""
    rows = []
    host = result["host"]
    for entry in result["profiles"]:
        for arm, m in entry["methods"].items():
            method, precision = split_arm(arm)
            energy, accuracy = m.get("energy") or {}, m.get("accuracy") or {}
            rows.append({
                **_common("bench", path, result.get("provenance")), "written_utc": result.get("created_utc"),
                "host_id": host["host_id"], "cpu_model": host["cpu_model"], "profile": entry["profile"],
                "arch": result.get("arch", PAPER_ARCH), "device": entry.get("device", "cpu"),
                "threads": entry["threads"], "method": method,
                "precision": precision, "status": m["status"], "sgemm_gflops": entry["sgemm_gflops"],
                "step_time_ratio": (entry.get("step_time_ratio") or {}).get(arm),
                "train_images_per_s": m["train_images_per_s"], "eval_images_per_s": m["eval_images_per_s"],
                "achieved_gflops": m["achieved_gflops"], "efficiency": m["efficiency"],
                "peak_rss_bytes": m["peak_rss_bytes"], "energy_j_per_epoch": energy.get("joules_per_epoch"),
                "energy_method": energy.get("method"), "top1_percent": accuracy.get("top1_percent"),
                "train_images": result["data"].get("train_images") if isinstance(result.get("data"), dict) else None,
            })
    return rows


def compare_rows(path: Path, doc: dict) -> list[dict]:
    budget, host = doc["budget"], doc.get("host") or {}
    common = {**_common("compare-run", path, doc.get("provenance")), "host_id": host.get("host_id"),
              "cpu_model": host.get("cpu_model"), "device": doc["device"], "precision": doc["precision"],
              "arch": doc.get("arch"), "recipe": budget["recipe"], "epochs": budget["epochs"],
              "train_images": budget["train_images"], "reference": doc["reference"],
              "margin_points": doc.get("margin_points")}
    rows = [{**common, "method": run["method"], "seed": run["seed"], "final_test_acc": run["final_test_acc"],
             "best_test_acc": run["best_test_acc"], "final_test_acc_tta": run.get("final_test_acc_tta")}
            for run in doc["runs"]]
    for c in doc["comparisons"]:
        ci = c.get("ci95") or [None, None]
        rows.append({**common, "kind": "comparison", "method": c["candidate"], "n_seeds": c["n_seeds"],
                     "mean_gap": c["mean_gap"], "ci95_low": ci[0], "ci95_high": ci[1],
                     "ci95_method": c.get("ci95_method"), "tost_p": c.get("tost_p"),
                     "tost_power_at_0": (c.get("power") or {}).get("tost_power_at_0"), "verdict": c["verdict"]})
    return rows


def history_row(path: Path, history: dict) -> dict:
    epochs = history["epochs"]
    if not isinstance(epochs, list):
        raise TypeError(f"'epochs' is {type(epochs).__name__}, not a list")
    last = epochs[-1] if epochs else {}
    return {
        **_common("history", path, history.get("provenance")), **_history_host(history),
        "device": history.get("device"), "threads": history.get("threads"), "arch": history.get("arch"),
        "recipe": history["recipe"], "epochs": history.get("planned_epochs"),
        "train_images": history.get("train_images"), "method": history["method"],
        "precision": history.get("precision", FULL_PRECISION), "seed": history.get("seed"),
        "status": "finished" if len(epochs) >= (history.get("planned_epochs") or 0) else "unfinished",
        "final_test_acc": last.get("test_acc"), "best_test_acc": history.get("best_test_acc"),
        "final_test_acc_tta": last.get("test_acc_tta"), "epochs_done": len(epochs),
        "training_seconds": _training_seconds(epochs),
    }


def _training_seconds(epochs: list[dict]) -> float | None:
    """The epochs' seconds summed; None unless every epoch recorded its time."""
    seconds = [e.get("seconds") for e in epochs]
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in seconds):
        return None
    total = 0.0
    for s in seconds:  # in order, as a reader summing the history would
        total += s
    return total


def _history_host(history: dict) -> dict:
    """host_id and cpu_model of the host that trained the last epoch (a study may move between hosts), when
    the history records it (older histories do not)."""
    epochs = history["epochs"]
    trained_on = epochs[-1].get("trained_on") if epochs else None
    if not isinstance(trained_on, dict):
        return {}
    return {"host_id": trained_on.get("host_id"), "cpu_model": trained_on.get("cpu_model")}


def write(table, out: str | os.PathLike, fmt: str) -> Path:
    """The frame to OUT in one of FORMATS, written to a temporary file and renamed into place."""
    from .atomic import write_atomic

    _check_format(fmt)
    return write_atomic(out, lambda f: write_stream(table, f, fmt), mode="wb" if fmt == "parquet" else "w")


def write_stream(table, stream, fmt: str) -> None:
    _check_format(fmt)
    if fmt == "parquet":
        table.to_parquet(getattr(stream, "buffer", stream), index=False)
    elif fmt == "csv":
        table.to_csv(stream, index=False)
    else:
        table.to_json(stream, orient="records", indent=1)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError("--format parquet needs pyarrow: pip install 'q4bench[parquet]' "
                            "(or choose --format csv or json)") from None
