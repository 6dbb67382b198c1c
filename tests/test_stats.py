"""explorer.train.stats: every recorded number against a direct recomputation from the model."""
import numpy as np
import pytest

from explorer import GPT, GPTConfig
from explorer.data import make_task
from explorer.train.stats import (
    ACT_EDGES,
    HIST_TENSORS,
    GradientRecorder,
    History,
    activation_stats,
    dead_fraction,
    dead_unit_fraction,
    gelu,
    histogram_counts,
    log2_edges_as_log10,
    log2_histogram_counts,
    saturated_fraction,
)
from explorer.train.trainer import Trainer


def small_trainer(seed=0, **options):
    data = make_task("reverse", length=4)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=data.vocab_size, block_size=16),
                seed=seed)
    return Trainer(model, data, batch_size=8, lr=3e-3, seed=seed, **options)


# ----------------------------------------------------------------------------- histograms


def test_histogram_counts_match_numpy_and_count_every_element():
    edges = np.linspace(-2.0, 2.0, 9)                     # 8 bins of width 0.5
    centers = (edges[:-1] + edges[1:]) / 2
    rng = np.random.default_rng(0)
    inside = rng.choice(centers, size=1000) + rng.uniform(-0.2, 0.2, size=1000)
    outside = np.array([-7.0, -2.5, 2.0, 3.0, 1e9, np.nan, -np.inf])
    values = np.concatenate([inside, outside]).astype(np.float32)
    counts = histogram_counts(values, edges)
    expected, _ = np.histogram(np.clip(inside, -2, 2), edges)
    expected[0] += 4            # -7, -2.5, -inf: below the range; NaN: nowhere, put first
    expected[-1] += 3           # 2.0 (the closed last edge), 3.0, 1e9
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == values.size


def test_log2_histogram_counts_match_frexp_and_hold_zeros():
    rng = np.random.default_rng(1)
    values = (rng.normal(size=5000) * 10.0 ** rng.uniform(-12, 1, size=5000)).astype(np.float32)
    values[:7] = 0.0
    values[7:10] = [np.inf, -np.inf, np.nan]
    lo, hi = -34, 0
    counts = log2_histogram_counts(values, (lo, hi))
    # reference: |x| = m 2^p with m in [0.5, 1)  =>  floor(log2 |x|) = p - 1
    finite = np.isfinite(values) & (values != 0)
    _, p = np.frexp(values[finite])
    expected = np.bincount(np.clip(p - 1, lo, hi - 1) - lo, minlength=hi - lo)
    expected[0] += 7            # zeros: below every bin
    expected[-1] += 3           # inf and NaN: above
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == values.size
    edges = log2_edges_as_log10((lo, hi))
    assert len(edges) == hi - lo + 1 and edges[-1] == 0.0
    assert edges[0] == pytest.approx(lo * np.log10(2))


def test_bad_bins_are_refused_with_the_value():
    with pytest.raises(ValueError, match="at least 2 edges"):
        histogram_counts(np.zeros(3), [1.0])
    with pytest.raises(ValueError, match=r"\(0, 0\)"):
        log2_histogram_counts(np.zeros(3), (0, 0))


# ----------------------------------------------------------------------------- GELU


def test_gelu_below_minus_three_is_dead_as_documented():
    # the claim in the docstring: for x < -3, |GELU(x)| < 0.004 and |GELU'(x)| < 0.012
    x = np.linspace(-12.0, -3.0001, 2001)
    h = 1e-5
    slope = (gelu(x + h) - gelu(x - h)) / (2 * h)
    assert np.abs(gelu(x)).max() < 0.004
    assert np.abs(slope).max() < 0.012
    # and at x = -1 it is clearly alive (so the threshold is not vacuous)
    assert abs((gelu(-1 + h) - gelu(-1 - h)) / (2 * h)) > 0.05


def test_saturated_dead_fractions():
    x = np.array([[-4.0, -3.5, 0.0, 3.5], [-5.0, 1.0, 2.0, -1.0], [-3.1, -0.5, 2.9, 4.0]])
    assert saturated_fraction(x) == pytest.approx(np.mean(np.abs(x) > 3))
    assert saturated_fraction(x) == pytest.approx(6 / 12)
    assert dead_fraction(x) == pytest.approx(4 / 12)
    # unit 0 (column 0) is below -3 on every row; no other unit is
    assert dead_unit_fraction(x) == pytest.approx(1 / 4)


# ----------------------------------------------------------------------------- the recorder


