"""The block-scaled 4-bit floating-point formats, encoded and decoded in float32 ("fake quantization"):
MXFP4 (OCP Microscaling Formats v1.0: E2M1 elements, blocks of 32, a shared power-of-two E8M0 scale) and
NVFP4 (E2M1 elements, blocks of 16, an E4M3 scale per block under an FP32 per-tensor scale).

Every function returns the decoded values (element x scale) in float32; nothing is stored packed. The
encodings follow torchao 0.18.0's (MXTensor.to_mx with the default FLOOR scale mode, NVFP4Tensor.to_nvfp4
with a per-tensor scale) operation for operation, so the round-to-nearest results agree bit for bit
(tests/test_fp4.py); where they differ on purpose, the function says so.

E2M1 magnitudes are {0, 0.5, 1, 1.5, 2, 3, 4, 6}: a step of 0.5 below 2, 1 from 2 to 4, 2 from 4 to 6.
Dividing by a power-of-two step is exact in float32, so torch.round (half to even) on v/step is exactly
round-to-nearest-even onto the E2M1 grid: an even multiple of the step is an even mantissa.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

E2M1_MAX = 6.0
E2M1_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E2M1_EMAX = 2  # the largest E2M1 exponent: 6 = 1.5 * 2^2 (the OCP spec's emax_elem)
E4M3_MAX = 448.0
E4M3_MIN_NORMAL = 2.0**-6  # torchao clamps NVFP4 block scales here: no subnormal E4M3 scale is used
E8M0_MIN_EXP = -126  # 2^-127 (E8M0's smallest) is a float32 subnormal; see mx_scale_exponent
HADAMARD_SIZE = 16


@dataclass(frozen=True)
class Fp4Format:
    name: str  # "mxfp4" or "nvfp4"
    block: int  # elements sharing one scale

    @property
    def per_tensor_scale(self) -> bool:
        return self.name == "nvfp4"


MXFP4 = Fp4Format("mxfp4", 32)
NVFP4 = Fp4Format("nvfp4", 16)
FORMATS = {f.name: f for f in (MXFP4, NVFP4)}


# --- E2M1 elements ------------------------------------------------------------------------------------


def _e2m1_step(a: torch.Tensor) -> torch.Tensor:
    """The grid step at magnitude a (0 <= a <= 6): the gap from the grid point at or below a to the next."""
    return torch.where(a < 2.0, 0.5, torch.where(a < 4.0, 1.0, 2.0))


def round_e2m1(v: torch.Tensor) -> torch.Tensor:
    """v (already divided by its scale) rounded to nearest-even onto +-{0, ..., 6}, saturating at 6 (the
    OCP spec's clamp of normal values; E2M1 has no Inf or NaN). NaN stays NaN; -0.0 keeps its sign."""
    a = v.abs().clamp_(max=E2M1_MAX)
    step = _e2m1_step(a)
    return torch.copysign(a.div_(step).round_().mul_(step), v)


def round_e2m1_stochastic(v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """v (|v| <= 6) rounded to one of its two E2M1 neighbours lo <= |v| <= hi with P(hi) = (|v| - lo)/(hi - lo),
    so E[output] = v exactly: floor(|v|/step + U), U ~ U[0, 1), times the step below |v|."""
    a = v.abs().clamp_(max=E2M1_MAX)
    step = _e2m1_step(a)
    u = torch.empty_like(a).uniform_(generator=generator)
    return torch.copysign(a.div_(step).add_(u).floor_().mul_(step), v)


def _round(v: torch.Tensor, stochastic: bool, generator: torch.Generator | None) -> torch.Tensor:
    return round_e2m1_stochastic(v, generator) if stochastic else round_e2m1(v)


# --- MXFP4: E8M0 scales ------------------------------------------------------------------------------


def mx_scale_exponent(amax: torch.Tensor, round_up: bool = False) -> torch.Tensor:
    """The E8M0 exponent of a block with largest magnitude amax: floor(log2 amax) - emax_elem (OCP MX v1.0,
    section 6.3), read off amax's float32 exponent as torchao does. Clamped below at -126 (amax < 2^-124):
    torchao encodes such blocks with 2^-126 but decodes with 2^-127, halving them; here both use 2^-126.

    round_up (used for stochastically rounded gradients): the smallest exponent with amax <= 6 * 2^e, so no
    element saturates and stochastic rounding stays unbiased; the spec's choice lets values in (6, 8) x 2^e
    clip to 6 x 2^e."""
    exponent = torch.frexp(amax).exponent - 1 - E2M1_EMAX  # frexp: amax = m 2^e, m in [0.5, 1)
    if round_up:
        exponent = exponent + (amax > E2M1_MAX * torch.exp2(exponent.float())).int()
    return exponent.clamp_(min=E8M0_MIN_EXP)


def _mx_blocks(blocks: torch.Tensor, amax: torch.Tensor, stochastic: bool, generator) -> torch.Tensor:
    scale = torch.exp2(mx_scale_exponent(amax, round_up=stochastic).float())  # exact: an integer power of two
    q = _round(blocks / scale, stochastic, generator).mul_(scale)
    # NaN or +-Inf in a block: the block decodes to NaN (E8M0's NaN scale, 0xFF, makes every element NaN;
    # floor(log2 Inf) has no E8M0 exponent). torchao keeps an Inf as 6 * 2^126 and flushes its block to 0.
    return torch.where(torch.isfinite(amax), q, torch.nan)


# --- NVFP4: E4M3 block scales under an FP32 per-tensor scale ------------------------------------------


def _e4m3_round_up(s: torch.Tensor) -> torch.Tensor:
    """s (in [2^-6, 448]) rounded up to the next E4M3 value: the nearest, bumped one code up where it fell below."""
    down = s.to(torch.float8_e4m3fn)
    bumped = (down.view(torch.uint8) + 1).view(torch.float8_e4m3fn)  # positive codes: +1 is the next value up
    return torch.where(down.float() < s, bumped.float(), down.float())


def nvfp4_tensor_scale(x: torch.Tensor) -> torch.Tensor:
    """The FP32 per-tensor scale amax / (448 * 6) (torchao's per_tensor_amax_to_scale): a block holding the
    tensor's largest magnitude gets the E4M3 scale 448."""
    return x.detach().abs().amax().float() / (E4M3_MAX * E2M1_MAX)


def _nv_blocks(blocks, amax, tensor_scale, stochastic: bool, generator) -> torch.Tensor:
    # torchao's two-level scaling, operation for operation: scale the block's amax/6 by the tensor scale,
    # round it to E4M3 (nearest-even; clamped to [2^-6, 448] first), multiply by the reciprocal.
    scaled = (amax / E2M1_MAX / tensor_scale).clamp_(min=E4M3_MIN_NORMAL, max=E4M3_MAX)
    block_scale = _e4m3_round_up(scaled) if stochastic else scaled.to(torch.float8_e4m3fn).float()
    reciprocal = (1.0 / tensor_scale) / block_scale
    v = (blocks * reciprocal).clamp_(-E2M1_MAX, E2M1_MAX)
    # Rounded to nearest, the E4M3 scale can fall just below amax/6, clipping the block's largest value to 6;
    # for stochastic rounding (gradients) the scale is rounded up instead, so nothing clips and E[q] = x.
    return _round(v, stochastic, generator).mul_(tensor_scale * block_scale)


# --- blocks along a dimension -------------------------------------------------------------------------


def fake_quantize(
    x: torch.Tensor,
    fmt: Fp4Format,
    dim: int = -1,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x encoded in ``fmt`` and decoded, in float32, with blocks of ``fmt.block`` consecutive elements along
    ``dim`` (zero-padded at its end when not a multiple: zeros change no block's amax). Round to nearest-even,
    or stochastic rounding. No gradient. An all-zero NVFP4 tensor decodes to zeros (torchao gives NaN: its
    per-tensor scale is then 0)."""
    x = x.detach().float()
    moved = x.movedim(dim, -1)
    n = moved.shape[-1]
    pad = (-n) % fmt.block
    blocks = F.pad(moved, (0, pad)) if pad else moved
    blocks = blocks.reshape(*blocks.shape[:-1], -1, fmt.block)
    amax = blocks.abs().amax(-1, keepdim=True)
    q = _encode(blocks, amax, x, fmt, stochastic, generator)
    q = q.reshape(*moved.shape[:-1], n + pad)
    return (q[..., :n] if pad else q).movedim(-1, dim)


def _encode(blocks, amax, whole: torch.Tensor, fmt: Fp4Format, stochastic: bool, generator) -> torch.Tensor:
    """Blocks (any shape, amax broadcast over each block's elements) in ``fmt``; ``whole``: the tensor
    the per-tensor scale is taken over."""
    if not fmt.per_tensor_scale:
        return _mx_blocks(blocks, amax, stochastic, generator)
    tensor_scale = nvfp4_tensor_scale(whole)
    if not tensor_scale > 0:  # one host sync per tensor; an all-zero tensor has nothing to scale
        return torch.where(tensor_scale.isnan(), torch.nan, blocks * 0.0)
    return _nv_blocks(blocks, amax, tensor_scale, stochastic, generator)


def fake_quantize_2d(w: torch.Tensor, fmt: Fp4Format, tile: int = 16) -> torch.Tensor:
    """A weight as an (out, taps, in) matrix per kernel tap, one scale per tile x tile square of (out, in) at
    each tap (NVFP4's 16 x 16 2-D weight scaling), round to nearest-even. The same values whichever of out
    or in the GEMM reduces over, so the forward and the input-gradient GEMM use one quantized weight."""
    w = w.detach().float()
    mat = _as_taps(w)  # (O, T, I)
    o, t, i = mat.shape
    po, pi = (-o) % tile, (-i) % tile
    padded = F.pad(mat, (0, pi, 0, 0, 0, po)) if po or pi else mat
    tiles = padded.reshape((o + po) // tile, tile, t, (i + pi) // tile, tile)
    amax = tiles.abs().amax(dim=(1, 4), keepdim=True)
    q = _encode(tiles, amax, w, fmt, False, None).reshape(o + po, t, i + pi)[:o, :, :i]
    return _from_taps(q, w.shape)


def _as_taps(w: torch.Tensor) -> torch.Tensor:
    """(O, I) or (O, I, kh, kw) -> (O, taps, I): the reduction dimension I * kh * kw as taps x input channels."""
    if w.dim() == 2:
        return w.unsqueeze(1)
    return w.flatten(2).transpose(1, 2)


def _from_taps(mat: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) == 2:
        return mat.squeeze(1)
    return mat.transpose(1, 2).reshape(shape)


def fake_quantize_weight(w: torch.Tensor, fmt: Fp4Format, two_d: bool = False) -> torch.Tensor:
    """A conv or linear weight in ``fmt`` along its reduction dimension (in features; for a conv
    C_in x kh x kw, blocked along C_in at each kernel tap, the order an NHWC implicit GEMM reduces in, so a
    weight block lines up with an activation block of the same channels at one pixel), or in 2-D tiles."""
    if two_d:
        return fake_quantize_2d(w, fmt)
    return fake_quantize(w, fmt, dim=1)  # dim 1 is C_in (conv) or in features (linear)


# --- the random Hadamard transform ----------------------------------------------------------------------


def hadamard_matrix(size: int = HADAMARD_SIZE) -> torch.Tensor:
    """Sylvester's Hadamard matrix divided by sqrt(size): orthogonal, entries +-1/sqrt(size) (exact for
    powers of four, so H^T H = I exactly in float32 for size 16)."""
    h = torch.ones(1, 1)
    while h.shape[0] < size:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    if h.shape[0] != size:
        raise ValueError(f"Hadamard size must be a power of two, got {size}")
    return h / size**0.5


def random_hadamard(size: int = HADAMARD_SIZE, generator: torch.Generator | None = None) -> torch.Tensor:
    """H D: the Hadamard matrix times a random diagonal of signs (a fresh draw per call), still orthogonal."""
    signs = torch.randint(0, 2, (size,), generator=generator).float().mul_(2).sub_(1)
    return hadamard_matrix(size) * signs


def hadamard_along_batch(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x (N, ...) mixed along dim 0 in groups of h.shape[0] (zero-padded to a multiple): group k becomes
    h @ x[group k]. With the same h applied to both inputs of a product summed over dim 0,
    sum_n (h a)_n (h b)_n = sum_n a_n b_n since h^T h = I."""
    size = h.shape[0]
    pad = (-x.shape[0]) % size
    padded = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x
    groups = padded.reshape(-1, size, padded[0].numel())
    return torch.matmul(h.to(x.dtype), groups).reshape(padded.shape)
