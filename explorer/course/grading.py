"""What an autograded cell runs (see nbgrader_export): the check from class, shown as in class,
and an AssertionError unless it passed, so that nbgrader gives the cell's points only then.

    from explorer.course import grading
    grading.require("tokens.count_pairs", count_pairs)
    grading.require_hidden("tokens.count_pairs", count_pairs, seed=7)    # nbgrader's hidden tests

Why not a bare `course.check(...)`: nbgrader gives full marks to a test cell that does not
raise, so an untouched stub would score. And why quiet: any output on stderr scores a test cell
0, even one that passed (a warning, a progress bar, a log line). The check runs with Python's
stderr and the process's file descriptor 2 (which the kernel lab's forked sandbox inherits)
captured, and what they received is shown on stdout instead.
"""
import contextlib
import io
import os
import sys
import tempfile
import warnings

from .hidden import run_hidden
from .registry import check, get_exercise


@contextlib.contextmanager
def quiet():
    """Run the block with warnings off and stderr captured; yields a list that holds, after
    the block, the text written to stderr meanwhile (by Python or below it)."""
    captured = []
    _flush(sys.stderr)
    saved_fd = os.dup(2)
    saved_stream = sys.stderr
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 2)
        sys.stderr = text = io.StringIO()
        try:
            yield captured
        finally:
            sys.stderr = saved_stream
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            sink.seek(0)
            captured.append(text.getvalue() + sink.read().decode("utf-8", "replace"))


def _flush(stream):
    try:
        stream.flush()
    except (AttributeError, ValueError, OSError):
        pass


def require(exercise_id, candidate):
    """Check candidate as course.check does, show the result, and raise AssertionError unless
    it passed. Nothing reaches stderr."""
    with quiet() as stderr:
        result = check(exercise_id, candidate)
    _show(result, stderr)
    if not result.passed:
        raise AssertionError(f"{exercise_id} has not passed its check yet: the message above "
                             f"says what is wrong")


def require_hidden(exercise_id, candidate, seed):
    """The exercise's hidden tests (explorer.course.hidden) on the cases drawn from seed:
    a line saying how it went, and AssertionError unless they passed."""
    with quiet() as stderr:
        try:
            passed, message = run_hidden(exercise_id, candidate, seed)
        except Exception as error:  # noqa: BLE001  (a strange result is feedback, as in check)
            passed, message = False, (f"the hidden tests could not finish: {type(error).__name__}: "
                                      f"{error} (while examining what "
                                      f"{get_exercise(exercise_id).function_name} returned)")
    _show(f"{'PASSED' if passed else 'NOT YET'}  {exercise_id}, hidden tests: {message}", stderr)
    if not passed:
        raise AssertionError(f"{exercise_id} fails the hidden tests: {message}")


def _show(result, stderr):
    try:
        from IPython import get_ipython
        from IPython.display import display
        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None and not isinstance(result, str):
        display(result)
    else:
        print(result)
    written = "".join(stderr).strip()
    if written:
        print(f"(written to stderr while checking, shown here so that it costs no points)\n{written}")
