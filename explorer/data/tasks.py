"""Toy tasks, generated on the fly: small enough to train in seconds, simple enough that you
can predict the attention pattern before you look at it.

    task = ReverseTask(length=8)            # "40213577=77531204"
    x, y = task.get_batch("train", 64, block_size=32, rng=np.random.default_rng(0))
    task.evaluate(model, rng)               # {"accuracy": 0.97, "token_accuracy": 0.99}

Every example is a prompt followed by its answer, as one fixed-length sequence of characters.
The model learns next-token prediction on it, but only the answer is scored: targets at
positions whose next token is not part of the answer are IGNORE_INDEX (-1), and the loss
averages over the other positions only (the model's cross-entropy skips -1 targets).
Predicting the random prompt would only add noise that no model can remove.

Train and validation examples never overlap: each possible sequence is assigned to one
split by a hash of its tokens (1 in 10 go to validation), so validation accuracy measures
whether the model learned the rule rather than memorised examples.
"""
import numpy as np

from ..tokenizers import CharTokenizer

#: target value meaning "no loss here" (the model's cross-entropy skips it)
IGNORE_INDEX = -1
SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
VAL_ONE_IN = 10


def _hash_rows(seqs):
    """A 64-bit FNV-1a hash of each row of token ids (wrapping uint64 arithmetic)."""
    h = np.full(len(seqs), 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for column in seqs.T.astype(np.uint64):
        h = (h ^ column) * prime
    return h


def in_val_split(seqs):
    """True for the rows that belong to the validation split."""
    return (_hash_rows(seqs) >> np.uint64(7)) % np.uint64(VAL_ONE_IN) == 0


class ToyTask:
    """A task whose examples are fixed-length token sequences with an answer part.

    Subclasses set `name` and `self.tokenizer`, and implement `_generate(rng, n)` returning
    seqs (n, S) int64 and answer_mask (n, S) bool (True where a token belongs to the answer).
    """

    name = "task"

    def __init__(self, alphabet):
        self.tokenizer = CharTokenizer(alphabet)
        self.vocab_size = self.tokenizer.vocab_size
        seqs, _ = self._generate(np.random.default_rng(0), 1)
        self.seq_len = seqs.shape[1] - 1  # x and y are one shorter than a whole example

    def _generate(self, rng, n):
        raise NotImplementedError

    # ------------------------------------------------------------------- sampling
    def sample(self, rng, n, split="train"):
        """n examples of the split: (seqs (n, S) int64, answer_mask (n, S) bool)."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        want_val = split == "val"
        seqs, masks, have = [], [], 0
        for _ in range(1000):
            # draw extra: about 1 in VAL_ONE_IN candidates is a validation example
            batch = 2 * (n - have) + 8 if not want_val else VAL_ONE_IN * 2 * (n - have) + 8
            s, m = self._generate(rng, batch)
            keep = in_val_split(s) == want_val
            seqs.append(s[keep])
            masks.append(m[keep])
            have += int(keep.sum())
            if have >= n:
                return np.concatenate(seqs)[:n], np.concatenate(masks)[:n]
        raise RuntimeError(f"{self.name}: could not draw {n} {split} examples; the task has too "
                           f"few distinct sequences for a train/validation split")

    def get_batch(self, split, batch_size, block_size, rng):
        """(x, y) int64 (batch_size, seq_len): y = x shifted by one, -1 outside the answer."""
        if self.seq_len > block_size:
            raise ValueError(f"{self.name} examples are {self.seq_len} tokens long, longer than "
                             f"block_size={block_size}: give the model a block_size >= "
                             f"{self.seq_len}")
        seqs, mask = self.sample(rng, batch_size, split)
        x = seqs[:, :-1]
        # y[b, t] is the token after x[b, t]; only answer tokens count
        y = np.where(mask[:, 1:], seqs[:, 1:], IGNORE_INDEX)
        return np.ascontiguousarray(x), np.ascontiguousarray(y)

    # ------------------------------------------------------------------- scoring
    def evaluate(self, model, rng, num_examples=256):
        """Greedy-decode the answers of validation examples; exact-match accuracy.

        Answer tokens are filled in left to right, each one from the model's prediction given
        the prompt and the answer tokens it has produced so far (its own, not the true ones),
        all examples of the batch at once."""
        seqs, mask = self.sample(rng, num_examples, "val")
        guess = np.where(mask, 0, seqs)          # blank the answers: the model must write them
        for p in np.unique(np.nonzero(mask)[1]):  # answer positions, left to right
            logits, _ = model.forward(guess[:, :p])   # the model sees tokens 0..p-1 only
            rows = mask[:, p]
            guess[rows, p] = np.argmax(logits[rows, p - 1], axis=-1)
        correct = guess == seqs
        return {"accuracy": float((correct | ~mask).all(axis=1).mean()),
                "token_accuracy": float(correct[mask].mean())}

    # ------------------------------------------------------------------- display
    def examples(self, rng=None, n=3):
        """A few examples as text, e.g. ['40213577=77531204', ...]."""
        rng = rng if rng is not None else np.random.default_rng(0)
        seqs, _ = self.sample(rng, n, "train")
        return [self.tokenizer.decode(s) for s in seqs]

    def describe(self):
        return f"{self.name}: {self.rule} (e.g. {self.examples(n=1)[0]})"

    def __repr__(self):
        return f"{type(self).__name__}(seq_len={self.seq_len}, vocab_size={self.vocab_size})"


def _check_positive(**values):
    for key, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


class _PromptEqualsAnswer(ToyTask):
    """prompt symbols, "=", answer symbols: the shape of reverse and sort."""

    def __init__(self, length=8, n_symbols=10):
        _check_positive(length=length, n_symbols=n_symbols)
        if n_symbols > len(SYMBOLS):
            raise ValueError(f"n_symbols must be at most {len(SYMBOLS)}, got {n_symbols}")
        self.length, self.n_symbols = length, n_symbols
        self.separator = n_symbols                    # the id of "="
        super().__init__(SYMBOLS[:n_symbols] + "=")

    def _answer(self, prompt):
        raise NotImplementedError

    def _generate(self, rng, n):
        prompt = rng.integers(0, self.n_symbols, size=(n, self.length))
        sep = np.full((n, 1), self.separator)
        seqs = np.concatenate([prompt, sep, self._answer(prompt)], axis=1).astype(np.int64)
        mask = np.zeros(seqs.shape, dtype=bool)
        mask[:, self.length + 1:] = True
        return seqs, mask


class ReverseTask(_PromptEqualsAnswer):
    """Write the prompt backwards. Each answer token attends to one prompt position: the
    attention map shows an anti-diagonal."""
    name = "reverse"

    @property
    def rule(self):
        return f"{self.length} symbols, '=', then the same symbols in reverse order"

    def _answer(self, prompt):
        return prompt[:, ::-1]


class SortTask(_PromptEqualsAnswer):
    """Write the prompt's symbols in ascending order (repeats kept)."""
    name = "sort"

    @property
    def rule(self):
        return f"{self.length} symbols, '=', then the same symbols sorted"

    def _answer(self, prompt):
        return np.sort(prompt, axis=1)


class AddTask(ToyTask):
    """a+b= with n_digits-digit numbers (zero-padded). The sum has n_digits + 1 digits;
    by default it is written least significant digit first, the order in which carries
    are worked out, so each digit depends only on digits the model has already seen."""
    name = "add"

    def __init__(self, n_digits=3, reverse_answer=True):
        _check_positive(n_digits=n_digits)
        if n_digits > 18:
            raise ValueError(f"n_digits must be at most 18 (int64 sums), got {n_digits}")
        self.n_digits, self.reverse_answer = n_digits, bool(reverse_answer)
        self.plus, self.equals = 10, 11              # ids of "+" and "="
        super().__init__("0123456789+=")

    @property
    def rule(self):
        order = "least significant digit first" if self.reverse_answer else "most significant first"
        return (f"two {self.n_digits}-digit numbers 'a+b=', then their {self.n_digits + 1}-digit "
                f"sum, {order}")

    @staticmethod
    def digits(numbers, width):
        """(n,) ints -> (n, width) decimal digits, most significant first, zero-padded."""
        powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
        return (numbers[:, None] // powers) % 10

    def _generate(self, rng, n):
        high = 10 ** self.n_digits
        a, b = rng.integers(0, high, size=n), rng.integers(0, high, size=n)
        total = self.digits(a + b, self.n_digits + 1)
        if self.reverse_answer:
            total = total[:, ::-1]
        seqs = np.concatenate([self.digits(a, self.n_digits), np.full((n, 1), self.plus),
                               self.digits(b, self.n_digits), np.full((n, 1), self.equals),
                               total], axis=1).astype(np.int64)
        mask = np.zeros(seqs.shape, dtype=bool)
        mask[:, 2 * self.n_digits + 2:] = True
        return seqs, mask


class RepeatTask(ToyTask):
    """noise, then a run of distinct letters, then the same run again.

    The run's length varies (min_length..max_length) and noise in front fills the rest, so
    where the copy starts cannot be learned from absolute positions. The model has to look
    back by content: at a letter of the copy, find where that letter occurred before and
    predict the letter that followed it (the textbook circuit is an induction head; the
    two-layer preset finds another way, because the copy always ends the sequence and runs
    are short: see notebook 06). The noise uses only letters that are not in the
    run, so "where it occurred before" is always exactly one place: the run. The copy's
    first letter is unpredictable and not scored; the rest of the copy is the answer."""
    name = "repeat"

    def __init__(self, min_length=4, max_length=8, n_symbols=16, padding=2):
        _check_positive(min_length=min_length, max_length=max_length, n_symbols=n_symbols)
        if min_length > max_length:
            raise ValueError(f"min_length ({min_length}) must be <= max_length ({max_length})")
        if not max_length < n_symbols <= len(LETTERS):
            raise ValueError(f"n_symbols must be between max_length + 1 ({max_length + 1}) and "
                             f"{len(LETTERS)} (a run holds distinct letters, and the noise "
                             f"needs letters outside it), got {n_symbols}")
        if min_length < 2 or padding < 0:
            raise ValueError(f"min_length must be >= 2 and padding >= 0, got {min_length}, {padding}")
        self.min_length, self.max_length = min_length, max_length
        self.n_symbols, self.padding = n_symbols, padding
        self.total = 2 * max_length + padding
        super().__init__(LETTERS[:n_symbols])

    @property
    def rule(self):
        return (f"{self.total} letters: noise, then a run of {self.min_length}-{self.max_length} "
                f"distinct letters (not in the noise), then the same run again")

    def _generate(self, rng, n):
        S = self.total
        letters = np.argsort(rng.random((n, self.n_symbols)), axis=1)  # a permutation per row
        lengths = rng.integers(self.min_length, self.max_length + 1, size=n)
        seqs = np.zeros((n, S), dtype=np.int64)
        mask = np.zeros((n, S), dtype=bool)
        for i, L in enumerate(lengths):
            run, others = letters[i, :L], letters[i, L:]
            seqs[i, :S - 2 * L] = rng.choice(others, size=S - 2 * L)
            seqs[i, S - 2 * L:S - L] = run
            seqs[i, S - L:] = run
            mask[i, S - L + 1:] = True
        return seqs, mask


TASKS = {cls.name: cls for cls in (ReverseTask, SortTask, AddTask, RepeatTask)}


def make_task(name: str, **options) -> ToyTask:
    """A toy task by name ("reverse", "sort", "add", "repeat") with its options."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](**options)
