"""The notebooks in a real browser: JupyterLab, Notebook 7 and Voila in Debian's Chromium,
driven by Playwright.

In each: open a copy of the notebook, Run > Run All Cells, wait until every cell shows [n] and
the kernel is idle, then check what a person would see: no error output, every widget drawn
(none "Error displaying widget", none still "Loading widget..."), every plotly figure drawn
(each is scrolled into view and given time to draw, then must show a trace or a heatmap), and
no uncaught error from the widgets' code. Then the views are used as a person would:

- the tour (00_tour), in JupyterLab and Notebook 7; in JupyterLab also: plotly's code came from
  the server (explorer/viz/server.py), the dashboard's Pause stops the step counter and Step
  advances it by exactly one; moving the attention explorer's head slider redraws a heatmap.
- two figures in JupyterLab with that server extension turned off: they draw with plotly's code
  from the kernel.
- the kernel lab (05_kernel_lab, its exercise solved with the instructor's solution), in
  JupyterLab: Check reports that the kernel passed; Retrain lays the student's loss curve over
  the reference run's (two lines, one point per step); the buttons are disabled while busy.
- the demo (`explorer demo`: Voila serving notebooks/demo.ipynb, no Run All there): the page
  draws its widgets, Run on the dashboard trains (the step count rises, the loss curve is
  drawn), every figure is drawn and no button label is cut off.

Only these run here (one to two and a half minutes each); every notebook runs top to bottom
in tests/test_notebooks.py.

Screenshots, figures.json, the browser console and the server logs go to
tests/artifacts/browser/ (or $TEST_ARTIFACTS/browser/): look at them. Without /usr/bin/chromium,
the playwright package, voila (for the demo) or the notebook package (for Notebook 7), the tests
skip, except on CI (CI set), where they fail.
"""
import contextlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
from browser_helpers import (
    CHROMIUM,
    JupyterServer,
    VoilaServer,
    blank_figures,
    free_port,
    launch_chromium,
    open_notebook,
    output_containing,
    page_errors,
    page_problems,
    run_all_cells,
    shown_figures,
    wait_for_figures,
    wait_until_all_cells_ran,
    widgets_settled,
)
from notebook_helpers import NOTEBOOK_DIR, artifacts_dir, kernel_env, on_ci, time_limit_s

from explorer.course import handout

pytestmark = pytest.mark.slow

TOUR = NOTEBOOK_DIR / "00_tour.ipynb"
# dashboard 1, attention explorer 2, gradient flow 4, step-through 1, sampling 1
TOUR_FIGURES = 9


