"""GELU, tanh approximation (as GPT-2):

    gelu(x) = 0.5 * x * (1 + tanh(u)),   u = sqrt(2/pi) * (x + 0.044715 x^3)

We compute it as x * sigmoid(2u), which is the same function (1 + tanh(u) = 2 sigmoid(2u))
and vectorises, where tanh does not (about 6x faster here).
Shapes: any; inp and out have the same shape (flattened inside).
"""
import numpy as np
from numba import prange

from ._compile import flat, kernel
from ._math import exp32

SQRT_2_OVER_PI = np.float32(np.sqrt(2.0 / np.pi))
K = np.float32(0.044715)


@kernel(parallel=True)
def _gelu_forward(out, inp):
    for i in prange(inp.size):
        x = inp[i]
        u = SQRT_2_OVER_PI * (x + K * x * x * x)
        out[i] = x / (np.float32(1.0) + exp32(np.float32(-2.0) * u))


@kernel(parallel=True)
def _gelu_backward(dinp, inp, dout):
    for i in prange(inp.size):
        x = inp[i]
        u = SQRT_2_OVER_PI * (x + K * x * x * x)
        sig = np.float32(1.0) / (np.float32(1.0) + exp32(np.float32(-2.0) * u))
        du_dx = SQRT_2_OVER_PI * (np.float32(1.0) + np.float32(3.0) * K * x * x)
        # in the forward pass this was: out = x * sig(2u);  d sig(z)/dz = sig (1 - sig)
        local_grad = sig + x * np.float32(2.0) * sig * (np.float32(1.0) - sig) * du_dx
        dinp[i] = local_grad * dout[i]


def gelu_forward(out, inp):
    _gelu_forward(flat(out), flat(inp))


def gelu_backward(dinp, inp, dout):
    """Writes dinp."""
    _gelu_backward(flat(dinp), flat(inp), flat(dout))
