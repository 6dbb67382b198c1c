"""The views at GPT-2 small's shape (12 layers x 12 heads, prompts of 1,024 tokens), on a narrow
model (n_embd=48) so that it stays quick: every map is checked against transformers'
output_attentions on the same weights, and what reaches the browser stays small."""
import numpy as np
import pytest
from helpers import random_model

from explorer import GPTConfig
from explorer.io.hf import save_hf
from explorer.tokenizers import CharTokenizer
from explorer.viz import AttentionExplorer, SamplingView, StepThrough
from explorer.viz.attention import (
    CHAR_PX,
    GRID_DECIMALS,
    LABEL_PX,
    PLOT_PX,
    SELECTED_CELLS,
    SELECTED_DECIMALS,
    STATIC_CELLS,
)

T = 1024
CONFIG = GPTConfig(n_layer=12, n_head=12, n_embd=48, vocab_size=61, block_size=T)
GRID = 16                                    # each head's side in the 12 x 12 grid, in blocks
HEADS = [(0, 0), (5, 1), (6, 9), (11, 11)]   # heads whose full maps are compared
# float32 throughout on both sides; observed max |difference| ~1e-7 (single heads, pooled maps)
ATOL = 1e-5
# what the browser gets is rounded (to what the hover shows): the enlarged map to 3 places
SELECTED_ATOL, GRID_ATOL = 0.5 * 10.0 ** -SELECTED_DECIMALS + ATOL, 0.5 * 10.0 ** -GRID_DECIMALS + ATOL


def block_pool(att, edges):
    """Independent of pool_attention: block (i, j) is the mean over queries edges[i]..edges[i+1]
    of their total attention on keys edges[j]..edges[j+1]."""
    n = len(edges) - 1
    return np.array([[att[edges[i]:edges[i + 1], edges[j]:edges[j + 1]].sum(axis=1).mean()
                      for j in range(n)] for i in range(n)])


