"""The course exported for nbgrader (explorer.course.nbgrader_export), and what its test cells
run (explorer.course.grading, explorer.course.hidden), without running nbgrader itself
(tests/test_nbgrader_grading.py does that).

One source: the released notebooks are the class notebooks, and the solutions in the export
are the solutions files, as nbgrader's own preprocessors turn one into the other.
"""
import json
import os
import shutil
import sys
import warnings

import pytest
from notebook_helpers import NOTEBOOK_DIR

from explorer import course
from explorer.cli import main
from explorer.course import grading, handout, hidden, nbgrader_export
from explorer.course.nbgrader_export import POINTS, course_notebooks, grade_id, write_course

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbgrader")
from nbgrader.nbgraderformat import MetadataValidator  # noqa: E402
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions  # noqa: E402

ALLOWED_KEYS = {"schema_version", "grade", "solution", "locked", "task", "grade_id", "points",
                "checksum", "cell_type"}
ASSIGNMENTS = list(course_notebooks(NOTEBOOK_DIR))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    write_course(root, NOTEBOOK_DIR)
    return root


def _read(root, assignment):
    return nbformat.read(root / "source" / assignment / f"{assignment}.ipynb", as_version=4)


def _config(text=nbgrader_export.CONFIG):
    """{"Section.option": value} of an nbgrader_config.py."""
    namespace = {"get_config": lambda: _Config()}
    exec(compile(text, "nbgrader_config.py", "exec"), namespace)
    return namespace["c"].values


def _release(nb):
    """What `nbgrader generate_assignment` makes of a source notebook's cells, with our config."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb, _ = ClearSolutions(code_stub=_config()["ClearSolutions.code_stub"]).preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    return nb


def test_every_course_notebook_is_an_assignment_named_by_its_stem(exported):
    """The assignments are found, not listed: every notebook with exercises, in course order
    (so 08_open_weights joins once it has some); the tour and 09_data_parallel have none."""
    assert ASSIGNMENTS[:7] == ["01_tokens", "02_attention", "03_layernorm", "04_training_loop",
                               "05_kernel_lab", "06_interpretability", "07_sampling"]
    assert ASSIGNMENTS == sorted(ASSIGNMENTS)
    with_exercises = [p.stem for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))
                      if handout.exercise_cells(nbformat.read(p, as_version=4))]
    assert ASSIGNMENTS == with_exercises and "00_tour" not in ASSIGNMENTS
    sources = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*.ipynb"))
    assert sources == [f"source/{a}/{a}.ipynb" for a in ASSIGNMENTS]
    config = _config((exported / "nbgrader_config.py").read_text())
    assert config["ClearSolutions.code_stub"] == {"python": ""}
    assert config["Execute.timeout"] >= 120      # cells that train take over a minute
    assert config["Execute.store_widget_state"] is False   # graded notebooks stay small


class _Config:
    """Records `c.Section.option = value` as nbgrader's config loader would."""
    def __init__(self):
        object.__setattr__(self, "values", {})

    def __getattr__(self, section):
        values = self.values

        class Section:
            def __setattr__(self, option, value):
                values[f"{section}.{option}"] = value
        return Section()


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_cell_metadata_is_what_nbgraders_validator_accepts(exported, assignment):
    nb = _read(exported, assignment)
    MetadataValidator().validate_nb(nb)      # raises on a missing grade_id, points, ...
    assert nb.metadata.kernelspec.name == "python3"
    ids = []
    for cell in nb.cells:
        meta = cell.metadata["nbgrader"]
        assert set(meta) <= ALLOWED_KEYS, set(meta) - ALLOWED_KEYS
        assert meta["schema_version"] == 3
        assert all(ch.isalnum() or ch in "_-" for ch in meta["grade_id"]), meta["grade_id"]
        ids.append(meta["grade_id"])
        # every cell is read-only, but the solution cells
        assert meta["locked"] is not meta["solution"], (meta, cell.source[:60])
    assert len(ids) == len(set(ids))


