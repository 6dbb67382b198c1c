"""Hugging Face and llm.c formats: names, layouts, round trips, a golden check against
transformers' GPT2LMHeadModel (logits, loss and every gradient), and errors."""
import json
import os
import re
import warnings

import numpy as np
import pytest
import safetensors.numpy
from helpers import assert_same_params, peak_bytes_of, random_model

from explorer import GPTConfig
from explorer.io import llmc
from explorer.io.checkpoint import NoChecksumWarning
from explorer.io.hf import explorer_name, from_hf_state_dict, hf_config, hf_name, load_hf, save_hf, to_hf_state_dict
from explorer.io.llmc import MAGIC, load_llmc, padded_vocab_size, read_llmc_header, save_llmc

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=37, block_size=8)
# every HF folder and llm.c file loads with one NoChecksumWarning; the tests about that
# warning record it themselves (no_checksum_warnings), the others need not repeat it
pytestmark = pytest.mark.filterwarnings("ignore::explorer.io.checkpoint.NoChecksumWarning")


# --------------------------------------------------------------------------- HF names
def test_every_param_maps_to_hf_and_back():
    model = random_model(CONFIG)
    for name, _shape in model.param_shapes:
        key, transposed = hf_name(name)
        assert key.startswith("transformer.")
        assert explorer_name(key) == (name, transposed)
        assert explorer_name(key[len("transformer."):]) == (name, transposed)  # hub style
    assert hf_name("blocks.1.attn.qkv.weight") == ("transformer.h.1.attn.c_attn.weight", True)
    assert hf_name("blocks.0.mlp.proj.bias") == ("transformer.h.0.mlp.c_proj.bias", False)
    assert hf_name("ln_f.weight") == ("transformer.ln_f.weight", False)


def test_mask_buffers_are_skipped_but_c_attn_bias_is_not():
    assert explorer_name("h.3.attn.bias") is None
    assert explorer_name("transformer.h.0.attn.masked_bias") is None
    assert explorer_name("h.3.attn.c_attn.bias") == ("blocks.3.attn.qkv.bias", False)
    with pytest.raises(ValueError, match="not a GPT-2 parameter"):
        explorer_name("transformer.h.0.crossattention.c_attn.weight")
    with pytest.raises(ValueError, match="not a GPT parameter name"):
        hf_name("blocks.0.attn.qkv")


def test_state_dict_round_trip_transposes_conv1d_weights():
    model = random_model(CONFIG)
    hf = to_hf_state_dict(model.params)
    assert "lm_head.weight" not in hf
    assert hf["transformer.h.0.attn.c_attn.weight"].shape == (16, 48)    # Conv1D: (in, out)
    assert hf["transformer.h.1.mlp.c_proj.weight"].shape == (64, 16)
    np.testing.assert_array_equal(hf["transformer.h.1.mlp.c_fc.weight"],
                                  model.params["blocks.1.mlp.fc.weight"].T)
    back = from_hf_state_dict(to_hf_state_dict(model.params, include_lm_head=True))
    assert sorted(back) == sorted(model.params)
    for name in model.params:
        np.testing.assert_array_equal(back[name], model.params[name], err_msg=name)


def test_untied_or_duplicated_weights_are_refused():
    hf = to_hf_state_dict(random_model(CONFIG).params, include_lm_head=True)
    hf["lm_head.weight"] = hf["lm_head.weight"] + 1
    with pytest.raises(ValueError, match="untied output layer"):
        from_hf_state_dict(hf)
    hf = to_hf_state_dict(random_model(CONFIG).params)
    hf["wpe.weight"] = hf["transformer.wpe.weight"]
    with pytest.raises(ValueError, match="both 'transformer.wpe.weight' and 'wpe.weight'"):
        from_hf_state_dict(hf)


