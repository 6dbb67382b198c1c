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

Here each figure's module is a few lines, ready at once. plotly's code travels once per kernel,
in one PlotlyCode widget that every figure names, and is imported once per page.

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
import threading

import ipywidgets as widgets
import plotly.graph_objects as go
import traitlets

from ._plotly import sync_saved_state

SEND_STATE, REDRAW = "explorer:send-full-state", "explorer:redraw"

# The module anywidget loads for every figure (plotly's own initialize/render do the drawing).
LOADER_JS = """
const PAGE = Symbol.for("transformer-explorer.plotly-page");
// anywidget has decided a model's fate 2 s after creating it; 0.5 s more for the page's delays
const SETTLED_MS = 2500;

// What this page knows, for all kernels it shows: per PlotlyCode widget (one per kernel), how many
// figures the kernel has counted, when that count last grew, and which have loaded their module;
// and plotly's module, imported once per source.
function page() {
  return (globalThis[PAGE] ??= { kernels: new Map(), modules: new Map(), changed: new EventTarget(),
                                 msUntilQuiet });
}

function kernel(codeId) {
  const kernels = page().kernels;
  if (!kernels.has(codeId)) kernels.set(codeId, { counted: 0, countedAt: performance.now(), loaded: new Set() });
  return kernels.get(codeId);
}

function changed() {
  page().changed.dispatchEvent(new Event("change"));
}

// Follow a kernel's PlotlyCode.figures count (it grows before each new figure's model exists).
function follow(codeId, code) {
  const state = kernel(codeId);
  if (state.followed) return;
  state.followed = true;
  const update = () => {
    state.counted = code.get("figures");
    state.countedAt = performance.now();
    changed();
  };
  code.on("change:figures", update);
  update();
}

function plotlyCode(model) {
  const codeId = model.get("_plotly_code");
  return model.widget_manager.get_model(codeId).then((code) => {
    follow(codeId, code);
    return code;
  });
}

// How long until no counted figure can still be loading: 0 once each has loaded, or has had
// SETTLED_MS since the count last grew (anywidget has decided it, whether it loaded or not).
function msUntilQuiet() {
  const now = performance.now();
  let wait = 0;
  for (const state of page().kernels.values()) {
    if (state.loaded.size < state.counted) wait = Math.max(wait, state.countedAt + SETTLED_MS - now);
  }
  return wait;
}

function untilQuiet() {
  return new Promise((resolve) => {
    const check = () => {
      const wait = msUntilQuiet();
      if (wait > 0) return void (timer = setTimeout(check, wait));
      page().changed.removeEventListener("change", onChange);
      resolve();
    };
    const onChange = () => { clearTimeout(timer); check(); };
    let timer;
    page().changed.addEventListener("change", onChange);
    check();
  });
}

function moduleUrl(source) {
  return URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
}

// Evaluated in the same task as plotly's module, just before it: a figure counted since
// untilQuiet() resolved (import() takes a few tasks) stops the import before plotly runs.
const NOT_QUIET = "explorer: a figure is still loading";
const GATE_JS = `if (globalThis[Symbol.for("transformer-explorer.plotly-page")].msUntilQuiet() > 0)
  throw new Error("${NOT_QUIET}");`;

async function importWhenQuiet(url) {
  for (;;) {
    await untilQuiet();
    const gate = moduleUrl(GATE_JS);
    const entry = moduleUrl(`import "${gate}";\nexport * from "${url}";\nexport { default } from "${url}";`);
    try {
      return await import(entry);
    } catch (error) {
      if (!String(error?.message).includes(NOT_QUIET)) throw error;
    } finally {
      URL.revokeObjectURL(gate);
      URL.revokeObjectURL(entry);
    }
  }
}

// plotly's widget module, imported once per page and plotly version (keyed by its source).
// Fetched and compiled ahead (modulepreload: no long task); evaluated only when no figure is loading.
function plotlyModule(source) {
  const modules = page().modules;
  if (!modules.has(source)) {
    const url = moduleUrl(source);
    const link = Object.assign(document.createElement("link"), { rel: "modulepreload", href: url });
    const fetched = new Promise((resolve) => {
      link.onload = link.onerror = resolve;   // on error, import() below reports it
    });
    document.head.append(link);
    modules.set(source, fetched.then(() => importWhenQuiet(url)).finally(() => {
      link.remove();
      URL.revokeObjectURL(url);
    }));
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
  // Runs as this figure's model becomes ready: from now on plotly's import cannot hurt it.
  initialize({ model }) {
    kernel(model.get("_plotly_code")).loaded.add(model.get("_figure_number"));
    changed();
    plotlyCode(model).catch(() => {});   // follow the count early; render reports a failure
  },
  async render({ model, el }) {
    let module;
    try {
      module = await plotlyModule((await plotlyCode(model)).get("source"));
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


class PlotlyCode(widgets.Widget):
    """plotly's widget code, once per kernel for all its figures, and how many figures the
    kernel has made (the page holds plotly's import until every one of them has loaded).
    A plain ipywidgets model: no module of its own to load, so nothing it receives is dropped."""
    source = traitlets.Unicode(_plotly_widget_source()).tag(sync=True)
    figures = traitlets.Int(0).tag(sync=True)


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
