"""The kernel lab: check_kernel's verdicts, every fault a student makes, fresh compiles, retraining.

Every fault test checks three things: the report says what was wrong (not just "failed"),
the registry still holds the shipped kernel, and a model and trainer that exist meanwhile
are exactly as they were.
"""
import ctypes
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import typing

import numba
import numpy as np
import pytest
from numba import prange

from explorer import kernels
from explorer.kernels import reference as ref
from explorer.lab import KernelLab, Sandbox, check_kernel, fresh_compile
from explorer.train.presets import get_preset


# ----------------------------------------------------------------------------- candidates
@numba.njit
def gelu_forward_loop(out, inp):
    """A correct GELU written the way a student would."""
    o, x = out.reshape(-1), inp.reshape(-1)
    for i in range(x.size):
        u = 0.7978845608028654 * (x[i] + 0.044715 * x[i] ** 3)
        o[i] = 0.5 * x[i] * (1.0 + np.tanh(u))


@numba.njit
def gelu_forward_out_of_bounds_write(out, inp):
    o, x = out.reshape(-1), inp.reshape(-1)
    for i in range(x.size + 1):          # one past the end
        o[i] = x[min(i, x.size - 1)]


@numba.njit
def gelu_forward_out_of_bounds_read(out, inp):
    o, x = out.reshape(-1), inp.reshape(-1)
    for i in range(x.size):
        o[i] = x[i + 1]                  # reads past the end on the last element


@numba.njit
def gelu_forward_endless(out, inp):
    i = 0
    while i >= 0:                        # never false
        i = (i + 1) % 7


@numba.njit
def gelu_forward_nan(out, inp):
    o, x = out.reshape(-1), inp.reshape(-1)
    for i in range(x.size):
        o[i] = np.sqrt(x[i])             # NaN for negative inputs


def gelu_forward_raises(out, inp):
    raise ValueError("not implemented yet")


def gelu_forward_rebinds(out, inp):
    out = inp * 0.5                      # noqa: F841 (the bug: the caller's array is untouched)


def gelu_forward_wrong_signature(inp):
    return inp


def gelu_forward_changes_input(out, inp):
    inp *= 2.0
    kernels.shipped("gelu_forward")(out, inp / 2.0)


def gelu_forward_crashes(out, inp):
    ctypes.string_at(0)                  # reads address 0: SIGSEGV


@numba.njit(parallel=True)
def gelu_forward_differs_in_parallel(out, inp):
    """Right on one thread, wrong on others: what a race looks like to the check, made
    deterministic (a real race, e.g. several iterations adding into one element, is not)."""
    o, x = out.reshape(-1), inp.reshape(-1)
    for i in prange(x.size):
        u = 0.7978845608028654 * (x[i] + 0.044715 * x[i] ** 3)
        o[i] = 0.5 * x[i] * (1.0 + np.tanh(u)) + numba.get_thread_id()


def layernorm_backward_wrong_dweight(dinp, dweight, dbias, dout, inp, weight, mean, rstd):
    """Right dinp and dbias; dweight forgets to normalise (uses x instead of (x - mean) * rstd)."""
    good_dinp, _, good_dbias = ref.layernorm_backward(dout, inp, weight, mean, rstd)
    dinp[...], dbias[...] = good_dinp, good_dbias
    dweight[...] = (dout * inp).sum(axis=(0, 1))


def grad_norm_returns_array(grads):
    return np.sqrt(grads * grads)


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def bystander():
    """A model and trainer that exist while a student's kernel is checked: nothing may touch them."""
    _, model, trainer = get_preset("reverse-tiny").build(seed=0)
    trainer.step()
    before = (model.flat_params.copy(), trainer.m.copy(), trainer.v.copy(), len(trainer.history))
    yield model, trainer
    assert np.array_equal(model.flat_params, before[0])
    assert np.array_equal(trainer.m, before[1]) and np.array_equal(trainer.v, before[2])
    assert len(trainer.history) == before[3]
    assert all(kernels.is_shipped(n) and kernels.get(n) is kernels.shipped(n) for n in kernels.names())


def failed(report, kind=None, *phrases):
    assert not report.passed, str(report)
    if kind:
        assert report.fault_kind == kind, str(report)
    text = str(report)
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{text}"
    return text


# ----------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("name", kernels.names())
def test_every_shipped_kernel_passes_its_check(name):
    report = check_kernel(name, kernels.shipped(name), timing=False)
    assert report.passed, str(report)
    assert max(c.max_rel for c in report.outputs) < 1e-5