# --------------------------------------------------------------------------- HF files
def test_save_hf_load_hf_round_trip_is_bit_exact(tmp_path):
    model = random_model(CONFIG)
    save_hf(model, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert (config["n_positions"], config["n_embd"], config["vocab_size"]) == (8, 16, 37)
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-5
    assert config["eos_token_id"] is None          # 50256 is not in a 37-token vocabulary
    assert_same_params(load_hf(tmp_path / "out"), model)


def hub_gpt2_config(config):
    """config.json as the hub's "gpt2" repository publishes it, resized to `config`."""
    return {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
            "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
            "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
            "n_ctx": config.block_size, "n_embd": config.n_embd, "n_head": config.n_head,
            "n_layer": config.n_layer, "n_positions": config.block_size, "resid_pdrop": 0.1,
            "summary_activation": None, "summary_first_dropout": 0.1,
            "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
            "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
            "vocab_size": config.vocab_size}


def write_hub_folder(folder, model):
    """The hub gpt2 layout: keys without "transformer.", causal-mask buffers, no lm_head."""
    os.makedirs(folder)
    T = model.config.block_size
    tensors = {k[len("transformer."):]: v for k, v in to_hf_state_dict(model.params).items()}
    for l in range(model.config.n_layer):
        tensors[f"h.{l}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
        tensors[f"h.{l}.attn.masked_bias"] = np.array(-1e4, np.float32)
    safetensors.numpy.save_file(tensors, os.path.join(folder, "model.safetensors"),
                                metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hub_gpt2_config(model.config), f)


def write_sharded_folder(folder, model, index=None):
    """An HF folder with the weights in two shards and an index (by default, a correct one)."""
    hf = to_hf_state_dict(model.params)
    keys = sorted(hf)
    shards = {"model-00001-of-00002.safetensors": keys[:10],
              "model-00002-of-00002.safetensors": keys[10:]}
    for shard, names in shards.items():
        safetensors.numpy.save_file({k: hf[k] for k in names}, str(folder / shard))
    if index is None:
        index = {"weight_map": {k: shard for shard, names in shards.items() for k in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(hf_config(model.config)))


def test_load_hf_reads_the_hub_layout(tmp_path):
    model = random_model(CONFIG)
    write_hub_folder(tmp_path / "gpt2", model)
    assert_same_params(load_hf(tmp_path / "gpt2"), model)


def test_load_hf_reads_sharded_checkpoints(tmp_path):
    model = random_model(CONFIG)
    write_sharded_folder(tmp_path, model)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model-00001-of-00002.safetensors",
                                            "model-00002-of-00002.safetensors",
                                            "model.safetensors.index.json"]
    assert_same_params(load_hf(tmp_path), model)


def test_load_hf_refuses_pickles_and_says_what_to_do(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(hf_config(CONFIG)))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02 a pickle")
    with pytest.raises(ValueError, match="never unpickles.*model.safetensors"):
        load_hf(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"activation_function": "relu"}, "activation_function is 'relu'"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon is 1e-06"),
    ({"n_inner": 100}, "n_inner is 100"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings is False"),
    ({"model_type": "llama"}, "model_type is 'llama'"),
    ({"n_embd": 32}, r"'wte' has shape \(37, 16\), expected \(37, 32\)"),
    ({"n_embd": 15}, r"n_embd \(15\) must be divisible by n_head \(2\)"),
    ({"n_head": None}, "n_head must be a positive integer"),
])
def test_load_hf_config_errors(tmp_path, change, message):
    save_hf(random_model(CONFIG), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, **change)))
    with pytest.raises(ValueError, match=message):
        load_hf(tmp_path)


def test_load_hf_config_without_sizes(tmp_path):
    save_hf(random_model(CONFIG), tmp_path)
    config = hf_config(CONFIG)
    for key in ("n_layer", "n_positions", "n_ctx"):
        del config[key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"has no \['n_layer', 'n_positions'\]"):
        load_hf(tmp_path)


def test_load_hf_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_hf(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(hf_config(CONFIG)))
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        load_hf(tmp_path)


def test_load_hf_missing_tensor(tmp_path):
    save_hf(random_model(CONFIG), tmp_path)
    tensors = safetensors.numpy.load_file(tmp_path / "model.safetensors")
    del tensors["transformer.h.1.ln_2.bias"]
    safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="missing \\['blocks.1.ln2.bias'\\]"):
        load_hf(tmp_path)


def save_hf_tensors(folder, tensors):
    """An HF folder holding exactly `tensors` (HF names and layout) and CONFIG's config.json."""
    os.makedirs(folder, exist_ok=True)
    safetensors.numpy.save_file(tensors, os.path.join(folder, "model.safetensors"),
                                metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config(CONFIG), f)


def bfloat16_bits(array):
    """The bfloat16 bits (uint16) of float32 values that bfloat16 holds exactly."""
    bits = np.ascontiguousarray(array, np.float32).view(np.uint32)
    assert not (bits & 0xFFFF).any(), "choose values with 8 significant bits"
    return (bits >> 16).astype(np.uint16)


