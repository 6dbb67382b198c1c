"""`explorer demo` serves the demo notebook with Voila: the page comes back with the notebook
executed (its dashboard and attention widgets in it) and no error output."""
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from notebook_helpers import artifacts_dir, kernel_env, on_ci

from explorer.demo import NOTEBOOK, demo_command

if not on_ci():
    pytest.importorskip("voila")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_command_uses_voila_and_a_fixed_address():
    command = demo_command(port=9999, open_browser=False)
    assert command[1:3] == ["-m", "voila"] and str(NOTEBOOK) in command
    assert "--port=9999" in command and "--no-browser" in command and "--Voila.ip=127.0.0.1" in command


def test_unknown_preset_is_refused_before_serving():
    run = subprocess.run([sys.executable, "-m", "explorer.cli", "demo", "--preset", "nope", "--no-browser"],
                         capture_output=True, text=True, timeout=120, env=kernel_env())
    assert run.returncode == 2 and "nope" in run.stderr and "reverse-tiny" in run.stderr


@pytest.mark.slow
def test_demo_page_renders_the_executed_notebook():
    port = _free_port()
    log = artifacts_dir("demo") / "voila.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "explorer.cli", "demo", "--no-browser",
                                   "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                  env=kernel_env())
    try:
        page = _get(f"http://127.0.0.1:{port}/", deadline=time.monotonic() + 240)
    finally:
        server.terminate()
        server.wait(30)
    (artifacts_dir("demo") / "demo.html").write_text(page)
    assert "Watch a GPT learn" in page
    assert "reverse-tiny" in page                   # the task cell ran and printed its preset
    # the style, the dashboard and the attention explorer: three widget outputs
    assert len(re.findall(r"application/vnd\.jupyter\.widget-view\+json", page)) >= 3
    assert "Traceback" not in page and "ename" not in page, f"error output in the page (see {log})"


def _get(url, deadline):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=200) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_projector_style_reads_as_a_sentence_where_widgets_do_not_run():
    """Saved to GitHub or nbviewer, the demo's style cell must not show its CSS or a repr."""
    import plotly.io as pio

    from explorer.viz.style import projector
    before = pio.templates.default
    try:
        style = projector(scale=2)
        bundle = style._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle   # live: the CSS applies
        assert bundle["text/plain"] == "Projector mode: widgets and figures 2x larger."
        assert "<style" not in bundle["text/html"] and "2x larger" in bundle["text/html"]
        assert "font-size: 26px" in style.value
        with pytest.raises(ValueError, match="scale must be positive"):
            projector(scale=0)
    finally:
        pio.templates.default = before
