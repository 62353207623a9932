"""Words and cells more than one section uses: when and on what data a result ran, its device, the host and the
command that wrote a row, a gap in words, an efficiency with its ceiling, and what a figure draws or leaves out."""

from __future__ import annotations

from .claims import provenance_label
from .document import Cell, Kind, Table, text, unavailable
from .efficiency import NOTES as EFFICIENCY_NOTES, efficiency
from .hosts import history_host, host_names, network_name
from .inputs import Inputs, ResultFile, describe_code, device_of


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
    """What tells one run of a host from another: its time, its network and its data."""
    return f"{run_time(result.created)}, {network_name(result.arch)}, {data_label(result)}"


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


def efficiency_cell(table: Table, m: dict, p: dict, fixture: bool, why_missing: str = "") -> Cell:
    """The efficiency with the ceiling it is read against; its footnote registered once in the table."""
    found = efficiency(m, p)
    if found is None:
        return unavailable(why_missing)
    table.footnotes[found.note] = EFFICIENCY_NOTES[found.note]
    return Cell(found.text, Kind.DERIVED, found.percent, found.note, fixture)
