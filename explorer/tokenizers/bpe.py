"""Train your own byte-level BPE tokenizer, then encode with tiktoken.

    tok = train_bpe(text, vocab_size=512)     # 256 byte tokens + 256 learned merges
    tok.merges[:3]                            # [(b' ', b't'), (b'h', b'e'), ...]: in order
    print(tok.describe_merges(10))
    tok.save("my.bpe"); BPETokenizer.load("my.bpe")

The algorithm (Sennrich et al. 2016, on bytes as in GPT-2):
    cut the text into chunks with GPT-2's split pattern; count each distinct chunk once
    start with every chunk as its list of bytes (ids 0..255)
    repeat until the vocabulary is big enough:
        find the most frequent adjacent pair (a, b), counted over all chunks x their counts
        make a new token for the bytes of a followed by b; replace every (a, b) with it

Ties in frequency go to the pair whose bytes sort first (left token, then right token), so
training is deterministic. Counting every pair again after each merge would cost a pass over
the whole corpus per merge; instead we keep the pair counts and, for each merge, update only
the chunks that contain the merged pair. That makes 1 MB -> 512 tokens take about a second.
"""
import hashlib
import heapq
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable

import regex
import tiktoken

from .bytelevel import GPT2_SPLIT_PATTERN, TiktokenTokenizer, bytes_to_printable, display_bytes, printable_to_bytes

FILE_HEADER = "#version: explorer-bpe 1"


