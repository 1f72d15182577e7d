"""The student and instructor releases (``compendium course``) and the course guide page."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import papermill as pm

from compendium.book.course import STUB_TAG, course_guide_markdown, wall_time
from compendium.book.present import load_course
from compendium.chapters import available_chapters
from conftest import ROOT


def _code(cell) -> str:
    return "".join(cell["source"])


def test_student_release_has_no_solution_cell_keeps_stubs_and_parses_with_papermill(project, tmp_path):
    out = tmp_path / "handout"
    proc = subprocess.run([sys.executable, "-m", "compendium", "course", "--student", str(out)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    chapters = available_chapters(project)
    assert sorted(p.stem for p in out.glob("*.ipynb")) == sorted(chapters)
    for c in chapters:
        path = out / f"{c}.ipynb"
        nb = json.loads(path.read_text())
        text = json.dumps(nb, ensure_ascii=False)
        assert not [cell for cell in nb["cells"] if "solution" in cell["metadata"].get("tags", [])], c
        assert "{solution" not in text and "{exercise}" not in text, c
        assert "{glue" not in text, f"{c}: a raw glue role in the student release"
        if "‹" in text:  # a computed number's placeholder, explained once
            assert sum("report.numbers" in _code(cell) for cell in nb["cells"] if cell["cell_type"] == "markdown") == 1
        stubs = [cell for cell in nb["cells"] if STUB_TAG in cell["metadata"].get("tags", [])]
        assert stubs, f"{c}: no exercise stub"
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                ast.parse(_code(cell))  # every code cell is valid Python
        params = pm.inspect_notebook(str(path))  # papermill still finds the parameters cell
        assert params, c
        for stub in stubs:  # a stub runs as handed out and asks for an answer
            ns: dict = {}
            exec(compile(_code(stub).replace("check(", "_result = check("), f"{c}-stub", "exec"), ns)
            assert not ns["_result"] and "no answer yet" in ns["_result"].message
    readme = (out / "README.md").read_text()
    assert "check(" in readme


def test_instructor_release_keeps_the_solutions(tmp_path):
    out = tmp_path / "solutions"
    proc = subprocess.run([sys.executable, "-m", "compendium", "course", "--instructor", str(out), "--chapters",
                           "primer,calibration"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.stem for p in out.glob("*.ipynb")) == ["calibration", "primer"]
    nb = json.loads((out / "primer.ipynb").read_text())
    sols = [cell for cell in nb["cells"] if "solution" in cell["metadata"].get("tags", [])]
    assert any('check("primer", 1, answer)' in _code(c) and "answer = ..." not in _code(c) for c in sols)
    bad = subprocess.run([sys.executable, "-m", "compendium", "course", "--student", str(tmp_path / "x"), "--chapters",
                          "nosuch"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "nosuch" in bad.stderr


def test_course_guide_reads_wall_times_from_the_records(project):
    course = load_course(project.root)
    assert {w["week"] for w in course["weeks"]} >= set(range(1, 11))
    records = {"primer": {"profile": "default", "wall_time_s": 123.0, "wall_times": {"quick": 7.5, "default": 123.0}},
               "tdbn": {"profile": "default", "wall_time_s": 42.0}}
    assert wall_time(records["primer"], "quick") == 7.5 and wall_time(records["tdbn"], "default") == 42.0
    assert wall_time(records["tdbn"], "quick") is None
    page = course_guide_markdown(project, course, present=["primer", "tdbn"], records=records)
    assert "2.0 min" in page and "8 s" in page and "42 s" in page  # formatted from the records, not typed
    assert "{ref}`primer.1 <primer-ex1>`" in page and "Suggested syllabus" in page
    for c in available_chapters(project):
        assert c in course["chapters"], f"{c} has no learning goals in book/course.yaml"
