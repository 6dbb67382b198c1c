"""The op list (explorer/model/architecture.py) is the one description of the model that
forward, backward, generation and the buffer sizes all read."""
import dataclasses

import numpy as np
from conftest import randomize_params

from explorer import GPT, GPTConfig
from explorer.model.architecture import LOSS, gpt2_ops
from explorer.model.generate import next_token_logits

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=23, block_size=8)


def test_a_model_whose_op_list_is_cut_to_one_block_runs_as_a_one_block_model():
    """Give a 2-block model the op list of a 1-block one: its forward, backward, buffers and
    sampling must all become those of a real 1-block model with the same weights."""
    two = randomize_params(GPT(CONFIG), seed=4)
    two.ops = gpt2_ops(dataclasses.replace(CONFIG, n_layer=1))
    one = GPT(dataclasses.replace(CONFIG, n_layer=1))
    for name, p in one.params.items():
        p[...] = two.params[name]
    idx = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 6))
    logits_one, loss_one = one.forward(idx, idx)
    logits_two, loss_two = two.forward(idx, idx)
    np.testing.assert_array_equal(logits_two, logits_one)
    assert loss_two == loss_one
    assert not any(name.startswith("blocks.1.") for name in two.acts), "buffers of the cut block"
    one.backward()
    two.backward()
    for name, g in one.grads.items():
        np.testing.assert_array_equal(two.grads[name], g, err_msg=name)
    np.testing.assert_array_equal(next_token_logits(two, idx), next_token_logits(one, idx))
    np.testing.assert_array_equal(two.generate(idx, 5, temperature=0), one.generate(idx, 5, temperature=0))


def test_the_trace_follows_the_op_list_down_and_back_up():
    model = randomize_params(GPT(CONFIG), seed=1)
    idx = np.zeros((1, 4), np.int64)
    model.forward(idx, idx)
    model.backward()
    ops = model.ops + [LOSS]
    forward = [(r.name, r.kernel) for r in model.trace if r.phase == "forward"]
    assert forward == [(op.name, op.kernel) for op in ops]
    # every op with a backward kernel, bottom to top; a residual's backward is the add of the
    # two parts of its skip input's gradient, right after the layernorm that sends the second
    backward = [(r.inverts, r.kernel) for r in model.trace if r.phase == "backward"]
    expected = []
    for op in reversed(ops):
        if op.backward is not None:
            expected.append((op.name, op.backward))
        if op.kernel == "layernorm_forward" and op.name != "ln_f":
            block, ln = op.name.rsplit(".", 1)
            expected.append((f"{block}.{'residual1' if ln == 'ln1' else 'residual2'}", "residual_forward"))
    assert backward == expected