def test_grad_norms_and_update_ratio_equal_recomputation():
    trainer = small_trainer()
    model = trainer.model
    rec = GradientRecorder(trainer)
    for _ in range(3):
        before = {n: p.copy() for n, p in model.params.items()}
        trainer.step()
        norms = rec.series("grad_norm")[-1]
        ratios = rec.series("update_ratio")[-1]
        for i, name in enumerate(rec.param_names):
            assert norms[i] == pytest.approx(np.linalg.norm(model.grads[name].astype(np.float64)), rel=1e-6)
            change = np.linalg.norm(model.params[name].astype(np.float64) - before[name])
            size = np.linalg.norm(before[name].astype(np.float64))
            if size == 0:           # biases start at zero: no ratio on the first step
                assert np.isnan(ratios[i])
            else:
                assert ratios[i] == pytest.approx(change / size, rel=1e-5)
    assert rec.steps == [1, 2, 3]
    # at step 3 every parameter has moved, so every ratio is defined and of a sane size
    assert np.all(np.isfinite(ratios)) and np.all((ratios > 1e-6) & (ratios < 1))


def test_activation_stats_equal_recomputation():
    trainer = small_trainer()
    rec = GradientRecorder(trainer)
    trainer.step()
    model, L = trainer.model, trainer.model.config.n_layer
    steps, data = rec.snapshot()
    assert steps == [1]
    stream = ["encoded"] + [f"blocks.{l}.residual2" for l in range(L)]
    np.testing.assert_allclose(data["residual_std"][0], [np.std(model.acts[n], dtype=np.float64)
                                                         for n in stream], rtol=1e-6)
    np.testing.assert_allclose(data["residual_grad_std"][0], [np.std(model.grad_acts[n], dtype=np.float64)
                                                              for n in stream], rtol=1e-6)
    # layernorm input std, from the layernorm's own input (not from the cached rstd)
    ln_inputs = [("encoded" if l == 0 else f"blocks.{l - 1}.residual2", f"blocks.{l}.residual1")
                 for l in range(L)]
    inputs = [x for pair in ln_inputs for x in pair] + [f"blocks.{L - 1}.residual2"]
    want_std = [np.sqrt(model.acts[n].astype(np.float64).var(axis=-1) + 1e-5).mean() for n in inputs]
    want_mean = [np.abs(model.acts[n].astype(np.float64).mean(axis=-1)).mean() for n in inputs]
    np.testing.assert_allclose(data["ln_std"][0], want_std, rtol=1e-4)
    np.testing.assert_allclose(data["ln_mean_abs"][0], want_mean, rtol=1e-3, atol=1e-7)
    fc = [model.acts[f"blocks.{l}.mlp.fc"] for l in range(L)]
    np.testing.assert_allclose(data["gelu_saturated"][0], [np.mean(np.abs(x) > 3) for x in fc])
    np.testing.assert_allclose(data["gelu_dead"][0], [np.mean(x < -3) for x in fc])


def test_recorded_histograms_count_every_element():
    trainer = small_trainer()
    rec = GradientRecorder(trainer, hist_every=2)
    for _ in range(4):
        trainer.step()
    assert rec.hist_steps == [1, 3]
    step, act_h, grad_h = rec.latest_histograms()
    model = trainer.model
    assert step == 3 and set(act_h) == set(HIST_TENSORS) == set(grad_h)
    for t in HIST_TENSORS:
        for l in range(model.config.n_layer):
            name = f"blocks.{l}.{t}"
            assert act_h[t][l].sum() == model.acts[name].size
            assert grad_h[t][l].sum() == model.grad_acts[name].size
    # those counts are of step 3's tensors, now overwritten by step 4: compare with a fresh pair
    assert len(act_h["mlp.fc"][0]) == len(ACT_EDGES) - 1


def test_every_n_steps_still_measures_one_step_of_update():
    trainer = small_trainer()
    model = trainer.model
    rec = GradientRecorder(trainer, every=3)
    for _ in range(7):
        before = model.flat_params.copy()
        trainer.step()
        if rec.steps[-1] == trainer.step_count:
            i = rec.param_names.index("blocks.1.mlp.fc.weight")
            a, b = model.param_offsets[i], model.param_offsets[i + 1]
            want = np.linalg.norm(model.flat_params[a:b] - before[a:b]) / np.linalg.norm(before[a:b])
            assert rec.series("update_ratio")[-1][i] == pytest.approx(want, rel=1e-5)
    assert rec.steps == [1, 4, 7]


def test_layer_grad_norms_combine_a_layers_parameters():
    trainer = small_trainer()
    rec = GradientRecorder(trainer)
    trainer.step()
    g = trainer.model.grads
    layers = rec.layer_grad_norms()
    assert list(layers) == ["embedding", "layer 0", "layer 1", "final"]
    want = np.sqrt(sum(np.sum(g[n].astype(np.float64) ** 2) for n in g if n.startswith("blocks.1.")))
    assert layers["layer 1"][0] == pytest.approx(want, rel=1e-6)
    want = np.sqrt(np.sum(g["wte"].astype(np.float64) ** 2) + np.sum(g["wpe"].astype(np.float64) ** 2))
    assert layers["embedding"][0] == pytest.approx(want, rel=1e-6)