def _require(what, present, install):
    if present:
        return
    reason = f"the browser test needs {what} ({install})"
    if on_ci():
        pytest.fail(f"{reason}; on CI it must run (.ci/run installs Chromium and the test extra)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """One Chromium (a persistent context) for the module's tests."""
    _require(f"Chromium at {CHROMIUM}", Path(CHROMIUM).exists(), "Debian: apt-get install -y chromium")
    _require("the playwright package", importlib.util.find_spec("playwright"), "pip install playwright")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        context = launch_chromium(playwright, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield context
        finally:
            context.close()


# The server extension that serves plotly's widget code (explorer/viz/server.py), named on the
# command line: the test servers read no installed config (their JUPYTER_CONFIG_DIR is new).
PLOTLY_SERVED = "--ServerApp.jpserver_extensions=explorer.viz.server=True"
PLOTLY_NOT_SERVED = "--ServerApp.jpserver_extensions=explorer.viz.server=False"


@contextlib.contextmanager
def serving_notebooks(app, tmp_path_factory, prepare=None, log_name=None, plotly_served=True):
    """A JupyterServer (app "lab" or "notebook") over a copy of notebooks/, so nothing in the
    repository changes. prepare(folder): edits the copied notebooks/ folder before serving.
    plotly_served: with explorer's server extension (see PLOTLY_SERVED)."""
    home = tmp_path_factory.mktemp(app)
    served = home / "root" / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, served, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    if prepare is not None:
        prepare(served)
    log_path = artifacts_dir("browser") / f"{log_name or app}-server.log"
    args = [PLOTLY_SERVED if plotly_served else PLOTLY_NOT_SERVED]
    with JupyterServer(app, home / "root", home, kernel_env(), log_path=log_path, args=args) as server:
        yield server


@contextlib.contextmanager
def plotly_code_requests(chromium):
    """The responses the pages get for plotly's code from the server (explorer/viz/server.py's
    URL_PATH), as (url, status), for as long as the block runs."""
    seen = []

    def record(response):
        if "/explorer/plotly/" in response.url:
            seen.append((response.url, response.status))
    chromium.on("response", record)
    try:
        yield seen
    finally:
        chromium.remove_listener("response", record)


@contextlib.contextmanager
def notebook_run(chromium, server, notebook, figure_count, name):
    """Open `notebook` (a path in notebooks/), run all cells, check the basics with
    `figure_count` plotly figures expected; yields (page, artifacts folder)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    folder = artifacts_dir("browser") / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    page = chromium.new_page()
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"PAGE ERROR: {e}"))
    limit = time_limit_s(notebook)
    try:
        open_notebook(page, server, f"notebooks/{notebook.name}")
        run_all_cells(page)
        try:
            wait_until_all_cells_ran(page, limit)
            widgets_settled(page)
        except PlaywrightTimeout:
            pytest.fail(f"{notebook.name} did not finish in {name} within {limit} s; "
                        f"prompts: {_prompts(page)}\nserver log:\n{server.log_tail()}")
        figures = wait_for_figures(page)
        (folder / "figures.json").write_text(json.dumps(figures, indent=1))
        _screenshot_outputs(page, folder)
        check_basics(page, figures, figure_count, notebook.name)
        yield page, folder
    finally:
        _save_page_record(page, folder, console)
        page.close()


def check_basics(page, figures, figure_count, notebook_name):
    problems = page_problems(page)
    assert not problems["errors"], "error output in the notebook:\n" + "\n---\n".join(problems["errors"])
    assert not problems["widgetErrors"], f"widgets failed to display: {problems['widgetErrors']}"
    assert problems["loading"] == 0, f"{problems['loading']} widgets still say 'Loading widget...'"
    assert problems["emptyWidgets"] == 0, \
        f"{problems['emptyWidgets']} of {problems['widgetOutputs']} widget outputs are drawn empty"
    shown = shown_figures(figures)
    assert len(shown) >= figure_count, (f"expected {notebook_name}'s {figure_count} plotly figures, "
                                        f"found {len(shown)} shown ({len(figures)} in all)")
    blank = blank_figures(figures)
    assert not blank, f"plotly figures that draw nothing (no trace, no heatmap): {blank}"
    errors = page_errors(page, widgets_only=True)
    assert not errors, "uncaught errors in the widgets' code:\n" + "\n".join(errors)


def test_tour_in_jupyterlab(chromium, tmp_path_factory):
    """... with plotly's code from the server: one request for it, answered."""
    with serving_notebooks("lab", tmp_path_factory) as server, plotly_code_requests(chromium) as requests, \
            notebook_run(chromium, server, TOUR, TOUR_FIGURES, "jupyterlab") as (page, folder):
        assert [status for _, status in requests] == [200], \
            f"expected plotly's code from the server, once per page; the page got: {requests}"
        check_dashboard_pause_and_step(page, folder)
        check_attention_slider_redraws(page, folder)


# A notebook of two figures and nothing else, for the one path the course's notebooks never take
# in these tests: a server that does not serve plotly's code.
TWO_FIGURES = NOTEBOOK_DIR / "plotly_from_the_kernel.ipynb"
TWO_FIGURES_CELLS = [
    "import plotly.graph_objects as go\nfrom explorer.viz._figure import FigureWidget",
    'FigureWidget(go.Scatter(y=[1, 3, 2], name="first"), layout_title_text="first")',
    'FigureWidget(go.Heatmap(z=[[1, 2], [3, 4]]), layout_title_text="second")',
]


def _two_figures(folder):
    import nbformat
    tour = nbformat.read(TOUR, as_version=4)        # its kernel: no "Select Kernel" dialog
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in TWO_FIGURES_CELLS],
                                  metadata=tour.metadata)
    nbformat.write(nb, folder / TWO_FIGURES.name)


