"""Runs: one row per input file, with its time, data, budget, device and code."""

from __future__ import annotations

from ...spec import COMPARE_COMMAND, VERIFY_FILE
from ..cells import OLD_DEVICE_NOTE, data_label, host_cell, run_time, source_cell, table_host_names
from ..document import Paragraph, Section, Table, text
from ..inputs import Inputs, describe_code, device_of, relative


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
