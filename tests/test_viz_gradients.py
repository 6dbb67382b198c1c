"""GradientFlow without a browser: drive it and assert on its figures' data."""
import numpy as np
import pytest

from explorer import GPT, GPTConfig
from explorer.data import make_task
from explorer.train.stats import HIST_TENSORS, GradientRecorder
from explorer.train.trainer import Trainer
from explorer.viz import GradientFlow


def small_trainer():
    data = make_task("reverse", length=4)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=data.vocab_size, block_size=16))
    return Trainer(model, data, batch_size=8, lr=3e-3)


def test_heatmap_has_one_column_per_recorded_step_and_lines_per_layer():
    trainer = small_trainer()
    view = GradientFlow(trainer, min_seconds=0)
    trainer.run(6)
    rec = view.recorder
    heat = view.norms.data[0]
    z = np.asarray(heat.z)
    assert list(heat.x) == rec.steps == [1, 2, 3, 4, 5, 6]
    assert z.shape == (len(rec.param_names), 6)
    # rows grouped by layer, in each layer the block's own order
    block = ["ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
             "attn.proj.bias", "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias",
             "mlp.proj.weight", "mlp.proj.bias"]
    want_rows = (["wte", "wpe"] + [f"blocks.{l}.{p}" for l in range(2) for p in block]
                 + ["ln_f.weight", "ln_f.bias"])
    assert list(heat.y) == want_rows
    norms = rec.series("grad_norm")
    for row, name in zip(z, heat.y):
        np.testing.assert_allclose(row, np.log10(norms[:, rec.param_names.index(name)]))
    layers = rec.layer_grad_norms()
    lines = view.norms.data[1:]
    assert [t.name for t in lines] == ["embedding", "layer 0", "layer 1", "final"]
    for trace in lines:
        np.testing.assert_allclose(trace.y, layers[trace.name])


