"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, without an error, within
the time stated for it in notebook_helpers.TIME_LIMITS_S.

The kernel is ipykernel in this test's own Python, started in notebooks/ (so relative paths
behave as they do for a student) with the offline tokenizer cache from ../shared/data.
The executed copy of each notebook is saved under the test artifacts folder for inspection;
the notebooks in the repository are never modified.
"""
import json
import time

import pytest

from notebook_helpers import (NOTEBOOK_DIR, artifacts_dir, error_outputs, kernel_env, notebooks,
                              python_kernel_spec, time_limit_s)

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (after the skips)
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

KERNEL_NAME = "explorer-test-python"


def test_there_is_a_tour_notebook():
    assert (NOTEBOOK_DIR / "00_tour.ipynb") in notebooks(), f"no 00_tour.ipynb in {NOTEBOOK_DIR}"


def _kernel_manager(tmp_path):
    """A kernel manager whose only kernel spec runs this Python."""
    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(python_kernel_spec()))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", notebooks(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(notebook, tmp_path):
    nb = nbformat.read(notebook, as_version=4)
    limit = time_limit_s(notebook)
    # One cell may take the whole budget; the total is checked after the run.
    client = nbclient.NotebookClient(
        nb, km=_kernel_manager(tmp_path), timeout=limit, allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
        store_widget_state=False)   # the saved copy stays small (plotly's JS is ~5 MB a figure)
    started = time.perf_counter()
    try:
        client.execute(env=kernel_env())
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{notebook.name} stopped with an error:\n{error}")
    except nbclient.exceptions.CellTimeoutError:
        pytest.fail(f"{notebook.name}: a cell ran longer than the notebook's whole limit of {limit} s")
    finally:
        elapsed = time.perf_counter() - started
        _save_executed(nb, notebook, elapsed)
    assert not error_outputs(nb), "\n".join(error_outputs(nb))
    assert elapsed < limit, (f"{notebook.name} took {elapsed:.0f} s top to bottom; its stated "
                             f"limit is {limit} s (notebook_helpers.TIME_LIMITS_S)")


def _save_executed(nb, notebook, elapsed):
    folder = artifacts_dir("notebooks")
    nbformat.write(nb, folder / notebook.name)
    (folder / f"{notebook.stem}.time.txt").write_text(f"{elapsed:.1f} s top to bottom\n")
