"""Drive JupyterLab or Notebook 7 (or a Voila page) in Debian's Chromium through Playwright
(Python): start a private server, open a notebook, Run All, wait, and read what a person would see.

Everything here waits on what the page shows (a prompt number, a status text), never on a
fixed sleep, so a slow machine makes the test slower, not flaky.
"""
import json
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

# A fresh JupyterLab (or Notebook 7, built from the same parts) says nothing unprompted (no
# news, no update check) and never writes the notebook back to disk: the test runs copies, but
# autosave would still be noise.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """A JupyterLab (app="lab") or Notebook 7 (app="notebook") server on 127.0.0.1 with its own
    config, runtime, data and settings folders under `home`, serving `root`; `args`: more
    command-line options. Use as a context manager: the server (and its kernels) always stop
    on exit."""

    # app -> (the Python module that starts it, where it opens a notebook)
    APPS = {"lab": ("jupyterlab", "lab/tree/{}"), "notebook": ("notebook", "notebooks/{}")}

    def __init__(self, app: str, root: Path, home: Path, env: dict, log_path: Path, args=()):
        if app not in self.APPS:
            raise ValueError(f"app must be one of {sorted(self.APPS)}, got {app!r}")
        self.app = app
        self.root, self.home, self.env, self.log_path = Path(root), Path(home), dict(env), log_path
        self.args = list(args)
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.process = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, path):
        return f"{self.base}/{path}?token={self.token}"

    def notebook_url(self, relative_path):
        """Where this app opens the notebook at `relative_path` (relative to root)."""
        return self.url(self.APPS[self.app][1].format(relative_path))

    def __enter__(self):
        self._write_settings()
        folders = {name: self.home / name for name in ("config", "runtime", "data", "settings",
                                                       "workspaces", "ipython")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        self.env.update(JUPYTER_CONFIG_DIR=str(folders["config"]),
                        JUPYTER_RUNTIME_DIR=str(folders["runtime"]),
                        JUPYTER_DATA_DIR=str(folders["data"]),
                        JUPYTERLAB_SETTINGS_DIR=str(folders["settings"]),
                        JUPYTERLAB_WORKSPACES_DIR=str(folders["workspaces"]),
                        IPYTHONDIR=str(folders["ipython"]))
        command = [sys.executable, "-m", self.APPS[self.app][0], "--no-browser", "--allow-root",
                   "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                   "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={self.root}", "--ServerApp.terminals_enabled=False", *self.args]
        self._log = open(self.log_path, "w")
        # Its own process group, so stopping it also stops the kernels it started.
        self.process = subprocess.Popen(command, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_until_ready(timeout=90)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _write_settings(self):
        for relative, values in LAB_SETTINGS.items():
            path = self.home / "settings" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))

    def _wait_until_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} server exited with code {self.process.returncode} "
                                   f"before it was ready:\n{self.log_tail()}")
            try:
                self.api("status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        raise TimeoutError(f"{self.app} server did not answer /api/status within {timeout} s:\n"
                           f"{self.log_tail()}")

    def api(self, path, method="GET"):
        request = urllib.request.Request(self.url(f"api/{path}"), method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, chars=4000):
        return _log_tail(self.log_path, chars)

    def __exit__(self, *exc):
        if self.process is None:
            return
        try:        # shut kernels down politely first; the process group is the backstop
            for kernel in self.api("kernels"):
                self.api(f"kernels/{kernel['id']}", method="DELETE")
        except Exception:
            pass
        _stop_server(self.process, self._log)
        self.process = None


class VoilaServer:
    """Voila serving one notebook as a page, started with `command` (a list, e.g. from
    explorer.demo.demo_command with open_browser=False) on `port`, with its own config, runtime
    and data folders under `home`. Voila has no /api/status: ready when the port answers.
    Use as a context manager: the server and its kernel always stop on exit."""

    def __init__(self, command, port, home: Path, env: dict, log_path: Path):
        self.command, self.port, self.home, self.env, self.log_path = (
            list(command), port, Path(home), dict(env), log_path)
        self.process = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self):
        for name in ("config", "runtime", "data"):
            (self.home / name).mkdir(parents=True, exist_ok=True)
        self.env.update(JUPYTER_CONFIG_DIR=str(self.home / "config"),
                        JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
                        JUPYTER_DATA_DIR=str(self.home / "data"))
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_for_port(timeout=90)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_for_port(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"voila exited with code {self.process.returncode} before it "
                                   f"was ready:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"voila did not open port {self.port} within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars=4000):
        return _log_tail(self.log_path, chars)

    def __exit__(self, *exc):
        if self.process is None:
            return
        _stop_server(self.process, self._log)    # Voila shuts its kernels down on SIGTERM
        self.process = None


def _stop_server(process, log):
    """SIGTERM, then SIGKILL if it has not ended in 20 s; then whatever is left in its process
    group; then close its log."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    _kill_group(process.pid)
    log.close()