def test_without_the_server_extension_figures_get_plotly_from_the_kernel(chromium, tmp_path_factory):
    """The server extension disabled (`jupyter server extension disable explorer.viz.server`):
    the page fails to fetch plotly's code from the server, asks the kernel for it, and the
    figures still draw."""
    with serving_notebooks("lab", tmp_path_factory, prepare=_two_figures, log_name="lab-no-extension",
                           plotly_served=False) as server, plotly_code_requests(chromium) as requests, \
            notebook_run(chromium, server, TWO_FIGURES, 2, "jupyterlab-no-extension"):
        assert requests and all(status == 404 for _, status in requests), \
            f"the page should have tried the server first, and found nothing there: {requests}"


def test_tour_in_notebook7(chromium, tmp_path_factory):
    _require("the notebook package (Notebook 7)", importlib.util.find_spec("notebook"),
             'pip install -e ".[test]"')
    with serving_notebooks("notebook", tmp_path_factory) as server, \
            notebook_run(chromium, server, TOUR, TOUR_FIGURES, "notebook7"):
        pass   # the basics, checked by notebook_run


def _prompts(page):
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputArea-prompt",
                                     "ns => ns.map(n => n.textContent.trim())")


def _screenshot_outputs(page, folder):
    """One picture per cell output that holds a widget, plus the top of the notebook. The
    notebook scrolls inside its own panel, so a view taller than the window is pictured by
    making the window taller for it."""
    page.screenshot(path=str(folder / "00_top.png"))
    areas = page.locator(".jp-Cell-outputArea").filter(
        has=page.locator(".jp-OutputArea-output > .jupyter-widgets"))
    size = page.viewport_size
    try:
        for i in range(areas.count()):
            height = areas.nth(i).bounding_box()["height"]
            page.set_viewport_size({"width": size["width"],
                                    "height": int(min(4000, max(size["height"], height + 300)))})
            areas.nth(i).screenshot(path=str(folder / f"{i + 1:02d}_widget_output.png"))
    finally:
        page.set_viewport_size(size)


def _save_page_record(page, folder, console):
    try:
        console = console + [f"RECORDED IN PAGE: {e}" for e in page_errors(page)]
    except Exception:   # the page may be gone; the record still helps
        pass
    (folder / "console.log").write_text("\n".join(console) + "\n")
    try:
        page.screenshot(path=str(folder / "99_final.png"))
    except Exception as error:
        (folder / "99_final.txt").write_text(f"no final screenshot: {error}\n")


# ----------------------------------------------------------------------------- dashboard
STATUS_STEP_JS = """area => {
    for (const n of area.querySelectorAll('.widget-html-content')) {
        const found = /^\\s*step\\s+(\\d+)/.exec(n.textContent);
        if (found) return Number(found[1]);
    }
    return null;
}"""


def _dashboard_step(dashboard):
    """The step count in the dashboard's status line ("step 200 · loss ...")."""
    step = dashboard.evaluate(STATUS_STEP_JS)
    assert step is not None, f"no status line 'step N' in the dashboard: {dashboard.text_content()[:300]!r}"
    return step


def _button(area, label):
    return area.locator(".widget-button").filter(has_text=re.compile(rf"^\s*{label}\s*$")).first


def _wait_for_step(page, dashboard, predicate, what, timeout_s=60):
    """Poll the dashboard's step count until predicate(step) holds."""
    for _ in range(int(timeout_s / 0.25)):
        step = _dashboard_step(dashboard)
        if predicate(step):
            return step
        page.wait_for_timeout(250)
    pytest.fail(f"the dashboard's step count never {what} (last seen: {step})")


def _steady_step(page, dashboard, quiet_ms=1500, timeout_s=30):
    """The step count once it has not changed for quiet_ms."""
    for _ in range(int(timeout_s * 1000 / quiet_ms)):
        before = _dashboard_step(dashboard)
        page.wait_for_timeout(quiet_ms)
        if _dashboard_step(dashboard) == before:
            return before
    pytest.fail(f"the dashboard's step count kept changing for {timeout_s} s after Pause")


