"""The runner under faults: one test per row of the README's troubleshooting matrix.

Each test asserts what a user sees: the exit status, the message, and the files on disk
before and after (the previous good outputs, partial files, the log, the failure marker).
They use the small demo chapter of ``conftest.demo_project``, extended with a few knobs
(``sleep``, ``diverge``, ``device``) so that a fault can be provoked in a second or two."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from compendium.book.runner import (EXIT_BUSY, EXIT_FAILED, EXIT_NOT_READY, EXIT_SIGINT, EXIT_SIGTERM, FileLock,
                                    build_lock, chapter_modules, inputs_fingerprint, is_stale, run_chapter,
                                    run_stale, stale_reasons)
from compendium.chapters import available_chapters, load_spec
from compendium.project import Project
from conftest import ROOT

MIRROR = Path(os.environ.get("COMPENDIUM_DATA_MIRROR", "/nonexistent"))
CORA = MIRROR / "planetoid" / "Cora" / "raw"

FAULT_CELL = """\
import os, sys, time
import compendium
print("compendium from", compendium.__file__, flush=True)
print("device", device, flush=True)
if sleep:
    print("sleeping in kernel pid", os.getpid(), flush=True)
    time.sleep(sleep)
if diverge:
    import torch
    from compendium.learning import fit
    data = (torch.randn(16, 2), torch.zeros(16, dtype=torch.long))
    fit(torch.nn.Linear(2, 2), data, epochs=1, loss_fn=lambda out, y: out.sum() * float("nan"), show_progress=False)
