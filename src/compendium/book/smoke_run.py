"""Smoke runs of a chapter (``compendium run <chapter> --profile paper --smoke``), and the
plain execution that ranks other than 0 of a ``torchrun`` job do.

A smoke run executes the chapter's notebook with the profile's parameters (the paper's
architectures, input shapes, depths and loops) in smoke mode (:mod:`compendium.smoke`): every
training run is one epoch of one or two steps at a batch of at most two, every seed / trial /
replicate list keeps its first two entries, loaders keep a few samples and replace absent data
by synthetic samples of its real shape, and say so. It proves that the profile starts and
finishes and measures its step times; its numbers mean nothing.

Nothing of it goes into the book: the executed notebook is ``_build/smoke/<chapter>.ipynb``
(its log beside it), and the measured step times and the run's plan go to
``results/smoke/<chapter>.json``, which the cost table (:mod:`compendium.book.cost`) reads.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from compendium.book.report import PROFILE_ENV, RECORD_ENV
from compendium.chapters import load_spec
from compendium.project import ROOT_ENV, Project
from compendium.smoke import SMOKE_ENV, SMOKE_LOG_ENV


def smoke_dir(project: Project) -> Path:
    """``_build/smoke``: executed smoke notebooks and their logs (never published)."""
    return project.build_dir / "smoke"


def smoke_record_path(project: Project, chapter: str) -> Path:
    """``results/smoke/<chapter>.json``: the step times a smoke run measured."""
    return project.results_dir / "smoke" / f"{chapter}.json"


def _data_states(project: Project, spec, log: Callable[[str], None]) -> dict[str, str]:
    """Each declared dataset: ``ok``, or ``absent`` (smoke mode substitutes synthetic samples of
    its shape). A corrupt copy is refused as in a real run."""
    from compendium.book.runner import NotReady
    from compendium.datasets import Registry

    reg = Registry.default(project.root, log=lambda _m: None)
    states, problems = {}, []
    for name in dict.fromkeys(spec.datasets):
        diags = [reg.diagnose(f) for f in reg.dataset(name).files]
        corrupt = [d for d in diags if d.state == "corrupt"]
        if corrupt:
            problems += [f"dataset '{name}': corrupt file(s):"] + [line for d in corrupt for line in d.lines()]
            states[name] = "corrupt"
        elif all(d.state == "ok" for d in diags):
            states[name] = "ok"
        else:
            missing = [d.file.path for d in diags if d.state != "ok"]
            states[name] = f"absent ({len(missing)} of {len(diags)} files): synthetic samples of its shape where needed"
            log(f"[smoke] {spec.id}: dataset '{name}' is not (fully) available here ({', '.join(missing)}); "
                "the loaders substitute SYNTHETIC samples of its real shape in smoke mode")
    if problems:
        raise NotReady(f"chapter '{spec.id}': " + "\n".join(problems))
    return states


def _execute(project: Project, chapter: str, params: Mapping[str, Any], out_nb: Path, log_path: Path,
             env: Mapping[str, str], kernel: str, timeout: float | None, log_output: bool) -> None:
    """Papermill ``notebooks/<chapter>.ipynb`` into ``out_nb`` with ``env`` set for the kernel,
    its output into ``log_path``; raises :class:`ChapterFailed` naming the cell."""
    import papermill as pm

    from compendium.book.runner import ChapterFailed, _kernel_manager_class, _streamed_log, restore_environ, set_environ

    before = set_environ(env)
    engine_kwargs: dict[str, Any] = {}
    if timeout:
        deadline = time.monotonic() + timeout
        engine_kwargs["timeout_func"] = lambda _cell: max(0.01, deadline - time.monotonic())
    try:
        with _streamed_log(log_path, sys.stdout if log_output else None) as handler, \
                open(log_path, "ab", buffering=0) as stdio:
            try:
                pm.execute_notebook(str(project.notebook(chapter)), str(out_nb), parameters=dict(params),
                                    kernel_name=kernel, cwd=str(project.notebooks_dir), progress_bar=False,
                                    log_output=True, kernel_manager_class=_kernel_manager_class(stdio),
                                    **engine_kwargs)
            except KeyboardInterrupt:
                raise
            except Exception as err:
                cell = getattr(err, "cell_index", None)
                if cell is None:
                    cell = handler.cell
                detail = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
                tb = getattr(err, "traceback", None)
                handler.fh.write(f"\n# FAILED in cell {cell}: {detail}\n" + ("\n".join(tb) + "\n" if isinstance(tb, list) else ""))
                raise ChapterFailed(f"chapter '{chapter}' failed in cell {cell}: {detail}\nLog: {log_path}; "
                                    f"the notebook as far as it ran: {out_nb}", cell=cell, log=log_path) from err
    finally:
        restore_environ(before)


def summarise(loops: list[dict[str, Any]]) -> dict[str, Any]:
    """What the step log says: measured training steps, their median per-sample time, and
    the planned steps and samples of the full run (every ``fit`` call at its requested epochs,
    batch and full training set)."""
    fits = [lp for lp in loops if lp.get("kind") == "fit"]
    per_sample = []
    for lp in fits:
        times = lp["step_times_s"][1:] or lp["step_times_s"]  # the first step pays for warm-up
        per_sample += [t / max(1, lp["batch"]) for t in times]
    planned_samples = sum(lp["epochs"] * lp["samples_full"] for lp in fits)
    cut = sorted({w for lp in fits for w in lp.get("data_cut_without_scale") or []})
    return {"fit_runs": len(fits), "steps_measured": sum(len(lp["step_times_s"]) for lp in fits),
            "data_cut_without_scale": cut,
            "median_step_s": statistics.median([t for lp in fits for t in lp["step_times_s"]]) if fits else None,
            "median_s_per_sample": statistics.median(per_sample) if per_sample else None,
            "planned_steps": sum(lp["planned_steps"] for lp in fits),
            "planned_samples": planned_samples}


def run_smoke(project: Project, chapter: str, profile: str = "paper", overrides: Mapping[str, Any] | None = None, *,
              kernel: str | None = None, timeout: float | None = None, log_output: bool = False,
              log: Callable[[str], None] = print, executor: str | None = None) -> dict[str, Any]:
    """Execute ``chapter`` with ``profile`` in smoke mode; returns (and writes to
    ``results/smoke/<chapter>.json``) the record of measured step times. Raises as
    :func:`compendium.book.runner.run_chapter` does before any compute (parameters, kernel,
    corrupt data: nothing runs), and :class:`ChapterFailed` when a cell raises."""
    from compendium.book.environment import environment_record
    from compendium.book.runner import DEFAULT_KERNEL, Busy, FileLock, check_kernel, device_record, kernel_pythonpath

    kernel = kernel or DEFAULT_KERNEL
    spec = load_spec(project, chapter)
    params = spec.resolve(profile, overrides)
    check_kernel(kernel)
    device = device_record(spec, params)
    out_dir = smoke_dir(project)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(project.locks_dir / f"{chapter}.smoke.lock", f"smoke run of chapter '{chapter}'",
                    info={"command": f"compendium run {chapter} --profile {profile} --smoke"})
    try:
        lock.acquire()
    except Busy as err:
        raise Busy(str(err)) from None
    try:
        data = _data_states(project, spec, log)
        steps_log = out_dir / f"{chapter}.steps.jsonl"
        log_path = out_dir / f"{chapter}.log"
        out_nb = out_dir / f"{chapter}.ipynb"
        steps_log.unlink(missing_ok=True)
        log_path.write_text(f"# compendium run {chapter} --profile {profile} --smoke: started "
                            f"{datetime.now().astimezone().isoformat(timespec='seconds')}\n"
                            f"# parameters: {json.dumps(params, default=str)}\n", encoding="utf-8")
        env = {SMOKE_ENV: "1", SMOKE_LOG_ENV: str(steps_log), RECORD_ENV: str(out_dir / f"{chapter}.report.json"),
               PROFILE_ENV: f"{profile} (smoke)", ROOT_ENV: str(project.root), "PYTHONPATH": kernel_pythonpath(project)}
        log(f"[smoke] {chapter}: profile '{profile}' in SMOKE mode (one epoch of <= 2 steps per training run, "
            f"batch <= 2, two learning-rate trials, a few samples per dataset); nothing is published (log: {log_path})")
        started = time.time()
        _execute(project, chapter, params, out_nb, log_path, env, kernel, timeout, log_output)
        wall = time.time() - started
        loops = [json.loads(line) for line in steps_log.read_text(encoding="utf-8").splitlines()] \
            if steps_log.is_file() else []
        record = {
            "chapter": chapter, "profile": profile, "smoke": True, "parameters": params,
            "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": round(wall, 2), "device": device, "data": data,
            "executor": executor or os.environ.get("COMPENDIUM_EXECUTOR") or "direct (compendium run)",
            "summary": summarise(loops), "loops": loops, "notebook": str(out_nb), "log": str(log_path),
            "environment": environment_record(project.root),
        }
        target = smoke_record_path(project, chapter)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, target)
        from compendium.book.cost import write_cost_page

        write_cost_page(project)  # the book's cost table reads the smoke records
        s = record["summary"]
        med = s["median_step_s"]
        log(f"[smoke] {chapter}: finished in {wall:.1f} s; {s['fit_runs']} training run(s), {s['steps_measured']} "
            f"step(s) measured" + (f", median step {med * 1000:.0f} ms at batch <= 2" if med is not None else "")
            + f"; wrote {target} and {out_nb} (not published)")
        for lp in loops:
            if lp.get("step_times_s"):
                log(f"    {lp['desc']}: " + ", ".join(f"{t * 1000:.0f} ms" for t in lp["step_times_s"])
                    + f" (batch {lp['batch']}; paper: batch {lp['paper_batch']}, {lp['epochs']} epoch(s), "
                      f"{lp['planned_steps']:,} steps)")
        return record
    finally:
        lock.release()


def run_worker(project: Project, chapter: str, profile: str, overrides: Mapping[str, Any] | None = None, *,
               kernel: str | None = None, rank: int = 1, smoke: bool = False) -> Path:
    """What ranks other than 0 of a ``torchrun`` job do: execute the same notebook (their
    ``fit`` calls join rank 0's process group) into ``_build/ranks/<chapter>.rank<r>.ipynb``,
    without a record, a lock or publication; rank 0 publishes."""
    from compendium.book.runner import DEFAULT_KERNEL, kernel_pythonpath

    spec = load_spec(project, chapter)
    params = spec.resolve(profile, overrides)
    out_dir = project.build_dir / "ranks"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = out_dir / f"{chapter}.rank{rank}.ipynb"
    env = {ROOT_ENV: str(project.root), "PYTHONPATH": kernel_pythonpath(project), PROFILE_ENV: profile,
           RECORD_ENV: str(out_dir / f"{chapter}.rank{rank}.json")}
    if smoke:
        env[SMOKE_ENV] = "1"
    _execute(project, chapter, params, out_nb, out_dir / f"{chapter}.rank{rank}.log", env,
             kernel or DEFAULT_KERNEL, None, False)
    return out_nb
