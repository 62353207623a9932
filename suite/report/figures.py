"""The report's plots (matplotlib, Agg). Each plotting function takes plain data and returns the matplotlib
figure, so tests can read what was drawn (its lines, colours, legend position); png() turns it into bytes.

Rules every figure keeps: a method's look comes from palette.method_style (one colour per method in every
figure); a legend sits outside the axes (below the panels or to their right), never over data; panels are laid
out by matplotlib's constrained layout, so titles and labels never overlap; and png() bounds the image at
MAX_WIDTH_PX x MAX_HEIGHT_PX whatever the number of results (callers also bound what they draw, and say in
the caption what they left out)."""

from __future__ import annotations

import io
import textwrap

from .palette import method_style, series_colour
from .untrusted import plottable

MAX_WIDTH_PX, MAX_HEIGHT_PX = 1800, 1500
DPI = 100
MAX_PANELS = 6  # 2 rows of 3: what stays readable at page width
PANEL_COLUMNS = 3
TITLE_WIDTH = 48  # characters per title line, so a title never runs into its neighbour's


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> bytes:
    """The figure as PNG bytes, at most MAX_WIDTH_PX x MAX_HEIGHT_PX (the resolution drops for a large one)."""
    pad = 0.1
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    dpi = min(DPI, MAX_WIDTH_PX / (box.width + 2 * pad + 0.05), MAX_HEIGHT_PX / (box.height + 2 * pad + 0.05))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=pad, metadata={"Software": None})
    _pyplot().close(fig)
    return buf.getvalue()


def wrap(title: str, width: int = TITLE_WIDTH) -> str:
    return "\n".join(textwrap.wrap(title, width))


def _grid(plt, count: int, panel_size: tuple[float, float]):
    """Up to PANEL_COLUMNS panels a row, constrained layout; the axes in reading order."""
    columns = min(count, PANEL_COLUMNS)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows),
                             squeeze=False, layout="constrained")
    flat = [ax for row in axes for ax in row]
    for spare in flat[count:]:
        spare.set_visible(False)
    return fig, flat[:count]


def _legend_below(fig, handles: list, fontsize: float = 8):
    """One legend for the whole figure, below the panels (outside every axes)."""
    columns = max(1, min(len(handles), 6))
    return fig.legend(handles=handles, loc="outside lower center", ncol=columns, fontsize=fontsize, frameon=False)


def _method_handles(methods: list[str], dashed: set[str]) -> list:
    from matplotlib.lines import Line2D

    handles = []
    for m in methods:
        style = method_style(m)
        handles.append(Line2D([], [], color=style.colour, marker=style.marker, ls="--" if m in dashed else "-",
                              label=m))
    return handles


def _ordered_methods(panels: list[dict]) -> list[str]:
    seen: list[str] = []
    for p in panels:
        for line in p["lines"]:
            if line["method"] not in seen:
                seen.append(line["method"])
    return seen


def throughput_bars(bars: list[dict], title: str):
    """One horizontal bar per row (label, method, train, eval) in two panels; colour and hatch by method."""
    plt = _pyplot()
    labels = [b["label"] for b in bars]
    y = list(range(len(bars)))
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.26 * len(bars) + 1.8), sharey=True, layout="constrained")
    for ax, key, xlabel in ((axes[0], "train", "training images/s (measured)"),
                            (axes[1], "eval", "eval images/s (measured)")):
        values = [plottable(b[key] or 0, missing=0.0) for b in bars]  # an off-scale rate: no bar, the table has it
        for yi, b, v in zip(y, bars, values):
            style = method_style(b["method"])
            ax.barh([yi], [v], color=style.colour, hatch=style.hatch, edgecolor="white", label=b["method"])
            if v:
                ax.text(v, yi, f" {v:.0f}" if v >= 10 else f" {v:.1f}", va="center", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(0, max(values + [1]) * 1.18)
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].invert_yaxis()  # shared: the first row on top in both panels
    methods = list(dict.fromkeys(b["method"] for b in bars))
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=method_style(m).colour, hatch=method_style(m).hatch,
                             edgecolor="white", label=m) for m in methods]
    _legend_below(fig, handles)
    fig.suptitle(title, fontsize=11)
    return fig


