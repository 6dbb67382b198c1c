"""Process-wide settings that must exist before NumPy, OpenBLAS or Numba start threads.

Why: on a 2-core laptop, Numba's OpenMP workers and OpenBLAS's workers both spin-wait
after finishing work. When one pool spins while the other computes, each core is shared
and small kernels run many times slower. Both pools read their wait policy from the
environment when their library loads, so we set it here, as early as the package can.
If NumPy was imported before `explorer`, OpenBLAS's setting comes too late; then we
fall back to a short spin timeout being absent, which costs speed, not correctness.

All Numba/BLAS compute in the package runs under one lock (`compute_lock`): Numba's
portable `workqueue` threading layer (the only one on macOS pip wheels) aborts the
process when two threads launch parallel kernels at once, so we serialise them.
"""
import os
import threading

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
os.environ.setdefault("KMP_BLOCKTIME", "0")

#: One lock around every compiled computation (re-entrant: the trainer holds it while the
#: model it calls takes it again).
compute_lock = threading.RLock()


def num_threads() -> int:
    """Threads our parallel kernels use (passed as an argument: calling
    numba.get_num_threads() inside a jitted function disables its cache)."""
    import numba

    return numba.get_num_threads()
