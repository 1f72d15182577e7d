"""The environment record kept with every result: versions, commit, CPU and threads."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = (
    "torch", "snntorch", "torch-geometric", "numpy", "scipy", "pandas", "statsmodels", "patsy",
    "matplotlib", "papermill", "jupyter-book", "compendium",
)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(root: Path) -> dict[str, Any]:
    """The commit the sources came from, and whether the work tree differed from it."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_info() -> dict[str, Any]:
    model = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {"model": model, "logical_cores": os.cpu_count(), "machine": platform.machine()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def environment_record(root: Path) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_commit(root),
        "cpu": cpu_info(),
        # glibc thresholds set by `import compendium` (compendium.runtime); the native LIF kernel's switch
        "allocator": _allocator(),
        "native_lif": os.environ.get("COMPENDIUM_NATIVE", "1") != "0",
    }


def _allocator() -> dict[str, int] | str:
    from compendium import runtime

    return dict(runtime.applied) or "glibc defaults"
