"""Exercises of notebooks/01_tokens.ipynb: byte-pair encoding by hand, checked against the
package's own trainer (explorer.tokenizers.bpe).

    count_pairs(ids)                 {(a, b): how often b directly follows a in ids}
    merge(ids, pair, new_id)         ids with every (a, b), read left to right, replaced
    learn_merges(chunks, n)          n merges learned from lists of byte ids; merge i makes
                                     token 256 + i
"""
from collections import Counter

import numpy as np
import regex

from ..tokenizers.bpe import _merge_word, train_bpe
from ..tokenizers.bytelevel import GPT2_SPLIT_PATTERN, display_bytes
from .feedback import Mismatch, call, expect_counts, expect_ints, short
from .registry import exercise

COUNT_CASES = [[1, 2, 3, 1, 2], [5, 5, 5], [], [7], [9, 8], list(b"hello hello")]
MERGE_CASES = [([1, 2, 3, 1, 2], (1, 2), 256), ([1, 1, 1], (1, 1), 256),
               ([1, 1, 1, 1], (1, 1), 9), ([2, 1], (1, 2), 256), ([3, 1, 2], (1, 2), 300),
               ([], (1, 2), 256), ([4], (4, 4), 256)]


def _repeated(**words):
    """'hug hug pug ...': each word as often as its count. Counts chosen so that no two
    pairs tie for most frequent in the merges asked for: then there is exactly one right
    answer, and it is the package trainer's."""
    return " ".join(word for word, count in words.items() for _ in range(count))


# texts to learn merges from, and how many merges to ask for ("aaa" runs out of pairs)
LEARN_CASES = [(_repeated(hug=7, pug=7, pun=11, bun=3, hugs=6), 8),
               (_repeated(cat=8, hat=4, that=9, the=1, mat=2), 7),
               ("aaa", 5)]


def pair_counts(ids):
    """The reference for count_pairs: {(a, b): count} over adjacent positions."""
    return Counter(zip(ids, ids[1:]))


def byte_chunks(text):
    """The text cut with GPT-2's split pattern, each chunk as its list of UTF-8 byte ids."""
    return [list(chunk.encode("utf-8")) for chunk in regex.findall(GPT2_SPLIT_PATTERN, text)]


@exercise("tokens.count_pairs", "Count adjacent pairs", "count_pairs(ids)",
          hint="Walk over zip(ids, ids[1:]) and add one to the count of each pair "
               "(collections.Counter does the counting for you).")
def _check_count_pairs(count_pairs):
    for ids in COUNT_CASES:
        what = f"count_pairs({short(ids)})"
        got = call(count_pairs, list(ids), what=what)
        expect_counts(got, pair_counts(ids), what)
    return (f"right on {len(COUNT_CASES)} lists, including an empty one, a one-element one and "
            f"overlapping pairs ([5, 5, 5] has (5, 5) twice)")


@exercise("tokens.merge", "Replace a pair by a new token", "merge(ids, pair, new_id)",
          hint="Go left to right with an index i: where ids[i], ids[i + 1] is the pair, "
               "append new_id and skip two; else append ids[i] and move one. Don't forget "
               "the last element.")
def _check_merge(merge):
    for ids, pair, new_id in MERGE_CASES:
        what = f"merge({short(ids)}, {pair}, {new_id})"
        given = list(ids)
        got = call(merge, given, pair, new_id, what=what)
        if given != ids:
            raise Mismatch(f"{what} changed the list it was given to {short(given)}: return a "
                           f"new list and leave ids as it was")
        expect_ints(got, _merge_word(ids, *pair, new_id), what)
    return (f"right on {len(MERGE_CASES)} cases, including overlapping pairs ([1, 1, 1] -> "
            f"[256, 1]), a pair at the very end, and lists too short to hold a pair")


@exercise("tokens.learn_merges", "Learn BPE merges", "learn_merges(chunks, num_merges)",
          hint="Repeat num_merges times: add up count_pairs over every chunk, take the most "
               "frequent pair (stop if there is none), give it the id 256 + (merges so far), "
               "record it, and merge it in every chunk.")
