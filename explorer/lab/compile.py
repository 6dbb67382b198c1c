"""Compile a student's kernel afresh, from the source of every function it calls.

Why not just call the student's `@njit` function? Numba freezes a jitted helper into each
caller when the caller compiles, and `cache=True` keys the on-disk cache by the caller's own
source. So after editing a helper, the caller silently keeps the old one. The lab never
uses those compiled copies: it walks the candidate's globals (and closures), makes a new
Python function for each of the student's functions over a new globals dict in which their
helpers are replaced by the new copies too, and compiles those, never cached.

Two builds are made from the same source:
  checked: bounds checking on, parallel off (an index past an array's end raises
           IndexError instead of reading or writing memory it doesn't own; and a forked
           sandbox may not start OpenMP threads), for the first, isolated run;
  fast:    the options the student chose (parallel, fastmath...), for timing and training.
"""
import sys
import types

import numba
from numba.extending import is_jitted


def fresh_compile(fn, checked=False, python=False):
    """A new build of `fn` and every function of the student's that it calls (see module doc).
    python=True: no compiling at all, plain Python throughout (slow; its errors name a line)."""
    if not callable(fn):
        raise TypeError(f"expected a function, got {type(fn).__name__}: {fn!r}")
    root = _python_function(fn)
    if root is None:
        return fn                   # a builtin or a callable object: nothing to rebuild
    return _Rebuilder(root.__globals__, checked, python).rebuild(fn)


def _python_function(fn):
    """The plain Python function behind fn (a Numba dispatcher's py_func), or None."""
    if is_jitted(fn):
        return fn.py_func
    return fn if isinstance(fn, types.FunctionType) else None


def _code_names(code):
    """Every global name a code object (and the functions and lambdas nested in it) uses."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


class _Rebuilder:
    def __init__(self, home_globals, checked, python):
        self.home = home_globals            # the candidate's module (a notebook's __main__)
        self.checked, self.python = checked, python
        self.done = {}                      # id(original) -> rebuilt (handles cycles)
        self.namespaces = {}                # id(original globals) -> new globals

    def is_students(self, fn):
        """What gets rebuilt: every jitted function (so a checked build is checked, and
        single-threaded, all the way down) and every plain Python function outside the
        installed libraries (the student's helpers) or inside this package."""
        py = _python_function(fn)
        if py is None:
            return False
        if is_jitted(fn) or py.__globals__ is self.home or py.__module__ == "__main__":
            return True
        module = sys.modules.get(py.__module__)
        path = getattr(module, "__file__", None) or ""
        library = "site-packages" in path or "dist-packages" in path
        return not library or _inside_explorer(path)

    def rebuild(self, fn):
        key = id(fn)
        if key in self.done:
            return self.done[key]
        py = _python_function(fn)
        namespace = self._namespace(py.__globals__)
        # registered before recursing, so mutually recursive helpers find each other
        new_py = types.FunctionType(py.__code__, namespace, py.__name__, py.__defaults__,
                                    self._closure(py))
        new_py.__kwdefaults__ = py.__kwdefaults__
        new_py.__qualname__, new_py.__doc__ = py.__qualname__, py.__doc__
        new_py.__module__ = py.__module__
        result = self._compile(fn, new_py) if is_jitted(fn) and not self.python else new_py
        self.done[key] = result
        for name in _code_names(py.__code__):
            value = py.__globals__.get(name)
            if value is not None and value is not fn and self.is_students(value):
                namespace[name] = self.rebuild(value)
        return result

    def _namespace(self, original):
        key = id(original)
        if key not in self.namespaces:
            self.namespaces[key] = dict(original)
        return self.namespaces[key]

    def _closure(self, py):
        if not py.__closure__:
            return py.__closure__
        cells = []
        for cell in py.__closure__:
            try:
                value = cell.cell_contents
            except ValueError:              # an empty cell (a name not yet assigned)
                cells.append(cell)
                continue
            cells.append(types.CellType(self.rebuild(value)) if self.is_students(value) else cell)
        return tuple(cells)

    def _compile(self, dispatcher, new_py):
        options = {k: v for k, v in dispatcher.targetoptions.items() if k not in ("nopython", "cache")}
        if self.checked:
            options.update(boundscheck=True, parallel=False)
        return numba.njit(**options)(new_py)


def _inside_explorer(path):
    from pathlib import Path
    package = Path(__file__).resolve().parent.parent
    try:
        Path(path).resolve().relative_to(package)
    except ValueError:
        return False
    return True
