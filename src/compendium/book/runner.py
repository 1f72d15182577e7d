"""Run one chapter (checks → execute with papermill → publish atomically), and decide which
chapters a build must re-run.

One run of ``compendium run <chapter>``:

1. **Checks before any compute** (a problem exits with status 2 and nothing runs): the
   parameters against ``notebooks/<chapter>.yaml``; every dataset the chapter declares
   there, resolved and checksummed (:func:`check_data`; a missing or corrupt file is named
   with its expected checksum, what was found and where to put it); the ``device`` parameter
   (``cuda`` on a machine without one); the kernel (``--kernel``).
2. **One run per chapter at a time.** The run holds ``_build/locks/<chapter>.run.lock``
   (an ``flock``) from the checks to the end; a second run of the same chapter refuses at once
   (status 3), naming the process that holds it.
3. **Execution** in a fresh staging folder ``_build/runs/<chapter>.<pid>.<token>/``: the kernel
   starts in ``notebooks/`` with an absolute ``PYTHONPATH`` whose first entry is the folder
   holding the ``compendium`` package this process imported, so that the kernel imports the
   same package whatever the working directory or a relative ``PYTHONPATH``. Its output
   streams to ``results/<chapter>.log`` (and the terminal with ``log_output``). A per-chapter
   ``timeout`` bounds the whole notebook.
4. **Publication**, only when the whole notebook succeeded: under the chapter's publish lock
   (``_build/locks/<chapter>.publish.lock``, exclusive) and with SIGINT/SIGTERM deferred, the
   staged notebook and record are renamed over ``book/chapters/<chapter>.ipynb`` and
   ``results/<chapter>.json``. Readers of the pair (the book's staging) take the same lock,
   shared, so they never see one run's notebook with another's record; the record also
   carries the notebook's sha256, so a pair split by a hard crash (SIGKILL, power loss)
   between the two renames is detected and shown as stale.

A failure (a cell raised, the timeout, a dead kernel) names the cell, the exception and the
log, marks the chapter failed (``results/<chapter>.failed.json``), keeps the failed notebook
in ``_build/failed/`` and leaves the previous outputs untouched. An interrupt (SIGINT, or
SIGTERM under the CLI) shuts the kernel down, removes the staging folder and leaves the
previous outputs as they were: nothing partial is left in ``book/chapters/`` or ``results/``.

Build decisions: a chapter's inputs hash covers its notebook, spec, claims, parameters,
data checksums and *the package modules it imports* (:func:`chapter_modules`: the import
graph from the notebook's import statements, followed through the package's own imports,
plus the package data files those modules name), so a change in ``stats/`` re-runs only
the chapters that import it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import yaml

from compendium.book.environment import environment_record
from compendium.book.report import PROFILE_ENV, RECORD_ENV
from compendium.chapters import available_chapters, last_record, load_spec
from compendium.params import ChapterSpec
from compendium.project import ROOT_ENV, Project

DEFAULT_KERNEL = "python3"  # the native kernel: the interpreter that runs compendium itself

# Exit statuses of `compendium run` / `build` / `clean` (the README's troubleshooting table).
EXIT_FAILED = 1       # the chapter ran and failed: a cell raised, the timeout, a dead kernel
EXIT_NOT_READY = 2    # refused before any compute: parameters, data, device, kernel, unknown chapter
EXIT_BUSY = 3         # another run of the chapter (or another build) holds its lock
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


class ChapterFailed(RuntimeError):
    """The chapter's notebook raised, timed out or lost its kernel; the message names the
    failing cell, the exception and the log."""

    def __init__(self, message: str, *, cell: int | None = None, log: Path | None = None, timed_out: bool = False):
        super().__init__(message)
        self.cell, self.log, self.timed_out = cell, log, timed_out


class NotReady(RuntimeError):
    """A check before any compute failed (data, device, kernel); nothing ran."""


class Busy(RuntimeError):
    """Another process holds a lock this command needs; the message names it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs (see :func:`sigterm_raises`)."""

    signum = signal.SIGTERM


# --- locks ---------------------------------------------------------------------------------

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

_held: dict[tuple[str, int], list] = {}  # (path, thread) -> [fd, count, shared]: re-entrant per thread
_held_guard = threading.Lock()


class FileLock:
    """An advisory ``flock`` on ``path``, re-entrant within one thread (another thread of the
    same process, like another process, finds it held).

    ``blocking=False`` raises :class:`Busy` at once when another process holds it; the
    holder's description (pid, host, command, since) is written into the file by exclusive
    holders and quoted in the message. A lock file removed while waiting (``compendium clean``)
    is detected (inode check) and the new file locked instead."""

    def __init__(self, path: Path, what: str, *, shared: bool = False, blocking: bool = False,
                 info: Mapping[str, Any] | None = None):
        self.path, self.what, self.shared, self.blocking = Path(path), what, shared, blocking
        self.info = dict(info or {})
        self._key = (str(self.path), threading.get_ident())

    def holder(self) -> str:
        try:
            d = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            d = {}
        if not d:
            return "another process"
        parts = [f"pid {d.get('pid')}" + (f" on {d['host']}" if d.get("host") else "")]
        if d.get("since"):
            parts.append(f"since {d['since']}")
        if d.get("command"):
            parts.append(f"`{d['command']}`")
        return ", ".join(parts)

    def acquire(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = (str(self.path.resolve()), threading.get_ident())
        with _held_guard:
            if self._key in _held:
                _held[self._key][1] += 1
                return self
        if fcntl is None:  # pragma: no cover
            with _held_guard:
                _held[self._key] = [None, 1, self.shared]
            return self
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, mode | (0 if self.blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                raise Busy(f"{self.what} is busy: held by {self.holder()} (lock: {self.path})") from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # removed while we waited: lock the file that is there now
        if not self.shared:
            text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                               "since": datetime.now().astimezone().isoformat(timespec="seconds"), **self.info})
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
        with _held_guard:
            _held[self._key] = [fd, 1, self.shared]
        return self

    def release(self) -> None:
        with _held_guard:
            entry = _held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[self._key]
        fd = entry[0]
        if fd is not None:
            if not entry[2]:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def build_lock(project: Project) -> FileLock:
    """The lock every build (and ``render_book``) holds: one build of an output root at a time."""
    return FileLock(project.build_lock, "the book build", info={"command": "compendium build"})


def read_lock(project: Project, chapter: str) -> FileLock:
    """Shared lock for reading a chapter's published notebook and record as one pair."""
    return FileLock(project.publish_lock(chapter), f"chapter '{chapter}' (publishing)", shared=True, blocking=True)