def check_dashboard_pause_and_step(page, folder):
    dashboard = output_containing(page, ".widget-button >> text=Pause")
    dashboard.scroll_into_view_if_needed()
    start = _dashboard_step(dashboard)
    _button(dashboard, "Run").click()
    _wait_for_step(page, dashboard, lambda s: s > start, f"rose above {start} after Run")
    _button(dashboard, "Pause").click()
    paused = _steady_step(page, dashboard)
    page.wait_for_timeout(2000)
    assert _dashboard_step(dashboard) == paused, "the step count moved while paused"
    dashboard.screenshot(path=str(folder / "dashboard_paused.png"))
    _button(dashboard, "Step").click()
    _wait_for_step(page, dashboard, lambda s: s != paused, f"moved from {paused} after Step")
    page.wait_for_timeout(2000)
    after = _dashboard_step(dashboard)
    assert after == paused + 1, f"Step went from step {paused} to {after}; expected {paused + 1}"
    dashboard.screenshot(path=str(folder / "dashboard_after_step.png"))


# ----------------------------------------------------------------------------- attention
HEATMAP_JS = """area => Array.from(area.querySelectorAll('.js-plotly-plot')).map(plot => ({
    title: (plot.querySelector('.gtitle') || {}).textContent || '',
    images: Array.from(plot.querySelectorAll('.heatmaplayer image'))
                 .map(i => i.getAttribute('href') || i.getAttribute('xlink:href') || ''),
}))"""


def check_attention_slider_redraws(page, folder):
    explorer = output_containing(page, ".widget-slider >> text=head")
    explorer.scroll_into_view_if_needed()
    before = explorer.evaluate(HEATMAP_JS)
    assert any(p["images"] for p in before), "the attention explorer shows no heatmap"
    slider = explorer.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text="head"))
    handle = slider.first.locator(".noUi-handle")
    handle.focus()
    handle.press("ArrowRight")
    for _ in range(80):
        after = explorer.evaluate(HEATMAP_JS)
        if after != before:
            break
        page.wait_for_timeout(250)
    changed = [a["title"] for a, b in zip(after, before) if a["images"] != b["images"]]
    assert changed, "moving the head slider did not change any heatmap"
    explorer.screenshot(path=str(folder / "attention_after_slider.png"))


# ----------------------------------------------------------------------------- kernel lab
KERNEL_LAB = NOTEBOOK_DIR / "05_kernel_lab.ipynb"
# the lab view's loss curves (its error map is hidden while the kernel passes)
KERNEL_LAB_FIGURES = 1


def test_kernel_lab_in_jupyterlab(chromium, tmp_path_factory):
    """05_kernel_lab with the solution in its exercise cell: Run All, then Check says the
    kernel passed and Retrain draws the student's loss curve over the reference's."""
    with serving_notebooks("lab", tmp_path_factory, prepare=_solved_kernel_lab,
                           log_name="lab-kernel-lab") as server, \
            notebook_run(chromium, server, KERNEL_LAB, KERNEL_LAB_FIGURES,
                         "jupyterlab-kernel-lab") as (page, folder):
        view = output_containing(page, ".widget-button >> text=Retrain")
        view.scroll_into_view_if_needed()
        view.screenshot(path=str(folder / "lab_view_after_run_all.png"))
        check_lab_check_passes(page, view, folder)
        check_lab_retrain_overlays(page, view, folder)


# The served copy trains the lab's runs for 80 steps, not the preset's 200: with Chromium
# redrawing on the same 2 cores, a 200-step Retrain took 30-40 s (about 11 s without a
# browser). 80 steps still draw two long falling curves.
KERNEL_LAB_STEPS = 80
KERNEL_LAB_LINE = 'lab = KernelLab("reverse-tiny", seed=0)\n'


