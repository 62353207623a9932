"""The main page's first screen: the question, one answer row per host, what the evidence does not yet say and
the gap-versus-budget figure. The per-host summary follows (per_host.py); everything else goes below the divider
(contents.py).

Verdict wording is built from the numbers, never from a verdict word: "tathe4 is 0.53 points below fp32 [95% CI
0.21, 0.85] ...; equivalence within +-0.5 not shown". The gap is fp32 minus tathe4, so "below" is tathe4 doing
worse and "above" better; an interval is turned with the sentence so its numbers read the same way."""

from __future__ import annotations

import textwrap

from ...spec import COMPARE_COMMAND, FULL_PRECISION, PAPER_ARCH, PAPER_EPOCHS, PAPER_RECIPE, REFERENCE_4BIT
from ...stats import ALPHA, MIN_PAIRS_FOR_SD
from .. import figures
from ..cells import omitted_note, provenance_note
from ..claims import FULL_BUDGET_NOISE, PAPER_FP32_ACC
from ..document import Cell, Figure, Kind, Paragraph, Section, Table, text
from ..gaps import PAPER_CLAIM, GapPoint, gap_points, gap_series
from ..hosts import HostName, host_names, network_name
from ..inputs import Inputs
from ..palette import SERIES_COLOURS
from ..tidy import newest_speed_profile


QUESTION = ("Does 4-bit training (tathe4) reach the CIFAR-10 test accuracy of fp32 training at the same budget, "
            "on each machine measured?")
MAX_OTHER_BUDGETS = 4  # clauses after the strongest verdict in a first-screen row; the rest are in the figure
# Rows of the first screen and of the main page's per-host summary, whatever the number of hosts: up to this many
# hosts a row each; beyond it the hosts with an accuracy comparison keep their rows (the most evidence first) and
# the speed-only hosts share one row; the per-host summary shows the same hosts, every other in the details.
MAX_HOST_ROWS = 12
MAX_NAMED = 6  # host names listed in one grouped row or line


def _direction(gap: float) -> str:
    if gap > 0:
        return f"tathe4 is {gap:.2f} points below fp32"
    if gap < 0:
        return f"tathe4 is {-gap:.2f} points above fp32"
    return "tathe4 equals fp32"


def _interval(p: GapPoint) -> str:
    """The 95% interval of the amount the sentence names (below: fp32 - tathe4; above: tathe4 - fp32)."""
    if not p.ci95:
        return ""
    lo, hi = p.ci95 if p.gap >= 0 else (-p.ci95[1], -p.ci95[0])
    return f" [95% CI {lo:.2f}, {hi:.2f}]"


def _conclusion(p: GapPoint) -> str:
    """What the interval and TOST decide: never 'not equivalent', which a p >= 0.05 does not show."""
    if p.n < 2 or not p.ci95:
        return "one seed pair: no interval, no verdict"
    margin = f"+-{p.margin:g}"
    if p.tost_p is not None and p.tost_p < ALPHA:
        return f"equivalent within {margin} (TOST p = {p.tost_p:.2g})"
    if p.ci95[0] > 0 or p.ci95[1] < 0:
        return f"equivalence within {margin} not shown{_power_clause(p)}"
    return f"neither a difference nor equivalence within {margin} shown{_power_clause(p)}"


def _power_clause(p: GapPoint) -> str:
    """How likely these n pairs were to show equivalence had the true gap been 0, so a reader can tell "the
    gap is real" (high power) from "too few seeds to tell" (low power)."""
    if p.tost_power_at_0 is None:
        return ""
    need = (f"{p.n_for_80pct_power} pairs give 80%" if p.n_for_80pct_power
            else "80% needs more pairs than compare runs")
    enough = "" if p.tost_power_at_0 >= 0.8 else f"; {need}"
    return (f" (at the measured seed spread these {p.n} pairs had {p.tost_power_at_0:.0%} power to show it, were the "
            f"true gap 0{enough})")


def _network(p: GapPoint) -> str:
    both = "" if p.precision == FULL_PRECISION else f", both in {p.precision}"
    return f"({network_name(p.arch)}{both})"