def curves(panels: list[dict], title: str, xlabel: str, ylabel: str, reference: dict | None = None,
           reference_label: str = ""):
    """Line panels: each {"title", "lines": [{"method", "label", "x", "y", "dashed"}]}, at most MAX_PANELS; a
    method keeps its look in every panel and the legend (one entry per method) sits below the panels;
    ``reference`` (x -> y) is drawn as black stars in every panel."""
    if len(panels) > MAX_PANELS:
        raise ValueError(f"curves draws at most {MAX_PANELS} panels, got {len(panels)}: the caller chooses which")
    plt = _pyplot()
    fig, axes = _grid(plt, len(panels), (5.2, 3.6))
    for ax, panel in zip(axes, panels):
        for line in panel["lines"]:
            style = method_style(line["method"])
            ax.plot(list(map(plottable, line["x"])), list(map(plottable, line["y"])), "--" if line.get("dashed") else "-",
                    color=style.colour, marker=style.marker if len(line["x"]) <= 20 else None, markersize=3.5,
                    lw=1.3, label=line["label"])
        if reference:
            ax.plot(list(reference), list(reference.values()), "k*", markersize=7, label=reference_label)
        ax.set_title(wrap(panel["title"]), fontsize=9)
        ax.set_xlabel(wrap(xlabel, 60), fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
    methods = _ordered_methods(panels)
    dashed = {line["method"] for p in panels for line in p["lines"] if line.get("dashed")}
    handles = _method_handles(methods, dashed)
    if reference:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="black", marker="*", ls="none", markersize=8, label=reference_label))
    _legend_below(fig, handles)
    fig.suptitle(title, fontsize=11)
    return fig


def codes_per_layer(panels: list[dict], title: str, paper_codes: int):
    """Distinct integer codes per layer and epoch; panels {"title", "layers": {layer: (epochs, counts)}}, at
    most MAX_PANELS; each panel's legend (its layers) below its own axes."""
    if len(panels) > MAX_PANELS:
        raise ValueError(f"codes_per_layer draws at most {MAX_PANELS} panels, got {len(panels)}")
    plt = _pyplot()
    fig, axes = _grid(plt, len(panels), (5.2, 4.2))
    for ax, panel in zip(axes, panels):
        lowest = paper_codes
        for i, (layer, (xs, ys)) in enumerate(panel["layers"].items()):
            ax.plot(xs, ys, marker=".", lw=1.1, color=series_colour(i), label=layer)
            lowest = min([lowest, *ys])
        ax.axhline(paper_codes, color="grey", lw=0.8, ls=":")
        ax.set_ylim(max(0, lowest - 2), paper_codes + 1)
        ax.set_title(wrap(panel["title"]), fontsize=9)
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_ylabel("distinct codes (measured)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


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


def gap_vs_budget(series: list[dict], margin: float, claim: dict, title: str):
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
        colour = series_colour(i)
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
    handles = [Line2D([], [], color=series_colour(i), marker="s", ls="none", ms=8,
                      label=s["label"]) for i, s in enumerate(series)]
    handles += [Line2D([], [], color="grey", marker="o", ls="-", label="compare result, 95% CI"),
                Line2D([], [], color="grey", marker="D", ls="-", label="mean of run pairs, 95% t CI"),
                Line2D([], [], color="grey", marker="o", mfc="white", ls="none", label="one seed pair (n=1)"),
                Line2D([], [], color="black", marker="*", ms=10, ls="none", label=claim["label"]),
                plt.Rectangle((0, 0), 1, 1, color="#e8e8e8", label=f"+-{margin:g} points: equivalence margin")]
    # Outside the axes, so it never covers a point.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False)
    ax.set_title(title, fontsize=10)
    return fig
