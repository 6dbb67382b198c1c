"""The tour in a real browser: JupyterLab and Notebook 7 in Debian's Chromium, driven by Playwright.

In each: open a copy of notebooks/00_tour.ipynb, Run > Run All Cells, wait until every cell
shows [n] and the kernel is idle, then check what a person would see: no error output, every
widget drawn (none "Error displaying widget", none still "Loading widget..."), every plotly
figure drawn (each is scrolled into view and given time to draw, then must show a trace or a
heatmap), and no uncaught error from the widgets' code. In JupyterLab also: the dashboard's
Pause stops the step counter and Step advances it by exactly one; moving the attention
explorer's head slider redraws a heatmap.

Only the tour runs here (about a minute per app); every notebook runs top to bottom in
tests/test_notebooks.py.

Screenshots, figures.json, the browser console and the server logs go to
tests/artifacts/browser/ (or $TEST_ARTIFACTS/browser/): look at them. Without /usr/bin/chromium,
the playwright package or (for Notebook 7) the notebook package, the tests skip, except on CI
(CI set), where they fail.
"""
import contextlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from browser_helpers import (CHROMIUM, JupyterServer, blank_figures, launch_chromium, open_notebook,
                             output_containing, page_errors, page_problems, run_all_cells,
                             wait_for_figures, wait_until_all_cells_ran, widgets_settled)
from notebook_helpers import NOTEBOOK_DIR, artifacts_dir, kernel_env, on_ci, time_limit_s

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


@contextlib.contextmanager
def serving_notebooks(app, tmp_path_factory):
    """A JupyterServer (app "lab" or "notebook") over a copy of notebooks/, so nothing in the
    repository changes."""
    home = tmp_path_factory.mktemp(app)
    shutil.copytree(NOTEBOOK_DIR, home / "root" / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    with JupyterServer(app, home / "root", home, kernel_env(),
                       log_path=artifacts_dir("browser") / f"{app}-server.log") as server:
        yield server


@contextlib.contextmanager
def tour_run(chromium, server, name):
    """Open the tour, run all cells, check the basics; yields (page, artifacts folder)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    folder = artifacts_dir("browser") / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    page = chromium.new_page()
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"PAGE ERROR: {e}"))
    try:
        open_notebook(page, server, f"notebooks/{TOUR.name}")
        run_all_cells(page)
        try:
            wait_until_all_cells_ran(page, time_limit_s(TOUR))
            widgets_settled(page)
        except PlaywrightTimeout:
            pytest.fail(f"{TOUR.name} did not finish in {name} within {time_limit_s(TOUR)} s; "
                        f"prompts: {_prompts(page)}\nserver log:\n{server.log_tail()}")
        figures = wait_for_figures(page)
        (folder / "figures.json").write_text(json.dumps(figures, indent=1))
        _screenshot_outputs(page, folder)
        check_basics(page, figures)
        yield page, folder
    finally:
        _save_page_record(page, folder, console)
        page.close()


def check_basics(page, figures):
    problems = page_problems(page)
    assert not problems["errors"], "error output in the notebook:\n" + "\n---\n".join(problems["errors"])
    assert not problems["widgetErrors"], f"widgets failed to display: {problems['widgetErrors']}"
    assert problems["loading"] == 0, f"{problems['loading']} widgets still say 'Loading widget...'"
    assert problems["emptyWidgets"] == 0, \
        f"{problems['emptyWidgets']} of {problems['widgetOutputs']} widget outputs are drawn empty"
    assert len(figures) >= TOUR_FIGURES, \
        f"expected the tour's {TOUR_FIGURES} plotly figures, found {len(figures)}"
    blank = blank_figures(figures)
    assert not blank, f"plotly figures that draw nothing (no trace, no heatmap): {blank}"
    errors = page_errors(page, widgets_only=True)
    assert not errors, "uncaught errors in the widgets' code:\n" + "\n".join(errors)


def test_tour_in_jupyterlab(chromium, tmp_path_factory):
    with serving_notebooks("lab", tmp_path_factory) as server, \
            tour_run(chromium, server, "jupyterlab") as (page, folder):
        check_dashboard_pause_and_step(page, folder)
        check_attention_slider_redraws(page, folder)


def test_tour_in_notebook7(chromium, tmp_path_factory):
    _require("the notebook package (Notebook 7)", importlib.util.find_spec("notebook"),
             'pip install -e ".[test]"')
    with serving_notebooks("notebook", tmp_path_factory) as server, \
            tour_run(chromium, server, "notebook7"):
        pass   # the basics, checked by tour_run


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
