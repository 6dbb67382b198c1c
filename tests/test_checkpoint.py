"""Checkpoints: bit-exact round trips, trainer state, atomic writes, checksums, and errors
for people."""
import hashlib
import json
import os
import re
import warnings
from functools import partial

import helpers
import numpy as np
import pytest
import safetensors.numpy
from helpers import assert_same_params, assert_unchanged, peak_bytes_of, snapshot

from explorer import GPT, GPTConfig
from explorer.io.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    METADATA_KEY,
    Checkpoint,
    NoChecksumWarning,
    load,
    load_params,
    save,
)

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=37, block_size=8)


random_model = partial(helpers.random_model, CONFIG)   # every model here has CONFIG's shape


class FakeTokenizer:
    def to_dict(self):
        return {"kind": "char", "chars": "abc"}


class FakeData:
    tokenizer = FakeTokenizer()


class FakeTrainer:
    """The duck-typed trainer interface that save() and Checkpoint.restore() rely on."""
    def __init__(self, model, step=7):
        self.model = model
        self.data = FakeData()
        rng = np.random.default_rng(step)
        self.m = rng.normal(size=model.num_params).astype(np.float32)
        self.v = rng.random(model.num_params).astype(np.float32)
        self.step_count = step
        self.restored = None

    def checkpoint_state(self):
        return ({"adamw.m": self.m, "adamw.v": self.v},
                {"step": self.step_count, "lr": np.float32(0.25), "betas": [0.9, 0.95]})

    def check_state(self, arrays, meta, source):
        return arrays, meta

    def put_state(self, state):
        self.restored = state


# --------------------------------------------------------------------------- round trips
def test_model_round_trip_is_bit_exact(tmp_path):
    model = random_model()
    path = tmp_path / "model.safetensors"
    assert save(model, path) == str(path)
    ckpt = load(path)
    assert isinstance(ckpt, Checkpoint)
    assert_same_params(ckpt.model, model)
    # the loaded params are views of the model's one flat buffer, as for a fresh model
    assert np.shares_memory(ckpt.model.params["wte"], ckpt.model.flat_params)
    np.testing.assert_array_equal(ckpt.model.flat_params, model.flat_params)
    assert ckpt.step is None and ckpt.optimizer_arrays == {} and ckpt.trainer_meta == {}
    assert ckpt.tokenizer is None
    assert ckpt.metadata["format"] == FORMAT_NAME and ckpt.metadata["version"] == FORMAT_VERSION
    assert ckpt.metadata["config"] == CONFIG.to_dict()


def test_file_is_plain_safetensors_with_our_names(tmp_path):
    model = random_model()
    save(model, tmp_path / "m.safetensors", tokenizer={"kind": "bytes"})
    tensors = safetensors.numpy.load_file(tmp_path / "m.safetensors")
    assert sorted(tensors) == sorted(name for name, _ in model.param_shapes)
    with safetensors.safe_open(tmp_path / "m.safetensors", framework="np") as f:
        header = json.loads(f.metadata()[METADATA_KEY])
    assert header["tokenizer"] == {"kind": "bytes"}


def test_trainer_round_trip_keeps_optimizer_state_step_and_tokenizer(tmp_path):
    trainer = FakeTrainer(random_model(), step=7)
    save(trainer, tmp_path / "t.safetensors")
    ckpt = load(tmp_path / "t.safetensors")
    assert_same_params(ckpt.model, trainer.model)
    assert ckpt.step == 7
    assert sorted(ckpt.optimizer_arrays) == ["adamw.m", "adamw.v"]
    np.testing.assert_array_equal(ckpt.optimizer_arrays["adamw.m"], trainer.m)
    np.testing.assert_array_equal(ckpt.optimizer_arrays["adamw.v"], trainer.v)
    assert ckpt.trainer_meta == {"step": 7, "lr": 0.25, "betas": [0.9, 0.95]}
    assert ckpt.tokenizer == {"kind": "char", "chars": "abc"}   # found via trainer.data

    other = FakeTrainer(GPT(CONFIG, seed=5), step=0)
    ckpt.restore(other)
    assert_same_params(other.model, trainer.model)
    arrays, meta = other.restored
    np.testing.assert_array_equal(arrays["adamw.v"], trainer.v)
    assert meta["step"] == 7


def test_explicit_tokenizer_object_wins(tmp_path):
    class Other:
        def to_dict(self):
            return {"kind": "other"}
    save(FakeTrainer(random_model()), tmp_path / "t.safetensors", tokenizer=Other())
    assert load(tmp_path / "t.safetensors").tokenizer == {"kind": "other"}


