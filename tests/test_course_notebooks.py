"""The course's notebooks as shipped: inside the package (a wheel alone is enough), copied to
a student's folder without replacing their work (`explorer lab`, `explorer course handout`),
and `explorer lab` from a freshly built wheel serving them in JupyterLab."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from notebook_helpers import NOTEBOOK_DIR, REPO

from explorer.cli import main
from explorer.course import notebooks
from explorer.course.notebooks import copy_notebooks, notebook_dir, student_notebooks

STUDENT = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb") if p.name != "demo.ipynb")


def test_in_a_checkout_the_notebooks_are_the_projects_folder():
    assert notebook_dir() == NOTEBOOK_DIR
    assert [p.name for p in student_notebooks()] == STUDENT
    assert "00_tour.ipynb" in STUDENT and "07_sampling.ipynb" in STUDENT


def _build_wheel(dest):
    """`pip wheel` of a copy of this checkout (without its build leftovers) into dest."""
    checkout = dest / "checkout"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "artifacts", "runs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(checkout), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(dest / "dist")],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (dest / "dist").glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_every_subpackage_and_the_notebooks(wheel):
    """Every folder under explorer/ with an __init__.py is a package of the built wheel (found,
    not listed by hand), and notebooks/ ships as explorer/notebooks without the solutions."""
    names = zipfile.ZipFile(wheel).namelist()
    on_disk = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "explorer").rglob("__init__.py")}
    in_wheel = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    assert len(on_disk) > 10 and "explorer/lab/bench" in on_disk
    assert on_disk <= in_wheel, f"missing from the wheel: {sorted(on_disk - in_wheel)}"
    assert sorted(n.split("/")[-1] for n in names if n.startswith("explorer/notebooks/")) == sorted(
        p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert not [n for n in names if "solutions" in n]
    assert "explorer/viz/figure_loader.js" in names
    # installed into etc/jupyter/: turns on the server extension (explorer/viz/server.py)
    assert "transformer_explorer-0.1.0.data/data/etc/jupyter/jupyter_server_config.d/explorer.json" in names


def test_copying_never_replaces_an_edited_notebook(tmp_path):
    first = copy_notebooks(tmp_path)
    assert first.copied == STUDENT and not first.kept
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == STUDENT      # the demo stays ours
    assert (tmp_path / "01_tokens.ipynb").read_bytes() == (NOTEBOOK_DIR / "01_tokens.ipynb").read_bytes()

    edited = tmp_path / "01_tokens.ipynb"
    edited.write_text(edited.read_text().replace("your code here", "my code here"))
    again = copy_notebooks(tmp_path)
    assert again.kept == ["01_tokens.ipynb"] and again.copied == []
    assert "my code here" in edited.read_text()
    assert "kept your edited 01_tokens.ipynb" in str(again)
    assert sorted(again.unchanged) == [n for n in STUDENT if n != "01_tokens.ipynb"]


def test_an_unedited_copy_of_an_older_version_is_updated(tmp_path):
    shipped = tmp_path / "shipped"
    shutil.copytree(NOTEBOOK_DIR, shipped, ignore=shutil.ignore_patterns("solutions"))
    older = shipped / "07_sampling.ipynb"
    nb = json.loads(older.read_text())
    nb["cells"][0]["source"] = "# 7. an older version"
    older.write_text(json.dumps(nb))
    student = tmp_path / "student"
    copy_notebooks(student, shipped)                              # the older version, copied
    shutil.copy(NOTEBOOK_DIR / "07_sampling.ipynb", older)       # a new release of explorer
    report = copy_notebooks(student, shipped)
    assert report.updated == ["07_sampling.ipynb"] and report.kept == []
    assert (student / "07_sampling.ipynb").read_bytes() == older.read_bytes()


def test_a_folder_without_notebooks_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(notebooks, "_PACKAGE", tmp_path / "site-packages" / "explorer")
    with pytest.raises(FileNotFoundError, match="the course notebooks are neither in .*site-packages"):
        notebook_dir()


def test_course_handout_writes_the_student_notebooks_without_solutions(tmp_path, capsys):
    assert main(["course", "handout", str(tmp_path / "handout")]) == 0
    written = sorted(p.relative_to(tmp_path / "handout").as_posix()
                     for p in (tmp_path / "handout").rglob("*") if p.is_file())
    assert written == sorted([".explorer-course.json"] + STUDENT)
    assert "copied: 00_tour.ipynb, 01_tokens.ipynb" in capsys.readouterr().out
    cells = json.loads((tmp_path / "handout" / "01_tokens.ipynb").read_text())["cells"]
    assert any('raise NotImplementedError("exercise 1: your code here")' in "".join(c["source"])
               for c in cells)


# --------------------------------------------------------------------- from a wheel
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.slow
def test_explorer_lab_from_a_wheel_serves_the_notebooks(tmp_path, wheel):
    """`pip wheel .`, the wheel installed into a fresh venv (its dependencies are this test
    environment's, read through a .pth file, so that no network is needed), then
    `explorer lab --no-browser` starts JupyterLab serving the notebooks, and stops on SIGTERM."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")

    token, port = "explorer-test", _free_port()
    config = tmp_path / "jupyter-config"
    config.mkdir()
    # CI runs as root, which Jupyter refuses unless told (a student's explorer lab never is)
    (config / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"allow_root": True}}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(JUPYTER_TOKEN=token, HOME=str(tmp_path / "home"), JUPYTER_CONFIG_DIR=str(config),
               JUPYTERLAB_DIR=str(Path(sys.prefix) / "share" / "jupyter" / "lab"))
    course = tmp_path / "course"
    server = subprocess.Popen([str(venv / "bin" / "explorer"), "lab", str(course), "--no-browser",
                               "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        listing = None
        deadline = time.monotonic() + 120
        while listing is None and time.monotonic() < deadline and server.poll() is None:
            try:
                listing = json.loads(_get(f"http://127.0.0.1:{port}/api/contents", token)[1])
            except OSError:
                time.sleep(0.5)
        said = server.stdout.read() if server.poll() is not None else "(still running)"
        assert listing is not None, f"JupyterLab did not answer within 120 s:\n{said}"
        assert sorted(item["name"] for item in listing["content"] if item["type"] == "notebook") == STUDENT
        served = json.loads(_get(f"http://127.0.0.1:{port}/api/contents/01_tokens.ipynb", token)[1])
        shipped = json.loads((NOTEBOOK_DIR / "01_tokens.ipynb").read_text())["cells"]
        assert [c["source"] for c in served["content"]["cells"]] == ["".join(c["source"]) for c in shipped]
        status, page = _get(f"http://127.0.0.1:{port}/lab", token)
        assert status == 200 and b"JupyterLab" in page
        # the server hands plotly's widget code to the page (explorer/viz/server.py)
        import plotly
        status, code = _get(f"http://127.0.0.1:{port}/explorer/plotly/{plotly.__version__}/widget.js", token)
        assert status == 200 and b"FigureModel" in code
        # ... enabled by the wheel's install itself (explorer lab also names it on its command line)
        listed = subprocess.run([str(python), "-m", "jupyter_server", "extension", "list"], env=env,
                                cwd=tmp_path, capture_output=True, text=True)
        said = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)      # no colours
        assert f"Config dir: {venv}/etc/jupyter\n    explorer.viz.server enabled" in said, said
        # the copy is the wheel's: explorer in the fresh venv, not this checkout, and every
        # subpackage imports from it
        packages = sorted(".".join(p.parent.relative_to(REPO).parts)
                          for p in (REPO / "explorer").rglob("__init__.py"))
        where = subprocess.run([str(python), "-c", f"import importlib; [importlib.import_module(p) for p in "
                                f"{packages!r}]; import explorer; print(explorer.__file__)"],
                               env=env, cwd=tmp_path, capture_output=True, text=True)
        assert where.returncode == 0, where.stderr[-3000:]
        assert where.stdout.startswith(site), where.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output, stopped = server.communicate(timeout=30)[0], True
        except subprocess.TimeoutExpired:
            server.kill()
            output, stopped = server.communicate()[0], False
    assert stopped, f"explorer lab did not stop within 30 s of SIGTERM:\n{output[-3000:]}"
    assert "copied: 00_tour.ipynb" in output and f"starting JupyterLab in {course}" in output, output