def _solved_kernel_lab(folder):
    """Write the served copy of 05_kernel_lab as a student who solved it has it: the
    instructor's solutions in its exercise cells (explorer.course.handout), its runs shortened."""
    import nbformat
    solutions = handout.solutions_for(KERNEL_LAB)
    assert solutions, f"{KERNEL_LAB.name} has no solutions ({handout.solution_path(KERNEL_LAB)})"
    nb = handout.with_solutions(nbformat.read(KERNEL_LAB, as_version=4), solutions)
    cells = [c for c in nb.cells if c.cell_type == "code" and KERNEL_LAB_LINE in c.source]
    assert len(cells) == 1, (f"expected one cell of {KERNEL_LAB.name} with the line {KERNEL_LAB_LINE!r} "
                             f"(the browser test shortens that run), found {len(cells)}: update "
                             f"KERNEL_LAB_LINE")
    cells[0].source = cells[0].source.replace(
        KERNEL_LAB_LINE, f'lab = KernelLab("reverse-tiny", seed=0, steps={KERNEL_LAB_STEPS})\n')
    nbformat.write(nb, folder / KERNEL_LAB.name)


# Whether plotly drew trace i of `plot` as a line: plotly names each scatter trace's SVG group
# "trace<uid>" after the trace's uid.
LINE_DRAWN_JS = """((plot, i) => {
    const uid = plot.data[i] && plot.data[i].uid;
    const group = uid && plot.querySelector(`.scatterlayer .trace${CSS.escape(uid)}`);
    const path = group && group.querySelector('.js-line');
    return !!path && (path.getAttribute('d') || '').length > 10;
})"""


# Started on the lab view's output area before a button is pressed: every 50 ms it notes what
# the view shows (the status line, which buttons are disabled, how many points each loss curve
# has), keeping each state that differs from the one before, in window.__labStates. A busy
# period lasts seconds (a check ~5 s, a retrain ~10 s), so sampling cannot miss it.
LAB_RECORDER_JS = """area => {
    const button = label => Array.from(area.querySelectorAll('.widget-button'))
        .find(b => b.textContent.trim() === label);
    const buttons = ['Check', 'Retrain', 'Stop'].map(label => [label, button(label)]);
    const lossPlot = () => Array.from(area.querySelectorAll('.js-plotly-plot')).find(
        p => /^retraining/.test((p.querySelector('.gtitle') || {}).textContent || ''));
    const states = [];
    const sample = () => {
        const plot = lossPlot();
        const state = {
            status: area.querySelector('.widget-html-content').textContent.trim(),
            disabled: buttons.filter(([, b]) => b && b.disabled).map(([label]) => label),
            points: plot && plot.data ? plot.data.map(t => (t.x || []).length) : null,
        };
        const last = states[states.length - 1];
        if (!last || JSON.stringify({...last, t: 0}) !== JSON.stringify({...state, t: 0}))
            states.push({...state, t: Math.round(performance.now())});
    };
    clearInterval(window.__labSampler);
    window.__labStates = states;
    window.__labSampler = setInterval(sample, 50);
    sample();
    return buttons.filter(([, b]) => !b).map(([label]) => label);   // buttons not found
}"""

LAB_STATES_JS = "() => window.__labStates || []"


def _record_lab_view(view):
    missing = view.evaluate(LAB_RECORDER_JS)
    assert not missing, f"the lab view has no button(s) {missing}: {view.text_content()[:300]!r}"


def _wait_for_lab(page, done, what, timeout_s):
    """Poll the recorded states until done(states) holds; returns the states."""
    for _ in range(int(timeout_s / 0.25)):
        states = page.evaluate(LAB_STATES_JS)
        if states and done(states):
            return states
        page.wait_for_timeout(250)
    pytest.fail(f"the lab view never {what} within {timeout_s} s; what it showed, in order:\n"
                + "\n".join(json.dumps(s) for s in states[-30:]))


