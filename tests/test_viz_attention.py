"""The attention explorer, driven without a browser: sliders, clicks, snapshots, and the
teaching claim that a trained reverse-task model looks at the mirrored prompt position."""
import numpy as np
import pytest

from explorer import GPT, GPTConfig
from explorer.data import make_task
from explorer.interp import AttentionProbe, SnapshotHistory
from explorer.io import checkpoint
from explorer.tokenizers import CharTokenizer
from explorer.train.presets import get_preset
from explorer.train.trainer import Trainer
from explorer.viz import AttentionExplorer
from explorer.viz.attention import GRID_DECIMALS, SELECTED_DECIMALS

# the maps travel to the browser rounded: the enlarged one to 3 places, the grid to 2
SELECTED_ATOL, GRID_ATOL = 0.5 * 10.0 ** -SELECTED_DECIMALS + 1e-6, 0.5 * 10.0 ** -GRID_DECIMALS + 1e-6


def live_attention(model, ids):
    """Attention maps from a plain forward of the model itself: (L, NH, T, T)."""
    model.forward(np.asarray(ids)[None, :])
    return np.stack([model.acts[f"blocks.{l}.attn.att"][0].copy()
                     for l in range(model.config.n_layer)])


def click(fig, x, y):
    """What the browser sends when the grid's cell at column x, row y is clicked."""
    fig._handler_js2py_pointsCallback({"new": {
        "event_type": "plotly_click",
        "points": {"xs": [x], "ys": [y], "point_indexes": [[y, x]], "trace_indexes": [0]}}})


def click_head(view, layer, head, offset=(0, 0)):
    """Click a cell of the grid block of (layer, head), `offset` cells into it."""
    g = view._grid_cells()
    click(view.grid, head * (g + 1) + offset[1], layer * (g + 1) + offset[0])


@pytest.fixture
def small_trainer():
    """A one-layer model on a 4-digit reverse task: steps take milliseconds."""
    task = make_task("reverse", length=4)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=task.vocab_size,
                          block_size=task.seq_len))
    return Trainer(model, task, batch_size=8, lr=1e-2)


def test_token_labels_are_escaped_on_axes_and_in_hover(random_gpt):
    tok = CharTokenizer("<s>/a&b ")
    model = random_gpt(n_layer=1, n_head=2, n_embd=16, vocab_size=tok.vocab_size, block_size=16)
    view = AttentionExplorer(model, tok, prompt="<s>a&b </s>")
    ticks = view.selected.layout.xaxis.ticktext
    assert ticks[:3] == ("&lt;", "s", "&gt;") and "&amp;" in ticks and "\u2423" in ticks
    assert view.selected.layout.yaxis.ticktext == ticks
    hover = [cell for row in view.selected.data[0].text for cell in row]
    assert all("<" not in cell and ">" not in cell for cell in hover)
    assert "&lt;" in view.status.value and "<s>" not in view.status.value


def test_layer_and_head_sliders_and_grid_clicks_select_the_map(random_gpt):
    model = random_gpt(n_layer=2, n_head=3, n_embd=24, vocab_size=11, block_size=12)
    ids = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    view = AttentionExplorer(model, prompt=ids)
    expected = live_attention(model, ids)
    assert len(view.grid.data) == 1 and np.shape(view.grid.data[0].z) == (2 * 11 - 1, 3 * 11 - 1)
    for l in range(2):
        for h in range(3):
            np.testing.assert_allclose(view.grid_map(l, h), expected[l, h], atol=GRID_ATOL)
    assert view.grid.layout.xaxis.ticktext == ("H0", "H1", "H2")
    assert view.grid.layout.yaxis.ticktext == ("L0", "L1")
    np.testing.assert_allclose(view.selected.data[0].z, expected[0, 0], atol=SELECTED_ATOL)
    view.layer.value, view.head.value = 1, 2
    z = np.asarray(view.selected.data[0].z)
    np.testing.assert_allclose(z, expected[1, 2], atol=SELECTED_ATOL)
    assert not np.allclose(z, expected[0, 0])
    assert np.allclose(np.triu(z, 1), 0) and np.allclose(z.sum(axis=1), 1, atol=len(ids) * SELECTED_ATOL)
    frame = view.grid.layout.shapes[0]                      # the red frame moved too
    assert (frame.x0, frame.x1, frame.y0, frame.y1) == (21.5, 31.5, 10.5, 20.5)
    click_head(view, 1, 1, offset=(3, 9))
    assert (view.layer.value, view.head.value) == (1, 1)
    click(view.grid, 10, 2)                                  # the gap between heads 0 and 1
    assert (view.layer.value, view.head.value) == (1, 1)
    np.testing.assert_allclose(view.selected.data[0].z, expected[1, 1], atol=SELECTED_ATOL)
    static = view._repr_mimebundle_()["text/html"]
    assert "layer 1, head 1" in static and static.count("<tr>") == len(ids) + 1