def test_a_correct_student_kernel_passes_and_is_timed():
    report = check_kernel("gelu_forward", gelu_forward_loop)
    assert report.passed, str(report)
    assert set(report.timings_ms) == {"yours", "shipped", "reference (NumPy, float64)"}
    assert all(ms > 0 for ms in report.timings_ms.values())
    assert "gelu_forward: passed" in str(report) and "<table>" in report._repr_html_()


def test_a_wrong_gradient_is_located_and_caught_by_finite_differences():
    report = check_kernel("layernorm_backward", layernorm_backward_wrong_dweight, timing=False)
    failed(report, None, "dweight", "worst at index")
    assert {c.output for c in report.failures()} == {"dweight"}
    by_name = {g.gradient: g for g in report.gradients}
    assert by_name["dinp"].passed and by_name["dbias"].passed and not by_name["dweight"].passed
    worst = report.worst("dweight")
    assert worst.error_map is not None and worst.error_map.max() > 0


# ----------------------------------------------------------------------------- faults
def test_exception_is_reported_with_the_students_line(bystander):
    report = check_kernel("gelu_forward", gelu_forward_raises)
    text = failed(report, "ValueError", "not implemented yet")
    assert "gelu_forward_raises" in report.traceback and "test_lab.py" in text


def test_wrong_signature_names_the_expected_arguments(bystander):
    failed(check_kernel("gelu_forward", gelu_forward_wrong_signature), "signature",
           "gelu_forward(out, inp)", "2 arguments")


@pytest.mark.parametrize("kernel", [gelu_forward_out_of_bounds_write, gelu_forward_out_of_bounds_read])
def test_out_of_bounds_access_is_an_index_error_naming_the_line(kernel, bystander):
    report = check_kernel("gelu_forward", kernel)
    failed(report, "IndexError", "out of bounds", "gelu_forward")
    assert kernel.__name__ in report.traceback      # located by rerunning it as Python


def test_endless_loop_ends_at_the_time_limit(bystander):
    started = time.perf_counter()
    report = check_kernel("gelu_forward", gelu_forward_endless, timeout=3)
    failed(report, "timeout", "did not finish within 3 s")
    assert time.perf_counter() - started < 15


def test_endless_loop_stops_on_cancel_from_another_thread(bystander):
    sandbox = Sandbox()
    threading.Timer(1.0, sandbox.cancel).start()
    report = check_kernel("gelu_forward", gelu_forward_endless, timeout=60, sandbox=sandbox)
    failed(report, "interrupted", "Stop")


def test_endless_loop_stops_on_keyboard_interrupt(bystander):
    """What the notebook's interrupt button does: SIGINT to the kernel's main thread."""
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    report = check_kernel("gelu_forward", gelu_forward_endless, timeout=60)
    failed(report, "interrupted", "interrupt")


def test_a_crash_kills_only_the_sandbox(bystander):
    failed(check_kernel("gelu_forward", gelu_forward_crashes), "crash", "SIGSEGV")


def test_nan_output_is_located(bystander):
    report = check_kernel("gelu_forward", gelu_forward_nan, timing=False)
    failed(report, None, "NaN or Inf", "the first at index")


def test_output_not_written_says_write_in_place(bystander):
    failed(check_kernel("gelu_forward", gelu_forward_rebinds, timing=False), None,
           "was not written", "out[...] =")


def test_changing_an_input_is_reported(bystander):
    failed(check_kernel("gelu_forward", gelu_forward_changes_input, timing=False), None,
           "changed its input 'inp'")


def test_wrong_return_type_is_reported(bystander):
    failed(check_kernel("grad_norm", grad_norm_returns_array, timing=False), None,
           "returned ndarray", "expected a number")


@pytest.mark.skipif(numba.get_num_threads() < 2, reason="needs two threads to differ")
def test_results_that_differ_in_parallel_are_called_a_race(bystander):
    failed(check_kernel("gelu_forward", gelu_forward_differs_in_parallel, timing=False), None,
           "single-threaded build gives different results", "race")


def test_compile_error_is_reported():
    @numba.njit
    def gelu_forward_typo(out, inp):
        out[0] = undefined_name            # noqa: F821

    failed(check_kernel("gelu_forward", gelu_forward_typo, timing=False), None, "gelu_forward")


# ----------------------------------------------------------------------------- fresh compiles
HELPER_V1 = "def helper(x):\n    return x + 6.0\n"
HELPER_V2 = "def helper(x):\n    return x * 31.0\n"
CALLER = textwrap.dedent("""
    import numba
    helper = numba.njit(cache=True)(helper)

    @numba.njit(cache=True)
    def caller(x):
        return helper(x)
""")
RUN = textwrap.dedent("""
    import sys; sys.path.insert(0, {folder!r})
    from explorer.lab import fresh_compile
    import student
    print(student.caller(1.0), fresh_compile(student.caller)(1.0))
""")