def _was_busy_then_idle(states, pressed):
    """The buttons did what the view promises: Check and Retrain disabled and Stop enabled at
    some moment after `pressed` was clicked, all back to idle (only Stop disabled) at the end."""
    busy = [s for s in states if {"Check", "Retrain"} <= set(s["disabled"]) and "Stop" not in s["disabled"]]
    assert busy, (f"after {pressed}, Check and Retrain were never disabled with Stop enabled; "
                  f"buttons disabled, in order: {[s['disabled'] for s in states]}")
    assert states[-1]["disabled"] == ["Stop"], \
        f"after {pressed} finished, the disabled buttons are {states[-1]['disabled']}; expected only Stop"


def check_lab_check_passes(page, view, folder):
    _record_lab_view(view)
    _button(view, "Check").click()
    states = _wait_for_lab(page, lambda s: s[-1]["status"].endswith("check passed")
                           and s[-1]["disabled"] == ["Stop"] and any("checking" in x["status"] for x in s),
                           "went from 'checking...' to 'check passed' after Check", timeout_s=90)
    _was_busy_then_idle(states, "Check")
    report = view.locator(".widget-html-content").nth(1).inner_text()
    assert re.search(r"matmul_forward: passed \d+ comparisons", report) and "✗" not in report, \
        f"the report after Check does not say the kernel passed:\n{report[:1500]}"
    # a kernel that passes has no error map to show
    error_maps = view.locator(".js-plotly-plot").filter(has=page.locator(".gtitle", has_text="differs"))
    assert error_maps.count() == 1 and not error_maps.first.is_visible(), \
        "the error map should be hidden while the kernel passes"
    view.screenshot(path=str(folder / "lab_view_after_check.png"))


def check_lab_retrain_overlays(page, view, folder):
    _record_lab_view(view)
    _button(view, "Retrain").click()
    states = _wait_for_lab(page, lambda s: any("retraining" in x["status"] for x in s)
                           and re.search(r"done after \d+ steps", s[-1]["status"])
                           and s[-1]["disabled"] == ["Stop"],
                           "went through 'retraining' to 'done after N steps' after Retrain",
                           timeout_s=120)
    (folder / "lab_states_retrain.json").write_text(json.dumps(states, indent=1))
    _was_busy_then_idle(states, "Retrain")
    steps = int(re.search(r"done after (\d+) steps", states[-1]["status"]).group(1))
    assert steps == KERNEL_LAB_STEPS, \
        f"the retrain ended after {steps} steps, not {KERNEL_LAB_STEPS}: {states[-1]['status']!r}"
    # the student's curve was cleared and grew again in the browser while it trained
    student = [s["points"][1] for s in states if s["points"] and len(s["points"]) > 1]
    assert student and min(student) < steps, \
        f"the browser never showed the student's curve growing (points seen: {student})"
    view.screenshot(path=str(folder / "lab_view_after_retrain.png"))
    traces = view.evaluate(LOSS_TRACES_JS)
    assert traces is not None, "no loss figure ('retraining ...') in the lab view"
    assert len(traces) == 2, f"the loss figure has {len(traces)} traces; expected the reference and yours"
    for trace in traces:
        assert trace["x"] == trace["y"] == trace["finiteY"] == steps, \
            f"loss curve {trace['name']!r} has {trace['x']} x, {trace['y']} y ({trace['finiteY']} " \
            f"finite) values; expected one per step ({steps})"
        assert trace["drawn"], f"loss curve {trace['name']!r} is in the figure's data but not drawn"
    assert any("reference" in t["name"] for t in traces) and any("your" in t["name"] for t in traces), \
        f"the loss curves are {[t['name'] for t in traces]}; expected the reference and yours"


# What the lab's loss figure holds (plot.data: what plotly was given) and draws.
LOSS_TRACES_JS = """area => {
    const plot = Array.from(area.querySelectorAll('.js-plotly-plot')).find(
        p => /^retraining/.test((p.querySelector('.gtitle') || {}).textContent || ''));
    return plot && plot.data ? plot.data.map((t, i) => ({
        name: t.name || '',
        x: (t.x || []).length,
        y: (t.y || []).length,
        finiteY: Array.from(t.y || []).filter(Number.isFinite).length,
        drawn: LINE_DRAWN(plot, i),
    })) : null;
}""".replace("LINE_DRAWN", LINE_DRAWN_JS)


