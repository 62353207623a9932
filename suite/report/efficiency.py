"""Efficiency cells: a method's counted training FLOP rate over a ceiling, and which ceiling, said once per
table in a footnote.

Two kinds of result exist. Newer ones measured a ceiling per precision, the best of several GEMM shapes
including the network's own convolutions as GEMMs (profile["ceiling"], suite/ceiling.py): an fp32 arm is
read against the fp32 ceiling, a bf16 arm against the bf16 one, and a value above 1 is flagged by the bench
as an anomaly. Older ones measured one square float32 product (the single-shape probe): a value above 100%
there says the probe sat below what the host's convolutions reach, and a bf16 arm over it is a bf16 rate
over an fp32 yardstick. Neither is explained away; each is labelled for what it is."""

from __future__ import annotations

from dataclasses import dataclass

COLUMN = "efficiency (derived; of the ceiling named in its note)"

NOTES = {
    "eff:ceiling": ("Derived: the method's counted training FLOP rate over the ceiling of its own precision, the "
                    "best of several GEMM shapes (a square product and the network's convolutions as GEMMs) measured "
                    "by q4bench bench on the same threads; at most 100% unless flagged."),
    "eff:anomaly": ("Flagged by the bench as an anomaly: above 100% of the best GEMM it measured, which a ceiling "
                    "cannot be. Read it as a measurement fault (the ceiling sampled while the host was busy, or a "
                    "FLOP count that misses work), not as the hardware exceeded."),
    "eff:old-fp32": ("Derived against the old single-shape probe: one square float32 product, not the host's peak. "
                     "A value above 100% says that probe sat below what the network's convolutions reach, not that "
                     "the hardware was exceeded. Results from a newer bench measure the best of several shapes."),
    "eff:old-bf16": ("A bf16 arm's rate over the fp32 single-shape probe: this result measured no bf16 ceiling. "
                     "bf16 products run about twice as fast as float32 ones (or faster) on AVX-512+bf16, so this "
                     "ratio exceeds 100% by design: a comparison with the fp32 yardstick, not a fraction of any bf16 "
                     "peak."),
}


def _note(m: dict, p: dict) -> str:
    if isinstance(p.get("ceiling"), dict) and m.get("efficiency_baseline"):
        return "eff:anomaly" if m.get("efficiency_anomaly") else "eff:ceiling"
    return "eff:old-bf16" if m.get("precision", "fp32") != "fp32" else "eff:old-fp32"


def ceiling_words(m: dict, p: dict) -> str:
    """'of the bf16 ceiling, 812.0 GFLOP/s' or 'of the fp32 SGEMM probe (2048^3), 96.1 GFLOP/s'."""
    ceiling = p.get("ceiling")
    if isinstance(ceiling, dict) and m.get("efficiency_baseline"):
        precision = m["efficiency_baseline"]
        best = (ceiling.get(precision) or {}).get("gflops")
        return f"of the {precision} ceiling" + (f", {best:.1f} GFLOP/s" if best else "")
    sgemm = p.get("sgemm") or {}
    shape = f" ({sgemm['n']}^3)" if sgemm.get("n") else ""
    rate = f", {p['sgemm_gflops']:.1f} GFLOP/s" if p.get("sgemm_gflops") else ""
    return f"of the fp32 SGEMM probe{shape}{rate}"


@dataclass(frozen=True)
class Efficiency:
    text: str
    percent: float
    note: str  # a key of NOTES: the table's footnote for this cell


def efficiency(m: dict, p: dict) -> Efficiency | None:
    """A method entry's efficiency in words with the ceiling it is read against; None if not measured."""
    eff = m.get("efficiency")
    if eff is None:
        return None
    extra = f" {ceiling_words(m, p)}"
    if m.get("achieved_gflops"):
        extra += f"; {m['achieved_gflops']:.1f} GFLOP/s achieved"
    if m.get("efficiency_range"):
        extra += f"; rounds {100 * m['efficiency_range'][0]:.0f}-{100 * m['efficiency_range'][1]:.0f}%"
    return Efficiency(f"{100 * eff:.1f}%{extra}", 100 * eff, _note(m, p))


def peak_words(p: dict) -> str | None:
    """The ISA's theoretical FMA peak the bench stated beside the ceiling, or None where it could not."""
    peak = (p.get("ceiling") or {}).get("peak") or {}
    if not peak.get("fp32_gflops"):
        return None
    bf16 = f", bf16 {peak['bf16_gflops']:.0f}" if peak.get("bf16_gflops") else ""
    return (f"theoretical FMA peak fp32 {peak['fp32_gflops']:.0f}{bf16} GFLOP/s ({peak['formula']}; clock from "
            f"{peak['clock_source']})")
