"""Everything the report reads, and nothing else: bench result files, compare results, training histories
(history.json) and ONNX checks (verify.json). Never imports torch.

Files are told apart by content, not by folder: a JSON with "schema" starting with "q4bench-compare/" is
a compare result, one with "schema_version" a bench result (validated strictly against its schema),
history.json and verify.json by name. Every file is read through suite/userfiles.py: a regular file (never a
FIFO or device), of bounded size and, when found in a folder, inside that folder (a link leaving it is not
followed). A file that fails its checks (schema, shape in shapes.py, a path leaving its folder) is not used:
the report lists it with the one-line reason under "Files not used" and goes on. A compare result is read
defensively (it may predate fields this report knows): what it lacks becomes a one-line note."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable

from ..errors import UserError
from ..userfiles import CONFIG_MAX_BYTES, read_user_json
from ..spec import (CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES, COMPARE_SCHEMA_PREFIX, FIXTURE_MARK, HISTORY_FILE,
                    PAPER_ARCH, PAPER_EPOCHS, PAPER_RECIPE, REQUEST_FILE, VERIFY_FILE)
from .shapes import HISTORY, VERIFY, check_compare, check_shape, inside_folder

DEFAULT_RESULTS = ("reports/results", "reports/submitted")
# reports/submitted holds committed full-budget histories too (reports/submitted/<host>/paper-<method>-seed<k>/).
DEFAULT_RUNS = ("reports/parity/runs", "runs/bench", "reports/submitted")
DEFAULT_ONNX = ("reports/parity/onnx",)


@dataclass(frozen=True)
class ReportSources:
    results: tuple[Path, ...] = ()
    runs: tuple[Path, ...] = ()
    onnx: tuple[Path, ...] = ()

    @classmethod
    def from_options(cls, results: list[str] | None, runs: list[str] | None, onnx: list[str] | None) -> "ReportSources":
        """Named paths must exist; with nothing named at all, the defaults that exist are read."""
        if not (results or runs or onnx):
            existing = lambda paths: tuple(Path(p) for p in paths if Path(p).exists())  # noqa: E731
            return cls(existing(DEFAULT_RESULTS), existing(DEFAULT_RUNS), existing(DEFAULT_ONNX))
        for option, paths in (("--results", results), ("--runs", runs), ("--onnx", onnx)):
            for p in paths or []:
                if not Path(p).exists():
                    raise UserError(f"{option} {p}: no such file or folder")
        return cls(*(tuple(Path(p) for p in paths or []) for paths in (results, runs, onnx)))


@dataclass(frozen=True)
class Budget:
    """What an accuracy figure cost: printed beside every accuracy."""

    data: str
    real_cifar10: bool
    train_images: int
    epochs: int
    test_images: int
    recipe: str
    planned_epochs: int | None = None
    arch: str = PAPER_ARCH  # histories before the --arch option trained the paper's network

    def describe(self) -> str:
        data = "CIFAR-10" if self.real_cifar10 else f"NOT CIFAR-10 ({self.data})"
        planned = f" of {self.planned_epochs} planned" if self.planned_epochs and self.planned_epochs != self.epochs else ""
        network = "" if self.paper_network else f", network {self.arch} (NOT the paper's {PAPER_ARCH})"
        return (f"{self.epochs} epoch(s){planned} x {self.train_images:,} train images, {self.recipe} recipe, "
                f"{self.test_images:,} test images, {data}{network}")

    @property
    def paper_network(self) -> bool:
        return self.arch == PAPER_ARCH

    @property
    def paper_data_and_network(self) -> bool:
        """Real CIFAR-10 on the paper's network: the only accuracies the paper's claims can be held against."""
        return self.real_cifar10 and self.paper_network

    @property
    def full_paper_budget(self) -> bool:
        """The budget the paper's accuracy claims are about: the paper recipe with all 150 epochs done,
        on all of real CIFAR-10. Anything less cannot decide them."""
        return (self.paper_data_and_network and self.recipe == PAPER_RECIPE and self.epochs >= PAPER_EPOCHS
                and self.train_images >= CIFAR10_TRAIN_IMAGES and self.test_images >= CIFAR10_TEST_IMAGES)

    def key(self) -> tuple:
        return (self.data, self.train_images, self.epochs, self.test_images, self.recipe, self.arch)


def device_of(profile: dict, entry: dict | None = None) -> tuple[str, str, bool]:
    """(device, precision, recorded): results before device/precision existed ran on CPU in float32. A method
    entry (a precision arm such as "tathe4@bf16") carries its own precision."""
    recorded = "device" in profile or "precision" in profile or "precisions" in profile
    precision = (entry or {}).get("precision") or profile.get("precision", "fp32")
    return profile.get("device", "cpu"), precision, recorded


def is_real_cifar10(dataset: str | None, source: str) -> bool:
    return dataset in (None, "cifar10") and not str(source).lower().startswith("synthetic")


def is_fixture(doc: dict) -> bool:
    return str(doc.get("command", "")).startswith(FIXTURE_MARK)


def submitted_folder_host(path: Path) -> str | None:
    """<host> of a file under reports/submitted/<host>/...: where its study was filed; None elsewhere."""
    parts = path.parts
    if "submitted" in parts and parts.index("submitted") + 2 < len(parts):
        return parts[parts.index("submitted") + 1]
    return None


def _filing_host(doc: dict, host: dict, path: Path) -> dict:
    """The host a compare result is filed under: the reports/submitted/<host>/ folder it sits in, as its runs'
    histories are (hosts.history_host); elsewhere the one that wrote it, unless its runs trained on several
    hosts (a study resumed elsewhere): then the one that trained its first epoch."""
    trained = doc.get("trained_on")
    hosts = [h for h in trained if isinstance(h, dict) and isinstance(h.get("host_id"), str)
             and h["host_id"] != "unrecorded"] if isinstance(trained, list) else []
    folder = submitted_folder_host(path)
    if folder is not None and folder != host.get("host_id"):
        return {"host_id": folder, "cpu_model": next((h.get("cpu_model") for h in hosts if h["host_id"] == folder),
                                                      None)}
    if folder is not None or len({h["host_id"] for h in hosts}) < 2:
        return host
    return {"host_id": hosts[0]["host_id"], "cpu_model": hosts[0].get("cpu_model")}


def provenance_of(doc: dict) -> dict | None:
    p = doc.get("provenance")
    return p if isinstance(p, dict) else None


@dataclass
class ResultFile:
    """One `q4bench bench` result (strictly valid against suite/result_schema.json)."""

    path: Path
    data: dict
    fixture: bool

    @property
    def host_id(self) -> str:
        return self.data["host"]["host_id"]

    @property
    def created(self) -> str:
        return self.data["created_utc"]

    @property
    def real_data(self) -> bool:
        return self.data["data"]["kind"] == "cifar10"

    @property
    def arch(self) -> str:
        return self.data.get("arch", PAPER_ARCH)  # results from before bench --arch timed the paper's network

    @property
    def provenance(self) -> dict | None:
        return provenance_of(self.data)


@dataclass
class RunHistory:
    """history.json of one `q4bench train` run (also each run of a compare result)."""

    path: Path
    history: dict
    fixture: bool

    @property
    def method(self) -> str:
        return self.history["method"]

    @property
    def epochs(self) -> list[dict]:
        return self.history["epochs"]

    @property
    def budget(self) -> Budget:
        h = self.history
        return Budget(h["data_source"], is_real_cifar10(h.get("dataset"), h["data_source"]), h["train_images"],
                      len(h["epochs"]), h["test_images"], h["recipe"], h.get("planned_epochs"), self.arch)

    @property
    def arch(self) -> str:
        """The network trained (history["arch"], checked by read_history); the paper's in histories before --arch."""
        return self.history.get("arch") or PAPER_ARCH

    @property
    def full_paper_budget(self) -> bool:
        planned = self.history.get("planned_epochs")
        return self.budget.full_paper_budget and (planned is None or len(self.epochs) >= planned)

    @property
    def device(self) -> str:
        return self.history.get("device") or "cpu"

    @property
    def precision(self) -> str:
        return self.history.get("precision") or "fp32"

    @property
    def provenance(self) -> dict | None:
        return provenance_of(self.history)

    def wall_seconds(self) -> list[float] | None:
        """Cumulative seconds at the end of each epoch, when every epoch recorded its time."""
        if not all(isinstance(e.get("seconds"), (int, float)) for e in self.epochs):
            return None
        total, out = 0.0, []
        for e in self.epochs:
            total += e["seconds"]
            out.append(total)
        return out