def verdict_sentence(p: GapPoint) -> str:
    seeds = f"{p.n} paired seed{'s' if p.n != 1 else ''}" + (" (run pairs)" if p.source == "run pairs" else "")
    return (f"**{_direction(p.gap)}**{_interval(p)}, {seeds}, {p.budget_words()} {_network(p)}; "
            f"{_conclusion(p)}")


def budget_clause(p: GapPoint) -> str:
    """A short line for the other budgets: '15 epochs (short), 1 seed: tathe4 0.08 below'."""
    how = [p.recipe] + ([network_name(p.arch)] if p.arch != PAPER_ARCH else [])
    how += ([f"both in {p.precision}"] if p.precision != FULL_PRECISION else []) + ([] if p.finished else ["unfinished"])
    budget = (f"{p.epochs} epoch{'s' if p.epochs != 1 else ''}" if p.finished else f"epoch {p.epochs}/{p.planned}")
    seeds = f"{p.n} seed{'s' if p.n != 1 else ''}" + (" (run pairs)" if p.source == "run pairs" and p.n > 1 else "")
    word = "below" if p.gap > 0 else "above" if p.gap < 0 else "equal to"
    return f"{budget} ({', '.join(how)}), {seeds}: tathe4 {abs(p.gap):.2f} {word}{_interval(p)}"


def strongest(points: list[GapPoint]) -> GapPoint:
    """The paper's full budget finished over at least MIN_PAIRS_FOR_SD pairs first (its claim is parity at
    convergence); else a compare result's verdict before run pairs, several seeds before one; then the largest
    finished budget, and at equal budgets the most seeds."""
    full_budget = [p for p in points if p.finished and p.epochs >= PAPER_EPOCHS and p.n >= MIN_PAIRS_FOR_SD]
    pool = (full_budget or [p for p in points if p.source == "compare"] or [p for p in points if p.n >= 2] or points)
    return max(pool, key=lambda p: (p.finished, p.epochs, p.n))


def by_budget(points: list[GapPoint]) -> list[GapPoint]:
    return sorted(points, key=lambda p: (-p.epochs, -p.n))


def _step_summary(inputs: Inputs, host: str) -> str | None:
    """tathe4's step time over fp32's in the host's newest bench result that timed it (most threads)."""
    found = newest_speed_profile(inputs, host)
    ratio = found[1]["step_time_ratio"].get(REFERENCE_4BIT) if found else None
    if ratio is None:
        return None
    return f"tathe4's training step takes {ratio:.2f}x fp32's ({found[1]['profile']}, {found[1]['threads']} threads)"


def answer_hosts(inputs: Inputs, points: list[GapPoint]) -> list[str]:
    """Every host with a result, a compare result or a gap point; largest budget with evidence first."""
    hosts = {r.host_id for r in inputs.results} | {c.host_id for c in inputs.compares if c.host_id}
    hosts |= {p.host_id for p in points}
    best = {h: max(((p.source == "compare" or p.n >= 2), p.epochs) for p in points if p.host_id == h)
            for h in {p.host_id for p in points}}
    return sorted(hosts, key=lambda h: (h not in best, tuple(-v for v in best.get(h, (0, 0))), h))


def _answer_cell(inputs: Inputs, host: str, mine: list[GapPoint]) -> Cell:
    fixture = any(p.fixture for p in mine)
    unusable = [c for c in inputs.compares if c.host_id == host]
    if not mine and unusable:  # a compare result too old or too broken to give a gap: said, not skipped
        return Cell(f"{len(unusable)} compare result(s) of this host record no usable tathe4 gap (no mean gap, or "
                    "not all of CIFAR-10); see Details, Runs, for what each lacks.", Kind.UNAVAILABLE)
    if not mine:
        step = _step_summary(inputs, host)
        return Cell("No accuracy comparison on this host yet" + (f"; speed only: {step}." if step else ".")
                    + f"\n`{COMPARE_COMMAND}` makes one.", Kind.UNAVAILABLE)
    lead = strongest(mine)
    lines = [verdict_sentence(lead)]
    others = [p for p in by_budget(mine) if p is not lead]
    if others:
        shown = "; ".join(budget_clause(p) for p in others[:MAX_OTHER_BUDGETS])
        more = len(others) - MAX_OTHER_BUDGETS
        lines.append(f"Other budgets, largest first: {shown}" + (f"; {more} more in the figure." if more > 0 else "."))
    return Cell("\n".join(lines), Kind.MEASURED, lead.gap, "verdict", fixture)


