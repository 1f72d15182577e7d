"""Claims files, the judging engine, pre-registration, and notebooks that only measure."""

import json
import re

import pytest

from compendium.book.claims import verdict_counts, verdict_label
from compendium.book.claims import (MODELLED, NOT_COMPARABLE, NOT_RUN, UNTRANSCRIBED, VERDICTS, PaperClaims, ScaleGate, judge,
                                    lock_problems, write_lock)
from compendium.book.quantities import Quantity
from compendium.book.render import scoreboard_markdown
from compendium.book.rules import INCONCLUSIVE
from compendium.chapters import available_chapters
from conftest import ROOT


def write_claims(tmp_path, body: str):
    p = tmp_path / "x.yaml"
    p.write_text("id: x\ncitation: C\nclaims:\n" + body)
    return p


def test_claims_files_validate(tmp_path):
    p = write_claims(tmp_path, "  - {id: a, text: t, source: s, published: 1.0, rule: {kind: value, quantity: q}}\n")
    with pytest.raises(ValueError, match="tolerance"):
        PaperClaims.load(p)
    p = write_claims(tmp_path, "  - {id: a, text: t, source: s, published: 1, rule: {kind: guess}}\n")
    with pytest.raises(ValueError, match="unknown rule kind"):
        PaperClaims.load(p)
    p = write_claims(tmp_path, "  - {id: a, text: t, published: 1, rule: {kind: threshold, quantity: q, above: 1}}\n")
    with pytest.raises(ValueError, match="source"):
        PaperClaims.load(p)
    p = write_claims(tmp_path, "  - {id: a, text: t, source: s, published: q, rule: null}\n")
    with pytest.raises(ValueError, match="not_run"):
        PaperClaims.load(p)
    p = write_claims(tmp_path, "  - {id: a, text: t, source: s, published: q, compare: {kind: check}}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        PaperClaims.load(p)
    p = write_claims(tmp_path, "  - {id: a, text: t, source: s, source_kind: tertiary, published: q, rule: null, not_run: x}\n")
    with pytest.raises(ValueError, match="source_kind"):
        PaperClaims.load(p)


def test_every_chapter_claims_file_loads(project):
    for c in available_chapters(project):
        pc = PaperClaims.load(project.claims_file(c))
        assert pc.claims and pc.chapter == c


def _claim(tmp_path, body):
    return PaperClaims.load(write_claims(tmp_path, body)).claims[0]


def test_judge_order_not_run_then_gate_then_transcription(tmp_path):
    c = _claim(tmp_path, "  - {id: a, text: t, source: s, published: not transcribed, rule: {kind: value, quantity: q, tolerance: 1},\n"
                         "     scale: {data: cifar10, full_data: true, params: {epochs: {min: 100}}}}\n")
    assert judge(c, {}, unavailable={"q": "CIFAR-10 absent"}).reason == "CIFAR-10 absent"
    assert judge(c, {}).verdict == NOT_RUN
    q = {"q": Quantity.single("q", 90)}
    j = judge(c, q, params={"epochs": 3, "n_train": 100}, data=[{"name": "mnist", "substitute": True}])
    assert j.verdict == NOT_COMPARABLE
    assert "needs cifar10" in j.reason and "stand-in" in j.reason and "epochs ≥ 100 (ran 3)" in j.reason and "n_train=100" in j.reason
    j = judge(c, q, params={"epochs": 100}, data=[{"name": "cifar10", "substitute": False}])
    assert j.verdict == UNTRANSCRIBED and "not transcribed" in j.reason


def test_scale_gate_conditions():
    g = ScaleGate.parse({"params": {"arch": "resnet19", "T": {"max": 6, "min": 2}, "opt": {"in": ["a", "b"]}}}, "w")
    assert g.failures({"arch": "resnet19", "T": 4, "opt": "a"}, []) == []
    assert len(g.failures({"arch": "small", "T": 8, "opt": "c"}, [])) == 3
    assert ScaleGate.parse(None, "w").open and "T ≤ 6" in g.text()


def test_modelled_verdict_reports_outcome_and_sensitivity(tmp_path):
    c = _claim(tmp_path, "  - {id: a, text: t, source: s, published: [5.0, 10.0], rule: {kind: range, quantity: q},\n"
                         "     modelled: {constants: assumed PE energies, sensitivity: share, section: the sensitivity section}}\n")
    j = judge(c, {"q": Quantity.exact("q", 7.0), "share": Quantity.rate("share", 120, 200)})
    assert j.verdict == MODELLED
    assert j.reason.startswith("holds under the assumed constants") and "60.0%" in j.reason and "200 draws" in j.reason
    held = j.as_dict()
    j = judge(c, {"q": Quantity.exact("q", 20.0)})
    assert j.verdict == MODELLED and j.reason.startswith("does not hold") and "sensitivity 'share' not reported" in j.reason
    # what the model says travels with the verdict, so that "modelled" never hides a refutation
    refuted = j.as_dict()
    assert held["model_outcome"] == "holds" and refuted["model_outcome"] == "does not hold"
    assert verdict_label(refuted) == "modelled: does not hold" and verdict_label({"verdict": "reproduced"}) == "reproduced"
    assert verdict_counts([held, refuted, refuted, {"verdict": "reproduced"}]) == \
        "1 reproduced, 3 modelled (1 holds, 2 do not hold)"
    old_record = {"verdict": MODELLED, "reason": "partly holds under the assumed constants (...)"}  # before the field
    assert verdict_label(old_record) == "modelled: partly holds"


def test_inconclusive_reason_names_the_interval(tmp_path):
    c = _claim(tmp_path, "  - {id: a, text: t, source: s, published: q, rule: {kind: ordering, better: x, worse: y}}\n")
    j = judge(c, {"x": Quantity.rate("x", 944, 1000), "y": Quantity.rate("y", 944, 1000)})
    assert j.verdict == INCONCLUSIVE and "allows" in j.reason and "n=1000" in j.ours


def test_claim_without_rule_is_not_run_with_its_declared_reason(tmp_path):
    c = _claim(tmp_path, "  - {id: a, text: t, source: s, published: q, rule: null, not_run: needs the Tianjic chip}\n")
    j = judge(c, {})
    assert j.verdict == NOT_RUN and j.reason == "needs the Tianjic chip"


# --- pre-registration ------------------------------------------------------------------------

def test_rules_match_their_preregistered_pins():
    problems = lock_problems(ROOT / "data" / "papers")
    assert not problems, "claims whose rules drifted from data/papers/rules.lock:\n" + "\n".join(problems)


def test_changing_a_rule_needs_a_revision(tmp_path):
    papers = tmp_path / "papers"
    papers.mkdir()
    f = papers / "x.yaml"
    f.write_text("id: x\ncitation: C\nclaims:\n  - {id: a, text: t, source: s, published: q, "
                 "rule: {kind: threshold, quantity: q, above: 0.5}}\n")
    assert "not pinned" in lock_problems(papers)[0]
    write_lock(papers)
    assert lock_problems(papers) == []
    f.write_text(f.read_text().replace("above: 0.5", "above: 0.4"))
    assert "without a new entry" in lock_problems(papers)[0]
    with pytest.raises(ValueError, match="refusing"):
        write_lock(papers)
    f.write_text(f.read_text().replace("above: 0.4}}", "above: 0.4},\n"
                                       "     revisions: [{date: '2026-11-25', change: 0.5 to 0.4, reason: r}]}"))
    assert "not re-pinned" in lock_problems(papers)[0]
    assert write_lock(papers) == ["x/a"] and lock_problems(papers) == []


# --- notebooks only measure -------------------------------------------------------------------

_VERDICT_LOGIC = [
    (re.compile(r"\bholds\s*="), "assigns 'holds'"),
    (re.compile(r"\.not_run\("), "declares a claim not run (declare the quantity unavailable instead)"),
    (re.compile(r"\bpaper_scale\b"), "computes its own scale gate"),
    (re.compile(r"""["'](?:%s)["']""" % "|".join(re.escape(v) for v in VERDICTS + ("partly",))), "names a verdict"),
    (re.compile(r"\bjudge\("), "calls the judging engine itself"),
]


@pytest.mark.parametrize("chapter", available_chapters(__import__("compendium.project", fromlist=["Project"]).Project.discover(ROOT)))
def test_notebook_contains_no_verdict_logic(chapter):
    nb = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        found += [f"cell {i} {why}" for pat, why in _VERDICT_LOGIC if pat.search(src)]
    assert not found, f"{chapter}: verdict logic in the notebook: {found}"


def test_scoreboard_lists_unrun_chapters_honestly(scratch_project):
    md = scoreboard_markdown(scratch_project, ["primer"])
    assert "has not been run by this build" in md


def test_modelled_claim_with_replicates_can_be_undecided(tmp_path):
    c = _claim(tmp_path, "  - {id: a, text: t, source: s, published: q, rule: {kind: threshold, quantity: r, below: 1.0},\n"
                         "     modelled: {constants: Horowitz 45 nm energies}}\n")
    j = judge(c, {"r": Quantity.from_samples("r", [0.8, 1.2])})
    assert j.verdict == INCONCLUSIVE and j.reason.startswith("undecided under the assumed constants")


def test_repeated_missing_reasons_are_said_once(tmp_path):
    c = _claim(tmp_path, "  - {id: a, text: t, source: s, published: q, rule: {kind: ordering, better: x, worse: y}}\n")
    j = judge(c, {}, unavailable={"x": "CiteSeer is not in this run", "y": "CiteSeer is not in this run"})
    assert j.reason == "CiteSeer is not in this run"
