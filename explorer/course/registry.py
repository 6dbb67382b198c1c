"""The exercises of the course, by id, and checking a student's function against one.

    @exercise("tokens.count_pairs", "Count adjacent pairs", "count_pairs(ids)", hint="...")
    def _check(count_pairs):          # raises Mismatch at the first thing wrong,
        ...                           # returns a line saying what was checked
    kernel_exercise("layernorm_backward", "Layernorm, backward")   # graded by explorer.lab

    result = check("tokens.count_pairs", count_pairs)   # never raises for a wrong function
    result.passed, str(result), results()               # the latest result of each exercise

An exercise's `grade(candidate)` returns (passed, message, report): the message is the
feedback in words; report is the checker's own rich report when it has one (a kernel's).
"""
import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from difflib import get_close_matches

from .feedback import Mismatch, short

_EXERCISES = {}   # id -> Exercise, in the order they were registered
_RESULTS = {}     # id -> the latest CheckResult


@dataclass(frozen=True)
class Exercise:
    id: str                 # "<notebook topic>.<function>", e.g. "tokens.count_pairs"
    title: str
    function: str           # what the student writes, e.g. "count_pairs(ids)"
    hint: str
    grade: Callable = None  # candidate -> (passed, message, report or None)

    @property
    def function_name(self):
        return self.function.split("(")[0].strip()


@dataclass
class CheckResult:
    """The outcome of one check: `passed`, and the feedback as text (str) or HTML."""
    exercise: Exercise
    passed: bool
    message: str            # on failure the first problem found; on success what was checked
    report: object = None   # a richer report from the checker (e.g. a kernel's), if any
    seconds: float = 0.0

    def __str__(self):
        status = "PASSED" if self.passed else "NOT YET"
        lines = [f"{status}  {self.exercise.id}: {self.exercise.title}"]
        lines += ["  " + line for line in self.message.splitlines()]
        if not self.passed and self.exercise.hint:
            lines.append(f"  Hint: {self.exercise.hint}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self):
        colour, background, status = (("#2e7d32", "#edf7ed", "&#10004; Passed") if self.passed
                                       else ("#c62828", "#fdecea", "&#10008; Not yet"))
        rich = getattr(self.report, "_repr_html_", None)
        body = (rich() if rich else
                f'<pre style="white-space:pre-wrap;margin:4px 0">{html.escape(self.message)}</pre>')
        hint = ("" if self.passed or not self.exercise.hint else
                f"<details><summary>Hint</summary>{html.escape(self.exercise.hint)}</details>")
        return (f'<div style="border-left:4px solid {colour};background:{background};'
                f'padding:6px 10px;margin:4px 0">'
                f'<b style="color:{colour}">{status}</b> &mdash; <b>{html.escape(self.exercise.title)}'
                f'</b> <code>{html.escape(self.exercise.id)}</code>{body}{hint}</div>')


# --------------------------------------------------------------------- registering
def register(ex):
    """Add an Exercise. An id is registered once (re-importing the module that defines it,
    e.g. after importlib.reload, replaces it)."""
    old = _EXERCISES.get(ex.id)
    if old is not None and _origin(old.grade) != _origin(ex.grade):
        raise ValueError(f"exercise id {ex.id!r} is already registered by {_origin(old.grade)}")
    _EXERCISES[ex.id] = ex
    return ex


def _origin(fn):
    inner = getattr(fn, "__wrapped__", fn)
    return f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', '?')}"


def exercise(exercise_id, title, function, hint=""):
    """Decorator: register a check written as expectations. The check takes the candidate,
    raises Mismatch at the first problem and returns a line saying what it checked."""
    def decorate(check_fn):
        def grade(candidate):
            try:
                summary = check_fn(candidate)
            except Mismatch as problem:
                return False, str(problem), None
            return True, summary or "every check passed", None
        grade.__wrapped__ = check_fn
        register(Exercise(exercise_id, title, function, hint, grade))
        return check_fn
    return decorate


def kernel_exercise(kernel, title=None, hint="", exercise_id=None, function=None, **options):
    """Register writing the kernel `kernel` (a name in explorer.kernels) as an exercise,
    graded by explorer.lab.check_kernel(kernel, candidate, **options). The id defaults to
    "kernels.<kernel>"."""
    def grade(candidate):
        from .. import lab  # imported when a kernel is first checked
        report = lab.check_kernel(kernel, candidate, **options)
        return bool(report.passed), str(report), report
    grade.__qualname__ = f"kernel_exercise.{kernel}"
    return register(Exercise(exercise_id or f"kernels.{kernel}", title or f"The {kernel} kernel",
                             function or kernel, hint, grade))


def exercises():
    """{id: Exercise} of every registered exercise."""
    return dict(_EXERCISES)


def get_exercise(exercise_id):
    if exercise_id not in _EXERCISES:
        close = get_close_matches(str(exercise_id), _EXERCISES, n=1)
        raise KeyError(f"no exercise {exercise_id!r}"
                       + (f"; did you mean {close[0]!r}?" if close else "")
                       + f" (exercises: {', '.join(_EXERCISES)})")
    return _EXERCISES[exercise_id]


# --------------------------------------------------------------------- checking
def check(exercise_id, candidate):
    """Check `candidate` (the student's function) against an exercise and record the result.
    A wrong candidate never raises here: whatever it does becomes the result's message."""
    ex = get_exercise(exercise_id)
    started = time.perf_counter()
    report = None
    if not callable(candidate):
        passed, message = False, (f"expected the function {ex.function_name} itself, got "
                                  f"{short(candidate)} (type {type(candidate).__name__}); pass "
                                  f"`{ex.function_name}`, not `{ex.function_name}(...)`")
    else:
        try:
            passed, message, report = ex.grade(candidate)
        except Exception as error:  # noqa: BLE001  (a strange result must not crash the notebook)
            passed, message = False, (f"the check could not finish: {type(error).__name__}: "
                                      f"{error} (while examining what {ex.function_name} returned)")
    result = CheckResult(ex, bool(passed), message, report, time.perf_counter() - started)
    _RESULTS[ex.id] = result
    return result


def results():
    """{exercise id: its latest CheckResult}, for every exercise checked in this process."""
    return dict(_RESULTS)


def passed(exercise_id):
    """Whether the latest check of this exercise passed (False if it was never checked)."""
    result = _RESULTS.get(get_exercise(exercise_id).id)
    return bool(result and result.passed)


def clear_results():
    _RESULTS.clear()
