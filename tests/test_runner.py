"""The chapter runner: validation before compute, atomic outputs, failures, change detection."""

import json
import os
import shutil
import subprocess
import sys

import papermill as pm
import pytest

from compendium.book.render import scoreboard_markdown
from compendium.book.runner import (ChapterFailed, build_order, chapter_threads, is_stale, run_chapter, run_stale,
                                    stale_reasons, usable_cores)
from compendium.chapters import load_spec
from conftest import mirror_has


def _cli(project, *args, env=None):
    return subprocess.run([sys.executable, "-m", "compendium", "--root", str(project.root), "--output-root",
                           str(project.output_root), *args], capture_output=True, text=True, env=env)


def _unthreaded_env() -> dict[str, str]:
    """This environment without any thread setting a CI machine may preset."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))}


def _seed_previous_outputs(project):
    project.executed_dir.mkdir(parents=True, exist_ok=True)
    project.results_dir.mkdir(parents=True, exist_ok=True)
    project.executed("demo").write_text("previous notebook")
    project.record("demo").write_text('{"previous": true}')


def _outputs(project):
    return project.executed("demo").read_text(), project.record("demo").read_text()


def test_successful_run_writes_notebook_and_record(demo_project):
    out = run_chapter(demo_project, "demo", "quick", log=lambda m: None)
    rec = json.loads(demo_project.record("demo").read_text())
    assert rec["profile"] == "quick" and rec["parameters"] == {"x": 2, "fail": False}
    assert rec["numbers"]["y"] == 4
    assert rec["claims"][0]["verdict"] == "reproduced"
    for key in ("inputs_hash", "wall_time_s", "started_at", "environment"):
        assert key in rec
    assert rec["environment"]["packages"]["torch"]
    assert out.notebook.is_file()
    leftovers = [p.name for d in (demo_project.executed_dir, demo_project.results_dir) for p in d.iterdir()
                 if "partial" in p.name]
    assert leftovers == []


@pytest.mark.parametrize("args, words", [
    (["-p", "x", "101"], ["'x' must be <= 100"]),
    (["-p", "x", "two"], ["'x' must be an integer"]),
    (["-p", "y", "1"], ["unknown parameter 'y'"]),
    (["--profile", "huge"], ["unknown profile"]),
])
def test_bad_parameters_fail_before_compute_and_touch_nothing(demo_project, args, words):
    _seed_previous_outputs(demo_project)
    proc = _cli(demo_project, "run", "demo", *args)
    assert proc.returncode == 2
    for w in words:
        assert w in proc.stderr
    assert _outputs(demo_project) == ("previous notebook", '{"previous": true}')
    assert not (demo_project.build_dir / "failed").exists()  # nothing was executed


def test_failing_notebook_keeps_previous_outputs_and_names_the_cell(demo_project):
    _seed_previous_outputs(demo_project)
    with pytest.raises(ChapterFailed) as err:
        run_chapter(demo_project, "demo", overrides={"fail": True}, log=lambda m: None)
    msg = str(err.value)
    assert "cell 3" in msg and "ValueError: asked to fail" in msg  # cells 0-2: title, parameters, papermill's injected one
    assert _outputs(demo_project) == ("previous notebook", '{"previous": true}')
    assert (demo_project.build_dir / "failed" / "demo.ipynb").is_file()
    assert not any("partial" in p.name for p in demo_project.results_dir.iterdir())


def test_cli_reports_failure_with_exit_code_1(demo_project):
    proc = _cli(demo_project, "run", "demo", "-p", "fail", "true")
    assert proc.returncode == 1
    assert "asked to fail" in proc.stderr


def test_unknown_chapter_is_a_clear_error(demo_project):
    proc = _cli(demo_project, "run", "nosuch")
    assert proc.returncode == 2 and "no chapter 'nosuch'" in proc.stderr and "demo" in proc.stderr


def test_change_detection(demo_project):
    assert is_stale(demo_project, "demo", "default")
    run_chapter(demo_project, "demo", log=lambda m: None)
    assert not is_stale(demo_project, "demo", "default")
    assert is_stale(demo_project, "demo", "quick")  # another profile
    assert run_stale(demo_project, "default", log=lambda m: None) == {"demo": "fresh"}
    claims = demo_project.claims_file("demo")
    claims.write_text(claims.read_text().replace("y is twice x.", "y is two times x."))
    assert is_stale(demo_project, "demo", "default")  # the claims changed
    run_chapter(demo_project, "demo", log=lambda m: None)
    assert not is_stale(demo_project, "demo", "default")
    spec = demo_project.chapter_spec("demo")
    spec.write_text(spec.read_text() + "build_cost_s: 12.5\n")
    assert not is_stale(demo_project, "demo", "default")  # an ordering hint is not an input
    spec.write_text(spec.read_text().replace("title: Demo chapter", "title: Demo chapter two"))
    assert is_stale(demo_project, "demo", "default")  # the spec changed
    run_chapter(demo_project, "demo", log=lambda m: None)
    nb = demo_project.notebook("demo")
    nb.write_text(nb.read_text().replace("y = np.float64(2 * x)", "y = np.float64(x + x)"))
    assert is_stale(demo_project, "demo", "default")  # the notebook changed


def _threads_recorded(project) -> int:
    return json.loads(project.record("demo").read_text())["environment"]["cpu"]["torch_threads"]


def test_run_threads_reach_the_kernel_and_its_record(demo_project):
    # torch caps the setting at the cores it may use: 1 and 2 differ wherever there are two
    got = {}
    for n in (1, 2):
        res = _cli(demo_project, "run", "demo", "--profile", "quick", "--threads", str(n), env=_unthreaded_env())
        assert res.returncode == 0, res.stderr
        got[n] = _threads_recorded(demo_project)
    assert got == {1: 1, 2: min(2, usable_cores())}
    bad = _cli(demo_project, "run", "demo", "--threads", "0")
    assert bad.returncode == 2 and "--threads: must be >= 1" in bad.stderr


def test_chapter_threads_share_the_cores_out(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert chapter_threads(1) is None  # one chapter at a time: the kernel's own default
    assert chapter_threads(2, cores=2) == 1 and chapter_threads(2, cores=16) == 8 and chapter_threads(4, cores=2) == 1
    assert chapter_threads(1, threads=3) == 3 and chapter_threads(2, threads=3, cores=2) == 3  # asked for wins
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert chapter_threads(2, cores=2) == 5  # the caller's setting is kept
    with pytest.raises(ValueError, match="threads must be >= 1"):
        chapter_threads(2, threads=0)


def test_parallel_build_runs_each_chapter_at_its_share_of_the_cores(demo_project, monkeypatch):
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(k, raising=False)
    lines: list[str] = []
    status = run_stale(demo_project, "quick", jobs=2, force=True, log=lines.append)
    assert status == {"demo": "ran"}
    assert _threads_recorded(demo_project) == chapter_threads(2) == max(1, usable_cores() // 2)
    assert f"[build] 1 chapter(s) at a time, {chapter_threads(2)} thread(s) requested each (each record names " \
           "what it got)" in lines


def test_a_parallel_build_starts_the_longest_chapters_first(demo_project):
    """Longest first: by the record's last wall time under the profile being built, else the
    spec's build_cost_s (a fresh clone), chapters with neither or with a spec that does not
    load before both (their run reports the error); ties keep the given order."""
    spec = demo_project.chapter_spec("demo").read_text()
    for name, cost in [("short", 10), ("long", 900), ("none", None), ("mid", 300), ("mid2", 300)]:
        text = spec.replace("id: demo", f"id: {name}") + (f"build_cost_s: {cost}\n" if cost else "")
        demo_project.chapter_spec(name).write_text(text)
        shutil.copy(demo_project.notebook("demo"), demo_project.notebook(name))
    chapters = ["short", "mid", "long", "none", "mid2"]
    assert build_order(demo_project, chapters) == ["none", "long", "mid", "mid2", "short"]
    record = demo_project.record("short")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"profile": "quick", "wall_time_s": 5000.0}))  # another profile's time: unused
    assert build_order(demo_project, chapters) == ["none", "long", "mid", "mid2", "short"]
    record.write_text(json.dumps({"profile": "quick", "wall_time_s": 5.0, "wall_times": {"default": 1000.0}}))
    assert build_order(demo_project, chapters) == ["none", "short", "long", "mid", "mid2"]  # a record outranks the hint
    assert build_order(demo_project, chapters, "quick") == ["none", "long", "mid", "mid2", "short"]
    demo_project.chapter_spec("mid").write_text(spec.replace("id: demo", "id: mid") + "build_cost_s: -5\n")
    assert build_order(demo_project, chapters) == ["mid", "none", "short", "long", "mid2"]
    with pytest.raises(ValueError, match="build_cost_s must be a positive number of seconds, got -5"):
        load_spec(demo_project, "mid")  # as the chapter's own run does, before any compute


def test_plain_papermill_works_without_the_runner(demo_project, tmp_path, monkeypatch):
    monkeypatch.delenv("COMPENDIUM_RECORD", raising=False)
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(demo_project.notebook("demo")), str(out), parameters={"x": 5},
                        cwd=str(demo_project.notebooks_dir), progress_bar=False)
    assert out.is_file()
    assert not demo_project.record("demo").exists()  # no record outside the runner


def test_list_shows_chapters_and_last_result(demo_project):
    proc = _cli(demo_project, "list")
    assert proc.returncode == 0 and "demo" in proc.stdout and "last run: never" in proc.stdout
    run_chapter(demo_project, "demo", log=lambda m: None)
    proc = _cli(demo_project, "list")
    assert "profile default" in proc.stdout and "reproduced" in proc.stdout


@pytest.mark.book
def test_build_renders_book_with_scoreboard(demo_project):
    proc = _cli(demo_project, "build", "--profile", "quick")
    assert proc.returncode == 0, proc.stderr
    html = demo_project.build_dir / "html"
    index = (html / "book" / "index.html").read_text()
    assert "chapters/demo.html" in index and "scoreboard.html" in index
    board = (html / "book" / "scoreboard.html").read_text()
    assert "reproduced" in board and "Demo chapter" in board
    chapter = (html / "book" / "chapters" / "demo.html").read_text()
    assert "y is 4" in chapter.replace("<span class=\"pasted-text\">", "").replace("</span>", "")
    # a second build re-runs nothing
    proc = _cli(demo_project, "build", "--profile", "quick")
    assert "demo: up to date" in proc.stdout
    # a later failed run leaves the previous outputs, rendered under a visible stale banner
    assert _cli(demo_project, "run", "demo", "--profile", "quick", "-p", "fail", "true").returncode == 1
    proc = _cli(demo_project, "build", "--profile", "quick")
    chapter = (html / "book" / "chapters" / "demo.html").read_text()
    assert "Stale results." in chapter and "latest run failed" in chapter
    assert "<strong>stale</strong>" in (html / "book" / "scoreboard.html").read_text()


def test_stale_reasons_failed_run_changed_sources_and_recovery(demo_project):
    assert stale_reasons(demo_project, "demo") == ["never run"]
    run_chapter(demo_project, "demo", log=lambda m: None)
    assert stale_reasons(demo_project, "demo") == []
    assert "**Stale.**" not in scoreboard_markdown(demo_project, ["demo"])
    with pytest.raises(ChapterFailed):
        run_chapter(demo_project, "demo", overrides={"fail": True}, log=lambda m: None)
    reasons = stale_reasons(demo_project, "demo")
    assert len(reasons) == 1 and "latest run failed" in reasons[0] and "asked to fail" in reasons[0]
    board = scoreboard_markdown(demo_project, ["demo"])
    assert "**Stale.**" in board and "| **stale** |" in board
    claims = demo_project.claims_file("demo")
    claims.write_text(claims.read_text().replace("y is twice x.", "y is two times x."))
    assert any("sources" in r and "changed" in r for r in stale_reasons(demo_project, "demo"))
    run_chapter(demo_project, "demo", log=lambda m: None)  # a good run clears both marks
    assert stale_reasons(demo_project, "demo") == []
    rec = json.loads(demo_project.record("demo").read_text())
    rec["environment"]["git"] = {"commit": "abc", "dirty": True}
    demo_project.record("demo").write_text(json.dumps(rec))
    assert stale_reasons(demo_project, "demo") == ["it ran from uncommitted code"]


def test_scoreboard_row_shows_interval_n_source_kind_and_revisions(demo_project):
    claims = demo_project.claims_file("demo")
    claims.write_text(claims.read_text().replace("    source: abstract\n", "    source: a later paper, Table 2\n"
                                                 "    source_kind: secondary\n"
                                                 "    revisions: [{date: '2026-11-25', change: bound 2, reason: declared}]\n"))
    run_chapter(demo_project, "demo", log=lambda m: None)
    board = scoreboard_markdown(demo_project, ["demo"])
    assert "*secondary*" in board and "(rev. 1)" in board and "2026-11-25: bound 2 — declared" in board
    assert "2 (exact)" in board and "1 reproduced" in board
    assert "| **reproduced** — " in board  # the verdict and its reason share the last column


@pytest.mark.book
def test_build_fails_on_a_broken_reference(demo_project):
    (demo_project.root / "book" / "index.md").write_text("# Demo\n\nSee {doc}`nowhere <missing-page>`.\n")
    proc = _cli(demo_project, "build", "--profile", "quick")
    assert proc.returncode == 1 and "jupyter-book build failed" in proc.stderr


def _spec(tmp_path, datasets, parameters, default, quick=None, paper=None):
    from compendium.params import ChapterSpec

    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"id": "c", "title": "C", "datasets": datasets, "parameters": parameters,
                                    "profiles": {"default": default, "quick": quick or {}, "paper": paper or {}}}))
    return ChapterSpec.load(path)


def test_data_needs_follow_the_parameters(tmp_path):
    from compendium.book.runner import data_needs

    sel = {"dataset": {"type": "str", "choices": ["auto", "fashion-mnist", "cifar10"]}}
    spec = _spec(tmp_path, ["fashion-mnist", "cifar10"], sel, {"dataset": "auto"}, paper={"dataset": "cifar10"})
    assert data_needs(spec, spec.resolve("default")).one_of == [["fashion-mnist", "cifar10"]]  # auto: one of them
    need = data_needs(spec, spec.resolve("paper"))
    assert need.required == ["cifar10"] and need.optional == ["fashion-mnist"]  # named: that one
    many = {"datasets": {"type": "str"}}  # a comma-separated selection, as the stfn chapter has
    spec = _spec(tmp_path, ["cora", "citeseer", "pubmed"], many, {"datasets": "cora,citeseer"},
                 paper={"datasets": "cora,citeseer,pubmed"})
    need = data_needs(spec, spec.resolve("default"))
    assert need.required == ["cora", "citeseer"] and need.optional == ["pubmed"]
    spec = _spec(tmp_path, ["mnist", "omniglot-small"], {"epochs": {"type": "int"}}, {"epochs": 1})
    assert data_needs(spec, spec.resolve("default")).required == ["mnist", "omniglot-small"]  # no selector: all


@pytest.mark.skipif(not mirror_has("mnist/raw/t10k-images-idx3-ubyte.gz", "mnist/raw/t10k-labels-idx1-ubyte.gz"),
                    reason="needs MNIST's test files in the data mirror")
def test_mnist_training_files_are_needed_only_for_the_full_split(scratch_project, tmp_path, monkeypatch):
    """load_mnist falls back to the declared re-split of the test images unless data_split is 'full'."""
    import os
    import shutil

    from compendium.book.runner import NotReady, check_data

    mirror = tmp_path / "mirror" / "mnist" / "raw"
    mirror.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(os.path.join(os.environ["COMPENDIUM_DATA_MIRROR"], "mnist", "raw", name), mirror / name)
    monkeypatch.setenv("COMPENDIUM_DATA_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("COMPENDIUM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COMPENDIUM_OFFLINE", "1")
    split = {"data_split": {"type": "str", "choices": ["auto", "full", "resplit"]}}
    spec = _spec(tmp_path, ["mnist"], split, {"data_split": "auto"}, paper={"data_split": "full"})
    assert check_data(scratch_project, spec, spec.resolve("default"), log=lambda m: None) == {"mnist": "ok"}
    with pytest.raises(NotReady) as err:
        check_data(scratch_project, spec, spec.resolve("paper"), log=lambda m: None)
    msg = str(err.value)
    assert "2 required file(s) missing" in msg and "mnist/raw/train-images-idx3-ubyte.gz: MISSING" in msg
    assert "t10k" not in msg and str(tmp_path / "cache" / "mnist" / "raw" / "train-labels-idx1-ubyte.gz") in msg


def test_cpu_only_chapters_refuse_cuda_and_record_the_cpu():
    """Every chapter has a device parameter; the numpy/statsmodels chapters (``compute: cpu``)
    accept cpu/auto, record the CPU, and refuse cuda before any compute, saying why."""
    from compendium.book.runner import NotReady, device_record
    from compendium.chapters import available_chapters, load_spec
    from compendium.project import Project

    project = Project.discover()
    for chapter in available_chapters(project):
        assert "device" in load_spec(project, chapter).parameters, chapter
    calib = load_spec(project, "calibration")
    assert calib.compute == "cpu"
    assert device_record(calib, {"device": "auto"})["used"] == "cpu"
    with pytest.raises(NotReady, match="CPU only"):
        device_record(calib, {"device": "cuda"})
    assert device_record(load_spec(project, "dashnet"), {"device": "cpu"}) == {"requested": "cpu", "used": "cpu"}