def _log_tail(path, chars):
    """The end of a server's log, for error messages."""
    try:
        return Path(path).read_text()[-chars:]
    except OSError:
        return "(no server log)"


def _kill_group(pgid):
    """Stop anything left in the server's own process group (a kernel it failed to stop)."""
    import os
    import signal
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# Installed in every page before it loads. It keeps the page's uncaught errors and unhandled
# promise rejections (JupyterLab swallows errors raised while it handles a kernel message, so the
# console may not show them), and counts per figure how often plotly's widget drew it.
# It also makes the page stricter than a real browser: anywidget gives each new widget model 2 s
# to load its module, and a model that misses it silently drops all its later messages (plotly
# figures then stay empty axes: see explorer/viz/_figure.py). Halving that deadline makes a figure
# that only works when it wins that race fail here every time, not once in a while.
PAGE_RECORDER_JS = """
window.__explorerErrors = [];
window.addEventListener('error', event => window.__explorerErrors.push('error: ' + event.message));
window.addEventListener('unhandledrejection', event => window.__explorerErrors.push(
    'unhandled rejection: ' + String(event.reason && (event.reason.stack || event.reason))));
document.addEventListener('plotlywidget-after-render', event => {
    const plot = event.detail.element;
    plot.dataset.explorerDrawn = Number(plot.dataset.explorerDrawn || 0) + 1;
});
const timeout = AbortSignal.timeout.bind(AbortSignal);
AbortSignal.timeout = ms => timeout(ms === 2000 ? 1000 : ms);
"""


def launch_chromium(playwright, profile_dir):
    context = playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
        viewport={"width": 1400, "height": 1000})
    context.add_init_script(PAGE_RECORDER_JS)
    return context


# Errors from the widgets' code: ipywidgets, anywidget, and plotly (anywidget runs a widget's
# module from a blob: URL). The apps' own start-up is not ours to test (Notebook 7.6 throws
# "Cannot read properties of undefined (reading 'schema')" while it loads keyboard shortcuts).
WIDGET_CODE = re.compile(r"anywidget|plotly|jupyter-widgets|blob:", re.IGNORECASE)


def page_errors(page, widgets_only=False):
    """Uncaught errors and unhandled promise rejections the page has had (PAGE_RECORDER_JS);
    widgets_only: those raised in or about widget code (WIDGET_CODE)."""
    errors = page.evaluate("() => window.__explorerErrors || []")
    return [e for e in errors if WIDGET_CODE.search(e)] if widgets_only else errors


# ----------------------------------------------------------------------------- notebook page
KERNEL_READY_JS = """() => {
    const name = document.querySelector('.jp-NotebookPanel .jp-Toolbar-kernelName');
    const state = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
    return !!name && !!state && name.textContent.trim() !== '' &&
           !/no kernel/i.test(name.textContent) && state.dataset.status === 'idle';
}"""

ALL_CELLS_RAN_JS = """() => {
    const prompts = Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'));
    const state = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
    return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:?$/.test(p.textContent.trim())) &&
           !!state && state.dataset.status === 'idle';
}"""


