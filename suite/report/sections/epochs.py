"""Accuracy per epoch and distinct codes per layer, from histories: the figures and the per-epoch table."""

from __future__ import annotations

from ...spec import BASELINE
from .. import figures
from ..cells import omitted_note, provenance_note
from ..claims import PAPER_CODES, provenance_label
from ..document import NOT_MEASURED, Figure, Kind, Paragraph, Section, Table, number, text
from ..hosts import history_host, host_names, network_name
from ..inputs import Inputs, RunHistory, relative


LONG_RUN = 30  # epochs; longer runs (the 150-epoch paper recipe) are sampled in the per-epoch table


def _table_epochs(run: RunHistory) -> list[dict]:
    if len(run.epochs) <= LONG_RUN:
        return run.epochs
    best = max(run.epochs, key=lambda e: e["test_acc"])
    return [e for i, e in enumerate(run.epochs) if i == 0 or e["epoch"] % 10 == 0 or e is best
            or i == len(run.epochs) - 1]


def _panel_key(run: RunHistory) -> tuple:
    """Everything runs must share to be drawn on one axes, but the method: the host, the network, the data, the
    recipe and its planned epochs, the seed, the device and precision. A pair stopped at different epochs (101
    and 94 of 150) still shares its axes."""
    h, b = run.history, run.budget
    return (history_host(run), run.arch, b.data, b.train_images, b.test_images, h["recipe"],
            h.get("planned_epochs"), h.get("seed"), h.get("batch_size"), run.device, run.precision, run.fixture)


def run_title(run: RunHistory, host: str) -> str:
    """'NVIDIA H100 80GB HBM3, VGG4bit, paper recipe (150 epochs planned), 50,000 imgs/epoch, seed 0, cuda fp32'."""
    h, b = run.history, run.budget
    planned = h.get("planned_epochs")
    budget = f"{h['recipe']} recipe" + (f", {planned} epoch{'s' if planned != 1 else ''} planned" if planned else "")
    return (("FIXTURE: " if run.fixture else "") + f"{host}, {network_name(run.arch)}, {budget}, "
            f"{b.train_images:,} imgs/epoch, seed {h.get('seed')}, {run.device} {run.precision}")


def _run_provenances(runs: list[RunHistory]) -> list[dict | None]:
    return [r.provenance for r in runs]


def accuracy_per_epoch(inputs: Inputs) -> Figure:
    """One panel per group of runs that differ only by method (fp32 and tathe4 of one seed on one axes); at most
    figures.MAX_PANELS, groups with both methods first, then the longest; the rest named in the caption."""
    groups: dict[tuple, list[RunHistory]] = {}
    for r in inputs.runs:
        groups.setdefault(_panel_key(r), []).append(r)
    names = host_names(inputs, sorted({k[0] for k in groups}))
    ordered = sorted(groups.values(), key=lambda rs: (len({r.method for r in rs}) < 2,
                                                       -max(len(r.epochs) for r in rs), str(rs[0].path)))
    panels = [{"title": run_title(runs[0], names[history_host(runs[0])].label),
               "lines": [{"method": r.method, "label": r.method, "x": [e["epoch"] for e in r.epochs],
                          "y": [e["test_acc"] for e in r.epochs], "dashed": r.method == BASELINE}
                         for r in sorted(runs, key=lambda r: (r.method != BASELINE, r.method))],
               "runs": runs} for runs in ordered]
    drawn = panels[:figures.MAX_PANELS]
    fig = figures.curves([{"title": p["title"], "lines": p["lines"]} for p in drawn],
                         "Test accuracy per epoch, fp32 and the other methods of one seed on one axes", "epoch",
                         "test accuracy after the epoch, % (measured)")
    runs = [r for p in drawn for r in p["runs"]]
    caption = ("Measured by q4bench train (fp32 dashed); one panel per host, network, recipe, device and seed, "
               "with every method trained on it." + omitted_note(
                   [p["title"] for p in panels[figures.MAX_PANELS:]],
                   f"at most {figures.MAX_PANELS} panels: pairs first, then the most epochs; all are in the table "
                   "below") + " " + provenance_note(len(runs), "histories", _run_provenances(runs)))
    return Figure("accuracy_per_epoch", figures.png(fig), "Test accuracy per epoch", caption,
                  {"panels": len(drawn), "lines": sum(len(p["lines"]) for p in drawn),
                   "omitted": len(panels) - len(drawn), "groups": len(panels), "titles": [p["title"] for p in drawn],
                   "runs": [[(r.method, len(r.epochs)) for r in p["runs"]] for p in drawn]})