@pytest.mark.parametrize("dtype", ["float16", "float64", "bfloat16"])
def test_load_hf_converts_other_float_dtypes_to_float32(tmp_path, dtype):
    model = random_model(CONFIG)
    for p in model.params.values():   # values every format holds exactly
        p[...] = np.round(p * 64) / 64
    tensors = to_hf_state_dict(model.params)
    if dtype == "bfloat16":   # NumPy has no bfloat16: write the bits, then relabel them
        save_hf_tensors(tmp_path, {k: bfloat16_bits(v) for k, v in tensors.items()})
        path = tmp_path / "model.safetensors"
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = raw[8:8 + n].replace(b'"U16"', b'"BF16"')
        path.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + n:])
    else:
        save_hf_tensors(tmp_path, {k: v.astype(dtype) for k, v in tensors.items()})
    loaded = load_hf(tmp_path)
    assert_same_params(loaded, model)


def test_load_hf_refuses_integer_weights_before_allocating(tmp_path):
    tensors = to_hf_state_dict(random_model(CONFIG).params)
    tensors["transformer.wpe.weight"] = tensors["transformer.wpe.weight"].astype(np.int32)
    save_hf_tensors(tmp_path, tensors)
    with pytest.raises(ValueError, match=re.escape("tensor 'transformer.wpe.weight' is int32, "
                                                   "expected floats (F32, F16, F64, BF16)")):
        load_hf(tmp_path)


def test_load_hf_reads_a_tied_lm_head_and_refuses_an_untied_one(tmp_path):
    model = random_model(CONFIG)
    tensors = to_hf_state_dict(model.params, include_lm_head=True)
    save_hf_tensors(tmp_path / "tied", tensors)
    assert_same_params(load_hf(tmp_path / "tied"), model)
    only_head = {k: v for k, v in tensors.items() if k != "transformer.wte.weight"}
    save_hf_tensors(tmp_path / "head-only", only_head)   # the head alone gives wte
    assert_same_params(load_hf(tmp_path / "head-only"), model)
    tensors["lm_head.weight"] = tensors["lm_head.weight"].copy()
    tensors["lm_head.weight"][36, 15] += 1e-3    # the last row: the block-wise check sees it
    save_hf_tensors(tmp_path / "untied", tensors)
    with pytest.raises(ValueError, match="untied output layer"):
        load_hf(tmp_path / "untied")


def test_load_hf_reads_into_the_model_without_a_second_copy(tmp_path):
    """Besides the model's own two buffers (params, and grads that stay zero), loading may
    hold one tensor-sized block: not a copy of the weights (the old path held two)."""
    config = GPTConfig(n_layer=3, n_head=4, n_embd=128, vocab_size=3001, block_size=64)
    model = random_model(config)
    save_hf(model, tmp_path)
    largest = max(p.nbytes for p in model.params.values())
    loaded = []
    peak = peak_bytes_of(lambda: loaded.append(load_hf(tmp_path)))
    extra = peak - 2 * model.flat_params.nbytes
    print(f"\nload_hf: {extra / 2**20:.2f} MiB beyond the model's buffers "
          f"({model.flat_params.nbytes / 2**20:.2f} MiB of params)")
    assert extra < largest + 2**20, (extra, largest)
    assert_same_params(loaded[0], model)


# --------------------------------------------------------------------------- HF golden
# Relative error of a tensor: max |ours - theirs| / max |theirs|, a scale-aware measure
# that does not blow up on entries that happen to be near zero.
def rel_err(ours, theirs):
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))


GOLDEN_CASES = [  # (config, B, T, strong weights?)
    (GPTConfig(n_layer=2, n_head=1, n_embd=16, vocab_size=37, block_size=8), 1, 1, False),
    (GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=37, block_size=8), 3, 8, False),
    (GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=37, block_size=8), 3, 8, True),
    (GPTConfig(n_layer=3, n_head=4, n_embd=32, vocab_size=131, block_size=16), 2, 11, False),
    (GPTConfig(n_layer=3, n_head=4, n_embd=32, vocab_size=131, block_size=16), 2, 16, True),
    (GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=5, block_size=4), 1, 4, True),
]


