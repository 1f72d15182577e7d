"""Run a chapter as a job through ``submitit``: on a Slurm cluster, or the same path locally.

``compendium run <chapter> --profile paper --executor slurm --gpus 4 --partition gpu --time 48``
submits one job (one node, ``--gpus`` GPUs). Inside it, the job runs the ordinary
``compendium run`` — papermill, the checks, the atomic publication — under ``torchrun`` with
one process per GPU when ``--gpus`` > 1, so that every ``fit`` in the chapter is data-parallel
(:mod:`compendium.learning.distributed`); rank 0 records and publishes, the other ranks only
execute (:func:`compendium.book.smoke_run.run_worker`). ``--executor local`` runs the same job
function on this machine through submitit's ``LocalExecutor`` (and waits for it). The record
(``results/<chapter>.json`` or, with ``--smoke``, ``results/smoke/<chapter>.json``) says where
it ran (``executor``: the executor, Slurm job id, host, processes). submitit's own files
(pickled job, stdout, stderr) are in ``_build/submitit/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from compendium.project import Project

EXECUTOR_ENV = "COMPENDIUM_EXECUTOR"  # set inside a job: where the run happens (the record keeps it)


def job_command(project: Project, chapter: str, profile: str, overrides: Mapping[str, Any], *, processes: int,
                smoke: bool = False, kernel: str | None = None, timeout: float | None = None,
                threads: int | None = None) -> list[str]:
    """The command a job runs: ``compendium run`` (under ``torchrun`` for more than one process)."""
    args = ["--root", str(project.root), "--output-root", str(project.output_root), "run", chapter, "--profile", profile]
    for name, value in overrides.items():
        args += ["-p", name, str(value)]
    if smoke:
        args.append("--smoke")
    if kernel:
        args += ["--kernel", kernel]
    if timeout:
        args += ["--timeout", f"{timeout:g}"]
    if threads:  # on the command line, not only in the environment: a Slurm site may not export it
        args += ["--threads", str(threads)]
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                "-m", "compendium", *args]
    return [sys.executable, "-m", "compendium", *args]


def run_job(cmd: list[str], env: dict[str, str], where: str) -> dict[str, Any]:
    """The job function submitit runs (on the cluster node, or locally): the command, with the
    executor's description (plus host and Slurm job id) in :data:`EXECUTOR_ENV`."""
    job_id = os.environ.get("SLURM_JOB_ID")
    desc = f"{where} on {socket.gethostname()}" + (f", Slurm job {job_id}" if job_id else "")
    full_env = {**os.environ, **env, EXECUTOR_ENV: desc}
    print(f"[job] {desc}: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, env=full_env)
    return {"returncode": proc.returncode, "where": desc, "command": cmd}


def submit(project: Project, chapter: str, profile: str, overrides: Mapping[str, Any], *, executor: str,
           gpus: int | None = None, partition: str | None = None, hours: float | None = None, smoke: bool = False,
           kernel: str | None = None, timeout: float | None = None, threads: int | None = None,
           wait: bool = True) -> int:
    """Submit ``compendium run <chapter>`` through submitit and (``wait``) return its exit status.

    The parameters are validated here, before anything is submitted (status 2 on a bad one)."""
    import submitit

    from compendium.chapters import load_spec

    load_spec(project, chapter).resolve(profile, overrides)  # refuse bad parameters before submitting
    if executor not in ("local", "slurm"):
        raise ValueError(f"executor must be 'local' or 'slurm', got {executor!r}")
    gpus = (1 if executor == "slurm" else 0) if gpus is None else gpus
    processes = max(1, gpus)
    folder = project.build_dir / "submitit"
    folder.mkdir(parents=True, exist_ok=True)
    minutes = int(round((hours or 24.0) * 60))
    if executor == "slurm":
        if shutil.which("sbatch") is None:
            print("error: --executor slurm needs Slurm's sbatch on this machine (a cluster login node); "
                  "use --executor local to run the same path here", file=sys.stderr)
            return 2
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        params: dict[str, Any] = {"timeout_min": minutes, "nodes": 1, "tasks_per_node": 1,
                                  "cpus_per_task": max(2, 8 * processes), "name": f"compendium-{chapter}"}
        if gpus:
            params["gpus_per_node"] = gpus
        if partition:
            params["slurm_partition"] = partition
        ex.update_parameters(**params)
    else:
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=minutes)
        if gpus:
            ex.update_parameters(gpus_per_node=gpus)
    cmd = job_command(project, chapter, profile, overrides, processes=processes, smoke=smoke, kernel=kernel,
                      timeout=timeout, threads=threads)
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(
        [str(project.package_dir.parent), *[e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]]))}
    where = f"submitit {executor} executor ({processes} process{'es' if processes > 1 else ''}"
    where += f", {gpus} GPU(s))" if gpus else ", CPU)"
    job = ex.submit(run_job, cmd, env, where)
    print(f"[submit] {chapter}: {executor} job {job.job_id} ({where}); submitit files in {folder}")
    if not wait:
        print(f"[submit] not waiting; `squeue -j {job.job_id}`; outputs in {folder}/{job.job_id}_0_log.out")
        return 0
    try:
        result = job.result()
    except Exception as err:  # the job died (timeout, node failure): submitit's error names it
        print(f"error: job {job.job_id} failed: {err}\n(stdout/stderr: {Path(folder)}/{job.job_id}_0_log.*)",
              file=sys.stderr)
        return 1
    out = Path(job.paths.stdout)
    if out.is_file():
        sys.stdout.write(out.read_text(encoding="utf-8", errors="replace"))
    err_path = Path(job.paths.stderr)
    if result["returncode"] != 0 and err_path.is_file():
        sys.stderr.write(err_path.read_text(encoding="utf-8", errors="replace")[-4000:])
    print(f"[submit] {chapter}: job {job.job_id} ended with status {result['returncode']} ({result['where']})")
    return int(result["returncode"])
