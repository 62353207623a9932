"""ONNX: bytes, agreement, accuracy and speed per exported file (verify.json), and int8's speedup layer by layer."""

from __future__ import annotations

from ..claims import provenance_label
from ..document import NOT_MEASURED, Kind, Paragraph, Section, Table, number, text
from ..inputs import Inputs, relative


def section_onnx(inputs: Inputs) -> Section:
    s = Section("onnx", "ONNX: bytes, agreement, accuracy and speed per file")
    if not inputs.verifies:
        s.blocks.append(Paragraph(f"ONNX figures: {NOT_MEASURED} (no verify.json; `make parity` or `q4bench "
                                  "verify-onnx` writes one; pass --onnx)."))
        return s
    table = Table("onnx", ["file", "bytes", "top-1 agreement with PyTorch", "max abs logit diff", "test acc",
                           "latency, batch 1", "throughput, batch 64", "opt off vs all on", "method / threads",
                           "source"])
    for v in inputs.verifies:
        d = v.data
        for name, f in d["files"].items():
            off = f.get("optimizations_off_vs_all_on") or {}
            table.add({"file": text(f"{name}.onnx"), "bytes": number(f.get("bytes"), ",", fixture=v.fixture),
                       "top-1 agreement with PyTorch": number(f.get("top1_agreement"), ".2f", "%", fixture=v.fixture),
                       "max abs logit diff": number(f.get("max_abs_logit_diff"), ".2e", fixture=v.fixture),
                       "test acc": number(f.get("test_acc"), ".2f", f"% ({d['test_images']:,} test images)",
                                          fixture=v.fixture),
                       "latency, batch 1": number(f.get("latency_b1_ms"), ".2f", " ms", fixture=v.fixture),
                       "throughput, batch 64": number(f.get("throughput_b64"), ".0f", " images/s", fixture=v.fixture),
                       "opt off vs all on": number(off.get("top1_agreement"), ".2f", "%", fixture=v.fixture),
                       "method / threads": text(f"{d['method']} / {d.get('threads', '?')}"),
                       "source": text(f"{provenance_label(v.fixture)}: {relative(v.path)}", fixture=v.fixture)})
    s.blocks.append(table)
    for v in inputs.verifies:
        d = v.data
        int4 = d["files"].get("int4", {})
        codes = int4.get("distinct_codes") or {}
        ratio = d.get("size_ratio_fp32_int4")
        s.blocks.append(Paragraph(
            f"{relative(v.path)}: fp32/int4 size ratio {f'{ratio:.2f}x' if ratio else NOT_MEASURED}; int4 codes "
            f"identical to PyTorch: {int4.get('codes_identical_to_pytorch', NOT_MEASURED)}; distinct codes per layer "
            f"in int4.onnx: {', '.join(map(str, codes.values())) or NOT_MEASURED}; timing: "
            f"{d.get('environment', {}).get('timing_method', NOT_MEASURED)}."))
        per_layer = d.get("layer_times_b64")
        if per_layer:
            s.blocks.append(Paragraph(f"Where int8's speedup comes from, layer by layer ({per_layer['method']}; "
                                      f"{provenance_label(v.fixture)}):"))
            s.blocks.append(_layer_time_table(per_layer, v.fixture))
    return s


def _layer_time_table(per_layer: dict, fixture: bool) -> Table:
    files, speedups = per_layer["ms_per_run"], per_layer["int8_speedup_per_layer"]
    table = Table("onnx_layers", ["layer", "fp32.onnx ms", "int4.onnx ms", "int8.onnx ms", "int8 speedup"])
    table.footnotes["speedup"] = "derived: fp32.onnx ms / int8.onnx ms for the layer"
    for layer in files.get("fp32", {}):
        row = {"layer": text(layer)}
        for name in ("fp32", "int4", "int8"):
            row[f"{name}.onnx ms"] = number(files.get(name, {}).get(layer), ".2f", fixture=fixture)
        row["int8 speedup"] = number(speedups.get(layer), ".2f", "x", Kind.DERIVED, note="speedup")
        table.add(row)
    return table