@dataclass
class VerifyFile:
    path: Path
    data: dict
    fixture: bool


@dataclass(frozen=True)
class UnusedFile:
    """A file the report found and did not use, and why (one line, naming the file and the field)."""

    path: Path
    reason: str

    @property
    def why(self) -> str:
        """The reason without the file's name in front."""
        return self.reason.removeprefix(f"{self.path}: ")


@dataclass
class CompareRun:
    method: str
    seed: int | None
    final_acc: float | None
    best_acc: float | None
    final_acc_tta: float | None
    wall_seconds: float | None
    history: RunHistory | None


@dataclass
class Comparison:
    candidate: str
    n_seeds: int | None
    mean_gap: float | None
    ci95: tuple[float, float] | None
    verdict: str | None
    reason: str
    seeds_needed: int | None
    tost_p: float | None
    ci95_method: str | None = None  # how "ci95" was computed (newer compare results say; older ones: a t interval)
    tost_power_at_0: float | None = None  # power of these n seeds to show equivalence if the true gap were 0
    n_for_80pct_power: int | None = None  # seeds giving that 80% power (null beyond the search's cap)


def _power(power) -> tuple[float | None, int | None]:
    """(TOST power at gap 0, n for 80% of it) from a comparison's "power" object; Nones when absent or odd."""
    if not isinstance(power, dict):
        return None, None
    value, n = _number(power.get("tost_power_at_0")), power.get("n_for_80pct_tost_at_0")
    return (value if value is not None and 0 <= value <= 1 else None,
            n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None)