def _check_learn_merges(learn_merges):
    total = 0
    for text, num_merges in LEARN_CASES:
        what = f"learn_merges(byte_chunks({short(text, 30)}), {num_merges})"
        got = call(learn_merges, byte_chunks(text), num_merges, what=what)
        merges = _expect_pairs(got, what)
        _replay(merges, byte_chunks(text), num_merges, what)
        # no ties in these texts: the merges must be exactly the package trainer's
        reference = train_bpe(text, 256 + num_merges).merges
        for i, (ours, theirs) in enumerate(zip(spell_merges(merges), reference)):
            if ours != theirs:
                raise Mismatch(f"{what}: merge {i} joins {ours}; explorer's train_bpe joins "
                               f"{theirs} there")
        total += len(reference)
    return (f"the same {total} merges as explorer's train_bpe on {len(LEARN_CASES)} texts, "
            f"stopping when no pair is left")


def _expect_pairs(got, what):
    if got is None:
        raise Mismatch(f"{what} returned None: did you forget a `return`?")
    if not isinstance(got, (list, tuple)):
        raise Mismatch(f"{what} returned a {type(got).__name__}; expected a list of pairs "
                       f"(a, b) of token ids")
    for i, pair in enumerate(got):
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(x, (int, np.integer)) for x in pair)):
            raise Mismatch(f"{what}: merge {i} is {short(pair)}; each merge must be a pair "
                           f"(a, b) of token ids (ints)")
    return [tuple(int(x) for x in pair) for pair in got]


def _replay(merges, words, num_merges, what):
    """Apply the student's merges in order, checking each one joins a most frequent pair."""
    spelled = {b: bytes([b]) for b in range(256)}
    for i, (a, b) in enumerate(merges[:num_merges]):
        new_id = 256 + i
        counts = Counter()
        for word in words:
            counts.update(pair_counts(word))
        if not counts:
            raise Mismatch(f"{what} returned {len(merges)} merges, but after {i} no adjacent "
                           f"pair is left in any chunk: stop when there is nothing to merge")
        for token in (a, b):
            if token not in spelled:
                raise Mismatch(f"{what}: merge {i} is {(a, b)}, but token {token} does not "
                               f"exist yet (merge {i} makes token {new_id}; ids 0-255 are bytes)")
        best_count = max(counts.values())
        if counts[(a, b)] != best_count:
            best = min(p for p, c in counts.items() if c == best_count)
            inside = "" if counts[(a, b)] else _why_absent((a, b), words)
            raise Mismatch(f"{what}: merge {i} joins {(a, b)} = {_show(spelled, (a, b))}, which "
                           f"occurs {counts[(a, b)]} times{inside}; the most frequent pair at that "
                           f"point is {best} = {_show(spelled, best)}, {best_count} times")
        spelled[new_id] = spelled[a] + spelled[b]
        words = [_merge_word(word, a, b, new_id) for word in words]
    if len(merges) > num_merges:
        raise Mismatch(f"{what} returned {len(merges)} merges; {num_merges} were asked for")
    if len(merges) < num_merges and any(len(word) > 1 for word in words):
        raise Mismatch(f"{what} returned only {len(merges)} merges; {num_merges} were asked for "
                       f"and pairs are still left to merge")


def _why_absent(pair, words):
    """Why a merged pair occurs nowhere: counted across chunk boundaries, or new tokens
    numbered differently from 256, 257, ..."""
    joined = [token for word in words for token in word]
    if pair in pair_counts(joined):
        return " (it never occurs inside one chunk: count pairs within each chunk, never across two)"
    return (" (no chunk holds it: is each new token numbered 256 + the number of merges made "
            "before it?)")


def spell_merges(merges):
    """Merges as pairs of token ids (merge i makes token 256 + i) -> the same merges as
    (left bytes, right bytes), the way BPETokenizer.merges holds them."""
    spelled, out = {b: bytes([b]) for b in range(256)}, []
    for i, (a, b) in enumerate(merges):
        out.append((spelled[a], spelled[b]))
        spelled[256 + i] = spelled[a] + spelled[b]
    return out


def _show(spelled, pair):
    a, b = pair
    return f"{display_bytes(spelled[a])!r} + {display_bytes(spelled[b])!r}"
