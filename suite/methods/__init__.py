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
from .fp4 import Fp4GemmQuantizer, Fp4Method, Fp4WeightQuantizer
from .fractrain import DfqGates, DfqMethod, DfqQuantizer, PfqMethod, PfqSchedule, PlateauIndicator
from .luq import LuqMethod, LuqQuantizer, luq_quantize, sawb_clip, sawb_quantize
from .sbm import RangeBatchNorm, SbmMethod, SbmQuantizer, range_bn_scale_fix, use_range_bn
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
# The paper's ablations (docs/method.md), each the reference with one component changed.
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
# A near-threshold control: 3-bit weights (codes -3..3), a milder degradation that a gate with teeth should
# still catch; parity.toml records where it falls against the tolerance.
register(
    dataclasses.replace(
        TATHE4,
        name="tathe4-3bit",
        summary="mildly degraded control: tathe4 with 3-bit weights (7 levels, codes -3..3, scale max|W|/3)",
        bits=3,
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
register(
    SbmMethod(
        "sbm8",
        "SBM (Banner et al. 2018): 8-bit min/max weights and activations on every conv/linear, Range BN "
        "(chunked, official form) for every BatchNorm, gradient bifurcation (dX from an 8-bit stochastic "
        "output gradient, dW from the unquantized one); shared AdamW recipe (the paper used SGD); saving "
        "simulated on float kernels",
    )
)
register(
    SbmMethod(
        "sbm4",
        "sbm8 at 4 bits (weights, activations, dX-path gradient); not in the SBM paper, a probe of how far "
        "its scheme goes; simulated on float kernels",
        bits=4,
        grad_bits=4,
    )
)
register(
    dataclasses.replace(
        TATHE4,
        name="tathe4-rangebn",
        summary="tathe4 with every BatchNorm replaced by SBM's Range BN (chunked official form), SBM's "
        "answer to BN's instability at low precision",
        range_bn=True,
    )
)
register(
    PfqMethod(
        "fractrain-pfq",
        "FracTrain PFQ (Fu et al. 2020): per-channel weights and per-tensor activations at FW 3->4->6->8 bits, "
        "output gradients (stochastic) at BW 6->6->8->8, advanced by the official loss-plateau indicator (last "
        "5 400-step window losses, eps 0.05, decay 0.3); last linear FP32; switch points in the history; "
        "bit-op estimate assumes equal stages; shared AdamW recipe; simulated on float kernels",
    )
)
register(
    DfqMethod(
        "fractrain-dfq",
        "FracTrain DFQ (Fu et al. 2020): per layer and input an LSTM gate picks (FW, BW) bits from "
        "3/6, 4/6, 4/8, 6/8, 6/12 with 4-bit weights, a cost regularizer holding the mix near 3% of FP32 bit "
        "operations; first and last layers FP32; every option computed and mixed by the one-hot mask "
        "(simulated, as the official code); chosen bits per layer in the history; shared AdamW recipe",
    )
)

register(
    Fp4Method(
        "mxfp4-w",
        "MXFP4 weights (OCP MX v1.0): every conv/linear weight in E2M1 with one power-of-two E8M0 scale per 32 "
        "along the reduction dimension (floor(log2 amax) - 2), round to nearest-even, STE; no tanh step; "
        "activations and gradients float32; emulated on float kernels",
        fmt="mxfp4",
    )
)
register(
    Fp4Method(
        "nvfp4-w",
        "NVFP4 weights: every conv/linear weight in E2M1 with an E4M3 scale per 16 along the reduction dimension "
        "under an FP32 per-tensor scale (amax/2688), round to nearest-even, STE; no tanh step; activations and "
        "gradients float32; emulated on float kernels",
        fmt="nvfp4",
    )
)
register(
    Fp4Method(
        "mxfp4",
        "MXFP4 training (as Quartet, arXiv 2505.14669, without its Hadamard transforms): weights and activations "
        "MXFP4 round-to-nearest-even in the forward GEMM, output gradients MXFP4 with stochastic rounding into "
        "both backward GEMMs; first conv and last linear FP32; shared AdamW recipe; simulated on float kernels",
        fmt="mxfp4",
        weights_only=False,
        keep_first_last=True,
    )
)
register(
    Fp4Method(
        "nvfp4",
        "NVFP4 training (NVIDIA, arXiv 2509.25149): 16x16 2-D weight scales, 1x16 activations (round to nearest-"
        "even) and output gradients (stochastic rounding) into all three GEMMs, a random 16x16 Hadamard transform "
        "on the weight-gradient GEMM's inputs; first conv and last linear FP32; shared AdamW recipe (the paper "
        "trained LLMs with its own); simulated on float kernels",
        fmt="nvfp4",
        weights_only=False,
        weight_2d=True,
        wgrad_hadamard=True,
        keep_first_last=True,
    )
)


# Methods outside this folder: $Q4BENCH_PLUGINS names modules (comma-separated) imported here, each calling
# register(). Through the environment it reaches every child process, so q4bench compare and the parity gate
# can train a method defined elsewhere (the tests use it for a deliberately broken one). Modules are looked up
# in the working directory too (after everything installed): `python -m suite` puts it on sys.path, the
# `q4bench` console script does not, and both must find the same plugins.
PLUGINS_ENV = "Q4BENCH_PLUGINS"


def _load_plugins() -> None:
    import importlib
    import os
    import sys

    modules = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    if modules and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a plugin is anyone's code: whatever it raises, one line naming it
            detail = " ".join(str(exc).split()) or "no message"
            raise UserError(f"${PLUGINS_ENV}: cannot import {module!r} ({type(exc).__name__}: {detail})") from None


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
    "DfqGates",
    "DfqMethod",
    "DfqQuantizer",
    "Fp4GemmQuantizer",
    "Fp4Method",
    "Fp4WeightQuantizer",
    "GemmBits",
    "LayerQuantizer",
    "LuqMethod",
    "LuqQuantizer",
    "RangeBatchNorm",
    "SbmMethod",
    "SbmQuantizer",
    "Method",
    "PfqMethod",
    "PfqSchedule",
    "PlateauIndicator",
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
    "range_bn_scale_fix",
    "register",
    "sawb_clip",
    "sawb_quantize",
    "symmetric_codes",
    "use_range_bn",
]
