"""The papers' claims, their pre-registered rules, and the engine that judges them.

``data/papers/<chapter>.yaml`` holds, for each claim:

``id``, ``text``
    a stable id and the claim quoted from the paper.
``source``, ``source_kind``
    where the published value comes from, and whether that source is ``primary`` (the paper
    or its official code), ``secondary`` (a later paper reprinting it) or ``secondary (note)``.
``published``
    a number, a ``[low, high]`` range, ``qualitative``, or ``not transcribed``.
``rule``
    the comparison rule as data (:mod:`compendium.book.rules`): which named quantities it
    reads and its thresholds. ``null`` only together with ``not_run:`` (a claim no build of
    this book can measure, e.g. one that needs a neuromorphic chip), with the reason.
``scale``
    the setting under which the claim can be compared (the *scale gate*): ``data`` (names of
    the datasets that must have run), ``full_data`` (no stand-in, no subsampling) and
    ``params`` (``{name: value}``, ``{name: {min: x}}``, ``{name: {max: x}}``,
    ``{name: {in: [...]}}``). A run outside the gate is "not comparable at this scale"; inside
    it, a value or range rule whose published value reads "not transcribed" gives the verdict
    "not transcribed" (ours is shown, with nothing to compare it with).
``modelled``
    for results that follow from constants we assumed or chose: ``{constants: "...",
    sensitivity: quantity?, section: "..."}``. The verdict is then **modelled** and the
    reason says whether the rule holds under the assumed constants and how robust that is.
``revisions``
    ``[{date, change, reason}]``: every change of the rule, scale, published value or model
    flag after the claim was first registered. ``data/papers/rules.lock`` pins a hash of each
    claim's rule together with its number of revisions; ``compendium claims lock`` refuses to
    re-pin a changed rule that has no new revision, and the test suite fails on a drift.

The engine (:func:`judge`) decides from the run's quantities, its parameters and its data
records; no notebook decides a verdict.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from compendium.book.quantities import Quantity
from compendium.book.rules import (INCONCLUSIVE, NOT_REPRODUCED, PARTLY, REPRODUCED, Outcome, Rule, scaled,
                                   parse_rule)

NOT_TRANSCRIBED = "not transcribed"
QUALITATIVE = "qualitative"

MODELLED = "modelled"
NOT_COMPARABLE = "not comparable at this scale"
# a claim inside its scale gate whose published value nobody could read off the paper: there is
# nothing to compare ours with, which is not a matter of scale
UNTRANSCRIBED = "not transcribed"
NOT_RUN = "not run here"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE, MODELLED, NOT_COMPARABLE, UNTRANSCRIBED, NOT_RUN)
SOURCE_KINDS = ("primary", "secondary", "secondary (note)", "ours")
_NEEDS_PUBLISHED = ("value", "range")
_CLAIM_KEYS = {"id", "text", "source", "source_kind", "published", "rule", "scale", "modelled", "revisions", "note",
               "not_run", "section"}
_SCALE_KEYS = {"data", "full_data", "params", "note"}


@dataclass(frozen=True)
class ScaleGate:
    """The setting under which a claim can be compared, checked against a run."""

    data: tuple[str, ...] = ()
    full_data: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    @classmethod
    def parse(cls, spec: Any, where: str) -> "ScaleGate":
        if spec in (None, "any"):
            return cls()
        if not isinstance(spec, Mapping) or set(spec) - _SCALE_KEYS:
            raise ValueError(f"{where}: 'scale' must be a mapping with keys among {sorted(_SCALE_KEYS)}, got {spec!r}")
        data = spec.get("data") or ()
        return cls(tuple([data] if isinstance(data, str) else data), bool(spec.get("full_data", False)),
                   dict(spec.get("params") or {}), str(spec.get("note", "")))

    @property
    def open(self) -> bool:
        return not (self.data or self.full_data or self.params)

    def failures(self, params: Mapping[str, Any], data: Sequence[Mapping[str, Any]]) -> list[str]:
        """What keeps this run outside the gate (empty: comparable)."""
        out: list[str] = []
        names = {d.get("name") for d in data}
        if self.data and not names & set(self.data):
            out.append(f"needs {' or '.join(self.data)} (ran {', '.join(sorted(str(n) for n in names)) or 'no dataset'})")
        if self.full_data:
            subs = [d.get("name") for d in data if d.get("substitute")]
            if subs:
                out.append(f"a stand-in ran for {', '.join(map(str, subs))}")
            sub = [k for k in ("n_train", "n_test") if params.get(k) is not None]
            if sub:
                out.append("data subsampled (" + ", ".join(f"{k}={params[k]}" for k in sub) + ")")
        for name, cond in self.params.items():
            have = params.get(name)
            if isinstance(cond, Mapping):
                if "min" in cond and not (isinstance(have, (int, float)) and have >= cond["min"]):
                    out.append(f"{name} ≥ {cond['min']} (ran {have})")
                if "max" in cond and not (isinstance(have, (int, float)) and have <= cond["max"]):
                    out.append(f"{name} ≤ {cond['max']} (ran {have})")
                if "in" in cond and have not in cond["in"]:
                    out.append(f"{name} in {cond['in']} (ran {have})")
            elif have != cond:
                out.append(f"{name} = {_param_text(cond)} (ran {_param_text(have)})")
        return out

    def text(self) -> str:
        if self.open:
            return "any scale"
        parts = []
        if self.data:
            parts.append(" or ".join(self.data))
        if self.full_data:
            parts.append("full data")
        for k, c in self.params.items():
            if isinstance(c, Mapping):
                ops = {"min": "≥", "max": "≤", "in": "in"}
                parts += [f"{k} {ops[op]} {c[op]}" for op in ops if op in c]
            else:
                parts.append(f"{k} = {_param_text(c)}")
        return ", ".join(parts) + (f" ({self.note})" if self.note else "")


def _param_text(value: Any) -> str:
    """A gate's parameter value for a reader: ``None`` (a size parameter's "no limit") reads "all"."""
    return "all" if value is None else str(value)


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str
    published: Any
    rule: Rule | None
    source_kind: str = "primary"
    scale: ScaleGate = field(default_factory=ScaleGate)
    modelled: Mapping[str, Any] | None = None
    revisions: tuple[Mapping[str, Any], ...] = ()
    note: str = ""
    not_run: str = ""
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def transcribed(self) -> bool:
        return not (isinstance(self.published, str) and self.published.strip() == NOT_TRANSCRIBED)

    @property
    def kind(self) -> str:
        return self.rule.kind if self.rule else "none"

    def published_text(self) -> str:
        if not self.transcribed:
            return NOT_TRANSCRIBED
        if isinstance(self.published, list):
            lo, hi = self.published
            return f"{lo:g}–{hi:g}"
        if isinstance(self.published, (int, float)):
            return f"{self.published:g}"
        return str(self.published)

    def rule_text(self) -> str:
        if self.rule is None:
            return "—"
        return self.rule.describe(self.published if self.transcribed else "published")

    def holds_on(self, values: Mapping[str, float]) -> bool:
        """Whether the claim's declared rule gives "reproduced" on exact values of its quantities
        (one draw of a model's assumptions, in a sensitivity search)."""
        if self.rule is None:
            raise ValueError(f"claim '{self.id}' has no rule to evaluate")
        q = {n: Quantity.exact(n, values[n]) for n in self.rule.quantities()}
        return self.rule.evaluate(q, self.published).verdict == REPRODUCED

    def fingerprint(self) -> str:
        """Hash of what pre-registration freezes: rule, scale gate, published value, model flag, not_run."""
        frozen = {k: self.spec.get(k) for k in ("rule", "scale", "published", "modelled", "not_run")}
        return hashlib.sha256(json.dumps(frozen, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Judgement:
    claim: Claim
    verdict: str
    reason: str = ""
    outcome: Outcome | None = None
    quantities: dict[str, Quantity] = field(default_factory=dict)

    @property
    def ours(self) -> str:
        if self.outcome is not None:
            return self.outcome.ours
        if self.quantities:  # not judged (outside the scale gate, no published value): in the rule's units
            factor = float(getattr(self.claim.rule, "factor", 1.0) or 1.0)
            return "; ".join(scaled(q, factor).text() for q in self.quantities.values())
        return "—"

    @property
    def n_text(self) -> str:
        if self.outcome is None:
            return "—"
        if self.outcome.method in ("1 run", "exact"):
            return self.outcome.method
        return f"n={self.outcome.n}"

    def as_dict(self) -> dict[str, Any]:
        c = self.claim
        return {
            "claim": c.id,
            "text": c.text,
            "source": c.source,
            "source_kind": c.source_kind,
            "published": c.published_text(),
            "rule": c.rule_text(),
            "scale_gate": c.scale.text(),
            "ours": self.ours,
            "n": self.n_text,
            "verdict": self.verdict,
            "model_outcome": _MODEL_OUTCOME.get(self.outcome.verdict, "") if self.verdict == MODELLED and self.outcome else "",
            "reason": self.reason,
            "possible": sorted(self.outcome.possible) if self.outcome else [],
            "revisions": [dict(r) for r in c.revisions],
            "section": c.spec.get("section", ""),
        }


def _parse_claim(c: Mapping[str, Any], where: str) -> Claim:
    cid = c.get("id")
    extra = set(c) - _CLAIM_KEYS
    if extra:
        raise ValueError(f"{where}: claim '{cid}' has unknown keys {sorted(extra)} (known: {sorted(_CLAIM_KEYS)})")
    for key in ("id", "text", "source", "published"):
        if key not in c:
            raise ValueError(f"{where}: claim '{cid}' lacks '{key}'")
    if "rule" not in c:
        raise ValueError(f"{where}: claim '{cid}' lacks 'rule' (a rule, or null together with 'not_run')")
    kind = c.get("source_kind", "primary")
    if kind not in SOURCE_KINDS:
        raise ValueError(f"{where}: claim '{cid}': source_kind must be one of {SOURCE_KINDS}, got {kind!r}")
    try:
        rule = parse_rule(c["rule"]) if c["rule"] is not None else None
    except ValueError as err:
        raise ValueError(f"{where}: claim '{cid}': {err}") from None
    if rule is None and not c.get("not_run"):
        raise ValueError(f"{where}: claim '{cid}': a claim without a rule must say why in 'not_run'")
    published = c["published"]
    transcribed = not (isinstance(published, str) and published.strip() == NOT_TRANSCRIBED)
    if rule is not None and rule.kind == "value" and transcribed:
        if not isinstance(published, (int, float)) or getattr(rule, "tol", None) is None:
            raise ValueError(f"{where}: claim '{cid}': a value rule needs a numeric 'published' and a 'tolerance'")
    if rule is not None and rule.kind == "range" and transcribed and not (isinstance(published, list) and len(published) == 2):
        raise ValueError(f"{where}: claim '{cid}': a range rule needs published: [low, high]")
    revisions = tuple(c.get("revisions") or ())
    for r in revisions:
        if not isinstance(r, Mapping) or not {"date", "change", "reason"} <= set(r):
            raise ValueError(f"{where}: claim '{cid}': each revision needs date, change and reason; got {r!r}")
    modelled = c.get("modelled")
    if modelled is not None and not (isinstance(modelled, Mapping) and "constants" in modelled):
        raise ValueError(f"{where}: claim '{cid}': 'modelled' needs at least 'constants' (what was assumed)")
    return Claim(id=cid, text=str(c["text"]).strip(), source=c["source"], published=published, rule=rule,
                 source_kind=kind, scale=ScaleGate.parse(c.get("scale"), f"{where}: claim '{cid}'"),
                 modelled=modelled, revisions=revisions, note=str(c.get("note", "")), not_run=str(c.get("not_run", "")),
                 spec=dict(c))


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
            claim = _parse_claim(c, str(path))
            if claim.id in seen:
                raise ValueError(f"{path}: claim id '{claim.id}' is used twice")
            seen.add(claim.id)
            claims.append(claim)
        return cls(chapter=d["id"], citation=d["citation"], arxiv=d.get("arxiv"), claims=claims)

    def claim(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise KeyError(f"chapter '{self.chapter}' has no claim '{claim_id}'; claims: {[c.id for c in self.claims]}")

    def quantity_names(self) -> set[str]:
        return {n for c in self.claims if c.rule for n in c.rule.quantities()} | \
               {c.modelled["sensitivity"] for c in self.claims if c.modelled and c.modelled.get("sensitivity")}


_HOLDS_TEXT = {REPRODUCED: "holds under the assumed constants", PARTLY: "partly holds under the assumed constants",
               NOT_REPRODUCED: "does not hold under the assumed constants",
               INCONCLUSIVE: "undecided under the assumed constants"}
_MODEL_OUTCOME = {REPRODUCED: "holds", PARTLY: "partly holds", NOT_REPRODUCED: "does not hold"}


def model_outcome(claim: Mapping[str, Any]) -> str:
    """For a *modelled* claim (a record's claim dict), what the model says of it — ``holds``,
    ``partly holds`` or ``does not hold`` under the assumed constants; ``""`` otherwise. (Records
    written before the field existed carry it only at the start of their reason.)"""
    if claim.get("verdict") != MODELLED:
        return ""
    if claim.get("model_outcome"):
        return str(claim["model_outcome"])
    reason = str(claim.get("reason", ""))
    return next((t for t in ("partly holds", "does not hold", "holds") if reason.startswith(t)), "")


def verdict_label(claim: Mapping[str, Any]) -> str:
    """The verdict as a reader must see it: a modelled verdict with what the model says
    (``modelled: does not hold``), so that "modelled" never hides a refutation."""
    outcome = model_outcome(claim)
    return f"{claim['verdict']}: {outcome}" if outcome else str(claim["verdict"])


def verdict_counts(claims: Sequence[Mapping[str, Any]]) -> str:
    """``2 reproduced, 4 modelled (1 holds, 3 do not hold), 1 not run here``: the verdicts of a
    chapter's claims in the engine's order, modelled ones split by what the model says."""
    counts = Counter(c["verdict"] for c in claims)
    parts = []
    for v in VERDICTS:
        if not counts.get(v):
            continue
        text = f"{counts[v]} {v}"
        if v == MODELLED:
            sub = Counter(model_outcome(c) or "undecided" for c in claims if c["verdict"] == MODELLED)
            plural = {"holds": "hold", "partly holds": "partly hold", "does not hold": "do not hold"}
            text += " (" + ", ".join(f"{k} {o if k == 1 else plural.get(o, o)}"
                                     for o in ("holds", "partly holds", "does not hold", "undecided")
                                     if (k := sub.get(o))) + ")"
        parts.append(text)
    return ", ".join(parts)


def judge(claim: Claim, quantities: Mapping[str, Quantity], *, unavailable: Mapping[str, str] | None = None,
          params: Mapping[str, Any] | None = None, data: Sequence[Mapping[str, Any]] = ()) -> Judgement:
    """The verdict for one claim from a run's quantities, parameters and data records."""
    unavailable = unavailable or {}
    params = params or {}
    if claim.rule is None:
        return Judgement(claim, NOT_RUN, claim.not_run)
    names = claim.rule.quantities()
    used = {n: quantities[n] for n in names if n in quantities}
    missing = [n for n in names if n not in quantities]
    if missing:
        why = "; ".join(dict.fromkeys(unavailable.get(n) or f"this run reported no quantity '{n}'" for n in missing))
        return Judgement(claim, NOT_RUN, why, quantities=used)
    gate = claim.scale.failures(params, data)
    if gate:
        return Judgement(claim, NOT_COMPARABLE, "outside the claim's scale: " + "; ".join(gate), quantities=used)
    if claim.rule.kind in _NEEDS_PUBLISHED and not claim.transcribed:
        return Judgement(claim, UNTRANSCRIBED, "the paper's value was not transcribed: ours has nothing to be compared "
                                               "with", quantities=used)
    outcome = claim.rule.evaluate(quantities, claim.published)
    if claim.modelled is None:
        reason = outcome.criterion
        if outcome.verdict == INCONCLUSIVE:
            reason = f"the 95 % interval allows {' or '.join(sorted(outcome.possible))}: {outcome.criterion}"
        return Judgement(claim, outcome.verdict, reason, outcome, used)
    reason = f"{_HOLDS_TEXT[outcome.verdict]} ({outcome.criterion}); constants: {claim.modelled['constants']}"
    sens = claim.modelled.get("sensitivity")
    if sens:
        if sens in quantities:
            q = quantities[sens]
            reason += f"; holds in {q.estimate:.1%} [{q.low:.1%}, {q.high:.1%}] of {q.n} draws of the assumptions"
        else:
            reason += "; " + (unavailable.get(sens) or f"sensitivity '{sens}' not reported by this run")
    if claim.modelled.get("section"):
        reason += f"; see {claim.modelled['section']}"
    # a model output that varies between replicates (seeds) can still be undecided: say so, not "modelled"
    verdict = INCONCLUSIVE if outcome.verdict == INCONCLUSIVE else MODELLED
    return Judgement(claim, verdict, reason, outcome, used)


# --- pre-registration ------------------------------------------------------------------------

LOCK_NAME = "rules.lock"


def lock_entries(papers_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{chapter: {claim: {hash, revisions}}}`` for the claims files as they are now."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(papers_dir.glob("*.yaml")):
        pc = PaperClaims.load(path)
        out[pc.chapter] = {c.id: {"hash": c.fingerprint(), "revisions": len(c.revisions)} for c in pc.claims}
    return out


def read_lock(papers_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    path = papers_dir / LOCK_NAME
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def lock_problems(papers_dir: Path) -> list[str]:
    """Every claim whose registered rule differs from its pin without a recorded revision."""
    locked, now = read_lock(papers_dir), lock_entries(papers_dir)
    problems = []
    for chapter, claims in now.items():
        for cid, entry in claims.items():
            pin = (locked.get(chapter) or {}).get(cid)
            if pin is None:
                problems.append(f"{chapter}/{cid}: not pinned in {LOCK_NAME} (run `compendium claims lock`)")
            elif pin["hash"] != entry["hash"]:
                if entry["revisions"] <= pin["revisions"]:
                    problems.append(f"{chapter}/{cid}: rule, scale or published value changed without a new entry "
                                    f"in its 'revisions:' list")
                else:
                    problems.append(f"{chapter}/{cid}: revised (revision {entry['revisions']}) but not re-pinned "
                                    f"(run `compendium claims lock`)")
            elif pin["revisions"] != entry["revisions"]:
                problems.append(f"{chapter}/{cid}: revisions list changed but the rule did not; re-pin it")
    return problems


def write_lock(papers_dir: Path) -> list[str]:
    """Re-pin the claims, refusing any claim whose rule changed without a new revision.

    Returns the claims that were (re-)pinned."""
    locked, now = read_lock(papers_dir), lock_entries(papers_dir)
    refused = [p for p in lock_problems(papers_dir) if "without a new entry" in p]
    if refused:
        raise ValueError("refusing to re-pin rules changed without a revision:\n  " + "\n  ".join(refused))
    changed = [f"{ch}/{cid}" for ch, cl in now.items() for cid, e in cl.items() if (locked.get(ch) or {}).get(cid) != e]
    header = ("# Pre-registration pins: a hash of each claim's rule, scale gate, published value and model flag,\n"
              "# with its number of revisions. Written by `compendium claims lock`; checked by the tests.\n")
    (papers_dir / LOCK_NAME).write_text(header + yaml.safe_dump(now, sort_keys=True), encoding="utf-8")
    return changed
