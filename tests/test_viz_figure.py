"""explorer.viz._figure.FigureWidget: what it sends to the browser (no browser needed; the
drawing itself is checked in tests/test_browser.py)."""
import comm
import plotly.graph_objects as go
import pytest

from explorer.viz._figure import (
    REDRAW,
    SEND_CODE,
    SEND_STATE,
    FigureWidget,
    plotly_code,
    reset_plotly_code,
)


@pytest.fixture
def sent(monkeypatch):
    """Every message widgets send to the browser from now on, as (msg_type, data)."""
    messages = []

    class RecordingComm(comm.base_comm.BaseComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            messages.append((msg_type, data or {}))

    monkeypatch.setattr(comm, "create_comm", lambda **kwargs: RecordingComm(**kwargs))
    reset_plotly_code()   # a PlotlyCode opened through the recording comm
    yield messages
    reset_plotly_code()


def _opened(sent):
    """The state of every widget opened, in order."""
    return [data["state"] for kind, data in sent if kind == "comm_open"]


def test_plotly_code_is_sent_only_when_a_page_asks_and_each_figure_ships_a_small_module(sent):
    import plotly
    FigureWidget(go.Scatter(y=[1, 2]))
    FigureWidget(go.Scatter(y=[3, 4]))
    code, *figures = _opened(sent)
    # the page imports plotly from the server (explorer/viz/server.py) by this version
    assert code["source"] == "" and code["version"] == plotly.__version__, \
        f"PlotlyCode opened with {len(code['source']):,} characters of code, version {code['version']!r}"
    assert len(figures) == 2 and all(len(f["_esm"]) < 10_000 for f in figures), \
        f"per-figure modules of {[len(f['_esm']) for f in figures]} characters"
    assert not any("source" in f or "_plotly_esm" in f for f in figures), "plotly's code travels once"
    assert {f["_plotly_code"] for f in figures} == {plotly_code().model_id}, "each names the one PlotlyCode"
    assert all(len(str(data)) < 10_000 for _, data in sent), "no message may carry plotly's code unasked"

    # a page that could not import it from the server asks the kernel (twice: sent once)
    del sent[:]
    for _ in range(2):
        plotly_code()._handle_custom_msg({"type": SEND_CODE}, [])
    sources = [data["state"]["source"] for kind, data in sent
               if data.get("method") == "update" and "source" in data["state"]]
    assert sources == [str(go.FigureWidget._esm)], f"{len(sources)} updates of source sent"


def test_plotly_code_ignores_other_messages(sent):
    code = plotly_code()
    del sent[:]
    code._handle_custom_msg({"type": "something else"}, [])
    code._handle_custom_msg("not a dict", [])
    assert sent == [] and code.source == ""


def test_a_figure_is_counted_before_its_model_exists(sent):
    """The page holds plotly's import until every counted figure has loaded: the count must
    reach the browser before the figure's model is created (its comm_open)."""
    for number in (1, 2):
        FigureWidget()
        counts = [i for i, (kind, data) in enumerate(sent)
                  if data.get("method") == "update" and data["state"].get("figures") == number]
        opens = [i for i, (kind, data) in enumerate(sent)
                 if kind == "comm_open" and data["state"].get("_figure_number") == number]
        assert counts and opens and counts[0] < opens[0], \
            f"figure {number}: count sent at {counts}, model opened at {opens}: {[m[0] for m in sent]}"


def test_the_browser_gets_the_full_current_state_then_a_redraw(sent):
    fig = FigureWidget()
    fig.add_scatter(y=[3, 1, 2], name="added after creation")
    fig.update_layout(title_text="edited")
    del sent[:]
    fig._handle_custom_msg({"type": SEND_STATE}, [])
    states = [data["state"] for kind, data in sent if data.get("method") == "update"]
    data = [s["_widget_data"] for s in states if "_widget_data" in s]
    layout = [s["_widget_layout"] for s in states if "_widget_layout" in s]
    assert data and data[-1][0]["name"] == "added after creation", f"sent states: {states}"
    assert layout and layout[-1]["title"]["text"] == "edited"
    assert sent[-1][1] == {"method": "custom", "content": {"type": REDRAW}}, \
        f"the redraw must come after the state; last message: {sent[-1]}"


def test_other_browser_messages_are_ignored(sent):
    fig = FigureWidget()
    del sent[:]
    fig._handle_custom_msg({"type": "something else"}, [])
    assert sent == []


def test_loader_js_ships_and_names_the_python_messages():
    from explorer.viz import _figure
    assert _figure.LOADER_JS.startswith("// The module anywidget loads")
    # the Python side sends and expects these message types; the JavaScript must use the same strings
    for message in (_figure.REDRAW, _figure.SEND_STATE, _figure.SEND_CODE):
        assert f'"{message}"' in _figure.LOADER_JS, message


def test_loader_js_asks_for_the_path_the_server_serves():
    from explorer.viz import _figure, server
    # figure_loader.js builds the path from baseUrl and the version: `explorer/plotly/${...}/widget.js`
    assert server.URL_PATH.replace("{version}", "${encodeURIComponent(version)}") in _figure.LOADER_JS