# 61 characters, one per token id: a prompt of T ids is also a text of T characters
TOKENIZER = CharTokenizer("".join(chr(c) for c in range(ord("0"), ord("0") + CONFIG.vocab_size)))


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """(model, ids, {(l, h): transformers' map}, transformers' grid pooled per head, and its
    logits at the last position)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = random_model(CONFIG, seed=3, strong=True)     # peaked maps: a wrong one shows
    folder = tmp_path_factory.mktemp("gpt2-12x12")
    save_hf(model, folder)
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager")
    hf = hf.float().eval()
    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, size=T)
    with torch.no_grad():
        out = hf(torch.from_numpy(ids[None]), output_attentions=True)
    attentions, last_logits = out.attentions, out.logits[0, -1].numpy().astype(np.float64)
    edges = np.linspace(0, T, GRID + 1).round().astype(int)
    maps = {(l, h): attentions[l][0, h].numpy().copy() for l, h in HEADS}
    grid = np.array([[block_pool(attentions[l][0, h].numpy(), edges) for h in range(12)]
                     for l in range(12)])
    del attentions, out
    return model, ids, maps, grid, last_logits


@pytest.fixture(scope="module")
def explorer_view(full_size):
    model, ids = full_size[:2]
    view = AttentionExplorer(model, prompt=ids)
    yield view
    view.close()


def test_changing_layer_and_head_shows_transformers_map(full_size, explorer_view):
    maps = full_size[2]
    view = explorer_view
    assert len(view.probe.ids) == T
    worst = 0.0
    for (l, h), expected in maps.items():
        view.layer.value, view.head.value = l, h
        np.testing.assert_allclose(view.head_attention(), expected, atol=ATOL)
        # the enlarged map is T/SELECTED_CELLS tokens per block: sum over keys, mean over queries
        shown = np.asarray(view.selected.data[0].z)
        k = T // SELECTED_CELLS
        pooled = expected.reshape(SELECTED_CELLS, k, SELECTED_CELLS, k).sum(axis=3).mean(axis=1)
        assert shown.shape == (SELECTED_CELLS, SELECTED_CELLS)
        np.testing.assert_allclose(shown, pooled, atol=SELECTED_ATOL)
        assert f"layer {l}, head {h}" in view.selected.layout.title.text
        worst = max(worst, float(np.abs(view.head_attention() - expected).max()))
    print(f"\nmax |explorer - transformers| over {len(maps)} heads at T={T}: {worst:.1e}")
    # different heads really differ (a view stuck on one head would fail above)
    assert not np.allclose(maps[(0, 0)], maps[(11, 11)], atol=1e-2)


def test_the_12x12_grid_shows_every_head_pooled_on_one_scale(full_size, explorer_view):
    grid = full_size[3]
    view = explorer_view
    g = GRID
    assert view._grid_cells() == GRID
    z = np.asarray(view.grid.data[0].z)
    assert len(view.grid.data) == 1 and z.shape == (12 * (g + 1) - 1, 12 * (g + 1) - 1)
    for l in range(12):
        for h in range(12):
            np.testing.assert_allclose(view.grid_map(l, h), grid[l, h], atol=GRID_ATOL)
    assert np.isnan(z[g, :]).all() and np.isnan(z[:, g]).all()        # gaps between heads
    assert view.grid.data[0].zmin == 0 and view.grid.data[0].zmax == 1  # one colour scale
    assert view.grid.layout.xaxis.ticktext == tuple(f"H{h}" for h in range(12))
    assert view.grid.layout.yaxis.ticktext == tuple(f"L{l}" for l in range(12))
    # a click on head 7 of layer 10 selects it
    view.grid._handler_js2py_pointsCallback({"new": {
        "event_type": "plotly_click", "points": {
            "xs": [7 * (g + 1) + 3], "ys": [10 * (g + 1) + 12],
            "point_indexes": [[10 * (g + 1) + 12, 7 * (g + 1) + 3]], "trace_indexes": [0]}}})
    assert (view.layer.value, view.head.value) == (10, 7)


def test_token_labels_are_decimated_on_both_axes(explorer_view):
    view = explorer_view
    for axis in (view.selected.layout.xaxis, view.selected.layout.yaxis):
        positions, text = np.array(axis.tickvals), axis.ticktext
        assert 2 <= len(positions) and len(text) == len(positions)
        # evenly spaced, never closer on screen than a label's line height
        gaps = np.diff(positions)
        assert (gaps == gaps[0]).all() and gaps[0] * PLOT_PX / T >= LABEL_PX
        assert text == tuple(view.labels[int(p)] for p in positions)
    # side by side, x's labels must fit between two ticks; else they stand upright
    x = view.selected.layout.xaxis
    widest = max(len(label) for label in x.ticktext)
    assert x.tickangle == -90 or widest * CHAR_PX <= np.diff(x.tickvals)[0] * PLOT_PX / T
    assert view.status.value.count("<code>") < 100          # not all 1,024 tokens


def test_what_the_browser_and_a_saved_notebook_get_stays_small(explorer_view):
    view = explorer_view
    view.sync_figures()
    sizes = {"grid": np.size(view.grid._widget_data[0]["z"]),
             "selected": np.size(view.selected._widget_data[0]["z"])}
    assert sizes["grid"] <= (12 * (GRID + 1)) ** 2 and sizes["selected"] <= SELECTED_CELLS ** 2
    assert view.selected.data[0].text is None                # no 1,024^2 hover strings
    static = view.static_html()
    assert static.count("<tr>") == STATIC_CELLS + 1 and len(static) < 300_000
    # a snapshot holds queries and keys only: T x 2C per layer, not NH x T x T per layer
    record = view.history.values[-1].record
    assert record.nbytes == 12 * T * 2 * 48 * 4


def test_sampling_view_reads_a_1024_token_prompt_and_continues_past_the_block(full_size):
    model, ids, *_, last_logits = full_size
    view = SamplingView(model, TOKENIZER, prompt=TOKENIZER.decode(ids), n_bars=10)
    assert view.prompt_ids == list(ids)
    expected = np.exp(last_logits - last_logits.max())
    expected /= expected.sum()
    np.testing.assert_allclose(view.probabilities(), expected, atol=1e-5)
    new = view.generate(3)                 # the context slides: the last 1,024 tokens
    assert len(new) == 3 and len(view.tokens) == T + 3
    assert view.next_token() is not None and len(view.tokens) == T + 4
    assert len(view.figure.data[0].y) == 10


def test_step_through_a_1024_token_forward_of_12_layers(full_size):
    model, ids, maps = full_size[:3]
    model.forward(ids[None])
    view = StepThrough(model)
    try:
        view.select.value = view.op_names.index("blocks.0.attn")
        panels = {t.arg: k for k, t in enumerate(t for t in view.selected.tensors
                                                    if t.slice2d is not None)}
        z = np.asarray(view.fig.data[panels["att"]].z)
        assert z.shape == (256, 256)                 # the leading block, not 1,024^2
        expected = maps[(0, 0)][:256, :256]           # batch row 0, head 0
        np.testing.assert_allclose(z, expected, rtol=0, atol=0.5e-3 + ATOL)
        assert all(np.size(trace.z) <= 256 * 256 for trace in view.fig.data if trace.z is not None)
    finally:
        view.close()
