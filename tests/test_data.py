"""Text datasets (split, token cache, batches), toy tasks (answers re-derived), presets."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from explorer.data import (
    IGNORE_INDEX,
    TASKS,
    AddTask,
    RepeatTask,
    ReverseTask,
    SortTask,
    TextDataset,
    make_task,
    text_dataset,
    tokenize_cached,
)
from explorer.tokenizers import CharTokenizer
from explorer.train.presets import PRESETS, get_preset, make_dataset
from explorer.train.trainer import learning_rate

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shakespeare = pytest.mark.skipif(not (SHARED / "tinyshakespeare" / "input.txt").is_file(),
                                       reason=f"Tiny Shakespeare not found under {SHARED}")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder; named corpora come from ../shared/data."""
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(SHARED))
    monkeypatch.delenv("EXPLORER_SHAKESPEARE", raising=False)
    return tmp_path / "cache"


# --------------------------------------------------------------------- text
def test_text_batches_are_next_token_pairs_from_the_right_split():
    # training text cycles through 0..9; validation text is all "x"
    text = "0123456789" * 90 + "x" * 100
    data = TextDataset(text, CharTokenizer.from_text(text), val_fraction=0.1)
    assert data.vocab_size == 11 and data.seq_len is None
    assert len(data.splits["train"]) == 900 and len(data.splits["val"]) == 100
    x, y = data.get_batch("train", 8, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int64
    assert np.array_equal(y, (x + 1) % 10)           # y is the token after x
    assert np.array_equal(x[:, 1:], y[:, :-1])
    xv, yv = data.get_batch("val", 4, 16, np.random.default_rng(0))
    assert (xv == 10).all() and (yv == 10).all()     # validation text only
    # seeded: the same generator state gives the same batch, another seed another batch
    again, _ = data.get_batch("train", 8, 16, np.random.default_rng(0))
    other, _ = data.get_batch("train", 8, 16, np.random.default_rng(1))
    assert np.array_equal(x, again) and not np.array_equal(x, other)


def test_text_batch_errors():
    text = "abcdefghij" * 10
    data = TextDataset(text, CharTokenizer.from_text(text))
    with pytest.raises(ValueError, match="too few"):
        data.get_batch("val", 2, 10, np.random.default_rng(0))  # val has 10 tokens
    with pytest.raises(ValueError, match="split"):
        data.get_batch("test", 2, 4, np.random.default_rng(0))


def test_tokens_are_cached_once_as_uint16(cache):
    text = "to be or not to be " * 50
    tok = CharTokenizer.from_text(text)
    first = tokenize_cached(text, tok)
    files = list((cache / "tokens").iterdir())
    assert len(files) == 1 and first.dtype == np.uint16 and isinstance(first, np.memmap)
    assert files[0].stat().st_size == 2 * len(text)

    class Exploding(CharTokenizer):
        def encode(self, text):
            raise AssertionError("tokenized again instead of reading the cache")
        encode_array = encode
    second = tokenize_cached(text, Exploding(tok.alphabet))
    assert np.array_equal(first, second)
    # a different tokenizer (or text) is a different cache entry
    tokenize_cached(text, CharTokenizer(tok.alphabet + "!"))
    assert len(list((cache / "tokens").iterdir())) == 2


def test_text_dataset_with_a_trained_bpe(tmp_path, cache):
    path = tmp_path / "poem.txt"
    path.write_text("the cat sat on the mat; the rat sat on the hat. " * 40)
    data = text_dataset(str(path), tokenizer="bpe:270")
    assert data.vocab_size == 270
    saved = list((cache / "bpe").iterdir())       # the merges are kept for next time
    assert len(saved) == 1 and saved[0].name.endswith("-270.bpe")
    assert text_dataset(str(path), tokenizer="bpe:270").tokenizer.merges == data.tokenizer.merges
    x, y = data.get_batch("train", 2, 8, np.random.default_rng(0))
    assert x.max() < 270 and "poem.txt" in data.describe()


@needs_shakespeare
def test_shakespeare_char_dataset():
    data = text_dataset("shakespeare", tokenizer="char")
    assert data.vocab_size == 65
    assert data.tokenizer.decode(data.tokens[:14]) == "First Citizen:"
    assert len(data.splits["train"]) == round(1_115_394 * 0.9)
    assert "shakespeare" in data.describe()


# --------------------------------------------------------------------- toy tasks
def decoded(task, n=200, split="train", seed=0):
    seqs, mask = task.sample(np.random.default_rng(seed), n, split)
    return [task.tokenizer.decode(s) for s in seqs], seqs, mask


def test_reverse_and_sort_answers_are_correct():
    for task, rule in ((ReverseTask(length=6), lambda p: p[::-1]),
                       (SortTask(length=7, n_symbols=5), lambda p: "".join(sorted(p)))):
        texts, _, mask = decoded(task)
        for text, m in zip(texts, mask):
            prompt, answer = text.split("=")
            assert len(prompt) == task.length and answer == rule(prompt)
            assert "".join(c for c, scored in zip(text, m) if scored) == answer


@pytest.mark.parametrize("reverse_answer", [True, False])
def test_addition_answers_are_correct(reverse_answer):
    task = AddTask(n_digits=3, reverse_answer=reverse_answer)
    texts, _, _ = decoded(task)
    for text in texts:
        question, answer = text.split("=")
        a, b = question.split("+")
        assert len(a) == len(b) == 3 and len(answer) == 4
        total = int(answer[::-1] if reverse_answer else answer)
        assert total == int(a) + int(b)


def test_repeat_copies_a_run_of_distinct_letters_absent_from_the_noise():
    task = RepeatTask(min_length=3, max_length=6, n_symbols=10)
    texts, _, mask = decoded(task, n=300)
    lengths = set()
    for text, m in zip(texts, mask):
        L = int(m.sum()) + 1             # the copy's first letter is not scored
        lengths.add(L)
        noise, run, copy = text[:-2 * L], text[-2 * L:-L], text[-L:]
        assert run == copy and len(set(run)) == L
        assert not set(noise) & set(run)
        assert m[-(L - 1):].all() and not m[:-(L - 1)].any()
    assert lengths == {3, 4, 5, 6}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_batches_score_only_the_answer(name):
    task = make_task(name)
    rng = np.random.default_rng(0)
    x, y = task.get_batch("train", 32, task.seq_len + 5, rng)
    assert x.shape == y.shape == (32, task.seq_len) and x.dtype == y.dtype == np.int64
    seqs, mask = task.sample(np.random.default_rng(0), 32)
    assert np.array_equal(x, seqs[:, :-1])
    assert np.array_equal(y == IGNORE_INDEX, ~mask[:, 1:])
    assert np.array_equal(y[mask[:, 1:]], seqs[:, 1:][mask[:, 1:]])
    assert x.max() < task.vocab_size
    assert name in task.describe()
    with pytest.raises(ValueError, match="block_size"):
        task.get_batch("train", 2, task.seq_len - 1, rng)


def test_train_and_val_examples_never_overlap():
    task = AddTask(n_digits=2)  # only 10,000 distinct examples, so overlap would show
    train = {tuple(s) for s in task.sample(np.random.default_rng(0), 5000, "train")[0]}
    val = {tuple(s) for s in task.sample(np.random.default_rng(1), 500, "val")[0]}
    assert not train & val
    assert len(val) > 300 and len(train) > 3000  # both are real samples, not a few repeats


class OracleModel:
    """Predicts the task's answer from the prefix it is given: for reverse, the answer token
    at position p is prompt[2L - p]. `wrong_at` makes it wrong at one answer position.
    Records every prefix it saw."""

    def __init__(self, task, wrong_at=None):
        self.task, self.wrong_at, self.prefixes = task, wrong_at, []

    def forward(self, idx, targets=None):
        self.prefixes.append(idx.copy())
        B, p = idx.shape
        L = self.task.length
        logits = np.zeros((B, p, self.task.vocab_size), dtype=np.float32)
        answer = idx[:, 2 * L - p]
        if p == self.wrong_at:
            answer = (answer + 1) % self.task.n_symbols
        logits[np.arange(B), p - 1, answer] = 1.0
        return logits, None


def test_evaluate_decodes_greedily_from_its_own_outputs():
    task = ReverseTask(length=5)
    oracle = OracleModel(task)
    result = task.evaluate(oracle, np.random.default_rng(0), num_examples=40)
    assert result == {"accuracy": 1.0, "token_accuracy": 1.0}
    # one forward per answer position, each seeing the prompt and the answers so far only
    assert [p.shape for p in oracle.prefixes] == [(40, 6 + i) for i in range(5)]
    wrong = OracleModel(task, wrong_at=8)
    result = task.evaluate(wrong, np.random.default_rng(0), num_examples=40)
    assert result["accuracy"] == 0.0 and result["token_accuracy"] == pytest.approx(4 / 5)
    # the later prefixes hold the model's own (wrong) answer, not the true one
    last = wrong.prefixes[-1]
    assert np.array_equal(last[:, 8], (last[:, 2] + 1) % task.n_symbols)


def test_evaluate_with_a_real_untrained_model():
    from explorer import GPT, GPTConfig
    task = ReverseTask(length=4)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=task.vocab_size,
                          block_size=task.seq_len))
    result = task.evaluate(model, np.random.default_rng(0), num_examples=16)
    assert 0.0 <= result["accuracy"] <= result["token_accuracy"] <= 1.0


