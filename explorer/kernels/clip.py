"""Gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_.

    norm = sqrt(sum of g^2 over every gradient)
    scale = min(1, max_norm / (norm + 1e-6))

The scale is handed to the optimizer (which multiplies each gradient by it as it reads
it), so the gradients themselves stay as backward computed them, for the views.
"""
import numpy as np
from numba import prange

from ._compile import kernel


@kernel(parallel=True)
def grad_norm(grads):
    """Euclidean norm of a flat float32 buffer, accumulated in float64."""
    total = 0.0
    for i in prange(grads.size):
        g = np.float64(grads[i])
        total += g * g
    return np.sqrt(total)


def clip_scale(norm, max_norm):
    """The factor that brings the global norm down to max_norm (1.0 when it is below)."""
    if max_norm is None or max_norm <= 0:
        return 1.0
    return min(1.0, max_norm / (norm + 1e-6))
