"""The report's plots (matplotlib, Agg, PNG bytes). Each takes plain data and returns PNG bytes; each has a
title, labelled axes and one colour per method, the same colour for a method in every plot."""

from __future__ import annotations

import io
import textwrap

from ..spec import BASELINE
from .untrusted import plottable

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_FIXED = {BASELINE: "#7f7f7f", "tathe4": "#d62728"}  # the two every reader looks for: grey reference, red 4-bit


def method_colours(methods) -> dict[str, str]:
    """One colour per method, stable across plots: fp32 grey, tathe4 red, the rest in sorted order."""
    others = [m for m in sorted(set(methods)) if m not in _FIXED]
    colours = {m: c for m, c in _FIXED.items()}
    free = [c for c in _PALETTE if c not in _FIXED.values()]
    for i, m in enumerate(others):
        colours[m] = free[i % len(free)]
    return colours


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return buf.getvalue()


def throughput_bars(bars: list[dict], title: str) -> bytes:
    """One horizontal bar per table row (label, method, train, eval): rows never share a bar."""
    plt = _pyplot()
    colours = method_colours(b["method"] for b in bars)
    labels = [f"{b['label']}  {b['method']}" for b in bars]
    y = list(range(len(bars)))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.32 * len(bars) + 1.6), sharey=True)
    for ax, key, xlabel in ((axes[0], "train", "training images/s (measured)"),
                            (axes[1], "eval", "eval images/s (measured)")):
        values = [plottable(b[key] or 0, missing=0.0) for b in bars]  # an off-scale rate: no bar, the table has it
        ax.barh(y, values, color=[colours[b["method"]] for b in bars])
        for yi, v in zip(y, values):
            if v:
                ax.text(v, yi, f" {v:.0f}" if v >= 10 else f" {v:.1f}", va="center", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(0, max(values + [1]) * 1.15)
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].invert_yaxis()  # shared: the first row on top in both panels
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    fig.legend(handles, list(colours), loc="upper right", fontsize=8, ncol=len(colours))
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def curves(panels: list[dict], title: str, xlabel: str, ylabel: str, reference: dict | None = None,
           reference_label: str = "") -> bytes:
    """Line panels: each {"title", "lines": [{"method", "label", "x", "y", "dashed"}]}; a method keeps its
    colour in every panel; ``reference`` (x -> y) is drawn as black points in every panel."""
    plt = _pyplot()
    colours = method_colours(line["method"] for p in panels for line in p["lines"])
    fig, axes = plt.subplots(1, len(panels), figsize=(min(5.4 * len(panels), 16), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for line in panel["lines"]:
            ax.plot(list(map(plottable, line["x"])), list(map(plottable, line["y"])), "--" if line.get("dashed") else "-", color=colours[line["method"]],
                    marker="o" if len(line["x"]) <= 20 else None, markersize=3, lw=1.3, label=line["label"])
        if reference:
            ax.plot(list(reference), list(reference.values()), "k*", markersize=7, label=reference_label)
        ax.set_title("\n".join(textwrap.wrap(panel["title"], 55)), fontsize=9)  # never wider than the axes
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _png(fig)


def codes_per_layer(panels: list[dict], title: str, paper_codes: int) -> bytes:
    """Distinct integer codes per layer and epoch; panels {"title", "layers": {layer: (epochs, counts)}}."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for layer, (xs, ys) in panel["layers"].items():
            ax.plot(xs, ys, marker=".", label=layer)
        ax.axhline(paper_codes, color="grey", lw=0.8, ls=":")
        ax.set_ylim(0, paper_codes + 2)
        ax.set_title("\n".join(textwrap.wrap(panel["title"], 55)), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("distinct codes (measured)")
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _png(fig)


# A qualitative palette of 12 (Okabe-Ito without black and yellow, then Paul Tol's darker "muted" colours):
# series never share a colour below 12, and none is pale enough to vanish on white. Black is the paper's star.
SERIES_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#117733", "#332288",
                  "#999933", "#44AA99", "#661100")
_GAP_TICKS = (1, 2, 3, 5, 10, 15, 30, 50, 100, 150)


def _gap_marker(point: dict) -> tuple[str, bool]:
    """(marker, filled): a compare result a filled circle, a mean of run pairs a filled diamond, one pair hollow."""
    if point["n"] < 2:
        return "o", False
    return ("o" if point["source"] == "compare" else "D"), True


def _point_note(point: dict) -> str:
    note = f"n={point['n']}"
    if not point["finished"]:
        note += f", ep {point['epochs']}/{point['planned']}"
    return note


def gap_vs_budget(series: list[dict], margin: float, claim: dict, title: str) -> bytes:
    """x: budget in epochs (log), y: fp32 minus tathe4 in points; one colour per series, error bars the 95%
    intervals, hollow markers single pairs; the 0 line, the +-margin band and the paper's claim as a star.
    Points of a budget are spread a little sideways so their error bars stay apart."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(11.5, 3.3))
    ax.axhspan(-margin, margin, color="#e8e8e8", zorder=0)
    ax.axhline(0, color="#555", lw=0.9, zorder=1)
    count = max(len(series), 1)
    for i, s in enumerate(series):
        colour = SERIES_PALETTE[i % len(SERIES_PALETTE)]
        seen: dict[int, int] = {}
        for p in s["points"]:
            k = seen[p["epochs"]] = seen.get(p["epochs"], -1) + 1
            x = p["epochs"] * 1.07 ** (i - (count - 1) / 2 + 0.5 * k)
            marker, filled = _gap_marker(p)
            if p["ci95"]:
                ax.errorbar([x], [p["gap"]], yerr=[[p["gap"] - p["ci95"][0]], [p["ci95"][1] - p["gap"]]], fmt="none",
                            ecolor=colour, elinewidth=1.3, capsize=3, zorder=2)
            ax.plot([x], [p["gap"]], marker=marker, ms=7, color=colour, mfc=colour if filled else "white", mew=1.6,
                    ls="none", zorder=3)
            ax.annotate(_point_note(p), (x, p["gap"]), xytext=(5, 4), textcoords="offset points", fontsize=7,
                        color=colour)
    ax.plot([claim["epochs"]], [claim["gap"]], marker="*", ms=13, color="black", ls="none", zorder=4)
    ax.annotate("paper's claim", (claim["epochs"], claim["gap"]), xytext=(-8, 8), textcoords="offset points",
                fontsize=7, ha="right")
    ax.set_xscale("log")
    ax.set_xticks(_GAP_TICKS, [str(t) for t in _GAP_TICKS])
    ax.minorticks_off()
    ax.set_xlim(0.75, 210)
    ax.set_xlabel("budget, epochs (log scale; an unfinished pair at the last epoch both runs reached)")
    ax.set_ylabel("fp32 - tathe4, points\n(above 0: tathe4 lower)")
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=SERIES_PALETTE[i % len(SERIES_PALETTE)], marker="s", ls="none", ms=8,
                      label=s["label"]) for i, s in enumerate(series)]
    handles += [Line2D([], [], color="grey", marker="o", ls="-", label="compare result, 95% CI"),
                Line2D([], [], color="grey", marker="D", ls="-", label="mean of run pairs, 95% t CI"),
                Line2D([], [], color="grey", marker="o", mfc="white", ls="none", label="one seed pair (n=1)"),
                Line2D([], [], color="black", marker="*", ms=10, ls="none", label=claim["label"]),
                plt.Rectangle((0, 0), 1, 1, color="#e8e8e8", label=f"+-{margin:g} points: equivalence margin")]
    # Outside the axes, so it never covers a point.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False)
    ax.set_title(title, fontsize=10)
    return _png(fig)