def test_restore_refuses_a_trainer_with_another_config(tmp_path):
    save(random_model(), tmp_path / "m.safetensors")
    other = FakeTrainer(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=37, block_size=8)))
    with pytest.raises(ValueError, match="build the trainer around ckpt.model"):
        load(tmp_path / "m.safetensors").restore(other)


class TinyData:
    """Random token batches: enough for the real Trainer."""
    vocab_size = CONFIG.vocab_size

    def get_batch(self, split, batch_size, seq_len, rng):
        x = rng.integers(0, self.vocab_size, size=(batch_size, seq_len + 1))
        return x[:, :-1], x[:, 1:]


def test_real_trainer_resumes_exactly(tmp_path):
    from explorer import Trainer
    options = dict(batch_size=2, lr=1e-2, warmup_steps=2, max_steps=10, seed=3)
    trainer = Trainer(random_model(), TinyData(), **options)
    for _ in range(2):
        trainer.step()
    save(trainer, tmp_path / "run.safetensors")
    expected = [trainer.step()["loss"] for _ in range(2)]

    ckpt = load(tmp_path / "run.safetensors")
    assert ckpt.step == 2
    resumed = Trainer(ckpt.model, TinyData(), **options)
    ckpt.restore(resumed)
    assert [resumed.step()["loss"] for _ in range(2)] == expected
    np.testing.assert_array_equal(resumed.model.flat_params, trainer.model.flat_params)


# --------------------------------------------------------------------------- load_params
def test_load_params_copies_in_place_and_checks_everything_first():
    source, target = random_model(seed=1), GPT(CONFIG, seed=2)
    flat = target.flat_params
    load_params(target, source.params)
    assert target.flat_params is flat
    assert_same_params(target, source)

    before = target.flat_params.copy()
    bad = dict(source.params, **{"blocks.1.mlp.fc.weight": np.zeros((64, 15), np.float32)})
    with pytest.raises(ValueError, match=r"'blocks.1.mlp.fc.weight' has shape \(64, 15\), "
                                         r"expected \(64, 16\)"):
        load_params(target, bad)
    np.testing.assert_array_equal(target.flat_params, before)   # nothing half-copied

    with pytest.raises(ValueError, match="missing \\['wpe'\\]"):
        load_params(target, {k: v for k, v in source.params.items() if k != "wpe"})
    with pytest.raises(ValueError, match="unexpected \\['lm_head.weight'\\]"):
        load_params(target, dict(source.params, **{"lm_head.weight": source.params["wte"]}))
    with pytest.raises(ValueError, match="dtype int64"):
        load_params(target, dict(source.params, wpe=np.zeros((8, 16), np.int64)))


