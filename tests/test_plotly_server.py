"""The server extension that hands plotly's widget code to the page (explorer/viz/server.py):
a real JupyterLab server serves exactly the code a kernel would send, to logged-in users only,
and an editable install turns the extension on. (A built wheel: tests/test_course_notebooks.py.
In a browser: tests/test_browser.py.)"""
import json
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from browser_helpers import JupyterServer
from notebook_helpers import REPO, artifacts_dir, kernel_env

from explorer.viz.server import URL_PATH

pytestmark = pytest.mark.slow

ENABLED = "--ServerApp.jpserver_extensions=explorer.viz.server=True"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None     # a 302 is the answer to look at, not a page to follow


def _get(url, token=None):
    """(status, headers, body) of a GET, without following redirects."""
    headers = {"Authorization": f"token {token}"} if token else {}
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("plotly-server")
    (home / "root").mkdir()
    with JupyterServer("lab", home / "root", home, kernel_env(), args=[ENABLED],
                       log_path=artifacts_dir("plotly-server") / "server.log") as running:
        yield running


def test_the_server_serves_plotlys_widget_code_to_logged_in_users(server):
    import plotly
    import plotly.graph_objects as go
    url = f"{server.base}/{URL_PATH.format(version=plotly.__version__)}"
    status, headers, body = _get(url, server.token)
    assert status == 200, (status, body[:300])
    assert headers["Content-Type"].startswith("text/javascript"), headers["Content-Type"]
    assert body.decode("utf-8") == str(go.FigureWidget._esm), \
        f"served {len(body):,} bytes that are not plotly's widget module ({len(str(go.FigureWidget._esm)):,} chars)"

    status, headers, body = _get(url)                                    # not logged in
    assert status in (302, 403) and b"FigureModel" not in body, (status, body[:300])
    if status == 302:
        assert "/login" in headers["Location"], headers["Location"]
    status, _, body = _get(url + "?token=wrong")
    assert status in (302, 403) and b"FigureModel" not in body, (status, body[:300])

    status, _, body = _get(f"{server.base}/{URL_PATH.format(version='0.0.1')}", server.token)
    assert status == 404 and b"FigureModel" not in body, (status, body[:300])


def test_an_editable_install_enables_the_extension(tmp_path):
    """`pip install -e .` (what README and .ci/run do) into a fresh venv writes
    jupyter_server_config.d/explorer.json, and Jupyter lists the extension as enabled and
    importable. setuptools alone leaves data files out of editable installs (setup.py)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # its dependencies (setuptools, jupyter_server) are this environment's: no network needed
    (Path(site) / "test_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-build-isolation", "--no-index", "-q", "-e", str(REPO)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    config = venv / "etc" / "jupyter" / "jupyter_server_config.d" / "explorer.json"
    assert json.loads(config.read_text()) == {"ServerApp": {"jpserver_extensions": {"explorer.viz.server": True}}}
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    listed = subprocess.run([str(python), "-m", "jupyter_server", "extension", "list"], env=env,
                            capture_output=True, text=True, timeout=120)
    said = listed.stdout + listed.stderr
    assert "explorer.viz.server enabled" in _plain(said) and "explorer.viz.server  OK" in _plain(said), said


def _plain(text):
    """Jupyter's listing without its colour codes."""
    import re
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
