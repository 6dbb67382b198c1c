"""Only what pyproject.toml cannot say: discover every package under explorer/ *and* map the
course notebooks (notebooks/, outside the package) into it as `explorer.notebooks`.
Everything else about the project is in pyproject.toml."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["explorer", "explorer.*"]) + ["explorer.notebooks"],
      package_dir={"explorer.notebooks": "notebooks"})
