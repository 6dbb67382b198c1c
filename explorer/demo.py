"""`explorer demo`: the instructor's demo notebook, served as a page without code (Voila).

The notebook is notebooks/demo.ipynb in the project checkout (the README's install is an
editable one, so it sits beside the package). The preset reaches the notebook's kernel
through the environment variable EXPLORER_DEMO_PRESET.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from .train.presets import get_preset

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "demo.ipynb"


def demo_command(port=8866, open_browser=True, lab=False, notebook=NOTEBOOK):
    """The command line that serves the demo: Voila if installed (or JupyterLab with lab=True)."""
    if not Path(notebook).is_file():
        raise FileNotFoundError(f"the demo notebook is not at {notebook}: `explorer demo` runs from "
                                f"a checkout of the project (pip install -e .)")
    if lab or importlib.util.find_spec("voila") is None:
        command = [sys.executable, "-m", "jupyterlab", str(notebook), f"--ServerApp.port={port}",
                   "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0"]
        return command + ([] if open_browser else ["--no-browser"])
    command = [sys.executable, "-m", "voila", str(notebook), f"--port={port}", "--Voila.ip=127.0.0.1",
               "--Voila.port_retries=0", "--theme=light", "--show_tracebacks=True"]
    return command + ([] if open_browser else ["--no-browser"])


def serve_demo(preset="reverse-tiny", port=8866, open_browser=True, lab=False):
    """Serve the demo until Ctrl-C. On POSIX this process becomes the server (exec), so
    stopping it stops the server and its kernels; elsewhere returns the server's exit code."""
    get_preset(preset)                      # an unknown name fails here, with the choices
    env = {**os.environ, "EXPLORER_DEMO_PRESET": preset}
    command = demo_command(port, open_browser, lab)
    print(f"serving the demo ({preset}) on http://127.0.0.1:{port}/  (Ctrl-C stops it)", flush=True)
    if os.name == "posix":
        os.execve(command[0], command, env)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
