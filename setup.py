"""Ships docs/*.md inside the package, as ``banfeed/data/docs`` (``banfeed docs`` reads them):
every error message points to the configuration and CLI reference, so an installed banfeed
carries it. Everything else about the package is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DOCS = Path(__file__).resolve().parent / "docs"


class BuildWithDocs(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's docs/ directly
            return
        target = Path(self.build_lib) / "banfeed" / "data" / "docs"
        self.mkpath(str(target))
        for page in sorted(DOCS.glob("*.md")):
            self.copy_file(str(page), str(target / page.name))


setup(cmdclass={"build_py": BuildWithDocs})
