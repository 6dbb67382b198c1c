"""explorer.viz._figure.FigureWidget: what it sends to the browser (no browser needed; the
drawing itself is checked in tests/test_browser.py)."""
import comm
import plotly.graph_objects as go
import pytest

from explorer.viz._figure import REDRAW, SEND_STATE, FigureWidget


@pytest.fixture
def sent(monkeypatch):
    """Every message widgets send to the browser from now on, as (msg_type, data)."""
    messages = []

    class RecordingComm(comm.base_comm.BaseComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            messages.append((msg_type, data or {}))

    monkeypatch.setattr(comm, "create_comm", lambda **kwargs: RecordingComm(**kwargs))
    return messages


def test_each_figure_ships_a_small_module_and_plotly_as_a_string(sent):
    FigureWidget(go.Scatter(y=[1, 2]))
    [(kind, data)] = [m for m in sent if m[0] == "comm_open"]
    state = data["state"]
    assert len(state["_esm"]) < 10_000, f"the per-figure module is {len(state['_esm'])} characters"
    assert state["_plotly_esm"] == str(go.FigureWidget._esm), "plotly's own widget module must travel"


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
