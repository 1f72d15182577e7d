"""The chapter report: what a notebook computed, judged against the paper's claims.

A chapter creates one :class:`ChapterReport`, feeds it numbers and measurements as the
computation goes, shows :meth:`ChapterReport.claims_table`, and calls :meth:`save` last.
When the chapter runs under ``compendium run``, ``save`` writes the numbers, verdicts and
data provenance to the runner's temporary record, which the runner completes (timings,
environment) and moves into ``results/<chapter>.json`` only if the whole notebook
succeeded. Under plain papermill or Jupyter, ``save`` writes nothing.

Every number given to :meth:`number` is also glued (myst-nb) so that the prose can quote
it with ``{glue:text}`name:.2f``` instead of typing it by hand.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from compendium.book.claims import Judgement, Measurement, PaperClaims, judge
from compendium.project import Project

RECORD_ENV = "COMPENDIUM_RECORD"
PROFILE_ENV = "COMPENDIUM_PROFILE"


def _glue(name: str, value: Any) -> None:
    try:
        from myst_nb import glue
    except ImportError:  # outside the book's environment the report still works
        return
    try:
        glue(name, value, display=False)
    except Exception:  # glue needs an IPython kernel; plain Python scripts have none
        pass


def _python_scalar(value: Any) -> Any:
    """numpy / torch 0-d values to the Python number they hold; anything else unchanged."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy / torch scalars to Python numbers; NaN to None)."""
    value = _python_scalar(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class ChapterReport:
    """Numbers, claim measurements and data provenance of one chapter run."""

    def __init__(self, chapter: str, parameters: Mapping[str, Any], *, paper_scale: bool = False,
                 scale: str = "", project: Project | None = None):
        self.chapter = chapter
        self.parameters = dict(parameters)
        self.project = project or Project.discover()
        self.claims = PaperClaims.load(self.project.claims_file(chapter))
        self.paper_scale = paper_scale
        self.scale = scale
        self.profile = os.environ.get(PROFILE_ENV, "custom (not run by `compendium run`)")
        self.numbers: dict[str, Any] = {}
        self.measurements: dict[str, Measurement] = {}
        self.data: list[dict[str, Any]] = []

    # --- feeding ---------------------------------------------------------------------
    def number(self, name: str, value: Any, *, glue: bool = True) -> Any:
        """Record a computed number (and glue it for the prose). Returns ``value``."""
        self.numbers[name] = _plain(value)
        if glue:
            # numpy 2 scalars repr as "np.float64(...)", which myst-nb cannot format: glue Python numbers
            _glue(name, _python_scalar(value))
        return value

    def measure(self, claim_id: str, *, value: float | None = None, holds: bool | str | None = None,
                evidence: str = "", comparable: bool = True, unit: str | None = None) -> Measurement:
        claim = self.claims.claim(claim_id)  # raises on a typo
        m = Measurement(value=None if value is None else float(value), holds=holds, evidence=evidence,
                        comparable=comparable, unit=claim.unit if unit is None else unit)
        self.measurements[claim_id] = m
        return m

    def not_run(self, claim_id: str, reason: str) -> Measurement:
        """Say why this build cannot measure a claim (shown as "not run here" with the reason)."""
        self.claims.claim(claim_id)
        m = Measurement(not_run=reason)
        self.measurements[claim_id] = m
        return m

    def uses(self, info: Any) -> None:
        """Record which data ran (a :class:`compendium.datasets.DataInfo` or a dict)."""
        self.data.append(_plain(info.as_dict() if hasattr(info, "as_dict") else dict(info)))

    # --- reading ---------------------------------------------------------------------
    def judgements(self) -> list[Judgement]:
        return [judge(c, self.measurements.get(c.id), self.paper_scale) for c in self.claims.claims]

    def claims_table(self):
        """The paper-vs-ours table (a pandas DataFrame) with one verdict per claim."""
        import pandas as pd

        rows = [j.as_dict() for j in self.judgements()]
        df = pd.DataFrame(rows, columns=["claim", "text", "source", "published", "ours", "verdict", "reason"])
        return df.rename(columns={"text": "the paper says", "ours": f"ours ({self.scale or 'this run'})"})

    def as_dict(self) -> dict[str, Any]:
        return {
            "chapter": self.chapter,
            "citation": self.claims.citation,
            "arxiv": self.claims.arxiv,
            "profile": self.profile,
            "scale": self.scale,
            "paper_scale": self.paper_scale,
            "parameters": _plain(self.parameters),
            "numbers": self.numbers,
            "claims": [_plain(j.as_dict()) for j in self.judgements()],
            "data": self.data,
        }

    def save(self) -> Path | None:
        """Write the record where the runner asked for it; a no-op outside the runner."""
        target = os.environ.get(RECORD_ENV)
        if not target:
            return None
        path = Path(target)
        path.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=False), encoding="utf-8")
        return path
