"""The report's figures, read from what matplotlib drew (lines, colours, legend and title boxes), not from
pixels: each draws the rows it claims, a method is one look in every figure, no legend covers an axes' data
area, panel titles never overlap, and a figure's image stays within its bounds whatever the number of results."""

from __future__ import annotations

import copy
import io
import itertools

import pytest
from matplotlib.colors import to_hex

from suite.report import figures
from suite.report.palette import ARM_MARKER, KNOWN_METHODS, PALETTE, REFERENCE_GREY, method_style
from tests.test_report import _inputs, _sections, _write, fixture_history

ALL_METHODS = ("fp32",) + KNOWN_METHODS + ("fp32@bf16", "tathe4@bf16")


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _line(method: str, n: int = 4, dashed: bool = False) -> dict:
    return {"method": method, "label": method, "x": list(range(1, n + 1)), "y": [50.0 + i for i in range(n)],
            "dashed": dashed}


def test_every_method_has_its_own_look_and_keeps_it():
    styles = {m: method_style(m) for m in ALL_METHODS}
    assert len(set(styles.values())) == len(ALL_METHODS)
    assert len(PALETTE) >= 12 and len(set(PALETTE)) == len(PALETTE) and REFERENCE_GREY not in PALETTE
    # The shipped methods without an arm: one colour each (not only a marker).
    plain = [styles[m].colour for m in ("fp32",) + KNOWN_METHODS]
    assert len(set(plain)) == len(plain)
    assert styles["fp32"].colour == REFERENCE_GREY
    # A precision arm: its method's colour, another marker.
    assert styles["tathe4@bf16"].colour == styles["tathe4"].colour and styles["tathe4@bf16"].marker == ARM_MARKER
    # An unknown (plugin) method: the same look on every call, never fp32's grey.
    assert method_style("my-plugin") == method_style("my-plugin") and method_style("my-plugin").colour != REFERENCE_GREY


def test_curves_draw_every_line_in_its_methods_colour_with_the_legend_outside_the_axes():
    panels = [{"title": f"host {i}, a long title naming the host, the budget and the seed {i}",
               "lines": [_line("fp32", dashed=True), _line("tathe4"), _line("luq4")]} for i in range(5)]
    fig = figures.curves(panels, "title", "epoch", "test accuracy, %")
    renderer = _drawn(fig)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 5 and sum(len(ax.get_lines()) for ax in axes) == 15
    for ax in axes:
        assert {line.get_label(): to_hex(line.get_color()) for line in ax.get_lines()} == {
            m: method_style(m).colour.lower() for m in ("fp32", "tathe4", "luq4")}
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["fp32", "tathe4", "luq4"]
    box = legend.get_window_extent(renderer)
    assert not any(_overlap(box, ax.get_window_extent(renderer)) for ax in axes)
    titles = [ax.title.get_window_extent(renderer) for ax in axes]
    assert not any(_overlap(a, b) for a, b in itertools.combinations(titles, 2))
    figures.png(fig)


def test_curves_refuse_more_panels_than_they_can_show():
    with pytest.raises(ValueError, match="at most 6 panels"):
        figures.curves([{"title": str(i), "lines": [_line("fp32")]} for i in range(7)], "t", "x", "y")


def test_codes_legends_sit_below_their_axes():
    layers = {f"features.{i}": ([1, 2, 3], [15, 14, 15]) for i in range(8)}
    fig = figures.codes_per_layer([{"title": f"run {i}", "layers": layers} for i in range(4)], "codes", 15)
    renderer = _drawn(fig)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert sum(len(ax.get_lines()) - 1 for ax in axes) == 4 * 8  # each layer, plus the paper's dotted line
    for ax in axes:
        box = ax.get_legend().get_window_extent(renderer)
        assert not any(_overlap(box, other.get_window_extent(renderer)) for other in axes)
        colours = [to_hex(line.get_color()) for line in ax.get_lines()[:-1]]
        assert len(set(colours)) == 8


