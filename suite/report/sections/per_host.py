"""The main page's per-host summary: every budget's gap, speed and memory from the latest bench, and what is not
measured on the host; the hosts past the main page's rows, below the divider."""

from __future__ import annotations

from ...spec import BASELINE, REFERENCE_4BIT, arm_name, split_arm
from ..cells import fix_for_missing_accuracy, run_time
from ..document import Cell, Kind, Paragraph, Section, Table, text
from ..gaps import GapPoint, gap_points, unfinished_runs
from ..hosts import history_host, host_names, network_name
from ..inputs import Inputs, device_of
from ..tidy import hosts_with_rapl, newest_speed_profile
from .answer import MAX_HOST_ROWS, answer_hosts, budget_clause, by_budget


def _speed_cell(inputs: Inputs, host: str) -> Cell:
    found = newest_speed_profile(inputs, host)
    if not found:
        return Cell("not measured (no bench result with tathe4)", Kind.UNAVAILABLE)
    r, p = found
    fp32, mine = p["methods"].get(BASELINE, {}), p["methods"][REFERENCE_4BIT]
    device, precision, _ = device_of(p)
    lines = [f"{p['profile']} ({p['threads']} threads, {device}, {precision}; run {run_time(r.created)})",
             f"train images/s: fp32 {fp32.get('train_images_per_s') or 0:.1f}, tathe4 {mine['train_images_per_s']:.1f}"]
    ratio = p["step_time_ratio"].get(REFERENCE_4BIT)
    if ratio is not None:
        lines.append(f"tathe4 step: {ratio:.2f}x fp32's")
    # the same run's bf16 arms, against its fp32 step
    for arm in (arm_name(BASELINE, "bf16"), arm_name(REFERENCE_4BIT, "bf16")):
        if p["step_time_ratio"].get(arm) is not None:
            span = p.get("step_time_ratio_range", {}).get(arm)
            support = (p["methods"].get(arm) or {}).get("precision_support") or "bf16"
            lines.append(f"{split_arm(arm)[0]} in bf16 ({support}): {p['step_time_ratio'][arm]:.2f}x the fp32 step"
                         + (f" [cycles {span[0]:.2f}-{span[1]:.2f}]" if span else ""))
    if mine.get("peak_rss_bytes"):
        lines.append(f"peak memory, tathe4: {mine['peak_rss_bytes'] / 2**20:,.0f} MiB")
    return Cell("\n".join(lines), Kind.MEASURED, mine["train_images_per_s"], "speed", r.fixture)


def _missing(inputs: Inputs, host: str, mine: list[GapPoint]) -> list[str]:
    results = [r for r in inputs.results if r.host_id == host]
    out = [] if mine else ["accuracy comparison"]
    if not results:
        out.append("throughput, step time, memory and energy (no bench result)")
    else:
        if host not in hosts_with_rapl(inputs.bench):
            out.append("energy (no RAPL counters: estimates only)")
        for r in results:
            if not r.data["accuracy"]["measured"]:
                out.append(f"bench accuracy ({run_time(r.created)}): {r.data['accuracy'].get('reason') or 'no reason'}; "
                           f"fix: {fix_for_missing_accuracy(r)}")
    out.append("ONNX (verify.json names no host; see ONNX below)" if inputs.verifies else "ONNX export check")
    return out


def _in_progress(inputs: Inputs, host: str) -> list[str]:
    runs = [r for r in unfinished_runs(inputs) if history_host(r) == host]
    return [f"unfinished: {r.method} seed {r.history.get('seed')}, {network_name(r.arch)}, {r.history['recipe']} "
            f"recipe, epoch {len(r.epochs)} of {r.history['planned_epochs']}" for r in runs]


def summary_hosts(inputs: Inputs, points: list[GapPoint]) -> list[str]:
    hosts = answer_hosts(inputs, points)
    return hosts + sorted({history_host(r) for r in unfinished_runs(inputs)} - set(hosts))


def section_hosts(inputs: Inputs) -> Section:
    """The main page's per-host summary: the first MAX_HOST_ROWS hosts (those with the most evidence first);
    section_more_hosts has the others, below the divider."""
    s = Section("hosts", "Per host: every budget, speed, memory, and what is not measured")
    points = gap_points(inputs)
    hosts = summary_hosts(inputs, points)
    if not hosts:
        s.blocks.append(Paragraph("No host has a bench result, a compare result or run pairs yet."))
        return s
    s.blocks.append(_hosts_table(inputs, points, hosts[:MAX_HOST_ROWS]))
    if len(hosts) > MAX_HOST_ROWS:
        s.blocks.append(Paragraph(f"{len(hosts) - MAX_HOST_ROWS} more hosts, in the same form: Details, "
                                  "[every other host](#more_hosts)."))
    return s


def section_more_hosts(inputs: Inputs) -> Section | None:
    """The hosts past the main page's MAX_HOST_ROWS, one row each; None when there are none."""
    points = gap_points(inputs)
    hosts = summary_hosts(inputs, points)[MAX_HOST_ROWS:]
    if not hosts:
        return None
    s = Section("more_hosts", f"Every other host ({len(hosts)}): every budget, speed, memory, what is not measured")
    s.blocks.append(_hosts_table(inputs, points, hosts))
    return s


def _hosts_table(inputs: Inputs, points: list[GapPoint], hosts: list[str]) -> Table:
    names = host_names(inputs, hosts)
    table = Table("hosts", ["host", "accuracy gap at every budget, largest first", "speed and memory (latest bench)",
                            "not measured on this host"])
    table.footnotes["speed"] = ("Measured by q4bench bench: step-time ratios are medians over balanced cycles of "
                                "interleaved timed windows in one process; bf16 arms against the same run's fp32 step.")
    for host in hosts:
        mine = [p for p in points if p.host_id == host]
        budgets = [budget_clause(p) for p in by_budget(mine)] + _in_progress(inputs, host)
        table.add({"host": text(f"{names[host].label}\n{host}"),
                   "accuracy gap at every budget, largest first": text("\n".join(budgets) or "none"),
                   "speed and memory (latest bench)": _speed_cell(inputs, host),
                   "not measured on this host": text("\n".join(_missing(inputs, host, mine)))})
    return table
