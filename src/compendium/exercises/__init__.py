"""Checks for the book's coding exercises: ``check("primer", 1, answer)``.

Every chapter has at least one coding exercise whose answer a student can check. Each check
computes its reference answer with the package itself (so it stays true as the code changes),
compares with a tolerance, and, when the answer is wrong, says what the usual mistakes give and
how to get on. The exercise's text lives in the chapter (a numbered ``{exercise}`` block); its
worked solution is a hidden ``{solution}`` that ends by calling this check; the student release
(``compendium course --student``) replaces the solution with the stub recorded here.

Each chapter's exercises live in their own module, ``compendium.exercises.<chapter>``, and a
notebook imports only its own (``from compendium.exercises.primer import check``): a chapter's
inputs fingerprint follows the modules its notebook imports, so one module holding every
chapter's reference solutions would make a change in, say, ``compendium.stats`` re-run all
eleven chapters. This module imports no chapter module statically; :func:`exercise` loads the
one it is asked for.

>>> from compendium.exercises.dashnet import check
>>> check("dashnet", 1, 6)   # doctest: +SKIP
✓ dashnet, exercise 1: correct (6).
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Exercise", "CheckResult", "EXERCISES", "register", "all_exercises", "check", "reference",
           "exercise", "stub"]


@dataclass(frozen=True)
class Exercise:
    chapter: str
    number: int
    title: str
    reference: Callable[[], Any]  # the reference solution (calls the package)
    hint: str  # shown for any wrong answer
    stub: str  # the code cell a student starts from
    rel: float = 0.0  # relative tolerance
    abs: float = 0.0  # absolute tolerance
    mistakes: tuple[tuple[Callable[[], Any], str], ...] = field(default=())  # (typical wrong answer, its hint)
    lab: bool = True  # fits a lab session (minutes, no long training)


@dataclass(frozen=True)
class CheckResult:
    """Truthy when the answer is right; its text is what a notebook shows."""

    ok: bool
    message: str
    hint: str = ""

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


def _close(answer: Any, ref: Any, rel: float, abs_: float) -> bool:
    try:
        a, r = float(answer), float(ref)
    except (TypeError, ValueError):
        return False
    if math.isnan(a):
        return False
    return math.isclose(a, r, rel_tol=rel, abs_tol=abs_) if (rel or abs_) else a == r


_CHECK = 'from compendium.exercises.{chapter} import check\ncheck("{chapter}", {number}, answer)'

# the registry, filled as chapter modules are imported (all_exercises() imports them all)
EXERCISES: dict[tuple[str, int], Exercise] = {}


def register(chapter: str, number: int, title: str, reference: Callable[[], Any], hint: str, stub: str,
             **kw: Any) -> Exercise:
    """Record a checked exercise (called by the chapter modules at import). ``stub`` is the code a
    student starts from; the call to the check is appended to it."""
    text = stub.rstrip() + "\n\n" + _CHECK.format(chapter=chapter, number=number)
    ex = EXERCISES[(chapter, number)] = Exercise(chapter, number, title, reference, hint, text, **kw)
    return ex


def _chapter_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def all_exercises() -> dict[tuple[str, int], Exercise]:
    """Every chapter's checked exercises (imports every chapter module)."""
    for name in _chapter_modules():
        importlib.import_module(f"{__name__}.{name}")
    return dict(sorted(EXERCISES.items()))


def exercise(chapter: str, number: int) -> Exercise:
    """The checked exercise ``chapter``.``number`` (loading that chapter's module on first use)."""
    if chapter in _chapter_modules():
        importlib.import_module(f"{__name__}.{chapter}")
    try:
        return EXERCISES[(chapter, int(number))]
    except KeyError:
        known = ", ".join(f"{c} {n}" for c, n in all_exercises())
        raise KeyError(f"no checked exercise {chapter!r} {number}; the checked exercises are: {known}") from None


def reference(chapter: str, number: int) -> Any:
    """The reference answer (computed with the package)."""
    return exercise(chapter, number).reference()


def stub(chapter: str, number: int) -> str:
    """The code a student starts from (what the student release puts in place of the solution)."""
    return exercise(chapter, number).stub


def check(chapter: str, number: int, answer: Any) -> CheckResult:
    """Compare ``answer`` with the reference solution; on a wrong answer, say why it may be wrong."""
    ex = exercise(chapter, number)
    where = f"{chapter}, exercise {number}"
    if answer is None or answer is Ellipsis:
        return CheckResult(False, f"… {where}: no answer yet. Hint: {ex.hint}", ex.hint)
    ref = ex.reference()
    if _close(answer, ref, ex.rel, ex.abs):
        return CheckResult(True, f"✓ {where}: correct ({answer!r}).")
    for wrong, why in ex.mistakes:
        w = wrong()
        if not _close(w, ref, ex.rel, ex.abs) and _close(answer, w, max(ex.rel, 1e-9), ex.abs):
            return CheckResult(False, f"✗ {where}: not yet ({answer!r}). {why} Hint: {ex.hint}", why)
    try:
        float(answer)
    except (TypeError, ValueError):
        why = f"the answer should be a number, got {type(answer).__name__}."
        return CheckResult(False, f"✗ {where}: not yet — {why} Hint: {ex.hint}", why)
    return CheckResult(False, f"✗ {where}: not yet ({answer!r}). Hint: {ex.hint}", ex.hint)
