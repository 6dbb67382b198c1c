"""A saved notebook read where widgets do not run (GitHub, nbviewer without JavaScript, VS Code
without a widget renderer, nbconvert to text) shows each view as a readable message or a static
rendering: never an empty cell, never a widget's repr.

The tour runs top to bottom with nbclient and is saved with its widget state, as JupyterLab
saves it; the saved file is read back, and every widget output in it must carry
  * text/plain a person can read: what the view is and how to see it live (not ipywidgets'
    "VBox(children=(..." nor plotly's "FigureWidget({...");
  * text/html with visible text in it;
  * a widget model that the saved widget state holds, and for a plotly figure its traces (a
    renderer with widgets draws the figure from that state, not from the live kernel).
"""
import html
import re

import pytest
from notebook_helpers import (
    MAX_WIDGET_STATE_BYTES,
    NOTEBOOK_DIR,
    WIDGET_STATE,
    execute_notebook,
    time_limit_s,
    widget_state_bytes,
)

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow

TOUR = NOTEBOOK_DIR / "00_tour.ipynb"
TOUR_VIEWS = 6   # dashboard, attention, gradient flow, step-through, tokens, sampling
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# a repr, not a sentence: "VBox(children=(...", "FigureWidget({...", "<x.Y object at 0x...>"
REPR = re.compile(r"^\s*(\w+\(|<[\w.]+ object at 0x)")


@pytest.fixture(scope="module")
def saved_tour(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved-tour")
    nb = nbformat.read(TOUR, as_version=4)
    execute_notebook(nb, TOUR.name, folder, time_limit_s(TOUR), widget_state=True)
    return nbformat.read(folder / TOUR.name, as_version=4)


def _widget_outputs(nb):
    """(where, output data) for every output that shows a widget."""
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if WIDGET_VIEW in out.get("data", {}):
                yield f"cell {index} ({cell.source.strip().splitlines()[-1]!r})", out.data


def _visible_text(fragment):
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def test_every_view_has_a_readable_fallback(saved_tour):
    outputs = list(_widget_outputs(saved_tour))
    assert len(outputs) >= TOUR_VIEWS, f"expected the tour's {TOUR_VIEWS} views, found {len(outputs)}"
    problems = []
    for where, data in outputs:
        text = data.get("text/plain", "")
        if not text.strip() or REPR.match(text):
            problems.append(f"{where}: text/plain is not for people: {text[:120]!r}")
        elif "live" not in text.lower():
            problems.append(f"{where}: text/plain does not say how to see it live: {text[:200]!r}")
        shown = _visible_text(data.get("text/html", ""))
        if len(shown) < 20:
            problems.append(f"{where}: text/html shows next to nothing: {shown!r}")
    assert not problems, "\n".join(problems)


def test_saved_widget_state_draws_every_view(saved_tour):
    state = saved_tour.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    assert state, "the saved notebook has no widget state (metadata.widgets)"
    missing = [where for where, data in _widget_outputs(saved_tour)
               if data[WIDGET_VIEW]["model_id"] not in state]
    assert not missing, f"widget outputs whose model the saved state lacks: {missing}"
    figures = {model_id: s["state"] for model_id, s in state.items() if "_widget_data" in s["state"]}
    assert len(figures) >= 9, f"expected the tour's 9 plotly figures in the saved state, found {len(figures)}"
    empty = [f"{model_id} ({((s.get('_widget_layout') or {}).get('title') or {}).get('text', 'untitled')})"
             for model_id, s in figures.items() if not s["_widget_data"]]
    assert not empty, f"plotly figures saved without any trace (they would show empty axes): {empty}"


# The state nbclient stores (what `jupyter nbconvert --to notebook --execute` does by default)
# must stay small: plotly's widget code (5 MB) is the server's to hand out (explorer/viz/server.py),
# and a kernel sends it only when a page asks, which headless execution never does. Measured
# before that: 5.1 MB of state in the tour, 5.08 MB of it plotly's code. Every other notebook
# is held to the same bound in test_notebooks.py.
def test_saved_widget_state_is_small(saved_tour):
    size, biggest = widget_state_bytes(saved_tour)
    assert 0 < size <= MAX_WIDGET_STATE_BYTES, \
        f"the tour's saved widget state weighs {size:,} bytes; its biggest models: {biggest}"


# --------------------------------------------------------------------- headless, then HTML
# Run headless without widget state (`jupyter nbconvert --execute --to html
# --ExecutePreprocessor.store_widget_state=False`, and what nbgrader's autograde does with the
# course's nbgrader_config.py), a notebook stays small, and its HTML export shows each view's
# static copy: with no state for a widget, nbconvert renders the output's next richest type.
STATIC_ELEMENT = re.compile(r"<(table|svg|img)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def headless_tour(tmp_path_factory):
    folder = tmp_path_factory.mktemp("headless-tour")
    nb = nbformat.read(TOUR, as_version=4)
    execute_notebook(nb, TOUR.name, folder, time_limit_s(TOUR), widget_state=False)
    nbformat.write(nb, folder / TOUR.name)      # as the executed notebook is saved
    return folder / TOUR.name


def test_headless_tour_is_small_and_its_html_shows_the_static_copies_offline(headless_tour, tmp_path):
    from browser_helpers import read_offline
    from nbconvert import HTMLExporter
    sync_api = pytest.importorskip("playwright.sync_api")
    nb = nbformat.read(headless_tour, as_version=4)
    assert "widgets" not in nb.metadata
    assert headless_tour.stat().st_size < 1_000_000, f"{headless_tour.stat().st_size:,} bytes"
    outputs = list(_widget_outputs(nb))
    assert len(outputs) >= TOUR_VIEWS
    page, _ = HTMLExporter().from_notebook_node(nb)
    saved = tmp_path / "tour.html"
    saved.write_text(page, encoding="utf-8")
    with sync_api.sync_playwright() as p:
        shown, aborted = read_offline(p, saved, tmp_path / "chromium")
    live = [s["text"] for s in shown if s["widget"]]
    assert not live, f"outputs left to live widgets (blank offline): {live}"
    drawn = sum(s["tables"] + s["images"] + s["svgs"] for s in shown)
    expected = sum(bool(STATIC_ELEMENT.search(data["text/html"])) for _, data in outputs)
    assert expected >= 4 and drawn >= expected, (drawn, expected, aborted)
    page_text = "".join("".join(s["text"].split()) for s in shown)      # spacing aside
    for where, data in outputs:
        first_words = "".join(_visible_text(data["text/html"]).split()[:6])
        assert first_words in page_text, f"{where}: {first_words!r} not shown"
