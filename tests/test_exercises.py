"""The book's exercise checks: each reference solution passes, each typical wrong answer fails
with its own hint, and a missing answer gets the general hint."""

from __future__ import annotations

import json

import pytest

from compendium.exercises import all_exercises, check, exercise, reference

CHECKS = sorted(all_exercises())


@pytest.mark.parametrize("chapter,number", CHECKS, ids=[f"{c}-{n}" for c, n in CHECKS])
def test_reference_solution_passes_and_typical_mistakes_fail_with_their_hint(chapter, number):
    ex = exercise(chapter, number)
    ref = reference(chapter, number)
    ok = check(chapter, number, ref)
    assert ok and ok.message.startswith("✓")
    assert ex.mistakes, "every check names at least one typical mistake"
    for wrong, why in ex.mistakes:
        res = check(chapter, number, wrong())
        assert not res, f"{wrong()!r} should fail"
        assert why in res.message and ex.hint in res.message
    res = check(chapter, number, ...)
    assert not res and "no answer yet" in res.message and ex.hint in res.message
    res = check(chapter, number, "twelve")
    assert not res and "number" in res.message


def test_every_chapter_has_a_checked_exercise_whose_solution_cell_calls_the_check(project):
    from compendium.chapters import available_chapters

    chapters = [c for c in available_chapters(project) if (project.root / "notebooks" / f"{c}.ipynb").is_file()]
    assert chapters
    for c in chapters:
        assert (c, 1) in CHECKS, f"chapter {c} has no checked exercise"
        nb = json.loads((project.root / "notebooks" / f"{c}.ipynb").read_text())
        sol = [cell for cell in nb["cells"] if cell["metadata"].get("exercise") == {"chapter": c, "number": 1}]
        assert len(sol) == 1 and "solution" in sol[0]["metadata"]["tags"]
        source = "".join(sol[0]["source"])
        assert f'check("{c}", 1, answer)' in source
        # only its own chapter's module: a change in another chapter's exercises (or in what
        # they import) must not re-run this chapter
        assert f"from compendium.exercises.{c} import check" in source


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(KeyError, match="primer 1"):
        check("nosuch", 9, 1)
