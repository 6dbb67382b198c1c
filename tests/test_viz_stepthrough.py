"""StepThrough without a browser: press its buttons, assert on what it shows."""
import numpy as np
import pytest

from explorer import GPT, GPTConfig
from explorer.data import make_task
from explorer.train.trainer import Trainer
from explorer.viz import StepThrough
from explorer.viz.stepthrough import display_slice, tensor_stats


@pytest.fixture
def trainer():
    data = make_task("reverse", length=4)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=data.vocab_size, block_size=16))
    return Trainer(model, data, batch_size=4, lr=3e-3)


def test_op_list_is_the_models_trace_then_the_update(trainer):
    trainer.step()
    model = trainer.model
    view = StepThrough(model)
    assert view.op_names == [op.name for op in model.trace]
    assert [label for label, _ in view.select.options][0].endswith("embedding   [encoder_forward]")
    with_update = StepThrough(trainer=trainer)
    assert with_update.op_names == [op.name for op in model.trace] + ["update"]
    update = with_update.ops[-1]
    assert update.phase == "update" and update.kernel == "adamw_update"
    assert "AdamW step t=1" in update.note and "lr" in update.note
    assert [t.arg for t in update.tensors] == ["params", "m", "v", "grads", "m̂/(√v̂+eps)"]


def test_update_entry_shows_the_step_the_optimizer_took(trainer):
    trainer.step()
    model = trainer.model
    before = model.flat_params.copy()
    trainer.step()
    direction = StepThrough(trainer).ops[-1].tensors[-1].value
    # AdamW: p = p (1 - lr wd) on 2-D weights, then p -= lr * direction
    lr, wd = trainer.history[-1]["lr"], trainer.config.weight_decay
    shrink = np.ones_like(before)
    for s, decays in enumerate(trainer._decay):
        if decays:
            shrink[model.param_offsets[s]:model.param_offsets[s + 1]] = 1 - lr * wd
    np.testing.assert_allclose(model.flat_params, before * shrink - lr * direction, rtol=1e-5, atol=1e-7)
    assert 0.1 < np.abs(direction).mean() < 2          # Adam's steps are about lr each


def test_next_and_previous_walk_the_list(trainer):
    trainer.step()
    view = StepThrough(trainer)
    assert view.select.value == 0 and view.prev_button.disabled
    view.next_button.click()
    view.next_button.click()
    assert view.select.value == 2 and view.selected.name == view.op_names[2]
    view.prev_button.click()
    assert view.select.value == 1
    view.select.value = len(view.ops) - 1
    assert view.next_button.disabled
    view.move(+1)                                   # stays at the end
    assert view.select.value == len(view.ops) - 1
    assert view.selected.name == "update"


def test_backward_op_shows_what_it_inverts_and_jumps_there(trainer):
    trainer.step()
    view = StepThrough(trainer)
    forward_only = view.ops[0]
    assert view.jump_button.disabled and forward_only.inverts is None
    i = view.op_names.index("blocks.1.attn.backward")
    view.select.value = i
    assert view.selected.inverts == "blocks.1.attn"
    assert "blocks.1.attn</b>" in view.info.value and "computes the gradient" in view.info.value
    assert not view.jump_button.disabled and view.jump_button.description == "Go to blocks.1.attn"
    view.jump_button.click()
    assert view.selected.name == "blocks.1.attn" and view.selected.phase == "forward"
    # every backward op inverts a forward op of this trace
    for op in view.ops:
        if op.phase == "backward":
            assert op.inverts in view.op_names[:op.index], op.name


def test_stats_and_heatmaps_show_the_tensors(trainer):
    trainer.step()
    model = trainer.model
    view = StepThrough(model)
    i = view.op_names.index("blocks.0.attn")
    view.select.value = i
    record = model.trace[i]
    arrays = [("output", k, v) for k, v in record.outputs.items()] + \
             [("input", k, v) for k, v in record.inputs.items()]
    for shown, (role, arg, x) in zip(view.selected.tensors, arrays):
        assert (shown.role, shown.arg) == (role, arg)
        if not isinstance(x, np.ndarray):
            assert shown.stats is None and shown.value == x       # n_head
            continue
        assert shown.shape == x.shape
        assert shown.stats["mean"] == pytest.approx(np.mean(x, dtype=np.float64), rel=1e-9, abs=1e-12)
        assert shown.stats["std"] == pytest.approx(np.std(x, dtype=np.float64), rel=1e-9)
        assert shown.stats["min"] == np.min(x) and shown.stats["max"] == np.max(x)
        assert f"{shown.stats['std']:.4g}" in view.table.value
    # panels: out (attention output, preatt, att), then the input qkv; att shows batch 0, head 0
    att = record.outputs["att"]
    def shown_to_4_digits(z, x):
        """z is x rounded to 4 significant digits of its largest value (what the browser gets)."""
        np.testing.assert_allclose(z, x, rtol=0, atol=0.5 * 10.0 ** (np.floor(np.log10(np.abs(x).max())) - 3))
        assert not np.array_equal(z, x)                       # rounded, so that it is sent short

    shown_to_4_digits(view.fig.data[2].z, att[0, 0])
    np.testing.assert_array_equal(view.selected.tensors[2].slice2d, att[0, 0])   # kept exactly
    assert "att (4, 2" in view.fig.layout.annotations[2].text
    assert "batch row 0, head 0" in view.fig.layout.annotations[2].text
    shown_to_4_digits(view.fig.data[3].z, record.inputs["qkv"][0])
    assert view.fig.data[4].z is None                         # unused panels are empty
    assert "dL/d" not in view.table.value and "blocks.0.attn.att" in view.table.value