def first_screen_hosts(hosts: list[str], points: list[GapPoint]) -> tuple[list[str], list[str], list[str]]:
    """(hosts with a row each, speed-only hosts sharing one row, hosts with comparisons beyond the rows), in the
    order answer_hosts gives. Up to MAX_HOST_ROWS hosts: a row each."""
    if len(hosts) <= MAX_HOST_ROWS:
        return hosts, [], []
    compared = {p.host_id for p in points}
    with_gap = [h for h in hosts if h in compared]
    return with_gap[:MAX_HOST_ROWS], [h for h in hosts if h not in compared], with_gap[MAX_HOST_ROWS:]


def named(hosts: list[str], names: dict[str, HostName]) -> str:
    """'A; B; C and 44 more': at most MAX_NAMED names in one line."""
    shown = "; ".join(names[h].label for h in hosts[:MAX_NAMED])
    return shown + (f" and {len(hosts) - MAX_NAMED} more" if len(hosts) > MAX_NAMED else "")


def not_yet_said(points: list[GapPoint], names: dict[str, HostName], hosts: list[str]) -> str:
    """One line: what the evidence does not reach yet (the paper's full budget, intervals at long budgets)."""
    parts = []
    paper = [p for p in points if p.recipe == PAPER_RECIPE and p.arch == PAPER_ARCH]
    if not any(p.finished and p.epochs >= PAPER_EPOCHS for p in paper):
        claim = (f"the paper's {PAPER_EPOCHS}-epoch claim (tathe4 {PAPER_CLAIM['gap']:.2f} points below a cited fp32 "
                 f"{PAPER_FP32_ACC}%) is not measured to the end")
        if paper:
            longest = max(paper, key=lambda p: p.epochs)
            claim += (f": paired paper-recipe runs reach epoch {longest.epochs} of {longest.planned or '?'} "
                      f"({longest.n} seed{'s' if longest.n != 1 else ''}, {names[longest.host_id].label})")
        parts.append(claim)
    with_ci = [p.epochs for p in points if p.ci95]
    single = [p.epochs for p in points if not p.ci95 and p.finished]
    if with_ci and single and max(single) > max(with_ci):
        parts.append(f"intervals over seeds stop at {max(with_ci)} epochs; longer budgets are single seeds")
    bare = [h for h in hosts if not any(p.host_id == h for p in points)]
    if bare:
        parts.append(f"{named(bare, names)}: speed only, no accuracy comparison")
    return ("**What this does not yet say:** " + "; ".join(parts) + ".") if parts else ""


def section_answer(inputs: Inputs) -> Section:
    s = Section("answer", "The answer, per host")
    s.blocks.append(Paragraph(f"**Question:** {QUESTION}", css="question"))
    points = gap_points(inputs)
    hosts = answer_hosts(inputs, points)
    if not hosts:
        s.blocks.append(Paragraph("No bench or compare result was found, so there is no answer yet. Run `make bench` "
                                  f"(throughput, step-time cost) and `{COMPARE_COMMAND}` (the accuracy verdict), then "
                                  "`make report`.", css="answer"))
        return s
    names = host_names(inputs, hosts)
    table = Table("answer", ["host", "answer: tathe4 against fp32, strongest evidence first"])
    table.footnotes["verdict"] = answer_footnote(points)
    shown, speed_only, more = first_screen_hosts(hosts, points)
    for host in shown:
        mine = [p for p in points if p.host_id == host]
        table.add({"host": text(names[host].label, fixture=any(p.fixture for p in mine)),
                   "answer: tathe4 against fp32, strongest evidence first": _answer_cell(inputs, host, mine)})
    if speed_only:
        table.add({"host": text(f"{len(speed_only)} hosts, speed only"),
                   "answer: tathe4 against fp32, strongest evidence first": Cell(
                       f"No accuracy comparison on these hosts yet: {named(speed_only, names)}; each in the per-host "
                       f"summary.\n`{COMPARE_COMMAND}` makes one.", Kind.UNAVAILABLE)})
    if more:
        table.add({"host": text(f"{len(more)} more hosts"),
                   "answer: tathe4 against fp32, strongest evidence first": text(
                       f"With accuracy comparisons, fewer seed pairs than the rows above: {named(more, names)}; "
                       "each in the per-host summary and the figure.")})
    s.blocks.append(table)
    line = not_yet_said(points, names, hosts)
    if line:
        s.blocks.append(Paragraph(line, css="notyet"))
    figure = gap_figure(points, names)
    if figure:
        s.blocks.append(figure)
    return s


