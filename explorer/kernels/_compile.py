"""How every kernel in this package is compiled.

Kernels are written as plain Python over NumPy arrays and compiled with Numba. Set the
environment variable NUMBA_DISABLE_JIT=1 to run them as ordinary (slow) Python and step
through them in a debugger.

`fastmath` lets loops over floats vectorise (reassociating sums), but we leave out the
flags that assume no NaN/Inf, so a NaN still shows up as a NaN instead of garbage.
"""
import numba

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def kernel(fn=None, *, parallel=False, nogil=False):
    """Compile `fn` with the package's settings: cached on disk, float-friendly.
    nogil=True lets other Python threads run while it computes (see _workpool.py)."""
    def compile_(f):
        return numba.njit(cache=True, fastmath=FASTMATH, parallel=parallel, nogil=nogil,
                          error_model="numpy")(f)

    return compile_(fn) if fn is not None else compile_


def rows(x):
    """View a (..., C) array as (N, C) rows without copying (kernels write through it)."""
    if not x.flags.c_contiguous:
        raise ValueError(f"kernel arrays must be C-contiguous; got one of shape {x.shape} "
                         f"with strides {x.strides} (use np.ascontiguousarray)")
    return x.reshape(-1, x.shape[-1])


def flat(x):
    """View an array as 1-D without copying."""
    if not x.flags.c_contiguous:
        raise ValueError(f"kernel arrays must be C-contiguous; got one of shape {x.shape} "
                         f"with strides {x.strides} (use np.ascontiguousarray)")
    return x.reshape(-1)
