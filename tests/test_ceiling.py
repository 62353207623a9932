"""The compute ceiling (suite/ceiling.py): the network's convolutions as im2col GEMMs, the best rate over the
shapes per precision, efficiency with its anomaly flag above 1, and the ISA's theoretical FMA peak by its
formula. Small shapes, no timing asserted (only that rates are positive and the best is the maximum)."""

from __future__ import annotations

import copy
import json

import pytest

from suite import ceiling
from suite.model import build_arch, conv_layers, conv_output_side
from suite.report import efficiency as eff_words
from suite.results import validation_errors
from tests.report_store import TEMPLATE

AMD_ZEN4 = {"cpu_model": "AMD EPYC", "physical_cores": 2,
            "isa": {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx": False}}
INTEL_AVX2 = {"cpu_model": "Intel Core i7", "physical_cores": 8, "isa": {"avx2": True, "avx512f": False}}


def test_convolutions_become_their_im2col_gemms_with_the_batch_capped():
    model = build_arch("simpleresnet4bit", 10)
    shapes = ceiling.conv_gemm_shapes(model, batch_size=8, max_rows=64)
    convs = conv_layers(model)
    first, side = convs[0]
    forward = next(s for s in shapes if s.origin == "conv 0 forward")
    patch = first.in_channels * first.kernel_size[0] * first.kernel_size[1]
    assert (forward.m, forward.k, forward.n) == (min(8 * conv_output_side(first, side) ** 2, 64), patch,
                                                 first.out_channels)
    assert not any(s.origin == "conv 0 backward-data" for s in shapes)  # training needs no image gradient
    assert shapes[0].origin == "square" and (shapes[0].m, shapes[0].k, shapes[0].n) == (64, 64, 64)
    assert all(max(s.m, s.k, s.n) <= max(64, max(c.out_channels for c, _ in convs), 9 * max(c.in_channels for c, _ in
                                                                                            convs)) for s in shapes)
    assert len({(s.m, s.k, s.n) for s in shapes}) == len(shapes)  # each shape once


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_ceiling_is_the_best_shape_in_its_precision(precision):
    shapes = [ceiling.GemmShape(32, 16, 8, "a"), ceiling.GemmShape(16, 32, 16, "b"), ceiling.GemmShape(24, 8, 8, "c")]
    found = ceiling.measure_ceiling(shapes, precision, repeats=1)
    rates = [s["gflops"] for s in found["shapes"]]
    assert len(rates) == 3 and all(r > 0 for r in rates)
    assert found["gflops"] == max(rates)
    assert found["shape"]["origin"] == found["shapes"][rates.index(max(rates))]["origin"]


def test_efficiency_above_one_is_flagged_not_hidden():
    ok = ceiling.efficiency_against(50.0, 100.0, "fp32")
    assert ok == {"efficiency": 0.5, "efficiency_baseline": "fp32", "efficiency_anomaly": None}
    bad = ceiling.efficiency_against(120.0, 100.0, "bf16")
    assert bad["efficiency"] == pytest.approx(1.2) and "above 1" in bad["efficiency_anomaly"]


def test_theoretical_peak_follows_its_formula():
    # Zen 4: AVX-512 on two 256-bit pipes, counted as 1 unit of 16 lanes; 2 cores at 3.0 GHz.
    zen4 = ceiling.fma_peak(AMD_ZEN4, threads=4, clock=(3.0, "test"))
    assert zen4["fp32_gflops"] == pytest.approx(2 * 3.0 * 1 * 16 * 2) and zen4["cores"] == 2
    assert zen4["bf16_gflops"] == pytest.approx(2 * zen4["fp32_gflops"])
    assert zen4["formula"] == "cores x GHz x FMA units x lanes x 2 = 2 x 3.00 x 1 x 16 x 2"
    avx2 = ceiling.fma_peak(INTEL_AVX2, threads=2, clock=(2.5, "test"))
    assert avx2["fp32_gflops"] == pytest.approx(2 * 2.5 * 2 * 8 * 2) and avx2["bf16_gflops"] is None
    assert ceiling.fma_peak(AMD_ZEN4, 2, device="cuda")["fp32_gflops"] is None
    assert "ISA" in ceiling.fma_peak({"cpu_model": "x", "isa": {}}, 2, clock=(1.0, "t"))["reason"]


def test_the_clock_is_read_from_cpufreq_else_cpuinfo(tmp_path):
    freq, info = tmp_path / "max_freq", tmp_path / "cpuinfo"
    freq.write_text("3700000\n")
    info.write_text("processor\t: 0\ncpu MHz\t\t: 2450.000\n")
    assert ceiling.cpu_clock_ghz(freq, info) == (3.7, "cpufreq cpuinfo_max_freq (maximum)")
    ghz, source = ceiling.cpu_clock_ghz(tmp_path / "absent", info)
    assert ghz == pytest.approx(2.45) and "when read" in source
    assert ceiling.cpu_clock_ghz(tmp_path / "absent", tmp_path / "absent too") is None


def _with_ceiling(anomaly: bool) -> dict:
    """The committed result with the fields a bench with the multi-shape ceiling writes."""
    doc = copy.deepcopy(json.loads(TEMPLATE.read_text()))
    shape = {"m": 2048, "k": 576, "n": 64, "origin": "conv 1 forward"}
    for p in doc["profiles"]:
        p["ceiling"] = {"fp32": {"gflops": 200.0, "shape": shape, "repeats": 3, "shapes": [dict(shape, gflops=200.0)]},
                        "bf16": {"gflops": 400.0, "shape": shape, "repeats": 3, "shapes": [dict(shape, gflops=400.0)]},
                        "max_rows": 2048, "peak": ceiling.fma_peak(AMD_ZEN4, p["threads"], clock=(3.0, "test"))}
        for m in p["methods"].values():
            baseline = m["precision"]
            m.update(ceiling.efficiency_against(m["achieved_gflops"], 0.5 * m["achieved_gflops"] if anomaly else
                                                p["ceiling"][baseline]["gflops"], baseline))
    return doc


def test_results_with_the_ceiling_are_valid_and_read_against_their_precision():
    doc = _with_ceiling(anomaly=False)
    assert validation_errors(doc) == []
    profile = doc["profiles"][-1]
    bf16 = profile["methods"]["tathe4@bf16"]
    found = eff_words.efficiency(bf16, profile)
    assert found.note == "eff:ceiling" and found.percent <= 100
    assert "of the bf16 ceiling, 400.0 GFLOP/s" in found.text
    assert "theoretical FMA peak fp32 192" in eff_words.peak_words(profile)
    flagged = _with_ceiling(anomaly=True)["profiles"][-1]
    assert eff_words.efficiency(flagged["methods"]["fp32"], flagged).note == "eff:anomaly"


def test_old_results_are_labelled_as_the_single_shape_probe():
    doc = json.loads(TEMPLATE.read_text())
    profile = doc["profiles"][-1]
    assert eff_words.efficiency(profile["methods"]["fp32"], profile).note == "eff:old-fp32"
    bf16 = eff_words.efficiency(profile["methods"]["tathe4@bf16"], profile)
    assert bf16.note == "eff:old-bf16" and "of the fp32 SGEMM probe (2048^3)" in bf16.text


def test_the_report_shows_each_ceiling_and_the_peak_beside_it(tmp_path):
    from tests.test_report import _inputs, _sections, _write

    _write(tmp_path / "results" / "a.json", _with_ceiling(anomaly=False))
    profiles = _sections(_inputs(tmp_path))["profiles"]
    table = profiles.tables()["ceilings"]
    assert len(table.rows) == 2  # one per profile of the result
    row = dict(zip(table.columns, table.rows[0]))
    assert row["bf16 ceiling (measured)"].text.startswith("400.0 GFLOP/s (conv 1 forward, 2048x576x64")
    assert "cores x GHz x FMA units x lanes x 2" in row["theoretical FMA peak (estimated)"].text
    notes = profiles.tables()["profiles"].footnotes
    assert "eff:ceiling" in notes and "eff:old-fp32" not in notes
