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

from compendium.book.environment import kernels_label


@dataclass
class NumberChange:
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
    claim: str
    verdict_a: str | None
    verdict_b: str | None
    ours_a: str | None
    ours_b: str | None

    @property
    def flipped(self) -> bool:
        return self.verdict_a != self.verdict_b


@dataclass
class RecordComparison:
    """What differs between two records of one chapter; :meth:`summary` prints it."""
    chapter: str
    run: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # how they ran: commit, profile, threads, kernels …
    parameters: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    numbers: list[NumberChange] = field(default_factory=list)
    n_numbers: int = 0
    claims: list[ClaimChange] = field(default_factory=list)  # claims whose verdict or interval differs

    @property
    def flips(self) -> list[ClaimChange]:
        return [c for c in self.claims if c.flipped]

    def summary(self) -> str:
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
        flips = self.flips
        out.append(f"  verdicts: {len(flips)} of the claims differ" if flips else "  verdicts: all equal")
        for c in self.claims:
            mark = "FLIP " if c.flipped else ""
            out.append(f"    {mark}{c.claim}: {c.verdict_a} — {c.ours_a}")
            out.append(f"    {' ' * len(mark)}{' ' * len(c.claim)}  {c.verdict_b} — {c.ours_b}")
        return "\n".join(out)


def _run_facts(rec: dict[str, Any]) -> dict[str, Any]:
    env = rec.get("environment") or {}
    cpu = env.get("cpu") or {}
    git = env.get("git") or {}
    return {"commit": (git.get("commit") or "unknown")[:10] + (" + changes" if git.get("dirty") else ""),
            "profile": rec.get("profile"), "torch": (env.get("packages") or {}).get("torch"),
            "threads": cpu.get("torch_threads"), "kernels": kernels_label(cpu) or "not recorded",
            "cpu": cpu.get("model"), "device": (rec.get("device") or {}).get("used")
            if isinstance(rec.get("device"), dict) else None}


def compare_records(a: dict[str, Any], b: dict[str, Any]) -> RecordComparison:
    """Compare two results records (``results/<chapter>.json``) of the same chapter.

    Numbers are compared exactly (a record repeats bit for bit only on the same machine, threads
    and kernels); claims are matched by name, and a claim is listed when its verdict or its
    ``ours`` text differs."""
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
    claims_b = {c["claim"]: c for c in b.get("claims") or []}
    seen = set()
    for c in a.get("claims") or []:
        d = claims_b.get(c["claim"], {})
        seen.add(c["claim"])
        if c.get("verdict") != d.get("verdict") or c.get("ours") != d.get("ours"):
            out.claims.append(ClaimChange(c["claim"], c.get("verdict"), d.get("verdict"), c.get("ours"), d.get("ours")))
    for name, d in claims_b.items():
        if name not in seen:
            out.claims.append(ClaimChange(name, None, d.get("verdict"), None, d.get("ours")))
    return out


def _records(path: Path) -> dict[str, Path]:
    """A results folder (``results/`` or an output root holding one) or one record file."""
    if path.is_file():
        return {path.stem: path}
    folder = path / "results" if (path / "results").is_dir() else path
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: neither a results record nor a folder of them")
    return {p.stem: p for p in sorted(folder.glob("*.json"))}


def compare_paths(a: Path, b: Path, chapters: list[str] | None = None) -> list[RecordComparison]:
    """Compare the records of the chapters both places hold (or the ``chapters`` named, which
    both must hold)."""
    ra, rb = _records(Path(a)), _records(Path(b))
    if chapters:
        missing = [f"{c} ({', '.join(str(p) for p, r in ((a, ra), (b, rb)) if c not in r)})"
                   for c in chapters if c not in ra or c not in rb]
        if missing:
            raise FileNotFoundError("no results record for " + "; ".join(missing))
        names = chapters
    else:
        names = [c for c in ra if c in rb]
        if not names:
            raise FileNotFoundError(f"{a} and {b} hold no record of the same chapter")
    return [compare_records(json.loads(ra[c].read_text()), json.loads(rb[c].read_text())) for c in names]