@pytest.mark.parametrize("config, B, T, strong", GOLDEN_CASES)
def test_transformers_gpt2_matches_logits_loss_and_every_gradient(tmp_path, config, B, T, strong):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = random_model(config, seed=config.n_embd + T, strong=strong)
    save_hf(model, tmp_path)
    hf, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}   # no missing/unexpected/mismatched keys
    hf = hf.float().eval()

    rng = np.random.default_rng(T)
    idx = rng.integers(0, config.vocab_size, size=(B, T))
    targets = rng.integers(0, config.vocab_size, size=(B, T))
    logits, loss = model.forward(idx, targets)
    model.backward()

    hf_logits = hf(torch.from_numpy(idx)).logits
    # our targets are already the next tokens, so no shift (HF's labels= would shift them)
    hf_loss = torch.nn.functional.cross_entropy(hf_logits.reshape(-1, config.vocab_size),
                                                torch.from_numpy(targets).reshape(-1))
    hf_loss.backward()
    # named_parameters() lists the tied wte/lm_head tensor once, with both uses summed
    hf_grads = from_hf_state_dict({n: p.grad for n, p in hf.named_parameters()})

    errors = {"logits": rel_err(logits, hf_logits.detach().numpy()),
              "loss": abs(loss - hf_loss.item()) / abs(hf_loss.item())}
    assert sorted(hf_grads) == sorted(model.grads)
    errors.update({name: rel_err(model.grads[name], hf_grads[name]) for name in model.grads})
    worst = max(errors, key=errors.get)
    print(f"\n{config} B={B} T={T} strong={strong}: max rel err {errors[worst]:.2e} ({worst}); "
          f"logits {errors['logits']:.2e}, loss {errors['loss']:.2e}")
    assert errors[worst] <= 1e-4, errors


