"""Process-wide settings that must exist before NumPy, OpenBLAS or Numba start threads.

Why: on a 2-core laptop, Numba's OpenMP workers and OpenBLAS's workers both spin-wait
after finishing work. When one pool spins while the other computes, each core is shared
and small kernels run many times slower. Both pools read their wait policy from the
environment when their library loads, so we set it here, as early as the package can.
If NumPy was imported before `explorer`, OpenBLAS's setting comes too late; then we
fall back to a short spin timeout being absent, which costs speed, not correctness.

All Numba/BLAS compute in the package runs under one lock (`compute_lock`): Numba's
portable `workqueue` threading layer (the only one on macOS pip wheels) aborts the
process when two threads launch parallel kernels at once, so we serialise them. This
module owns it; code that works on a model takes it as `model.lock` (the same object),
and only code that runs kernels with no model at hand reaches for it here: the lab's
Sandbox, whose `lock` its kernel checks use.

How many threads a computation uses is set here too (`using_threads`, `max_threads`); the
trainer's choice of a count by timing steps is explorer.train.thread_tuner.

Numba is imported inside the functions, never at the top: this module must run before
Numba loads, or the thread-pool settings above come too late.
"""
import contextlib
import os
import sys
import threading
import warnings


def _openmp_already_started():
    """True when some library (PyTorch, scikit-learn...) loaded an OpenMP runtime before us:
    it has read its wait policy already, and its threads will spin against ours."""
    if "OMP_WAIT_POLICY" in os.environ:
        return False            # whoever started it saw the policy we want (or the user's)
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line or "libiomp" in line for line in maps)
    except OSError:             # not Linux: fall back to the usual suspect
        return "torch" in sys.modules


_LATE = _openmp_already_started()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
os.environ.setdefault("KMP_BLOCKTIME", "0")

if _LATE:
    # Measured on 2 cores: with torch imported first, Numba's OpenMP layer made a training
    # step 2-3x slower; Numba's own `workqueue` layer does not spin and loses far less.
    import numba

    numba.config.THREADING_LAYER = "workqueue"
    warnings.warn("an OpenMP runtime was loaded before explorer (e.g. `import torch` came first), "
                  "so explorer switched Numba to its slower 'workqueue' threads. For full speed, "
                  "`import explorer` first, or set OMP_WAIT_POLICY=PASSIVE before starting Python.",
                  RuntimeWarning, stacklevel=3)

#: One lock around every compiled computation (re-entrant: the trainer holds it while the
#: model it calls takes it again). Reach it as `model.lock` wherever there is a model.
compute_lock = threading.RLock()


def num_threads() -> int:
    """Threads our parallel kernels use (passed as an argument: calling
    numba.get_num_threads() inside a jitted function disables its cache)."""
    import numba

    return numba.get_num_threads()


def max_threads() -> int:
    """The most threads the kernels may use (Numba's pool size: NUMBA_NUM_THREADS)."""
    import numba

    return numba.config.NUMBA_NUM_THREADS


_blas_controller = None


def _blas():
    """One threadpoolctl controller (finding the loaded libraries costs time: do it once)."""
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController
        _blas_controller = ThreadpoolController()
    return _blas_controller


def blas_threads(n: int):
    """Inside (a `with` block): BLAS calls use at most n threads. Process-wide, like
    using_threads's BLAS part: kernels run under compute_lock."""
    return _blas().limit(limits=n, user_api="blas")


@contextlib.contextmanager
def using_threads(n: int):
    """Inside: parallel loops launched from this thread and BLAS calls use n threads
    (Numba's count is per thread; BLAS's is process-wide, so hold compute_lock around it)."""
    import numba

    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= max_threads():
        raise ValueError(f"threads must be an integer from 1 to {max_threads()}, got {n!r}")
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with _blas().limit(limits=n, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(previous)
