"""Time to accuracy: what each budget of the short recipe buys on each device, from finished runs.

A row is one (device, threads, budget, method): every history of the short recipe on all of CIFAR-10 with the
paper's network whose schedule ended at its budget (each budget its own run, the LR reaching 0 at its last
step), from `q4bench train --recipe short --epochs N` folders and from compare results alike. A run stopped
before its planned epochs is left out: its accuracy is that of a schedule cut short, not of the budget.

The targets are q4bench's (>= 85% after 5 epochs, >= 90% after 15); the paper's own 150-epoch log
first reaches 85% at epoch 13 and 90% at about epoch 50, with an LR still high there."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING

from ...spec import BASELINE, CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES, SHORT_RECIPE
from .. import figures
from ..cells import omitted_note, provenance_note
from ..document import Cell, Figure, Kind, Paragraph, Section, Table, number, text
from ..inputs import Inputs, RunHistory, relative
from ..tidy import history_table, missing

if TYPE_CHECKING:
    import pandas as pd

TARGETS = {5: 85.0, 15: 90.0}  # budget in epochs -> final test accuracy, % (q4bench's targets)


def finished_short_runs(inputs: Inputs) -> list[RunHistory]:
    """Each history once, whether read as a run folder or as a run of a compare result."""
    seen, out = set(), []
    histories = list(inputs.runs) + [r.history for c in inputs.compares for r in c.runs if r.history]
    for run in histories:
        key = run.path.resolve()
        if key in seen:
            continue
        seen.add(key)
        h, budget = run.history, run.budget
        if (h["recipe"] == SHORT_RECIPE and budget.paper_data_and_network
                and h["train_images"] >= CIFAR10_TRAIN_IMAGES and h["test_images"] >= CIFAR10_TEST_IMAGES
                and h.get("planned_epochs") == len(run.epochs)):
            out.append(run)
    return out


def device_label(run: RunHistory) -> str:
    h = run.history
    name = f" ({h['device_name']})" if h.get("device_name") else ""
    threads = h.get("threads")
    per = f", {threads} thread{'s' if threads != 1 else ''}" if isinstance(threads, int) and run.device == "cpu" else ""
    return f"{run.device}{name}, {run.precision}{per}"


def _folders(members: list[RunHistory]) -> str:
    """Where the runs are: a single run's folder, else the folders holding the run folders, with counts."""
    if len(members) == 1:
        return relative(members[0].path.parent)
    counts: dict[str, int] = defaultdict(int)
    for r in members:
        counts[relative(r.path.parent.parent)] += 1
    return "; ".join(f"{folder}/ ({n} run{'s' if n != 1 else ''})" for folder, n in sorted(counts.items()))


def _line(method: str, points: list[tuple[float, float, int]]) -> dict:
    """(minutes, accuracy, epochs) per budget -> one line of figures.curves."""
    epochs = ", ".join(str(p[2]) for p in points)
    return {"method": method, "label": f"{method} ({epochs} epoch{'s' if epochs != '1' else ''})",
            "x": [p[0] for p in points], "y": [p[1] for p in points], "dashed": method == BASELINE}


def budget_table(runs: list[RunHistory]) -> pd.DataFrame:
    """One row per device, budget (epochs) and method, fp32 first within a budget: the final accuracy's mean,
    lowest and highest over the runs, the mean flip TTA and the medians of training seconds per run and of
    seconds per epoch (over the runs' epochs that recorded them); `runs`, the positions of its runs."""
    table = history_table(runs).assign(
        device_label=[device_label(r) for r in runs],
        epoch_seconds=[[e["seconds"] for e in r.epochs if isinstance(e.get("seconds"), (int, float))] for r in runs])
    budgets = table.groupby(["device_label", "epochs_done", "method"]).agg(
        final=("final_test_acc", statistics.fmean), low=("final_test_acc", "min"), high=("final_test_acc", "max"),
        tta=("final_test_acc_tta", lambda s: _present(s, statistics.fmean)),
        seconds=("training_seconds", lambda s: _present(s, statistics.median)),
        per_epoch=("epoch_seconds", lambda s: _present([x for xs in s for x in xs], statistics.median)),
        runs=("run", list)).reset_index()
    budgets["fp32_last"] = budgets["method"] != BASELINE
    return budgets.sort_values(["device_label", "epochs_done", "fp32_last", "method"], kind="stable")


def _present(values, statistic) -> float | None:
    """The statistic of the values that were recorded; None when none was."""
    found = [float(v) for v in values if not missing(v)]
    return statistic(found) if found else None


