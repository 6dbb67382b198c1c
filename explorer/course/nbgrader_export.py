"""The course as an nbgrader course: one assignment per course notebook, named by its stem.

    explorer course nbgrader grading/                           # every course notebook
    explorer course nbgrader grading/ --assignments 01_tokens,05_kernel_lab

writes grading/nbgrader_config.py and grading/source/<stem>/<stem>.ipynb for every course
notebook, i.e. every notebook with exercise cells (found, not listed: a new lesson with
exercises joins by itself; the tour and 09_data_parallel have none), made from the files the
class uses and nothing else: notebooks/<stem>.ipynb (the stubs and the checks) and
notebooks/solutions/<stem>.py (the solutions). In each notebook:

  * an exercise cell (tagged `exercise:<id>`) becomes a solution cell: the stub as handed out,
    then the solution between `### BEGIN SOLUTION` and `### END SOLUTION`. nbgrader_config.py
    sets ClearSolutions.code_stub to nothing, so the released cell is the stub, exactly as in
    class (the solution comes after the stub because it must replace it when the source runs;
    it covers imports and decorators, which would otherwise survive in the release);
  * its check cell, `course.check("<id>", fn)`, becomes an autograded test cell worth
    POINTS[id]: the same check, shown as in class, which must pass (grading.require), then,
    hidden until grading, the same function on cases the student never saw (explorer.course.hidden);
  * every other cell is read-only.

nbgrader's cell metadata allows only a few keys (schema 3) and a grade_id of letters, digits,
_ and -: exercise ids have dots, so `tokens.count_pairs` is graded as `tokens-count_pairs`.
"""
import copy
import re
import zlib
from pathlib import Path

from . import hidden
from .handout import exercise_cells, solution_path, solutions_for
from .registry import get_exercise

#: Points per exercise. The rule: 2 for a short function with one idea; 3 for one with edge
#: cases to get right or built on the exercises before it; 5 for a kernel, which must be
#: right to float precision on every case, compile, and retrain the model (4 where the
#: formula is given outright in the notebook: AdamW's update, a matmul).
POINTS = {
    "tokens.count_pairs": 2,
    "tokens.merge": 2,
    "tokens.learn_merges": 3,
    "kernels.attention_forward": 5,
    "kernels.layernorm_backward": 5,
    "kernels.adamw_update": 4,
    "kernels.matmul_forward": 4,
    "interp.induction_scores": 3,
    "interp.logit_lens": 3,
    "sampling.next_token_probs": 3,
    "sampling.sample": 2,
    "open_weights.patch_residual": 3,
}

#: nbgrader's cell metadata schema, and what its grade_id may be (nbgrader 0.9)
SCHEMA_VERSION = 3
GRADE_ID = re.compile(r"^[a-zA-Z0-9_\-]*$")
#: the kernel nbgrader stores at generate_assignment and forces onto every submission
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
CHECK_CELL = re.compile(r"""^course\.check\(\s*["']([^"']+)["']\s*,\s*(\w+)\s*\)\s*$""")

#: per-cell time limit while grading: above the longest cell of the course (training the
#: sampling notebook's model, about 1-1.5 min on 2 busy cores); a student's endless loop
#: costs this long, then the cell is interrupted and scores 0
CELL_TIMEOUT_S = 300

CONFIG = f'''\
"""nbgrader's configuration for the Transformer Explorer course, written by
`explorer course nbgrader` (see the project's README, "Teaching with it")."""
c = get_config()  # noqa: F821 (nbgrader provides it)

c.CourseDirectory.course_id = "transformer-explorer"

# A released exercise cell is the stub students know from class: the stub stays above the
# solution region, and the region is removed without nbgrader's usual
# "# YOUR CODE HERE / raise NotImplementedError()" (the stub already raises it).
c.ClearSolutions.code_stub = {{"python": ""}}

# Some cells train a model (up to 1-1.5 min on 2 cores); nbgrader's default is 30 s a cell.
c.Execute.timeout = {CELL_TIMEOUT_S}

# No widget state in graded notebooks: grading has no browser, and the state nbclient would
# store (every widget's synced traits, ~5 MB of it plotly's widget code) makes each graded
# notebook megabytes large and its feedback page draw live widgets, blank without network.
# Without it, the feedback shows each view's static copy (its text/html).
c.Execute.store_widget_state = False
'''


def grade_id(exercise_id):
    """The exercise id as nbgrader's grade_id allows it: tokens.count_pairs -> tokens-count_pairs."""
    return re.sub(r"[^a-zA-Z0-9_\-]", "-", exercise_id)


def hidden_seed(exercise_id):
    """The seed of an exercise's hidden cases: fixed per exercise, so an export is reproducible."""
    return zlib.crc32(exercise_id.encode("utf-8"))


def _metadata(grade_id_, *, grade=False, solution=False, locked=False, points=None):
    meta = {"schema_version": SCHEMA_VERSION, "grade": grade, "solution": solution,
            "locked": locked, "grade_id": grade_id_}
    if points is not None:
        meta["points"] = points
    if not GRADE_ID.match(grade_id_):
        raise ValueError(f"grade_id {grade_id_!r} has characters nbgrader refuses; expected "
                         f"only letters, digits, _ and -")
    return meta


