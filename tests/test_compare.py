"""compendium compare: two runs' records side by side."""

import json

import pytest

from compendium.book.compare import compare_paths, compare_records
from compendium.cli import main


def _record(acc: float, verdict: str, kernels: str = "AVX512", threads: int = 2, epochs: int = 3) -> dict:
    return {"chapter": "demo", "profile": "default", "parameters": {"epochs": epochs, "seed": 0},
            "numbers": {"acc": acc, "n_test": 1000, "label": "x"},
            "environment": {"git": {"commit": "abcdef1234567", "dirty": False}, "packages": {"torch": "2.13.0+cpu"},
                            "cpu": {"model": "CPU", "torch_threads": threads,
                                    "kernels": {"aten": kernels, "flags": ["avx2"], "overrides": {}}}},
            "claims": [{"claim": "beats", "verdict": verdict, "ours": f"{acc:.3f} [..]"},
                       {"claim": "fixed", "verdict": "modelled", "ours": "1 (exact)"}]}


def test_a_flip_under_other_kernels_is_found_and_nothing_else_is_reported():
    cmp = compare_records(_record(0.538, "reproduced"), _record(0.490, "inconclusive at this scale", kernels="AVX2"))
    assert cmp.run == {"kernels": ("AVX512 kernels", "AVX2 kernels")}
    assert cmp.parameters == {}
    assert [(n.name, n.a, n.b) for n in cmp.numbers] == [("acc", 0.538, 0.490)]
    assert cmp.n_numbers == 3 and cmp.numbers[0].relative == pytest.approx(0.048 / 0.538)
    assert [c.claim for c in cmp.flips] == ["beats"] and [c.claim for c in cmp.claims] == ["beats"]
    text = cmp.summary()
    assert "FLIP beats: reproduced" in text and "1 of 3 differ" in text and "fixed" not in text


def test_identical_records_show_no_difference_and_parameters_are_named():
    same = compare_records(_record(0.5, "reproduced"), _record(0.5, "reproduced"))
    assert not same.run and not same.numbers and not same.claims
    assert "same commit, parameters, threads and kernels" in same.summary()
    other = compare_records(_record(0.5, "reproduced"), _record(0.5, "reproduced", epochs=50, threads=1))
    assert other.parameters == {"epochs": (3, 50)} and other.run == {"threads": (2, 1)}


def test_records_of_other_chapters_are_refused():
    b = _record(0.5, "reproduced")
    b["chapter"] = "other"
    with pytest.raises(ValueError, match="different chapters"):
        compare_records(_record(0.5, "reproduced"), b)


def _write(root, rec):
    (root / "results").mkdir(parents=True)
    (root / "results" / f"{rec['chapter']}.json").write_text(json.dumps(rec))


def test_cli_exit_statuses(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, _record(0.538, "reproduced"))
    _write(b, _record(0.490, "not reproduced", kernels="AVX2"))
    assert main(["compare", str(a), str(b)]) == 0
    assert "1 verdict(s) differ across 1 chapter(s)" in capsys.readouterr().out
    assert main(["compare", str(a), str(b / "results" / "demo.json"), "--fail-on-flip"]) == 1
    assert main(["compare", str(a), str(a), "--fail-on-flip"]) == 0
    assert main(["compare", str(a), str(tmp_path / "nowhere")]) == 2
    assert "neither a results record nor a folder" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--chapters", "demo,tdbn"]) == 2
    assert "no results record for tdbn" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no record of the same chapter"):
        compare_paths(a, tmp_path)  # tmp_path holds results only below a/ and b/
