"""check_kernel: run a candidate kernel against the reference and say what is wrong, where.

The steps, each guarding the next:
  1. its signature matches the registry's (the model calls it positionally);
  2. a bounds-checked, single-threaded build runs every test case (cases.py) in a sandbox
     (a forked copy of this process): exceptions, out-of-range indices, crashes and endless
     loops end there, as a message;
  3. the build that would really run (the student's own options, e.g. parallel=True) runs
     the same cases here, and every output is compared with the float64 reference;
  4. backward kernels: each gradient against central differences of the reference forward;
  5. speed, next to the shipped kernel and the NumPy reference.
"""
import inspect
import time
from collections.abc import Callable, Sequence

import numpy as np

from .. import kernels
from . import gradcheck
from .cases import KERNEL_SPECS, TIMING_SIZES, Case, random_cases
from .compile import fresh_compile
from .report import KernelReport, OutputCheck
from .sandbox import Sandbox

#: A candidate passes when every output is within this of the reference, relative to the
#: output's size (or 1, the size of the random inputs, where the output is smaller).
#: The shipped float32 kernels land near 1e-7..2e-6; a wrong formula far above.
TOLERANCE = 1e-4


def check_kernel(name: str, fn: Callable, *, model_calls: Sequence[Case] = (), timing: bool = True,
                 timeout: float = 30.0, sandbox: Sandbox | None = None) -> KernelReport:
    """Check kernel `fn` as a replacement for registry kernel `name`; returns a KernelReport
    (`report.passed`, `str(report)`; a notebook shows it as a table). `model_calls` adds
    Cases captured from a real training step (see KernelLab). Never raises for a faulty
    candidate: what went wrong is in the report."""
    if name not in KERNEL_SPECS:
        raise KeyError(f"no kernel named {name!r}; expected one of: {', '.join(KERNEL_SPECS)}")
    report = KernelReport(name, passed=False, tolerance=TOLERANCE)
    cases = random_cases(name) + list(model_calls)
    problem = signature_problem(name, fn, list(cases[0].args))
    if problem:
        return _fault(report, "signature", problem)
    sandbox = sandbox or Sandbox()
    checked = sandbox.run(lambda: _run_all(fresh_compile(fn, checked=True), cases), timeout)
    report.isolated, report.printed = checked.isolated, checked.output
    if not checked.ok:
        if checked.error_type == "IndexError":
            checked = _locate(fn, cases, sandbox, timeout) or checked
        return _fault(report, checked.error_type, _explain(checked, name), checked.traceback)
    try:
        fast = fresh_compile(fn)
        with sandbox.lock:
            results = _run_all(fast, cases)
    except Exception as exc:                                  # noqa: BLE001
        return _fault(report, type(exc).__name__,
                      f"the build you asked for (e.g. parallel=True) raised {type(exc).__name__}: "
                      f"{exc} - though the single-threaded, bounds-checked build ran")
    report.kernel = fast
    spec = KERNEL_SPECS[name]
    for case, result, safe in zip(cases, results, checked.value):
        report.outputs += compare(spec, case, result)
        if _differs(result, safe, case):
            report.notes.append(f"{case.label}: the single-threaded build gives different results "
                                f"from yours: with parallel=True, two iterations of a prange loop "
                                f"probably write the same element (a race)")
    first = cases[0]
    report.gradients = gradcheck.check_gradients(name, first.args, results[0]["outputs"])
    report.passed = (all(c.passed for c in report.outputs) and not report.notes
                     and all(g.passed for g in report.gradients))
    if timing:
        _time_kernels(report, name, fn, fast, sandbox, timeout)
    return report


def signature_problem(name, fn, arg_names):
    """A sentence if fn cannot be called with the registry's arguments for `name`, else ''."""
    target = getattr(fn, "py_func", fn)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return ""
    try:
        signature.bind(*arg_names)
    except TypeError:
        return (f"the model calls {name}({', '.join(arg_names)}), {len(arg_names)} arguments in "
                f"that order; your function takes {name}{signature}")
    return ""


# ----------------------------------------------------------------------------- running
def _copy(args):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in args.items()}


def _run_all(fn, cases):
    """Run fn on a fresh copy of each case's arguments: what it wrote, returned and changed."""
    results = []
    for case in cases:
        args = _copy(case.args)
        returned = fn(*args.values())
        spec_outputs = set(case.expected)
        results.append({
            "outputs": {k: args[k] for k in spec_outputs if k in args},
            "returned": returned,
            "changed": [k for k, v in case.args.items() if k not in spec_outputs
                        and isinstance(v, np.ndarray) and not np.array_equal(v, args[k], equal_nan=True)],
        })
    return results


def _differs(result, safe, case):
    for name, value in result["outputs"].items():
        other = safe["outputs"].get(name)
        mask = case.masks.get(name)
        if other is None or value is None:
            continue
        a, b = (value, other) if mask is None else (value[np.broadcast_to(mask, value.shape)],
                                                    other[np.broadcast_to(mask, other.shape)])
        scale = max(np.abs(b).max(initial=0.0), case.floor)
        if np.isfinite(a).all() and np.isfinite(b).all() and np.abs(a - b).max(initial=0) > TOLERANCE * scale:
            return True
    return False


