"""Accuracy per run, and the gap to fp32 at equal budget."""

from __future__ import annotations

from ...spec import BASELINE, COMPARE_COMMAND
from ..cells import fix_for_missing_accuracy, gap_text, run_time
from ..claims import accuracy_entries, gaps, provenance_label
from ..document import NOT_MEASURED, Cell, Kind, Paragraph, Section, Table, number, text, unavailable
from ..inputs import Inputs


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
