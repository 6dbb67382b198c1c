"""Character-level tokenization: one id per character of a fixed alphabet.

    tok = CharTokenizer.from_text(open("input.txt").read())   # alphabet = sorted set of chars
    tok.encode("hi")      # -> e.g. [46, 47]

The simplest tokenizer there is, and the one Tiny Shakespeare is usually trained with (its
65 characters). A character outside the alphabet has no id; we raise rather than guess one.
"""
import hashlib
from collections.abc import Iterable

import numpy as np

from .base import TokenIds, Tokenizer


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, alphabet: Iterable[str]) -> None:
        """`alphabet`: the characters in id order (id i is alphabet[i]); no repeats."""
        alphabet = "".join(alphabet)
        if not alphabet:
            raise ValueError("a CharTokenizer needs at least one character in its alphabet")
        if len(set(alphabet)) != len(alphabet):
            repeated = sorted({c for c in alphabet if alphabet.count(c) > 1})
            raise ValueError(f"the alphabet repeats characters {repeated}; each needs one id")
        self.alphabet = alphabet
        self._ids = {ch: i for i, ch in enumerate(alphabet)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The alphabet of `text`: its distinct characters, sorted by code point."""
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[ch] for ch in text]
        except KeyError:
            pass
        for position, ch in enumerate(text):  # slow path, only to name the culprit
            if ch not in self._ids:
                raise ValueError(
                    f"character {ch!r} (U+{ord(ch):04X}) at position {position} is not in this "
                    f"tokenizer's alphabet of {self.vocab_size} characters: {self.alphabet[:80]!r}")
        raise AssertionError("unreachable")

    def encode_array(self, text: str) -> np.ndarray:
        """encode() for a whole corpus, as an int64 array (vectorised over code points)."""
        try:
            codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError:  # lone surrogates cannot be encoded: take the slow path
            return np.asarray(self.encode(text), dtype=np.int64)
        table = np.full(max(map(ord, self.alphabet)) + 1, -1, dtype=np.int64)
        table[[ord(c) for c in self.alphabet]] = np.arange(self.vocab_size)
        inside = codes < len(table)
        ids = np.full(len(codes), -1, dtype=np.int64)
        ids[inside] = table[codes[inside]]
        if (ids < 0).any():
            self.encode(text)  # raises, naming the first unknown character
        return ids

    def decode(self, ids: TokenIds) -> str:
        return "".join(self.alphabet[i] for i in self._check_ids(ids))

    def token_strings(self, ids: TokenIds) -> list[str]:
        return [self.alphabet[i] for i in self._check_ids(ids)]

    def to_dict(self) -> dict:
        return {"type": self.kind, "alphabet": self.alphabet}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        return cls(d["alphabet"])

    def cache_key(self) -> str:
        return "char:" + hashlib.sha256(self.alphabet.encode("utf-8")).hexdigest()

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size}, alphabet={self.alphabet[:40]!r})"
