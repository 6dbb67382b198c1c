"""Only what pyproject.toml cannot say: discover every package under explorer/ *and* map the
course notebooks (notebooks/, outside the package) into it as `explorer.notebooks`; and write
the data files (pyproject.toml's [tool.setuptools.data-files]) in an editable install too.
Everything else about the project is in pyproject.toml."""
from setuptools import find_packages, setup
from setuptools.command.editable_wheel import editable_wheel


class EditableWheelWithData(editable_wheel):
    """`pip install -e .` with the data files. setuptools (84.2 measured) leaves them out of an
    editable wheel: it asks the distribution for `has_data`, a method that does not exist
    (`has_data_files` does), so our jupyter_server_config.d/explorer.json, which turns on the
    server extension, was never installed. Run install_data ourselves when there are any."""

    def _run_install(self, category):
        if category == "data" and self.distribution.has_data_files():
            self.run_command("install_data")
        else:
            super()._run_install(category)


setup(packages=find_packages(include=["explorer", "explorer.*"]) + ["explorer.notebooks"],
      package_dir={"explorer.notebooks": "notebooks"},
      cmdclass={"editable_wheel": EditableWheelWithData})
