"""Teaching with the book: the course guide page and the student / instructor releases.

``compendium course --student OUT/`` writes every chapter notebook with its solution cells
removed and, in place of each checked exercise's solution, the stub a student starts from (ending
in ``check(...)``); ``--instructor`` keeps the solutions. The course guide (``book/course.yaml``
rendered with each chapter's recorded wall times) is built into the book by ``compendium build``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from compendium.chapters import available_chapters, last_record, load_spec
from compendium.project import Project

SOLUTION_TAG = "solution"
STUB_TAG = "exercise-stub"
_EXERCISE_FENCE = re.compile(r"^```\{exercise\}[ \t]*(?P<title>[^\n]*)\n(?P<opts>(?::[^\n]*\n)*)\n?(?P<body>.*?)\n```\s*$",
                             re.S)
_ROLE = re.compile(r"\{(term|doc|ref|numref)\}`(?:(?P<text>[^`<]+?)\s*<[^`>]+>|(?P<plain>[^`]+))`")
_CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")
# {glue:text}`name:fmt`, {glue:}`name`, {glue}`name`: a number the chapter's code computes
_GLUE = re.compile(r"\{glue(?::\w*)?\}`(?P<name>[^`:]+)(?::[^`]*)?`")
GLUE_NOTE = ("*In this notebook, ‹name› in the text marks a number the chapter computes (the book prints "
             "its value): run the chapter, then `report.numbers[\"name\"]` holds it.*")


# ---------------------------------------------------------------------------------------------
# wall times from the records


def wall_time(record: dict[str, Any] | None, profile: str) -> float | None:
    """The last recorded wall time of ``profile`` (the record keeps one per profile in ``wall_times``)."""
    if not record:
        return None
    times = record.get("wall_times") or {}
    if profile in times:
        return float(times[profile])
    if record.get("profile") == profile and record.get("wall_time_s") is not None:
        return float(record["wall_time_s"])
    return None


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "not yet recorded"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


# ---------------------------------------------------------------------------------------------
# the course guide page


def course_guide_markdown(project: Project, course: dict[str, Any], present: list[str],
                          records: dict[str, Any] | None = None) -> str:
    records = records or {}
    titles = {c: load_spec(project, c).title for c in available_chapters(project)}
    info = course.get("chapters") or {}

    def chap(c: str) -> str:
        return f"{{doc}}`{titles.get(c, c)} <chapters/{c}>`" if c in present else titles.get(c, c)

    def ex(c: str, n: int) -> str:
        return f"{{ref}}`{c}.{n} <{c}-ex{n}>`" if c in present else f"{c}.{n}"

    out = ["# Course guide", "",
           "How to teach from this book: what each chapter teaches, what it builds on, a twelve-week plan, how "
           "long each chapter takes to run, and which exercises fit a lab session. The times below are read from "
           "each chapter's latest records (`results/<chapter>.json`) when this page was built; a profile that no "
           "recorded run has used reads \"not yet recorded\" (each record keeps the last time of every profile, so running "
           "`compendium build --profile quick` once before the default build fills in both columns).", "",
           "## Audience and prerequisites", "", str(course.get("audience", "")).strip(), "",
           "Every chapter needs the {doc}`primer <chapters/primer>`'s neuron, surrogate gradient and training loop, "
           "except the device and statistics chapters, which stand alone. Each chapter's exercises start with a "
           "coding exercise a student can check (`check` from `compendium.exercises.<chapter>`); the others are discussion questions "
           "and small projects, with worked solutions or the approach hidden under each.", "",
           "## Handing out the notebooks", "",
           "```bash",
           "compendium course --student handout/       # no solutions; stubs",
           "compendium course --instructor solutions/  # with solutions",
           "```", "",
           "Students open a notebook, change a parameter in its first code cell (or run it with papermill: "
           "`papermill primer.ipynb out.ipynb -p epochs 2`), fill in `answer = ...` in each stub and run the "
           "check cell below it, which says whether the answer is right and, when it is not, what the usual "
           "mistakes give. The `quick` profile of every chapter runs on a laptop in about a minute (times below).",
           "", "## Suggested syllabus (twelve weeks)", "",
           "| week | chapter | topic | lab exercises |", "|---|---|---|---|"]
    for w in course.get("weeks") or []:
        chs = w.get("chapters") or []
        labs = ", ".join(ex(c, n) for c in chs for n in (info.get(c, {}).get("lab") or []))
        out.append(f"| {w.get('week')} | " + ", ".join(chap(c) for c in chs) + f" | {w.get('topic', '')} | {labs} |")
    out += ["", "A ten-week course drops the device and statistics weeks (11 and 12) or merges weeks 1 and 2; "
                "the chapters after the primer can be taught in any order their prerequisites allow.", "",
            "## Order and running times", "",
            "| chapter | builds on | quick profile | default profile |", "|---|---|---|---|"]
    for c in [c for c in available_chapters(project) if c in info]:
        rec = records.get(c) or last_record(project, c)
        pre = ", ".join(chap(p) for p in info[c].get("prerequisites") or []) or "—"
        out.append(f"| {chap(c)} | {pre} | {_fmt_time(wall_time(rec, 'quick'))} | {_fmt_time(wall_time(rec, 'default'))} |")
    out += ["", "Times are wall-clock seconds of the run that made each record, on the machine that recorded "
                "them (a 2-core CPU for the book, where `make book` runs two chapters at a time at one thread "
                "each: most chapters run on their own with both threads take a quarter to two fifths less); the `paper` "
                "profiles are meant for a GPU.", "",
            "## Learning goals and lab exercises", ""]
    for c in [c for c in available_chapters(project) if c in info]:
        out += [f"### {titles.get(c, c)}", ""]
        out += [f"- {g}" for g in info[c].get("goals") or []]
        labs = info[c].get("lab") or []
        if labs:
            out += ["", "In a lab session: " + ", ".join(ex(c, n) for n in labs) + "."]
        if c in present:
            out += ["", f"Read it: {chap(c)}."]
        out += [""]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# student and instructor releases


def _plain_roles(text: str) -> str:
    text = _ROLE.sub(lambda m: (m.group("text") or m.group("plain")).strip(), text)
    text = _GLUE.sub(lambda m: f"‹{m.group('name').strip()}›", text)
    return _CITE.sub(lambda m: "[" + ", ".join(k.strip() for k in m.group(1).split(",")) + "]", text)


def _exercise_markdown(text: str, counter: list[int]) -> str:
    m = _EXERCISE_FENCE.match(text.strip())
    if not m:
        return text
    counter[0] += 1
    title = m.group("title").strip() or str(counter[0])  # the book's titles carry the number: "primer.2 · ..."
    head = f"**Exercise {title}**"
    return f"{head}\n\n{m.group('body').strip()}"


def release_notebook(nb: Any, chapter: str, student: bool) -> Any:
    """The chapter notebook as handed out. Student: solution cells removed, each checked exercise's
    solution replaced by its stub, exercise blocks as plain markdown, MyST roles as plain text."""
    import nbformat

    from compendium.exercises import all_exercises

    if not student:
        return nb
    checked = all_exercises()
    cells, counter = [], [0]
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if SOLUTION_TAG in tags:
            meta = cell.get("metadata", {}).get("exercise")
            if cell.cell_type == "code" and meta and (meta["chapter"], meta["number"]) in checked:
                stub = nbformat.v4.new_code_cell(checked[(meta["chapter"], meta["number"])].stub)
                stub.metadata["tags"] = [STUB_TAG]
                stub.metadata["exercise"] = meta
                cells.append(stub)
            continue
        if cell.cell_type == "markdown":
            cell.source = _plain_roles(_exercise_markdown(cell.source, counter) if "exercise" in tags
                                       else cell.source)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    if any(c.cell_type == "markdown" and "‹" in c.source for c in cells):  # say once what ‹name› means
        first = next((i for i, c in enumerate(cells) if c.cell_type == "markdown"), 0)
        cells.insert(first + 1, nbformat.v4.new_markdown_cell(GLUE_NOTE))
    nb.cells = cells
    return nb


def write_release(project: Project, out: Path, student: bool, chapters: list[str] | None = None) -> list[Path]:
    """Write the chapters' notebooks (and their parameter specs) into ``out``; returns the notebooks."""
    import nbformat

    chapters = chapters or available_chapters(project)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for c in chapters:
        load_spec(project, c)  # a clear error for an unknown chapter
        nb = nbformat.read(project.notebook(c), as_version=4)
        nb = release_notebook(nb, c, student)
        target = out / f"{c}.ipynb"
        nbformat.validate(nb)
        nbformat.write(nb, target)
        shutil.copy2(project.chapter_spec(c), out / f"{c}.yaml")
        written.append(target)
    kind = "student" if student else "instructor"
    (out / "README.md").write_text(
        f"# {kind.title()} notebooks\n\n"
        + ("Each chapter's exercises are at its end. Exercise 1 is a coding exercise: fill in `answer = ...` and run "
           "the cell; `check(...)` says whether your answer is right and, if not, gives a hint. The other exercises "
           "are discussion questions and small projects.\n\n" if student else
           "These are the book's chapter sources with every solution (the student release leaves them out).\n\n")
        + "Run a chapter from the top in Jupyter, or with papermill and a profile's settings from its `.yaml`, e.g.\n\n"
          "    papermill primer.ipynb primer.out.ipynb -p epochs 1 -p n_train 2000 -p n_test 500\n\n"
          "The notebooks need the `compendium` package (`pip install -e .` in the book's repository).\n",
        encoding="utf-8")
    (out / "release.json").write_text(json.dumps({"kind": kind, "chapters": chapters}, indent=2), encoding="utf-8")
    return written