def open_notebook(page, server, relative_path, timeout_s=90):
    """Open a notebook and wait until its kernel has started and is idle. (For about a second
    after opening, the indicator says idle while there is no kernel yet: Run All then would
    open a "Select Kernel" dialog; hence the check of the kernel's name too, held twice.)"""
    page.goto(server.notebook_url(relative_path))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_s * 1000)
    for _ in range(2):
        page.wait_for_function(KERNEL_READY_JS, timeout=timeout_s * 1000, polling=250)
        page.wait_for_timeout(500)


def run_all_cells(page):
    """Run > Run All Cells, through the menu as a person would."""
    page.locator(".lm-MenuBar-item").filter(has_text=re.compile(r"^\s*Run\s*$")).click()
    page.locator(".lm-Menu-item .lm-Menu-itemLabel").filter(
        has_text=re.compile(r"^\s*Run All Cells\s*$")).click()


def wait_until_all_cells_ran(page, timeout_s):
    """Every code cell shows [n] and the kernel is idle (twice, to let a queued cell start)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(2):
        left_ms = max(1000, (deadline - time.monotonic()) * 1000)
        page.wait_for_function(ALL_CELLS_RAN_JS, timeout=left_ms, polling=250)
        page.wait_for_timeout(500)


PROBLEMS_JS = """() => {
    const outputs = Array.from(document.querySelectorAll('.jp-OutputArea-output'));
    const text = n => n.innerText || n.textContent || '';
    // a drawn widget: the output holds the widget's own node (class jupyter-widgets)
    const widgets = outputs.filter(n => n.querySelector(':scope > .jupyter-widgets'));
    // a widget that only carries CSS (e.g. explorer.viz.style.projector) is empty by design
    const onlyStyle = n => !!n.querySelector('style') && (n.innerText || '').trim() === '';
    return {
        errors: outputs.filter(n => n.dataset.mimeType === 'application/vnd.jupyter.stderr' &&
                                    /Traceback|Error\\b/.test(text(n))).map(n => text(n).slice(-1500)),
        widgetErrors: outputs.filter(n => /Error displaying widget/.test(text(n))).map(n => text(n).slice(0, 300)),
        loading: outputs.filter(n => /Loading widget\\.\\.\\./.test(text(n))).length,
        widgetOutputs: widgets.length,
        emptyWidgets: widgets.filter(n => n.getBoundingClientRect().height < 5 && !onlyStyle(n)).length,
        plotly: document.querySelectorAll('.jp-OutputArea .js-plotly-plot').length,
    };
}"""


def page_problems(page):
    """What is on the page: error outputs (tracebacks), widgets that failed or are still
    loading, widget outputs with no height, and how many plotly figures were drawn."""
    return page.evaluate(PROBLEMS_JS)


def widgets_settled(page, timeout_s=60):
    """Wait until no widget says "Loading widget..." (models arrive after the cell finished)."""
    page.wait_for_function(
        "() => !Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
        ".some(n => /Loading widget\\.\\.\\./.test(n.textContent))", timeout=timeout_s * 1000, polling=250)


def output_containing(page, selector_or_text):
    """The first cell output area holding `selector_or_text` (a CSS selector when it starts with
    '.', else visible text)."""
    outputs = page.locator(".jp-Cell-outputArea")
    if selector_or_text.startswith("."):
        return outputs.filter(has=page.locator(selector_or_text)).first
    return outputs.filter(has_text=selector_or_text).first


# ----------------------------------------------------------------------------- plotly figures
FIGURES_JS = """() => Array.from(document.querySelectorAll('.jp-OutputArea .js-plotly-plot')).map(plot => ({
    title: (plot.querySelector('.gtitle') || {}).textContent || '',
    drawn: plot.querySelectorAll('.trace, .heatmaplayer image').length,
    // what plotly was given: tells "no data reached the browser" from "failed to draw it"
    traces: plot.data ? plot.data.length : null,
    timesDrawn: Number(plot.dataset.explorerDrawn || 0),   // see PAGE_RECORDER_JS
    top: Math.round(plot.getBoundingClientRect().top),
    // false inside a container with display: none (e.g. a view's panel that is closed)
    shown: plot.getClientRects().length > 0,
}))"""

FIGURE_DRAWN_JS = "plot => plot.querySelectorAll('.trace, .heatmaplayer image').length > 0"


def wait_for_figures(page, timeout_s=30):
    """Bring each plotly figure of the notebook into view, as a person scrolling would, and wait
    until it has drawn a trace or a heatmap: all of them within timeout_s. Returns what each
    shows (FIGURES_JS); one still blank by then is reported as such, for the test to judge.
    A figure in a hidden container (display: none) cannot be seen, so it is not waited for."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    plots = page.locator(".jp-OutputArea .js-plotly-plot")
    deadline = time.monotonic() + timeout_s
    for i in range(plots.count()):
        plot = plots.nth(i)
        if not plot.evaluate("plot => plot.getClientRects().length > 0"):
            continue
        plot.scroll_into_view_if_needed()
        left_ms = max(1, (deadline - time.monotonic()) * 1000)   # 0 would mean "no limit"
        try:
            page.wait_for_function(FIGURE_DRAWN_JS, arg=plot.element_handle(), timeout=left_ms,
                                   polling=250)
        except PlaywrightTimeout:
            pass
    return page.evaluate(FIGURES_JS)