class BPETokenizer(TiktokenTokenizer):
    """Byte-level BPE with learned merges. Ids 0..255 are the bytes themselves; merge i
    makes token 256 + i out of merges[i] = (left bytes, right bytes)."""

    kind = "bpe"

    def __init__(self, merges: Iterable[tuple[bytes, bytes]]) -> None:
        self.merges = [(bytes(left), bytes(right)) for left, right in merges]
        ranks = {bytes([b]): b for b in range(256)}
        for i, (left, right) in enumerate(self.merges):
            token = left + right
            for part in (left, right):
                if part not in ranks:
                    raise ValueError(f"merge {i} uses {part!r}, which is no earlier token")
            if token in ranks:
                raise ValueError(f"merge {i} makes {token!r}, which is already token {ranks[token]}")
            ranks[token] = 256 + i
        # tiktoken applies the merges by rank (lowest first), exactly as they were learned
        encoding = tiktoken.Encoding(name="explorer-bpe", pat_str=GPT2_SPLIT_PATTERN,
                                     mergeable_ranks=ranks, special_tokens={})
        super().__init__(encoding)

    def describe_merges(self, n: int = 20) -> str:
        """The first n merges as lines like "256: ' ' + 't' -> ' t'", for reading."""
        lines = []
        for i, (left, right) in enumerate(self.merges[:n]):
            lines.append(f"{256 + i}: {display_bytes(left)!r} + {display_bytes(right)!r} -> "
                         f"{display_bytes(left + right)!r}")
        return "\n".join(lines)

    # ------------------------------------------------------------------- files
    def merges_text(self) -> str:
        """The merges as text in GPT-2's vocab.bpe format: a header, then one merge per line,
        both halves spelled with GPT-2's byte-to-character table (a space byte is "Ġ")."""
        lines = [FILE_HEADER]
        lines += [f"{bytes_to_printable(l)} {bytes_to_printable(r)}" for l, r in self.merges]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_merges_text(cls, text: str, source: str = "<text>") -> "BPETokenizer":
        lines = text.split("\n")
        if not lines or not lines[0].startswith("#version"):
            raise ValueError(f"{source} does not start with a '#version' line: it is not a "
                             f"BPE merges file (first line: {lines[0][:60]!r})")
        merges = []
        for number, line in enumerate(lines[1:], start=2):
            if not line:
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{source} line {number}: expected two tokens separated by one "
                                 f"space, got {line!r}")
            merges.append((printable_to_bytes(parts[0]), printable_to_bytes(parts[1])))
        return cls(merges)

    def save(self, path: str | os.PathLike[str]) -> str | os.PathLike[str]:
        """Write the merges as a plain text file (atomically: a reader never sees half)."""
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".bpe-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(self.merges_text())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "BPETokenizer":
        with open(path, encoding="utf-8") as f:
            return cls.from_merges_text(f.read(), source=os.fspath(path))

    def to_dict(self) -> dict:
        return {"type": self.kind, "merges": self.merges_text()}

    @classmethod
    def from_dict(cls, d: dict) -> "BPETokenizer":
        return cls.from_merges_text(d["merges"], source="checkpoint")

    def cache_key(self) -> str:
        return "bpe:" + hashlib.sha256(self.merges_text().encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------- training
def count_chunks(text, pattern=GPT2_SPLIT_PATTERN):
    """{chunk bytes: how often it occurs} after cutting `text` with the split pattern."""
    return Counter(chunk.encode("utf-8") for chunk in regex.findall(pattern, text))


def _pairs(word):
    return zip(word, word[1:])


def _merge_word(word, a, b, new):
    """word with every non-overlapping (a, b), read left to right, replaced by `new`."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_bpe(text: str, vocab_size: int, pattern: str = GPT2_SPLIT_PATTERN) -> BPETokenizer:
    """Learn vocab_size - 256 merges from `text` (fewer if it runs out of pairs)."""
    if not isinstance(vocab_size, int) or vocab_size < 256:
        raise ValueError(f"vocab_size must be an integer >= 256 (one token per byte comes "
                         f"first), got {vocab_size!r}")
    chunk_counts = count_chunks(text, pattern)
    words = [list(chunk) for chunk in chunk_counts]      # each distinct chunk as token ids
    freqs = list(chunk_counts.values())
    token_bytes = [bytes([b]) for b in range(256)]        # id -> the bytes it stands for
    id_of = {t: i for i, t in enumerate(token_bytes)}

    # pair -> sum of freq over its occurrences; pair -> which words contain it
    pair_count: defaultdict[tuple[int, int], int] = defaultdict(int)
    words_with: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (word, freq) in enumerate(zip(words, freqs)):
        for pair in _pairs(word):
            pair_count[pair] += freq
            words_with[pair].add(w)

    # a max-heap of (-count, left bytes, right bytes); entries go stale when a count changes,
    # so each pop is checked against pair_count and skipped if out of date
    def entry(pair):
        return (-pair_count[pair], token_bytes[pair[0]], token_bytes[pair[1]])
    heap = [entry(p) for p in pair_count]
    heapq.heapify(heap)

    merges = []
    while len(token_bytes) < vocab_size and heap:
        neg_count, left, right = heapq.heappop(heap)
        a, b = id_of[left], id_of[right]
        if pair_count.get((a, b), 0) != -neg_count or neg_count == 0:
            continue  # stale
        # (rarely the same bytes arise from a different split, e.g. "ab"+"c" and "a"+"bc":
        # then the pair just turns into the existing token, and no new token is made)
        new = id_of.get(left + right)
        if new is None:
            new = len(token_bytes)
            token_bytes.append(left + right)
            id_of[left + right] = new
            merges.append((left, right))
        changed = set()
        for w in words_with.pop((a, b)):
            old_word, freq = words[w], freqs[w]
            new_word = _merge_word(old_word, a, b, new)
            for pair in _pairs(old_word):
                pair_count[pair] -= freq
                changed.add(pair)
            for pair in _pairs(new_word):
                pair_count[pair] += freq
                changed.add(pair)
            for pair in set(_pairs(old_word)) - set(_pairs(new_word)):
                if pair in words_with:
                    words_with[pair].discard(w)
            for pair in _pairs(new_word):
                words_with[pair].add(w)
            words[w] = new_word
        for pair in changed:
            if pair_count[pair] > 0:
                heapq.heappush(heap, entry(pair))
            else:
                pair_count.pop(pair, None)
                words_with.pop(pair, None)
    return BPETokenizer(merges)
