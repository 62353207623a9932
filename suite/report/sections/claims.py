"""The paper's claims against these measurements: one row per claim with its verdict, and the full-budget runs drawn
against the paper's log."""

from __future__ import annotations

from ...spec import BASELINE
from .. import figures
from ..cells import provenance_note
from ..claims import (COMPRESSION_FLOOR, EARLY_EPOCH_SWING, FULL_BUDGET_NOISE, HARDWARE_BAND, PAPER_LOG,
                      claim_checks)
from ..document import NOT_MEASURED, Cell, Figure, Kind, Paragraph, Section, Table, text
from ..inputs import Inputs


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
