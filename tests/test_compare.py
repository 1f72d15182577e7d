"""compendium compare: two runs' records side by side."""

import json

import pytest

from compendium.book.compare import compare_paths, compare_records
from compendium.cli import main


def _record(acc: float, verdict: str, kernels: str = "AVX512", threads: int = 2, epochs: int = 3,
            ours: str | None = None, outcome: str = "holds", chapter: str = "demo") -> dict:
    return {"chapter": chapter, "profile": "default", "parameters": {"epochs": epochs, "seed": 0},
            "numbers": {"acc": acc, "n_test": 1000, "label": "x"},
            "environment": {"git": {"commit": "abcdef1234567", "dirty": False}, "packages": {"torch": "2.13.0+cpu"},
                            "cpu": {"model": "CPU", "torch_threads": threads,
                                    "kernels": {"aten": kernels, "flags": ["avx2"], "overrides": {}}}},
            "claims": [{"claim": "beats", "verdict": verdict, "ours": ours or f"{acc:.3f} [..]"},
                       {"claim": "fixed", "verdict": "modelled", "model_outcome": outcome, "ours": "1 (exact)"}]}


def test_a_flip_under_other_kernels_is_found_and_nothing_else_is_reported():
    cmp = compare_records(_record(0.538, "reproduced"), _record(0.490, "inconclusive at this scale", kernels="AVX2"))
    assert cmp.run == {"kernels": ("ATen AVX512", "ATen AVX2")}
    assert cmp.parameters == {}
    assert [(n.name, n.a, n.b) for n in cmp.numbers] == [("acc", 0.538, 0.490)]
    assert cmp.n_numbers == 3 and cmp.numbers[0].relative == pytest.approx(0.048 / 0.538)
    assert [c.claim for c in cmp.flips] == ["beats"] and [c.claim for c in cmp.claims] == ["beats"]
    text = cmp.summary()
    assert "FLIP beats: reproduced" in text and "1 of 3 differ" in text and "fixed" not in text
    assert "1 of 2 verdicts flipped, 0 other" in text


def test_an_interval_that_moves_under_the_same_verdict_is_listed_but_is_no_flip(tmp_path):
    cmp = compare_records(_record(0.5, "reproduced", ours="0.5 [0.4, 0.6]"), _record(0.5, "reproduced", ours="0.5 [0.45, 0.55]"))
    assert [c.claim for c in cmp.claims] == ["beats"] and cmp.flips == []
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_record(0.5, "reproduced", ours="0.5 [0.4, 0.6]")))
    b.write_text(json.dumps(_record(0.5, "reproduced", ours="0.5 [0.45, 0.55]")))
    assert main(["compare", str(a), str(b), "--fail-on-flip"]) == 0  # two files, whatever their names


def test_a_modelled_claim_whose_outcome_turns_is_a_flip():
    cmp = compare_records(_record(0.5, "reproduced"), _record(0.5, "reproduced", outcome="does not hold"))
    assert [c.claim for c in cmp.flips] == ["fixed"]
    assert cmp.flips[0].verdict_a != cmp.flips[0].verdict_b  # the scoreboard's words, outcome included


def test_claims_and_numbers_only_one_record_has():
    a, b = _record(0.5, "reproduced"), _record(0.5, "reproduced")
    b["claims"].append({"claim": "new", "verdict": "reproduced", "ours": "1"})
    b["numbers"]["extra"] = "text"
    a["numbers"]["label"] = "y"
    cmp = compare_records(a, b)
    assert cmp.flips == [] and [(c.claim, c.only_in) for c in cmp.claims] == [("new", "b")]
    assert {(n.name, n.relative) for n in cmp.numbers} == {("label", None), ("extra", None)}
    assert "new: only in B" in cmp.summary() and "0 of 3 verdicts flipped" in cmp.summary()


def test_identical_records_show_no_difference_and_parameters_are_named():
    same = compare_records(_record(0.5, "reproduced"), _record(0.5, "reproduced"))
    assert not same.run and not same.numbers and not same.claims
    assert "same commit, parameters, threads and kernels" in same.summary()
    other = compare_records(_record(0.5, "reproduced"), _record(0.5, "reproduced", epochs=50, threads=1))
    assert other.parameters == {"epochs": (3, 50)} and other.run == {"threads": (2, 1)}
    bare = {"chapter": "demo", "claims": []}  # no environment at all
    assert compare_records(bare, bare).run == {}


def test_records_of_other_chapters_are_refused():
    with pytest.raises(ValueError, match="different chapters"):
        compare_records(_record(0.5, "reproduced"), _record(0.5, "reproduced", chapter="other"))


def _write(root, *recs, failed=()):
    (root / "results").mkdir(parents=True)
    for rec in recs:
        (root / "results" / f"{rec['chapter']}.json").write_text(json.dumps(rec))
    for c in failed:  # the marker of a failed latest run: not a record
        (root / "results" / f"{c}.failed.json").write_text(json.dumps({"chapter": c, "error": "boom"}))


def test_folders_skip_failure_markers_and_warn(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, _record(0.5, "reproduced"), _record(0.5, "reproduced", chapter="other"), failed=["demo", "ghost"])
    _write(b, _record(0.5, "reproduced"), failed=["ghost"])
    comparisons, warnings = compare_paths(a, b)
    assert [c.chapter for c in comparisons] == ["demo"]  # the ghost chapter has markers only, no record
    assert any("other: only" in w for w in warnings) and any("demo: the latest run" in w for w in warnings)
    assert not any("ghost" in w for w in warnings)


def test_cli_exit_statuses_and_errors(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, _record(0.538, "reproduced"))
    _write(b, _record(0.490, "not reproduced", kernels="AVX2"))
    assert main(["compare", str(a), str(b), "--chapters", "demo,demo,"]) == 0
    out = capsys.readouterr().out
    assert out.count("== demo") == 1 and "1 verdict(s) differ across 1 chapter(s)" in out
    assert main(["compare", str(a), str(b / "results" / "demo.json"), "--fail-on-flip"]) == 1
    assert main(["compare", str(a), str(a), "--fail-on-flip"]) == 0
    assert main(["compare", str(a), str(tmp_path / "nowhere")]) == 2
    assert "neither a results record nor a folder" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--chapters", "demo,tdbn"]) == 2
    assert "no results record for tdbn" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no record of the same chapter"):
        compare_paths(a, tmp_path)  # tmp_path holds results only below a/ and b/
    bad = tmp_path / "bad.json"
    for text in ("{not json", "[1, 2]", json.dumps({"chapter": "demo", "claims": [{"verdict": "x"}]})):
        bad.write_text(text)
        assert main(["compare", str(a), str(bad)]) == 2
        assert f"{bad}: not a" in capsys.readouterr().err