def test_load_hf_reads_what_transformers_save_pretrained_writes(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=37,
                                     n_positions=8, bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    hf.save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    idx = np.random.default_rng(0).integers(0, 37, size=(2, 8))
    logits, _ = model.forward(idx)
    with torch.no_grad():
        expected = hf(torch.from_numpy(idx)).logits.numpy()
    assert rel_err(logits, expected) <= 1e-5


# --------------------------------------------------------------------------- llm.c
LLMC_ORDER = ["ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
              "attn.proj.bias", "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias",
              "mlp.proj.weight", "mlp.proj.bias"]


def llmc_bytes(model, version=3, dtype="<f4"):
    """An llm.c file built tensor by tensor in train_gpt2.c's order (independent of our
    flat buffer): wte (padded for v3+), wpe, each block tensor stacked over layers, ln_f."""
    cfg, p = model.config, model.params
    V, C, L = cfg.vocab_size, cfg.n_embd, cfg.n_layer
    Vp = padded_vocab_size(V) if version >= 3 else V
    header = np.zeros(256, "<i4")
    header[:8] = [MAGIC, version, cfg.block_size, V, L, cfg.n_head, C, Vp if version >= 3 else 0]
    wte = np.zeros((Vp, C), np.float32)
    wte[:V] = p["wte"]
    tensors = [wte, p["wpe"]]
    tensors += [np.stack([p[f"blocks.{l}.{s}"] for l in range(L)]) for s in LLMC_ORDER]
    tensors += [p["ln_f.weight"], p["ln_f.bias"]]
    body = np.concatenate([t.ravel() for t in tensors])
    if dtype == "bf16":
        body = (body.view(np.uint32) >> 16).astype("<u2")
    return header.tobytes() + body.astype(body.dtype.newbyteorder("<")).tobytes()


@pytest.mark.parametrize("config", [CONFIG, GPTConfig(n_layer=1, n_head=1, n_embd=8,
                                                      vocab_size=128, block_size=4)])
def test_save_llmc_writes_llmc_layout_and_round_trips(tmp_path, config):
    model = random_model(config)
    path = tmp_path / "model.bin"
    save_llmc(model, path)
    assert path.read_bytes() == llmc_bytes(model)
    header = read_llmc_header(path)
    assert header["config"] == config and header["version"] == 3
    assert header["padded_vocab_size"] == 128
    assert_same_params(load_llmc(path), model)


def test_padded_vocab_size_and_gpt2_124M_size():
    from explorer.model.config import param_shapes
    assert padded_vocab_size(50257) == 50304
    # llm.c reports num_parameters: 124475904 for gpt2_124M.bin (wte padded to 50304 rows)
    gpt2 = GPTConfig()
    unpadded = sum(int(np.prod(shape)) for _, shape in param_shapes(gpt2))
    assert unpadded + (50304 - 50257) * gpt2.n_embd == 124_475_904
    assert padded_vocab_size(128) == 128 and padded_vocab_size(1) == 128


def test_load_llmc_reads_unpadded_version_2(tmp_path):
    model = random_model(CONFIG)
    (tmp_path / "v2.bin").write_bytes(llmc_bytes(model, version=2))
    assert_same_params(load_llmc(tmp_path / "v2.bin"), model)


def test_load_llmc_reads_bfloat16_version_5(tmp_path):
    model = random_model(CONFIG)
    model.flat_params.view(np.uint32)[...] &= 0xFFFF0000   # make every value exact in bf16
    (tmp_path / "v5.bin").write_bytes(llmc_bytes(model, version=5, dtype="bf16"))
    assert_same_params(load_llmc(tmp_path / "v5.bin"), model)


def write_with_header(path, data, **changes):
    header = np.frombuffer(data[:1024], "<i4").copy()
    for index, value in changes.items():
        header[int(index[1:])] = value
    path.write_bytes(header.tobytes() + data[1024:])


@pytest.mark.parametrize("changes, message", [
    ({"h0": 20240328}, "magic number 20240328, expected 20240326: it is an llm.c tokenizer"),
    ({"h0": 1234}, "magic number 1234, expected 20240326: it is not an llm.c GPT-2"),
    ({"h1": 4}, "version 4; explorer reads versions \\[1, 2, 3, 5\\]"),
    ({"h7": 16}, "Vp=16 \\(header\\[7\\]\\) is smaller than V=37"),
    ({"h5": 3}, "impossible header.*must be divisible"),
    ({"h4": 3}, "is truncated"),                  # one layer more than the file holds
    ({"h2": 7}, "is too long"),                   # one position fewer
    ({"h7": 256}, "is truncated"),                # more padding rows than written
])
def test_load_llmc_errors(tmp_path, changes, message):
    save_llmc(random_model(CONFIG), tmp_path / "good.bin")
    write_with_header(tmp_path / "bad.bin", (tmp_path / "good.bin").read_bytes(), **changes)
    with pytest.raises(ValueError, match=message):
        load_llmc(tmp_path / "bad.bin")


def test_load_llmc_truncated_and_missing(tmp_path):
    save_llmc(random_model(CONFIG), tmp_path / "m.bin")
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-4])
    with pytest.raises(ValueError, match="is truncated"):
        load_llmc(tmp_path / "cut.bin")
    (tmp_path / "tiny.bin").write_bytes(data[:100])
    with pytest.raises(ValueError, match="too short"):
        load_llmc(tmp_path / "tiny.bin")
    with pytest.raises(FileNotFoundError):
        load_llmc(tmp_path / "nope.bin")


def test_failed_save_llmc_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.bin"
    save_llmc(random_model(CONFIG, seed=1), path)
    old = path.read_bytes()
    real_open = open

    class FailsAfterHeader:  # the disk fills up after the first write
        def __init__(self, file):
            self.file, self.writes = file, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.writes += 1
            if self.writes > 1:
                raise OSError("disk full (simulated)")
            self.file.write(data)
    monkeypatch.setattr(llmc, "open", lambda p, mode: FailsAfterHeader(real_open(p, mode)),
                        raising=False)
    with pytest.raises(OSError, match="disk full"):
        save_llmc(random_model(CONFIG, seed=2), path)
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["m.bin"]