def distinct_codes(inputs: Inputs) -> Figure | None:
    """Distinct integer codes per layer and epoch, one panel per run with codes; at most figures.MAX_PANELS (the
    longest runs first), the others named in the caption."""
    coded = [r for r in inputs.runs if any(e.get("distinct_codes") for e in r.epochs)]
    if not coded:
        return None
    coded.sort(key=lambda r: (-len(r.epochs), str(r.path)))
    names = host_names(inputs, sorted({history_host(r) for r in coded}))
    titles = [f"{r.method}: " + run_title(r, names[history_host(r)].label) for r in coded]
    panels = []
    for r, title in zip(coded[:figures.MAX_PANELS], titles):
        layers = list(r.epochs[-1].get("distinct_codes") or {})
        panels.append({"title": title,
                       "layers": {layer: ([e["epoch"] for e in r.epochs if layer in (e.get("distinct_codes") or {})],
                                          [e["distinct_codes"][layer] for e in r.epochs
                                           if layer in (e.get("distinct_codes") or {})]) for layer in layers}})
    fig = figures.codes_per_layer(panels, "Distinct weight codes per layer after each epoch", PAPER_CODES)
    drawn = coded[:figures.MAX_PANELS]
    caption = (f"Distinct integer weight codes per layer after each epoch, measured (dotted: the paper's "
               f"{PAPER_CODES}); one panel per run, each layer one line." + omitted_note(
                   titles[figures.MAX_PANELS:], f"at most {figures.MAX_PANELS} panels, the longest runs first")
               + " " + provenance_note(len(drawn), "histories", _run_provenances(drawn)))
    return Figure("distinct_codes", figures.png(fig), "Distinct weight codes per layer", caption,
                  {"panels": len(panels), "lines": sum(len(p["layers"]) for p in panels),
                   "omitted": len(coded) - len(panels), "runs": len(coded)})


def section_epochs(inputs: Inputs) -> Section:
    s = Section("epochs", "Accuracy per epoch and distinct codes per layer (histories)")
    if not inputs.runs:
        s.blocks.append(Paragraph(f"Per-epoch accuracy and distinct codes: {NOT_MEASURED}. Bench result files keep "
                                  "only the final accuracy; these figures come from run folders (history.json), e.g. "
                                  "the two `make parity` writes under reports/parity/runs, or any `q4bench train "
                                  "--out DIR` passed with --runs."))
        return s
    s.blocks.append(accuracy_per_epoch(inputs))
    table = Table("epochs", ["method", "epoch", "train acc", "test acc", "test acc, TTA", "lr", "seconds",
                             "train images/s", "run"])
    table.footnotes["tta"] = "test-time augmentation (the short recipe only): the flipped and unflipped image averaged"
    table.footnotes["sampled"] = (f"A run longer than {LONG_RUN} epochs shows epoch 1, every 10th, its best and its "
                                  "last epoch here; its history.json has them all.")
    for r in inputs.runs:
        # The run's budget and file, said once in a footnote rather than on each of its epochs.
        table.footnotes[f"run:{r.path}"] = f"{r.budget.describe()}; {provenance_label(r.fixture)}: {relative(r.path)}"
        for e in _table_epochs(r):
            table.add({"method": text(r.method, note="sampled" if len(r.epochs) > LONG_RUN else None),
                       "epoch": number(e["epoch"], "d", kind=Kind.TEXT),
                       "train acc": number(e.get("train_acc"), ".2f", "%", fixture=r.fixture),
                       "test acc": number(e["test_acc"], ".2f", "%", fixture=r.fixture),
                       "test acc, TTA": number(e.get("test_acc_tta"), ".2f", "%", note="tta", missing="-"),
                       "lr": number(e.get("lr"), ".2e", kind=Kind.TEXT),
                       "seconds": number(e.get("seconds"), ".0f", " s", fixture=r.fixture),
                       "train images/s": number(e.get("images_per_s"), ".1f", fixture=r.fixture),
                       "run": text(r.path.parent.name, note=f"run:{r.path}", fixture=r.fixture)})
    s.blocks.append(table)

    figure = distinct_codes(inputs)
    if figure is None:
        s.blocks.append(Paragraph(f"Distinct codes per layer: {NOT_MEASURED} (no run of a method with integer codes)."))
    else:
        s.blocks.append(figure)
    return s
