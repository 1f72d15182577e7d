"""Every chapter executed with its quick profile, then the book built from those outputs."""

import json
import subprocess
import sys

import pytest

from compendium.book.claims import VERDICTS
from compendium.book.render import render_book
from compendium.book.runner import run_chapter
from compendium.chapters import available_chapters
from conftest import ROOT

CHAPTERS = available_chapters(__import__("compendium.project", fromlist=["Project"]).Project.discover(ROOT))


@pytest.fixture(scope="module")
def quick_outputs(tmp_path_factory):
    from compendium.project import Project

    project = Project(root=ROOT, output_root=tmp_path_factory.mktemp("quick-book"))
    records = {c: run_chapter(project, c, "quick", log=lambda m: None).record for c in CHAPTERS}
    return project, records


@pytest.mark.chapter
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_quick_profile_runs_and_judges_every_claim(quick_outputs, chapter):
    project, records = quick_outputs
    rec = records[chapter]
    assert rec["profile"] == "quick"
    assert rec["data"] or rec["numbers"], "a chapter records what ran"
    assert rec["scale"], "a chapter says what scale ran"
    assert all(c["verdict"] in VERDICTS for c in rec["claims"])
    # every quantity a claim's rule reads was either measured or declared unavailable with a reason
    from compendium.book.claims import PaperClaims

    claims = PaperClaims.load(project.claims_file(chapter))
    known = set(rec["quantities"]) | set(rec["unavailable"])
    silent = sorted(claims.quantity_names() - known)
    assert not silent, f"{chapter}: claims read quantities the run neither measured nor declared unavailable: {silent}"
    on_disk = json.loads(project.record(chapter).read_text())
    assert on_disk["inputs_hash"] == rec["inputs_hash"]


@pytest.mark.book
def test_book_builds_from_quick_outputs_without_warnings(quick_outputs):
    project, _ = quick_outputs
    index, log = render_book(project, strict=True)  # strict: any Sphinx warning fails the build
    html = project.build_dir / "html" / "book"
    page = (html / "index.html").read_text()
    for c in CHAPTERS:
        assert f"chapters/{c}.html" in page
        assert (html / "chapters" / f"{c}.html").is_file()
    board = (html / "scoreboard.html").read_text()
    assert "Reproduction scoreboard" in board and "quick" in board
    assert "glance.png" in board and "glance.png" in page and "#claims-primer" in board
    # teaching: exercises with hidden solutions in every chapter, the course guide, glossary, bibliography
    from compendium.book.present import page_problems

    for c in CHAPTERS:
        text = (html / "chapters" / f"{c}.html").read_text()
        assert f'id="{c}-ex1"' in text and "solution dropdown" in text, c
        assert f"✓ {c}, exercise 1: correct" in text, f"{c}: the worked solution's check ran in the build"
        assert "What you will learn" in text and "This run" in text, c
    guide = (html / "course.html").read_text()
    assert "Suggested syllabus" in guide and "not yet recorded" in guide  # quick runs only: no default time
    assert "surrogate gradient" in (html / "glossary.html").read_text()
    bib = (html / "references.html").read_text().lower()  # the bibliography style sets titles in sentence case
    assert "spatio-temporal backpropagation" in bib and "graph attention networks" in bib
    assert page_problems(project.build_dir / "html") == []  # no warning, stderr, traceback or machine path


def test_cli_data_commands():
    proc = subprocess.run([sys.executable, "-m", "compendium", "data", "list"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "NO CHECKSUM RECORDED" in proc.stdout and "cifar10" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "compendium", "data", "verify", "nosuch"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2 and "unknown dataset" in proc.stderr