def test_capture_is_stable_while_training_goes_on(trainer):
    trainer.step()
    model = trainer.model
    view = StepThrough(model)
    i = view.op_names.index("blocks.1.mlp.fc")
    view.select.value = i
    before = view.selected.tensors[0]
    kept_stats, kept_z = dict(before.stats), np.array(view.fig.data[0].z)
    live = model.trace[i].outputs["out"]
    np.testing.assert_array_equal(before.value, live)         # a small model: full copies
    assert not np.shares_memory(before.value, live)
    trainer.step()                                            # overwrites the model's buffers
    assert view.selected.tensors[0].stats == kept_stats
    np.testing.assert_array_equal(view.fig.data[0].z, kept_z)
    view.capture_button.click()
    assert view.select.value == i                             # the same op, new values
    assert view.selected.tensors[0].stats["mean"] == pytest.approx(np.mean(live, dtype=np.float64))
    assert view.selected.tensors[0].stats != kept_stats
    assert view.capture(full=False)[i].tensors[0].value is None


def test_follows_the_trainer_after_runs_and_stops_on_close(trainer):
    view = StepThrough(trainer=trainer)
    assert view.ops == [] and "has not run yet" in view.header.value
    trainer.run(1)
    assert "after step 1" in view.header.value and view.op_names[-1] == "update"
    trainer.run(2)
    assert "after step 3" in view.header.value and "AdamW step t=3" in view.ops[-1].note
    view.close()
    trainer.run(1)
    assert "after step 3" in view.header.value


def test_a_forward_without_backward_is_said_so(trainer):
    trainer.step()
    model = trainer.model
    model.forward(np.zeros((1, 4), np.int64))                  # e.g. a prompt
    view = StepThrough(trainer=trainer)
    assert "no backward" in view.header.value
    assert all(op.phase == "forward" for op in view.ops)      # and no update entry


def test_static_html_lists_every_op(trainer):
    trainer.step()
    view = StepThrough(trainer)
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/html"].count("<tr>") == len(view.ops) + 1
    assert "crossentropy_softmax_backward" in bundle["text/html"]
    assert view.static_figure().data[0].z is not None


def test_display_slice_shapes_and_labels():
    x = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    z, label = display_slice(x)
    np.testing.assert_array_equal(z, x[0])
    assert label == "batch row 0"
    z, label = display_slice(np.ones((2, 4, 6, 6)))
    assert z.shape == (6, 6) and label == "batch row 0, head 0"
    z, label = display_slice(np.arange(10.0))
    assert z.shape == (1, 10) and label == ""
    z, label = display_slice(np.arange(600.0), max_side=256)   # wrapped, padded with NaN
    assert z.shape == (3, 256) and label == "as rows of 256"
    assert z[2, 87] == 599 and np.isnan(z[2, 88])
    z, label = display_slice(np.zeros((1000, 50)), max_side=256)
    assert z.shape == (256, 50) and "first 256 x 50" in label
    assert tensor_stats(np.array([1.0, 3.0])) == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0}


def test_bad_argument_is_refused():
    with pytest.raises(TypeError, match="GPT model or a Trainer"):
        StepThrough("a model")


def test_views_follow_a_background_trainer(trainer):
    from explorer.train.runner import BackgroundTrainer
    from explorer.viz import GradientFlow

    with BackgroundTrainer(trainer) as runner:
        steps = StepThrough(runner)
        flow = GradientFlow(runner, min_seconds=0)
        runner.step()                          # the dashboard's Step button: a run(1) on the thread
        runner.step()
    assert "after step 2" in steps.header.value and steps.op_names[-1] == "update"
    assert flow.recorder.steps == [1, 2] and list(flow.norms.data[0].x) == [1, 2]