# ----------------------------------------------------------------------------- comparing
def compare(spec, case, result):
    """[OutputCheck] for one case: every output, and any input the kernel changed."""
    checks = []
    for name in spec.outputs:
        expected = case.expected.get(name)
        if expected is None:                     # e.g. dbias of a matmul without bias
            continue
        if spec.returns:
            checks.append(_compare_returned(case, name, result["returned"], expected))
        else:
            checks.append(compare_output(case, name, result["outputs"][name], expected))
    for name in result["changed"]:
        checks.append(OutputCheck(case.label, name, np.nan, np.nan, False, problem=(
            f"your kernel changed its input {name!r}; only "
            f"{', '.join(spec.outputs)} may be written")))
    return checks


def _compare_returned(case, name, returned, expected):
    try:
        value = float(returned)
    except (TypeError, ValueError):
        return OutputCheck(case.label, name, np.inf, np.inf, False, problem=(
            f"returned {type(returned).__name__} {returned!r:.60}; expected a number "
            f"(e.g. {float(expected):.6g})"))
    error = abs(value - float(expected))
    rel = error / max(abs(float(expected)), case.floor)
    return OutputCheck(case.label, name, error, rel, bool(rel <= TOLERANCE), (),
                       float(expected), value)


def compare_output(case, name, actual, expected):
    expected = np.asarray(expected, np.float64)
    initial = case.args.get(name)
    mask = case.masks.get(name)
    mask = np.ones(expected.shape, bool) if mask is None else np.broadcast_to(mask, expected.shape)
    if actual.shape != expected.shape:
        return OutputCheck(case.label, name, np.inf, np.inf, False, problem=(
            f"has shape {actual.shape}; expected {expected.shape}"))
    got = np.asarray(actual, np.float64)
    diff = np.where(mask, np.abs(got - expected), 0.0)
    bad = mask & ~np.isfinite(got) & np.isfinite(expected)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        return OutputCheck(case.label, name, np.inf, np.inf, False, index, float(expected[index]),
                           float(got[index]), problem=(
                               f"{int(bad.sum())} entries are NaN or Inf, the first at index "
                               f"{index} (expected {expected[index]:.6g})"), error_map=_as_2d(diff))
    scale = max(np.abs(expected[mask]).max(initial=0.0), case.scales.get(name, 0.0), case.floor)
    index = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    index = tuple(int(i) for i in index)
    max_abs = float(diff.max(initial=0.0))
    check = OutputCheck(case.label, name, max_abs, max_abs / scale, max_abs / scale <= TOLERANCE,
                        index, float(expected[index]) if diff.size else None,
                        float(got[index]) if diff.size else None, error_map=_as_2d(diff))
    if not check.passed and initial is not None and np.array_equal(actual[mask], initial[mask]):
        check.problem = (f"was not written: it still holds the values it had before the call. "
                         f"Write into the array you are given ({name}[...] = ...); assigning "
                         f"a new array to the name {name!r} does not change the caller's")
    return check


def _as_2d(diff):
    if diff.size > 1_000_000:
        return None
    return diff.reshape(1, -1) if diff.ndim < 2 else diff.reshape(-1, diff.shape[-1])


def _fault(report, kind, message, where=""):
    report.passed, report.fault_kind, report.fault, report.traceback = False, kind, message, where
    return report


def _locate(fn, cases, sandbox, timeout):
    """Compiled code can't say which line indexed out of range; the same code run as plain
    Python can (slowly). The sandbox result of that run, if it fails the same way."""
    located = sandbox.run(lambda: _run_all(fresh_compile(fn, python=True), cases), timeout)
    return located if located.error_type == "IndexError" and located.traceback else None


def _explain(result, name):
    kind, error = result.error_type, result.error
    if kind == "IndexError":
        return (f"{error} (in {name}; the bounds-checked build stopped an index past the end of "
                f"an array: without the check this reads or writes memory the array doesn't own)")
    if kind in ("TypingError", "UnsupportedError", "LoweringError", "NumbaError"):
        first = "\n".join(error.splitlines()[:12])
        return f"Numba could not compile {name}: {first}"
    return error


# ----------------------------------------------------------------------------- speed
def _time_kernels(report, name, fn, fast, sandbox, timeout):
    """Median ms per call on TIMING_SIZES: yours, the shipped kernel, the NumPy reference."""
    case = random_cases(name, [("timing", TIMING_SIZES)], seed=99)[0]
    def probe_work():
        _run_all(fresh_compile(fn, checked=True), [case])   # outputs stay in the sandbox

    probe = sandbox.run(probe_work, timeout)
    if not probe.ok:
        report.notes.append(f"speed not measured: on the timing sizes your kernel did not finish "
                            f"cleanly in the sandbox ({probe.error})")
        report.passed = False
        return
    spec = KERNEL_SPECS[name]
    float64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
               for k, v in case.args.items()}
    report.timing_sizes = {k: TIMING_SIZES[k] for k in ("B", "T", "C", "NH", "OC", "V", "N")}
    mine, theirs = _copy(case.args), _copy(case.args)
    report.timings_ms = {
        "yours": median_ms(lambda: fast(*mine.values()), sandbox.lock),
        "shipped": median_ms(lambda: kernels.shipped(name)(*theirs.values()), sandbox.lock),
        "reference (NumPy, float64)": median_ms(lambda: spec.reference(float64), sandbox.lock),
    }


def median_ms(call, lock, budget_s=0.5, max_repeats=15):
    """Median wall time of call() in ms, after one warm-up call, within about budget_s,
    holding `lock` (the compute lock: no training step runs in between to skew the times)."""
    with lock:
        call()
        times, started = [], time.perf_counter()
        while len(times) < max_repeats and (len(times) < 3 or time.perf_counter() - started < budget_s):
            t0 = time.perf_counter()
            call()
            times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))
