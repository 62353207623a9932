"""The method registry. A method is a small frozen dataclass; adding one touches only this folder."""

from __future__ import annotations

from ..errors import UserError
from .base import LayerQuantizer, Method, projected_parameters
from .tathe import SymmetricWeightQuantizer, TatheMethod, quantize_symmetric, symmetric_codes

METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} registered twice")
    METHODS[method.name] = method
    return method


register(Method("fp32", "FP32 baseline: the same network, AdamW, clipping and schedule, no quantizer, no projection"))
register(
    TatheMethod(
        "tathe4",
        "Tathe 2026: 15-level symmetric per-layer weights (scale max|W|/7), STE, W <- 3 tanh(W/3) after each step",
        projection="tanh",
    )
)


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


__all__ = [
    "METHODS",
    "LayerQuantizer",
    "Method",
    "SymmetricWeightQuantizer",
    "TatheMethod",
    "get_method",
    "projected_parameters",
    "quantize_symmetric",
    "register",
    "symmetric_codes",
]
