"""Solutions live apart from the notebooks, and are put into them only on request.

A course notebook marks each exercise cell with the tag `exercise:<id>`; that cell holds
the stub students start from. The reference solutions are one Python file per notebook,
notebooks/solutions/<notebook stem>.py, in sections:

    # %% exercise: tokens.count_pairs
    def count_pairs(ids):
        ...

`with_solutions(nb, solutions_for(path))` is the notebook with each tagged cell's source
replaced by its section: what the tests run, and what an instructor gets from

    python -m explorer.course.handout notebooks/01_tokens.ipynb --out solved/

Students get notebooks/*.ipynb as they are (only stubs), without notebooks/solutions/.
"""
import argparse
import copy
import re
from pathlib import Path

TAG_PREFIX = "exercise:"
SECTION = re.compile(r"^# %% exercise: *(\S+) *$", re.MULTILINE)


def solution_path(notebook):
    """notebooks/01_tokens.ipynb -> notebooks/solutions/01_tokens.py"""
    notebook = Path(notebook)
    return notebook.parent / "solutions" / f"{notebook.stem}.py"


def parse_solutions(text, source="<solutions>"):
    """{exercise id: source} from the `# %% exercise: <id>` sections of a solutions file
    (what comes before the first section, e.g. a docstring, belongs to none)."""
    parts = SECTION.split(text)
    solutions = {}
    for exercise_id, body in zip(parts[1::2], parts[2::2]):
        if exercise_id in solutions:
            raise ValueError(f"{source}: exercise {exercise_id!r} has two sections")
        solutions[exercise_id] = body.strip("\n") + "\n"
    return solutions


def solutions_for(notebook):
    """The solutions of a notebook ({} if it has no solutions file)."""
    path = solution_path(notebook)
    return parse_solutions(path.read_text(encoding="utf-8"), str(path)) if path.exists() else {}


def exercise_cells(nb):
    """{exercise id: cell} of the cells tagged `exercise:<id>` in a notebook (nbformat node
    or dict), in notebook order."""
    cells = {}
    for cell in nb["cells"]:
        for tag in cell.get("metadata", {}).get("tags", []):
            if tag.startswith(TAG_PREFIX):
                exercise_id = tag[len(TAG_PREFIX):]
                if exercise_id in cells:
                    raise ValueError(f"two cells are tagged {tag!r}")
                cells[exercise_id] = cell
    return cells


def with_solutions(nb, solutions):
    """A copy of the notebook with every exercise cell's source replaced by its solution.
    Every tagged cell must have a solution and every solution a tagged cell."""
    nb = copy.deepcopy(nb)
    cells = exercise_cells(nb)
    missing = [i for i in cells if i not in solutions]
    unused = [i for i in solutions if i not in cells]
    if missing or unused:
        raise ValueError("solutions and exercise cells differ: "
                         + "; ".join(filter(None, [
                             missing and f"no solution for {', '.join(missing)}",
                             unused and f"no cell tagged for {', '.join(unused)}"])))
    for exercise_id, cell in cells.items():
        cell["source"] = solutions[exercise_id]
        cell["outputs"], cell["execution_count"] = [], None
    return nb


def main(argv=None):
    import nbformat
    parser = argparse.ArgumentParser(
        prog="python -m explorer.course.handout",
        description="Write copies of course notebooks with the reference solutions filled in.")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the solved copies")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.notebooks:
        if args.out.resolve() == path.parent.resolve():
            parser.error(f"--out {args.out} is {path.name}'s own folder: the solved copy "
                         f"would replace the students' notebook")
        solved = with_solutions(nbformat.read(path, as_version=4), solutions_for(path))
        nbformat.write(solved, args.out / path.name)
        print(f"{args.out / path.name}: {len(exercise_cells(solved))} exercises solved")


if __name__ == "__main__":
    main()
