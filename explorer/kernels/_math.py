"""exp32: a float32 exponential that vectorises.

Numba's np.exp calls the C library's expf one number at a time (no SIMD vector math
library ships with pip's llvmlite), which made exp the slowest part of GELU and softmax.
This version uses only multiply, add and integer ops, so loops calling it vectorise:

    exp(x) = 2^n * e^r,   n = round(x / ln 2),  r = x - n ln 2  (|r| <= ln2 / 2)
    e^r    ~ Taylor series to r^7 / 7!    (relative error < 4e-7 over |r| <= 0.35)
    2^n    = the float whose exponent bits are n + 127

Kernels inline it (Numba `inline="always"`): after editing this file, delete the
kernels' Numba cache (the __pycache__ folder next to them), because Numba only notices
edits to a kernel's own file.
"""
import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from ._compile import FASTMATH

LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693145751953125)        # ln 2 split in two, so n * LN2_HI is exact
LN2_LO = np.float32(1.428606765330187e-06)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret an int32's bits as a float32 (no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=FASTMATH, cache=True)
def exp32(x):
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))  # stay inside float32's exponent range
    n = np.floor(x * LOG2E + np.float32(0.5))
    r = x - n * LN2_HI - n * LN2_LO
    p = np.float32(1 / 5040)
    p = p * r + np.float32(1 / 720)
    p = p * r + np.float32(1 / 120)
    p = p * r + np.float32(1 / 24)
    p = p * r + np.float32(1 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