@dataclass
class CompareResult:
    """A `q4bench compare` result, read field by field: anything missing is None plus a note."""

    path: Path
    data: dict
    fixture: bool
    host_id: str | None
    cpu_model: str | None
    device: str
    device_name: str | None
    precision: str
    budget: dict
    data_source: str | None
    reference: str
    margin_points: float | None
    runs: list[CompareRun]
    comparisons: list[Comparison]
    notes: list[str] = field(default_factory=list)
    arch: str = PAPER_ARCH  # compare results before --arch trained the paper's network
    unused: list[UnusedFile] = field(default_factory=list)  # run histories it names that could not be used

    @property
    def host(self) -> dict:
        host = self.data.get("host")
        return host if isinstance(host, dict) else {}

    @property
    def provenance(self) -> dict | None:
        return provenance_of(self.data)

    def describe_budget(self) -> str:
        b = self.budget
        parts = [f"{b.get('recipe', '?')} recipe", f"{b.get('epochs', '?')} epoch(s)"]
        if b.get("train_images"):
            parts.append(f"{b['train_images']:,} train images")
        if b.get("test_images"):
            parts.append(f"{b['test_images']:,} test images")
        if b.get("hours"):
            parts.append(f"{b['hours']:g} h")
        return ", ".join(parts)


@dataclass
class Inputs:
    results: list[ResultFile] = field(default_factory=list)
    compares: list[CompareResult] = field(default_factory=list)
    runs: list[RunHistory] = field(default_factory=list)
    verifies: list[VerifyFile] = field(default_factory=list)
    sources: ReportSources = ReportSources()
    notes: list[str] = field(default_factory=list)  # files read only in part, or skipped, and why
    unused: list[UnusedFile] = field(default_factory=list)  # files refused: listed under "Files not used"

    @property
    def has_fixture(self) -> bool:
        return any(x.fixture for x in [*self.results, *self.compares, *self.runs, *self.verifies])

    @property
    def full_budget_runs(self) -> list[RunHistory]:
        return [r for r in self.runs if r.full_paper_budget]

    @cached_property
    def bench(self):
        """The bench results as one tidy table, a row per arm (tidy.bench_table); built once, when first read."""
        from .tidy import bench_table

        return bench_table(self.results)

    @cached_property
    def histories(self):
        """The run histories as one tidy table, a row per run (tidy.history_table); built once, when first read."""
        from .tidy import history_table

        return history_table(self.runs)