# --- signals -------------------------------------------------------------------------------

@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the duration (publishing, cleaning up), then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.signal(s, lambda signum, _frame: pending.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            s = pending[0]
            handler = old[s]
            if callable(handler):
                handler(s, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), s)


def _raise_terminated(_signum: int, _frame: Any) -> None:
    raise Terminated()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so that a
    killed run cleans up exactly as an interrupted one (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# --- what a chapter depends on ---------------------------------------------------------------

def _sha256_files(paths: list[Path], base: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(base)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


# the spec's ordering hint (build_cost_s, see build_order) is not an input of the chapter's
# outputs: re-measuring it must not make a record stale
_BUILD_COST_LINE = re.compile(rb"^build_cost_s[ \t]*:.*(?:\r?\n|$)", re.MULTILINE)


def _spec_digest(path: Path) -> str:
    """The SHA-256 of a chapter spec without its ``build_cost_s`` line."""
    return hashlib.sha256(_BUILD_COST_LINE.sub(b"", path.read_bytes())).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_fingerprint(project: Project) -> str:
    """A hash of the whole package (every module and data file)."""
    pkg = project.package_dir
    files = [p for p in pkg.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts]
    return _sha256_files(files, pkg)


_MAGIC = re.compile(r"^\s*[%!]")
_IMPORT_LINE = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s+(.+)|import\s+(.+))$")
_parsed: dict[tuple[str, int, int], tuple[set[tuple[int, str, tuple[str, ...]]], set[str]]] = {}


def _imports_of_source(source: str, filename: str) -> tuple[set[tuple[int, str, tuple[str, ...]]], set[str]]:
    """``({(level, module, names)}, {string constants})`` of Python source (IPython magics and
    shell lines dropped; a cell that still does not parse is read line by line)."""
    imports: set[tuple[int, str, tuple[str, ...]]] = set()
    strings: set[str] = set()
    text = "\n".join("" if _MAGIC.match(line) else line for line in source.splitlines())
    try:
        tree = ast.parse(text, filename)
    except SyntaxError:
        for line in text.splitlines():
            m = _IMPORT_LINE.match(line)
            if m and m.group(1):
                imports.add((0, m.group(1), tuple(n.strip().split(" as ")[0] for n in m.group(2).strip("() ").split(","))))
            elif m:
                for n in m.group(3).split(","):
                    imports.add((0, n.strip().split(" as ")[0], ()))
        return imports, strings
    for node in ast.walk(tree):  # every import, module-level or inside a function (lazy imports too)
        if isinstance(node, ast.Import):
            for a in node.names:
                imports.add((0, a.name, ()))
        elif isinstance(node, ast.ImportFrom):
            imports.add((node.level, node.module or "", tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 200:
            strings.add(node.value)
    return imports, strings


def _parse_cached(path: Path, source: Callable[[], str]) -> tuple[set[tuple[int, str, tuple[str, ...]]], set[str]]:
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _parsed:
        _parsed[key] = _imports_of_source(source(), str(path))
    return _parsed[key]


def _notebook_source(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    return "\n".join("".join(c["source"]) if isinstance(c.get("source"), list) else str(c.get("source", ""))
                     for c in cells)


def chapter_modules(project: Project, chapter: str) -> list[Path]:
    """The package files ``chapter`` depends on: the ``compendium`` modules its notebook
    imports, every module those import in turn (absolute and relative imports, at module
    level or inside functions), the ``__init__.py`` of every package on the way, and the
    package data files (``*.yaml`` …) those modules name. Sorted, absolute paths."""
    pkg = project.package_dir
    name = pkg.name  # "compendium"

    def module_file(dotted: str) -> Path | None:
        parts = dotted.split(".")
        if parts[0] != name:
            return None
        base = pkg.joinpath(*parts[1:])
        for cand in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
            if cand is not None and cand.is_file():
                return cand
        return None

    def dotted_of(path: Path) -> tuple[str, bool]:
        rel = path.relative_to(pkg).with_suffix("")
        parts = [name, *rel.parts]
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        return ".".join(parts), is_pkg

    def targets(imports: set[tuple[int, str, tuple[str, ...]]], here: str | None, here_is_pkg: bool) -> list[str]:
        out = []
        for level, module, names in imports:
            if level:
                if here is None:
                    continue
                base = here.split(".") if here_is_pkg else here.split(".")[:-1]
                base = base[: len(base) - (level - 1)] if level > 1 else base
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] != name:
                continue
            out.append(module)
            out += [f"{module}.{n}" for n in names if n != "*"]  # `from pkg import submodule`
        return out

    data_files = [p for p in pkg.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
                  and "__pycache__" not in p.parts]
    seen: set[Path] = set()
    todo: list[str] = targets(_parse_cached(project.notebook(chapter), lambda: _notebook_source(project.notebook(chapter)))[0],
                              None, False)
    strings: set[str] = set()
    while todo:
        dotted = todo.pop()
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
            f = module_file(".".join(parts[:i]))
            if f is None or f in seen:
                continue
            seen.add(f)
            imports, consts = _parse_cached(f, lambda f=f: f.read_text(encoding="utf-8"))
            strings |= consts
            here, is_pkg = dotted_of(f)
            todo += targets(imports, here, is_pkg)
    for p in data_files:
        if any(s == p.name or s.endswith("/" + p.name) for s in strings):
            seen.add(p)
    return sorted(seen)


def inputs_fingerprint(project: Project, spec: ChapterSpec, profile: str, params: Mapping[str, Any],
                       registry=None) -> str:
    """A hash of everything a chapter's outputs depend on: its notebook, spec and claims, the
    package modules it imports (:func:`chapter_modules`), the resolved parameters and the
    data files' recorded checksums."""
    from compendium.datasets import Registry

    reg = registry or Registry.default(project.root, log=lambda _m: None)
    pkg = project.package_dir
    parts = {
        "notebook": _sha256_files([project.notebook(spec.id)], project.root),
        "spec": _spec_digest(project.chapter_spec(spec.id)),
        "claims": _sha256_files([project.claims_file(spec.id)], project.root),
        "package": {str(p.relative_to(pkg)): _sha256(p) for p in chapter_modules(project, spec.id)},
        "profile": profile,
        "parameters": dict(params),
        "data": reg.fingerprint(spec.datasets),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# --- checks before the kernel starts -----------------------------------------------------------

# Files a loader can do without, and the (parameter, value) under which they are needed: with
# split 'auto' or 'resplit', load_mnist falls back to the declared re-split of the 10k test images.
FALLBACK_FILES: dict[str, tuple[frozenset[str], tuple[str, str]]] = {
    "mnist": (frozenset({"mnist/raw/train-images-idx3-ubyte.gz", "mnist/raw/train-labels-idx1-ubyte.gz"}),
              ("data_split", "full")),
}
AUTO = "auto"


def _names(value: Any) -> set[str]:
    return {v.strip() for v in value.split(",") if v.strip()} if isinstance(value, str) else set()


@dataclass
class DataNeed:
    """What one run needs of the declared datasets: ``required`` datasets must resolve, one of
    each ``one_of`` group must (a parameter set to ``auto``), ``optional`` ones are only
    checked for corrupt copies."""

    required: list[str] = field(default_factory=list)
    one_of: list[list[str]] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)


def data_needs(spec: ChapterSpec, params: Mapping[str, Any]) -> DataNeed:
    """Which of the chapter's declared datasets this run needs.

    A parameter whose choices, profile values or current value name declared datasets (e.g.
    ``dataset: cifar10``, ``datasets: "cora,citeseer"``) *selects* among them: the datasets it
    names now are required, ``auto`` requires one of them, the others are optional. Declared
    datasets no parameter selects are required."""
    declared = list(dict.fromkeys(spec.datasets))
    selectable: set[str] = set()
    chosen: set[str] = set()
    groups: list[list[str]] = []
    for pname, ps in spec.parameters.items():
        options = set(_names(params.get(pname)))
        for prof in spec.profiles.values():
            options |= _names(prof.get(pname))
        options |= {c for c in (ps.choices or ()) if isinstance(c, str)}
        these = [d for d in declared if d in options]
        if not these:
            continue
        selectable |= set(these)
        now = _names(params.get(pname))
        chosen |= now & set(declared)
        if AUTO in now:
            groups.append(these)
    required = [d for d in declared if d in chosen or d not in selectable]
    in_group = {d for g in groups for d in g}
    return DataNeed(required, groups, [d for d in declared if d not in required and d not in in_group])


def check_data(project: Project, spec: ChapterSpec, params: Mapping[str, Any], registry=None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Resolve and verify the chapter's declared datasets before the kernel starts.

    Raises :class:`NotReady` naming every required file that is missing, and every file of any
    declared dataset that is present but corrupt (its checksum does not match: the loaders
    would refuse it, or silently fall back to a stand-in), each with its expected checksum,
    what was found and where to put it. Downloads (when online) happen here, not minutes into
    the notebook. Returns ``{dataset: state}`` for the record."""
    from compendium.datasets import Registry

    reg = registry or Registry.default(project.root, log=lambda _m: None)
    need = data_needs(spec, params)
    problems: list[str] = []
    warnings: list[str] = []
    states: dict[str, str] = {}

    def wanted(ds) -> list:
        skip, (pname, value) = FALLBACK_FILES.get(ds.name, (frozenset(), ("", "")))
        return [f for f in ds.files if f.path not in skip or params.get(pname) == value]

    def complete(name: str, download: bool) -> tuple[bool, list]:
        """Whether every wanted file of ``name`` resolves; the diagnoses of those that do not."""
        ds = reg.dataset(name)
        bad = []
        for f in wanted(ds):
            d = reg.diagnose(f)
            if d.state == "missing" and download and reg.download(f) is not None:
                continue
            if d.state != "ok":
                bad.append(d)
        return not bad, bad

    for name in dict.fromkeys(spec.datasets):
        ds = reg.dataset(name)  # KeyError for an unknown name: the spec is wrong
        corrupt = [d for d in map(reg.diagnose, ds.files) if d.state == "corrupt"]
        if corrupt:
            problems.append(f"dataset '{name}' ({ds.title}): {len(corrupt)} corrupt file(s):")
            problems += [line for d in corrupt for line in d.lines()]
            states[name] = "corrupt"

    for name in need.required:
        if states.get(name) == "corrupt":
            continue
        ok, bad = complete(name, download=True)
        blocking = [d for d in bad if d.state != "unverifiable"]
        for d in bad:
            if d.state == "unverifiable":
                warnings.append(f"{name}: {d.file.path} has no recorded checksum, so no copy can be verified; "
                                "the chapter must do without it")
        if blocking:
            ds = reg.dataset(name)
            problems.append(f"dataset '{name}' ({ds.title}): {len(blocking)} required file(s) missing:")
            problems += [line for d in blocking for line in d.lines()]
        states[name] = "ok" if ok else ("incomplete" if not blocking else "missing")

    for group in need.one_of:
        if any(states.get(g) == "ok" for g in group):
            continue
        satisfied = None
        for download in (False, True):
            for g in group:
                if states.get(g) != "corrupt" and complete(g, download)[0]:
                    satisfied = g
                    break
            if satisfied or reg.offline:
                break
        if satisfied:
            states[satisfied] = "ok"
        else:
            problems.append(f"none of {', '.join(group)} resolves (a parameter is 'auto': one of them is needed):")
            for g in group:
                problems += [line for d in complete(g, False)[1] for line in d.lines()]

    for name in need.optional:
        states.setdefault(name, "ok" if complete(name, False)[0] else "absent (optional for these parameters)")

    for w in warnings:
        log(f"[run] {spec.id}: warning: {w}")
    if problems:
        where = (f"Put verified copies under {reg.cache_dir}/ (same relative paths)"
                 + (f" or in the mirror {reg.mirror_dir}/" if reg.mirror_dir else ", or set $COMPENDIUM_DATA_MIRROR")
                 + "; `compendium data verify <dataset>` checks them.")
        raise NotReady(f"chapter '{spec.id}': its data are not ready, so nothing was run:\n"
                       + "\n".join(problems) + "\n" + where)
    return states


def device_record(spec: ChapterSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Which device the chapter runs on, from its ``device`` parameter when it has one (checked
    here: ``cuda`` on a machine without one is refused before the kernel starts)."""
    if "device" not in spec.parameters or params.get("device") is None:
        return {"requested": None, "used": "cpu",
                "note": "the chapter has no 'device' parameter; it runs on the CPU"}
    requested = str(params["device"])
    if spec.compute == "cpu":
        if requested == "cuda":
            raise NotReady(f"chapter '{spec.id}' computes on the CPU only (numpy/statsmodels, no accelerator "
                           "path); use -p device cpu (or auto)")
        return {"requested": requested, "used": "cpu", "note": "the chapter computes on the CPU only"}
    from compendium.learning.train import resolve_device

    try:
        dev = resolve_device(requested)
    except (RuntimeError, ValueError) as err:
        raise NotReady(f"chapter '{spec.id}': {err}") from None
    out: dict[str, Any] = {"requested": requested, "used": str(dev)}
    if dev.type == "cuda":
        import torch

        out["name"] = torch.cuda.get_device_name(dev)
    return out


def check_kernel(name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        ksm.get_kernel_spec(name)
    except NoSuchKernel:
        known = ", ".join(sorted(ksm.find_kernel_specs())) or "none"
        raise NotReady(f"no Jupyter kernel named '{name}' (installed: {known}); "
                       "`jupyter kernelspec list` shows them") from None


def kernel_pythonpath(project: Project) -> str:
    """The kernel's ``PYTHONPATH``: the folder holding the package this process uses first,
    then this process's own ``PYTHONPATH`` entries made absolute (the kernel starts in
    ``notebooks/``, where a relative entry would point elsewhere)."""
    entries = [str(project.package_dir.parent)]
    entries += [os.path.abspath(e) for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    return os.pathsep.join(dict.fromkeys(entries))


# --- the log ---------------------------------------------------------------------------------

class _LogHandler(logging.Handler):
    """Papermill's log (cell markers, the kernel's stdout and stderr) into the chapter's log
    file, and to the terminal when asked; each write flushed (``tail -f`` works)."""

    def __init__(self, fh, echo):
        super().__init__(logging.INFO)
        self.fh, self.echo = fh, echo
        self.cell: int | None = None  # the cell executing now (0-based), from papermill's markers

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            m = _CELL_MARK.match(msg)
            if m:
                self.cell = int(m.group(1)) - 1
            if not msg.endswith("\n"):
                msg += "\n"
            self.fh.write(msg)
            self.fh.flush()
            if self.echo is not None:
                self.echo.write(msg)
                self.echo.flush()
        except Exception:  # logging must never break a run
            self.handleError(record)


_CELL_MARK = re.compile(r"Executing Cell (\d+)")


@contextmanager
def _streamed_log(path: Path, echo) -> Iterator[_LogHandler]:
    logger = logging.getLogger("papermill")
    with open(path, "a", encoding="utf-8") as fh:
        handler = _LogHandler(fh, echo)
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


def _kernel_manager_class(stdio):
    """A kernel manager whose kernel process writes its own stdout/stderr (start-up warnings,
    crashes at shutdown) into the chapter's log instead of the terminal."""
    from jupyter_client import AsyncKernelManager

    class RunKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:
            kw.setdefault("stdout", stdio)
            kw.setdefault("stderr", stdio)
            await super().start_kernel(**kw)

    return RunKernelManager


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --- running one chapter -----------------------------------------------------------------------

@dataclass
class RunOutcome:
    chapter: str
    record: dict[str, Any]
    notebook: Path
    record_path: Path


def failure_marker(project: Project, chapter: str) -> Path:
    """``results/<chapter>.failed.json``: present while the chapter's latest run failed."""
    return project.failure_marker(chapter)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _mark_failed(project: Project, chapter: str, profile: str, params: Mapping[str, Any], detail: str) -> None:
    marker = {"chapter": chapter, "profile": profile, "parameters": dict(params), "error": detail.splitlines()[0][:500],
              "log": str(project.log(chapter)), "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_atomic(failure_marker(project, chapter), json.dumps(marker, indent=2, default=str))


def _sweep_leftovers(project: Project, chapter: str) -> None:
    """Remove what earlier runs of ``chapter`` that died hard (SIGKILL) left behind: their
    staging folders and the old-style ``.<chapter>.<pid>.partial.*`` files. Called with the
    chapter's run lock held, so none of them belongs to a live run."""
    if project.staging_dir.is_dir():
        for d in project.staging_dir.glob(f"{chapter}.*"):
            shutil.rmtree(d, ignore_errors=True)
    for folder in (project.executed_dir, project.results_dir):
        if folder.is_dir():
            for p in folder.glob(f".{chapter}.*"):
                if ".partial." in p.name or p.name.endswith(".tmp"):
                    p.unlink(missing_ok=True)


def _move_into_place(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError:  # another file system: copy beside the target, then rename
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        src.unlink(missing_ok=True)


def run_chapter(project: Project, chapter: str, profile: str = "default",
                overrides: Mapping[str, Any] | None = None, *, log: Callable[[str], None] = print,
                kernel: str | None = None, timeout: float | None = None, log_output: bool = False,
                registry=None) -> RunOutcome:
    """Check, execute ``notebooks/<chapter>.ipynb`` and publish its outputs atomically.

    Raises, before any compute, :class:`compendium.params.ParameterError` (parameters),
    :class:`NotReady` (data, device, kernel) or :class:`Busy` (another run of the chapter);
    :class:`ChapterFailed` when the notebook raises or exceeds ``timeout`` seconds; and
    ``KeyboardInterrupt`` (:class:`Terminated` for SIGTERM under :func:`sigterm_raises`) when
    interrupted, after cleaning up. In every failure the previous outputs are untouched."""
    import papermill as pm

    kernel = kernel or DEFAULT_KERNEL
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    spec = load_spec(project, chapter)
    params = spec.resolve(profile, overrides)  # validation before anything else
    check_kernel(kernel)
    device = device_record(spec, params)

    lock = FileLock(project.run_lock(chapter), f"chapter '{chapter}'",
                    info={"command": f"compendium run {chapter} --profile {profile}", "profile": profile})
    try:
        lock.acquire()
    except Busy as err:
        raise Busy(f"chapter '{chapter}' is already being run ({str(err).split('held by ', 1)[-1]}); "
                   "wait for that run to finish or stop it, then try again") from None
    stage: Path | None = None
    try:
        _sweep_leftovers(project, chapter)
        data_states = check_data(project, spec, params, registry, log=log)
        fingerprint = inputs_fingerprint(project, spec, profile, params, registry)
        modules = [str(p.relative_to(project.package_dir)) for p in chapter_modules(project, chapter)]

        for d in (project.executed_dir, project.results_dir, project.staging_dir):
            d.mkdir(parents=True, exist_ok=True)
        stage = project.staging_dir / f"{chapter}.{os.getpid()}.{secrets.token_hex(4)}"
        stage.mkdir()
        staged_nb, staged_rec = stage / f"{chapter}.ipynb", stage / f"{chapter}.json"
        log_path = project.log(chapter)
        log_path.write_text(
            f"# compendium run {chapter} --profile {profile}: started "
            f"{datetime.now().astimezone().isoformat(timespec='seconds')} (pid {os.getpid()}, kernel {kernel}"
            + (f", timeout {timeout:g} s" if timeout else "") + ")\n"
            f"# parameters: {json.dumps(params, default=str)}\n# device: {device.get('used')}\n", encoding="utf-8")
        return _execute_and_publish(project, chapter, profile, params, log, kernel, timeout, log_output,
                                    device, data_states, fingerprint, modules, stage, staged_nb, staged_rec, pm)
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        lock.release()


def set_environ(env: Mapping[str, str]) -> dict[str, str | None]:
    """Set ``env`` in this process's environment (the kernel inherits it); returns what those
    variables were before, for :func:`restore_environ`."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return before


def restore_environ(before: Mapping[str, str | None]) -> None:
    """Undo :func:`set_environ`: variables that were unset are removed again."""
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _execute_and_publish(project, chapter, profile, params, log, kernel, timeout, log_output, device, data_states,
                         fingerprint, modules, stage, staged_nb, staged_rec, pm) -> RunOutcome:
    log_path = project.log(chapter)
    rel_log = _rel(project, log_path)
    env = {RECORD_ENV: str(staged_rec), PROFILE_ENV: profile, ROOT_ENV: str(project.root),
           "PYTHONPATH": kernel_pythonpath(project)}
    env_before = set_environ(env)
    started = time.time()
    deadline = time.monotonic() + timeout if timeout else None
    engine_kwargs: dict[str, Any] = {}
    if deadline is not None:  # one budget for the whole notebook: each cell gets what is left
        engine_kwargs["timeout_func"] = lambda _cell: max(0.01, deadline - time.monotonic())
    log(f"[run] {chapter}: profile '{profile}', {len(params)} parameters, kernel {kernel}, device {device['used']}"
        + (f", timeout {timeout:g} s" if timeout else "")
        + f"; executing {project.notebook(chapter).relative_to(project.root)} (log: {rel_log})")
    try:
        with _streamed_log(log_path, sys.stdout if log_output else None) as handler, \
                open(log_path, "ab", buffering=0) as kernel_stdio:
            fh = handler.fh
            try:
                pm.execute_notebook(str(project.notebook(chapter)), str(staged_nb), parameters=params,
                                    kernel_name=kernel, cwd=str(project.notebooks_dir), progress_bar=False,
                                    log_output=True, kernel_manager_class=_kernel_manager_class(kernel_stdio),
                                    **engine_kwargs)
            except KeyboardInterrupt:
                with signals_deferred():
                    fh.write(f"\n# INTERRUPTED ({'SIGTERM' if isinstance(sys.exc_info()[1], Terminated) else 'SIGINT'})"
                             " after {:.1f} s: nothing published; previous outputs kept\n".format(time.time() - started))
                log(f"[run] {chapter}: interrupted; nothing was published, the previous outputs are untouched")
                raise
            except Exception as err:  # papermill's error carries the cell; a timeout or a dead kernel too
                with signals_deferred():
                    raise _failure(project, chapter, profile, params, err, staged_nb, fh, timeout, handler.cell) from err
    finally:
        restore_environ(env_before)

    if not staged_rec.is_file():
        _mark_failed(project, chapter, profile, params, "the notebook wrote no record (no report.save())")
        raise ChapterFailed(f"chapter '{chapter}' ran but wrote no record: its last cell must call report.save() "
                            f"(log: {rel_log})", log=log_path)
    record = json.loads(staged_rec.read_text(encoding="utf-8"))
    kernel_side = record.pop("kernel_side", None)  # what the notebook's kernel said of its CPU and threads
    finished = time.time()
    # the last wall time of each profile, carried from record to record (the course guide reads them)
    previous = last_record(project, chapter) or {}
    wall_times = dict(previous.get("wall_times") or {})
    if previous.get("profile") and previous.get("wall_time_s") is not None:
        wall_times.setdefault(previous["profile"], previous["wall_time_s"])
    wall_times[profile] = round(finished - started, 2)
    record.update({
        "profile": profile,
        "parameters": params,
        "inputs_hash": fingerprint,
        "package_modules": modules,
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(finished - started, 2),
        "wall_times": wall_times,
        "kernel": kernel,
        "timeout_s": timeout,
        "device": device,
        "data_check": data_states,
        "log": rel_log,
        "executor": os.environ.get("COMPENDIUM_EXECUTOR") or "direct (compendium run)",  # see book/executor.py
        "environment": environment_record(project.root, kernel=kernel_side),
    })
    final_nb, final_rec = project.executed(chapter), project.record(chapter)
    with FileLock(project.publish_lock(chapter), f"chapter '{chapter}' (publishing)", blocking=True), signals_deferred():
        record["notebook_sha256"] = _sha256(staged_nb)
        staged_rec.write_text(json.dumps(record, indent=2), encoding="utf-8")
        _move_into_place(staged_nb, final_nb)
        _move_into_place(staged_rec, final_rec)
        failure_marker(project, chapter).unlink(missing_ok=True)
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(f"\n# OK: published {_rel(project, final_nb)} and {_rel(project, final_rec)} "
                     f"after {finished - started:.1f} s\n")
    log(f"[run] {chapter}: done in {finished - started:.1f} s → {_rel(project, final_nb)}, {_rel(project, final_rec)}")
    return RunOutcome(chapter, record, final_nb, final_rec)


def _rel(project: Project, path: Path) -> str:
    try:
        return str(path.relative_to(project.output_root))
    except ValueError:
        return str(path)


def _failure(project, chapter, profile, params, err, staged_nb, fh, timeout, running_cell) -> ChapterFailed:
    from nbclient.exceptions import CellTimeoutError

    failed = project.build_dir / "failed" / f"{chapter}.ipynb"
    cell = getattr(err, "cell_index", None)
    if cell is None:  # a timeout or a dead kernel: the cell that was executing
        cell = running_cell
    timed_out = isinstance(err, CellTimeoutError)
    where = f" in cell {cell}" if cell is not None else ""
    if cell is not None:  # papermill's log counts cells from 1
        count = getattr(err, "exec_count", None)
        where += f" ({f'execution count {count}; ' if count is not None else ''}'Executing Cell {cell + 1}' in the log)"
    if timed_out:
        detail = f"timed out after {timeout:g} s (--timeout {timeout:g})"
        head = f"chapter '{chapter}' {detail}{where}"
    else:
        detail = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
        head = f"chapter '{chapter}' failed{where}: {detail}"
    _mark_failed(project, chapter, profile, params, detail)
    kept = ""
    if staged_nb.exists():
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged_nb, failed)
        kept = f"the failed notebook is kept at {failed}; "
    tb = getattr(err, "traceback", None)
    fh.write(f"\n# FAILED{where}: {detail}\n")
    if isinstance(tb, list):
        fh.write(_ANSI.sub("", "\n".join(tb)) + "\n")
    fh.flush()
    return ChapterFailed(f"{head}\nLog: {project.log(chapter)}; {kept}previous outputs are untouched.",
                         cell=cell, log=project.log(chapter), timed_out=timed_out)


# --- reading the published pair, staleness --------------------------------------------------------

def published_pair_problem(project: Project, chapter: str, record: Mapping[str, Any] | None = None,
                           notebook: Path | None = None) -> str | None:
    """Why the executed notebook is not the one its record was published with (``None``: it is,
    or the record predates the check)."""
    rec = record if record is not None else last_record(project, chapter)
    nb = notebook or project.executed(chapter)
    want = (rec or {}).get("notebook_sha256")
    if not want or not nb.is_file():
        return None
    if _sha256(nb) != want:
        return ("its executed notebook is not the one published with its record "
                "(a publication cut short, or a file replaced by hand)")
    return None


def stale_reasons(project: Project, chapter: str, record: Mapping[str, Any] | None = None,
                  notebook: Path | None = None) -> list[str]:
    """Why the published outputs of a chapter may not match its current sources (empty: current).

    A record is stale when its inputs (notebook, claims, the package modules the chapter
    imports, parameters, data) differ from the current sources, when a later run of the
    chapter failed, when its notebook is not the one published with it, or when it ran from
    uncommitted code. ``record``/``notebook``: a snapshot taken under :func:`read_lock`."""
    rec = dict(record) if record is not None else last_record(project, chapter)
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
    pair = published_pair_problem(project, chapter, rec, notebook)
    if pair:
        reasons.append(pair)
    try:
        spec = load_spec(project, chapter)
        now = inputs_fingerprint(project, spec, rec.get("profile", ""), rec.get("parameters") or {})
        if now != rec.get("inputs_hash"):
            reasons.append("its sources (notebook, claims, imported package modules, parameters or data) "
                           "changed since this record")
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
    if published_pair_problem(project, chapter, rec):
        return True
    spec = load_spec(project, chapter)
    return rec.get("inputs_hash") != inputs_fingerprint(project, spec, profile, spec.resolve(profile))


# --- build --------------------------------------------------------------------------------------

def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_environment(threads: int) -> dict[str, str]:
    """The variables that give a chapter's kernel ``threads`` CPU threads: OpenMP's, and MKL's,
    which torch reads first where it is set (torch caps either at the usable cores)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def chapter_threads(jobs: int, threads: int | None = None, cores: int | None = None) -> int | None:
    """The thread count each chapter of a build gets: ``threads`` when given; else, with ``jobs``
    chapters at once, the caller's ``OMP_NUM_THREADS`` when set, or the cores shared out
    (``cores // jobs``, at least 1) so that the chapters do not oversubscribe them; ``None`` (the
    kernel's own default) for one chapter at a time. It depends on ``jobs``, not on how many
    chapters are stale, so a chapter's numbers do not depend on what else a build re-ran."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        return threads
    if jobs <= 1:
        return None
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return max(1, (cores or usable_cores()) // jobs)


def build_order(project: Project, chapters: list[str], profile: str = "default") -> list[str]:
    """``chapters`` longest first, so that the chapters of a parallel build end together (the
    longest-processing-time rule): by the chapter's last wall time under ``profile`` in its
    record, else the spec's ``build_cost_s`` (a default-profile time on a reference machine,
    used only as a relative order; a fresh clone has no records, and in the a032498 fresh build
    on a 2-core AVX2 machine toc order left one worker running stfn alone for the last 443 s of
    a 2551 s span); chapters with neither, or whose spec does not load (their run reports why),
    first; ties keep the given (book) order."""
    def cost(chapter: str) -> float:
        rec = last_record(project, chapter) or {}
        t = (rec.get("wall_times") or {}).get(profile)
        if not t and rec.get("profile") == profile:
            t = rec.get("wall_time_s")
        if not t:
            try:
                t = load_spec(project, chapter).build_cost_s
            except (KeyError, OSError, ValueError, yaml.YAMLError):
                t = None
        try:
            return -float(t) if t and float(t) > 0 else -math.inf
        except (TypeError, ValueError):
            return -math.inf
    return sorted(chapters, key=cost)


def run_stale(project: Project, profile: str, jobs: int = 1, force: bool = False,
              chapters: list[str] | None = None, log: Callable[[str], None] = print,
              kernel: str | None = None, timeout: float | None = None,
              threads: int | None = None) -> dict[str, str]:
    """Run, in separate processes (up to ``jobs`` at once), every chapter whose inputs changed,
    each with :func:`chapter_threads` threads (``compendium run --threads``: its record names them).

    Returns ``{chapter: "fresh" | "ran" | "failed: ..." | "busy: ..."}``. An interrupt stops
    the chapters under way (each cleans up after itself) and is raised again."""
    names = chapters or available_chapters(project)
    todo = [c for c in names if force or is_stale(project, c, profile)]
    status = {c: "fresh" for c in names if c not in todo}
    if jobs > 1:
        todo = build_order(project, todo, profile)
    for c in status:
        log(f"[build] {c}: up to date")
    if not todo:
        return status
    threads = chapter_threads(jobs, threads)
    if jobs > 1 or threads is not None:
        log(f"[build] {min(jobs, len(todo))} chapter(s) at a time, "
            + (f"{threads} thread(s) requested each (each record names what it got)" if threads
               else "the kernel's default threads"))
    running: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def one(chapter: str) -> tuple[str, str]:
        if stopping.is_set():
            return chapter, "failed: not run (the build was interrupted)"
        cmd = [sys.executable, "-m", "compendium", "--root", str(project.root), "--output-root",
               str(project.output_root), "run", chapter, "--profile", profile]
        if kernel:
            cmd += ["--kernel", kernel]
        if timeout:
            cmd += ["--timeout", f"{timeout:g}"]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        env = {**os.environ, "PYTHONPATH": kernel_pythonpath(project)}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        running[chapter] = proc
        try:
            out, err = proc.communicate()
        finally:
            running.pop(chapter, None)
        sys.stdout.write(out)
        if proc.returncode != 0:
            sys.stderr.write(err)
            last = (err.strip().splitlines() or ["unknown error"])
            kind = "busy" if proc.returncode == EXIT_BUSY else "failed"
            return chapter, f"{kind}: " + " ".join(last[-3:])
        return chapter, "ran"

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        for chapter, st in pool.map(one, todo):
            status[chapter] = st
    except BaseException:
        stopping.set()
        with signals_deferred():
            for proc in list(running.values()):
                if proc.poll() is None:
                    proc.terminate()  # SIGTERM: the child cleans up as on Ctrl-C
            for proc in list(running.values()):
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return status


def clean(project: Project) -> list[Path]:
    """Remove the build outputs and whatever interrupted runs left: ``book/chapters/`` (dot-files
    included), the records, logs and failure markers in ``results/``, and ``_build/``
    (staging, failed notebooks, the rendered book). Refuses (:class:`Busy`) while a build or
    a run of any chapter holds its lock. Returns what was removed."""
    held: list[FileLock] = []
    try:
        held.append(build_lock(project).acquire())
        busy = []
        if project.locks_dir.is_dir():
            for p in sorted(project.locks_dir.glob("*.run.lock")):
                chapter = p.name.removesuffix(".run.lock")
                try:
                    held.append(FileLock(p, f"chapter '{chapter}'").acquire())
                except Busy as err:
                    busy.append(str(err))
        if busy:
            raise Busy("not cleaning while runs are under way:\n  " + "\n  ".join(busy))
        removed: list[Path] = []
        if project.executed_dir.is_dir():
            removed.append(project.executed_dir)
            shutil.rmtree(project.executed_dir)
        if project.results_dir.is_dir():
            for p in sorted(project.results_dir.iterdir()):
                if p.is_file() and (p.suffix in (".json", ".log") or p.name.startswith(".")):
                    p.unlink()
                    removed.append(p)
        if project.build_dir.is_dir():
            for p in sorted(project.build_dir.iterdir()):
                if p == project.locks_dir:
                    continue
                (shutil.rmtree if p.is_dir() and not p.is_symlink() else Path.unlink)(p)
                removed.append(p)
            for p in sorted(project.locks_dir.glob("*")) if project.locks_dir.is_dir() else []:
                p.unlink(missing_ok=True)  # later lockers notice the new inode (see FileLock)
        return removed
    finally:
        for lk in reversed(held):
            lk.release()
