"""Run a student's kernel where a bug can't take the notebook down.

On Linux and macOS the work runs in a forked copy of this process: an exception comes back
as a message, a crash (a segfault from a wild write) kills only the copy, and an endless
loop is stopped by a time limit, by Ctrl-C / the notebook's interrupt, or by `cancel()`
from another thread (the lab view's Stop button). The copy shares nothing writable with us,
so the model, optimizer and history in this process are untouched whatever happens.

Limits of the copy: it must not start OpenMP threads (GNU OpenMP aborts a forked child that
does), so the lab runs the bounds-checked, single-threaded build there. Where fork is
missing (Windows) the work runs in this process, still bounds-checked, without the crash and
endless-loop protection; `isolated` in the result says which happened.

The sandbox also holds the lab's one reference to the process's compute lock (`lock`, the
lock every model takes as `model.lock`): a fork waits for it, and the lab runs its own
in-process compute (the checked kernel's real build, timings) under it.
"""
import faulthandler
import io
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass

from ..kernels import runtime

CAN_FORK = hasattr(os, "fork") and sys.platform != "win32"


@dataclass
class SandboxResult:
    ok: bool                    # the work returned normally
    value: object = None        # what it returned (when ok)
    error: str = ""             # exception type and message (or how the process died)
    error_type: str = ""        # "IndexError", ..., "crash", "timeout", "interrupted"
    traceback: str = ""         # the candidate's frames of the exception, if any
    output: str = ""            # what the work printed
    seconds: float = 0.0
    isolated: bool = True


class Sandbox:
    """One isolated run at a time; `cancel()` (any thread) stops the one in progress."""

    def __init__(self):
        #: explorer.kernels.runtime's compute lock: held at the fork, so that no training
        #: step or compile of ours is half way in the copy; the lab computes under it too
        self.lock = runtime.compute_lock
        self._pid = None
        self._cancelled = threading.Event()

    def cancel(self):
        self._cancelled.set()
        pid = self._pid
        if pid is not None:
            _kill(pid)

    def run(self, work, timeout=30.0, isolated=None):
        """Call work() (no arguments; it returns a picklable value) and return a SandboxResult."""
        self._cancelled.clear()
        if not (CAN_FORK if isolated is None else isolated):
            return _run_here(work)
        with self.lock:             # no training step or compile of ours is half way at the fork
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:            # the copy: never returns
                os.close(read_end)
                _child(work, write_end)
            self._pid = pid
        os.close(write_end)
        try:
            return self._collect(pid, read_end, timeout)
        finally:
            self._pid = None
            os.close(read_end)


    def _collect(self, pid, read_end, timeout):
        started, chunks = time.perf_counter(), []
        try:
            while True:
                if self._cancelled.is_set():
                    return _stopped(pid, "interrupted", "stopped (Stop was pressed)", started)
                if time.perf_counter() - started > timeout:
                    return _stopped(pid, "timeout", f"did not finish within {timeout:g} s: an "
                                    f"endless loop, or far too slow for these small inputs", started)
                ready, _, _ = select.select([read_end], [], [], 0.05)
                if ready:
                    chunk = os.read(read_end, 1 << 20)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except KeyboardInterrupt:
            return _stopped(pid, "interrupted", "stopped by an interrupt (Ctrl-C or the "
                            "notebook's stop button)", started)
        if self._cancelled.is_set():        # cancel() killed it: the pipe closed first
            return _stopped(pid, "interrupted", "stopped (Stop was pressed)", started)
        _, status = os.waitpid(pid, 0)
        seconds = time.perf_counter() - started
        data = b"".join(chunks)
        if not data:                # it died before it could answer
            return SandboxResult(False, error=_death(status), error_type="crash", seconds=seconds)
        result = pickle.loads(data)  # our own child's message (never a file, never a user's data)
        result.seconds = seconds
        return result


def _child(work, write_end):
    """In the forked copy: run the work, send a SandboxResult back, exit without cleanup."""
    code = 0
    try:
        faulthandler.disable()      # a crash here is reported by the parent, not dumped twice
        sys.stdout = sys.stderr = captured = io.StringIO()    # the notebook's streams are
        _single_threaded_registry()                          # threads that aren't here
        try:
            result = SandboxResult(True, value=work())
        except BaseException as exc:                          # noqa: BLE001 (report anything)
            result = _describe(exc)
        result.output = captured.getvalue()[-20_000:]
        payload = pickle.dumps(result)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
    except BaseException:                                    # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


def _single_threaded_registry():
    """A candidate may call the package's kernels (kernels.shipped(...), kernels.get(...)).
    Those are parallel, which GNU OpenMP refuses in a forked process: in the copy, each
    is replaced by a bounds-checked single-threaded build, compiled on first use."""
    from .. import kernels
    from .compile import fresh_compile

    class SingleThreaded:
        def __init__(self, fn):
            self.fn, self.build = fn, None

        def __call__(self, *args):
            if self.build is None:
                self.build = fresh_compile(self.fn, checked=True)
            return self.build(*args)

    for table in (kernels._SHIPPED, kernels._active):
        for name, fn in table.items():
            table[name] = SingleThreaded(fn)


def _run_here(work):
    started = time.perf_counter()
    try:
        result = SandboxResult(True, value=work(), isolated=False)
    except Exception as exc:                                  # noqa: BLE001
        result = _describe(exc)
        result.isolated = False
    result.seconds = time.perf_counter() - started
    return result


def _describe(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    # the frames of the student's code: drop this package's own (the harness around it)
    own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    theirs = [f for f in frames if not os.path.abspath(f.filename).startswith(own)]
    text = "".join(traceback.format_list(theirs))   # none: compiled code has no Python frames
    message = str(exc) or exc.__class__.__name__
    return SandboxResult(False, error=f"{type(exc).__name__}: {message}",
                         error_type=type(exc).__name__, traceback=text)


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stopped(pid, kind, message, started):
    _kill(pid)
    os.waitpid(pid, 0)
    return SandboxResult(False, error=message, error_type=kind,
                         seconds=time.perf_counter() - started)


def _death(status):
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else number
        if number in (signal.SIGTERM, signal.SIGABRT):
            return (f"the process running the kernel was aborted ({name}); GNU OpenMP does this "
                    f"when a kernel under check starts parallel threads in the sandbox (call "
                    f"single-threaded code, or the package's kernels through explorer.kernels)")
        return (f"the kernel crashed the process running it ({name}); usually a write outside "
                f"an array that the bounds check could not see (e.g. through a raw pointer), "
                f"or stack exhaustion from endless recursion")
    return (f"the process running the kernel exited with status {os.WEXITSTATUS(status)} before "
            f"answering (a kernel must not call exit())")