# --------------------------------------------------------------------------- integrity
def no_checksum_warnings(load, *args):
    """(what load(*args) returns, the NoChecksumWarnings it gave), every warning recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load(*args)
    return result, [w for w in caught if issubclass(w.category, NoChecksumWarning)]


def test_load_llmc_warns_once_that_there_is_no_checksum(tmp_path):
    model = random_model(CONFIG)
    save_llmc(model, tmp_path / "m.bin")
    loaded, warned = no_checksum_warnings(load_llmc, tmp_path / "m.bin")
    assert_same_params(loaded, model)
    assert len(warned) == 1   # one per file, not one per tensor
    assert f"{tmp_path / 'm.bin'} is an llm.c checkpoint" in str(warned[0].message)


@pytest.mark.parametrize("header", [
    {"h3": 2 * 10**9, "h7": 2 * 10**9},  # V: 60 GiB of wte, a MemoryError if allocated
    {"h3": 10**6, "h7": 10**6},     # 64 MB: fits, but must not be allocated before the check
    {"h4": 10**5},                  # L: 1.2 million parameter names, 1.3 GB
])
def test_load_llmc_header_claiming_a_huge_model_says_truncated_without_allocating(tmp_path, header):
    save_llmc(random_model(CONFIG), tmp_path / "good.bin")
    write_with_header(tmp_path / "1kb.bin", (tmp_path / "good.bin").read_bytes()[:1024], **header)

    def attempt():
        with pytest.raises(ValueError, match="1kb.bin is truncated: a version-3 file of"):
            load_llmc(tmp_path / "1kb.bin")
    assert peak_bytes_of(attempt) < 4 * 2**20


@pytest.mark.parametrize("version", [2, 3])
def test_load_llmc_refuses_non_finite_weights(tmp_path, version):
    model = random_model(CONFIG)
    model.params["blocks.1.attn.qkv.weight"][7, 3] = np.nan
    model.params["blocks.1.attn.qkv.weight"][9, 0] = np.inf
    (tmp_path / "nan.bin").write_bytes(llmc_bytes(model, version=version))
    message = (f"{tmp_path / 'nan.bin'}: tensor 'blocks.1.attn.qkv.weight' holds 2 non-finite "
               f"values (1 NaN, 1 infinite) out of 768, the first at index (7, 3)")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_llmc(tmp_path / "nan.bin")


@pytest.mark.parametrize("layout", ["save_hf", "hub", "sharded"])
def test_load_hf_warns_once_per_call_that_there_is_no_checksum(tmp_path, layout):
    model = random_model(CONFIG)
    folder = tmp_path / "gpt2"
    if layout == "save_hf":
        save_hf(model, folder)
    elif layout == "hub":
        write_hub_folder(folder, model)
    else:
        folder.mkdir()
        write_sharded_folder(folder, model)
    for _ in range(2):
        loaded, warned = no_checksum_warnings(load_hf, folder)
        assert_same_params(loaded, model)
        assert len(warned) == 1   # one per call, not per tensor or per shard
        assert f"{folder} is a Hugging Face folder" in str(warned[0].message)


@pytest.mark.parametrize("change, message", [
    ({"vocab_size": 10**9}, "'wte' has shape (37, 16), expected (1000000000, 16)"),   # 64 GB
    ({"vocab_size": 10**6}, "'wte' has shape (37, 16), expected (1000000, 16)"),      # 64 MB
    ({"n_layer": 10**5}, "has 1200004 parameter tensors, but only 28 were found"),   # 1.3 GB
])
def test_load_hf_config_claiming_a_huge_model_fails_before_allocating_it(tmp_path, change,
                                                                          message):
    save_hf(random_model(CONFIG), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, **change)))

    def attempt():
        with pytest.raises(ValueError, match=re.escape(f"the weights in {tmp_path} do not match "
                                                       f"its config.json") + ".*"
                                             + re.escape(message)):
            load_hf(tmp_path)
    assert peak_bytes_of(attempt) < 4 * 2**20


def test_load_hf_refuses_non_finite_weights(tmp_path):
    model = random_model(CONFIG)
    model.params["blocks.0.mlp.fc.weight"][5, 2] = np.nan   # (out, in): HF stores it (in, out)
    save_hf(model, tmp_path)
    message = (f"{tmp_path / 'model.safetensors'}: tensor 'transformer.h.0.mlp.c_fc.weight' "
               f"holds 1 non-finite values (1 NaN, 0 infinite) out of 1024, the first at index "
               f"(2, 5)")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_hf(tmp_path)


@pytest.mark.parametrize("index, message", [
    ({"metadata": {"total_size": 1}}, (r"has no \"weight_map\" \(it has \['metadata'\]\); "
                                       r"expected a \"weight_map\" object \{tensor name: "
                                       r"shard file name\}")),
    ([1, 2], r"has no \"weight_map\" \(it has list\)"),
    ({"weight_map": ["model-00001-of-00002.safetensors"]}, r"\"weight_map\" is \['model-0"),
])
def test_load_hf_index_without_a_weight_map(tmp_path, index, message):
    write_sharded_folder(tmp_path, random_model(CONFIG), index=index)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "model.safetensors.index.json"))
                       + ".*" + message):
        load_hf(tmp_path)