def test_grade_ids_have_only_what_nbgrader_allows():
    assert grade_id("tokens.count_pairs") == "tokens-count_pairs"
    with pytest.raises(ValueError, match="'a.b' has characters nbgrader refuses"):
        nbgrader_export._metadata("a.b")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_each_exercise_is_a_solution_cell_and_a_test_cell_worth_its_points(exported, assignment):
    nb = _read(exported, assignment)
    exercises = handout.exercise_cells(nbformat.read(NOTEBOOK_DIR / f"{assignment}.ipynb", as_version=4))
    tests = {c.metadata.nbgrader.grade_id: c for c in nb.cells if c.metadata.nbgrader["grade"]}
    solutions = {c.metadata.nbgrader.grade_id for c in nb.cells if c.metadata.nbgrader["solution"]}
    assert solutions == {grade_id(i) for i in exercises}
    assert set(tests) == {f"test-{grade_id(i)}" for i in exercises}
    for exercise_id in exercises:
        cell = tests[f"test-{grade_id(exercise_id)}"]
        assert cell.metadata.nbgrader["points"] == POINTS[exercise_id] > 0
        function = course.get_exercise(exercise_id).function_name
        # asserts the check passed: a bare course.check(...) would give a stub full marks
        assert f"grading.require({exercise_id!r}, {function})" in cell.source
        assert ("BEGIN HIDDEN TESTS" in cell.source) == hidden.has_hidden(exercise_id)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_export_is_the_class_notebook_and_the_solutions_file(exported, assignment):
    """One source: released (by nbgrader's own preprocessors), the export is the notebook as
    handed out in class, cell for cell, but for the test cells; its solution regions are the
    sections of notebooks/solutions/<assignment>.py."""
    ours = nbformat.read(NOTEBOOK_DIR / f"{assignment}.ipynb", as_version=4)
    source = _read(exported, assignment)
    release = _release(source)
    solutions = handout.solutions_for(NOTEBOOK_DIR / f"{assignment}.ipynb")
    assert len(release.cells) == len(ours.cells)
    for mine, exported_cell, released in zip(ours.cells, source.cells, release.cells):
        meta = released.metadata.nbgrader
        if meta["grade"]:
            checked = nbgrader_export.CHECK_CELL.match(mine.source.strip())
            assert checked, f"test cell {meta['grade_id']} stands where {mine.source!r} was"
            assert released.source.splitlines()[-1] == f"grading.require({checked[1]!r}, {checked[2]})"
            assert "HIDDEN" not in released.source
        else:
            assert released.source.rstrip() == mine.source.rstrip(), mine.source[:80]
        if meta["solution"]:
            exercise_id = next(t for t in mine.metadata.tags if t.startswith("exercise:"))[9:]
            region = exported_cell.source.split("### BEGIN SOLUTION\n")[1].split("\n### END SOLUTION")[0]
            assert region + "\n" == solutions[exercise_id]


def test_a_subset_of_assignments_and_unknown_names(tmp_path):
    written = write_course(tmp_path, NOTEBOOK_DIR, ["01_tokens", "05_kernel_lab"])
    assert [p.name for p in written] == ["nbgrader_config.py", "01_tokens.ipynb", "05_kernel_lab.ipynb"]
    with pytest.raises(ValueError, match="no course notebook named 01_token; expected some of: 01_tokens"):
        write_course(tmp_path, NOTEBOOK_DIR, ["01_token"])


def test_the_export_needs_the_solutions(tmp_path):
    shutil.copy(NOTEBOOK_DIR / "01_tokens.ipynb", tmp_path)          # no solutions/ beside it
    with pytest.raises(ValueError, match=r"no solutions for 01_tokens.ipynb at .*solutions/01_tokens.py"):
        write_course(tmp_path / "out", tmp_path)


