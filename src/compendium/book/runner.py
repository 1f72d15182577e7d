"""Run one chapter (validate → execute with papermill → record atomically), and decide
which chapters a build must re-run.

Outputs are written under temporary names and moved into place only when the whole
notebook succeeded; a failed run reports the failing cell, leaves the previous good
outputs untouched, and keeps the failed notebook in ``_build/failed/`` for inspection.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from compendium.book.environment import environment_record
from compendium.book.report import PROFILE_ENV, RECORD_ENV
from compendium.chapters import available_chapters, last_record, load_spec
from compendium.params import ChapterSpec
from compendium.project import ROOT_ENV, Project


class ChapterFailed(RuntimeError):
    """The chapter's notebook raised; the message names the failing cell."""


def _sha256_files(paths: list[Path], base: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(base)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def package_fingerprint(project: Project) -> str:
    pkg = project.package_dir
    files = [p for p in pkg.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts]
    return _sha256_files(files, pkg)


def inputs_fingerprint(project: Project, spec: ChapterSpec, profile: str, params: Mapping[str, Any],
                       registry=None) -> str:
    """A hash of everything a chapter's outputs depend on: its notebook, spec and claims,
    the package source, the resolved parameters and the data files' recorded checksums."""
    from compendium.datasets import Registry

    reg = registry or Registry.default(project.root, log=lambda _m: None)
    parts = {
        "notebook": _sha256_files([project.notebook(spec.id)], project.root),
        "spec": _sha256_files([project.chapter_spec(spec.id)], project.root),
        "claims": _sha256_files([project.claims_file(spec.id)], project.root),
        "package": package_fingerprint(project),
        "profile": profile,
        "parameters": dict(params),
        "data": reg.fingerprint(spec.datasets),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class RunOutcome:
    chapter: str
    record: dict[str, Any]
    notebook: Path
    record_path: Path


def run_chapter(project: Project, chapter: str, profile: str = "default",
                overrides: Mapping[str, Any] | None = None, *, log: Callable[[str], None] = print) -> RunOutcome:
    """Validate, execute ``notebooks/<chapter>.ipynb`` and write its outputs atomically.

    Raises :class:`compendium.params.ParameterError` (before any compute) on bad
    parameters and :class:`ChapterFailed` when the notebook raises."""
    import papermill as pm

    spec = load_spec(project, chapter)
    params = spec.resolve(profile, overrides)  # validation before anything else
    fingerprint = inputs_fingerprint(project, spec, profile, params)

    for d in (project.executed_dir, project.results_dir, project.build_dir / "failed"):
        d.mkdir(parents=True, exist_ok=True)
    final_nb, final_rec = project.executed(chapter), project.record(chapter)
    tmp_nb = final_nb.with_name(f".{chapter}.{os.getpid()}.partial.ipynb")
    tmp_rec = final_rec.with_name(f".{chapter}.{os.getpid()}.partial.json")
    tmp_rec.unlink(missing_ok=True)

    env_before = {k: os.environ.get(k) for k in (RECORD_ENV, PROFILE_ENV, ROOT_ENV)}
    os.environ[RECORD_ENV] = str(tmp_rec)
    os.environ[PROFILE_ENV] = profile
    os.environ[ROOT_ENV] = str(project.root)
    started = time.time()
    log(f"[run] {chapter}: profile '{profile}', {len(params)} parameters; executing {project.notebook(chapter).relative_to(project.root)}")
    try:
        pm.execute_notebook(str(project.notebook(chapter)), str(tmp_nb), parameters=params, kernel_name="python3",
                            cwd=str(project.notebooks_dir), progress_bar=False, log_output=False)
    except Exception as err:  # papermill's own error carries the cell; anything else (kernel death) too
        _mark_failed(project, chapter, profile, params, err)
        failed = project.build_dir / "failed" / f"{chapter}.ipynb"
        if tmp_nb.exists():
            os.replace(tmp_nb, failed)
        tmp_rec.unlink(missing_ok=True)
        where = ""
        if getattr(err, "cell_index", None) is not None:
            where = f" in cell {err.cell_index} (execution count {getattr(err, 'exec_count', '?')})"
        detail = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
        raise ChapterFailed(f"chapter '{chapter}' failed{where}: {detail}\n"
                            f"The failed notebook is kept at {failed}; previous outputs are untouched.") from err
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    if not tmp_rec.is_file():
        tmp_nb.unlink(missing_ok=True)
        raise ChapterFailed(f"chapter '{chapter}' ran but wrote no record: its last cell must call report.save()")
    record = json.loads(tmp_rec.read_text(encoding="utf-8"))
    finished = time.time()
    record.update({
        "profile": profile,
        "parameters": params,
        "inputs_hash": fingerprint,
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(finished - started, 2),
        "environment": environment_record(project.root),
    })
    tmp_rec.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(tmp_nb, final_nb)
    os.replace(tmp_rec, final_rec)
    failure_marker(project, chapter).unlink(missing_ok=True)
    log(f"[run] {chapter}: done in {finished - started:.1f} s → {final_nb.relative_to(project.output_root)}, "
        f"{final_rec.relative_to(project.output_root)}")
    return RunOutcome(chapter, record, final_nb, final_rec)


def failure_marker(project: Project, chapter: str) -> Path:
    """``results/<chapter>.failed.json``: present while the chapter's latest run failed."""
    return project.results_dir / f"{chapter}.failed.json"


def _mark_failed(project: Project, chapter: str, profile: str, params: Mapping[str, Any], err: BaseException) -> None:
    detail = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
    marker = {"chapter": chapter, "profile": profile, "parameters": dict(params), "error": detail.splitlines()[0][:500],
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    failure_marker(project, chapter).write_text(json.dumps(marker, indent=2, default=str), encoding="utf-8")


def stale_reasons(project: Project, chapter: str) -> list[str]:
    """Why the published outputs of a chapter may not match its current sources (empty: current).

    A record is stale when its inputs (notebook, claims, package, parameters, data) differ
    from the current sources, when a later run of the chapter failed, or when it ran from
    uncommitted code."""
    rec = last_record(project, chapter)
    if rec is None:
        return ["never run"]
    reasons = []
    marker = failure_marker(project, chapter)
    if marker.is_file():
        try:
            m = json.loads(marker.read_text(encoding="utf-8"))
            reasons.append(f"its latest run failed ({m.get('at')}, profile {m.get('profile')}: {m.get('error')}); "
                           "these are the outputs of the run before")
        except json.JSONDecodeError:
            reasons.append("its latest run failed; these are the outputs of the run before")
    try:
        spec = load_spec(project, chapter)
        now = inputs_fingerprint(project, spec, rec.get("profile", ""), rec.get("parameters") or {})
        if now != rec.get("inputs_hash"):
            reasons.append("its sources (notebook, claims, package, parameters or data) changed since this record")
    except (KeyError, OSError, ValueError) as err:
        reasons.append(f"its sources cannot be checked ({err})")
    if ((rec.get("environment") or {}).get("git") or {}).get("dirty"):
        reasons.append("it ran from uncommitted code")
    return reasons


def is_stale(project: Project, chapter: str, profile: str) -> bool:
    """True unless the last record was made with this profile from the same inputs."""
    rec = last_record(project, chapter)
    if rec is None or not project.executed(chapter).is_file() or rec.get("profile") != profile:
        return True
    spec = load_spec(project, chapter)
    return rec.get("inputs_hash") != inputs_fingerprint(project, spec, profile, spec.resolve(profile))


def run_stale(project: Project, profile: str, jobs: int = 1, force: bool = False,
              chapters: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run, in separate processes (up to ``jobs`` at once), every chapter whose inputs changed.

    Returns ``{chapter: "fresh" | "ran" | "failed: ..."}``."""
    names = chapters or available_chapters(project)
    todo = [c for c in names if force or is_stale(project, c, profile)]
    status = {c: "fresh" for c in names if c not in todo}
    for c in status:
        log(f"[build] {c}: up to date")
    if not todo:
        return status
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))

    def one(chapter: str) -> tuple[str, str]:
        cmd = [sys.executable, "-m", "compendium", "--root", str(project.root), "--output-root",
               str(project.output_root), "run", chapter, "--profile", profile]
        env = {**os.environ}
        if jobs > 1:  # share the cores instead of oversubscribing them
            env.setdefault("OMP_NUM_THREADS", str(threads))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            last = (proc.stderr.strip().splitlines() or ["unknown error"])
            return chapter, "failed: " + " ".join(last[-3:])
        return chapter, "ran"

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for chapter, st in pool.map(one, todo):
            status[chapter] = st
    return status
