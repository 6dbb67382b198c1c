"""FigureWidget: plotly's FigureWidget, with plotly's browser code loaded once per page.

    from ._figure import FigureWidget
    fig = FigureWidget(make_subplots(...), lock=view_lock)   # otherwise as go.FigureWidget
    fig.sync_state()        # when its view is displayed: the browser draws what it shows now
    sync_saved_state(fig)   # the same for any plotly FigureWidget (no lock taken)
    trace.z = for_browser(z, decimals=3)   # a map rounded to what the hover shows

Why: plotly (>= 6) ships its widget code, about 5 MB of JavaScript, as every FigureWidget's own
anywidget module, so the browser compiles one copy per figure. anywidget gives each new widget
model 2 s to load its module; a model that misses that deadline silently drops every message
that follows, and a FigureWidget's data and layout arrive in such messages (the message that
creates the model carries an empty figure). On a busy 2-core laptop, a cell that made several
figures at once (Run All, a cold Numba cache) left some of them as empty axes for good.

Here each figure's module is a few lines, ready at once, and plotly's code is imported once
per page. Where it comes from:
  * from the Jupyter server, at {base_url}explorer/plotly/<plotly version>/widget.js
    (explorer/viz/server.py, a server extension installed and enabled with the package), found
    through the page's `jupyter-config-data` (JupyterLab, Notebook 7). Nothing of it enters
    the notebook. It used to travel in the widget state of one PlotlyCode widget per kernel:
    an executed notebook (`jupyter nbconvert --execute`, which stores the widget state) then
    carried 5.1 MB, 5.08 MB of it plotly's code.
  * failing that (the extension disabled, a server with another plotly version, VS Code, Voila):
    from the kernel. The page sends PlotlyCode a message, and the kernel puts the code into
    PlotlyCode.source. It costs what the old way cost, in those frontends only: 5 MB sent, and
    stored in the notebook when it is saved with its widget state. And a kernel busy with queued
    cells (Run All) answers when they have run: its figures stay blank until then. Headless
    execution never asks, so a notebook executed without a page stays small.

That import is itself a risk: evaluating plotly's code is one uninterruptible task of the page
(0.3 s on an idle machine, 1.1-2.6 s measured with both cores of a 2-core machine busy). A figure
model created just before it cannot finish loading its own small module in time, misses the
deadline above and stays empty axes for good. So the import waits until no figure is loading: the
kernel counts every figure in PlotlyCode.figures *before* the figure's model is created (so the
page hears of a figure before it exists), each figure's module reports when it has loaded, and
plotly is imported when every counted figure has loaded, or 2.5 s after the count last grew (by
then anywidget has decided every such model: waiting longer could not save one).

A figure drawn after that wait asks Python for its full current state and draws it afresh:
plotly's browser view starts from the figure's last full state and applies only the edits it
receives while it exists, so edits made during the wait would otherwise be missing.
"""
import copy
import importlib.metadata
import math
import threading
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import traitlets

SEND_STATE, REDRAW = "explorer:send-full-state", "explorer:redraw"
SEND_CODE = "explorer:send-plotly-code"     # the page could not import plotly from the server

# The module anywidget loads for every figure (plotly's own initialize/render do the drawing).
LOADER_JS = (Path(__file__).parent / "figure_loader.js").read_text(encoding="utf-8")


def _plotly_widget_source():
    """plotly's own widget module (the `_esm` of go.FigureWidget: a file anywidget reads)."""
    return str(go.FigureWidget._esm)


class PlotlyCode(widgets.Widget):
    """Which plotly the kernel's figures need (the page imports it from the server), plotly's
    code itself once the page asks for it (see the module doc), and how many figures the
    kernel has made (the page holds plotly's import until every one of them has loaded).
    One per kernel for all its figures. A plain ipywidgets model: no module of its own to load,
    so nothing it receives is dropped."""
    version = traitlets.Unicode(importlib.metadata.version("plotly")).tag(sync=True)
    source = traitlets.Unicode("").tag(sync=True)
    figures = traitlets.Int(0).tag(sync=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.on_msg(self._on_browser_message)

    def _on_browser_message(self, _widget, content, _buffers):
        if isinstance(content, dict) and content.get("type") == SEND_CODE and not self.source:
            self.source = _plotly_widget_source()


_code = None   # this kernel's PlotlyCode (owned here; reset_plotly_code() drops it)


def plotly_code():
    """This kernel's PlotlyCode, made on first use (again after it was closed)."""
    global _code
    if _code is None or _code.comm is None:
        _code = PlotlyCode()
    return _code


def reset_plotly_code():
    """Close this kernel's PlotlyCode; the next figure makes a new one. For tests."""
    global _code
    if _code is not None:
        _code.close()
    _code = None


def sync_saved_state(fig):
    """Copy what `fig` (a plotly FigureWidget) shows now into its saved widget state.

    Why: updates made after a FigureWidget is displayed travel to the browser as edits, but the
    widget's own stored state (what a page reload, Voila or a saved notebook rebuilds the
    figure from) keeps the figure as it was first shown, e.g. an empty loss curve. plotly keeps
    that state in two private traits; assigning deep copies of the live data and layout to them
    updates it. This is the only place the package touches them. Returns True when it synced,
    False when this plotly has no such traits (nothing is changed then)."""
    if not (hasattr(fig, "_widget_data") and hasattr(fig, "_widget_layout")):
        return False
    # deep copies: the traits must not share lists/arrays that the next update mutates
    fig._widget_data = copy.deepcopy(fig._data)
    fig._widget_layout = copy.deepcopy(fig._layout)
    return True


def for_browser(z, decimals=None, digits=4):
    """z as float64 rounded to `decimals` places (default: `digits` significant digits of its
    largest value). Why: a FigureWidget sends arrays as JSON text, where float32 0.1 reads
    0.10000000149011612; rounded, a map's message is ~3x smaller and looks the same."""
    z = np.asarray(z, dtype=np.float64)
    if decimals is None:
        top = np.nanmax(np.abs(z)) if z.size and not np.isnan(z).all() else 0.0
        decimals = digits - 1 - (math.floor(math.log10(top)) if top > 0 and np.isfinite(top) else 0)
    return np.round(z, decimals)


class FigureWidget(go.FigureWidget):
    """go.FigureWidget whose browser side loads plotly once per page (see the module doc).

    lock: the lock its view holds while changing the figure from any thread; taken here while
    the figure's state is copied for the browser."""
    _esm = LOADER_JS
    # which PlotlyCode holds plotly's code, and this figure's number in its count
    _plotly_code = traitlets.Unicode().tag(sync=True)
    _figure_number = traitlets.Int(0).tag(sync=True)

    def __init__(self, *args, lock=None, **kwargs):
        # counted before the model exists (super().__init__ creates it): see the module doc
        code = plotly_code()
        code.figures += 1
        self._plotly_code, self._figure_number = code.model_id, code.figures
        super().__init__(*args, **kwargs)
        self._state_lock = lock if lock is not None else threading.RLock()
        self.on_msg(self._on_browser_message)

    def sync_state(self):
        """Make the figure's full state (what a newly drawn view starts from) what it shows."""
        with self._state_lock:
            sync_saved_state(self)

    def _on_browser_message(self, _widget, content, _buffers):
        if isinstance(content, dict) and content.get("type") == SEND_STATE:
            self.sync_state()
            self.send({"type": REDRAW})
