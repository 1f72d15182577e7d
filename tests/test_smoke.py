"""Every chapter's paper profile starts and finishes: `compendium run <id> --profile paper --smoke`
(the paper's architectures and input shapes, one or two steps per loop, synthetic samples of the
real shapes where the data is absent), publishing nothing; and the same through submitit's local
executor. Each run writes into a temporary output root, never into the book."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compendium.project import Project

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.smoke


def _run(args: list[str], out: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "compendium", "--root", str(ROOT), "--output-root", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_every_chapter_is_covered():
    assert len(CHAPTERS) == 11


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_paper_profile_smoke_run(chapter, tmp_path):
    proc = _run(["run", chapter, "--profile", "paper", "--smoke"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SMOKE mode" in proc.stdout and "not published" in proc.stdout
    # nothing reaches the book: no executed chapter, no results record
    assert not (tmp_path / "book" / "chapters" / f"{chapter}.ipynb").exists()
    assert not (tmp_path / "results" / f"{chapter}.json").exists()
    assert (tmp_path / "_build" / "smoke" / f"{chapter}.ipynb").is_file()
    rec = json.loads((tmp_path / "results" / "smoke" / f"{chapter}.json").read_text())
    assert rec["smoke"] is True and rec["profile"] == "paper"
    # the paper profile's parameters ran (not the default ones)
    project = Project.discover(ROOT)
    from compendium.chapters import load_spec

    assert rec["parameters"] == load_spec(project, chapter).resolve("paper")
    for loop in rec["loops"]:  # every training run stopped after at most two steps at a batch of at most two
        assert len(loop["step_times_s"]) <= 2 and loop["batch"] <= 2
    # absent data was announced as synthetic
    for name, state in rec["data"].items():
        if state.startswith("absent"):
            assert f"dataset '{name}' is not (fully) available" in proc.stdout
    assert (tmp_path / "book" / "cost.md").is_file()
    if chapter == "tdbn":  # CIFAR-10 is absent here: synthetic samples of its real shape, said so
        log = (tmp_path / "_build" / "smoke" / "tdbn.log").read_text()
        assert "SYNTHETIC samples of its real shape (3, 32, 32)" in log
        assert rec["summary"]["fit_runs"] >= 2 and rec["summary"]["median_step_s"] > 0
        assert {lp["paper_batch"] for lp in rec["loops"]} == {64}
        cost = _run(["list", "--cost"], tmp_path)
        assert cost.returncode == 0 and "ESTIMATES, not measurements" in cost.stdout
        assert any(line.startswith("tdbn") and "no smoke record" not in line for line in cost.stdout.splitlines())
    # no wall-time assertion (a timed test fails on a busy machine, not on slow code): the run's
    # time is recorded (results/smoke/<id>.json, `compendium list --cost`) and read from there
    assert rec["wall_time_s"] > 0


def test_local_executor_runs_the_same_path_and_records_where(tmp_path):
    proc = _run(["run", "primer", "--profile", "paper", "--smoke", "--executor", "local"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "local job" in proc.stdout and "ended with status 0" in proc.stdout
    rec = json.loads((tmp_path / "results" / "smoke" / "primer.json").read_text())
    assert rec["executor"].startswith("submitit local executor (1 process, CPU) on ")
    assert (tmp_path / "_build" / "submitit").is_dir()


def test_slurm_executor_without_slurm_is_refused_before_submitting(tmp_path):
    proc = _run(["run", "primer", "--profile", "paper", "--executor", "slurm", "--gpus", "4"], tmp_path)
    assert proc.returncode == 2 and "needs Slurm's sbatch" in proc.stderr
    bad = _run(["run", "primer", "--profile", "paper", "--executor", "slurm", "-p", "epochs", "x"], tmp_path)
    assert bad.returncode == 2 and "epochs" in bad.stderr


def test_job_command_runs_torchrun_for_several_gpus():
    from compendium.book.executor import job_command

    project = Project.discover(ROOT)
    one = job_command(project, "tdbn", "paper", {"epochs": 3}, processes=1)
    four = job_command(project, "tdbn", "paper", {}, processes=4, smoke=True)
    assert one[1:3] == ["-m", "compendium"] and ["-p", "epochs", "3"] == one[-3:]
    assert four[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert four[-1] == "--smoke"
    threaded = job_command(project, "tdbn", "paper", {}, processes=1, threads=3)
    assert threaded[-2:] == ["--threads", "3"] and "--threads" not in one