def test_history_stays_bounded_and_evenly_spaced():
    h = History(stride=1, max_kept=16)
    for step in range(1, 1001):
        if h.due(step):
            h.add(step, {"x": np.array([step])})
        assert len(h.steps) <= 16
    assert len(h.steps) >= 8
    assert len(set(np.diff(h.steps))) == 1               # evenly spaced
    assert h.steps[0] == 1 and 1000 - h.steps[-1] < h.stride
    np.testing.assert_array_equal(h.stacked("x")[:, 0], h.steps)


def test_recorder_memory_is_bounded_over_a_long_run():
    trainer = small_trainer()
    rec = GradientRecorder(trainer, max_steps_kept=8, hist_every=1)
    trainer.run(40)
    assert 4 <= len(rec.steps) <= 8 and 4 <= len(rec.hist_steps) <= 8
    assert rec.series("grad_norm").shape == (len(rec.steps), len(rec.param_names))


def test_model_without_trainer_and_misuse():
    trainer = small_trainer()
    model = trainer.model
    with pytest.raises(RuntimeError, match="backward"):
        GradientRecorder(model).record()
    x, y = trainer.data.get_batch("train", 4, 8, np.random.default_rng(0))
    model.forward(x, y)
    model.backward()
    rec = GradientRecorder(model)
    rec.record()
    rec.record()
    assert rec.steps == [0, 1]
    assert np.isnan(rec.series("update_ratio")).all()   # there was no update to measure
    with pytest.raises(KeyError, match="grad_norm"):
        rec.series("grad_norms")
    with pytest.raises(TypeError, match="Trainer or a GPT"):
        GradientRecorder("not a model")
    with pytest.raises(ValueError, match="every"):
        GradientRecorder(model, every=0)


def test_forward_only_pass_after_a_step_is_skipped_and_a_reset_starts_over():
    trainer = small_trainer()
    rec = GradientRecorder(trainer)
    trainer.step()
    # a view running the model on a prompt between the step and the recorder leaves no
    # backward to read: the recorder skips that step instead of mixing two passes
    def forward_only(metrics):
        trainer.model.forward(np.zeros((1, 4), np.int64))

    trainer.off("step", rec._on_step)
    trainer.on("step", forward_only)
    trainer.on("step", rec._on_step)
    trainer.step()
    assert rec.skipped == 1 and rec.steps == [1]
    trainer.step_count = 0                              # what a reset does
    trainer.off("step", forward_only)
    trainer.step()
    assert rec.steps == [1]                             # history cleared, step 1 of the new run
    rec.close()
    trainer.step()
    assert rec.steps == [1]


def test_record_listeners_see_each_new_record_until_they_unsubscribe():
    trainer = small_trainer()
    rec = GradientRecorder(trainer, every=2)
    seen = []
    listener = rec.on("record", lambda r: seen.append(r.steps[-1]))
    trainer.run(4)
    rec.off("record", listener)
    trainer.run(2)
    assert seen == [1, 3] and rec.steps == [1, 3, 5]
    with pytest.raises(ValueError, match="unknown event 'step'; expected one of: record"):
        rec.on("step", print)


def test_activation_stats_on_a_hand_made_model_state():
    # one layer, everything known: residual std 2, fc inputs all -4 (dead), rstd 0.5 (std 2)
    L, shape = 1, (2, 3, 4)
    acts = {"encoded": np.full(shape, 1.0, np.float32), "blocks.0.residual2": np.zeros(shape, np.float32)}
    acts["blocks.0.residual2"][..., ::2] = 2.0
    acts["blocks.0.residual2"][..., 1::2] = -2.0
    acts["blocks.0.mlp.fc"] = np.full((2, 3, 16), -4.0, np.float32)
    for ln in ("blocks.0.ln1", "blocks.0.ln2", "ln_f"):
        acts[ln + ".mean"] = np.full((2, 3), -0.25, np.float32)
        acts[ln + ".rstd"] = np.full((2, 3), 0.5, np.float32)
    grads = {n: np.ones(shape, np.float32) for n in ("encoded", "blocks.0.residual2")}
    s = activation_stats(acts, grads, L)
    np.testing.assert_allclose(s["residual_std"], [0.0, 2.0])
    np.testing.assert_allclose(s["residual_grad_std"], [0.0, 0.0])
    assert s["gelu_saturated"][0] == s["gelu_dead"][0] == s["gelu_dead_units"][0] == 1.0
    np.testing.assert_allclose(s["ln_std"], [2.0] * 3)
    np.testing.assert_allclose(s["ln_mean_abs"], [0.25] * 3)