# ---------------------------------------------------------------------------------------------


def _files(paths: Iterable[Path], pattern: str) -> list[tuple[Path, Path | None]]:
    """(file, the folder it was found in) for each match under a folder; (file, None) for a file named."""
    out: list[tuple[Path, Path | None]] = []
    for p in paths:
        out.extend(((f, p) for f in sorted(p.rglob(pattern))) if p.is_dir() else [(p, None)])
    return out


def read_history(path: Path, inside: Path | None = None) -> RunHistory | None:
    """A history.json, checked for the fields the report uses; None for a run before its first epoch."""
    doc = read_user_json(path, HISTORY_FILE, inside=inside)
    check_shape(doc, HISTORY, path, HISTORY_FILE)
    if not doc["epochs"]:
        return None
    return RunHistory(path, doc, is_fixture(doc))


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_compare(path: Path, doc: dict) -> CompareResult:
    """Defensive: every field optional; each absence a note (one line) instead of an error. A field of the wrong
    type, or a run's file outside the compare folder: UserError (the file is not used)."""
    check_compare(doc, path)
    notes: list[str] = []
    unused: list[UnusedFile] = []

    def get(d: dict, key: str, kind, default):
        if key not in d or d[key] is None:
            notes.append(f"{path.name}: no {key}")
            return default
        if not isinstance(d[key], kind):
            notes.append(f"{path.name}: {key} is {type(d[key]).__name__}, expected {kind.__name__}; ignored")
            return default
        return d[key]

    host = _filing_host(doc, get(doc, "host", dict, {}) or {}, path)
    runs = []
    for i, r in enumerate(get(doc, "runs", list, []) or []):
        if not isinstance(r, dict):
            notes.append(f"{path.name}: runs[{i}] is not an object; skipped")
            continue
        history = None
        rel = r.get("history")
        if isinstance(rel, str):
            hpath = inside_folder(rel, path, f"runs.{i}.history")
            try:
                history = read_history(hpath, inside=path.parent) if os.path.lexists(hpath) else None
            except UserError as exc:
                notes.append(f"runs[{i}] history: {exc}")
                unused.append(UnusedFile(hpath, str(exc)))
            if history is None and not os.path.lexists(hpath):
                notes.append(f"{path.name}: runs[{i}] history {rel} not found next to the file")
        runs.append(CompareRun(str(r.get("method", "?")), r.get("seed"), _number(r.get("final_test_acc")),
                               _number(r.get("best_test_acc")), _number(r.get("final_test_acc_tta")),
                               _number(r.get("wall_seconds")), history))
    comparisons = []
    for i, c in enumerate(get(doc, "comparisons", list, []) or []):
        if not isinstance(c, dict):
            notes.append(f"{path.name}: comparisons[{i}] is not an object; skipped")
            continue
        ci = c.get("ci95")
        ci = (float(ci[0]), float(ci[1])) if isinstance(ci, list) and len(ci) == 2 and all(
            _number(x) is not None for x in ci) else None
        verdict = c.get("verdict") if isinstance(c.get("verdict"), str) else None
        if verdict is None:
            notes.append(f"{path.name}: comparisons[{i}] has no verdict")
        method = c.get("ci95_method") if isinstance(c.get("ci95_method"), str) else None
        comparisons.append(Comparison(str(c.get("candidate", "?")), c.get("n_seeds"), _number(c.get("mean_gap")), ci,
                                      verdict, str(c.get("reason") or ""), c.get("seeds_needed"),
                                      _number(c.get("tost_p")), method, *_power(c.get("power"))))
    return CompareResult(
        path=path, data=doc, fixture=is_fixture(doc), host_id=host.get("host_id"), cpu_model=host.get("cpu_model"),
        device=str(doc.get("device") or "cpu"), device_name=doc.get("device_name"),
        precision=str(doc.get("precision") or "fp32"), budget=get(doc, "budget", dict, {}) or {},
        data_source=doc.get("data_source"), reference=str(doc.get("reference") or "fp32"),
        margin_points=_number(doc.get("margin_points")), runs=runs, comparisons=comparisons, notes=notes,
        arch=doc["arch"] if isinstance(doc.get("arch"), str) and doc["arch"] else PAPER_ARCH, unused=unused)


