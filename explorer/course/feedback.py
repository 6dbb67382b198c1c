"""What a check says: the first thing wrong with a candidate, in words, where and by how much.

A check is written as a straight line of expectations. The first one that fails raises
`Mismatch` with a message for the student ("count_pairs([1, 2, 1]): pair (2, 1) occurs once,
your dict says 2"); the exercise registry turns that into a failed result. Nothing the
candidate does (raise, return None, return NaN) escapes as an exception: `call` and the
`expect_*` helpers below turn each into a Mismatch that says what happened.
"""
import linecache
import os
import sysconfig
import traceback
from collections.abc import Mapping

import numpy as np


class Mismatch(Exception):
    """The candidate is wrong; the message says how, for a person."""


# --------------------------------------------------------------------- calling
def call(fn, *args, what, **kwargs):
    """fn(*args, **kwargs), or a Mismatch saying what it raised and on which line of the
    student's code. `what` names the call in messages, e.g. "merge([1, 2], (1, 2), 256)"."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise Mismatch(f"{what} raised NotImplementedError: the exercise is not done yet. "
                       f"Replace the `raise NotImplementedError` line with your code.") from None
    except Exception as error:   # noqa: BLE001  (any error of the candidate's is feedback)
        raise Mismatch(f"{what} raised {type(error).__name__}: {error}"
                       f"{_where(error)}") from None


def _where(error):
    """'\n  at line 4: `return counts[pair]`' for the innermost frame in the student's code
    (a notebook cell or their own file, not numpy's or ours), or ''."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if _is_students(f.filename)]
    if not frames:
        return ""
    frame = frames[-1]
    line = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    return f"\n  at line {frame.lineno}" + (f": `{line}`" if line else "")


# code that is not the student's: this package, the standard library, installed packages
_NOT_STUDENTS = tuple(os.path.realpath(p) + os.sep for p in {
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    *(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))})


def _is_students(filename):
    if filename.startswith("<frozen"):
        return False
    return not os.path.realpath(filename).startswith(_NOT_STUDENTS)


# --------------------------------------------------------------------- values
def expect_array(got, what, shape, integer=False):
    """`got` as a float64 (or int64) array of `shape`, or a Mismatch: not array-like, the
    wrong shape, NaN or infinity (with the first index where it is)."""
    if got is None:
        raise Mismatch(f"{what} returned None: did you forget a `return`?")
    try:
        array = np.asarray(got)
        if integer and not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"dtype {array.dtype}")
        array = array.astype(np.int64 if integer else np.float64)
    except (TypeError, ValueError) as error:
        kind = "integers" if integer else "numbers"
        raise Mismatch(f"{what} returned {_describe(got)}, which is not an array of {kind} "
                       f"({error})") from None
    if array.shape != tuple(shape):
        raise Mismatch(f"{what} returned an array of shape {array.shape}; expected shape "
                       f"{tuple(shape)}")
    if not integer:
        bad = np.argwhere(~np.isfinite(array))
        if len(bad):
            index = tuple(int(i) for i in bad[0])
            raise Mismatch(f"{what} returned {array[index]} at index {_index(index)} "
                           f"({len(bad)} of {array.size} entries are NaN or infinite)")
    return array


def expect_close(got, expected, what, atol=1e-6, rtol=1e-5, name="entries"):
    """A Mismatch naming the first index where `got` differs from `expected`, with both
    values and how many entries differ; `got` is first checked by expect_array."""
    got = expect_array(got, what, np.shape(expected))
    wrong = ~np.isclose(got, expected, atol=atol, rtol=rtol)
    if wrong.any():
        index = tuple(int(i) for i in np.argwhere(wrong)[0])
        raise Mismatch(f"{what} is wrong at {int(wrong.sum())} of {wrong.size} {name}; the "
                       f"first is index {_index(index)}: expected {expected[index]:.6g}, got "
                       f"{got[index]:.6g}")
    return got


def expect_ints(got, expected, what):
    """`got` must be a sequence of ints equal to `expected` (a list); a Mismatch shows both
    and the first position where they differ."""
    if isinstance(got, (str, bytes, Mapping)) or not hasattr(got, "__len__"):
        raise Mismatch(f"{what} returned {_describe(got)}; expected a list of token ids")
    got = list(got)
    not_int = [i for i, value in enumerate(got) if not isinstance(value, (int, np.integer))]
    if not_int:
        raise Mismatch(f"{what} returned a list whose item {not_int[0]} is "
                       f"{_describe(got[not_int[0]])}; expected token ids (ints)")
    if got == expected:
        return got
    first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
                 min(len(got), len(expected)))
    where = (f"they differ first at position {first}: expected {expected[first]}, got "
             f"{got[first]}" if first < min(len(got), len(expected)) else
             f"yours has {len(got)} ids, the right answer {len(expected)}")
    raise Mismatch(f"{what} returned {short(got)}; expected {short(expected)}: {where}")


def expect_counts(got, expected, what):
    """`got` must be a mapping with exactly the (nonzero) counts of `expected`; a Mismatch
    names the first key missing, extra or miscounted, in the order keys first occur."""
    if not isinstance(got, Mapping):
        raise Mismatch(f"{what} returned {_describe(got)}; expected a dict such as "
                       f"{{(a, b): count}}" + (": did you forget a `return`?" if got is None else ""))
    got = {key: count for key, count in got.items() if count != 0}
    for key, count in expected.items():
        if key not in got:
            raise Mismatch(f"{what}: {key} occurs {count} time{'s' * (count != 1)}, but it is "
                           f"not in your dict")
        if got[key] != count:
            raise Mismatch(f"{what}: {key} occurs {count} time{'s' * (count != 1)}; your dict "
                           f"says {got[key]!r}")
    extra = [key for key in got if key not in expected]
    if extra:
        raise Mismatch(f"{what}: your dict has {extra[0]!r} (count {got[extra[0]]!r}), which "
                       f"is not an adjacent pair of the input"
                       + (f" ({len(extra)} such keys)" if len(extra) > 1 else ""))
    return got


def _index(index):
    return str(index[0]) if len(index) == 1 else str(index)


def _describe(value):
    """A short description of a value for a message: a clipped repr and its type."""
    return "None" if value is None else f"{short(value)} (type {type(value).__name__})"


def short(value, limit=60):
    """repr(value), clipped to `limit` characters, for naming inputs in messages."""
    if isinstance(value, np.ndarray):
        if value.size > 16:
            return f"<array of shape {value.shape}, dtype {value.dtype}>"
        value = value.tolist()
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