def answer_footnote(points: list[GapPoint]) -> str:
    """Said once under the answer; the terms and networks are in the glossary."""
    methods = sorted({p.ci95_method for p in points if p.ci95_method})
    how = f" compare's 95% intervals: {'; '.join(methods)}." if methods else ""
    return ("fp32 minus tathe4 test accuracy, points, mean over seed pairs, from `q4bench compare`; *run pairs*: "
            "histories of both methods with the same seed and no compare result, interval and TOST computed here. "
            "Terms and networks: see Terms." + how)


def provenance_summary(points: list[GapPoint]) -> str:
    """'Drawn from 3 compare result(s) and 40 histories; code: a8b3987b49 (2026-11-26), ...'."""
    compares = sum(len(p.files) for p in points if p.source == "compare")
    histories = sum(len(p.files) for p in points if p.source != "compare")
    provenances = [prov for p in points for prov in p.provenance]
    provenances += [None] * sum(len(p.files) - len(p.provenance) for p in points)
    return provenance_note(compares + histories, f"files ({compares} compare result(s), {histories} histories)",
                           provenances)


MAX_SERIES = len(SERIES_COLOURS)  # one colour each; more hosts than that are named in the caption, not drawn


def gap_figure(points: list[GapPoint], names: dict[str, HostName]) -> Figure | None:
    if not points:
        return None
    every = gap_series(points, names)
    # The series with the most seed pairs keep a colour; a page of 50 hosts says which it left out.
    series = sorted(every, key=lambda s: -sum(p["n"] for p in s["points"]))[:MAX_SERIES]
    series.sort(key=lambda s: every.index(s))
    left = [s["label"] for s in every if s not in series]
    for s in series:  # legend entries never wider than a third of the page
        s["legend"] = "\n".join(textwrap.wrap(s["label"], 44))
    margin = max((p.margin for p in points), default=FULL_BUDGET_NOISE)
    claim = dict(PAPER_CLAIM, label="\n".join(textwrap.wrap(PAPER_CLAIM["label"], 44)))
    png = figures.png(figures.gap_vs_budget([dict(s, label=s["legend"]) for s in series], margin, claim,
                                            "fp32 minus tathe4 against the training budget, per host and network"))
    caption = ("Each point: the mean gap over its seed pairs (n) at one budget; bars: 95% intervals (compare results: "
               "as compare wrote them; run pairs: t intervals computed here); hollow: one seed pair, no interval. "
               f"Grey band: +-{margin:g} points, the equivalence margin. Star: the paper's claimed "
               f"{PAPER_CLAIM['gap']:.2f}-point gap at {PAPER_EPOCHS} epochs, against a cited fp32 figure; not a "
               "measurement. All 50,000 CIFAR-10 training images, all 10,000 test images."
               + omitted_note(left, f"at most {MAX_SERIES} series, those with the most seed pairs; all are in the "
                                    "per-host summary") + " " + provenance_summary(points))
    return Figure("gap_vs_budget", png, "fp32 minus tathe4 against the budget", caption,
                  {"series": series, "omitted": len(left), "margin": margin, "paper_claim": PAPER_CLAIM})

