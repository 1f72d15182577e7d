"""The chapter report: what a notebook measured, judged against the paper's claims.

A chapter creates one :class:`ChapterReport`, feeds it numbers (for the prose) and named
*quantities* (for the claims: a value, per-seed samples, or a rate with its trials) as the
computation goes, shows :meth:`ChapterReport.claims_table`, and calls :meth:`save` last.
The chapter never decides a verdict: :func:`compendium.book.claims.judge` does, from the
rules declared in ``data/papers/<chapter>.yaml``, the quantities' 95 % intervals, the
run's parameters (the scale gates) and the data records.
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
from typing import Any, Callable, Iterable, Mapping

from compendium.book.claims import Judgement, PaperClaims, judge, verdict_label
from compendium.book.quantities import Quantity
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
    """Numbers, measured quantities and data provenance of one chapter run."""

    def __init__(self, chapter: str, parameters: Mapping[str, Any], *, scale: str = "",
                 project: Project | None = None):
        self.chapter = chapter
        self.parameters = dict(parameters)
        self.project = project or Project.discover()
        self.claims = PaperClaims.load(self.project.claims_file(chapter))
        self.scale = scale
        self.profile = os.environ.get(PROFILE_ENV, "custom (not run by `compendium run`)")
        self.numbers: dict[str, Any] = {}
        self.quantities: dict[str, Quantity] = {}
        self.unavailable_reasons: dict[str, str] = {}
        self.data: list[dict[str, Any]] = []

    # --- feeding ---------------------------------------------------------------------
    def number(self, name: str, value: Any, *, glue: bool = True) -> Any:
        """Record a computed number (and glue it for the prose). Returns ``value``."""
        self.numbers[name] = _plain(value)
        if glue:
            # numpy 2 scalars repr as "np.float64(...)", which myst-nb cannot format: glue Python numbers
            _glue(name, _python_scalar(value))
        return value

    def add(self, *quantities: Quantity) -> None:
        """Record quantities built elsewhere (e.g. by an experiment function of the package)."""
        for q in quantities:
            if not isinstance(q, Quantity):
                raise TypeError(f"report.add takes Quantity objects, got {q!r}")
            self.quantities[q.name] = q
            self.unavailable_reasons.pop(q.name, None)

    def measure(self, name: str, value: float | None = None, *, samples: Iterable[float] | None = None,
                exact: bool = False, unit: str = "") -> Quantity:
        """A quantity for the claims: one run's ``value`` (``exact=True`` for deterministic results,
        e.g. an equation check or a model output), or the per-replicate ``samples`` (t-interval)."""
        if (value is None) == (samples is None):
            raise ValueError(f"measure('{name}'): give exactly one of value or samples")
        if samples is not None:
            q = Quantity.from_samples(name, [float(_python_scalar(v)) for v in samples], unit)
        elif exact:
            q = Quantity.exact(name, float(_python_scalar(value)), unit)
        else:
            q = Quantity.single(name, float(_python_scalar(value)), unit)
        self.add(q)
        return q

    def measure_rate(self, name: str, successes: float, trials: int) -> Quantity:
        """A proportion of independent trials (attacked samples, replicates, draws), Wilson interval."""
        q = Quantity.rate(name, float(_python_scalar(successes)), int(_python_scalar(trials)))
        self.add(q)
        return q

    def measure_bootstrap(self, name: str, samples: Iterable[float],
                          statistic: Callable[[Any], float] | None = None, unit: str = "") -> Quantity:
        """A statistic (default: the median) of i.i.d. samples with a percentile-bootstrap interval."""
        import numpy as np

        q = Quantity.bootstrap(name, [float(v) for v in samples], statistic or np.median, unit)
        self.add(q)
        return q

    def unavailable(self, name: str, reason: str) -> None:
        """Say why this build could not measure a quantity (its claims read "not run here")."""
        self.quantities.pop(name, None)
        self.unavailable_reasons[name] = reason

    def uses(self, info: Any) -> None:
        """Record which data ran (a :class:`compendium.datasets.DataInfo` or a dict)."""
        self.data.append(_plain(info.as_dict() if hasattr(info, "as_dict") else dict(info)))

    # --- reading ---------------------------------------------------------------------
    def judgements(self) -> list[Judgement]:
        return [judge(c, self.quantities, unavailable=self.unavailable_reasons, params=self.parameters, data=self.data)
                for c in self.claims.claims]

    def claims_table(self) -> "ClaimsTable":
        """The paper-vs-ours table: one verdict per claim, decided by the engine. Shown in a
        notebook (and on the book's page) as a four-column table — the claim with its id, the
        published value and its source, ours with its interval and n, the verdict with its
        reason and rule; ``.frame`` holds every field as a pandas DataFrame."""
        return ClaimsTable([j.as_dict() for j in self.judgements()], self.scale)

    def as_dict(self) -> dict[str, Any]:
        return {
            "chapter": self.chapter,
            "citation": self.claims.citation,
            "arxiv": self.claims.arxiv,
            "profile": self.profile,
            "scale": self.scale,
            "parameters": _plain(self.parameters),
            "numbers": self.numbers,
            "quantities": {k: _plain(q.as_dict()) for k, q in self.quantities.items()},
            "unavailable": dict(self.unavailable_reasons),
            "claims": [_plain(j.as_dict()) for j in self.judgements()],
            "data": self.data,
        }

    def save(self) -> Path | None:
        """Write the record where the runner asked for it; a no-op outside the runner."""
        target = os.environ.get(RECORD_ENV)
        if not target:
            return None
        from compendium.book.environment import kernel_side

        path = Path(target)
        # the kernel's own CPU record (threads, vector kernels): the runner files it under "environment"
        payload = {**self.as_dict(), "kernel_side": kernel_side()}
        path.write_text(json.dumps(payload, indent=2, sort_keys=False), encoding="utf-8")
        return path


def table_cell(text: Any) -> str:
    """Text for a markdown table cell: pipes and asterisks (``mem*decay``) escaped, one line."""
    return str(text if text is not None else "—").replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


class ClaimsTable:
    """A chapter's claims and verdicts (:meth:`ChapterReport.claims_table`), displayed as markdown.

    Four columns keep the verdict on screen on a laptop and a phone (a DataFrame of eight
    columns put it past the page's right edge); the rule and the reason sit in the verdict's
    cell. ``frame`` is the full table as a DataFrame (one column per field)."""

    def __init__(self, rows: list[dict[str, Any]], scale: str | None = None):
        self.rows, self.scale = rows, scale

    @property
    def frame(self):
        import pandas as pd

        return pd.DataFrame([{"claim": d["claim"], "the paper says": d["text"], "published": d["published"],
                              "source": d["source"], "source kind": d["source_kind"], "rule": d["rule"],
                              "ours": d["ours"], "n": d["n"], "verdict": d["verdict"], "reason": d["reason"]}
                             for d in self.rows])

    def _repr_markdown_(self) -> str:
        lines = [f"Ours at this run's scale: {table_cell(self.scale or 'this run')}.", "",
                 "| claim | published (source) | ours (95 % interval, n) | verdict — why (rule) |", "|---|---|---|---|"]
        for d in self.rows:
            src = table_cell(d["source"]) + ("" if d["source_kind"] == "primary" else f"; *{d['source_kind']}*")
            lines.append(f"| {table_cell(d['text'])} (`{d['claim']}`) | {table_cell(d['published'])} ({src}) | "
                         f"{table_cell(d['ours'])} | **{table_cell(verdict_label(d))}** — {table_cell(d['reason'])}"
                         + (f" (rule: {table_cell(d['rule'])})" if d["rule"] and str(d["rule"]) not in str(d["reason"]) else "")
                         + " |")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return "\n".join(f"{d['claim']}: {d['verdict']} — ours {d['ours']}; published {d['published']}"
                          for d in self.rows)
