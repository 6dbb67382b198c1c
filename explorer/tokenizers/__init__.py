"""Tokenizers: text <-> the integer ids a model reads. One interface, three kinds.

    CharTokenizer.from_text(text)   one id per character of the corpus's alphabet
    GPT2Tokenizer()                 GPT-2's 50,257 byte-level BPE tokens (tiktoken), offline-able
    train_bpe(text, vocab_size)     your own byte-level BPE, merges shown in order -> BPETokenizer

Every tokenizer has encode(str) -> list[int], decode(ids) -> str, vocab_size,
token_strings(ids) -> list[str] (for display) and to_dict(); tokenizer_from_dict(d) rebuilds
one from its to_dict() (that is what a checkpoint stores).
"""
import os

from .base import TokenIds, Tokenizer
from .bpe import BPETokenizer, train_bpe
from .bytelevel import GPT2_SPLIT_PATTERN
from .char import CharTokenizer
from .gpt2 import GPT2Tokenizer

_KINDS = {cls.kind: cls for cls in (CharTokenizer, GPT2Tokenizer, BPETokenizer)}

#: What get_tokenizer accepts: a Tokenizer, its to_dict(), "char" / "gpt2" / "bpe:<size>", or a merges file.
TokenizerSpec = Tokenizer | dict | str | os.PathLike[str]


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """The tokenizer that `d = tokenizer.to_dict()` describes."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in _KINDS:
        raise ValueError(f"unknown tokenizer description {d!r}: expected a dict whose 'type' is "
                         f"one of {sorted(_KINDS)}")
    return _KINDS[kind].from_dict(d)


def get_tokenizer(spec: TokenizerSpec, text: str | None = None) -> Tokenizer:
    """A tokenizer from a short description:
    a Tokenizer (returned as is), "char" (alphabet of `text`), "gpt2", "bpe:<vocab size>"
    (trained on `text`), or the path of a saved BPE merges file."""
    if isinstance(spec, Tokenizer):
        return spec
    if isinstance(spec, dict):
        return tokenizer_from_dict(spec)
    if spec == "char":
        if text is None:
            raise ValueError("a 'char' tokenizer is built from a text's alphabet: pass text=")
        return CharTokenizer.from_text(text)
    if spec == "gpt2":
        return GPT2Tokenizer()
    if isinstance(spec, str) and spec.startswith("bpe:"):
        size = spec[4:]
        if not size.isdigit():
            raise ValueError(f"expected 'bpe:<vocab size>' such as 'bpe:512', got {spec!r}")
        if text is None:
            raise ValueError(f"{spec!r} trains a BPE on a text: pass text=")
        return train_bpe(text, int(size))
    if isinstance(spec, (str, os.PathLike)) and os.path.isfile(spec):
        return BPETokenizer.load(spec)
    raise ValueError(f"unknown tokenizer {spec!r}: expected 'char', 'gpt2', 'bpe:<vocab size>', "
                     f"the path of a saved BPE file, or a Tokenizer")


__all__ = ["Tokenizer", "CharTokenizer", "GPT2Tokenizer", "BPETokenizer", "train_bpe",
           "tokenizer_from_dict", "get_tokenizer", "GPT2_SPLIT_PATTERN", "TokenIds", "TokenizerSpec"]