def test_an_edited_helper_is_never_silently_ignored(tmp_path):
    """Numba's cache keys a caller by its own source: after editing only the helper, a new
    process still gets the old helper from the cache. The lab's build must see the edit."""
    module = tmp_path / "student.py"
    outputs = []
    for helper in (HELPER_V1, HELPER_V2):
        module.write_text(helper + CALLER)
        run = subprocess.run([sys.executable, "-c", RUN.format(folder=str(tmp_path))],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")})
        assert run.returncode == 0, run.stderr
        outputs.append(run.stdout.split())
    assert outputs[0] == ["7.0", "7.0"]
    assert outputs[1][1] == "31.0"      # the lab's build uses the edited helper
    # (outputs[1][0] is Numba's own cached caller: stale "7.0" on numba 0.68; not our code)


def test_a_helper_redefined_in_the_notebook_is_used():
    namespace = {"numba": numba}
    exec("helper = numba.njit(lambda x: x + 6.0)\n"
         "@numba.njit\ndef caller(x):\n    return helper(x)\n", namespace)
    caller = namespace["caller"]
    assert caller(1.0) == 7.0
    exec("helper = numba.njit(lambda x: x * 31.0)\n", namespace)    # the student reruns one cell
    assert caller(1.0) == 7.0                                         # Numba's compiled copy: stale
    assert fresh_compile(caller)(1.0) == 31.0


# ----------------------------------------------------------------------------- retraining
@pytest.fixture(scope="module")
def lab():
    return KernelLab("reverse-tiny", steps=30, seed=0)


def test_model_calls_capture_the_models_shapes(lab):
    calls = lab.model_calls("matmul_forward")
    shapes = {case.args["weight"].shape for case in calls}
    C = 64
    assert {(3 * C, C), (C, C), (4 * C, C)} <= shapes


def test_retrain_with_a_correct_kernel_follows_the_reference(lab):
    reference = lab.reference()
    run = lab.retrain("gelu_forward", gelu_forward_loop)
    assert run.status == "done" and len(run.losses) == 30, str(run)
    assert np.allclose(run.losses, reference.losses, rtol=1e-4, atol=1e-5)
    assert 0 < run.first_step_s < run.seconds


def test_retrain_refuses_a_kernel_that_fails_its_check(lab, bystander):
    run = lab.retrain("gelu_forward", gelu_forward_out_of_bounds_write)
    assert run.status == "refused" and not run.losses
    assert run.report.fault_kind == "IndexError"


def test_a_kernel_that_fails_mid_run_ends_the_run_not_the_lab(lab, bystander):
    calls = []

    def gelu_forward_fails_later(out, inp):
        calls.append(1)
        if len(calls) > 40:              # passes its check, then breaks during training
            raise RuntimeError("broke at call 41")
        kernels.shipped("gelu_forward")(out, inp)

    run = lab.retrain("gelu_forward", gelu_forward_fails_later)
    assert run.status == "failed" and "broke at call 41" in run.error, str(run)
    assert 0 < len(run.losses) < 30
    assert lab.reference().status == "done"


def test_stop_ends_a_retrain(lab):
    def stop_after_three(run, _metrics):
        if len(run.losses) == 3:
            lab.stop()

    run = lab.retrain("gelu_forward", gelu_forward_loop, on_step=stop_after_three)
    assert run.status == "stopped" and len(run.losses) == 3


def test_install_registers_only_a_passing_kernel(lab):
    try:
        assert not lab.install("gelu_forward", gelu_forward_nan).passed
        assert kernels.get("gelu_forward") is kernels.shipped("gelu_forward")
        report = lab.install("gelu_forward", gelu_forward_loop)
        assert report.passed and kernels.get("gelu_forward") is report.kernel
    finally:
        kernels.reset("gelu_forward")


def test_the_labs_public_api_is_typed():
    """check_kernel and KernelLab's public methods annotate every argument and the result,
    with names that resolve (get_type_hints evaluates them)."""
    methods = [getattr(KernelLab, n) for n in vars(KernelLab) if not n.startswith("_")]
    for fn in [check_kernel, KernelLab.__init__, *methods]:
        hints = typing.get_type_hints(fn)
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.name != "self" and p.kind is not p.VAR_KEYWORD]
        missing = [p for p in [*params, "return"] if p not in hints]
        assert missing == [], f"{fn.__qualname__} has no type hint for {missing}; expected one for each"
