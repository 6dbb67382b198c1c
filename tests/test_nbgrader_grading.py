"""The course graded by the real nbgrader: export, generate_assignment, autograde, feedback.

Submissions (student ids in nbgrader's submitted/ folder):
  solved   the instructor's source notebook, solutions in: full marks     (every notebook)
  stub     the released notebook unchanged: 0 points, no crash, no timeout  (GRADED_IN_FULL)
  partial  the released notebook with only its first exercise solved:
           exactly that exercise's points                                  (GRADED_IN_FULL)
  crash    the kernel lab with a kernel that kills the process running it:
           that exercise's points lost, the rest of the notebook runs      (05_kernel_lab)
Scores are read from nbgrader's own gradebook. An autograde takes about a minute here, so
the stub and partial submissions are graded on two notebooks only (one of them the kernel
lab); the times and scores seen are written to the artifacts folder (nbgrader/grading.txt).
"""
import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from notebook_helpers import NOTEBOOK_DIR, artifacts_dir, kernel_env, notebook_env

from explorer.course import handout
from explorer.course.nbgrader_export import POINTS, course_notebooks, grade_id, write_course

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbgrader")
pytestmark = pytest.mark.slow

ASSIGNMENTS = list(course_notebooks(NOTEBOOK_DIR))
# EXPLORER_GRADE_ALL=1 grades the stub and partial submissions of every notebook (about 25 min)
GRADED_IN_FULL = ASSIGNMENTS if os.environ.get("EXPLORER_GRADE_ALL") == "1" else ["01_tokens", "05_kernel_lab"]
NOTEBOOK_LIMIT_S = 180     # each notebook grades in under 3 minutes on 2 cores
CRASHING_MATMUL = '''import ctypes


def matmul_forward(out, inp, weight, bias):
    ctypes.string_at(0)      # reads address 0: the process running it dies (SIGSEGV)
'''


def nbgrader(root, *args, timeout=1800, extra_env=None):
    """Run an nbgrader command in the course folder; its output if it succeeded. extra_env:
    notebook_env's (a hub mirror for a notebook that opens a model from the hub)."""
    env = kernel_env(extra=extra_env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-5000:]}"
    return done.stdout + done.stderr


def _submit(root, student, assignment, nb):
    folder = root / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{assignment}.ipynb")


def _solve(nb, exercise_id, source):
    """The released notebook with one exercise cell's source replaced (what a student writes)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    handout.exercise_cells(nb)[exercise_id]["source"] = source
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The exported course, released, submitted, autograded and fed back; with its scores
    {(assignment, student): {grade_id: score}} and grading seconds {(assignment): s}."""
    from nbgrader.api import Gradebook
    root = tmp_path_factory.mktemp("nbgrader-course")
    write_course(root, NOTEBOOK_DIR)
    for assignment in ASSIGNMENTS:
        nbgrader(root, "generate_assignment", assignment, "--force")
    students = {}
    for assignment in ASSIGNMENTS:
        source = nbformat.read(root / "source" / assignment / f"{assignment}.ipynb", as_version=4)
        release = nbformat.read(root / "release" / assignment / f"{assignment}.ipynb", as_version=4)
        _submit(root, "solved", assignment, source)
        students[assignment] = ["solved"]
        if assignment in GRADED_IN_FULL:
            first = next(iter(handout.exercise_cells(release)))
            solution = handout.solutions_for(NOTEBOOK_DIR / f"{assignment}.ipynb")[first]
            _submit(root, "stub", assignment, release)
            _submit(root, "partial", assignment, _solve(release, first, solution))
            students[assignment] += ["stub", "partial"]
        if assignment == "05_kernel_lab":
            _submit(root, "crash", assignment, _solve(release, "kernels.matmul_forward", CRASHING_MATMUL))
            students[assignment].append("crash")
    seconds = {}
    for assignment in ASSIGNMENTS:
        with notebook_env(f"{assignment}.ipynb", root / "hub-home") as extra_env:
            started = time.perf_counter()
            nbgrader(root, "autograde", assignment, "--create", "--force", extra_env=extra_env)
            seconds[assignment] = time.perf_counter() - started
            nbgrader(root, "generate_feedback", assignment, "--force", extra_env=extra_env)
    scores = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for assignment, names in students.items():
            for student in names:
                submission = gradebook.find_submission(assignment, student)
                scores[assignment, student] = {g.name: g.score for nb in submission.notebooks
                                               for g in nb.grades}
    _write_summary(scores, seconds, students, _sizes(root, students))
    return root, scores, seconds, students


