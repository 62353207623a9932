"""The method registry. A method is a small frozen dataclass; adding one touches only this folder."""

from __future__ import annotations

from ..errors import UserError
import dataclasses

from .base import (
    BITOPS_MODEL,
    GemmBits,
    LayerQuantizer,
    Method,
    gemm_bitops_ratio,
    layers_bitops_ratio,
    method_cost,
    projected_parameters,
)
from .cpt import CptMethod, CptQuantizer, cyclic_bits, minmax_quantize
from .luq import LuqMethod, LuqQuantizer, luq_quantize, sawb_clip, sawb_quantize
from .tathe import SymmetricWeightQuantizer, TatheMethod, quantize_symmetric, symmetric_codes

METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} registered twice")
    METHODS[method.name] = method
    return method


register(Method("fp32", "FP32 baseline: the same network, AdamW, clipping and schedule, no quantizer, no projection"))
TATHE4 = register(
    TatheMethod(
        "tathe4",
        "Tathe 2026: 15-level symmetric per-layer weights (scale max|W|/7), STE, W <- 3 tanh(W/3) after each step",
        projection="tanh",
    )
)
# The paper's ablations (paper-spec 1.10), each the reference with one component changed.
register(
    dataclasses.replace(
        TATHE4,
        name="tathe4-notanh",
        summary="tathe4 without the tanh soft clip: no post-step projection (gradient clipping kept)",
        projection=None,
    )
)
register(
    dataclasses.replace(
        TATHE4,
        name="tathe4-noclip",
        summary="tathe4 without gradient-norm clipping (the tanh soft clip kept)",
        grad_clip_norm=None,
    )
)
register(
    dataclasses.replace(
        TATHE4,
        name="tathe4-hardclip",
        summary="tathe4 with the tanh soft clip replaced by a hard clamp of the master weights to +-3",
        projection="hardclip",
    )
)
# A deliberately degraded control for the parity gate: the reference method at 2 bits (codes -1..1, three
# levels). The gate must fail it; a gate that passes it has no teeth.
register(
    dataclasses.replace(
        TATHE4,
        name="tathe4-2bit",
        summary="degraded control: tathe4 with 2-bit weights (3 levels, codes -1..1, scale max|W|/1); the parity "
        "gate must fail it",
        bits=2,
    )
)
register(
    LuqMethod(
        "luq4",
        "LUQ (Chmiel et al. 2023): 4-bit SAWB weights (-7..7) and activations (0..15; the signed image input "
        "-7..7) on every conv/linear, LUQ radix-2 4-bit output gradients (alpha = max|g|/128, stochastic "
        "underflow, log-unbiased rounding, 1 sample); shared AdamW recipe (the paper trained with SGD); "
        "gradient saving simulated on float kernels",
    )
)
register(
    CptMethod(
        "cpt",
        "CPT (Fu et al. 2021): forward weights (per channel) and activations (per tensor) min/max-quantized "
        "at a cosine-cyclic 3..8 bits, 32 cycles over the run, eval at 8; output gradients 8-bit stochastic; "
        "last linear FP32; shared AdamW recipe (the paper used SGD lr 0.1); saving simulated on float kernels",
    )
)


# Methods outside this folder: $Q4BENCH_PLUGINS names modules (comma-separated) imported here, each calling
# register(). Through the environment it reaches every child process, so q4bench compare and the parity gate
# can train a method defined elsewhere (the tests use it for a deliberately broken one).
PLUGINS_ENV = "Q4BENCH_PLUGINS"


def _load_plugins() -> None:
    import importlib
    import os

    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"${PLUGINS_ENV}: cannot import {module!r} ({exc})") from None


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


_load_plugins()

__all__ = [
    "BITOPS_MODEL",
    "METHODS",
    "CptMethod",
    "CptQuantizer",
    "GemmBits",
    "LayerQuantizer",
    "LuqMethod",
    "LuqQuantizer",
    "Method",
    "SymmetricWeightQuantizer",
    "TatheMethod",
    "cyclic_bits",
    "gemm_bitops_ratio",
    "get_method",
    "layers_bitops_ratio",
    "luq_quantize",
    "method_cost",
    "minmax_quantize",
    "projected_parameters",
    "quantize_symmetric",
    "register",
    "sawb_clip",
    "sawb_quantize",
    "symmetric_codes",
]
