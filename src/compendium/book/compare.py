"""Two results records of one chapter side by side: what differs in how they ran, in their
numbers and in their verdicts (``compendium compare A B``).

Why it exists: a verdict deserves trust only if it does not hang on accidents of the run. Two
runs of the same commit and parameters that differ only in the machine's vector kernels
(``environment.cpu.kernels``) or its thread count perturb every trained number in its last bits;
a verdict that flips between them was decided by that noise, whatever its interval said. The
same comparison tells a reader who re-ran a chapter with other parameters what moved.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compendium.book.claims import verdict_label
from compendium.book.environment import kernels_label
from compendium.project import Project


@dataclass
class NumberChange:
    """One entry of the records' ``numbers`` that differs (``None``: absent from that record)."""
    name: str
    a: Any
    b: Any

    @property
    def relative(self) -> float | None:
        """|b − a| / max(|a|, |b|) for two finite numbers, else None."""
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (self.a, self.b)):
            return None
        a, b = float(self.a), float(self.b)
        if not (math.isfinite(a) and math.isfinite(b)):
            return None
        scale = max(abs(a), abs(b))
        return 0.0 if scale == 0 else abs(b - a) / scale


@dataclass
class ClaimChange:
    """A claim whose verdict (as the scoreboard words it: a modelled claim with its outcome) or
    whose ``ours`` text differs, or that only one record has (``only_in`` "a" or "b")."""
    claim: str
    verdict_a: str | None
    verdict_b: str | None
    ours_a: str | None
    ours_b: str | None
    only_in: str | None = None

    @property
    def flipped(self) -> bool:
        """The verdict differs; a claim that only one record has is not a flip."""
        return self.only_in is None and self.verdict_a != self.verdict_b


@dataclass
class RecordComparison:
    """What differs between two records of one chapter; :meth:`summary` prints it."""
    chapter: str
    run: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # how they ran: commit, profile, threads, kernels …
    parameters: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    numbers: list[NumberChange] = field(default_factory=list)
    n_numbers: int = 0
    claims: list[ClaimChange] = field(default_factory=list)
    n_claims: int = 0

    @property
    def flips(self) -> list[ClaimChange]:
        """The claims judged in both records whose verdicts differ."""
        return [c for c in self.claims if c.flipped]

    def summary(self) -> str:
        """The comparison as text: run facts and parameters that differ, then numbers (largest
        relative change first), then claims (verdict flips marked FLIP)."""
        out = [f"== {self.chapter}"]
        for k, (a, b) in self.run.items():
            out.append(f"  {k}: {a} | {b}")
        for k, (a, b) in self.parameters.items():
            out.append(f"  parameter {k}: {a!r} | {b!r}")
        if not self.run and not self.parameters:
            out.append("  same commit, parameters, threads and kernels")
        out.append(f"  numbers: {len(self.numbers)} of {self.n_numbers} differ")
        for n in sorted(self.numbers, key=lambda n: -(n.relative or 0)):
            rel = f" ({n.relative:.2%})" if n.relative is not None else ""
            out.append(f"    {n.name}: {n.a} | {n.b}{rel}")
        moved = len(self.claims) - len(self.flips)
        out.append(f"  claims: {len(self.flips)} of {self.n_claims} verdicts flipped, {moved} other difference(s)")
        for c in self.claims:
            if c.only_in:
                v, o = (c.verdict_a, c.ours_a) if c.only_in == "a" else (c.verdict_b, c.ours_b)
                out.append(f"    {c.claim}: only in {c.only_in.upper()} — {v} — {o}")
                continue
            mark = "FLIP " if c.flipped else ""
            out.append(f"    {mark}{c.claim}: {c.verdict_a} — {c.ours_a}")
            out.append(f"    {' ' * len(mark)}{' ' * len(c.claim)}  {c.verdict_b} — {c.ours_b}")
        return "\n".join(out)


def _run_facts(rec: dict[str, Any]) -> dict[str, Any]:
    env = rec.get("environment") or {}
    cpu = env.get("cpu") or {}
    git = env.get("git") or {}
    packages = env.get("packages") or {}
    return {"commit": (git.get("commit") or "unknown")[:10] + (" + changes" if git.get("dirty") else ""),
            "profile": rec.get("profile"), "python": env.get("python"), "torch": packages.get("torch"),
            "numpy": packages.get("numpy"), "threads": cpu.get("torch_threads"),
            "kernels": kernels_label(cpu) or "not recorded", "cpu flags": (cpu.get("kernels") or {}).get("flags"),
            "cpu": cpu.get("model"),
            "device": (rec.get("device") or {}).get("used") if isinstance(rec.get("device"), dict) else None}