def _row(budget, members: list[RunHistory]) -> dict[str, Cell]:
    """One budget of one method on one device: the runs' mean accuracy, its range, time and the target."""
    fixture = any(r.fixture for r in members)
    epochs, mean = int(budget.epochs_done), float(budget.final)  # Python numbers: a cell's value is printed as is
    spread = f" [{budget.low:.2f}, {budget.high:.2f}]" if len(members) > 1 else ""
    target = TARGETS.get(epochs)
    seeds = ", ".join(sorted({str(r.history.get("seed")) for r in members}, key=lambda x: (len(x), x)))
    return {
        "device": text(budget.device_label, fixture=fixture),
        "budget": text(f"{epochs} epoch{'s' if epochs != 1 else ''} x {members[0].history['train_images']:,} images"),
        "method": text(budget.method), "runs": text(f"{len(members)} (seed {seeds})"),
        "final test acc": Cell(f"{mean:.2f}%{spread}", Kind.MEASURED, mean, "acc", fixture),
        "flip TTA": number(budget.tta, ".2f", "%", fixture=fixture, missing="-"),
        "training time per run": number(None if budget.seconds is None else budget.seconds / 60, ".1f", " min",
                                        note="time", fixture=fixture),
        "s per epoch": number(budget.per_epoch, ".1f", " s", fixture=fixture),
        "target": (text(f">= {target:g}%: {'met' if mean >= target else 'not met'}", note="target")
                   if target else text("-")),
        "histories": text(_folders(members))}


def _table(budgets: pd.DataFrame, runs: list[RunHistory]) -> Table:
    table = Table("time_to_accuracy", ["device", "budget", "method", "runs", "final test acc", "flip TTA",
                                       "training time per run", "s per epoch", "target", "histories"], sortable=True)
    table.footnotes["acc"] = "Mean over the runs (seeds) of the final epoch's test accuracy, [lowest, highest]; measured."
    table.footnotes["time"] = ("The history's summed epoch seconds (training only; evaluation excluded), median over "
                               "the runs; measured as run: runs side by side share the host (each folder's README "
                               "says what ran beside it), so this is not a controlled timing.")
    table.footnotes["target"] = ("q4bench's targets for the short recipe: >= 85% after 5 epochs, >= 90% "
                                 "after 15. The paper's log (150-epoch schedule) first reaches 85% at epoch 13.")
    for budget in budgets.itertuples():
        table.add(_row(budget, [runs[i] for i in budget.runs]))
    return table


def _panels(budgets: pd.DataFrame) -> list[dict]:
    """One panel per device with more than one budget of a method: a line per method, a point per budget."""
    points: dict[str, dict[str, list[tuple[float, float, int]]]] = defaultdict(lambda: defaultdict(list))
    for budget in budgets[budgets["seconds"].notna()].itertuples():
        points[budget.device_label][budget.method].append((budget.seconds / 60, budget.final, budget.epochs_done))
    # A device with one budget only is a single point per method: the table says it all, no panel.
    return [{"title": device, "lines": [_line(method, sorted(p)) for method, p in sorted(methods.items())]}
            for device, methods in points.items() if any(len(p) > 1 for p in methods.values())]


def section_time_to_accuracy(inputs: Inputs) -> Section:
    s = Section("time_to_accuracy", "Time to accuracy: the short recipe at each budget")
    runs = finished_short_runs(inputs)
    if not runs:
        s.blocks.append(Paragraph(
            "No finished short-recipe run on all of CIFAR-10 in the inputs. `q4bench train --recipe short --epochs 5 "
            "--method tathe4 --out runs/short5-tathe4` (and the same with --method fp32) makes one; each budget is its "
            "own run, since the schedule ends at the budget."))
        return s
    budgets = budget_table(runs)
    s.blocks.append(Paragraph(
        "Finished runs of the short recipe (its LR schedule ends at each budget; each budget is its own run) on all "
        "50,000 CIFAR-10 training images with the paper's network, scored on all 10,000 test images."))
    s.blocks.append(_table(budgets, runs))
    drawable = _panels(budgets)
    drawn = drawable[:figures.MAX_PANELS]
    if drawn:
        fig = figures.curves(drawn, "Final test accuracy against training time, one point per budget",
                             "training time per run, minutes: the history's summed epoch `seconds` (evaluation "
                             "excluded), median over the runs", "final test accuracy, %")
        shown = {p["title"] for p in drawn}
        files = [r for r in runs if device_label(r) in shown]
        s.blocks.append(Figure("time_to_accuracy", figures.png(fig), "Time to accuracy",
                               "Each point: the mean final accuracy of one budget's runs against their median training "
                               "time (fp32 dashed); measured. Devices with a single budget are in the table only."
                               + omitted_note([p["title"] for p in drawable[figures.MAX_PANELS:]],
                                              f"at most {figures.MAX_PANELS} panels")
                               + " " + provenance_note(len(files), "histories", [r.provenance for r in files]),
                               {"panels": len(drawn), "points": sum(len(line["x"]) for p in drawn for line in p["lines"])}))
    return s

