"""Every chapter's claims judged from small hand-made fixtures of its quantities, without
running a notebook: one fixture per verdict each claim can take (``tests/fixtures/verdicts``).

A fixture file ``<chapter>.yaml`` is a list of cases::

    - claim: stbp_trains
      verdict: reproduced
      quantities:                       # what the chapter would report
        snn_acc: {rate: [1900, 2000]}   # a rate: successes, trials (Wilson)
        ann_acc: 0.95                   # a bare number: one run
        other: {samples: [0.9, 0.92]}   # per-seed replicates (t-interval)
        x: {exact: 1.0e-7}              # deterministic
        y: {given: [est, low, high, n]} # an interval computed elsewhere
        z: {unavailable: "reason"}      # not measurable in this run
      params: {epochs: 100}             # the run's parameters (scale gates), optional
      data: [{name: mnist, substitute: false}]   # the run's data records, optional
"""

from __future__ import annotations


import pytest
import yaml

from compendium.book.claims import MODELLED, NOT_COMPARABLE, NOT_RUN, UNTRANSCRIBED, PaperClaims, judge
from compendium.book.quantities import Quantity
from compendium.book.rules import INCONCLUSIVE
from compendium.chapters import available_chapters
from conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "verdicts"


def build_quantities(spec: dict) -> tuple[dict[str, Quantity], dict[str, str]]:
    quantities, unavailable = {}, {}
    for name, v in (spec or {}).items():
        if isinstance(v, (int, float)):
            quantities[name] = Quantity.single(name, v)
        elif "rate" in v:
            quantities[name] = Quantity.rate(name, *v["rate"])
        elif "samples" in v:
            quantities[name] = Quantity.from_samples(name, v["samples"])
        elif "exact" in v:
            quantities[name] = Quantity.exact(name, v["exact"])
        elif "given" in v:
            quantities[name] = Quantity.given(name, *v["given"])
        elif "unavailable" in v:
            unavailable[name] = v["unavailable"]
        else:
            raise ValueError(f"fixture quantity {name}: unknown form {v!r}")
    return quantities, unavailable


def _cases():
    for path in sorted(FIXTURES.glob("*.yaml")):
        for i, case in enumerate(yaml.safe_load(path.read_text()) or []):
            yield pytest.param(path.stem, case, id=f"{path.stem}-{case['claim']}-{case['verdict']}-{i}")


@pytest.mark.parametrize("chapter, case", list(_cases()))
def test_fixture_gets_its_verdict(chapter, case):
    claims = PaperClaims.load(ROOT / "data" / "papers" / f"{chapter}.yaml")
    quantities, unavailable = build_quantities(case.get("quantities"))
    j = judge(claims.claim(case["claim"]), quantities, unavailable=unavailable, params=case.get("params") or {},
              data=case.get("data") or [])
    assert j.verdict == case["verdict"], f"{chapter}/{case['claim']}: {j.verdict} ({j.reason})"
    if "reason_contains" in case:
        assert case["reason_contains"] in j.reason


@pytest.mark.parametrize("chapter", available_chapters(__import__("compendium.project", fromlist=["Project"]).Project.discover(ROOT)))
def test_every_claim_has_a_fixture_for_each_verdict_it_can_take(chapter):
    """Each claim with a rule: a fixture for every decided verdict its rule can give (or
    'modelled'), 'not comparable' when it has a scale gate, 'not run here' when a quantity is
    missing, and 'inconclusive' for a rule reading quantities with intervals."""
    claims = PaperClaims.load(ROOT / "data" / "papers" / f"{chapter}.yaml")
    path = FIXTURES / f"{chapter}.yaml"
    assert path.is_file(), f"no verdict fixtures for chapter '{chapter}' ({path})"
    seen: dict[str, set[str]] = {}
    for case in yaml.safe_load(path.read_text()) or []:
        seen.setdefault(case["claim"], set()).add(case["verdict"])
    missing = []
    for c in claims.claims:
        if c.rule is None:
            want = {NOT_RUN}
        else:
            # a modelled claim's verdict is "modelled" (inconclusive is possible only when its model outputs
            # vary between replicates, so it is not demanded)
            want = {MODELLED, NOT_RUN} if c.modelled else set(c.rule.verdicts()) | {NOT_RUN, INCONCLUSIVE}
            if not c.scale.open:
                want.add(NOT_COMPARABLE)
            if c.rule.kind in ("value", "range") and not c.transcribed:
                want = {NOT_RUN, UNTRANSCRIBED} | ({NOT_COMPARABLE} if not c.scale.open else set())
        lacking = want - seen.get(c.id, set())
        if lacking:
            missing.append(f"{c.id}: {sorted(lacking)}")
    assert not missing, f"{chapter}: claims lacking fixtures for verdicts: {missing}"
