"""The environment record kept with every result: versions, commit, CPU, its vector kernels and threads."""

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


def _cpuinfo(prefixes: tuple[str, ...]) -> str | None:
    """The value of the first ``/proc/cpuinfo`` line that starts with one of ``prefixes``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(prefixes):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_info() -> dict[str, Any]:
    """The CPU, torch's thread count and vector kernels of *this* process (see :func:`vector_kernels`)."""
    info: dict[str, Any] = {"model": _cpuinfo(("model name",)) or platform.processor() or None,
                            "logical_cores": os.cpu_count(), "machine": platform.machine()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    info["kernels"] = vector_kernels()
    return info


def kernel_side() -> dict[str, Any]:
    """What only the process that computed the numbers can say (written by
    :meth:`compendium.book.report.ChapterReport.save` inside the notebook's kernel): its CPU
    record and torch version. The runner records these in place of its own, which differ when
    the kernelspec runs another environment, sets its own variables, or the notebook changes
    torch's threads."""
    out: dict[str, Any] = {"cpu": cpu_info()}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out


# the environment variables that cap the instruction set ATen, oneDNN and MKL dispatch to
ISA_OVERRIDES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def vector_kernels() -> dict[str, Any]:
    """Which SIMD kernels the CPU work dispatched to: ATen's CPU capability, the CPU's vector flags
    and any environment variable that caps them.

    Why it is recorded: ATen, oneDNN and MKL pick their kernels by instruction set at run time,
    and kernels of different widths sum in different orders. The same commit, seed and thread
    count gives results that differ in the last bits on an AVX2 and an AVX-512 machine, and a
    trained network amplifies those bits (the tdbn chapter's tdBN accuracy moved between 0.49 and
    0.54 with the instruction set alone). Two builds are comparable bit for bit only when this
    record, the thread count and the package versions agree. oneDNN and MKL are not asked which
    kernels they chose (torch exposes no such query): the flags say what they could choose, and
    ``overrides`` what capped them.
    """
    out: dict[str, Any] = {"aten": None, "flags": [], "overrides": {}}
    try:
        import torch

        out["aten"] = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        pass
    have = set((_cpuinfo(("flags",)) or "").split())
    out["flags"] = [f for f in _ISA_FLAGS if f in have]
    out["overrides"] = {k: os.environ[k] for k in ISA_OVERRIDES if k in os.environ}
    return out


def threads_and_kernels(cpu: dict[str, Any]) -> str:
    """``2 threads, ATen AVX512``: what a reader needs to know to expect the same numbers bit for
    bit (each part left out where the record predates it)."""
    threads = f"{cpu['torch_threads']} threads" if "torch_threads" in cpu else ""
    return ", ".join(filter(None, [threads, kernels_label(cpu)]))


def kernels_label(cpu: dict[str, Any]) -> str:
    """A short reader's label of :func:`vector_kernels`' record, e.g. ``ATen AVX512`` or
    ``ATen AVX2, ONEDNN_MAX_CPU_ISA=AVX2``; empty for a record that predates it."""
    k = cpu.get("kernels") or {}
    if not k:
        return ""
    label = f"ATen {k.get('aten') or 'unknown'}"
    return ", ".join([label, *(f"{n}={v}" for n, v in (k.get("overrides") or {}).items())])


def environment_record(root: Path, kernel: dict[str, Any] | None = None) -> dict[str, Any]:
    """The environment kept with a result. ``kernel``: :func:`kernel_side` as the notebook's kernel
    wrote it; its CPU record and torch version replace the runner's own (the runner's CPU record
    is kept as ``runner_cpu`` where it differs)."""
    packages, cpu = package_versions(), cpu_info()
    out = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "git": git_commit(root),
        "cpu": cpu,
        # glibc thresholds set by `import compendium` (compendium.runtime); the native LIF kernel's switch
        "allocator": _allocator(),
        "native_lif": os.environ.get("COMPENDIUM_NATIVE", "1") != "0",
    }
    if kernel:
        if kernel.get("cpu"):
            out["cpu"] = kernel["cpu"]
            if kernel["cpu"] != cpu:
                out["runner_cpu"] = cpu
        if kernel.get("torch"):
            packages["torch"] = kernel["torch"]
    return out


def _allocator() -> dict[str, int] | str:
    from compendium import runtime

    return dict(runtime.applied) or "glibc defaults"
