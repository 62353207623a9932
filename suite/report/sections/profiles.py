"""Per profile and run: throughput (with its figure), efficiency, memory and energy; the ceilings efficiencies
divide by, and the network's convolutions timed pass by pass."""

from __future__ import annotations

from ...spec import BASELINE, CONV_PASSES, PAPER_ARCH
from .. import figures
from ..cells import (OLD_DEVICE_NOTE, device_cell, efficiency_cell, host_cell, provenance_note,
                     run_label, run_time, source_cell, table_host_names)
from ..document import NOT_MEASURED, Cell, Figure, Kind, Paragraph, Section, Table, number, text, unavailable
from ..efficiency import COLUMN as EFFICIENCY_COLUMN, peak_words
from ..hosts import host_names, network_name
from ..inputs import Inputs, ResultFile, device_of
from ..tidy import newest_arms


def _energy_cells(energy: dict, fixture: bool) -> tuple[Cell, Cell, str | None]:
    """(measured RAPL cell, estimated cell, footnote text of the estimate's model)."""
    j, method = energy["joules_per_epoch"], energy["method"]
    if method == "measured_rapl":
        return number(j, ",.0f", fixture=fixture), text("-"), None
    if method == "estimated":
        return unavailable("no RAPL"), number(j, ",.0f", kind=Kind.ESTIMATED, note=f"energy:{energy['model']}"), \
            energy["model"]
    return unavailable(energy.get("model") or "unavailable"), text("-"), None


MAX_BARS = 40  # bars of the throughput figure: what stays readable and bounded whatever the number of results


def throughput_figure(inputs: Inputs) -> Figure:
    """One bar per host, profile, device/precision and method, from that host's newest result measuring it: the
    table below has every run. At most MAX_BARS bars (the newest first); the rest said in the caption."""
    latest = newest_arms(inputs.bench)
    names = host_names(inputs, sorted(set(latest["host_id"])))
    chosen = latest.sort_values("written_utc", ascending=False, kind="stable").head(MAX_BARS)
    chosen = chosen.assign(label=[names[h].label for h in chosen["host_id"]])
    chosen = chosen.sort_values(["label", "profile", "written_utc"], kind="stable")
    arms = [_arm(inputs, row) for row in chosen.itertuples()]
    bars = []
    for r, p, name, m in arms:
        device, precision, _ = device_of(p, m)
        network = "" if r.arch == PAPER_ARCH else f"{network_name(r.arch)} | "  # the paper's VGG unless said
        bars.append({"label": ("FIXTURE " if r.fixture else "") + f"{names[r.host_id].label} | {network}{p['profile']} | "
                     f"{device} {precision} | {run_time(r.created)[:10]}{'' if r.real_data else ' synthetic'} | {name}",
                     "method": name, "train": m["train_images_per_s"], "eval": m["eval_images_per_s"]})
    left = len(latest) - len(chosen)
    files = [inputs.results[i] for i in dict.fromkeys(chosen["result"])]
    caption = ("One bar per host, profile, device/precision and method, from the newest result measuring it "
               "(measured by q4bench bench; the table below has every run); colour by method, hatched: a bf16 arm."
               + (f" Not drawn ({left}, at most {MAX_BARS} bars, the newest first): the older combinations, in the "
                  "table." if left else "") + " " + provenance_note(len(files), "bench result(s)",
                                                                    [r.provenance for r in files]))
    fig = figures.throughput_bars(bars, "Training and eval throughput, newest result per host, profile and method")
    return Figure("throughput", figures.png(fig), "Throughput per host, profile and method", caption,
                  {"bars": len(bars), "omitted": left, "drawn": [(r.host_id, p["profile"], *device_of(p, m)[:2], name,
                                                                 r.created) for r, p, name, m in arms]})


def _arm(inputs: Inputs, row) -> tuple[ResultFile, dict, str, dict]:
    """(result, profile, arm name, arm entry) of a row of inputs.bench."""
    result = inputs.results[row.result]
    profile = result.data["profiles"][row.profile_index]
    return result, profile, row.arm, profile["methods"][row.arm]


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