# --------------------------------------------------------------------------- atomic writes
def test_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save(random_model(seed=1), path)
    old = path.read_bytes()

    def half_write_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(safetensors.numpy, "save_file", half_write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save(random_model(seed=2), path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_save_overwrites_and_rejects_bad_targets(tmp_path):
    path = tmp_path / "m.safetensors"
    save(random_model(seed=1), path)
    save(random_model(seed=2), path)
    assert_same_params(load(path).model, random_model(seed=2))
    assert os.listdir(tmp_path) == ["m.safetensors"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save(random_model(), tmp_path / "no" / "such" / "m.safetensors")
    with pytest.raises(TypeError, match="expects a GPT or a trainer"):
        save({"wte": 1}, tmp_path / "x.safetensors")


def test_unserialisable_metadata_fails_before_writing(tmp_path):
    trainer = FakeTrainer(random_model())
    trainer.checkpoint_state = lambda: ({}, {"callback": print})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save(trainer, tmp_path / "t.safetensors")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- bad files
def write_raw(path, tensors, header):
    """A safetensors file with any tensors and any 'explorer' metadata (dict or raw str)."""
    text = header if isinstance(header, str) else json.dumps(header)
    safetensors.numpy.save_file(tensors, str(path), metadata={METADATA_KEY: text})


def good_header(**changes):
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": CONFIG.to_dict(),
              "step": None, "trainer": None, "tokenizer": None}
    header.update(changes)
    return header


def params_of(model):
    return {k: v.copy() for k, v in model.params.items()}


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="is a folder"):
        load(tmp_path)


@pytest.mark.parametrize("content, message", [
    (b"", "only 0 bytes long"),
    (b"\x00" * 5, "only 5 bytes long"),
    (b"PK\x03\x04 this is a zip file, not safetensors" * 4, "not a safetensors file"),
    ((12).to_bytes(8, "little") + b"not json at!", "header is not the expected JSON"),
])
def test_not_a_safetensors_file(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load(path)


@pytest.mark.parametrize("cut", [1, 1000, "header"])
def test_truncated_file(tmp_path, cut):
    path = tmp_path / "m.safetensors"
    save(random_model(), path)
    data = path.read_bytes()
    keep = 20 if cut == "header" else len(data) - cut
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="truncated"):
        load(path)


def test_safetensors_file_that_is_not_ours(tmp_path):
    path = tmp_path / "hf.safetensors"
    safetensors.numpy.save_file({"wte.weight": np.zeros((2, 2), np.float32)}, str(path),
                                metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not an explorer checkpoint.*load_hf"):
        load(path)


@pytest.mark.parametrize("header, message", [
    ("{not json", "corrupt: its 'explorer' metadata is not valid JSON"),
    ("[1, 2]", "should be a JSON object"),
    (good_header(format="something-else"), "format 'something-else', expected "
                                            "'transformer-explorer-checkpoint'"),
    (good_header(version=99), "version 99; this explorer reads versions 1..2"),
    (good_header(config=None), "no model config"),
    (good_header(config=dict(CONFIG.to_dict(), n_head=3)), "n_embd \\(16\\) must be divisible"),
    (good_header(config={"n_layer": 2}), "missing"),
])
def test_bad_metadata(tmp_path, header, message):
    path = tmp_path / "m.safetensors"
    write_raw(path, params_of(random_model()), header)
    with pytest.raises(ValueError, match=message):
        load(path)


def test_config_mismatch_names_the_param_and_expected_shape(tmp_path):
    path = tmp_path / "m.safetensors"
    bigger = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=50, block_size=8)
    write_raw(path, params_of(random_model()), good_header(config=bigger.to_dict()))
    with pytest.raises(ValueError, match=r"'wte' has shape \(37, 16\), expected \(50, 16\)"):
        load(path)


def test_missing_tensor(tmp_path):
    path = tmp_path / "m.safetensors"
    params = params_of(random_model())
    del params["blocks.1.attn.proj.bias"]
    write_raw(path, params, good_header())
    with pytest.raises(ValueError, match="missing \\['blocks.1.attn.proj.bias'\\]"):
        load(path)


def test_wrong_dtype(tmp_path):
    path = tmp_path / "m.safetensors"
    params = params_of(random_model())
    params["ln_f.weight"] = params["ln_f.weight"].astype(np.float64)
    write_raw(path, params, good_header())
    with pytest.raises(ValueError, match="'ln_f.weight' is float64, expected float32"):
        load(path)


# --------------------------------------------------------------------------- restore is atomic
def _trained(tmp_path):
    from explorer import Trainer
    trainer = Trainer(random_model(), TinyData(), batch_size=2, lr=1e-2, seed=3)
    trainer.step()
    return trainer


def _good_checkpoint(tmp_path):
    donor = _trained(tmp_path)
    for _ in range(2):
        donor.step()
    save(donor, tmp_path / "good.safetensors")
    return load(tmp_path / "good.safetensors")


@pytest.mark.parametrize("spoil, message", [
    (lambda c: c.optimizer_arrays.clear() or setattr(c, "step", None), "holds a model only"),
    (lambda c: c.optimizer_arrays.__setitem__("adamw.v", c.optimizer_arrays["adamw.v"][:-1]),
     r"'adamw.v' has shape"),
    (lambda c: c.optimizer_arrays["adamw.m"].__setitem__(5, np.nan), r"'adamw.m' holds 1 NaN"),
    (lambda c: c.trainer_meta.__setitem__("rng_state", "not a state"), "rng_state is not a valid"),
    (lambda c: c.trainer_meta.__setitem__("rng_state", {"bit_generator": "PCG64"}),
     "rng_state is not a valid"),
    (lambda c: c.trainer_meta.__setitem__("step", -3), "step should be an integer >= 0"),
    (lambda c: c.model.params["wpe"].__setitem__((0, 0), np.inf), "'wpe' holds 1 NaN or Inf"),
])
def test_failed_restore_leaves_the_trainer_untouched(tmp_path, spoil, message):
    ckpt = _good_checkpoint(tmp_path)
    spoil(ckpt)
    trainer = _trained(tmp_path)
    before = snapshot(trainer)
    with pytest.raises(ValueError, match=message) as error:
        ckpt.restore(trainer)
    assert "good.safetensors" in str(error.value)       # the error names the file
    assert_unchanged(trainer, before)


def test_model_only_file_cannot_resume_a_trainer(tmp_path):
    save(random_model(seed=4), tmp_path / "m.safetensors")
    trainer = _trained(tmp_path)
    before = snapshot(trainer)
    with pytest.raises(ValueError, match=r"m\.safetensors holds a model only"):
        load(tmp_path / "m.safetensors").restore(trainer)
    assert_unchanged(trainer, before)


def test_stale_temporary_files_are_removed_by_the_next_save_or_load(tmp_path):
    """A save killed half way leaves `.name.<pid>-<id>.tmp`; the next save or load of that
    name removes it (but never the temporary file of a write still in progress)."""
    import subprocess
    import sys
    target = tmp_path / "run.safetensors"
    save(random_model(), target)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".run.safetensors.{dead}-0123abcd.tmp"
    in_progress = tmp_path / f".run.safetensors.{os.getppid()}-0123abcd.tmp"
    other = tmp_path / f".other.safetensors.{dead}-0123abcd.tmp"
    for path in (stale, in_progress, other):
        path.write_bytes(b"half a checkpoint")
    load(target)
    assert not stale.exists() and in_progress.exists() and other.exists()
    stale.write_bytes(b"half a checkpoint")
    save(random_model(), target)
    assert not stale.exists() and in_progress.exists()


# --------------------------------------------------------------------------- integrity
def tensor_span(path, name):
    """(first, last + 1) byte of tensor `name`'s data in a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    begin, end = json.loads(data[8:8 + n])[name]["data_offsets"]
    return 8 + n + begin, 8 + n + end


def overwrite(path, offset, new_bytes):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(new_bytes)


def load_quietly(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ckpt = load(path)
    return ckpt, [w for w in caught if issubclass(w.category, NoChecksumWarning)]


def test_every_tensor_has_a_sha256_checksum_of_its_bytes(tmp_path):
    trainer = FakeTrainer(random_model())
    save(trainer, tmp_path / "t.safetensors")
    with safetensors.safe_open(tmp_path / "t.safetensors", framework="np") as f:
        checksums = json.loads(f.metadata()[METADATA_KEY])["checksums"]
        assert checksums["algorithm"] == "sha256"
        assert sorted(checksums["tensors"]) == sorted(f.keys())
        assert "optimizer.adamw.m" in checksums["tensors"]
        for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            start, end = tensor_span(tmp_path / "t.safetensors", name)
            raw = (tmp_path / "t.safetensors").read_bytes()[start:end]
            assert checksums["tensors"][name] == hashlib.sha256(raw).hexdigest(), name
    ckpt, warned = load_quietly(tmp_path / "t.safetensors")
    assert warned == []
    assert_same_params(ckpt.model, trainer.model)


@pytest.mark.parametrize("name", ["wte", "blocks.1.mlp.fc.weight", "ln_f.bias", "optimizer.adamw.v"])
def test_a_flipped_bit_in_a_tensor_is_an_error_naming_the_file_and_tensor(tmp_path, name):
    path = tmp_path / "t.safetensors"
    save(FakeTrainer(random_model()), path)
    start, end = tensor_span(path, name)
    middle = (start + end) // 2
    byte = path.read_bytes()[middle]
    overwrite(path, middle, bytes([byte ^ 0x01]))   # one bit of one value
    message = f"{path} is corrupt: tensor '{name}' does not match its sha256 checksum"
    with pytest.raises(ValueError, match=re.escape(message)):
        load(path)


def test_nan_bytes_written_into_a_file_fail_the_checksum(tmp_path):
    path = tmp_path / "m.safetensors"
    save(random_model(), path)
    start, _ = tensor_span(path, "blocks.0.attn.qkv.weight")
    overwrite(path, start + 4 * 5, np.array([np.nan], "<f4").tobytes())
    with pytest.raises(ValueError, match="tensor 'blocks.0.attn.qkv.weight' does not match"):
        load(path)


def test_nan_and_inf_in_saved_weights_are_refused(tmp_path):
    model = random_model()
    model.params["wte"][3, 5] = np.nan
    model.params["wte"][4, 0] = -np.inf
    save(model, tmp_path / "m.safetensors")   # the checksums match: the values are what was saved
    message = ("tensor 'wte' holds 2 non-finite values (1 NaN, 1 infinite) out of 592, "
               "the first at index (3, 5)")
    with pytest.raises(ValueError, match=re.escape(message)):
        load(tmp_path / "m.safetensors")


def test_nan_in_optimizer_state_is_refused(tmp_path):
    trainer = FakeTrainer(random_model())
    trainer.v[10] = np.inf
    save(trainer, tmp_path / "t.safetensors")
    with pytest.raises(ValueError, match=re.escape("tensor 'optimizer.adamw.v' holds 1 "
                                                   "non-finite values (0 NaN, 1 infinite)")):
        load(tmp_path / "t.safetensors")


def version_1_file(path, trainer):
    """A checkpoint as explorer wrote them before checksums (format version 1)."""
    tensors = params_of(trainer.model)
    tensors.update({"optimizer.adamw.m": trainer.m, "optimizer.adamw.v": trainer.v})
    write_raw(path, tensors, good_header(version=1, step=7, trainer={"step": 7}))


def test_version_1_file_without_checksums_loads_with_one_warning(tmp_path):
    trainer = FakeTrainer(random_model())
    version_1_file(tmp_path / "v1.safetensors", trainer)
    ckpt, warned = load_quietly(tmp_path / "v1.safetensors")
    assert_same_params(ckpt.model, trainer.model)
    np.testing.assert_array_equal(ckpt.optimizer_arrays["adamw.v"], trainer.v)
    assert len(warned) == 1   # one for the file, not one per tensor
    assert f"{tmp_path / 'v1.safetensors'} is a version-1 checkpoint" in str(warned[0].message)
    assert "without verifying" in str(warned[0].message)


def test_version_1_file_with_nan_bytes_is_refused(tmp_path):
    path = tmp_path / "v1.safetensors"
    version_1_file(path, FakeTrainer(random_model()))
    start, _ = tensor_span(path, "optimizer.adamw.m")
    overwrite(path, start + 4 * 3, np.array([np.nan], "<f4").tobytes())
    message = (f"{path}: tensor 'optimizer.adamw.m' holds 1 non-finite values (1 NaN, "
               f"0 infinite) out of")
    with pytest.raises(ValueError, match=re.escape(message) + ".*first at index \\(3,\\)"):
        load_quietly(path)


@pytest.mark.parametrize("checksums, message", [
    (None, "is corrupt: a version-2 checkpoint has a 'checksums' entry"),
    ({"algorithm": "sha256", "tensors": "abc"}, "is corrupt: a version-2 checkpoint has"),
    ({"algorithm": "md5", "tensors": {}}, "checksum algorithm 'md5'; this explorer verifies"),
    ({"algorithm": "sha256", "tensors": {"wpe": "0" * 64}},
     r"tensors without a checksum: \['blocks.0.attn.proj.bias', .*\] \(27\)"),
])
def test_version_2_file_with_missing_or_strange_checksums(tmp_path, checksums, message):
    path = tmp_path / "m.safetensors"
    write_raw(path, params_of(random_model()), good_header(version=2, checksums=checksums))
    with pytest.raises(ValueError, match=message):
        load(path)


def test_checksum_of_a_tensor_the_file_does_not_hold(tmp_path):
    path = tmp_path / "m.safetensors"
    save(random_model(), path)
    with safetensors.safe_open(path, framework="np") as f:
        header = json.loads(f.metadata()[METADATA_KEY])
    header["checksums"]["tensors"]["optimizer.adamw.m"] = "0" * 64
    write_raw(path, params_of(random_model()), header)
    with pytest.raises(ValueError, match=r"checksums of tensors it does not hold: "
                                         r"\['optimizer.adamw.m'\]"):
        load(path)


@pytest.mark.parametrize("claim, message", [
    # 64 GB of params: a MemoryError if the model is built
    ({"vocab_size": 10**9}, "'wte' has shape (37, 16), expected (1000000000, 16)"),
    # 64 MB, which fits, but must not be allocated and initialised before the check fails
    ({"vocab_size": 10**6}, "'wte' has shape (37, 16), expected (1000000, 16)"),
    # 1.2 million parameter names, 1.3 GB of params
    ({"n_layer": 10**5}, "has 1200004 parameter tensors, but only 28 were found"),
])
def test_config_claiming_a_huge_model_fails_before_allocating_it(tmp_path, claim, message):
    path = tmp_path / "m.safetensors"
    write_raw(path, params_of(random_model()), good_header(config=dict(CONFIG.to_dict(), **claim)))

    def attempt():
        with pytest.raises(ValueError, match=re.escape(message)):
            load(path)
    assert peak_bytes_of(attempt) < 4 * 2**20


def write_safetensors_bytes(path, header, data=b""):
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def test_header_whose_shape_disagrees_with_its_data_is_refused_before_reading(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors_bytes(path, {"wte": {"dtype": "F32", "shape": [10**9, 16],
                                           "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(ValueError, match=re.escape("tensor 'wte' is float32 of shape "
                                                   "(1000000000, 16), 64000000000 bytes, but its "
                                                   "data_offsets span 8")):
        load(path)