def compare_records(a: dict[str, Any], b: dict[str, Any]) -> RecordComparison:
    """Compare two results records (``results/<chapter>.json``) of the same chapter.

    The entries of ``numbers`` are compared exactly (a record repeats bit for bit only on the
    same machine, threads and kernels); claims are matched by name, and a claim is listed when its
    verdict (:func:`compendium.book.claims.verdict_label`: a modelled claim with its outcome) or
    its ``ours`` text differs, or when only one record has it. The ``quantities`` behind the
    claims are not compared one by one: their rounded intervals are the claims' ``ours``."""
    ca, cb = a.get("chapter"), b.get("chapter")
    if ca != cb:
        raise ValueError(f"the records are of different chapters: {ca!r} and {cb!r}")
    out = RecordComparison(chapter=str(ca))
    fa, fb = _run_facts(a), _run_facts(b)
    out.run = {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}
    pa, pb = a.get("parameters") or {}, b.get("parameters") or {}
    out.parameters = {k: (pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)}
    na, nb = a.get("numbers") or {}, b.get("numbers") or {}
    names = list(na) + [k for k in nb if k not in na]  # a number only one record has differs from "absent"
    out.n_numbers = len(names)
    out.numbers = [NumberChange(k, na.get(k), nb.get(k)) for k in names if na.get(k) != nb.get(k)]
    claims_a = {c["claim"]: c for c in a.get("claims") or []}
    claims_b = {c["claim"]: c for c in b.get("claims") or []}
    out.n_claims = len(set(claims_a) | set(claims_b))
    for name in list(claims_a) + [k for k in claims_b if k not in claims_a]:
        c, d = claims_a.get(name), claims_b.get(name)
        va, vb = (verdict_label(c) if c else None), (verdict_label(d) if d else None)
        oa, ob = (c or {}).get("ours"), (d or {}).get("ours")
        only = "a" if d is None else "b" if c is None else None
        if only or va != vb or oa != ob:
            out.claims.append(ClaimChange(name, va, vb, oa, ob, only_in=only))
    return out


def load_record(path: Path) -> dict[str, Any]:
    """One results record, checked to be one (an object with a chapter and named claims);
    :class:`ValueError` naming the file otherwise."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable results record ({err})") from None
    if not isinstance(rec, dict) or not rec.get("chapter") or not isinstance(rec.get("claims", []), list) \
            or any(not isinstance(c, dict) or "claim" not in c for c in rec.get("claims", [])):
        raise ValueError(f"{path}: not a results record (needs a 'chapter' and a list of named 'claims')")
    return rec


def _records(path: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The records a place holds, by chapter, and the chapters whose latest run failed there: a
    results folder (``results/`` or an output root holding one) or one record file."""
    path = Path(path)
    if path.is_file():
        rec = load_record(path)
        return {rec["chapter"]: rec}, []
    folder = path / "results" if (path / "results").is_dir() else path
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: neither a results record nor a folder of them")
    names = Project(root=folder, output_root=folder)  # only its file naming: record / failure marker
    records, failed = {}, []
    for p in sorted(folder.glob("*.json")):
        rec = load_record(p)
        if p.name == names.failure_marker(rec["chapter"]).name:  # a failed latest run, not a record
            failed.append(rec["chapter"])
        else:
            records[rec["chapter"]] = rec
    return records, failed


def compare_paths(a: Path, b: Path, chapters: list[str] | None = None) -> tuple[list[RecordComparison], list[str]]:
    """Compare the records of the chapters both places hold (or of the ``chapters`` named, which
    both must hold). Two record files are compared whatever their names. Returns the comparisons
    and warnings (a chapter only one place holds; a chapter whose latest run failed, so that its
    record is the previous successful run's)."""
    (ra, fail_a), (rb, fail_b) = _records(a), _records(b)
    if not chapters and Path(a).is_file() and Path(b).is_file():  # compare_records refuses two chapters
        return [compare_records(*ra.values(), *rb.values())], []
    if chapters:
        missing = [f"{c} (not in {' or '.join(str(p) for p, r in ((a, ra), (b, rb)) if c not in r)})"
                   for c in chapters if c not in ra or c not in rb]
        if missing:
            raise FileNotFoundError("no results record for " + "; ".join(missing))
        names = chapters
    else:
        names = [c for c in ra if c in rb]
        if not names:
            raise FileNotFoundError(f"{a} and {b} hold no record of the same chapter")
    both_folders = not (Path(a).is_file() or Path(b).is_file())
    warnings = [f"{c}: only {p} holds a record" for p, r, other in ((a, ra, rb), (b, rb, ra))
                for c in r if c not in other and both_folders and not chapters]
    warnings += [f"{c}: the latest run in {p} failed; its record is the previous successful run's"
                 for p, failed in ((a, fail_a), (b, fail_b)) for c in failed if c in names]
    return [compare_records(ra[c], rb[c]) for c in names], warnings