# ----------------------------------------------------------------------------- the demo (Voila)
DEMO = NOTEBOOK_DIR / "demo.ipynb"
# the dashboard 1, the attention explorer 2
DEMO_FIGURES = 3


def test_demo_in_voila(chromium, tmp_path_factory):
    """`explorer demo`'s page (Voila, its own command line): every widget and figure drawn,
    and Run on the dashboard trains: the step count rises and the loss curve is drawn."""
    _require("the voila package", importlib.util.find_spec("voila"), 'pip install -e .')
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from explorer.demo import demo_command
    folder = artifacts_dir("browser") / "voila-demo"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    port = free_port()
    env = {**kernel_env(), "EXPLORER_DEMO_PRESET": "reverse-tiny"}   # as `explorer demo` sets it
    with VoilaServer(demo_command(port=port, open_browser=False), port,
                     tmp_path_factory.mktemp("voila"), env,
                     log_path=artifacts_dir("browser") / "voila-server.log") as server:
        page = chromium.new_page()
        console = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"PAGE ERROR: {e}"))
        try:
            dashboard = output_containing(page, ".widget-button >> text=Pause")
            try:
                # Voila runs the whole notebook before it answers: a cold Numba cache takes a while
                page.goto(server.url, timeout=time_limit_s(DEMO) * 1000)
                dashboard.wait_for(timeout=60_000)
                widgets_settled(page)
            except PlaywrightTimeout:
                pytest.fail(f"the demo page never showed the dashboard; server log:\n{server.log_tail()}")
            page.screenshot(path=str(folder / "00_top.png"))
            check_demo_run_trains(page, dashboard, folder)
            # the dashboard's curves are empty until it trains: every figure is checked after Run
            figures = wait_for_figures(page)
            (folder / "figures.json").write_text(json.dumps(figures, indent=1))
            page.screenshot(path=str(folder / "01_after_run.png"))
            check_basics(page, figures, DEMO_FIGURES, DEMO.name)
        finally:
            _save_page_record(page, folder, console)
            page.close()


# The dashboard's loss curve as plotly holds and draws it.
TRAIN_LOSS_JS = """area => {
    const plot = area.querySelector('.js-plotly-plot');
    const i = plot && plot.data ? plot.data.findIndex(t => t.name === 'train loss') : -1;
    return i < 0 ? null : {points: (plot.data[i].x || []).length, drawn: LINE_DRAWN(plot, i)};
}""".replace("LINE_DRAWN", LINE_DRAWN_JS)


# Buttons whose label does not fit (ipywidgets cuts it to "Pa..."): the demo's large type
# must still fit the dashboard's fixed-width buttons.
CUT_BUTTONS_JS = """() => Array.from(document.querySelectorAll('.widget-button'))
    .filter(b => b.scrollWidth > b.clientWidth + 1)
    .map(b => `${b.textContent.trim()} (${b.scrollWidth} px of label in ${b.clientWidth} px)`)"""


def check_demo_run_trains(page, dashboard, folder):
    dashboard.scroll_into_view_if_needed()
    cut = page.evaluate(CUT_BUTTONS_JS)
    assert not cut, f"buttons whose label is cut off: {cut}"
    start = _dashboard_step(dashboard)
    _button(dashboard, "Run").click()
    _wait_for_step(page, dashboard, lambda s: s >= start + 20, f"rose 20 steps above {start} after Run")
    for _ in range(80):   # the curve is redrawn a few times a second while it trains
        curve = dashboard.evaluate(TRAIN_LOSS_JS)
        if curve and curve["points"] >= 10 and curve["drawn"]:
            break
        page.wait_for_timeout(250)
    assert curve and curve["points"] >= 10 and curve["drawn"], \
        f"the dashboard trained but its loss curve is not drawn: {curve}"
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try:
        _button(dashboard, "Pause").click(timeout=5000)
    except PlaywrightTimeout:   # Pause is disabled once the run has reached its preset's steps
        assert "idle" in dashboard.text_content(), "Pause could not be clicked while training ran"
    _steady_step(page, dashboard)
    dashboard.screenshot(path=str(folder / "dashboard_after_run.png"))
