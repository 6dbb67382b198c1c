"""The course's notebooks, wherever explorer is installed, and copying them to a student.

The project keeps one copy, in notebooks/. A wheel carries it as explorer/notebooks (package
data: pyproject.toml maps the package `explorer.notebooks` to that folder), without the
solutions. So the notebooks are either beside the package (installed from a wheel) or in
the checkout the package sits in (an editable install, or PYTHONPATH).

    copy_notebooks("explorer-course")     # what `explorer lab` does before starting JupyterLab

copies the student notebooks (all but the instructor's demo) into a folder, and never
replaces one a student has edited: a manifest (.explorer-course.json) records what was
copied, so a copy still as it was is brought up to date, and an edited one is kept.
"""
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
MANIFEST = ".explorer-course.json"
INSTRUCTOR_ONLY = ("demo.ipynb",)   # the instructor's live demo (`explorer demo`)


def notebook_dir():
    """The folder holding the course's notebooks (and, in a checkout, solutions/)."""
    for folder in (_PACKAGE / "notebooks", _PACKAGE.parent / "notebooks"):
        if any(folder.glob("*.ipynb")):
            return folder
    raise FileNotFoundError(f"the course notebooks are neither in {_PACKAGE / 'notebooks'} (an "
                            f"installed wheel) nor in {_PACKAGE.parent / 'notebooks'} (a checkout): "
                            f"reinstall transformer-explorer")


def student_notebooks(folder=None):
    """The notebooks students get (sorted): every notebook but the instructor's demo."""
    folder = Path(folder) if folder is not None else notebook_dir()
    return [p for p in sorted(folder.glob("*.ipynb")) if p.name not in INSTRUCTOR_ONLY]


@dataclass
class CopyReport:
    copied: list = field(default_factory=list)      # new in the folder
    updated: list = field(default_factory=list)     # an unedited earlier copy, replaced
    kept: list = field(default_factory=list)        # edited by the student: left as it is
    unchanged: list = field(default_factory=list)   # already the same as ours

    def __str__(self):
        lines = []
        for label, names in (("copied", self.copied), ("updated", self.updated),
                             ("already up to date", self.unchanged)):
            if names:
                lines.append(f"{label}: {', '.join(names)}")
        lines += [f"kept your edited {name} (not replaced by the version shipped with explorer; "
                  f"rename or delete it to get that one)" for name in self.kept]
        return "\n".join(lines)


def _digest(data):
    return hashlib.sha256(data).hexdigest()


def copy_notebooks(dest, source=None):
    """Copy the student notebooks into dest (made if missing); never replace an edited copy.
    Returns a CopyReport saying what happened to each."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    report = CopyReport()
    for notebook in student_notebooks(source):
        ours, target = notebook.read_bytes(), dest / notebook.name
        if not target.exists():
            report.copied.append(notebook.name)
        else:
            theirs = _digest(target.read_bytes())
            if theirs == _digest(ours):
                report.unchanged.append(notebook.name)
                manifest[notebook.name] = theirs
                continue
            if manifest.get(notebook.name) != theirs:     # not what we copied: their work
                report.kept.append(notebook.name)
                continue
            report.updated.append(notebook.name)
        target.write_bytes(ours)
        manifest[notebook.name] = _digest(ours)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return report
