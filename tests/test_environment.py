"""The environment record names what decides whether two builds' trained numbers can agree bit for bit."""

import json
import os
import subprocess
import sys

from compendium.book.environment import environment_record, kernels_label, threads_and_kernels
from compendium.book.present import run_box


def _kernels_in_subprocess(**env: str) -> dict:
    code = "import json; from compendium.book.environment import vector_kernels; print(json.dumps(vector_kernels()))"
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_record_names_the_kernels_torch_dispatches_to(tmp_path):
    import torch

    rec = environment_record(tmp_path)
    assert rec["cpu"]["kernels"]["aten"] == torch.backends.cpu.get_cpu_capability()
    assert set(rec["cpu"]["kernels"]["flags"]) <= {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"}
    json.dumps(rec)  # it goes into the results record as it is


def test_an_environment_cap_is_recorded_and_changes_the_kernels():
    # DEFAULT is ATen's scalar fallback: every x86-64 machine can be capped to it
    capped = _kernels_in_subprocess(ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41")
    assert capped["aten"] == "DEFAULT"
    assert capped["overrides"] == {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
    assert kernels_label({"kernels": capped}) == "DEFAULT kernels, ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=SSE41"
    free = _kernels_in_subprocess()
    assert "ATEN_CPU_CAPABILITY" not in free["overrides"]
    if "avx2" in free["flags"]:  # the reference machine: uncapped, ATen uses its vector kernels
        assert free["aten"] in ("AVX2", "AVX512")


def test_pages_name_threads_and_kernels_and_old_records_still_render():
    cpu = {"model": "Some CPU", "torch_threads": 2, "kernels": {"aten": "AVX512", "flags": ["avx2", "avx512f"],
                                                                  "overrides": {}}}
    assert threads_and_kernels(cpu) == "2 threads, AVX512 kernels"
    box = run_box({"chapter": "demo", "profile": "quick", "wall_time_s": 1.0, "environment": {"cpu": cpu}})
    assert "(Some CPU, 2 threads, AVX512 kernels)" in box
    old = {"model": "Some CPU", "torch_threads": 2}  # a record written before the kernels were recorded
    assert threads_and_kernels(old) == "2 threads" and kernels_label(old) == ""
    assert "(Some CPU, 2 threads)" in run_box({"chapter": "demo", "profile": "quick", "environment": {"cpu": old}})
