"""Methods: each arm's step time against fp32 (measured), its bit operations (estimated) and its kernels."""

from __future__ import annotations

from ...spec import BASELINE
from ..cells import OLD_DEVICE_NOTE, device_cell, host_cell, run_label, source_cell, table_host_names
from ..document import NOT_MEASURED, Cell, Kind, Paragraph, Section, Table, number, text, unavailable
from ..inputs import Inputs, device_of


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
