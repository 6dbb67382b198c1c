// The module anywidget loads for every figure (explorer/viz/_figure.py: FigureWidget).
// plotly's own initialize/render do the drawing; this file decides when plotly's code may run.
// The message types "explorer:redraw", "explorer:send-full-state" and "explorer:send-plotly-code"
// are REDRAW, SEND_STATE and SEND_CODE there; the server's path is URL_PATH of explorer/viz/server.py.

const PAGE = Symbol.for("transformer-explorer.plotly-page");
// anywidget has decided a model's fate 2 s after creating it; 0.5 s more for the page's delays
const SETTLED_MS = 2500;

// What this page knows, for all kernels it shows: per PlotlyCode widget (one per kernel), how many
// figures the kernel has counted, when that count last grew, and which have loaded their module;
// and plotly's module, imported once per plotly version.
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

// Fetch and compile a module ahead (modulepreload: no long task); evaluate it only when no figure
// is loading. Fails, before anything ran, when the module cannot be fetched.
async function preloadThenImport(url) {
  const link = Object.assign(document.createElement("link"), { rel: "modulepreload", href: url });
  const fetched = new Promise((resolve, reject) => {
    link.onload = resolve;
    link.onerror = () => reject(new Error(`could not fetch ${url}`));
  });
  document.head.append(link);
  try {
    await fetched;
    return await importWhenQuiet(url);
  } finally {
    link.remove();
  }
}

// Where the Jupyter server serves this plotly version's widget module (explorer/viz/server.py),
// or null on a page that is not the server's own (no jupyter-config-data: VS Code, a saved page).
function servedUrl(version) {
  const config = document.getElementById("jupyter-config-data");
  let baseUrl;
  try {
    baseUrl = config && JSON.parse(config.textContent).baseUrl;
  } catch {
    return null;
  }
  if (typeof baseUrl !== "string" || !version) return null;
  const path = `explorer/plotly/${encodeURIComponent(version)}/widget.js`;
  return new URL(baseUrl.replace(/\/?$/, "/") + path, document.baseURI).href;
}

// plotly's code from the kernel: PlotlyCode.source, which the kernel fills when asked. It answers
// after the cells queued before the request have run.
function sourceFromKernel(code) {
  return new Promise((resolve) => {
    const check = () => {
      if (!code.get("source")) return;
      code.off("change:source", check);
      resolve(code.get("source"));
    };
    code.on("change:source", check);
    check();
    if (!code.get("source")) code.send({ type: "explorer:send-plotly-code" });
  });
}

async function importFromKernel(code) {
  const url = moduleUrl(await sourceFromKernel(code));
  try {
    return await preloadThenImport(url);
  } finally {
    URL.revokeObjectURL(url);
  }
}

// plotly's widget module, imported once per page and plotly version: from the server if it
// serves it, else from the kernel (see explorer/viz/_figure.py).
function plotlyModule(code) {
  const modules = page().modules;
  const version = code.get("version");
  if (!modules.has(version)) {
    const url = servedUrl(version);
    const served = url ? preloadThenImport(url) : Promise.reject(new Error("no Jupyter server page"));
    modules.set(version, served.catch((error) => {
      console.debug("plotly figure: plotly's code from the kernel, not the server:", error);
      return importFromKernel(code);
    }));
  }
  return modules.get(version);
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
      module = await plotlyModule(await plotlyCode(model));
    } catch (error) {
      el.textContent = "This figure could not load plotly's code: " + error;
      throw error;
    }
    let undraw = drawWithPlotly(module, model, el);
    const redraw = (content) => {
      if (content?.type !== "explorer:redraw") return;
      undraw();
      undraw = drawWithPlotly(module, model, el);
    };
    model.on("msg:custom", redraw);
    try {
      model.send({ type: "explorer:send-full-state" });
    } catch (error) {   // no kernel (a saved page): the saved state is what there is
      console.debug("plotly figure: no kernel to ask for its current state", error);
    }
    return () => {
      model.off("msg:custom", redraw);
      undraw();
    };
  },
};
