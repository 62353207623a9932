"""q4bench: benchmark and verify 4-bit quantized CNN training on commodity CPUs."""

__version__ = "0.1.0"
