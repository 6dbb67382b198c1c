"""The course: notebooks whose exercises grade themselves.

In a notebook, after writing the function an exercise asks for:

    from explorer import course
    course.check("tokens.count_pairs", count_pairs)    # shows what is right or wrong, and where

`check` never raises for a wrong function: it returns a result (`.passed`, a readable
`str()`, a rich display in Jupyter) and records it, so `course.results()` and
`course.passed(id)` tell later cells (and tests) how each exercise went.

Exercises live in a registry by id. One is a check written as expectations (see
feedback.py and the `exercise` decorator), or a kernel graded by explorer.lab:

    kernel_exercise("layernorm_backward", "Layernorm, backward")

The reference solutions are not in the package: they are in notebooks/solutions/, one file
per notebook (see handout.py for how they are put into a notebook).
"""
# each module registers its notebook's exercises; imported in course order
from . import interpretability, kernel_exercises, open_weights, sampling, tokens  # noqa: E402,F401,I001
from .feedback import Mismatch
from .registry import (
                       CheckResult,
                       Exercise,
                       check,
                       clear_results,
                       exercise,
                       exercises,
                       get_exercise,
                       kernel_exercise,
                       passed,
                       register,
                       results,
)

__all__ = ["check", "results", "passed", "clear_results", "exercises", "get_exercise",
           "exercise", "kernel_exercise", "register", "Exercise", "CheckResult", "Mismatch"]
