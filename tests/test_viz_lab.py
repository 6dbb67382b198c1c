"""The kernel lab view, driven without a browser: press its buttons, read its widgets."""
import numba
import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly.graph_objects")

from explorer import KernelLab, kernels  # noqa: E402
from explorer.viz import KernelLabView  # noqa: E402


@numba.njit
def gelu_forward_loop(out, inp):
    o, x = out.reshape(-1), inp.reshape(-1)
    for i in range(x.size):
        o[i] = 0.5 * x[i] * (1.0 + np.tanh(0.7978845608028654 * (x[i] + 0.044715 * x[i] ** 3)))


@numba.njit
def gelu_forward_half(out, inp):
    o, x = out.reshape(-1), inp.reshape(-1)
    for i in range(x.size):
        o[i] = 0.5 * x[i]


@numba.njit
def gelu_forward_endless(out, inp):
    i = 0
    while i >= 0:
        i = (i + 1) % 7


@pytest.fixture(scope="module")
def lab():
    return KernelLab("reverse-tiny", steps=20, seed=0)


def test_check_button_shows_the_report_and_where_it_differs(lab):
    view = KernelLabView(lab, "gelu_forward", gelu_forward_half)
    view.check_button.click()
    view.wait(120)
    assert not view.report.passed
    assert "check failed" in view.status.value and "FAILED" in view.report_html.value
    assert view.error_box.layout.display != "none"
    z = np.asarray(view.error_figure.data[0].z)
    assert z.shape[1] == 12 and z.max() > 0          # (rows, C) of |yours - expected|
    view.kernel = gelu_forward_loop                  # the student fixes it
    assert view.check().passed
    assert "check passed" in view.status.value and view.error_box.layout.display == "none"


def test_retrain_lays_the_students_curve_over_the_reference(lab):
    view = KernelLabView(lab, "gelu_forward", gelu_forward_loop)
    view.retrain_button.click()
    view.wait(300)
    reference, yours = view.loss_figure.data
    assert len(reference.y) == len(yours.y) == 20
    assert np.allclose(yours.y, reference.y, rtol=1e-4)
    assert "done after 20 steps" in view.status.value
    assert not view.retrain_button.disabled and view.stop_button.disabled


def test_stop_ends_an_endless_check_and_buttons_come_back(lab):
    view = KernelLabView(lab, "gelu_forward", gelu_forward_endless)
    view.check(wait=False)
    assert view.busy and view.check_button.disabled and not view.stop_button.disabled
    view.wait(1.5)
    view.stop_button.click()
    view.wait(20)
    assert not view.busy
    assert view.report.fault_kind == "interrupted" and "Stop" in view.report_html.value
    assert kernels.get("gelu_forward") is kernels.shipped("gelu_forward")


def test_static_fallback_says_what_it_is(lab):
    view = KernelLabView(lab, "gelu_forward", gelu_forward_loop)
    bundle = view._repr_mimebundle_()
    assert "Kernel lab: gelu_forward" in bundle["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_a_failing_check_leaves_a_live_dashboard_and_its_trainer_alone():
    from explorer.train.presets import get_preset
    from explorer.viz import TrainingDashboard

    _, model, trainer = get_preset("reverse-tiny").build(seed=0)
    dashboard = TrainingDashboard(trainer)
    dashboard.runner.step()
    dashboard.runner.step()
    before = ([list(t.y if t.y is not None else ()) for t in dashboard.figure.data], model.flat_params.copy(),
              trainer.m.copy(), len(trainer.history))
    assert any(before[0]), "the dashboard should show the two steps' losses"
    lab = KernelLab("reverse-tiny", steps=5, seed=0)
    for kernel in (gelu_forward_half, gelu_forward_endless):
        view = KernelLabView(lab, "gelu_forward", kernel)
        view.check(wait=False)
        view.wait(2)
        lab.stop()
        view.wait(30)
        assert not view.report.passed
    assert [list(t.y if t.y is not None else ()) for t in dashboard.figure.data] == before[0]
    assert np.array_equal(model.flat_params, before[1]) and np.array_equal(trainer.m, before[2])
    assert len(trainer.history) == before[3] == 2
    dashboard.runner.step()                     # and training goes on where it was
    assert len(trainer.history) == 3
    dashboard.runner.close()
