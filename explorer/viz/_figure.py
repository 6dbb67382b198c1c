"""FigureWidget: plotly's FigureWidget, with plotly's browser code loaded once per page.

    from ._figure import FigureWidget
    fig = FigureWidget(make_subplots(...), lock=view_lock)   # otherwise as go.FigureWidget
    fig.sync_state()        # when its view is displayed: the browser draws what it shows now

Why: plotly (>= 6) ships its widget code, about 5 MB of JavaScript, as every FigureWidget's own
anywidget module, so the browser compiles one copy per figure. anywidget gives each new widget
model 2 s to load its module; a model that misses that deadline silently drops every message
that follows, and a FigureWidget's data and layout arrive in such messages (the message that
creates the model carries an empty figure). On a busy 2-core laptop, a cell that made several
figures at once (Run All, a cold Numba cache) left some of them as empty axes for good.

Here each figure's module is a few lines, ready at once; plotly's code travels as a string
trait that the first figure drawn on the page imports, and later figures reuse that import.
A figure drawn after that wait asks Python for its full current state and draws it afresh:
plotly's browser view starts from the figure's last full state and applies only the edits it
receives while it exists, so edits made during the wait would otherwise be missing.
"""
import threading

import plotly.graph_objects as go
import traitlets

from ._plotly import sync_saved_state

SEND_STATE, REDRAW = "explorer:send-full-state", "explorer:redraw"

# The module anywidget loads for every figure (plotly's own initialize/render do the drawing).
LOADER_JS = """
const MODULES = Symbol.for("transformer-explorer.plotly-widget-modules");

// plotly's widget module, imported once per page and plotly version (keyed by its source)
function plotlyModule(source) {
  const modules = (globalThis[MODULES] ??= new Map());
  if (!modules.has(source)) {
    const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
    modules.set(source, import(url).finally(() => URL.revokeObjectURL(url)));
  }
  return modules.get(source);
}

// Draw the model's last full state with plotly. The returned function undoes it, including the
// listeners plotly adds to the model (its own cleanup leaves them: a redraw would double them).
function drawWithPlotly(module, model, el) {
  const listeners = [];
  const tracked = {
    get: (name) => model.get(name),
    set: (name, value) => model.set(name, value),
    save_changes: () => model.save_changes(),
    send: (...args) => model.send(...args),
    on: (name, callback) => { listeners.push([name, callback]); model.on(name, callback); },
    off: (name, callback) => model.off(name, callback),
  };
  const widget = typeof module.default === "function" ? module.default() : module.default;
  widget.initialize?.({ model: tracked });
  const cleanup = widget.render({ model: tracked, el });
  return () => {
    if (typeof cleanup === "function") cleanup();
    for (const [name, callback] of listeners) model.off(name, callback);
  };
}

export default {
  async render({ model, el }) {
    let module;
    try {
      module = await plotlyModule(model.get("_plotly_esm"));
    } catch (error) {
      el.textContent = "This figure could not load plotly's code: " + error;
      throw error;
    }
    let undraw = drawWithPlotly(module, model, el);
    const redraw = (content) => {
      if (content?.type !== "%(REDRAW)s") return;
      undraw();
      undraw = drawWithPlotly(module, model, el);
    };
    model.on("msg:custom", redraw);
    try {
      model.send({ type: "%(SEND_STATE)s" });
    } catch (error) {   // no kernel (a saved page): the saved state is what there is
      console.debug("plotly figure: no kernel to ask for its current state", error);
    }
    return () => {
      model.off("msg:custom", redraw);
      undraw();
    };
  },
};
""" % {"REDRAW": REDRAW, "SEND_STATE": SEND_STATE}


def _plotly_widget_source():
    """plotly's own widget module (the `_esm` of go.FigureWidget: a file anywidget reads)."""
    return str(go.FigureWidget._esm)


class FigureWidget(go.FigureWidget):
    """go.FigureWidget whose browser side loads plotly once per page (see the module doc).

    lock: the lock its view holds while changing the figure from any thread; taken here while
    the figure's state is copied for the browser."""
    _esm = LOADER_JS
    _plotly_esm = traitlets.Unicode(_plotly_widget_source()).tag(sync=True)

    def __init__(self, *args, lock=None, **kwargs):
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