def _source(cell):
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def solution_source(stub, solution):
    """The solution cell: the stub, then the solution in a region nbgrader removes."""
    return f"{stub.rstrip()}\n### BEGIN SOLUTION\n{solution.strip(chr(10))}\n### END SOLUTION"


def autograded_source(exercise_id, function_name):
    """The autograded cell: the check from class must pass; hidden cases where there are some."""
    points = POINTS[exercise_id]
    lines = [f"# Autograded, {points} point{'s' * (points != 1)}: the check from class must pass.",
             "from explorer.course import grading",
             f"grading.require({exercise_id!r}, {function_name})"]
    if hidden.has_hidden(exercise_id):
        lines += ["### BEGIN HIDDEN TESTS",
                  f"grading.require_hidden({exercise_id!r}, {function_name}, "
                  f"seed={hidden_seed(exercise_id)})",
                  "### END HIDDEN TESTS"]
    return "\n".join(lines)


def check_cells(nb):
    """{exercise id: cell} of the cells that are exactly `course.check("<id>", fn)`."""
    found = {}
    for cell in nb["cells"]:
        match = cell["cell_type"] == "code" and CHECK_CELL.match(_source(cell).strip())
        if match:
            if match.group(1) in found:
                raise ValueError(f"two cells check {match.group(1)!r}")
            found[match.group(1)] = cell
    return found


def nbgrader_notebook(nb, solutions, name="notebook"):
    """The nbgrader source version of a course notebook (an nbformat node or dict; not changed)."""
    nb = copy.deepcopy(nb)
    exercises, checks = exercise_cells(nb), check_cells(nb)
    _expect_same(exercises, solutions, "solution sections", name)
    _expect_same(exercises, checks, "check cells (course.check(...))", name)
    roles = {id(cell): ("solution", i) for i, cell in exercises.items()}
    roles.update({id(cell): ("test", i) for i, cell in checks.items()})
    seen = set()
    for index, cell in enumerate(nb["cells"]):
        role, exercise_id = roles.get(id(cell), ("read-only", None))
        if role == "solution":
            cell["source"] = solution_source(_source(cell), solutions[exercise_id])
            meta = _metadata(grade_id(exercise_id), solution=True)
        elif role == "test":
            cell["source"] = autograded_source(exercise_id, get_exercise(exercise_id).function_name)
            meta = _metadata(f"test-{grade_id(exercise_id)}", grade=True, locked=True,
                             points=POINTS[exercise_id])
        else:
            meta = _metadata(f"cell-{cell.get('id') or index}", locked=True)
        if meta["grade_id"] in seen:
            raise ValueError(f"{name}: two cells would both have grade_id {meta['grade_id']!r}")
        seen.add(meta["grade_id"])
        cell.setdefault("metadata", {})["nbgrader"] = meta
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb["metadata"]["kernelspec"] = dict(KERNELSPEC)
    return nb


def _expect_same(exercises, other, what, name):
    missing = [i for i in exercises if i not in other]
    extra = [i for i in other if i not in exercises]
    if missing or extra:
        raise ValueError(f"{name}: exercise cells and {what} differ: "
                         + "; ".join(filter(None, [missing and f"none for {', '.join(missing)}",
                                                   extra and f"no exercise cell for {', '.join(extra)}"])))
    no_points = [i for i in exercises if i not in POINTS]
    if no_points:
        raise ValueError(f"{name}: no points set for {', '.join(no_points)}: add them to "
                         f"explorer.course.nbgrader_export.POINTS")


def course_notebooks(notebook_dir):
    """{assignment: notebook path} for every notebook of the folder with exercises, in order."""
    import nbformat
    found = {}
    for path in sorted(Path(notebook_dir).glob("*.ipynb")):
        if exercise_cells(nbformat.read(path, as_version=4)):
            found[path.stem] = path
    return found


def write_course(dest, notebook_dir, assignments=None):
    """Write nbgrader_config.py and source/<assignment>/<assignment>.ipynb under dest, for
    every course notebook of notebook_dir (or the assignments named). Returns the paths."""
    import nbformat
    available = course_notebooks(notebook_dir)
    if not available:
        raise ValueError(f"no course notebooks (with cells tagged exercise:<id>) in {notebook_dir}")
    chosen = list(available) if assignments is None else list(assignments)
    unknown = [a for a in chosen if a not in available]
    if unknown or not chosen:
        raise ValueError(f"no course notebook named {', '.join(unknown) or '(none given)'}; "
                         f"expected some of: {', '.join(available)}")
    dest = Path(dest)
    written = []
    for assignment in chosen:
        path = available[assignment]
        if not solution_path(path).exists():
            raise ValueError(f"no solutions for {path.name} at {solution_path(path)}: the export "
                             f"needs the reference solutions, which are in the project's checkout "
                             f"(notebooks/solutions/), not in the installed package")
        nb = nbgrader_notebook(nbformat.read(path, as_version=4), solutions_for(path), path.name)
        target = dest / "source" / assignment / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        written.append(target)
    config = dest / "nbgrader_config.py"
    config.write_text(CONFIG, encoding="utf-8")
    return [config] + written
