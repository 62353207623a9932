"""Training across processes: 1 vs N under torchrun (bench results with a scaling entry; suite/scaling.py has the
formulas)."""

from __future__ import annotations

from ..cells import host_cell, run_label, source_cell, table_host_names
from ..document import NOT_MEASURED, Cell, Kind, Paragraph, Section, Table, number, text
from ..inputs import Inputs


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
