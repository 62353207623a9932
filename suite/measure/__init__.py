"""Measurements, each saying how it was obtained, one module per concept: host (fingerprint, the /proc/cpuinfo
reader, load average, peak memory), energy (RAPL, NVML or an estimate with its power model), compute (the SGEMM
ceiling, counted FLOPs, conv passes timed alone) and throughput (interleaved training windows, eval throughput,
step-time ratios).

Measurement code returns numbers and their provenance; it never decides whether a figure is good. Functions that
need torch import it inside, so the bench parent can use the rest without loading it. The names below are the
bench child's toolkit, used as `measure.<name>`; other callers import from the concept's module."""

from .compute import FLOP_CONVENTION, SgemmProbe, conv_kernel_rates, synchronize, train_flops_per_image
from .energy import EnergyMeter, NvmlReader, PowerModel, RaplReader, energy_result, power_model
from .host import host_fingerprint, isa_caps, load_average, peak_rss_bytes
from .throughput import WindowPlan, eval_throughput, interleaved_training_windows, ratio_estimates

__all__ = [
    "FLOP_CONVENTION", "EnergyMeter", "NvmlReader", "PowerModel", "RaplReader", "SgemmProbe", "WindowPlan",
    "conv_kernel_rates", "energy_result", "eval_throughput", "host_fingerprint", "interleaved_training_windows",
    "isa_caps", "load_average", "peak_rss_bytes", "power_model", "ratio_estimates", "synchronize",
    "train_flops_per_image",
]
