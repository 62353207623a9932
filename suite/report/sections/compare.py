"""Compare results: the verdicts with their intervals, the runs behind them, and accuracy against training time."""

from __future__ import annotations

from ...spec import COMPARE_COMMAND
from .. import figures
from ..cells import gap_text, host_cell, omitted_note, provenance_note, table_host_names
from ..document import Cell, Figure, Kind, Paragraph, Section, Table, number, text, unavailable
from ..hosts import host_names
from ..inputs import Inputs, relative


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


def power_cell(comp, fixture: bool) -> Cell:
    """The power of the comparison's n seeds to show equivalence were the true gap 0, and the n giving 80%
    (derived: suite.stats from the seed gaps' sd); '-' for results from before compare planned power."""
    if comp.tost_power_at_0 is None:
        return Cell("-", Kind.UNAVAILABLE)
    needed = f"; 80% needs {comp.n_for_80pct_power} seeds" if comp.n_for_80pct_power else ""
    return Cell(f"{100 * comp.tost_power_at_0:.0f}%{needed}", Kind.DERIVED, comp.tost_power_at_0, None, fixture)


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
