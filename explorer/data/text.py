"""A text corpus as a stream of token ids, split into train and validation, sampled in blocks.

    data = TextDataset(load_text("shakespeare"), CharTokenizer.from_text(text))
    x, y = data.get_batch("train", batch_size=16, block_size=64, rng=np.random.default_rng(0))
    # x: (16, 64) ids from random places in the training text; y[b, t] = x[b, t + 1]

The first 90% of the tokens are for training, the last 10% for validation (a contiguous
slice, so validation text is text the model never trained on). Tokenizing a large corpus
takes a while, so the ids are written once to the cache as a flat binary file (uint16 when
every id fits in 16 bits) and memory-mapped from then on.
"""
import hashlib
import os
import tempfile

import numpy as np

from ..tokenizers import BPETokenizer, TokenIds, Tokenizer, TokenizerSpec, get_tokenizer
from .corpora import CORPORA, load_text
from .download import cache_dir


def _token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 2 ** 16 else np.uint32


def tokenize_cached(text: str, tokenizer: Tokenizer, cache: bool = True) -> np.ndarray:
    """All of `text` as token ids (a read-only array), cached on disk under a hash of the
    text and the tokenizer; `cache=False` skips the disk."""
    dtype = _token_dtype(tokenizer.vocab_size)
    if not cache:
        return _encode(text, tokenizer).astype(dtype)
    key = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    key.update(b"\0" + tokenizer.cache_key().encode("utf-8"))
    folder = os.path.join(cache_dir(), "tokens")
    path = os.path.join(folder, f"{key.hexdigest()[:32]}.{np.dtype(dtype).name}")
    if not os.path.isfile(path):
        ids = _encode(text, tokenizer).astype(dtype)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                ids.tofile(f)
            os.replace(tmp, path)   # another process reading the cache never sees half a file
        except BaseException:
            os.unlink(tmp)
            raise
    if os.path.getsize(path) == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _encode(text, tokenizer):
    if hasattr(tokenizer, "encode_array"):
        return tokenizer.encode_array(text)
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


class TextDataset:
    """Next-token prediction on a corpus: get_batch returns (x, y) with y = x shifted by one."""

    seq_len: int | None = None  # any block size up to the model's works

    def __init__(self, text: str, tokenizer: Tokenizer, val_fraction: float = 0.1, name: str = "text",
                 cache: bool = True) -> None:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"tokenizer must be a Tokenizer, got {type(tokenizer).__name__} "
                            f"(use explorer.tokenizers.get_tokenizer to build one)")
        self.name = name
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.num_chars = len(text)
        self.tokens = tokenize_cached(text, tokenizer, cache=cache)
        n_train = int(round(len(self.tokens) * (1.0 - val_fraction)))
        self.splits = {"train": self.tokens[:n_train], "val": self.tokens[n_train:]}

    def get_batch(self, split: str, batch_size: int, block_size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(x, y), both int64 (batch_size, block_size), from random offsets drawn with rng."""
        data = self._split(split)
        if len(data) < block_size + 1:
            raise ValueError(f"the {split} split has {len(data)} tokens, too few for one block of "
                             f"{block_size} (+1 for the targets): use a smaller block_size or "
                             f"more text")
        starts = rng.integers(0, len(data) - block_size, size=batch_size)
        window = np.asarray(data[starts[:, None] + np.arange(block_size + 1)], dtype=np.int64)
        return window[:, :-1], window[:, 1:]   # y[b, t] is the token after x[b, t]

    def _split(self, split):
        if split not in self.splits:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.splits[split]

    def decode(self, ids: TokenIds) -> str:
        return self.tokenizer.decode(ids)

    def describe(self) -> str:
        kind = type(self.tokenizer).__name__
        return (f"{self.name}: {self.num_chars:,} characters -> {len(self.tokens):,} tokens "
                f"({kind}, vocab {self.vocab_size:,}); train {len(self.splits['train']):,} / "
                f"val {len(self.splits['val']):,} tokens")

    def __repr__(self):
        return f"TextDataset({self.describe()})"


def text_dataset(source: str | os.PathLike[str] = "shakespeare", tokenizer: TokenizerSpec = "char",
                 val_fraction: float = 0.1, cache: bool = True) -> TextDataset:
    """A TextDataset from a corpus name, URL or path and a tokenizer (a Tokenizer, or a spec
    for get_tokenizer: "char", "gpt2", "bpe:512", a merges file). A BPE is trained on the
    training part of the text only, so validation stays unseen."""
    text = load_text(source)
    if isinstance(tokenizer, str) and tokenizer.startswith("bpe:"):
        train_part = text[:int(len(text) * (1.0 - val_fraction))]
        built = trained_bpe_cached(train_part, tokenizer, cache=cache)
    else:
        built = get_tokenizer(tokenizer, text=text)
    name = source if source in CORPORA else os.path.basename(str(source)) or str(source)
    return TextDataset(text, built, val_fraction=val_fraction, name=name, cache=cache)


def trained_bpe_cached(text, spec, cache=True):
    """get_tokenizer("bpe:<size>", text), with the learned merges kept in the cache so the
    same text and size are trained only once."""
    if not cache:
        return get_tokenizer(spec, text=text)
    key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    path = os.path.join(cache_dir(), "bpe", f"{key}-{spec[4:]}.bpe")
    if os.path.isfile(path):
        return BPETokenizer.load(path)
    tokenizer = get_tokenizer(spec, text=text)
    tokenizer.save(path)
    return tokenizer
