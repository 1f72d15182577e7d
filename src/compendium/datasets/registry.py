"""Dataset files: resolved from the cache, then a read-only local mirror, then a verified
download, else a clear error saying which files to put where.

Resolution order for each file (``path`` is relative to a data folder):

1. the cache folder, ``$COMPENDIUM_CACHE`` or ``<project>/data/cache``;
2. the read-only local mirror named by ``$COMPENDIUM_DATA_MIRROR`` (the Makefile and
   ``.ci/run`` point it at ``../shared/data`` when that exists);
3. a download from each canonical URL in turn into the cache, written to a temporary
   name, checksummed while streaming and moved into place only when the checksum
   matches (skipped when ``$COMPENDIUM_OFFLINE`` is set);
4. otherwise :class:`DataMissing`, listing the missing files, where to put them and
   where they come from.

A file whose checksum does not match the registry is never used, wherever it was found;
a file with no recorded checksum cannot be verified and is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

CACHE_ENV = "COMPENDIUM_CACHE"
MIRROR_ENV = "COMPENDIUM_DATA_MIRROR"
OFFLINE_ENV = "COMPENDIUM_OFFLINE"
_ALGOS = ("sha256", "md5")


class DataMissing(FileNotFoundError):
    """Some registered files could not be resolved; the message says what to do."""


class ChecksumMismatch(ValueError):
    pass


@dataclass(frozen=True)
class DataFile:
    path: str
    urls: tuple[str, ...]
    checksums: dict[str, str]  # algorithm -> hex digest; empty: unverifiable

    @property
    def verifiable(self) -> bool:
        return bool(self.checksums)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    licence: str
    citation: str
    homepage: str
    checksum_source: str
    files: tuple[DataFile, ...]

    def file(self, name_or_path: str) -> DataFile:
        for f in self.files:
            if name_or_path in (f.path, f.name):
                return f
        raise KeyError(f"dataset '{self.name}' has no file '{name_or_path}'")


@dataclass
class Resolved:
    """Where one file was found, with its verified checksum."""

    file: DataFile
    location: Path
    source: str  # "cache", "mirror" or "download"
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.file.path, "source": self.source, "sha256": self.sha256}


@dataclass(frozen=True)
class FoundCopy:
    """A copy of a registered file found in the cache or the mirror, with its checksum."""

    source: str  # "cache" or "mirror"
    path: Path
    sha256: str
    size: int
    matches: bool


@dataclass
class FileDiagnosis:
    """One registered file: the verified copy (if any), every copy found, and where it was sought."""

    file: DataFile
    resolved: Resolved | None
    found: list[FoundCopy]
    searched: list[Path]

    @property
    def state(self) -> str:
        """``ok``, ``corrupt`` (a copy is present but no copy verifies), ``unverifiable``
        (the registry records no checksum) or ``missing``."""
        if self.resolved is not None:
            return "ok"
        if not self.file.verifiable:
            return "unverifiable"
        return "corrupt" if self.found else "missing"

    def expected(self) -> str:
        return ", ".join(f"{a} {v}" for a, v in self.file.checksums.items()) or "none recorded (cannot be verified)"

    def lines(self, indent: str = "  ") -> list[str]:
        """The file, its expected checksum, what was found where, where to put it, its source."""
        f = self.file
        why = {"ok": "ok", "corrupt": "CHECKSUM MISMATCH", "missing": "MISSING",
               "unverifiable": "no checksum is recorded for it, so no copy can be verified"}[self.state]
        out = [f"{indent}- {f.path}: {why}", f"{indent}    expected: {self.expected()}"]
        if self.found:
            for c in self.found:
                verdict = "matches" if c.matches else ("does not match" if f.verifiable else "unverifiable")
                out.append(f"{indent}    found:    {c.source} {c.path}: sha256 {c.sha256} ({c.size:,} bytes), {verdict}")
        else:
            out.append(f"{indent}    found:    nothing at " + " or ".join(str(p) for p in self.searched))
        out.append(f"{indent}    put it:   " + (str(self.searched[0]) + (f" (or the mirror: {self.searched[1]})"
                                                                       if len(self.searched) > 1 else "")))
        out.append(f"{indent}    source:   {', '.join(f.urls) or 'unknown'}")
        return out


def file_digests(path: Path, algos: Iterable[str] = _ALGOS) -> dict[str, str]:
    hashes = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


@dataclass
class Registry:
    datasets: dict[str, Dataset]
    cache_dir: Path
    mirror_dir: Path | None = None
    offline: bool = False
    log: Callable[[str], None] = print
    _verified: dict[tuple[str, int, float], dict[str, str]] = field(default_factory=dict, repr=False)

    # --- construction ----------------------------------------------------------------
    @staticmethod
    def parse(entries: dict[str, Any]) -> dict[str, Dataset]:
        out = {}
        for name, d in entries.items():
            files = []
            for f in d["files"]:
                sums = {a: str(f[a]).lower() for a in _ALGOS if f.get(a)}
                files.append(DataFile(path=f["path"], urls=tuple(f.get("urls") or ()), checksums=sums))
            out[name] = Dataset(name, d["title"], d.get("licence", "unknown"), d.get("citation", ""),
                                d.get("homepage", ""), d.get("checksum_source", ""), tuple(files))
        return out

    @classmethod
    def default(cls, project_root: Path | None = None, **kw: Any) -> "Registry":
        text = resources.files("compendium.datasets").joinpath("registry.yaml").read_text(encoding="utf-8")
        if os.environ.get(CACHE_ENV):
            cache = Path(os.environ[CACHE_ENV])
        else:
            if project_root is None:
                from compendium.project import find_root

                project_root = find_root()
            cache = Path(project_root) / "data" / "cache"
        mirror = Path(os.environ[MIRROR_ENV]) if os.environ.get(MIRROR_ENV) else None
        offline = os.environ.get(OFFLINE_ENV, "").lower() not in ("", "0", "false", "no")
        kw.setdefault("mirror_dir", mirror)
        kw.setdefault("offline", offline)
        return cls(cls.parse(yaml.safe_load(text)), cache_dir=cache, **kw)

    def dataset(self, name: str) -> Dataset:
        if name not in self.datasets:
            raise KeyError(f"unknown dataset '{name}'; registered: {', '.join(sorted(self.datasets))}")
        return self.datasets[name]

    # --- verification ----------------------------------------------------------------
    def _matches(self, f: DataFile, path: Path) -> tuple[bool, dict[str, str]]:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime)
        if key not in self._verified:
            self._verified[key] = file_digests(path)
        got = self._verified[key]
        return all(got[a] == v for a, v in f.checksums.items()), got

    def _check(self, f: DataFile, path: Path, source: str) -> Resolved | None:
        if not path.is_file():
            return None
        if not f.verifiable:
            self.log(f"[data] refusing {path}: the registry records no checksum for {f.path}, so it cannot be verified")
            return None
        ok, got = self._matches(f, path)
        if not ok:
            self.log(f"[data] refusing {path} ({source}): checksum does not match the registry "
                     f"(expected {f.checksums}, got sha256 {got['sha256']})")
            return None
        return Resolved(f, path, source, got["sha256"])

    # --- resolution ------------------------------------------------------------------
    def locate(self, f: DataFile) -> Resolved | None:
        """The verified local copy of ``f`` (cache, then mirror), without downloading."""
        found = self._check(f, self.cache_dir / f.path, "cache")
        if found is None and self.mirror_dir is not None:
            found = self._check(f, self.mirror_dir / f.path, "mirror")
        return found

    def download(self, f: DataFile, timeout: float = 60.0) -> Resolved | None:
        if self.offline or not f.verifiable:
            return None
        target = self.cache_dir / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        errors = []
        for url in f.urls:
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{f.name}.", suffix=".part")
            tmp = Path(tmp_name)
            try:
                hashes = {a: hashlib.new(a) for a in _ALGOS}
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        out.write(chunk)
                        for h in hashes.values():
                            h.update(chunk)
                got = {a: h.hexdigest() for a, h in hashes.items()}
                if any(got[a] != v for a, v in f.checksums.items()):
                    raise ChecksumMismatch(f"{url}: checksum mismatch (got sha256 {got['sha256']})")
                os.replace(tmp, target)
                self.log(f"[data] downloaded {f.path} from {url}")
                return Resolved(f, target, "download", got["sha256"])
            except (OSError, ValueError) as err:  # URLError is an OSError
                errors.append(f"{url}: {err}")
            finally:
                tmp.unlink(missing_ok=True)
        self.log(f"[data] {f.path}: not in the cache or mirror, and no download succeeded ({'; '.join(errors)})")
        return None

    def resolve(self, dataset: str, files: Iterable[str] | None = None, *, download: bool = True) -> dict[str, Resolved]:
        """Verified local paths of ``files`` (names or paths; default: all) of ``dataset``.

        Raises :class:`DataMissing` naming every file that could not be resolved."""
        ds = self.dataset(dataset)
        wanted = [ds.file(x) for x in files] if files is not None else list(ds.files)
        out, missing = {}, []
        for f in wanted:
            r = self.locate(f) or (self.download(f) if download else None)
            if r is None:
                missing.append(f)
            else:
                out[f.name] = r
        if missing:
            raise DataMissing(self._missing_message(ds, missing))
        return out

    def status(self, dataset: str) -> dict[str, Resolved | None]:
        ds = self.dataset(dataset)
        return {f.name: self.locate(f) for f in ds.files}

    # --- diagnosis (what the error messages say) ------------------------------------------
    def diagnose(self, f: DataFile) -> "FileDiagnosis":
        """Where ``f`` was looked for, what was found there, and whether a copy verifies
        (no download). Used by the error messages and by the runner's check before a chapter."""
        places = [("cache", self.cache_dir / f.path)]
        if self.mirror_dir is not None:
            places.append(("mirror", self.mirror_dir / f.path))
        found: list[FoundCopy] = []
        for source, path in places:
            if not path.is_file():
                continue
            _ok, got = self._matches(f, path) if f.verifiable else (False, file_digests(path))
            found.append(FoundCopy(source, path, got["sha256"], path.stat().st_size,
                                   matches=bool(f.verifiable and _ok)))
        resolved = next((Resolved(f, c.path, c.source, c.sha256) for c in found if c.matches), None)
        return FileDiagnosis(f, resolved, found, [p for _s, p in places])

    def _missing_message(self, ds: Dataset, missing: list[DataFile]) -> str:
        lines = [f"dataset '{ds.name}' ({ds.title}): {len(missing)} file(s) could not be resolved:"]
        for f in missing:
            lines += self.diagnose(f).lines()
        lines.append(f"Put verified copies under {self.cache_dir}/ (same relative paths)"
                     + (f" or in the mirror {self.mirror_dir}/" if self.mirror_dir else
                        f", or point ${MIRROR_ENV} at a folder holding them")
                     + ("." if not self.offline else f"; downloads are off (${OFFLINE_ENV} is set)."))
        return "\n".join(lines)

    def fingerprint(self, datasets: Iterable[str]) -> dict[str, Any]:
        """What the registry says about ``datasets`` and which files resolve now (no hashing of
        unknown files, no download): part of a chapter's input fingerprint."""
        out: dict[str, Any] = {}
        for name in datasets:
            ds = self.dataset(name)
            out[name] = {f.path: {"checksums": f.checksums,
                                  "present": (self.cache_dir / f.path).is_file()
                                  or bool(self.mirror_dir and (self.mirror_dir / f.path).is_file())}
                         for f in ds.files}
        return out


def copy_to(resolved: Resolved, folder: Path) -> Path:
    """Copy a resolved file into ``folder`` (libraries that want all files in one place)."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / resolved.file.name
    shutil.copyfile(resolved.location, dst)
    return dst
