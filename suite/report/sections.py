"""The report as data: sections of paragraphs, tables of typed cells and figures. No Markdown or HTML here
(render.py does that), so tests assert on what a cell holds and how it was obtained.

Every number cell says its kind: MEASURED (by the command named in its file), DERIVED (arithmetic on
measured figures, the formula in a footnote), ESTIMATED (a model, named in a footnote) or UNAVAILABLE
(with why). An explanation that would repeat in every row is a footnote, given once per table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from ..spec import BASELINE, CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES, COMPARE_COMMAND, CONV_PASSES, VERIFY_FILE
from . import figures
from .claims import (EARLY_EPOCH_SWING, FULL_BUDGET_NOISE, COMPRESSION_FLOOR, HARDWARE_BAND, PAPER_CODES, PAPER_LOG,
                     Verdict, accuracy_entries, claim_checks, epoch_seconds, gaps, provenance_label)
from .efficiency import COLUMN as EFFICIENCY_COLUMN, NOTES as EFFICIENCY_NOTES, efficiency, peak_words
from .hosts import history_host, host_names, network_name
from .inputs import CompareResult, Inputs, ResultFile, RunHistory, describe_code, relative

NOT_MEASURED = "not measured"


class Kind(Enum):
    MEASURED = "measured"
    DERIVED = "derived"
    ESTIMATED = "estimated"
    UNAVAILABLE = "not measured"
    PAPER = "paper"
    TEXT = "text"


@dataclass(frozen=True)
class Cell:
    text: str
    kind: Kind = Kind.TEXT
    value: float | None = None  # the number behind the text, for sorting and for tests
    note: str | None = None  # a footnote key of the table
    fixture: bool = False
    verdict: Verdict | None = None


@dataclass
class Table:
    name: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    sortable: bool = False
    caption: str = ""
    footnotes: dict[str, str] = field(default_factory=dict)  # key -> text, numbered where first used

    def add(self, row: dict[str, Cell]) -> None:
        self.rows.append([row.get(c, Cell("-")) for c in self.columns])

    def column(self, name: str) -> list[Cell]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


@dataclass
class Figure:
    name: str
    png: bytes
    title: str
    caption: str
    data: dict = field(default_factory=dict)  # what was drawn (e.g. one bar per row), for tests


@dataclass
class Paragraph:
    text: str
    css: str = ""


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list = field(default_factory=list)  # Paragraph, Table, Figure
    details: bool = False  # below the divider, folded in HTML: the evidence behind the main page

    def tables(self) -> dict[str, Table]:
        return {b.name: b for b in self.blocks if isinstance(b, Table)}

    def figures(self) -> dict[str, Figure]:
        return {b.name: b for b in self.blocks if isinstance(b, Figure)}

    def text(self) -> str:
        return "\n".join(b.text for b in self.blocks if isinstance(b, Paragraph))


# ---------------------------------------------------------------------------------------------
# Cells


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value, spec: str = ".1f", unit: str = "", kind: Kind = Kind.MEASURED, note: str | None = None,
           missing: str = NOT_MEASURED, fixture: bool = False) -> Cell:
    if not _finite(value):
        return Cell(missing, Kind.UNAVAILABLE, note=note)
    return Cell(f"{value:{spec}}{unit}", kind, float(value), note, fixture)


def unavailable(why: str = "", note: str | None = None) -> Cell:
    return Cell(f"{NOT_MEASURED} ({why})" if why else NOT_MEASURED, Kind.UNAVAILABLE, note=note)


def text(value: str, note: str | None = None, fixture: bool = False) -> Cell:
    return Cell(value, Kind.TEXT, note=note, fixture=fixture)


def power_cell(comp, fixture: bool) -> Cell:
    """The power of the comparison's n seeds to show equivalence were the true gap 0, and the n giving 80%
    (derived: suite.stats from the seed gaps' sd); '-' for results from before compare planned power."""
    if comp.tost_power_at_0 is None:
        return Cell("-", Kind.UNAVAILABLE)
    needed = f"; 80% needs {comp.n_for_80pct_power} seeds" if comp.n_for_80pct_power else ""
    return Cell(f"{100 * comp.tost_power_at_0:.0f}%{needed}", Kind.DERIVED, comp.tost_power_at_0, None, fixture)


def source_cell(fixture: bool, command: str) -> Cell:
    """Which command wrote the row's file: never "measured" for a whole row, since a row may hold derived
    and estimated cells beside measured ones (each cell says its own kind)."""
    return Cell(provenance_label(True), fixture=True) if fixture else Cell(f"written by {command}")


def run_time(created_utc: str | None) -> str:
    """'2026-11-26 04:43 UTC' from an ISO time."""
    if not created_utc:
        return "time not recorded"
    return created_utc.replace("T", " ")[:16] + " UTC"


def data_label(result: ResultFile) -> str:
    return "CIFAR-10" if result.real_data else f"{result.data['data']['kind']} data (not CIFAR-10)"


def run_label(result: ResultFile) -> str:
    """What tells one run of a host from another: its time and its data."""
    return f"{run_time(result.created)}, {data_label(result)}"


def device_of(profile: dict, entry: dict | None = None) -> tuple[str, str, bool]:
    """(device, precision, recorded): results before device/precision existed ran on CPU in float32. A method
    entry (a precision arm such as "tathe4@bf16") carries its own precision."""
    recorded = "device" in profile or "precision" in profile or "precisions" in profile
    precision = (entry or {}).get("precision") or profile.get("precision", "fp32")
    return profile.get("device", "cpu"), precision, recorded


OLD_DEVICE_NOTE = ("cpu/fp32 not recorded in this file: it was written before bench had device and precision "
                   "dimensions, when CPU float32 was the only mode")


def device_cell(profile: dict, entry: dict | None = None) -> Cell:
    device, precision, recorded = device_of(profile, entry)
    return text(f"{device}, {precision}", note=None if recorded else "old-device")


def gap_text(gap: float, method: str) -> str:
    """A gap with its direction in words, naming the method (not every method is 4-bit): fp32 minus the
    method, so negative means the method scored higher."""
    if gap < 0:
        return f"{gap:+.2f} ({method} {-gap:.2f} points above fp32)"
    if gap > 0:
        return f"{gap:+.2f} ({method} {gap:.2f} points below fp32)"
    return "+0.00 (equal)"


# ---------------------------------------------------------------------------------------------
# Helpers the main page shares


def verdict_words(verdict: str | None, candidate: str, margin: float | None) -> str:
    """compare's verdict word with its subject, so "worse" after a precision is never read as fp32 worse."""
    within = f"+-{margin:g}" if margin else "the margin"
    words = {"worse": f"{candidate} lower than fp32; equivalence within {within} not shown",
             "better": f"{candidate} higher than fp32; equivalence within {within} not shown",
             "equivalent": f"equivalent within {within}",
             "inconclusive": f"inconclusive: neither a difference nor equivalence within {within} shown"}
    return words.get(verdict or "", verdict or "not recorded")


def reason_with_seeds(comp) -> str:
    """The comparison's reason, with the seeds that would decide it unless the reason already says so."""
    if comp.seeds_needed and "would decide" not in comp.reason:
        return f"{comp.reason} ({comp.seeds_needed} seeds would decide it)"
    return comp.reason


def fix_for_missing_accuracy(result: ResultFile) -> str:
    if not result.real_data:
        return ("get CIFAR-10 (`python ../shared/datasets/make_cifar10.py ~/.cache/q4bench` offline, or let q4bench "
                "download it), then `q4bench bench --tier quick --data-dir ~/.cache/q4bench`")
    return "`q4bench bench --tier quick` (the smoke tier measures no accuracy)"


def host_cell(names: dict, host_id: str | None, fixture: bool = False) -> Cell:
    """The host id, then its name (CPU model, ISA class, cores; or the GPU): two hosts with one CPU model string
    differ by their ISA class."""
    if not host_id:
        return text("not recorded", fixture=fixture)
    name = names.get(host_id)
    return text(f"{host_id}\n{name.label}" if name else host_id, fixture=fixture)


def table_host_names(inputs: Inputs) -> dict:
    """host id -> its name, for every host a table of this report may name."""
    hosts = {r.host_id for r in inputs.results} | {c.host_id for c in inputs.compares if c.host_id}
    hosts |= {history_host(r) for r in inputs.runs}
    return host_names(inputs, sorted(hosts))


def provenance_note(count: int, what: str, provenances: list[dict | None]) -> str:
    """'Drawn from 3 compare result(s); code: a8b3987b49 (2026-11-26); c0ffeec0ff (2026-11-27).': the commits
    and dates of the files a figure draws, said in its caption."""
    dates: dict[str, set[str]] = {}
    unrecorded = 0
    for prov in provenances:
        if not prov:
            unrecorded += 1
            continue
        dates.setdefault(describe_code(prov), set()).add(str(prov.get("written_at") or "date not recorded")[:10])
    commits = "; ".join(f"{c} ({', '.join(sorted(d))})" for c, d in sorted(dates.items(), key=lambda kv: min(kv[1])))
    return (f"Drawn from {count} {what}; code: {commits or 'not recorded'}"
            + (f"; {unrecorded} file(s) without provenance (written before files recorded it)" if unrecorded else "")
            + ".")


def omitted_note(omitted: list[str], why: str) -> str:
    """' Not drawn (why): a; b; and 3 more.': what a figure leaves out, bounded in length."""
    if not omitted:
        return ""
    shown = "; ".join(omitted[:5]) + (f"; and {len(omitted) - 5} more" if len(omitted) > 5 else "")
    return f" Not drawn ({len(omitted)}, {why}): {shown}."


def _seed_words(seeds: list) -> str:
    known = sorted(s for s in seeds if isinstance(s, int))
    if not known:
        return "seeds not recorded"
    if len(known) > 2 and known == list(range(known[0], known[-1] + 1)):
        return f"seeds {known[0]}-{known[-1]}"
    return f"seed{'s' if len(known) > 1 else ''} {', '.join(map(str, known))}"


def _int_or_zero(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def accuracy_vs_time(inputs: Inputs) -> Figure | None:
    """Test accuracy against summed training seconds, one panel per compare result; at most figures.MAX_PANELS
    (the largest budgets first), the others named in the caption."""
    names = host_names(inputs, sorted({c.host_id or "not recorded" for c in inputs.compares}))
    panels = []
    for c in sorted(inputs.compares, key=lambda c: (-_int_or_zero(c.budget.get("epochs")), -len(c.runs))):
        lines = []
        for run in c.runs:
            wall = run.history.wall_seconds() if run.history else None
            if wall:
                lines.append({"method": run.method, "label": f"{run.method} seed {run.seed}", "seed": run.seed,
                              "x": [w / 60 for w in wall], "y": [e["test_acc"] for e in run.history.epochs],
                              "dashed": run.method == c.reference})
        host = names[c.host_id or "not recorded"].label
        title = (("FIXTURE: " if c.fixture else "") + f"{host}, {c.device} {c.precision}, {c.describe_budget()}, "
                 f"{_seed_words(sorted({r.seed for r in c.runs if r.seed is not None}))}")
        panels.append({"title": title, "lines": lines, "compare": c})
    drawable = [p for p in panels if p["lines"]]
    if not drawable:
        return None
    drawn = drawable[:figures.MAX_PANELS]
    omitted = [f"{p['title']} (no per-epoch seconds)" for p in panels if not p["lines"]]
    omitted += [p["title"] for p in drawable[figures.MAX_PANELS:]]
    fig = figures.curves([{"title": p["title"], "lines": p["lines"]} for p in drawn],
                         "Test accuracy against training time, each line one run (compare results)",
                         "training time, minutes: the history's summed epoch `seconds` (evaluation excluded)",
                         "test accuracy after the epoch, %")
    files = [p["compare"] for p in drawn]
    caption = ("Each line one run of a compare result, one point per epoch (fp32 dashed); x: the run's summed epoch "
               "`seconds`, which exclude evaluation and include whatever else ran on the host; measured. On a shared "
               "host the spread between runs of one method is other load, not the method's cost: read cost from "
               "bench's step times." + omitted_note(omitted, f"at most {figures.MAX_PANELS} panels, largest budgets first")
               + " " + provenance_note(len(files), "compare result(s)", [c.provenance for c in files]))
    return Figure("accuracy_vs_time", figures.png(fig), "Accuracy against training time", caption,
                  {"panels": len(drawn), "lines": sum(len(p["lines"]) for p in drawn), "omitted": len(omitted)})


# ---------------------------------------------------------------------------------------------
# The paper's claims


def section_claims(inputs: Inputs) -> Section:
    s = Section("claims", "The paper's claims against these measurements")
    table = Table("claims", ["claim", "paper says", "measured here", "verdict", "reason", "evidence"])
    for c in claim_checks(inputs):
        table.add({"claim": text(c.claim), "paper says": Cell(c.paper, Kind.PAPER),
                   "measured here": Cell(c.measured, Kind.UNAVAILABLE if c.measured == NOT_MEASURED else Kind.MEASURED),
                   "verdict": Cell(c.verdict.value, verdict=c.verdict), "reason": text(c.reason),
                   "evidence": text(c.evidence, fixture=c.evidence.startswith("FIXTURE"))})
    s.blocks.append(table)
    s.blocks.append(Paragraph(
        "Verdicts are *confirmed* or *contradicted* only where the evidence's budget can decide the claim, else *not "
        "measurable at this budget*, or *not yet decided* while the runs that decide it still train. The accuracy "
        "claims count only histories of the paper recipe with all 150 epochs done on all of CIFAR-10, final and best "
        "epoch both; the SimpleResNet4bit rows only runs of that network, the others only the paper's VGG4bit. "
        f"Margins: {FULL_BUDGET_NOISE} points at the full "
        f"budget (run-to-run noise), {EARLY_EPOCH_SWING} points after a few epochs (epoch-to-epoch swing), "
        f"{COMPRESSION_FLOOR}x floor for compression, {HARDWARE_BAND:g}x band for time on another CPU."))
    full = inputs.full_budget_runs
    if full:
        lines = [{"method": r.method, "label": f"{r.method} seed {r.history.get('seed')} ({r.device}, {r.precision})",
                  "x": [e["epoch"] for e in r.epochs], "y": [e["test_acc"] for e in r.epochs],
                  "dashed": r.method == BASELINE} for r in full]
        fixture = "FIXTURE: " if any(r.fixture for r in full) else ""
        fig = figures.curves([{"title": f"{fixture}150-epoch paper recipe, CIFAR-10 (all 10,000 test images)",
                               "lines": lines}],
                             "Full-budget runs against the paper's log", "epoch", "test accuracy after the epoch, %",
                             reference=PAPER_LOG, reference_label="paper's log (tathe4)")
        s.blocks.append(Figure("paper_curves", figures.png(fig), "Full-budget runs against the paper's log",
                               "Test accuracy per epoch of every full-budget history (measured; fp32 dashed) and the "
                               "paper's own tathe4 log (stars: epochs 1, 7, 8, 13, 50, 75, 100, 110, 150). "
                               + provenance_note(len(full), "histories", [r.provenance for r in full]),
                               {"runs": len(full), "lines": len(lines)}))
    return s


# ---------------------------------------------------------------------------------------------
# Compare results: the verdicts and the runs behind them


def section_compare(inputs: Inputs) -> Section:
    names = table_host_names(inputs)
    s = Section("compare", "Compare: paired seeds of tathe4 and fp32, gap with its confidence interval")
    if not inputs.compares:
        s.blocks.append(Paragraph(f"No compare result. `{COMPARE_COMMAND}` trains both methods on the same seeds "
                                  "and writes one under reports/results/; `make report` then shows its verdict "
                                  "first."))
        return s
    verdicts = Table("comparisons", ["host", "device", "budget", "candidate", "seeds", "mean gap", "95% CI",
                                     "TOST p", "TOST power at gap 0", "verdict", "reason", "file"])
    verdicts.footnotes["gap"] = ("Gap = reference (fp32) minus candidate in test-accuracy points, mean over paired "
                                 "seeds: positive, the candidate scored lower; negative, higher. Derived by q4bench "
                                 "compare from the measured accuracies.")
    runs = Table("compare_runs", ["host", "method", "seed", "final test acc", "best test acc", "final acc, TTA",
                                  "wall time", "history"], sortable=True)
    for c in inputs.compares:
        host, device = host_cell(names, c.host_id, c.fixture), text(f"{c.device}, {c.precision}")
        for comp in c.comparisons:
            if comp.ci95_method:  # newer compare results say how their interval was computed: said once
                verdicts.footnotes[f"ci:{comp.ci95_method}"] = f"95% interval: {comp.ci95_method}."
            verdicts.add({
                "host": host, "device": device, "budget": text(c.describe_budget()), "candidate": text(comp.candidate),
                "seeds": number(comp.n_seeds, "d", kind=Kind.TEXT) if isinstance(comp.n_seeds, int) else unavailable(),
                "mean gap": (Cell(gap_text(comp.mean_gap, comp.candidate), Kind.DERIVED, comp.mean_gap, "gap", c.fixture)
                             if comp.mean_gap is not None else unavailable()),
                "95% CI": (Cell(f"{comp.ci95[0]:+.2f} to {comp.ci95[1]:+.2f}", Kind.DERIVED, comp.ci95[0],
                                f"ci:{comp.ci95_method}" if comp.ci95_method else None, c.fixture)
                           if comp.ci95 else unavailable("too few seeds")),
                "TOST p": number(comp.tost_p, ".3f", kind=Kind.DERIVED, missing="-"),
                "TOST power at gap 0": power_cell(comp, c.fixture),
                "verdict": text(verdict_words(comp.verdict, comp.candidate, c.margin_points)),
                "reason": text(reason_with_seeds(comp)),
                "file": text(relative(c.path))})
        for r in c.runs:
            runs.add({"host": host, "method": text(r.method), "seed": text(str(r.seed)),
                      "final test acc": number(r.final_acc, ".2f", "%", fixture=c.fixture),
                      "best test acc": number(r.best_acc, ".2f", "%", fixture=c.fixture),
                      "final acc, TTA": number(r.final_acc_tta, ".2f", "%", fixture=c.fixture, missing="-"),
                      "wall time": number(None if r.wall_seconds is None else r.wall_seconds / 60, ".1f", " min",
                                          fixture=c.fixture),
                      "history": text(relative(r.history.path) if r.history else "not found")})
    s.blocks += [verdicts, runs]
    figure = accuracy_vs_time(inputs)
    if figure:
        s.blocks.append(figure)
    return s


# ---------------------------------------------------------------------------------------------
# Runs: one row per input file


def section_runs(inputs: Inputs) -> Section:
    names = table_host_names(inputs)
    s = Section("runs", "Runs: one row per file, with its time, data and code")
    table = Table("runs", ["kind", "host", "time", "data", "budget / tier", "device", "code", "file", "source"],
                  sortable=True)
    table.footnotes["old-code"] = ("Written before q4bench recorded provenance (commit, versions, time): the code that "
                                   "made it is not known beyond suite_version.")
    table.footnotes["old-device"] = OLD_DEVICE_NOTE
    for r in inputs.results:
        devices = sorted({f"{d}, {p}" for d, p, _ in (device_of(x) for x in r.data["profiles"])})
        recorded = all(device_of(x)[2] for x in r.data["profiles"])
        table.add({"kind": text("bench result"), "host": host_cell(names, r.host_id), "time": text(run_time(r.created)),
                   "data": text(data_label(r)), "budget / tier": text(f"{r.data['tier']['name']} tier"),
                   "device": text("; ".join(devices), note=None if recorded else "old-device"),
                   "code": text(describe_code(r.provenance), note=None if r.provenance else "old-code"),
                   "file": text(relative(r.path)), "source": source_cell(r.fixture, "q4bench bench")})
    for c in inputs.compares:
        table.add({"kind": text("compare result"), "host": host_cell(names, c.host_id),
                   "time": text(run_time((c.provenance or {}).get("written_at"))),
                   "data": text(c.data_source or "not recorded"), "budget / tier": text(c.describe_budget()),
                   "device": text(f"{c.device}, {c.precision}"), "code": text(describe_code(c.provenance)),
                   "file": text(relative(c.path)), "source": source_cell(c.fixture, "q4bench compare")})
    for run in inputs.runs:
        h = run.history
        table.add({"kind": text(f"history ({run.method}, seed {h.get('seed')})"), "host": host_cell(names, h.get("host_id")),
                   "time": text(run_time((run.provenance or {}).get("written_at"))),
                   "data": text("CIFAR-10" if run.budget.real_cifar10 else h["data_source"]),
                   "budget / tier": text(run.budget.describe()), "device": text(f"{run.device}, {run.precision}"),
                   "code": text(describe_code(run.provenance), note=None if run.provenance else "old-code"),
                   "file": text(relative(run.path)), "source": source_cell(run.fixture, "q4bench train")})
    for v in inputs.verifies:
        table.add({"kind": text(VERIFY_FILE), "host": text("-"), "time": text(run_time(
                   (v.data.get("provenance") or {}).get("written_at"))), "data": text(str(v.data.get("data", "?"))),
                   "budget / tier": text(f"{v.data['test_images']:,} test images"), "device": text("cpu (onnxruntime)"),
                   "code": text(describe_code(v.data.get("provenance")),
                                note=None if v.data.get("provenance") else "old-code"),
                   "file": text(relative(v.path)), "source": source_cell(v.fixture, "q4bench verify-onnx")})
    if table.rows:
        s.blocks.append(table)
    else:
        s.blocks.append(Paragraph("No input files were found: every section reads *not measured*. Run `make bench` "
                                  f"(result files), `{COMPARE_COMMAND}` and `make parity` (run folders, ONNX checks), "
                                  "then `make report`."))
    src = inputs.sources
    s.blocks.append(Paragraph(f"Searched: results {', '.join(map(str, src.results)) or '(none)'}; runs "
                              f"{', '.join(map(str, src.runs)) or '(none)'}; onnx {', '.join(map(str, src.onnx)) or '(none)'}."))
    for note in inputs.notes:
        s.blocks.append(Paragraph(f"Note: {note}"))
    return s


# ---------------------------------------------------------------------------------------------
# Accuracy at equal budget


def _budget_cell(table: Table, budget) -> Cell:
    """'1 ep x 50,000' in the row; the budget's full description once, as a footnote."""
    table.footnotes[f"budget:{budget.key()}"] = budget.describe()
    network = "" if budget.paper_network else f", {budget.arch}"
    return text(f"{budget.epochs} ep x {budget.train_images:,}, {budget.recipe}{network}", note=f"budget:{budget.key()}")


def section_accuracy(inputs: Inputs) -> Section:
    s = Section("accuracy", "Accuracy per run, and the gap to fp32 at equal budget")
    entries = accuracy_entries(inputs)
    if not entries:
        reasons = sorted({f"{run_time(r.created)}: {r.data['accuracy']['reason']} (fix: {fix_for_missing_accuracy(r)})"
                          for r in inputs.results if not r.data["accuracy"]["measured"] and r.data["accuracy"]["reason"]})
        s.blocks.append(Paragraph(f"Accuracy: {NOT_MEASURED}. " + ("The result files say why: " + "; ".join(reasons) + ". "
                                                                  if reasons else "") +
                                  "Run folders (history.json) add accuracy per epoch: `q4bench parity` writes two; "
                                  "pass --runs."))
        return s
    found = gaps(entries)
    table = Table("accuracy", ["method", "final-epoch test acc", "best-epoch test acc", "gap vs fp32, final",
                               "gap vs fp32, best", "budget", "device", "source"], sortable=True)
    table.footnotes["gap"] = ("fp32 minus the method in points, from runs with the same data, budget and seed: positive, "
                              "the method is worse; negative, better. Below the full budget accuracy swings by "
                              "several points between seeds and epochs, so a gap of either sign says little "
                              f"about parity; `{COMPARE_COMMAND}` gives it a confidence interval over seeds.")
    table.footnotes["bench-best"] = "bench result files keep the final epoch only"
    for i, e in enumerate(entries):
        final_gap, best_gap = found.get(i, (None, None))
        none = "-" if e.method == BASELINE else "no fp32 run at this budget"
        table.add({
            "method": text(e.method),
            "final-epoch test acc": number(e.final, ".2f", "%", fixture=e.fixture),
            "best-epoch test acc": (number(e.best, ".2f", "%" + (f" (epoch {e.best_epoch})" if e.best_epoch else ""),
                                           fixture=e.fixture) if e.best is not None
                                    else unavailable("not recorded", note="bench-best")),
            "gap vs fp32, final": (Cell(gap_text(final_gap, e.method), Kind.DERIVED, final_gap, "gap") if final_gap is not None
                                   else text(none)),
            "gap vs fp32, best": (Cell(gap_text(best_gap, e.method), Kind.DERIVED, best_gap, "gap") if best_gap is not None
                                  else text(none)),
            "budget": _budget_cell(table, e.budget), "device": text(f"{e.device}, {e.precision}"),
            "source": text(f"{provenance_label(e.fixture)}: {e.source}", fixture=e.fixture),
        })
    s.blocks.append(table)
    return s


# ---------------------------------------------------------------------------------------------
# Accuracy per epoch and distinct codes (histories)


LONG_RUN = 30  # epochs; longer runs (the 150-epoch paper recipe) are sampled in the per-epoch table


def _table_epochs(run: RunHistory) -> list[dict]:
    if len(run.epochs) <= LONG_RUN:
        return run.epochs
    best = max(run.epochs, key=lambda e: e["test_acc"])
    return [e for i, e in enumerate(run.epochs) if i == 0 or e["epoch"] % 10 == 0 or e is best
            or i == len(run.epochs) - 1]


def _panel_key(run: RunHistory) -> tuple:
    """Everything runs must share to be drawn on one axes, but the method: the host, the network, the data, the
    recipe and its planned epochs, the seed, the device and precision. A pair stopped at different epochs (101
    and 94 of 150) still shares its axes."""
    h, b = run.history, run.budget
    return (history_host(run), run.arch, b.data, b.train_images, b.test_images, h["recipe"],
            h.get("planned_epochs"), h.get("seed"), h.get("batch_size"), run.device, run.precision, run.fixture)


def run_title(run: RunHistory, host: str) -> str:
    """'NVIDIA H100 80GB HBM3, VGG4bit, paper recipe (150 epochs planned), 50,000 imgs/epoch, seed 0, cuda fp32'."""
    h, b = run.history, run.budget
    planned = h.get("planned_epochs")
    budget = f"{h['recipe']} recipe" + (f", {planned} epoch{'s' if planned != 1 else ''} planned" if planned else "")
    return (("FIXTURE: " if run.fixture else "") + f"{host}, {network_name(run.arch)}, {budget}, "
            f"{b.train_images:,} imgs/epoch, seed {h.get('seed')}, {run.device} {run.precision}")


def _run_provenances(runs: list[RunHistory]) -> list[dict | None]:
    return [r.provenance for r in runs]


def accuracy_per_epoch(inputs: Inputs) -> Figure:
    """One panel per group of runs that differ only by method (fp32 and tathe4 of one seed on one axes); at most
    figures.MAX_PANELS, groups with both methods first, then the longest; the rest named in the caption."""
    groups: dict[tuple, list[RunHistory]] = {}
    for r in inputs.runs:
        groups.setdefault(_panel_key(r), []).append(r)
    names = host_names(inputs, sorted({k[0] for k in groups}))
    ordered = sorted(groups.values(), key=lambda rs: (len({r.method for r in rs}) < 2,
                                                       -max(len(r.epochs) for r in rs), str(rs[0].path)))
    panels = [{"title": run_title(runs[0], names[history_host(runs[0])].label),
               "lines": [{"method": r.method, "label": r.method, "x": [e["epoch"] for e in r.epochs],
                          "y": [e["test_acc"] for e in r.epochs], "dashed": r.method == BASELINE}
                         for r in sorted(runs, key=lambda r: (r.method != BASELINE, r.method))],
               "runs": runs} for runs in ordered]
    drawn = panels[:figures.MAX_PANELS]
    fig = figures.curves([{"title": p["title"], "lines": p["lines"]} for p in drawn],
                         "Test accuracy per epoch, fp32 and the other methods of one seed on one axes", "epoch",
                         "test accuracy after the epoch, % (measured)")
    runs = [r for p in drawn for r in p["runs"]]
    caption = ("Measured by q4bench train (fp32 dashed); one panel per host, network, recipe, device and seed, "
               "with every method trained on it." + omitted_note(
                   [p["title"] for p in panels[figures.MAX_PANELS:]],
                   f"at most {figures.MAX_PANELS} panels: pairs first, then the most epochs; all are in the table "
                   "below") + " " + provenance_note(len(runs), "histories", _run_provenances(runs)))
    return Figure("accuracy_per_epoch", figures.png(fig), "Test accuracy per epoch", caption,
                  {"panels": len(drawn), "lines": sum(len(p["lines"]) for p in drawn),
                   "omitted": len(panels) - len(drawn), "groups": len(panels), "titles": [p["title"] for p in drawn],
                   "runs": [[(r.method, len(r.epochs)) for r in p["runs"]] for p in drawn]})


def distinct_codes(inputs: Inputs) -> Figure | None:
    """Distinct integer codes per layer and epoch, one panel per run with codes; at most figures.MAX_PANELS (the
    longest runs first), the others named in the caption."""
    coded = [r for r in inputs.runs if any(e.get("distinct_codes") for e in r.epochs)]
    if not coded:
        return None
    coded.sort(key=lambda r: (-len(r.epochs), str(r.path)))
    names = host_names(inputs, sorted({history_host(r) for r in coded}))
    titles = [f"{r.method}: " + run_title(r, names[history_host(r)].label) for r in coded]
    panels = []
    for r, title in zip(coded[:figures.MAX_PANELS], titles):
        layers = list(r.epochs[-1].get("distinct_codes") or {})
        panels.append({"title": title,
                       "layers": {layer: ([e["epoch"] for e in r.epochs if layer in (e.get("distinct_codes") or {})],
                                          [e["distinct_codes"][layer] for e in r.epochs
                                           if layer in (e.get("distinct_codes") or {})]) for layer in layers}})
    fig = figures.codes_per_layer(panels, "Distinct weight codes per layer after each epoch", PAPER_CODES)
    drawn = coded[:figures.MAX_PANELS]
    caption = (f"Distinct integer weight codes per layer after each epoch, measured (dotted: the paper's "
               f"{PAPER_CODES}); one panel per run, each layer one line." + omitted_note(
                   titles[figures.MAX_PANELS:], f"at most {figures.MAX_PANELS} panels, the longest runs first")
               + " " + provenance_note(len(drawn), "histories", _run_provenances(drawn)))
    return Figure("distinct_codes", figures.png(fig), "Distinct weight codes per layer", caption,
                  {"panels": len(panels), "lines": sum(len(p["layers"]) for p in panels),
                   "omitted": len(coded) - len(panels), "runs": len(coded)})


def section_epochs(inputs: Inputs) -> Section:
    s = Section("epochs", "Accuracy per epoch and distinct codes per layer (histories)")
    if not inputs.runs:
        s.blocks.append(Paragraph(f"Per-epoch accuracy and distinct codes: {NOT_MEASURED}. Bench result files keep "
                                  "only the final accuracy; these figures come from run folders (history.json), e.g. "
                                  "the two `make parity` writes under reports/parity/runs, or any `q4bench train "
                                  "--out DIR` passed with --runs."))
        return s
    s.blocks.append(accuracy_per_epoch(inputs))
    table = Table("epochs", ["method", "epoch", "train acc", "test acc", "test acc, TTA", "lr", "seconds",
                             "train images/s", "run"])
    table.footnotes["tta"] = "test-time augmentation (the short recipe only): the flipped and unflipped image averaged"
    table.footnotes["sampled"] = (f"A run longer than {LONG_RUN} epochs shows epoch 1, every 10th, its best and its "
                                  "last epoch here; its history.json has them all.")
    for r in inputs.runs:
        # The run's budget and file, said once in a footnote rather than on each of its epochs.
        table.footnotes[f"run:{r.path}"] = f"{r.budget.describe()}; {provenance_label(r.fixture)}: {relative(r.path)}"
        for e in _table_epochs(r):
            table.add({"method": text(r.method, note="sampled" if len(r.epochs) > LONG_RUN else None),
                       "epoch": number(e["epoch"], "d", kind=Kind.TEXT),
                       "train acc": number(e.get("train_acc"), ".2f", "%", fixture=r.fixture),
                       "test acc": number(e["test_acc"], ".2f", "%", fixture=r.fixture),
                       "test acc, TTA": number(e.get("test_acc_tta"), ".2f", "%", note="tta", missing="-"),
                       "lr": number(e.get("lr"), ".2e", kind=Kind.TEXT),
                       "seconds": number(e.get("seconds"), ".0f", " s", fixture=r.fixture),
                       "train images/s": number(e.get("images_per_s"), ".1f", fixture=r.fixture),
                       "run": text(r.path.parent.name, note=f"run:{r.path}", fixture=r.fixture)})
    s.blocks.append(table)

    figure = distinct_codes(inputs)
    if figure is None:
        s.blocks.append(Paragraph(f"Distinct codes per layer: {NOT_MEASURED} (no run of a method with integer codes)."))
    else:
        s.blocks.append(figure)
    return s


# ---------------------------------------------------------------------------------------------
# Per profile: throughput, efficiency, memory, energy


def _energy_cells(energy: dict, fixture: bool) -> tuple[Cell, Cell, str | None]:
    """(measured RAPL cell, estimated cell, footnote text of the estimate's model)."""
    j, method = energy["joules_per_epoch"], energy["method"]
    if method == "measured_rapl":
        return number(j, ",.0f", fixture=fixture), text("-"), None
    if method == "estimated":
        return unavailable("no RAPL"), number(j, ",.0f", kind=Kind.ESTIMATED, note=f"energy:{energy['model']}"), \
            energy["model"]
    return unavailable(energy.get("model") or "unavailable"), text("-"), None


def efficiency_cell(table: Table, m: dict, p: dict, fixture: bool, why_missing: str = "") -> Cell:
    """The efficiency with the ceiling it is read against; its footnote registered once in the table."""
    found = efficiency(m, p)
    if found is None:
        return unavailable(why_missing)
    table.footnotes[found.note] = EFFICIENCY_NOTES[found.note]
    return Cell(found.text, Kind.DERIVED, found.percent, found.note, fixture)


MAX_BARS = 40  # bars of the throughput figure: what stays readable and bounded whatever the number of results


def throughput_figure(inputs: Inputs) -> Figure:
    """One bar per host, profile, device/precision and method, from that host's newest result measuring it: the
    table below has every run. At most MAX_BARS bars (the newest first); the rest said in the caption."""
    latest: dict[tuple, tuple[ResultFile, dict, str, dict]] = {}
    for r in sorted(inputs.results, key=lambda r: r.created):
        for p in r.data["profiles"]:
            for name, m in p["methods"].items():
                device, precision, _ = device_of(p, m)
                latest[(r.host_id, p["profile"], device, precision, name)] = (r, p, name, m)
    names = host_names(inputs, sorted({k[0] for k in latest}))
    chosen = sorted(latest.values(), key=lambda v: v[0].created, reverse=True)[:MAX_BARS]
    chosen.sort(key=lambda v: (names[v[0].host_id].label, v[1]["profile"], v[0].created))
    bars = []
    for r, p, name, m in chosen:
        device, precision, _ = device_of(p, m)
        bars.append({"label": ("FIXTURE " if r.fixture else "") + f"{names[r.host_id].label} | {p['profile']} | "
                     f"{device} {precision} | {run_time(r.created)[:10]}{'' if r.real_data else ' synthetic'} | {name}",
                     "method": name, "train": m["train_images_per_s"], "eval": m["eval_images_per_s"]})
    left = len(latest) - len(chosen)
    files = list({id(v[0]): v[0] for v in chosen}.values())
    caption = ("One bar per host, profile, device/precision and method, from the newest result measuring it "
               "(measured by q4bench bench; the table below has every run); colour by method, hatched: a bf16 arm."
               + (f" Not drawn ({left}, at most {MAX_BARS} bars, the newest first): the older combinations, in the "
                  "table." if left else "") + " " + provenance_note(len(files), "bench result(s)",
                                                                    [r.provenance for r in files]))
    fig = figures.throughput_bars(bars, "Training and eval throughput, newest result per host, profile and method")
    return Figure("throughput", figures.png(fig), "Throughput per host, profile and method", caption,
                  {"bars": len(bars), "omitted": left, "drawn": [(r.host_id, p["profile"], *device_of(p, m)[:2], name,
                                                                 r.created) for r, p, name, m in chosen]})


def section_profiles(inputs: Inputs) -> Section:
    names = table_host_names(inputs)
    s = Section("profiles", "Per profile and run: throughput, efficiency, memory, energy")
    if not inputs.results:
        s.blocks.append(Paragraph(f"Throughput, efficiency, memory and energy: {NOT_MEASURED} (no result file; run "
                                  "`make bench`)."))
        return s
    table = Table("profiles", ["host", "run", "profile", "threads", "device", "method", "train images/s",
                               "eval images/s", EFFICIENCY_COLUMN, "peak memory", "energy J/epoch (RAPL, measured)",
                               "energy J/epoch (estimated)", "source"], sortable=True)
    table.footnotes["old-device"] = OLD_DEVICE_NOTE
    for r in inputs.results:
        for p in r.data["profiles"]:
            for name, m in p["methods"].items():
                miss = f"{m['status']}: {m.get('status_detail') or 'no detail'}" if m["status"] != "ok" else ""
                rapl, estimated, model = _energy_cells(m["energy"], r.fixture)
                if model:
                    table.footnotes[f"energy:{model}"] = f"Estimated, not measured: {model}."
                table.add({
                    "host": host_cell(names, r.host_id), "run": text(run_label(r)), "profile": text(p["profile"]),
                    "threads": number(p["threads"], "d", " (oversubscribed)" if p["oversubscribed"] else "", Kind.TEXT),
                    "device": device_cell(p, m), "method": text(name),
                    "train images/s": number(m["train_images_per_s"], ".1f", missing=f"{NOT_MEASURED} ({miss})"
                                             if miss else NOT_MEASURED, fixture=r.fixture),
                    "eval images/s": number(m["eval_images_per_s"], ".0f", missing=f"{NOT_MEASURED} ({miss})"
                                            if miss else NOT_MEASURED, fixture=r.fixture),
                    EFFICIENCY_COLUMN: efficiency_cell(table, m, p, r.fixture, miss),
                    "peak memory": number(None if m["peak_rss_bytes"] is None else m["peak_rss_bytes"] / 2**20, ".0f",
                                          " MiB" + (f" (cap {p['memory_cap_mib']} MiB, {p['cap_enforcement']})"
                                                    if p["memory_cap_mib"] else ""), fixture=r.fixture),
                    "energy J/epoch (RAPL, measured)": rapl, "energy J/epoch (estimated)": estimated,
                    "source": source_cell(r.fixture, "q4bench bench"),
                })
    s.blocks.append(throughput_figure(inputs))
    s.blocks.append(table)
    ceilings = _ceiling_table(inputs, names)
    if ceilings.rows:
        s.blocks.append(ceilings)
    kernels = _conv_kernel_table(inputs)
    if kernels.rows:
        s.blocks.append(Paragraph("Where efficiency stops: the network's convolutions timed alone, pass by pass, at the "
                                  "same threads and batch (measured by q4bench bench; results from before this "
                                  "breakdown have none). A pass far below SGEMM's rate caps the step's efficiency."))
        s.blocks.append(kernels)
    return s


def _ceiling_words(found: dict | None) -> Cell:
    if not found:
        return text("-")
    return Cell(f"{found['gflops']:.1f} GFLOP/s ({found['shape']['origin']}, {found['shape']['m']}x"
                f"{found['shape']['k']}x{found['shape']['n']}; best of {len(found['shapes'])} shapes)", Kind.MEASURED,
                found["gflops"])


def _ceiling_table(inputs: Inputs, names: dict) -> Table:
    """One row per profile of a result that measured the multi-shape ceiling, with the theoretical peak."""
    table = Table("ceilings", ["host", "run", "profile", "fp32 ceiling (measured)", "bf16 ceiling (measured)",
                               "theoretical FMA peak (estimated)"], caption="What the efficiencies divide by")
    for r in inputs.results:
        for p in r.data["profiles"]:
            ceiling = p.get("ceiling")
            if not isinstance(ceiling, dict):
                continue
            peak = peak_words(p) or f"not stated: {(ceiling.get('peak') or {}).get('reason', 'not recorded')}"
            table.add({"host": host_cell(names, r.host_id), "run": text(run_label(r)), "profile": text(p["profile"]),
                       "fp32 ceiling (measured)": _ceiling_words(ceiling.get("fp32")),
                       "bf16 ceiling (measured)": _ceiling_words(ceiling.get("bf16")),
                       "theoretical FMA peak (estimated)": Cell(peak, Kind.ESTIMATED if "GFLOP/s" in peak else
                                                                Kind.UNAVAILABLE)})
    return table


def section_scaling(inputs: Inputs) -> Section:
    """1 vs N processes under torchrun (bench results with a scaling entry; suite/scaling.py has the formulas)."""
    names = table_host_names(inputs)
    s = Section("scaling", "Training across processes: 1 vs N under torchrun (DDP over gloo)")
    table = Table("scaling", ["host", "run", "processes x threads", "method, global batch", "1 process s/step",
                              "N processes s/step", "speedup (derived)", "efficiency T1/(N TN) (derived)",
                              "all-reduce share (derived)", "1 process, all threads s/step", "load average",
                              "source"])
    table.footnotes["scaling"] = ("Measured in one torchrun job of interleaved windows (the medians over rounds; "
                                  "brackets: the rounds' range). The all-reduce share is 1 - TN(no_sync) / TN: the "
                                  "part of a step DDP's gradient all-reduce adds beyond what backward hides.")
    reasons, seen = [], set()
    for r in inputs.results:
        if (r.host_id, r.created) in seen:  # a result both in reports/results and, submitted, in the store
            continue
        seen.add((r.host_id, r.created))
        entry = r.data.get("scaling")
        if entry is None:
            reasons.append(f"{r.host_id} {run_label(r)}: the result predates the scaling measurement")
            continue
        if entry["status"] != "ok":
            reasons.append(f"{r.host_id} {run_label(r)}: {entry['status']} ({entry['detail']})")
            continue
        plan, step, ranges = entry["plan"], entry["step_seconds"], entry["ranges"]
        load = entry.get("load_average_before"), entry.get("load_average_after")
        table.add({
            "host": host_cell(names, r.host_id), "run": text(run_label(r)),
            "processes x threads": text(f"1 vs {plan['processes']} x {plan['threads_per_process']}"),
            "method, global batch": text(f"{plan['method']}, {plan['global_batch']}"),
            "1 process s/step": number(step["one"], ".3f", fixture=r.fixture),
            "N processes s/step": number(step["ddp"], ".3f", fixture=r.fixture),
            "speedup (derived)": number(entry["speedup"], ".2f", kind=Kind.DERIVED, fixture=r.fixture),
            "efficiency T1/(N TN) (derived)": Cell(
                f"{entry['efficiency']:.2f} [{ranges['efficiency'][0]:.2f}-{ranges['efficiency'][1]:.2f}]",
                Kind.DERIVED, entry["efficiency"], "scaling", r.fixture),
            "all-reduce share (derived)": number(100 * entry["allreduce_share"], ".1f", "%", Kind.DERIVED,
                                                 fixture=r.fixture),
            "1 process, all threads s/step": number(step["one_all"], ".3f", f" ({entry['threads_all_cores']} threads)",
                                                    fixture=r.fixture),
            "load average": text(" -> ".join(f"{v[0]:.2f}" if v else "?" for v in load)),
            "source": source_cell(r.fixture, "q4bench bench"),
        })
    if table.rows:
        s.blocks.append(table)
    else:
        s.blocks.append(Paragraph(f"Scaling across processes: {NOT_MEASURED} (no result of the quick or paper tier "
                                  "with it; run `make bench`)."))
    if reasons:
        s.blocks.append(Paragraph("Not measured: " + "; ".join(reasons) + "."))
    return s


def _conv_kernel_table(inputs: Inputs) -> Table:
    names = table_host_names(inputs)
    columns = ["host", "run", "profile", "threads", "batch", *[f"{n.replace('_', '-')} GFLOP/s" for n in CONV_PASSES],
               "convs alone / fp32 step", "source"]
    table = Table("conv_kernels", columns)
    table.footnotes["pass"] = ("Measured rate; in brackets derived: the pass's rate / the profile's single-shape "
                               "fp32 SGEMM probe, which is not the host's peak (a pass may exceed it).")
    for r in inputs.results:
        for p in r.data["profiles"]:
            kernels, sgemm = p.get("conv_kernels"), p.get("sgemm_gflops")
            if not kernels or not sgemm:
                continue
            row = {"host": host_cell(names, r.host_id), "run": text(run_label(r)), "profile": text(p["profile"]),
                   "threads": number(p["threads"], "d", kind=Kind.TEXT), "batch": number(kernels["batch_size"], "d",
                                                                                        kind=Kind.TEXT),
                   "source": source_cell(r.fixture, "q4bench bench")}
            for name in CONV_PASSES:
                rate = kernels[name]["gflops"]
                row[f"{name.replace('_', '-')} GFLOP/s"] = Cell(f"{rate:.0f} ({rate / sgemm:.2f} of SGEMM)",
                                                                 Kind.MEASURED, rate, "pass", r.fixture)
            step = p["methods"].get(r.data.get("baseline_method", BASELINE), {}).get("step_seconds_median")
            total = sum(kernels[name]["seconds"] for name in CONV_PASSES)
            row["convs alone / fp32 step"] = (Cell(f"{total:.2f} s / {step:.2f} s", Kind.MEASURED, total, fixture=r.fixture)
                                              if step else unavailable())
            table.add(row)
    return table


# ---------------------------------------------------------------------------------------------
# Methods: step time against fp32


PRECISION_KERNELS = {"bf16": "bfloat16 (autocast)"}  # what a precision arm's GEMMs run in, instead of float32


def _kernels_cell(table: Table, cost: dict | None, precision: str) -> Cell:
    """A long kernels sentence is a footnote, said once per table; the cell keeps its first words. The result
    file records the method's kernels in float32; a precision arm runs them in its own precision."""
    if cost is None:
        return text("not in this result file")
    kernels = cost["kernels"]
    if precision in PRECISION_KERNELS:
        kernels = kernels.replace("float32", PRECISION_KERNELS[precision])
    if len(kernels) <= 30:
        return text(kernels)
    table.footnotes[f"kernels:{kernels}"] = kernels
    return text(" ".join(kernels.split()[:3]).rstrip(",;:") + "...", note=f"kernels:{kernels}")


def section_methods(inputs: Inputs) -> Section:
    names = table_host_names(inputs)
    s = Section("methods", "Methods: step time against fp32 (measured), bit operations (estimated)")
    if not inputs.results:
        s.blocks.append(Paragraph(f"Step-time ratios: {NOT_MEASURED} (no result file; run `make bench`)."))
        return s
    table = Table("methods", ["host", "run", "profile", "device", "method", f"step time / {BASELINE}",
                              "bit operations / fp32", "kernels on this hardware", "source"], sortable=True)
    table.footnotes["ratio"] = ("Measured: the median over balanced cycles of interleaved timed windows in one process "
                                "(each method once in every position per cycle), so every method saw the same machine "
                                "state; the bracket is the lowest and highest cycle, the median's resolution.")
    table.footnotes["old-device"] = OLD_DEVICE_NOTE
    for r in inputs.results:
        costs = r.data.get("method_costs", {})
        for p in r.data["profiles"]:
            for name, entry in p["methods"].items():
                cost = costs.get(entry.get("method", name))  # a bf16 arm costs what its method costs
                ratio = p["step_time_ratio"].get(name)
                spread = p.get("step_time_ratio_range", {}).get(name)
                if ratio is None:
                    ratio_cell = unavailable()
                else:
                    rng = f" [{spread[0]:.3f}-{spread[1]:.3f}]" if spread and name != BASELINE else ""
                    ratio_cell = Cell(f"{ratio:.3f}{rng}", Kind.MEASURED, ratio, "ratio", r.fixture)
                if cost is None:
                    bitops = text("not in this result file")
                elif cost["bitops_ratio"]["value"] is None:
                    bitops = text("-")
                else:
                    model = cost["bitops_ratio"]["model"]
                    table.footnotes[f"bitops:{model}"] = (f"Estimated from the bit widths, never a time: {model}. "
                                                          "Methods that quantize gradients run every GEMM in float32 "
                                                          "here; their saving is simulated.")
                    bitops = number(cost["bitops_ratio"]["value"], ".4f", kind=Kind.ESTIMATED, note=f"bitops:{model}")
                table.add({"host": host_cell(names, r.host_id), "run": text(run_label(r)), "profile": text(p["profile"]),
                           "device": device_cell(p, entry), "method": text(name), f"step time / {BASELINE}": ratio_cell,
                           "bit operations / fp32": bitops,
                           "kernels on this hardware": _kernels_cell(table, cost, device_of(p, entry)[1]),
                           "source": source_cell(r.fixture, "q4bench bench")})
    s.blocks.append(table)
    return s


# ---------------------------------------------------------------------------------------------
# ONNX


def section_onnx(inputs: Inputs) -> Section:
    s = Section("onnx", "ONNX: bytes, agreement, accuracy and speed per file")
    if not inputs.verifies:
        s.blocks.append(Paragraph(f"ONNX figures: {NOT_MEASURED} (no verify.json; `make parity` or `q4bench "
                                  "verify-onnx` writes one; pass --onnx)."))
        return s
    table = Table("onnx", ["file", "bytes", "top-1 agreement with PyTorch", "max abs logit diff", "test acc",
                           "latency, batch 1", "throughput, batch 64", "opt off vs all on", "method / threads",
                           "source"])
    for v in inputs.verifies:
        d = v.data
        for name, f in d["files"].items():
            off = f.get("optimizations_off_vs_all_on") or {}
            table.add({"file": text(f"{name}.onnx"), "bytes": number(f.get("bytes"), ",", fixture=v.fixture),
                       "top-1 agreement with PyTorch": number(f.get("top1_agreement"), ".2f", "%", fixture=v.fixture),
                       "max abs logit diff": number(f.get("max_abs_logit_diff"), ".2e", fixture=v.fixture),
                       "test acc": number(f.get("test_acc"), ".2f", f"% ({d['test_images']:,} test images)",
                                          fixture=v.fixture),
                       "latency, batch 1": number(f.get("latency_b1_ms"), ".2f", " ms", fixture=v.fixture),
                       "throughput, batch 64": number(f.get("throughput_b64"), ".0f", " images/s", fixture=v.fixture),
                       "opt off vs all on": number(off.get("top1_agreement"), ".2f", "%", fixture=v.fixture),
                       "method / threads": text(f"{d['method']} / {d.get('threads', '?')}"),
                       "source": text(f"{provenance_label(v.fixture)}: {relative(v.path)}", fixture=v.fixture)})
    s.blocks.append(table)
    for v in inputs.verifies:
        d = v.data
        int4 = d["files"].get("int4", {})
        codes = int4.get("distinct_codes") or {}
        ratio = d.get("size_ratio_fp32_int4")
        s.blocks.append(Paragraph(
            f"{relative(v.path)}: fp32/int4 size ratio {f'{ratio:.2f}x' if ratio else NOT_MEASURED}; int4 codes "
            f"identical to PyTorch: {int4.get('codes_identical_to_pytorch', NOT_MEASURED)}; distinct codes per layer "
            f"in int4.onnx: {', '.join(map(str, codes.values())) or NOT_MEASURED}; timing: "
            f"{d.get('environment', {}).get('timing_method', NOT_MEASURED)}."))
        per_layer = d.get("layer_times_b64")
        if per_layer:
            s.blocks.append(Paragraph(f"Where int8's speedup comes from, layer by layer ({per_layer['method']}; "
                                      f"{provenance_label(v.fixture)}):"))
            s.blocks.append(_layer_time_table(per_layer, v.fixture))
    return s


def _layer_time_table(per_layer: dict, fixture: bool) -> Table:
    files, speedups = per_layer["ms_per_run"], per_layer["int8_speedup_per_layer"]
    table = Table("onnx_layers", ["layer", "fp32.onnx ms", "int4.onnx ms", "int8.onnx ms", "int8 speedup"])
    table.footnotes["speedup"] = "derived: fp32.onnx ms / int8.onnx ms for the layer"
    for layer in files.get("fp32", {}):
        row = {"layer": text(layer)}
        for name in ("fp32", "int4", "int8"):
            row[f"{name}.onnx ms"] = number(files.get(name, {}).get(layer), ".2f", fixture=fixture)
        row["int8 speedup"] = number(speedups.get(layer), ".2f", "x", Kind.DERIVED, note="speedup")
        table.add(row)
    return table


# ---------------------------------------------------------------------------------------------
# Cross-hardware


def section_cross_hardware(inputs: Inputs) -> Section:
    names = table_host_names(inputs)
    s = Section("hardware", "Cross-hardware: every host, profile and run")
    if not inputs.results:
        s.blocks.append(Paragraph(f"Cross-hardware table: {NOT_MEASURED} (no result files; `q4bench submit` files "
                                  "them under reports/submitted/<host-id>/)."))
        return s
    table = Table("hardware", ["host", "CPU", "run", "data", "tier", "profile", "threads", "device", "method",
                               "train images/s", EFFICIENCY_COLUMN, "s/epoch (derived)", "energy J/epoch (each cell: RAPL or estimated)",
                               "peak memory MiB",
                               "accuracy", "filed", "source"], sortable=True,
                  caption="Click a column header to sort (numbers sort as numbers).")
    table.footnotes["s-epoch"] = (f"Derived: {CIFAR10_TRAIN_IMAGES:,} / train images/s + {CIFAR10_TEST_IMAGES:,} / eval "
                                  "images/s, one paper epoch from the measured rates.")
    table.footnotes["old-device"] = OLD_DEVICE_NOTE
    for r in inputs.results:
        filed = "submitted" if "submitted" in r.path.parts else "local"
        for p in r.data["profiles"]:
            for name, m in p["methods"].items():
                energy, acc = m["energy"], m["accuracy"]
                if energy["method"] == "measured_rapl":
                    energy_cell = number(energy["joules_per_epoch"], ",.0f", " (RAPL)", fixture=r.fixture)
                elif energy["method"] == "estimated":
                    table.footnotes[f"energy:{energy['model']}"] = f"Estimated, not measured: {energy['model']}."
                    energy_cell = number(energy["joules_per_epoch"], ",.0f", " (estimated)", Kind.ESTIMATED,
                                         note=f"energy:{energy['model']}")
                else:
                    energy_cell = unavailable()
                if acc:
                    acc_cell = number(acc["top1_percent"], ".2f", f"% ({acc['epochs']} ep x {acc['train_images']:,} "
                                      "imgs)", fixture=r.fixture)
                elif not r.data["accuracy"]["measured"]:
                    acc_cell = unavailable(r.data["accuracy"].get("reason") or "no reason recorded")
                else:
                    why = m.get("accuracy_note")
                    if why:  # the same reason on many rows: one footnote
                        table.footnotes[f"acc:{why}"] = f"Accuracy not measured here: {why}."
                    acc_cell = unavailable(note=f"acc:{why}" if why else None)
                table.add({
                    "host": host_cell(names, r.host_id), "CPU": text(names[r.host_id].label),
                    "run": text(run_time(r.created)), "data": text(data_label(r)), "tier": text(r.data["tier"]["name"]),
                    "profile": text(p["profile"]), "threads": number(p["threads"], "d", kind=Kind.TEXT),
                    "device": device_cell(p, m), "method": text(name),
                    "train images/s": number(m["train_images_per_s"], ".1f", fixture=r.fixture),
                    EFFICIENCY_COLUMN: efficiency_cell(table, m, p, r.fixture),
                    "s/epoch (derived)": number(epoch_seconds(m), ".0f", " s", Kind.DERIVED, note="s-epoch"),
                    "energy J/epoch (each cell: RAPL or estimated)": energy_cell,
                    "peak memory MiB": number(None if m["peak_rss_bytes"] is None else m["peak_rss_bytes"] / 2**20,
                                              ".0f", fixture=r.fixture),
                    "accuracy": acc_cell, "filed": text(filed), "source": source_cell(r.fixture, "q4bench bench"),
                })
    s.blocks.append(table)
    return s