def test_throughput_bars_one_look_per_method_and_a_bounded_image():
    methods = list(ALL_METHODS)
    bars = [{"label": f"host {i % 50} with a long name | profile | cpu fp32 | 2026-11-26 | {m}", "method": m,
             "train": 10.0 + i, "eval": 100.0 + i} for i, m in enumerate(methods * 3)]
    fig = figures.throughput_bars(bars, "throughput")
    renderer = _drawn(fig)
    patches = fig.axes[0].patches
    assert len(patches) == len(bars)
    looks = {b["method"]: (to_hex(p.get_facecolor()), p.get_hatch() or "") for b, p in zip(bars, patches)}
    assert len(set(looks.values())) == len(methods)
    [legend] = fig.legends
    assert not any(_overlap(legend.get_window_extent(renderer), ax.get_window_extent(renderer)) for ax in fig.axes)
    width, height = _png_size(figures.png(fig))
    assert width <= figures.MAX_WIDTH_PX and height <= figures.MAX_HEIGHT_PX


def test_gap_figure_legend_is_right_of_the_axes():
    series = [{"label": f"host {i}", "points": [{"epochs": 1, "planned": 1, "gap": 0.5, "ci95": [0.1, 0.9], "n": 3,
                                                  "source": "compare", "finished": True}]} for i in range(3)]
    fig = figures.gap_vs_budget(series, 0.5, {"epochs": 150, "gap": 0.16, "label": "paper"}, "gap")
    renderer = _drawn(fig)
    [ax] = fig.axes
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    points = [line for line in ax.get_lines() if line.get_marker() in ("o", "D")]
    assert len(points) == 3 and len({to_hex(line.get_color()) for line in points}) == 3  # one colour per series


# ---------------------------------------------------------------------------------------------
# The report's figures say what they draw and what they leave out


def _history(method: str, seed: int, epochs: int, planned: int) -> dict:
    doc = copy.deepcopy(fixture_history(method, [40.0 + i for i in range(epochs)], 15 if method == "tathe4" else None))
    doc.update(seed=seed, planned_epochs=planned)
    return doc


def test_per_epoch_figure_pairs_methods_of_one_seed_and_names_what_it_leaves_out(tmp_path):
    # A pair stopped at different epochs of one schedule (5 and 4 of 150) shares its axes; 8 seeds, 6 panels.
    for seed in range(8):
        _write(tmp_path / "runs" / f"s{seed}" / "fp32" / "history.json", _history("fp32", seed, 5, 150))
        _write(tmp_path / "runs" / f"s{seed}" / "tathe4" / "history.json", _history("tathe4", seed, 4, 150))
    epochs = _sections(_inputs(tmp_path, results=(), runs=("runs",)))["epochs"]
    per_epoch, codes = epochs.figures()["accuracy_per_epoch"], epochs.figures()["distinct_codes"]
    assert per_epoch.data["panels"] == 6 and per_epoch.data["lines"] == 12
    assert per_epoch.data["omitted"] == 2 and per_epoch.data["groups"] == 8
    assert all(sorted(runs) == [("fp32", 5), ("tathe4", 4)] for runs in per_epoch.data["runs"])
    assert len(set(per_epoch.data["titles"])) == 6 and all("seed" in t and "150 epochs planned" in t
                                                           for t in per_epoch.data["titles"])
    assert "Not drawn (2," in per_epoch.caption and "Drawn from 12 histories; code:" in per_epoch.caption
    assert codes.data["panels"] == 6 and codes.data["omitted"] == 2 and "Not drawn (2," in codes.caption
    assert codes.data["lines"] == 6 * 8  # every layer of every drawn run


def test_host_and_layer_series_never_take_a_methods_reference_colour():
    colours = {figures.series_colour(i) for i in range(40)}
    assert method_style("tathe4").colour not in colours and REFERENCE_GREY not in colours and len(colours) >= 12