def test_task_option_errors():
    with pytest.raises(ValueError, match="n_symbols"):
        RepeatTask(max_length=8, n_symbols=8)
    with pytest.raises(ValueError, match="length"):
        ReverseTask(length=0)
    with pytest.raises(ValueError, match="unknown task"):
        make_task("multiply")


# --------------------------------------------------------------------- presets
def test_every_preset_builds():
    for preset in PRESETS.values():
        if preset.data.get("corpus") and not (SHARED / "tinyshakespeare").is_dir():
            continue
        data, model, trainer = preset.build()
        assert model.config.vocab_size == data.vocab_size
        if data.seq_len is not None:
            assert data.seq_len <= preset.block_size
        assert trainer.config.max_steps == preset.steps
        # a step taken after the run (the tour takes one) still learns: the cosine ends at a floor
        floor = learning_rate(preset.steps + 5, trainer.config)
        assert floor == pytest.approx(preset.min_lr if preset.min_lr is not None else preset.lr / 10)
        assert floor > 0
        assert preset.goal and preset.description
    with pytest.raises(ValueError, match="no preset named .* available: reverse-tiny"):
        get_preset("nope")
    with pytest.raises(ValueError, match="'task' or a 'corpus'"):
        make_dataset({"size": 3})


@pytest.mark.slow
def test_reverse_tiny_reaches_its_goal():
    """The preset as shipped, full length (a few seconds on 2 cores)."""
    preset = get_preset("reverse-tiny")
    data, model, trainer = preset.build(seed=0)
    trainer.run(preset.steps)
    result = data.evaluate(model, np.random.default_rng(1), num_examples=500)
    assert result["accuracy"] >= 0.95


@needs_shakespeare
@pytest.mark.slow
def test_shakespeare_char_learns_past_letter_frequencies():
    """100 steps of shakespeare-char (its schedule squeezed into them; ~15 s on 2 cores).
    Guessing characters by frequency alone scores 3.31 nats; an untrained model ln 65 = 4.17."""
    preset = dataclasses.replace(get_preset("shakespeare-char"), steps=100, warmup=10)
    data, model, trainer = preset.build(seed=0)
    trainer.run(preset.steps)
    rng = np.random.default_rng(1)
    val = np.mean([model.forward(*data.get_batch("val", 32, preset.block_size, rng))[1]
                   for _ in range(4)])
    assert val < 2.8