def _write_summary(scores, seconds, students, sizes):
    lines = ["nbgrader autograde, seconds per assignment (all its submissions) and the scores seen"]
    for assignment, names in students.items():
        lines.append(f"{assignment}: {seconds[assignment]:.0f} s for {len(names)} submission(s)")
        for student in names:
            got = scores[assignment, student]
            lines.append(f"  {student:8s} {sum(got.values()):g} / {sum(_points(assignment).values())}  "
                         + ", ".join(f"{k}={v:g}" for k, v in got.items()))
    lines += sizes
    (artifacts_dir("nbgrader") / "grading.txt").write_text("\n".join(lines) + "\n")


def _sizes(root, students):
    """Lines giving each autograded notebook's size and the widget state stored in it."""
    lines = ["autograded notebooks: file size, widget state in the notebook's metadata"]
    for assignment, names in students.items():
        for student in names:
            path = root / "autograded" / student / assignment / f"{assignment}.ipynb"
            widgets = json.loads(path.read_text()).get("metadata", {}).get("widgets", {})
            lines.append(f"  {assignment}/{student}: {path.stat().st_size / 1e3:.0f} kB, widget state "
                         f"{len(json.dumps(widgets)) / 1e3:.1f} kB")
    return lines


def _points(assignment):
    """{test cell grade_id: points} of an assignment, from its notebook's exercises."""
    cells = handout.exercise_cells(json.loads((NOTEBOOK_DIR / f"{assignment}.ipynb").read_text()))
    return {f"test-{grade_id(i)}": POINTS[i] for i in cells}


def test_the_instructors_source_scores_full_marks(course):
    _, scores, _, students = course
    for assignment in students:
        assert scores[assignment, "solved"] == _points(assignment), assignment


def test_the_released_notebook_unchanged_scores_zero(course):
    _, scores, _, _ = course
    for assignment in GRADED_IN_FULL:
        assert scores[assignment, "stub"] == {k: 0 for k in _points(assignment)}, assignment


def test_solving_only_the_first_exercise_scores_exactly_its_points(course):
    _, scores, _, _ = course
    for assignment in GRADED_IN_FULL:
        points = _points(assignment)
        first = next(iter(points))
        assert scores[assignment, "partial"] == {k: (v if k == first else 0) for k, v in points.items()}


def test_released_and_stub_notebooks_run_to_the_end_without_a_timeout(course):
    root, _, _, students = course
    for assignment, names in students.items():
        for student in names:
            nb = nbformat.read(root / "autograded" / student / assignment / f"{assignment}.ipynb",
                               as_version=4)
            problems = [f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
                        for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                        for out in cell.outputs if out.output_type == "error"
                        and not cell.metadata.get("nbgrader", {}).get("grade")]
            unrun = [i for i, cell in enumerate(nb.cells)
                     if cell.cell_type == "code" and cell.source.strip() and cell.execution_count is None]
            # errors belong in test cells only (a failing check); everything else runs, in time
            assert not problems and not unrun, f"{assignment}/{student}: {problems} not run: {unrun}"


def test_a_crashing_kernel_costs_only_its_exercise(course):
    root, scores, _, _ = course
    assert scores["05_kernel_lab", "crash"] == {k: 0 for k in _points("05_kernel_lab")}
    nb = nbformat.read(root / "autograded" / "crash" / "05_kernel_lab" / "05_kernel_lab.ipynb",
                       as_version=4)
    test_cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in test_cell.outputs)
    assert "crashed the process" in shown and "SIGSEGV" in shown, shown


