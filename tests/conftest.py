"""Shared fixtures. The local data mirror (../shared/data) is used when it exists, as the
Makefile does; tests that need real data files skip only the data-specific assertions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_MIRROR = ROOT.parent / "shared" / "data"
if "COMPENDIUM_DATA_MIRROR" not in os.environ and _MIRROR.is_dir():
    os.environ["COMPENDIUM_DATA_MIRROR"] = str(_MIRROR)


@pytest.fixture
def project():
    from compendium.project import Project

    return Project.discover(ROOT)


@pytest.fixture
def scratch_project(project, tmp_path):
    """The real project's sources with outputs redirected into a temporary folder."""
    from compendium.project import Project

    return Project(root=project.root, output_root=tmp_path / "out")


def mirror_has(*paths: str) -> bool:
    m = os.environ.get("COMPENDIUM_DATA_MIRROR")
    return bool(m) and all((Path(m) / p).is_file() for p in paths)


DEMO_NOTEBOOK_CELLS = [
    ("markdown", "# Demo chapter", []),
    ("code", "x = 1\nfail = False", ["parameters"]),
    # y is a numpy scalar on purpose: numpy 2 reprs it as "np.float64(..)", which the glue must survive
    ("code", "import numpy as np\nif fail:\n    raise ValueError('asked to fail')\ny = np.float64(2 * x)", []),
    ("code", "from compendium.book.report import ChapterReport\n"
             "report = ChapterReport('demo', {'x': x, 'fail': fail}, scale='demo scale')\n"
             "report.number('y', y)\nreport.measure('y_over_x', float(y) / x, exact=True)\n"
             "report.claims_table()", []),
    ("markdown", "y is {glue:text}`y:.1f`.", []),
    ("code", "report.save();", []),
]


@pytest.fixture
def demo_project(tmp_path):
    """A minimal, fast project with one chapter ('demo'), for runner and build tests."""
    import nbformat

    from compendium.project import Project

    root = tmp_path / "demo"
    (root / "notebooks").mkdir(parents=True)
    (root / "data" / "papers").mkdir(parents=True)
    (root / "book").mkdir()
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/index\nparts:\n  - caption: C\n    chapters:\n"
                                   "      - file: book/chapters/demo\n      - file: book/scoreboard\n")
    (root / "book" / "index.md").write_text("# Demo book\n\nSee the {doc}`scoreboard <scoreboard>`.\n")
    (root / "notebooks" / "demo.yaml").write_text(
        "id: demo\ntitle: Demo chapter\npaper: A paper\narxiv: '0000.00000'\ndatasets: []\n"
        "parameters:\n  x: {type: int, min: 0, max: 100}\n  fail: {type: bool}\n"
        "profiles:\n  default: {x: 1, fail: false}\n  quick: {x: 2}\n  paper: {x: 50}\n")
    (root / "data" / "papers" / "demo.yaml").write_text(
        "id: demo\ncitation: A. Author. A paper. 2020.\narxiv: '0000.00000'\nclaims:\n"
        "  - id: doubles\n    text: y is twice x.\n    source: abstract\n    published: qualitative\n"
        "    rule: {kind: threshold, quantity: y_over_x, at_least: 2}\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    for kind, src, tags in DEMO_NOTEBOOK_CELLS:
        cell = nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.write(nb, root / "notebooks" / "demo.ipynb")
    return Project(root=root, output_root=root)