def test_update_ratio_lines_and_guide():
    trainer = small_trainer()
    view = GradientFlow(trainer, min_seconds=0)
    trainer.run(3)
    rec = view.recorder
    names = [t.name for t in view.ratio.data]
    # one line per weight matrix: wte, wpe and four per block
    assert names == ["wte", "wpe"] + [f"blocks.{l}.{p}.weight" for l in range(2)
                                      for p in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")]
    ratios = rec.series("update_ratio")
    for trace in view.ratio.data:
        np.testing.assert_allclose(trace.y, np.log10(ratios[:, rec.param_names.index(trace.name)]))
    assert [s.y0 for s in view.ratio.layout.shapes] == [-3.0]


def test_a_step_that_changes_nothing_is_a_gap_not_minus_infinity():
    """A step at lr 0 has update ratio 0: drawn as a gap (NaN), never -inf (which breaks the
    axis range), and the static table says so."""
    trainer = small_trainer()
    view = GradientFlow(trainer, min_seconds=0)
    trainer.run(2)
    trainer.config.lr = trainer.config.min_lr = 1e-30   # rounds to no change in float32
    trainer.config.weight_decay = 0.0
    trainer.run(1)
    rec = view.recorder
    ratios = rec.series("update_ratio")
    for trace in view.ratio.data:    # the weight matrices
        column = ratios[:, rec.param_names.index(trace.name)]
        assert (column[:-1] > 0).all() and column[-1] == 0
        y = np.asarray(trace.y, dtype=float)
        assert np.isfinite(y[:-1]).all() and np.isnan(y[-1])
    assert "no change" in view.static_html()


def test_layer_selector_shows_that_layers_histograms():
    trainer = small_trainer()
    view = GradientFlow(trainer, min_seconds=0, hist_every=1)
    trainer.run(2)
    step, act_h, grad_h = view.recorder.latest_histograms()
    n = len(HIST_TENSORS)
    for layer in (1, 0):
        view.layer.value = layer
        assert f"layer {layer}, step {step}" in view.hist.layout.title.text
        for k, t in enumerate(HIST_TENSORS):
            np.testing.assert_allclose(view.hist.data[k].y, act_h[t][layer] / act_h[t][layer].sum())
            np.testing.assert_allclose(view.hist.data[n + k].y, grad_h[t][layer] / grad_h[t][layer].sum())
    assert not np.allclose(act_h["mlp.fc"][0], act_h["mlp.fc"][1])   # the layers do differ


def test_health_figure_follows_the_recorder():
    trainer = small_trainer()
    view = GradientFlow(trainer, min_seconds=0)
    trainer.run(3)
    steps, data = view.recorder.snapshot()
    by_name = {t.name: t for t in view.health.data}
    np.testing.assert_allclose(by_name["layer 1 dead"].y, data["gelu_dead"][:, 1])
    np.testing.assert_allclose(by_name["layer 0 saturated"].y, data["gelu_saturated"][:, 0])
    np.testing.assert_allclose(by_name["ln_f"].y, data["ln_std"][:, -1])
    np.testing.assert_allclose(by_name["ln_f"].customdata, data["ln_mean_abs"][:, -1])
    res = [t for t in view.health.data if t.name == "after block 1"]
    np.testing.assert_allclose(res[0].y, data["residual_std"][:, 2])
    np.testing.assert_allclose(res[1].y, data["residual_grad_std"][:, 2])


def test_every_trace_explains_itself_on_hover():
    view = GradientFlow(small_trainer())
    for fig in view.figures():
        for trace in fig.data:
            assert "<i>" in trace.hovertemplate and len(trace.hovertemplate) > 60, trace.name


def test_live_updates_are_throttled_and_a_run_end_draws_the_rest():
    trainer = small_trainer()
    view = GradientFlow(trainer, min_seconds=1e9)      # never due again after the first draw
    for _ in range(3):
        trainer.step()
    assert list(view.norms.data[0].x) == [1]           # drawn at the first step only
    assert view.recorder.steps == [1, 2, 3]             # ... while recording went on
    trainer.run(2)                                      # run_end: a final full redraw
    assert list(view.norms.data[0].x) == [1, 2, 3, 4, 5]


def test_model_without_trainer_records_on_demand():
    trainer = small_trainer()
    model = trainer.model
    view = GradientFlow(model)
    assert "nothing recorded yet" in view.status.value
    assert "nothing recorded yet" in view.static_html()
    x, y = trainer.data.get_batch("train", 4, 8, np.random.default_rng(0))
    model.forward(x, y)
    model.backward()
    view.record()
    assert np.asarray(view.norms.data[0].z).shape == (len(view.recorder.param_names), 1)
    assert "1 recorded steps" in view.status.value


def test_shared_recorder_close_and_static_output():
    trainer = small_trainer()
    rec = GradientRecorder(trainer, every=2)
    view = GradientFlow(rec)
    trainer.run(4)
    assert list(view.norms.data[0].x) == [1, 3]
    view.close()
    trainer.run(2)                                      # the shared recorder keeps recording
    assert rec.steps == [1, 3, 5] and list(view.norms.data[0].x) == [1, 3]
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in bundle   # closed: the static copy only
    assert "blocks.1.mlp.fc.weight" in bundle["text/html"] and "step 5" in bundle["text/html"]
    assert len(view.static_figures()) == 4
    rec.close()
    trainer.step()
    assert rec.steps == [1, 3, 5]


def test_a_view_made_by_the_user_stops_recording_on_close():
    trainer = small_trainer()
    view = GradientFlow(trainer)
    trainer.step()
    view.close()
    view.close()                                        # a second close is harmless
    trainer.step()
    assert view.recorder.steps == [1]
    assert not trainer._events.listening("step") and not trainer._events.listening("run_end")


@pytest.mark.parametrize("bad", [None, "model"])
def test_bad_source_is_refused(bad):
    with pytest.raises(TypeError, match="Trainer or a GPT"):
        GradientFlow(bad)


def test_histograms_catch_up_with_the_last_step_when_a_run_ends():
    trainer = small_trainer()
    view = GradientFlow(trainer, hist_every=10)
    trainer.run(12)
    assert view.recorder.hist_steps == [1, 11, 12]
    assert "step 12" in view.hist.layout.title.text
    trainer.run(0)                                      # nothing new: no second record of step 12
    assert view.recorder.hist_steps == [1, 11, 12]
