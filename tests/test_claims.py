import pytest

from compendium.book.claims import (NOT_COMPARABLE, NOT_REPRODUCED, NOT_RUN, PARTLY, REPRODUCED, Claim,
                                    Measurement, PaperClaims, judge)
from compendium.book.render import scoreboard_markdown
from compendium.chapters import available_chapters


def claim(**kw):
    base = dict(id="c", text="t", source="abstract", published=93.15, kind="value", tolerance=0.5, unit="%")
    base.update(kw)
    return Claim(**base)


@pytest.mark.parametrize("ours, verdict", [(93.0, REPRODUCED), (92.4, PARTLY), (91.0, NOT_REPRODUCED)])
def test_value_claims(ours, verdict):
    assert judge(claim(), Measurement(value=ours), at_paper_scale=True).verdict == verdict


def test_paper_scale_claim_is_not_comparable_at_small_scale():
    j = judge(claim(scale="paper"), Measurement(value=93.1), at_paper_scale=False)
    assert j.verdict == NOT_COMPARABLE
    assert judge(claim(scale="paper"), Measurement(value=93.1), at_paper_scale=True).verdict == REPRODUCED


@pytest.mark.parametrize("ours, verdict", [(7.0, REPRODUCED), (11.0, PARTLY), (20.0, NOT_REPRODUCED), (5.0, PARTLY)])
def test_range_claims(ours, verdict):
    c = claim(kind="range", published=[5.74, 10.20], tolerance=None, unit="x")
    assert judge(c, Measurement(value=ours), at_paper_scale=True).verdict == verdict


def test_check_claims_and_missing_measurements():
    c = claim(kind="check", published="qualitative", tolerance=None)
    assert judge(c, Measurement(holds=True), True).verdict == REPRODUCED
    assert judge(c, Measurement(holds=False), True).verdict == NOT_REPRODUCED
    assert judge(c, Measurement(holds="partly"), True).verdict == PARTLY
    assert judge(c, None, True).verdict == NOT_RUN
    with pytest.raises(ValueError):
        judge(c, Measurement(holds="maybe"), True)
    j = judge(claim(), Measurement(not_run="CIFAR-10 is not available offline"), True)
    assert j.verdict == NOT_RUN and j.reason == "CIFAR-10 is not available offline"


def test_untranscribed_value_is_shown_but_not_judged():
    c = claim(published="not transcribed", tolerance=None)
    j = judge(c, Measurement(value=98.0), True)
    assert j.verdict == NOT_COMPARABLE and j.as_dict()["published"] == "not transcribed"
    assert "98" in j.as_dict()["ours"]


def test_claims_files_validate(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("id: x\ncitation: C\nclaims:\n  - {id: a, text: t, source: s, published: 1.0, compare: {kind: value}}\n")
    with pytest.raises(ValueError, match="tolerance"):
        PaperClaims.load(p)
    p.write_text("id: x\ncitation: C\nclaims:\n  - {id: a, text: t, source: s, published: 1, compare: {kind: guess}}\n")
    with pytest.raises(ValueError, match="compare.kind"):
        PaperClaims.load(p)
    p.write_text("id: x\ncitation: C\nclaims:\n  - {id: a, text: t, published: 1, compare: {kind: check}}\n")
    with pytest.raises(ValueError, match="source"):
        PaperClaims.load(p)


def test_every_chapter_claims_file_loads(project):
    for c in available_chapters(project):
        pc = PaperClaims.load(project.claims_file(c))
        assert pc.claims and pc.chapter == c


def test_scoreboard_lists_unrun_chapters_honestly(scratch_project):
    md = scoreboard_markdown(scratch_project, ["primer"])
    assert "has not been run by this build" in md