def test_probing_keeps_the_live_models_record(small_trainer):
    trainer = small_trainer
    trainer.step()
    model = trainer.model
    trace, logits = model.trace, model.acts["logits"].copy()
    view = AttentionExplorer(trainer=trainer, snapshot_every=1)
    view.snapshot()
    assert model.trace is trace and model.trace[-1].phase == "backward"
    np.testing.assert_array_equal(model.acts["logits"], logits)
    # ...and what it shows is the live parameters' attention
    np.testing.assert_allclose(view.attention(), live_attention(model, view.probe.ids), atol=1e-6)


def test_snapshot_history_thins_evenly_and_keeps_its_capacity():
    history = SnapshotHistory(every=3, capacity=5)
    for step in range(0, 200):
        if history.due(step):
            history.add(step, step)
    assert 3 <= len(history) <= 5
    gaps = np.diff(history.steps)
    assert history.steps[0] == 0 and (gaps == history.every).all()
    assert history.every == 3 * 2 ** 4 and history.values == history.steps
    with pytest.raises(ValueError, match="capacity"):
        SnapshotHistory(every=1, capacity=1)


def test_step_slider_scrubs_through_capped_snapshots(small_trainer):
    trainer = small_trainer
    view = AttentionExplorer(trainer=trainer, snapshot_every=1, max_snapshots=4)
    at_start = AttentionProbe(trainer.model, view.probe.ids).attention()
    trainer.run(10)
    # every=1, capacity 4: thinned twice, so steps 0, 4, 8 are kept (10 is not a multiple of 4)
    assert view.history.steps == [0, 4, 8] and view.history.every == 4
    assert view.step_slider.max == 2 and view.step_slider.value == 2     # followed the newest
    np.testing.assert_allclose(view.attention(0), at_start, atol=1e-6)   # copies, not views
    assert not np.allclose(view.attention(0), view.attention(2), atol=1e-4)

    view.layer.value, view.head.value = 0, 1
    view.step_slider.value = 0
    np.testing.assert_allclose(view.selected.data[0].z, at_start[0, 1], atol=SELECTED_ATOL)
    np.testing.assert_allclose(view.grid_map(0, 0), at_start[0, 0], atol=GRID_ATOL)
    assert view.step_label.value.startswith("0 ") and "training step 0" in view.selected.layout.title.text
    trainer.run(4)                      # scrubbed back: new snapshots do not move the slider
    assert view.history.steps[-1] == 12 and view.step_slider.value == 0
    view.step_slider.value = view.step_slider.max
    np.testing.assert_allclose(view.selected.data[0].z, view.attention(-1)[0, 1], atol=SELECTED_ATOL)
    # the saved state (what a page reload rebuilds) was synced when the run ended, showing the
    # snapshot scrubbed to then (step 0), not the blank map the figure was created with
    np.testing.assert_allclose(view.selected._widget_data[0]["z"], view.attention(0)[0, 1],
                               atol=SELECTED_ATOL)
    view.refresh_button.click()         # by hand, between the intervals: kept, and shown
    assert view.history.steps == [0, 8, 14]    # full at 4: thinned first
    assert view.step_label.value.startswith("14 ")
    view.close()
    trainer.run(4)                      # step 16 would be due, but the view stopped listening
    assert view.history.steps[-1] == 14


