"""The training loop: AdamW + clipping against PyTorch, atomic steps, events, threads."""
import re
import threading

import numpy as np
import pytest
import torch
from helpers import assert_unchanged, randomize_params, snapshot
from torch_gpt2 import TorchGPT2, explorer_name_of, load_explorer_params, relative_error

from explorer import GPT, GPTConfig, Trainer, kernels
from explorer.lab.bench import RandomTokens
from explorer.train.trainer import TrainConfig, learning_rate

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=37, block_size=8)


def make_trainer(**options):
    model = randomize_params(GPT(CONFIG), seed=1)
    options = {"batch_size": 4, "lr": 1e-2, "warmup_steps": 3, "max_steps": 10, "min_lr": 1e-3,
               "grad_clip": 0.5, "seed": 0, **options}
    return Trainer(model, RandomTokens(CONFIG.vocab_size, CONFIG.block_size), **options)


def test_ten_adamw_steps_match_torch():
    trainer = make_trainer()
    torch_model = load_explorer_params(TorchGPT2.from_config(CONFIG), trainer.model.params)
    cfg = trainer.config
    decay = [p for n, p in torch_model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in torch_model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    batches = RandomTokens(CONFIG.vocab_size, CONFIG.block_size)
    rng = np.random.default_rng(cfg.seed)   # the same stream the trainer draws from
    clipped = 0
    for step in range(10):
        x, y = batches.get_batch("train", cfg.batch_size, CONFIG.block_size, rng)
        metrics = trainer.step()
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, cfg)
        opt.zero_grad()
        _, loss = torch_model(torch.from_numpy(x), torch.from_numpy(y))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(torch_model.parameters(), cfg.grad_clip)
        clipped += norm.item() > cfg.grad_clip
        opt.step()
        assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-5)
        assert metrics["grad_norm"] == pytest.approx(norm.item(), rel=1e-4)
    assert clipped > 0, "the test should exercise clipping"
    C = CONFIG.n_embd
    errors = {}
    for n, p in torch_model.named_parameters():
        ours, theirs = trainer.model.params[explorer_name_of(n)], p.detach().numpy()
        if n.endswith("attn.qkv.bias"):
            # The key bias adds the same q.b_k to every score of a row, which softmax ignores:
            # its exact gradient is 0, so both sides hold only rounding noise there, which
            # Adam (dividing by sqrt(v)) blows up to +-lr. Compare q and v biases only.
            keep = np.r_[0:C, 2 * C:3 * C]
            ours, theirs = ours[keep], theirs[keep]
        errors[n] = relative_error(ours, theirs)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"{worst} after 10 AdamW steps differs from torch by {errors[worst]:.2e}"


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=4, max_steps=14)
    assert learning_rate(0, cfg) == pytest.approx(0.25)
    assert learning_rate(3, cfg) == pytest.approx(1.0)
    assert learning_rate(9, cfg) == pytest.approx(0.55)   # half way down the cosine
    assert learning_rate(14, cfg) == pytest.approx(0.1)
    assert learning_rate(100, cfg) == pytest.approx(0.1)


def test_failing_kernel_leaves_trainer_unchanged():
    trainer = make_trainer()
    trainer.step()
    before = snapshot(trainer)

    def broken_gelu_backward(dinp, inp, dout):
        raise RuntimeError("student bug")

    with kernels.use(gelu_backward=broken_gelu_backward), pytest.raises(RuntimeError, match="student bug"):
        trainer.step()
    assert_unchanged(trainer, before)
    # and training goes on exactly as if the failed step had never happened
    reference = make_trainer()
    reference.step()
    assert trainer.step()["loss"] == reference.step()["loss"]


