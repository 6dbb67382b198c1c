"""Calling one compiled function on many independent pieces of work, from several threads.

Attention runs one (batch, head) pair at a time (`head_forward`, `head_backward`), and the
pairs are independent. A `prange` loop over them would be the obvious way, but Numba
compiles a parallel loop together with everything it calls: the head functions' code was
optimised and emitted a second time inside each loop, 3-6 s per loop on a cold cache. Here
the loop is plain Python instead: each thread asks for the next piece and calls the compiled
function for it. The function must be compiled with `nogil=True`, so that the threads run
at the same time; the Python between calls is a few microseconds per piece.

Pieces are handed out one at a time, so a thread that another program slows down simply
takes fewer of them.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

_pool = None
_pool_lock = threading.Lock()


def _forget_pool():
    """In a child made by fork: the parent's threads do not exist here; start new ones."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _workers():
    """The package's helper threads, started on first use (one fewer than Numba's pool)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, numba.config.NUMBA_NUM_THREADS - 1),
                                       thread_name_prefix="explorer-kernels")
        return _pool


class _Run:
    """One for_each call: a counter of pieces handed out, and the first error."""

    def __init__(self, count, fn):
        self.count, self.fn = count, fn
        self.next = 0
        self.busy = 0                   # threads inside fn now
        self.error = None
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)

    def work(self):
        """Call fn on pieces until none are left (or one failed)."""
        while True:
            with self.lock:
                if self.next >= self.count or self.error is not None:
                    return
                i = self.next
                self.next += 1
                self.busy += 1
            try:
                self.fn(i)
            except BaseException as error:      # handed to the caller, who re-raises it
                with self.lock:
                    self.error = self.error or error
            finally:
                with self.lock:
                    self.busy -= 1
                    self.idle.notify_all()

    def wait(self):
        """After this thread's work(): until the pieces other threads took have ended. A
        helper thread that never got to start (the pool was busy) finds nothing left to
        do, so this never waits for it."""
        with self.lock:
            while self.busy:
                self.idle.wait()


def for_each(count, fn):
    """fn(i) for every i in range(count), on as many threads as Numba's parallel loops use
    from this thread (`numba.get_num_threads()`, which `runtime.using_threads`
    sets). Returns when all calls have ended; raises the first error any of them raised
    (the pieces not yet started then are skipped)."""
    threads = 1 if numba.config.DISABLE_JIT else min(numba.get_num_threads(), count)
    if threads <= 1:                    # also: NUMBA_DISABLE_JIT, to step through in a debugger
        for i in range(count):
            fn(i)
        return
    run = _Run(count, fn)
    pool = _workers()
    for _ in range(threads - 1):
        pool.submit(run.work)
    run.work()                          # this thread takes pieces too
    run.wait()
    if run.error is not None:
        raise run.error