def load_inputs(sources: ReportSources) -> Inputs:
    """Every input the sources hold; a file that cannot be used goes to inputs.unused with its reason."""
    inputs = Inputs(sources=sources)
    seen_histories: set[Path] = set()
    skipped: list[Path] = []  # other JSON beside results (a compare run's predictions, parity.json): not ours
    beside_results: list[tuple[Path, Path | None]] = []
    for path, folder in _files(sources.results, "*.json"):
        if path.name == HISTORY_FILE:
            beside_results.append((path, folder))  # e.g. reports/submitted/<host>/paper-<method>-seed<k>/: runs
            continue
        if path.name == VERIFY_FILE:
            continue  # read with --onnx below; a results folder may hold a parity run's checks
        try:
            if not _read_result(path, folder, inputs, seen_histories):
                skipped.append(path)
        except UserError as exc:
            inputs.unused.append(UnusedFile(path, str(exc)))
    if skipped:
        inputs.notes.append(f"{len(skipped)} other JSON file(s) beside the results are neither bench nor compare "
                            f"results and were skipped, e.g. {relative(skipped[0])}")
    for path, folder in [*beside_results, *_files(sources.runs, HISTORY_FILE)]:
        if path.resolve() in seen_histories:
            continue  # a compare run: shown with its compare result
        seen_histories.add(path.resolve())  # a folder named both as results and as runs: read once
        try:
            run = read_history(path, inside=folder)
        except UserError as exc:
            inputs.unused.append(UnusedFile(path, str(exc)))
            continue
        if run is not None:
            inputs.runs.append(run)
    for path, folder in _files(sources.onnx, VERIFY_FILE):
        try:
            doc = read_user_json(path, VERIFY_FILE, inside=folder)
            check_shape(doc, VERIFY, path, VERIFY_FILE)
        except UserError as exc:
            inputs.unused.append(UnusedFile(path, str(exc)))
            continue
        inputs.verifies.append(VerifyFile(path, doc, is_fixture(doc)))
    return inputs


def _read_result(path: Path, folder: Path | None, inputs: Inputs, seen_histories: set[Path]) -> bool:
    """Adds a bench or compare result to inputs; False for other JSON found in a folder (not ours)."""
    from ..results import validate_result  # strict schema validation; jsonschema only, no torch

    doc = read_user_json(path, "result file", inside=folder)
    if str(doc.get("schema", "")).startswith(COMPARE_SCHEMA_PREFIX):
        compare = read_compare(path, doc)
        inputs.compares.append(compare)
        inputs.notes.extend(compare.notes)
        inputs.unused.extend(compare.unused)
        seen_histories.update(r.history.path.resolve() for r in compare.runs if r.history)
        seen_histories.update(u.path.resolve() for u in compare.unused)  # listed once, as the compare's
        return True
    if "schema_version" in doc:
        validate_result(doc, str(path))
        inputs.results.append(ResultFile(path, doc, is_fixture(doc)))
        return True
    if folder is None:  # a file named on the command line must be something we read
        raise UserError(f"{path}: neither a bench result (no schema_version) nor a compare result "
                        f"(no schema {COMPARE_SCHEMA_PREFIX}...)")
    return False


def study_request(run: RunHistory) -> dict:
    """The request.json of the study a run belongs to (<study>/runs/<method>-seed<k>/history.json; it says how many
    seeds the study pairs), {} where there is none or it is unreadable."""
    if run.path.parent.parent.name != "runs":
        return {}
    study = run.path.parent.parent.parent
    try:
        return read_user_json(study / REQUEST_FILE, "compare request", CONFIG_MAX_BYTES, inside=study)
    except UserError:
        return {}


def describe_code(provenance: dict | None) -> str:
    """'abc1234567 (dirty)' or 'not recorded' for files written before provenance existed."""
    if not provenance:
        return "not recorded (written before provenance)"
    code = provenance.get("code") or {}
    commit = str(code.get("commit") or "unknown")
    short = commit[:10] if commit != "unknown" else commit
    flag = {True: " (dirty tree)", False: "", None: ""}.get(code.get("dirty"), "")
    return f"{short}{flag}"


def relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
