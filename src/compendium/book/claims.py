"""The papers' claims and how a chapter's measurement is judged against each.

``data/papers/<chapter>.yaml`` holds, for each claim: an ``id``, the ``text`` quoted from
the paper, its ``source`` (abstract, or table and page), the ``published`` value (a number,
a ``[low, high]`` range, or the string ``not transcribed``), and a ``compare`` rule:

``{kind: value, tolerance: 0.5, unit: "%"}``
    ours within ``tolerance`` of the published number: reproduced; within twice: partly.
``{kind: range}``
    ours inside the published ``[low, high]``: reproduced; within 25 % of the range's
    width outside it: partly.
``{kind: check}``
    an ordering, trend or qualitative statement; the chapter reports whether it held
    (``True``, ``False`` or ``"partly"``) together with the evidence.

A claim marked ``scale: paper`` compares a number that only the paper's full setting can
reach (full data, full epochs); at any other scale its verdict is "not comparable at this
scale", and our number is still shown beside the published one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NOT_TRANSCRIBED = "not transcribed"

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
NOT_COMPARABLE = "not comparable at this scale"
NOT_RUN = "not run here"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_COMPARABLE, NOT_RUN)
_KINDS = ("value", "range", "check")


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str
    published: Any
    kind: str
    tolerance: float | None = None
    unit: str = ""
    scale: str = "any"  # "paper": only comparable when the paper's own setting ran
    note: str = ""

    @property
    def transcribed(self) -> bool:
        return not (isinstance(self.published, str) and self.published.strip() == NOT_TRANSCRIBED)

    def published_text(self) -> str:
        if not self.transcribed:
            return NOT_TRANSCRIBED
        if self.kind == "range":
            lo, hi = self.published
            return f"{lo:g}–{hi:g}{self.unit}"
        if isinstance(self.published, (int, float)):
            return f"{self.published:g}{self.unit}"
        return str(self.published)


@dataclass
class Measurement:
    """Our side of one claim, computed by the build."""

    value: float | None = None
    holds: bool | str | None = None  # for kind=check: True, False or "partly"
    evidence: str = ""
    comparable: bool = True  # False when this run's scale cannot speak to the claim
    unit: str = ""
    not_run: str = ""  # why this build could not measure the claim at all (e.g. the data is absent)

    def text(self) -> str:
        parts = []
        if self.value is not None:
            parts.append(f"{self.value:.4g}{self.unit}")
        if self.evidence:
            parts.append(self.evidence)
        return "; ".join(parts) if parts else "—"


@dataclass
class Judgement:
    claim: Claim
    measurement: Measurement | None
    verdict: str
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "claim": self.claim.id,
            "text": self.claim.text,
            "source": self.claim.source,
            "published": self.claim.published_text(),
            "ours": m.text() if m else "—",
            "value": m.value if m else None,
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass
class PaperClaims:
    chapter: str
    citation: str
    arxiv: str | None
    claims: list[Claim] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> "PaperClaims":
        with open(path, encoding="utf-8") as fh:
            d = yaml.safe_load(fh)
        claims, seen = [], set()
        for c in d.get("claims") or []:
            cmp = c.get("compare") or {}
            kind = cmp.get("kind")
            if kind not in _KINDS:
                raise ValueError(f"{path}: claim '{c.get('id')}': compare.kind must be one of {_KINDS}")
            for key in ("id", "text", "source", "published"):
                if key not in c:
                    raise ValueError(f"{path}: claim '{c.get('id')}' lacks '{key}'")
            if c["id"] in seen:
                raise ValueError(f"{path}: claim id '{c['id']}' is used twice")
            seen.add(c["id"])
            claim = Claim(
                id=c["id"], text=c["text"].strip(), source=c["source"], published=c["published"], kind=kind,
                tolerance=cmp.get("tolerance"), unit=cmp.get("unit", ""), scale=c.get("scale", "any"),
                note=c.get("note", ""),
            )
            if claim.transcribed and kind == "value" and (claim.tolerance is None or not isinstance(claim.published, (int, float))):
                raise ValueError(f"{path}: claim '{claim.id}': a value claim needs a numeric 'published' and a 'tolerance'")
            if claim.transcribed and kind == "range" and not (isinstance(claim.published, list) and len(claim.published) == 2):
                raise ValueError(f"{path}: claim '{claim.id}': a range claim needs published: [low, high]")
            claims.append(claim)
        return cls(chapter=d["id"], citation=d["citation"], arxiv=d.get("arxiv"), claims=claims)

    def claim(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise KeyError(f"chapter '{self.chapter}' has no claim '{claim_id}'; claims: {[c.id for c in self.claims]}")


def judge(claim: Claim, m: Measurement | None, at_paper_scale: bool) -> Judgement:
    """The verdict for one claim given our measurement (``None``: not measured by this run)."""
    if m is None:
        return Judgement(claim, None, NOT_RUN, "this build did not measure it")
    if m.not_run:
        return Judgement(claim, m, NOT_RUN, m.not_run)
    if not m.comparable or (claim.scale == "paper" and not at_paper_scale):
        return Judgement(claim, m, NOT_COMPARABLE, "the paper's setting did not run here")
    if claim.kind == "check":
        if m.holds is None:
            return Judgement(claim, m, NOT_RUN, "no outcome reported")
        verdict = {True: REPRODUCED, False: NOT_REPRODUCED, "partly": PARTLY}.get(m.holds)
        if verdict is None:
            raise ValueError(f"claim '{claim.id}': holds must be True, False or 'partly', got {m.holds!r}")
        return Judgement(claim, m, verdict)
    if not claim.transcribed:
        return Judgement(claim, m, NOT_COMPARABLE, "published value not transcribed")
    if m.value is None:
        return Judgement(claim, m, NOT_RUN, "no value reported")
    if claim.kind == "value":
        gap = abs(m.value - float(claim.published))
        tol = float(claim.tolerance)
        verdict = REPRODUCED if gap <= tol else PARTLY if gap <= 2 * tol else NOT_REPRODUCED
        return Judgement(claim, m, verdict, f"gap {gap:.3g}{claim.unit} (tolerance {tol:g}{claim.unit})")
    lo, hi = (float(x) for x in claim.published)
    if lo <= m.value <= hi:
        return Judgement(claim, m, REPRODUCED, "inside the published range")
    outside = lo - m.value if m.value < lo else m.value - hi
    verdict = PARTLY if outside <= 0.25 * (hi - lo) else NOT_REPRODUCED
    return Judgement(claim, m, verdict, f"{outside:.3g}{claim.unit} outside the published range")
