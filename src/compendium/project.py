"""Where things live: one object that knows the project's source and output folders.

Sources (notebooks, chapter specs, claims, the book's pages) always come from the
project root. Outputs (executed chapters, result records, the rendered book) go under an
*output root*, the project root by default; tests and scratch runs point it elsewhere so
that they never overwrite the book's own outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT_ENV = "COMPENDIUM_ROOT"


def find_root(start: Path | None = None) -> Path:
    """The project root: ``$COMPENDIUM_ROOT``, else the nearest folder above ``start``
    (default: the working directory, then this file) holding ``_config.yml`` and ``notebooks/``."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    candidates = [Path(start or Path.cwd()).resolve(), Path(__file__).resolve()]
    for origin in candidates:
        for folder in (origin, *origin.parents):
            if (folder / "_config.yml").is_file() and (folder / "notebooks").is_dir():
                return folder
    raise FileNotFoundError(
        "Cannot find the compendium's root (a folder with _config.yml and notebooks/). "
        f"Run from inside the project or set {ROOT_ENV}."
    )


@dataclass(frozen=True)
class Project:
    root: Path
    output_root: Path
    #: The ``compendium`` package the chapters import (default: the one this process imported).
    #: The runner puts its parent folder first on the kernel's import path, so that the kernel
    #: imports this same package, and tracks each chapter's dependencies in it.
    package: Path | None = field(default=None, compare=False)

    @classmethod
    def discover(cls, root: Path | str | None = None, output_root: Path | str | None = None) -> "Project":
        r = Path(root).resolve() if root else find_root()
        return cls(root=r, output_root=Path(output_root).resolve() if output_root else r)

    # --- sources -------------------------------------------------------------------
    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def papers_dir(self) -> Path:
        return self.root / "data" / "papers"

    @property
    def package_dir(self) -> Path:
        return Path(self.package).resolve() if self.package else Path(__file__).resolve().parent

    def notebook(self, chapter: str) -> Path:
        return self.notebooks_dir / f"{chapter}.ipynb"

    def chapter_spec(self, chapter: str) -> Path:
        return self.notebooks_dir / f"{chapter}.yaml"

    def claims_file(self, chapter: str) -> Path:
        return self.papers_dir / f"{chapter}.yaml"

    # --- outputs -------------------------------------------------------------------
    @property
    def executed_dir(self) -> Path:
        return self.output_root / "book" / "chapters"

    @property
    def results_dir(self) -> Path:
        return self.output_root / "results"

    @property
    def build_dir(self) -> Path:
        return self.output_root / "_build"

    def executed(self, chapter: str) -> Path:
        return self.executed_dir / f"{chapter}.ipynb"

    def record(self, chapter: str) -> Path:
        return self.results_dir / f"{chapter}.json"

    def log(self, chapter: str) -> Path:
        """``results/<chapter>.log``: the kernel's output of the chapter's latest run."""
        return self.results_dir / f"{chapter}.log"

    def failure_marker(self, chapter: str) -> Path:
        """``results/<chapter>.failed.json``: present while the chapter's latest run failed."""
        return self.results_dir / f"{chapter}.failed.json"

    # --- run-time state (locks, staging) --------------------------------------------
    @property
    def locks_dir(self) -> Path:
        return self.build_dir / "locks"

    def run_lock(self, chapter: str) -> Path:
        """Held for the whole of one run of ``chapter``: a second run refuses at once."""
        return self.locks_dir / f"{chapter}.run.lock"

    def publish_lock(self, chapter: str) -> Path:
        """Held exclusively while a run publishes the chapter's notebook and record together,
        shared by readers of the pair (the book's staging)."""
        return self.locks_dir / f"{chapter}.publish.lock"

    @property
    def build_lock(self) -> Path:
        return self.locks_dir / "build.lock"

    @property
    def staging_dir(self) -> Path:
        """Where runs write their notebook and record before publishing them (``_build/runs``)."""
        return self.build_dir / "runs"
