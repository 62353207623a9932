"""Cross-hardware: every host, profile, run and arm in one sortable table."""

from __future__ import annotations

from ...spec import CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES
from ..cells import (OLD_DEVICE_NOTE, data_label, device_cell, efficiency_cell, host_cell, run_time, source_cell,
                     table_host_names)
from ..claims import epoch_seconds
from ..document import NOT_MEASURED, Kind, Paragraph, Section, Table, number, text, unavailable
from ..efficiency import COLUMN as EFFICIENCY_COLUMN
from ..inputs import Inputs


def section_cross_hardware(inputs: Inputs) -> Section:
    names = table_host_names(inputs)
    s = Section("hardware", "Cross-hardware: every host, profile and run")
    if not inputs.results:
        s.blocks.append(Paragraph(f"Cross-hardware table: {NOT_MEASURED} (no result files; `q4bench submit` files "
                                  "them under reports/submitted/<host-id>/)."))
        return s
    table = Table("hardware", ["host", "CPU", "run", "data", "tier", "profile", "threads", "device", "method",
                               "train images/s", EFFICIENCY_COLUMN, "s/epoch (derived)", "energy J/epoch (each cell: RAPL or estimated)",
                               "peak memory MiB",
                               "accuracy", "filed", "source"], sortable=True,
                  caption="Click a column header to sort (numbers sort as numbers).")
    table.footnotes["s-epoch"] = (f"Derived: {CIFAR10_TRAIN_IMAGES:,} / train images/s + {CIFAR10_TEST_IMAGES:,} / eval "
                                  "images/s, one paper epoch from the measured rates.")
    table.footnotes["old-device"] = OLD_DEVICE_NOTE
    for r in inputs.results:
        filed = "submitted" if "submitted" in r.path.parts else "local"
        for p in r.data["profiles"]:
            for name, m in p["methods"].items():
                energy, acc = m["energy"], m["accuracy"]
                if energy["method"] == "measured_rapl":
                    energy_cell = number(energy["joules_per_epoch"], ",.0f", " (RAPL)", fixture=r.fixture)
                elif energy["method"] == "estimated":
                    table.footnotes[f"energy:{energy['model']}"] = f"Estimated, not measured: {energy['model']}."
                    energy_cell = number(energy["joules_per_epoch"], ",.0f", " (estimated)", Kind.ESTIMATED,
                                         note=f"energy:{energy['model']}")
                else:
                    energy_cell = unavailable()
                if acc:
                    acc_cell = number(acc["top1_percent"], ".2f", f"% ({acc['epochs']} ep x {acc['train_images']:,} "
                                      "imgs)", fixture=r.fixture)
                elif not r.data["accuracy"]["measured"]:
                    acc_cell = unavailable(r.data["accuracy"].get("reason") or "no reason recorded")
                else:
                    why = m.get("accuracy_note")
                    if why:  # the same reason on many rows: one footnote
                        table.footnotes[f"acc:{why}"] = f"Accuracy not measured here: {why}."
                    acc_cell = unavailable(note=f"acc:{why}" if why else None)
                table.add({
                    "host": host_cell(names, r.host_id), "CPU": text(names[r.host_id].label),
                    "run": text(run_time(r.created)), "data": text(data_label(r)), "tier": text(r.data["tier"]["name"]),
                    "profile": text(p["profile"]), "threads": number(p["threads"], "d", kind=Kind.TEXT),
                    "device": device_cell(p, m), "method": text(name),
                    "train images/s": number(m["train_images_per_s"], ".1f", fixture=r.fixture),
                    EFFICIENCY_COLUMN: efficiency_cell(table, m, p, r.fixture),
                    "s/epoch (derived)": number(epoch_seconds(m), ".0f", " s", Kind.DERIVED, note="s-epoch"),
                    "energy J/epoch (each cell: RAPL or estimated)": energy_cell,
                    "peak memory MiB": number(None if m["peak_rss_bytes"] is None else m["peak_rss_bytes"] / 2**20,
                                              ".0f", fixture=r.fixture),
                    "accuracy": acc_cell, "filed": text(filed), "source": source_cell(r.fixture, "q4bench bench"),
                })
    s.blocks.append(table)
    return s
