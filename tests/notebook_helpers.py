"""What the notebook tests share: which notebooks exist, the time each may take, the
environment their kernels run in, and where tests leave files for people to look at."""
import json
import os
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"

# The longest each notebook may run top to bottom (seconds, a fresh kernel, 2 CPU cores).
# The tour's goal is under 2 minutes; the limit leaves room for Numba compiling every kernel
# from an empty cache on a slow CI machine. A new notebook gets DEFAULT_TIME_LIMIT_S until it
# states its own here.
TIME_LIMITS_S = {
    "00_tour.ipynb": 240,
    # the course notebooks' goal is 3 minutes each, also with an empty Numba cache
    "01_tokens.ipynb": 180,
    "06_interpretability.ipynb": 180,
    "07_sampling.ipynb": 180,
    "08_open_weights.ipynb": 180,
}
# Notebooks that open a model from the hub: in the tests, a local mirror (hub_mirror.py) serves
# them a small random GPT-2 under this name, which EXPLORER_MODEL gives the notebook.
HUB_NOTEBOOKS = {"08_open_weights.ipynb": "org/tiny-random-gpt2"}
DEFAULT_TIME_LIMIT_S = 300


def notebooks():
    """Every notebook in notebooks/, in course order (their names start with a number)."""
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def time_limit_s(notebook: Path) -> int:
    return TIME_LIMITS_S.get(notebook.name, DEFAULT_TIME_LIMIT_S)


def kernel_env(base=None, extra=None):
    """Environment for a notebook's kernel: offline tokenizer files and corpora from
    ../shared/data, and this checkout of `explorer` first on the path (whatever else is
    installed); with `extra` (notebook_env's), the shell's HF_* variables replaced by it."""
    env = dict(os.environ if base is None else base)
    if extra:
        env = {k: v for k, v in env.items() if not k.startswith(("HF_", "HUGGING"))} | extra
    shared_data = (REPO.parent / "shared" / "data").resolve()
    env["TIKTOKEN_CACHE_DIR"] = str(shared_data / "tiktoken_cache")
    env.setdefault("EXPLORER_DATA_DIR", str(shared_data))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def tiny_gpt2_files():
    """{file name: bytes} of a random GPT-2 with GPT-2's vocabulary (so its tokenizer applies)
    but 2 layers of 16 channels, as a hub repository holds it (config.json, model.safetensors)."""
    from explorer import GPT, GPTConfig
    from explorer.io.hf import save_hf
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")       # save_hf of an untrained model: no checksum note
        save_hf(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=50257, block_size=128)), folder)
        return {name: (Path(folder) / name).read_bytes() for name in os.listdir(folder)}


@contextmanager
def notebook_env(notebook, tmp_path):
    """Extra environment for a notebook's kernel (a dict): for a notebook in HUB_NOTEBOOKS, a
    hub mirror serving tiny_gpt2_files() for as long as the block runs, and HF_ENDPOINT, HF_HOME
    (empty, in tmp_path) and EXPLORER_MODEL pointing at it; for the others, nothing."""
    repo = HUB_NOTEBOOKS.get(Path(notebook).name)
    if repo is None:
        yield {}
        return
    from hub_mirror import HubMirror
    mirror = HubMirror()
    try:
        mirror.add_repo(repo, tiny_gpt2_files())
        yield {"EXPLORER_MODEL": repo, "HF_ENDPOINT": mirror.url, "HF_HOME": str(tmp_path / "hf")}
    finally:
        mirror.close()


def artifacts_dir(kind: str) -> Path:
    """A folder for screenshots, logs and executed notebooks: $TEST_ARTIFACTS/<kind> when set
    (CI uploads it), else tests/artifacts/<kind>. The folder ignores itself in git."""
    root = Path(os.environ.get("TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
    folder = root / kind
    folder.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# test output, never committed\n*\n")
    return folder


def on_ci() -> bool:
    """CI sets CI=true (GitHub Actions, GitLab, ...): there a missing tool is a failure, not a skip."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def python_kernel_spec():
    """A kernel spec that runs ipykernel in *this* Python (the test's venv), not whatever
    `python3` kernel a user or system folder happens to define."""
    return {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (explorer tests)", "language": "python"}


def kernel_manager(tmp_path):
    """A Jupyter kernel manager whose only kernel spec runs this Python."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    name = "explorer-test-python"
    spec_dir = tmp_path / "kernels" / name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(python_kernel_spec()))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return AsyncKernelManager(kernel_name=name, kernel_spec_manager=specs)


def execute_notebook(nb, saved_name, tmp_path, limit, widget_state=False, extra_env=None):
    """Run `nb` (an nbformat node, filled with outputs in place) top to bottom in a fresh
    kernel started in notebooks/, and save the executed copy as `saved_name` in the
    artifacts folder (in tmp_path as well when widget_state). Returns the seconds it took; an
    error, or a cell running longer than `limit`, fails the calling test. widget_state: keep
    the widgets' state in `nb`, as `jupyter nbconvert --execute` does by default (measure it
    with widget_state_bytes). extra_env: more environment for the kernel (notebook_env's)."""
    import nbclient
    import nbformat
    import pytest
    client = nbclient.NotebookClient(
        nb, km=kernel_manager(tmp_path), timeout=limit, allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}}, store_widget_state=widget_state)
    started = time.perf_counter()
    try:
        client.execute(env=kernel_env(extra=extra_env))
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{saved_name} stopped with an error:\n{error}")
    except nbclient.exceptions.CellTimeoutError:
        pytest.fail(f"{saved_name}: a cell ran longer than the notebook's whole limit of {limit} s")
    finally:
        elapsed = time.perf_counter() - started
        folders = [artifacts_dir("notebooks")] + ([tmp_path] if widget_state else [])
        for folder in folders:
            nbformat.write(nb, folder / saved_name)
            (folder / f"{Path(saved_name).stem}.time.txt").write_text(f"{elapsed:.1f} s top to bottom\n")
    return elapsed


# The widget state a notebook may store when executed headless with nbconvert's defaults
# (issue 17): plotly's 5 MB of widget code is the Jupyter server's to serve
# (explorer/viz/server.py), so what is left is the views' own data.
MAX_WIDGET_STATE_BYTES = 1_000_000
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def widget_state_bytes(nb):
    """(bytes of the widget state stored in an executed notebook's metadata, as JSON; the five
    biggest models as (bytes, model name, model id))."""
    widgets = nb.metadata.get("widgets", {})
    models = widgets.get(WIDGET_STATE, {}).get("state", {})
    biggest = sorted(((len(json.dumps(s)), s.get("model_name"), model_id)
                      for model_id, s in models.items()), reverse=True)
    return len(json.dumps(widgets)) if widgets else 0, biggest[:5]


def error_outputs(nb):
    """Human-readable descriptions of every error in an executed notebook (nbformat node):
    error outputs, and tracebacks printed to stderr (a widget callback or thread failing)."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append(f"cell {index} ({first_line!r}): {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr" and "Traceback" in out.text:
                found.append(f"cell {index} ({first_line!r}) printed a traceback:\n{out.text[-2000:]}")
    return found