def test_a_check_cell_missing_for_an_exercise_is_named(tmp_path):
    nb = nbformat.read(NOTEBOOK_DIR / "01_tokens.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if 'course.check("tokens.merge"' not in c.source]
    with pytest.raises(ValueError, match=r"check cells \(course.check\(...\)\) differ: none for tokens.merge"):
        nbgrader_export.nbgrader_notebook(nb, handout.solutions_for(NOTEBOOK_DIR / "01_tokens.ipynb"))


def test_command_line(tmp_path, capsys):
    assert main(["course", "nbgrader", str(tmp_path), "--assignments", "07_sampling",
                 "--notebooks", str(NOTEBOOK_DIR)]) == 0
    assert (tmp_path / "source" / "07_sampling" / "07_sampling.ipynb").is_file()
    assert main(["course", "nbgrader", str(tmp_path), "--assignments", "08_nope",
                 "--notebooks", str(NOTEBOOK_DIR)]) == 2
    assert "no course notebook named 08_nope" in capsys.readouterr().err


# --------------------------------------------------------------------- what test cells run
def _solution(exercise_id):
    notebook = next(nb for nb in course_notebooks(NOTEBOOK_DIR).values()
                    if exercise_id in handout.solutions_for(nb))
    namespace = {}
    for source in handout.solutions_for(notebook).values():
        exec(compile(source, f"<solution {exercise_id}>", "exec"), namespace)
    return namespace[course.get_exercise(exercise_id).function_name]


def test_require_passes_quietly_for_a_solution_and_raises_for_a_stub(capfd):
    grading.require("tokens.count_pairs", _solution("tokens.count_pairs"))
    assert "PASSED  tokens.count_pairs" in capfd.readouterr().out

    def count_pairs(ids):
        raise NotImplementedError("exercise 1: your code here")
    with pytest.raises(AssertionError, match="tokens.count_pairs has not passed its check yet"):
        grading.require("tokens.count_pairs", count_pairs)
    out = capfd.readouterr().out
    assert "NOT YET" in out and "raised NotImplementedError" in out and "Hint:" in out


def test_nothing_the_check_writes_reaches_stderr(capfd):
    """nbgrader scores a test cell with any stderr 0: Python's, a warning, or file descriptor 2."""
    right = _solution("tokens.count_pairs")

    def noisy(ids):
        print("from python", file=sys.stderr)
        os.write(2, b"from the file descriptor\n")
        warnings.warn("a warning", stacklevel=1)
        return right(ids)
    capfd.readouterr()
    grading.require("tokens.count_pairs", noisy)
    captured = capfd.readouterr()
    assert captured.err == ""
    assert "from python" in captured.out and "from the file descriptor" in captured.out
    print("after", file=sys.stderr)                  # and stderr works again afterwards
    os.write(2, b"fd after\n")
    assert capfd.readouterr().err == "after\nfd after\n"


EXERCISES = list(POINTS)


def test_points_are_set_for_exactly_the_registered_exercises():
    assert set(POINTS) == set(course.exercises())


@pytest.mark.parametrize("exercise_id", [i for i in EXERCISES if hidden.has_hidden(i)])
def test_hidden_tests_pass_the_solution_and_fail_the_stub(exercise_id):
    seed = nbgrader_export.hidden_seed(exercise_id)
    passed, message = hidden.run_hidden(exercise_id, _solution(exercise_id), seed)
    assert passed, message

    def stub(*args):
        raise NotImplementedError("your code here")
    passed, message = hidden.run_hidden(exercise_id, stub, seed=1)
    assert not passed and "NotImplementedError" in message and "not shown in class" in message


def test_hidden_tests_exist_where_the_checks_show_fixed_answers():
    with_fixed_cases = [i for i in EXERCISES if not i.startswith("kernels.")]
    assert [i for i in with_fixed_cases if not hidden.has_hidden(i)] == []
    assert [i for i in EXERCISES if i.startswith("kernels.") and hidden.has_hidden(i)] == []


def test_a_function_that_knows_only_the_visible_answers_fails_the_hidden_tests():
    from explorer.course.tokens import COUNT_CASES, pair_counts
    answers = {tuple(ids): dict(pair_counts(ids)) for ids in COUNT_CASES}

    def count_pairs(ids):
        return answers.get(tuple(ids), {})
    assert course.check("tokens.count_pairs", count_pairs).passed
    with pytest.raises(AssertionError, match="fails the hidden tests: on a case not shown in class"):
        grading.require_hidden("tokens.count_pairs", count_pairs, seed=5)