def test_half_finished_optimizer_kernel_is_rolled_back():
    trainer = make_trainer()
    before = snapshot(trainer)

    def adamw_that_dies_half_way(params, grads, m, v, *rest):
        params[: params.size // 2] -= 1.0
        m[:10] = 5.0
        raise MemoryError("out of memory half way")

    with kernels.use(adamw_update=adamw_that_dies_half_way), pytest.raises(MemoryError):
        trainer.step()
    assert_unchanged(trainer, before)


def test_nan_loss_refuses_to_update():
    trainer = make_trainer()
    trainer.model.params["wte"][0, 0] = np.nan
    before = snapshot(trainer)
    with pytest.raises(FloatingPointError, match="loss is nan"):
        for _ in range(3):   # a batch may miss token 0; three will not all miss it
            trainer.step()
    assert_unchanged(trainer, before)


def test_same_seed_same_run():
    a, b = make_trainer(), make_trainer()
    assert [a.step()["loss"] for _ in range(3)] == [b.step()["loss"] for _ in range(3)]
    c = make_trainer(seed=1)
    assert c.step()["loss"] != make_trainer().step()["loss"]


def test_events_and_stop():
    trainer = make_trainer(eval_interval=2, eval_batches=1)
    seen = {"step": [], "eval": [], "run_start": [], "run_end": []}
    for event in seen:
        trainer.on(event, seen[event].append)
    trainer.on("step", lambda m: trainer.stop() if m["step"] == 5 else None)
    trainer.run(10)
    assert [m["step"] for m in seen["step"]] == [1, 2, 3, 4, 5]
    assert [m["step"] for m in seen["eval"]] == [2, 4]
    assert np.isfinite(seen["eval"][0]["val_loss"])
    assert len(seen["run_start"]) == len(seen["run_end"]) == 1
    with pytest.raises(ValueError, match="unknown event"):
        trainer.on("stpe", print)


def test_bad_trainer_arguments():
    model = GPT(CONFIG)
    with pytest.raises(ValueError, match="block_size"):
        Trainer(model, RandomTokens(CONFIG.vocab_size, 64))
    with pytest.raises(ValueError, match="vocab_size"):
        Trainer(model, RandomTokens(CONFIG.vocab_size + 5, 8))
    with pytest.raises(ValueError, match="lr must be"):
        Trainer(model, RandomTokens(CONFIG.vocab_size, 8), lr=-1.0)


def test_concurrent_use_from_threads_is_safe():
    """Training in a background thread while the main thread runs the model: compute is
    serialised (Numba's workqueue layer would abort on concurrent parallel launches)."""
    trainer = make_trainer()
    other = randomize_params(GPT(CONFIG), seed=2)
    x = np.arange(16).reshape(2, 8) % CONFIG.vocab_size
    expected = other.forward(x)[0].copy()
    errors = []

    def train():
        try:
            trainer.run(20)
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=train)
    thread.start()
    results = [other.forward(x)[0].copy() for _ in range(20)]
    thread.join()
    assert not errors
    assert trainer.step_count == 20
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_kernel_that_writes_a_parameter_then_raises_is_rolled_back():
    """A student's layernorm zeroes its weight and raises: the step still changes nothing."""
    trainer = make_trainer()
    trainer.step()
    before = snapshot(trainer)

    def bad(out, mean, rstd, inp, weight, bias):
        weight[...] = 0
        raise RuntimeError("bug")

    with kernels.use(layernorm_forward=bad), pytest.raises(RuntimeError, match="bug"):
        trainer.step()
    assert_unchanged(trainer, before)


def test_ctrl_c_inside_a_step_waits_for_the_step_to_finish():
    """SIGINT in the middle of a step (here: inside a kernel) is held until the step has
    committed: the step counts, then KeyboardInterrupt. Without the hold, Python raises it
    in the middle of the step."""
    import os
    import signal
    trainer = make_trainer()
    shipped = kernels.shipped("gelu_forward")

    def gelu_then_ctrl_c(*args):
        shipped(*args)
        os.kill(os.getpid(), signal.SIGINT)

    reference = make_trainer()
    expected = reference.step()["loss"]
    with kernels.use(gelu_forward=gelu_then_ctrl_c), pytest.raises(KeyboardInterrupt):
        trainer.step()
    assert trainer.step_count == 1 and trainer.history[-1]["loss"] == expected
    np.testing.assert_array_equal(trainer.model.flat_params, reference.model.flat_params)


def test_moments_are_read_only_outside_a_step():
    """Only the optimizer writes m and v, so they cannot turn NaN behind its back."""
    trainer = make_trainer()
    trainer.step()
    with pytest.raises(ValueError, match="read-only"):
        trainer.m[0] = np.nan
    trainer.reset()
    assert trainer.step_count == 0 and not trainer.m.any() and not trainer.v.any()
    fresh = make_trainer()
    fresh.model.init_weights(0)   # reset() re-initialises from the seed, as GPT(config) does
    assert trainer.step()["loss"] == fresh.step()["loss"]


def test_update_that_makes_parameters_non_finite_is_refused():
    """The shipped path checks the parameters after AdamW (a learning rate that overflows
    float32); a swapped AdamW that writes NaN is refused and rolled back."""
    trainer = make_trainer(lr=1e38, warmup_steps=0, weight_decay=0.0)
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        trainer.step()
    trainer = make_trainer()
    before = snapshot(trainer)
    shipped = kernels.shipped("adamw_update")

    def adamw_with_a_nan(params, *rest):
        shipped(params, *rest)
        params[3] = np.nan

    with kernels.use(adamw_update=adamw_with_a_nan), pytest.raises(FloatingPointError):
        trainer.step()
    assert_unchanged(trainer, before)


@pytest.mark.parametrize("options, message", [
    ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0, got -0.1"),
    ({"eps": 0.0}, "eps must be a finite number > 0, got 0.0"),
    ({"grad_clip": -1.0}, "grad_clip must be a number >= 0 (0 or None turns clipping off), got -1.0"),
    ({"seq_len": 0}, "seq_len must be an integer >= 1, or None"),
    ({"seq_len": -4}, "seq_len must be an integer >= 1, or None"),
    ({"eval_interval": -1}, "eval_interval must be an integer >= 0 (0: never), got -1"),
    ({"lr": 1e-3, "min_lr": 0.427}, "min_lr=0.427 is larger than lr=0.001"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
    ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"warmup_steps": 1.5}, "warmup_steps must be an integer >= 0, got 1.5"),
    ({"beta2": 1.0}, r"beta2 must lie in \[0, 1\), got 1.0"),
])
def test_settings_are_validated_with_their_names(options, message):
    with pytest.raises(ValueError) as error:
        make_trainer(**options)
    assert re.search(message, str(error.value)) or message in str(error.value), str(error.value)


def test_run_refuses_a_negative_count():
    trainer = make_trainer()
    with pytest.raises(ValueError, match="steps must be an integer >= 0, got -5"):
        trainer.run(-5)
    assert trainer.run(0) is None and trainer.step_count == 0