"""
FAULT_CELL_INDEX = 3  # executed: 0 title, 1 parameters, 2 papermill's injected parameters, 3 this one, 4 'fail' ...


def _make_fault_chapter(project: Project, chapter: str = "demo", datasets: str = "[]", extra_import: str = "") -> None:
    """Give the demo chapter the knobs the fault tests turn (and optionally declared datasets)."""
    spec = project.chapter_spec(chapter)
    text = spec.read_text()
    text = text.replace("datasets: []", f"datasets: {datasets}")
    text = text.replace("  fail: {type: bool}\n", "  fail: {type: bool}\n  sleep: {type: float, min: 0, max: 600}\n"
                        "  diverge: {type: bool}\n  device: {type: str, choices: [cpu, cuda, auto]}\n")
    text = text.replace("default: {x: 1, fail: false}", "default: {x: 1, fail: false, sleep: 0.0, diverge: false, device: cpu}")
    spec.write_text(text.replace("id: demo", f"id: {chapter}"))
    nb = nbformat.read(project.notebook(chapter), as_version=4)
    nb.cells[1].source = "x = 1\nfail = False\nsleep = 0.0\ndiverge = False\ndevice = 'cpu'"
    nb.cells.insert(2, nbformat.v4.new_code_cell(extra_import + FAULT_CELL))
    for c in nb.cells:
        if c.cell_type == "code" and "ChapterReport('demo'" in c.source:
            c.source = c.source.replace("ChapterReport('demo'", f"ChapterReport('{chapter}'")
    nbformat.write(nb, project.notebook(chapter))


@pytest.fixture
def fault_project(demo_project):
    _make_fault_chapter(demo_project)
    return demo_project


def _cli(project, *args, env=None, cwd=None, **kw):
    return subprocess.run([sys.executable, "-m", "compendium", "--root", str(project.root), "--output-root",
                           str(project.output_root), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, **kw)


def _interruptible() -> None:
    # the CLI as a user starts it from a terminal, with SIGINT at its default: a suite launched as
    # a background job of a non-interactive shell (`.ci/run &`) inherits SIGINT ignored (POSIX),
    # exec keeps it ignored, and the interrupt test would wait out the kernel's sleep
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(project, *args):
    return subprocess.Popen([sys.executable, "-m", "compendium", "--root", str(project.root), "--output-root",
                             str(project.output_root), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)


def _snapshot(project: Project) -> dict[str, bytes]:
    """Every file under the output folders (book/chapters, results), with its bytes."""
    out = {}
    for folder in (project.executed_dir, project.results_dir):
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.is_file():
                    out[str(p.relative_to(project.output_root))] = p.read_bytes()
    return out


def _good_outputs(project: Project) -> dict[str, bytes]:
    """A real, complete previous run: what every fault must leave exactly as it was."""
    run_chapter(project, "demo", "quick", log=lambda m: None)
    snap = _snapshot(project)
    assert {"book/chapters/demo.ipynb", "results/demo.json", "results/demo.log"} <= set(snap)
    return snap


def _outputs_only(snap: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in snap.items() if not k.endswith(".log")}


def _leftovers(project: Project) -> list[str]:
    """Partial or staging files anywhere under the output root."""
    found = []
    for folder in (project.executed_dir, project.results_dir):
        if folder.is_dir():
            found += [p.name for p in folder.iterdir() if p.name.startswith(".") or "partial" in p.name]
    runs = project.staging_dir
    if runs.is_dir():
        found += [p.name for p in runs.iterdir()]
    return found


def _wait_for(pred, timeout=60.0, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _kernel_pid(project: Project) -> int:
    text = project.log("demo").read_text()
    return int(text.split("sleeping in kernel pid", 1)[1].split()[0])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- the matrix -----------------------------------------------------------------------------------

@pytest.mark.skipif(not CORA.is_dir(), reason="needs the Cora files of the data mirror")
def test_missing_data_file_is_refused_before_the_kernel_starts(demo_project, tmp_path):
    _make_fault_chapter(demo_project, datasets="[cora]")
    before = _good_outputs(demo_project)
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    env = {"COMPENDIUM_DATA_MIRROR": str(empty), "COMPENDIUM_CACHE": str(tmp_path / "cache"), "COMPENDIUM_OFFLINE": "1"}
    t0 = time.monotonic()
    proc = _cli(demo_project, "run", "demo", "--profile", "quick", env=env)
    assert proc.returncode == EXIT_NOT_READY, proc.stderr
    err = proc.stderr
    assert "data are not ready, so nothing was run" in err and "8 required file(s) missing" in err
    for name in ("ind.cora.x", "ind.cora.tx", "ind.cora.graph", "ind.cora.test.index"):
        assert f"planetoid/Cora/raw/{name}: MISSING" in err
    assert "expected: sha256 23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab" in err  # ind.cora.x
    assert f"put it:   {tmp_path / 'cache' / 'planetoid/Cora/raw/ind.cora.x'}" in err
    assert f"nothing at {tmp_path / 'cache'}" in err
    assert _snapshot(demo_project) == before  # not even the log was touched: no kernel started
    assert not (demo_project.build_dir / "failed").exists() and _leftovers(demo_project) == []
    assert time.monotonic() - t0 < 60


@pytest.mark.skipif(not CORA.is_dir(), reason="needs the Cora files of the data mirror")
def test_corrupt_data_file_is_refused_naming_expected_and_found_checksums(demo_project, tmp_path):
    _make_fault_chapter(demo_project, datasets="[cora]")
    before = _good_outputs(demo_project)
    mirror = tmp_path / "mirror"
    shutil.copytree(CORA, mirror / "planetoid" / "Cora" / "raw")
    bad = mirror / "planetoid" / "Cora" / "raw" / "ind.cora.x"
    bad.write_bytes(b"truncated download")
    env = {"COMPENDIUM_DATA_MIRROR": str(mirror), "COMPENDIUM_CACHE": str(tmp_path / "cache"), "COMPENDIUM_OFFLINE": "1"}
    proc = _cli(demo_project, "run", "demo", "--profile", "quick", env=env)
    assert proc.returncode == EXIT_NOT_READY, proc.stderr
    err = proc.stderr
    assert "1 corrupt file(s)" in err and "planetoid/Cora/raw/ind.cora.x: CHECKSUM MISMATCH" in err
    assert "expected: sha256 23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab" in err
    assert f"found:    mirror {bad}: sha256 {hashlib.sha256(b'truncated download').hexdigest()} (18 bytes), does not match" in err
    assert "ind.cora.tx" not in err  # only the bad file is named
    assert _snapshot(demo_project) == before
    assert _leftovers(demo_project) == []


def test_wrong_parameter_type_is_refused_before_compute(fault_project):
    before = _good_outputs(fault_project)
    proc = _cli(fault_project, "run", "demo", "-p", "x", "two", "-p", "sleep", "long")
    assert proc.returncode == EXIT_NOT_READY
    assert "'x' must be an integer, got 'two'" in proc.stderr and "'sleep' must be a number" in proc.stderr
    assert _snapshot(fault_project) == before
    assert not (fault_project.build_dir / "failed").exists()


def test_nan_loss_inside_fit_fails_the_chapter_and_keeps_previous_outputs(fault_project):
    before = _good_outputs(fault_project)
    proc = _cli(fault_project, "run", "demo", "-p", "diverge", "true")
    assert proc.returncode == EXIT_FAILED
    err = proc.stderr
    assert f"failed in cell {FAULT_CELL_INDEX} (execution count" in err
    assert "TrainingDiverged: train: loss became nan at epoch 1, step 0" in err
    assert f"Log: {fault_project.log('demo')}" in err
    assert _outputs_only(_snapshot(fault_project)) == {**_outputs_only(before), "results/demo.failed.json":
                                                       fault_project.failure_marker("demo").read_bytes()}
    assert "TrainingDiverged" in fault_project.log("demo").read_text()
    assert _leftovers(fault_project) == []


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, EXIT_SIGINT), (signal.SIGTERM, EXIT_SIGTERM)])
def test_interrupt_mid_run_keeps_previous_outputs_and_leaves_no_partials(fault_project, sig, status):
    before = _good_outputs(fault_project)
    proc = _popen(fault_project, "run", "demo", "-p", "sleep", "120")
    try:
        _wait_for(lambda: "sleeping in kernel pid" in (fault_project.log("demo").read_text()
                                                      if fault_project.log("demo").is_file() else ""),
                  what="the kernel to reach the sleeping cell")
        kernel = _kernel_pid(fault_project)
        assert any(fault_project.staging_dir.iterdir())  # mid-run: the staged notebook exists
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    assert f"interrupted ({sig.name})" in err and "previous outputs of 'demo' are untouched" in err
    assert _outputs_only(_snapshot(fault_project)) == _outputs_only(before)  # byte for byte; no failure marker
    assert _leftovers(fault_project) == []
    assert "INTERRUPTED" in fault_project.log("demo").read_text()
    _wait_for(lambda: _gone(kernel), timeout=20, what="the kernel to exit")
    assert stale_reasons(fault_project, "demo") == []  # the previous pair is still a consistent, current pair


def test_second_concurrent_run_of_a_chapter_is_refused_at_once(fault_project):
    first = _popen(fault_project, "run", "demo", "-p", "sleep", "6")
    try:
        _wait_for(lambda: fault_project.log("demo").is_file() and "sleeping" in fault_project.log("demo").read_text(),
                  what="the first run to start")
        t0 = time.monotonic()
        second = _cli(fault_project, "run", "demo", "--profile", "quick")
        assert time.monotonic() - t0 < 30 and first.poll() is None  # refused while the first still runs
        assert second.returncode == EXIT_BUSY
        assert "chapter 'demo' is already being run (pid" in second.stderr and f"pid {first.pid}" in second.stderr
        assert "compendium run demo --profile default" in second.stderr
        _out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    rec = json.loads(fault_project.record("demo").read_text())
    assert rec["parameters"]["sleep"] == 6 and rec["profile"] == "default"  # the first run's record ...
    nb = fault_project.executed("demo").read_bytes()
    assert rec["notebook_sha256"] == hashlib.sha256(nb).hexdigest()  # ... with the first run's notebook
    assert _leftovers(fault_project) == []


def test_failing_cell_names_the_cell_the_exception_and_the_log(fault_project):
    before = _good_outputs(fault_project)
    proc = _cli(fault_project, "run", "demo", "-p", "fail", "true")
    assert proc.returncode == EXIT_FAILED
    err = proc.stderr
    assert f"failed in cell {FAULT_CELL_INDEX + 1} (execution count" in err and "ValueError: asked to fail" in err
    assert f"'Executing Cell {FAULT_CELL_INDEX + 2}' in the log" in err
    assert f"Log: {fault_project.log('demo')}" in err and "previous outputs are untouched" in err
    log = fault_project.log("demo").read_text()
    assert "compendium from" in log  # the kernel's output, which used to be hidden
    assert "# FAILED in cell" in log and "ValueError: asked to fail" in log and "Traceback" in log
    assert (fault_project.build_dir / "failed" / "demo.ipynb").is_file()
    assert _outputs_only(_snapshot(fault_project)) == {**_outputs_only(before), "results/demo.failed.json":
                                                       fault_project.failure_marker("demo").read_bytes()}
    assert any("latest run failed" in r for r in stale_reasons(fault_project, "demo"))


def test_timeout_stops_the_chapter_and_keeps_previous_outputs(fault_project):
    before = _good_outputs(fault_project)
    t0 = time.monotonic()
    proc = _cli(fault_project, "run", "demo", "-p", "sleep", "120", "--timeout", "4")
    elapsed = time.monotonic() - t0
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert elapsed < 60
    assert f"chapter 'demo' timed out after 4 s (--timeout 4) in cell {FAULT_CELL_INDEX}" in proc.stderr, proc.stderr[-1500:]
    assert f"Log: {fault_project.log('demo')}" in proc.stderr
    kernel = _kernel_pid(fault_project)
    _wait_for(lambda: _gone(kernel), timeout=20, what="the kernel to exit")
    assert _outputs_only(_snapshot(fault_project)) == {**_outputs_only(before), "results/demo.failed.json":
                                                       fault_project.failure_marker("demo").read_bytes()}
    assert "timed out" in json.loads(fault_project.failure_marker("demo").read_text())["error"]
    assert _leftovers(fault_project) == []


def test_relative_pythonpath_kernel_imports_the_package_the_cli_imported(fault_project, tmp_path):
    alt = tmp_path / "checkout"
    shutil.copytree(ROOT / "src" / "compendium", alt / "src" / "compendium",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": "src"}  # relative: right for the CLI (cwd: the checkout), wrong in notebooks/
    proc = _cli(fault_project, "run", "demo", "--profile", "quick", env=env, cwd=alt)
    assert proc.returncode == 0, proc.stderr
    log = fault_project.log("demo").read_text()
    assert f"compendium from {alt / 'src' / 'compendium' / '__init__.py'}" in log
    rec = json.loads(fault_project.record("demo").read_text())
    assert rec["numbers"]["y"] == 4


def test_change_in_one_module_reruns_only_the_chapters_that_import_it(demo_project, tmp_path):
    pkg = tmp_path / "pkg" / "compendium"  # a private copy of the package, free to edit
    shutil.copytree(ROOT / "src" / "compendium", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    project = Project(root=demo_project.root, output_root=demo_project.output_root, package=pkg)
    shutil.copy(project.notebook("demo"), project.notebook("stats"))
    shutil.copy(project.chapter_spec("demo"), project.chapter_spec("stats"))
    _make_fault_chapter(project, "stats", extra_import="import compendium.stats.splines\n")
    shutil.copy(project.claims_file("demo"), project.claims_file("stats"))
    project.claims_file("stats").write_text(project.claims_file("stats").read_text().replace("id: demo", "id: stats"))
    assert available_chapters(project) == ["demo", "stats"]
    rel = {c: {str(p.relative_to(pkg)) for p in chapter_modules(project, c)} for c in ("demo", "stats")}
    assert "stats/splines.py" in rel["stats"] and not any(m.startswith("stats/") for m in rel["demo"])
    assert "book/report.py" in rel["demo"] & rel["stats"]

    assert run_stale(project, "quick", log=lambda m: None) == {"demo": "ran", "stats": "ran"}
    splines = pkg / "stats" / "splines.py"
    splines.write_text(splines.read_text() + "\n# a change in stats/\n")
    assert run_stale(project, "quick", log=lambda m: None) == {"demo": "fresh", "stats": "ran"}
    unused = pkg / "graph" / "layers.py"  # imported by neither chapter
    unused.write_text(unused.read_text() + "\n# a change nobody imports\n")
    assert not is_stale(project, "demo", "quick") and not is_stale(project, "stats", "quick")
    report = pkg / "book" / "report.py"
    report.write_text(report.read_text() + "\n# a change both import\n")
    assert is_stale(project, "demo", "quick") and is_stale(project, "stats", "quick")


def test_a_change_in_stats_restales_only_the_calibration_chapter(project, tmp_path):
    """The real chapters, without running them: only calibration's inputs hash moves."""
    pkg = tmp_path / "pkg" / "compendium"
    shutil.copytree(project.package_dir, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    copy = Project(root=project.root, output_root=tmp_path / "out", package=pkg)
    chapters = available_chapters(copy)

    def hashes():
        out = {}
        for c in chapters:
            spec = load_spec(copy, c)
            out[c] = inputs_fingerprint(copy, spec, "quick", spec.resolve("quick"))
        return out

    before = hashes()
    target = pkg / "stats" / "splines.py"
    target.write_text(target.read_text() + "\n# edited\n")
    after = hashes()
    assert [c for c in chapters if before[c] != after[c]] == ["calibration"]
    # a chapter's exercise checks are its own too (one module per chapter)
    target = pkg / "exercises" / "primer.py"
    target.write_text(target.read_text() + "\n# edited\n")
    again = hashes()
    assert [c for c in chapters if after[c] != again[c]] == ["primer"]


# --- more rows: build lock, clean, knobs, records --------------------------------------------------

def test_second_build_is_refused_while_one_holds_the_build_lock(fault_project):
    before = _good_outputs(fault_project)
    with build_lock(fault_project):  # as a build under way in another process would
        proc = _cli(fault_project, "build", "--profile", "quick")
    assert proc.returncode == EXIT_BUSY
    assert "another build of this output root is under way" in proc.stderr
    assert _snapshot(fault_project) == before and not (fault_project.build_dir / "source").exists()


def test_clean_removes_outputs_and_leftovers_and_refuses_during_a_run(fault_project):
    _good_outputs(fault_project)
    (fault_project.executed_dir / ".demo.4242.partial.ipynb").write_text("{}")  # an old interrupted run
    (fault_project.results_dir / ".demo.4242.partial.json").write_text("{}")
    (fault_project.staging_dir / "demo.4242.abcd").mkdir(parents=True)
    with FileLock(fault_project.run_lock("demo"), "chapter 'demo'", info={"command": "compendium run demo"}):
        busy = _cli(fault_project, "clean")
    assert busy.returncode == EXIT_BUSY and "chapter 'demo'" in busy.stderr and "not cleaning" in busy.stderr
    assert fault_project.executed("demo").is_file()
    proc = _cli(fault_project, "clean")
    assert proc.returncode == 0, proc.stderr
    assert not fault_project.executed_dir.exists()
    assert sorted(p.name for p in fault_project.results_dir.iterdir()) == []
    assert not fault_project.staging_dir.exists() and "removed results/demo.json" in proc.stdout


def test_leftovers_of_a_killed_run_are_swept_by_the_next_run(fault_project):
    (fault_project.executed_dir).mkdir(parents=True, exist_ok=True)
    (fault_project.executed_dir / ".demo.4242.partial.ipynb").write_text("{}")
    (fault_project.staging_dir / "demo.4242.abcd").mkdir(parents=True)
    run_chapter(fault_project, "demo", "quick", log=lambda m: None)
    assert _leftovers(fault_project) == []


def test_record_names_kernel_device_and_log_and_log_output_streams(fault_project):
    proc = _cli(fault_project, "run", "demo", "--profile", "quick", "--log-output", "--kernel", "python3",
                "--timeout", "300")
    assert proc.returncode == 0, proc.stderr
    assert "compendium from" in proc.stdout and "Executing Cell" in proc.stdout  # streamed to the terminal
    rec = json.loads(fault_project.record("demo").read_text())
    assert rec["kernel"] == "python3" and rec["timeout_s"] == 300 and rec["log"] == "results/demo.log"
    assert rec["device"] == {"requested": "cpu", "used": "cpu"}
    assert "book/report.py" in rec["package_modules"]
    assert rec["notebook_sha256"] == hashlib.sha256(fault_project.executed("demo").read_bytes()).hexdigest()
    assert "# OK: published" in fault_project.log("demo").read_text()


def test_unknown_kernel_is_refused_before_compute(fault_project):
    before = _good_outputs(fault_project)
    proc = _cli(fault_project, "run", "demo", "--kernel", "nosuch")
    assert proc.returncode == EXIT_NOT_READY
    assert "no Jupyter kernel named 'nosuch'" in proc.stderr and "python3" in proc.stderr
    assert _snapshot(fault_project) == before


def test_cuda_without_a_gpu_is_refused_before_compute(fault_project):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = _good_outputs(fault_project)
    proc = _cli(fault_project, "run", "demo", "-p", "device", "cuda")
    assert proc.returncode == EXIT_NOT_READY and "no CUDA device" in proc.stderr
    assert _snapshot(fault_project) == before


def test_a_pair_split_by_a_hard_crash_is_shown_stale(fault_project):
    _good_outputs(fault_project)
    assert stale_reasons(fault_project, "demo") == []
    # as if the process died (SIGKILL) between renaming the notebook and renaming the record
    fault_project.executed("demo").write_text(fault_project.executed("demo").read_text().replace("Demo chapter", "Other"))
    reasons = stale_reasons(fault_project, "demo")
    assert any("not the one published with its record" in r for r in reasons)
    assert is_stale(fault_project, "demo", "quick")


def test_timeout_must_be_positive(fault_project):
    proc = _cli(fault_project, "run", "demo", "--timeout", "0")
    assert proc.returncode == 2 and "must be > 0 seconds" in proc.stderr


def test_sigterm_to_a_build_stops_its_chapter_runs_and_keeps_previous_outputs(fault_project):
    spec = fault_project.chapter_spec("demo")
    spec.write_text(spec.read_text().replace("quick: {x: 2}", "quick: {x: 2, sleep: 120.0}"))
    run_chapter(fault_project, "demo", "quick", {"sleep": 0}, log=lambda m: None)  # previous good outputs
    before = _outputs_only(_snapshot(fault_project))
    build = _popen(fault_project, "build", "--profile", "quick")  # stale (other parameters): re-runs demo
    try:
        _wait_for(lambda: "sleeping in kernel pid" in (fault_project.log("demo").read_text()
                                                      if fault_project.log("demo").is_file() else ""),
                  what="the build's chapter run to reach the sleeping cell")
        kernel = _kernel_pid(fault_project)
        build.send_signal(signal.SIGTERM)
        _out, err = build.communicate(timeout=90)
    finally:
        if build.poll() is None:
            build.kill()
    assert build.returncode == EXIT_SIGTERM, err
    assert "interrupted (SIGTERM)" in err
    assert _outputs_only(_snapshot(fault_project)) == before and _leftovers(fault_project) == []
    assert not (fault_project.build_dir / "source").exists()  # it never got to render
    _wait_for(lambda: _gone(kernel), timeout=20, what="the kernel to exit")
