"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, without an error, within
the time stated for it in notebook_helpers.TIME_LIMITS_S.

The kernel is ipykernel in this test's own Python, started in notebooks/ (so relative paths
behave as they do for a student) with the offline tokenizer cache from ../shared/data. A
notebook that opens GPT-2 from the hub gets a small random one from a local mirror instead
(notebook_helpers.notebook_env).
The executed copy of each notebook is saved under the test artifacts folder for inspection;
the notebooks in the repository are never modified. Each runs as `jupyter nbconvert --execute`
does by default, storing the widgets' state, which must stay under MAX_WIDGET_STATE_BYTES
(a course notebook executed headless stays small: issue 17).
"""
import pytest
from notebook_helpers import (
    MAX_WIDGET_STATE_BYTES,
    NOTEBOOK_DIR,
    error_outputs,
    execute_notebook,
    notebook_env,
    notebooks,
    time_limit_s,
    widget_state_bytes,
)

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")


def test_there_is_a_tour_notebook():
    assert (NOTEBOOK_DIR / "00_tour.ipynb") in notebooks(), f"no 00_tour.ipynb in {NOTEBOOK_DIR}"


@pytest.mark.slow
@pytest.mark.parametrize("notebook", notebooks(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(notebook, tmp_path):
    nb = nbformat.read(notebook, as_version=4)
    limit = time_limit_s(notebook)
    # One cell may take the whole budget; the total is checked after the run.
    with notebook_env(notebook, tmp_path) as env:     # a hub mirror for the notebooks that need one
        elapsed = execute_notebook(nb, notebook.name, tmp_path, limit, widget_state=True, extra_env=env)
    assert not error_outputs(nb), "\n".join(error_outputs(nb))
    size, biggest = widget_state_bytes(nb)
    assert size <= MAX_WIDGET_STATE_BYTES, (f"{notebook.name} executed headless stores {size:,} bytes of "
                                            f"widget state; its biggest models: {biggest}")
    assert elapsed < limit, (f"{notebook.name} took {elapsed:.0f} s top to bottom; its stated "
                             f"limit is {limit} s (notebook_helpers.TIME_LIMITS_S)")