def test_feedback_shows_each_checks_message(course):
    """The feedback page shows, for every exercise, the message its check gave when graded."""
    root, _, _, students = course
    for assignment, names in students.items():
        for student in names:
            page = root / "feedback" / student / assignment / f"{assignment}.html"
            assert page.is_file(), f"no feedback at {page}"
            text = page.read_text(encoding="utf-8")
            graded = nbformat.read(root / "autograded" / student / assignment / f"{assignment}.ipynb",
                                   as_version=4)
            for cell in graded.cells:
                if not cell.metadata.get("nbgrader", {}).get("grade"):
                    continue
                shown = [o.data["text/plain"] for o in cell.outputs if o.output_type == "display_data"]
                assert len(shown) == 1, f"{assignment}/{student}: {cell.metadata.nbgrader.grade_id}"
                status, *message = shown[0].splitlines()
                exercise_id = status.split()[2 if status.startswith("NOT YET") else 1].rstrip(":")
                assert message, shown[0]
                # as the check's own HTML shows them: the exercise, and the first line it said
                for line in [f"<code>{exercise_id}</code>", message[0].strip()]:
                    assert line in html.unescape(text), f"{page.relative_to(root)} does not show {line!r}"
    stub_page = (root / "feedback" / "stub" / "01_tokens" / "01_tokens.html").read_text(encoding="utf-8")
    assert "raised NotImplementedError: the exercise is not done yet" in stub_page
    assert "Hint" in stub_page


def test_each_notebook_grades_within_three_minutes(course):
    _, _, seconds, students = course
    slow = {a: round(s / len(students[a])) for a, s in seconds.items()
            if s / len(students[a]) > NOTEBOOK_LIMIT_S}
    assert not slow, f"seconds per submission above {NOTEBOOK_LIMIT_S}: {slow}"


def test_the_release_is_what_class_hands_out(course):
    """One source: the released notebooks are the class notebooks, cell for cell, except each
    check cell, which calls the same check and must pass."""
    root, _, _, _ = course
    for assignment in ASSIGNMENTS:
        ours = nbformat.read(NOTEBOOK_DIR / f"{assignment}.ipynb", as_version=4)
        release = nbformat.read(root / "release" / assignment / f"{assignment}.ipynb", as_version=4)
        assert len(ours.cells) == len(release.cells)
        for mine, released in zip(ours.cells, release.cells):
            role = released.metadata["nbgrader"]
            if role["grade"]:
                exercise_id = mine.source.split('"')[1]
                assert released.source.splitlines()[-1] == (
                    f"grading.require({exercise_id!r}, {mine.source.split(',')[-1].strip(' )')})")
                assert "HIDDEN" not in released.source and "BEGIN" not in released.source
            else:
                assert released.source.rstrip() == mine.source.rstrip(), (assignment, mine.source[:60])



def test_graded_notebooks_are_small_and_their_feedback_shows_static_views_offline(course, tmp_path):
    """Graded without widget state (nbgrader_config.py), a submission stays small, and its
    feedback page, opened in Chromium with the network off, shows each view's static copy (the
    attention map's table, the kernel lab's report) where live widgets would stay blank."""
    from browser_helpers import read_offline
    sync_api = pytest.importorskip("playwright.sync_api")
    root, _, _, students = course
    for assignment, names in students.items():
        for student in names:
            graded = root / "autograded" / student / assignment / f"{assignment}.ipynb"
            assert "widgets" not in json.loads(graded.read_text())["metadata"], graded
            assert graded.stat().st_size < 1_000_000, f"{graded}: {graded.stat().st_size:,} bytes"
    with sync_api.sync_playwright() as p:
        for assignment, views in [("02_attention", 2), ("06_interpretability", 1)]:
            page = root / "feedback" / "solved" / assignment / f"{assignment}.html"
            shown, aborted = read_offline(p, page, tmp_path / assignment)
            live = [s["text"][:200] for s in shown if s["widget"]]
            assert not live, f"{assignment}: outputs left to live widgets (blank offline): {live}"
            static = [s for s in shown if s["tables"] + s["images"] + s["svgs"]]
            assert len(static) >= views, (assignment, [s["text"][:200] for s in shown], aborted)
            assert any(s["tables"] and s["text"].startswith("Attention, layer") for s in static), assignment