def test_snapshots_from_a_background_thread_and_after_a_reset(small_trainer):
    from explorer.train.runner import BackgroundTrainer
    trainer = small_trainer
    view = AttentionExplorer(trainer=trainer, snapshot_every=2)
    fresh = view.attention(0)
    runner = BackgroundTrainer(trainer)
    try:
        runner.run(6)
        assert runner.wait(60)
        assert view.history.steps == [0, 2, 4, 6] and view.step_slider.max == 3
        runner.reset()                   # same seed: the weights of step 0 again
        runner.run(3)
        assert runner.wait(60)
        assert view.history.steps == [1, 3]     # noticed that the step count went back
        view.restart()
        assert view.history.steps == [3]
        runner.reset()
        view.restart()                   # what a dashboard does on the runner's "reset" event
        runner.run(2)
        assert runner.wait(60)
        assert view.history.steps == [0, 2]
        np.testing.assert_allclose(view.attention(0), fresh, atol=1e-6)
        np.testing.assert_allclose(view.selected.data[0].z, view.attention(1)[0, 0], atol=SELECTED_ATOL)
    finally:
        runner.close()


def mirror_score(att, prompt_len, shift=0):
    """Mean attention that answer query t puts on key (T-1) - t + shift, per (layer, head).

    A reverse example is p0..p{n-1} '=' a0..a{n-1} with a_i = p_{n-1-i}; the input x drops the
    last token, so T = 2n. Query t (n <= t < 2n) predicts token t+1 = a_{t-n}, which copies the
    prompt token at position 2n-1-t = T-1-t: the anti-diagonal. shift != 0 scores a wrong
    diagonal, as a control."""
    T = att.shape[-1]
    queries = np.arange(prompt_len, T)
    keys = np.clip(T - 1 - queries + shift, 0, T - 1)
    return att[:, :, queries, keys].mean(axis=-1)     # (L, NH)


def test_trained_reverse_model_attends_to_the_mirrored_prompt_position(tmp_path):
    preset = get_preset("reverse-tiny")
    data, model, trainer = preset.build()
    view = AttentionExplorer(trainer=trainer, snapshot_every=20)
    ids, n = view.probe.ids, data.length
    assert len(ids) == 2 * n and ids[n] == data.separator
    np.testing.assert_array_equal(ids[n + 1:], ids[1:n][::-1])   # a real reverse example
    trainer.run(60)
    assert view.history.steps == [0, 20, 40, 60]
    before, after = mirror_score(view.attention(0), n), mirror_score(view.attention(), n)
    # untrained: attention is near uniform over ~12 keys (~0.08); trained: one head (measured
    # ~0.9 at step 60, all of layer 0) puts most of each answer row on the mirrored digit
    assert before.max() < 0.2
    assert after.max() > 0.5, f"no head attends to the mirrored position: {after.round(2)}"
    # and it is the mirror, not any diagonal: the positions one off get far less
    best = np.unravel_index(np.argmax(after), after.shape)
    assert mirror_score(view.attention(), n, shift=1)[best] < 0.25
    assert mirror_score(view.attention(), n, shift=-1)[best] < 0.25

    # the same maps from the saved checkpoint, with the tokenizer it stored
    checkpoint.save(trainer, tmp_path / "reverse.safetensors", tokenizer=data.tokenizer)
    ckpt = checkpoint.load(tmp_path / "reverse.safetensors")
    saved = AttentionExplorer(ckpt.model, ckpt.tokenizer, prompt=data.tokenizer.decode(ids))
    np.testing.assert_allclose(saved.attention(), view.attention(), atol=1e-6)
    assert saved.selected.layout.xaxis.ticktext == tuple(data.tokenizer.token_strings(ids))


def test_a_record_computes_any_head_through_the_registry_and_refuses_bad_indices(random_gpt):
    model = random_gpt(n_layer=2, n_head=3, n_embd=24, vocab_size=11, block_size=12)
    ids = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    record = AttentionProbe(model, ids, shadow=False).record()
    expected = live_attention(model, ids)
    assert record.nbytes == 2 * len(ids) * 2 * 24 * 4               # q and k only
    np.testing.assert_array_equal(record.head(1, 2), expected[1, 2])
    np.testing.assert_array_equal(record.layer(0), expected[0])
    with pytest.raises(IndexError, match="layer 2 out of range: the model has 2 layers"):
        record.head(2, 0)
    with pytest.raises(IndexError, match="head 3 out of range"):
        record.head(0, 3)
    with pytest.raises(ValueError, match="more than the model's block_size=12"):
        AttentionProbe(model, np.zeros(13, dtype=np.int64))
