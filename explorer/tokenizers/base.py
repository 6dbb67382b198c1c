"""What every tokenizer in the package can do, and how one is rebuilt from a checkpoint.

A tokenizer turns text into a list of integer ids (`encode`) and back (`decode`). The model
only ever sees the ids; `token_strings` shows what each id stands for, for display.
"""
from collections.abc import Iterable

import numpy as np

#: What decode and token_strings accept: a list of ids, or an integer array of any shape.
TokenIds = Iterable[int] | np.ndarray


class Tokenizer:
    """The interface. Subclasses set `kind` (the "type" in to_dict) and implement the rest."""

    kind = "base"

    @property
    def vocab_size(self) -> int:
        """Number of distinct ids: every id is in range(vocab_size)."""
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: TokenIds) -> str:
        raise NotImplementedError

    def token_strings(self, ids: TokenIds) -> list[str]:
        """One printable string per id, e.g. for labelling an attention map's axes."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """A JSON-able description that `tokenizer_from_dict` turns back into this tokenizer."""
        raise NotImplementedError

    def cache_key(self) -> str:
        """A string that changes whenever the text -> ids mapping changes (for token caches)."""
        raise NotImplementedError

    def _check_ids(self, ids: TokenIds) -> list[int]:
        """ids as a list of Python ints, each in range(vocab_size), or a ValueError."""
        ids = list(ids.ravel() if isinstance(ids, np.ndarray) else ids)
        for position, i in enumerate(ids):
            if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
                raise ValueError(f"token id {i!r} at position {position} is a "
                                 f"{type(i).__name__}; expected an integer id")
        ids = [int(i) for i in ids]
        for position, i in enumerate(ids):
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} at position {position} is outside this "
                                 f"tokenizer's vocabulary [0, {self.vocab_size - 1}]")
        return ids

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"