def shown_figures(figures):
    """The figures (FIGURES_JS entries) a person can see: not in a hidden container."""
    return [f for f in figures if f["shown"]]


def blank_figures(figures):
    """Descriptions of the figures (FIGURES_JS entries) that are shown but draw nothing."""
    return [f"figure {i} ({f['title'] or 'untitled'}: {f['traces']} traces given to plotly, "
            f"drawn {f['timesDrawn']} times, {f['top']} px from the top of the window)"
            for i, f in enumerate(figures) if f["shown"] and not f["drawn"]]


# What a saved page shows, read in the page: per output area, whether it holds a live widget
# (nbconvert's .jupyter-widgets div: blank unless its manager loads from the network) and the
# static renderings in it (tables, images, SVG) that a person can see (laid out, not empty).
OUTPUTS_SHOWN_JS = """() => {
  const visible = (e) => { const r = e.getBoundingClientRect(); return r.width > 4 && r.height > 4; };
  const areas = [...document.querySelectorAll(".jp-OutputArea-output, .output_subarea")];
  return areas.map((area) => ({
    widget: area.matches(".jupyter-widgets") || !!area.querySelector(".jupyter-widgets"),
    widgetDrawn: !!area.querySelector(".widget-box, .jp-RenderedPlotly, .js-plotly-plot, .widget-html"),
    tables: [...area.querySelectorAll("table")].filter((t) => visible(t) && t.rows.length > 1).length,
    images: [...area.querySelectorAll("img")].filter((i) => visible(i) && i.naturalWidth > 0).length,
    svgs: [...area.querySelectorAll("svg")].filter((s) => visible(s) && s.childElementCount > 0).length,
    text: area.innerText.trim(),
  }));
}"""


def read_offline(playwright, html_path, profile_dir):
    """Open a saved HTML page (a file) in Chromium with the network off: every request that is
    not for a file is aborted (recorded). Returns (OUTPUTS_SHOWN_JS's list, aborted URLs)."""
    aborted = []
    context = launch_chromium(playwright, profile_dir)
    try:
        def route(request_route):
            if request_route.request.url.startswith("file:"):
                request_route.continue_()
            else:
                aborted.append(request_route.request.url)
                request_route.abort()
        context.route("**/*", route)
        page = context.new_page()
        # the page's scripts run, and their requests are answered (aborted), before it is read
        page.goto(Path(html_path).resolve().as_uri(), wait_until="networkidle")
        return page.evaluate(OUTPUTS_SHOWN_JS), aborted
    finally:
        context.close()
