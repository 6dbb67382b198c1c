"""A Jupyter server extension: the server hands plotly's widget code to the page, so that no
notebook has to carry it (explorer/viz/_figure.py says why that matters).

    GET {base_url}explorer/plotly/<version>/widget.js
        plotly's widget module (the file behind go.FigureWidget._esm) when <version> is the
        plotly installed beside this server; 404 otherwise (a kernel with another plotly then
        sends its own code instead). Logged-in users only; cached for good (the path names the
        version).

Enabled for every Jupyter server in the environment by jupyter-config/ (installed with the
package into etc/jupyter/jupyter_server_config.d/) and on `explorer lab`'s command line.
`jupyter server extension disable explorer.viz.server` turns it off: the figures then ask
their kernel for plotly's code, which works everywhere but stores the code in the notebook.

Loading it imports `explorer` (the package), which sets the thread-pool variables of
explorer/kernels/runtime.py in the server's environment; the kernels the server starts
inherit them (an explorer kernel sets the same values itself).
"""
import importlib.metadata
import importlib.util
import re
from pathlib import Path

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

#: Where the page finds plotly's widget module, under the server's base_url
#: (explorer/viz/figure_loader.js builds the same path).
URL_PATH = "explorer/plotly/{version}/widget.js"


def plotly_version():
    return importlib.metadata.version("plotly")


def plotly_widget_file():
    """plotly's widget module, found without importing plotly (which would load ipywidgets and
    anywidget into the server): go.FigureWidget._esm names this file."""
    return Path(importlib.util.find_spec("plotly").origin).parent / "package_data" / "widgetbundle.js"


class PlotlyWidgetHandler(JupyterHandler):
    """plotly's widget module as JavaScript. @web.authenticated: a request without the login
    cookie or token is sent to the login page, never the code."""

    @web.authenticated
    def get(self, version):
        installed = plotly_version()
        if version != installed:
            raise web.HTTPError(404, f"this server has plotly {installed}, not {version}")
        path = plotly_widget_file()
        if not path.is_file():
            raise web.HTTPError(404, f"plotly {installed} has no widget module at {path}")
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("Cache-Control", "private, max-age=31536000, immutable")
        self.finish(path.read_bytes())


def _jupyter_server_extension_points():
    return [{"module": "explorer.viz.server"}]


def _load_jupyter_server_extension(serverapp):
    pattern = url_path_join(serverapp.base_url, re.escape(URL_PATH).replace(r"\{version\}", "([^/]+)"))
    serverapp.web_app.add_handlers(".*$", [(pattern, PlotlyWidgetHandler)])
    serverapp.log.info("explorer: plotly %s's widget code served at %s", plotly_version(),
                       url_path_join(serverapp.base_url, URL_PATH.format(version=plotly_version())))
