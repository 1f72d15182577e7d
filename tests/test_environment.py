"""The environment record names what decides whether two builds' trained numbers can agree bit for bit."""

import json
import os
import subprocess
import sys

from compendium.book.environment import (ISA_OVERRIDES, environment_record, kernel_side, kernels_label,
                                         threads_and_kernels)
from compendium.book.present import run_box


def _in_subprocess(code: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ISA_OVERRIDES}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


KERNELS = "import json; from compendium.book.environment import vector_kernels; print(json.dumps(vector_kernels()))"


def test_an_environment_cap_is_recorded_and_changes_the_kernels():
    # DEFAULT is ATen's scalar fallback: every x86-64 machine can be capped to it
    capped = _in_subprocess(KERNELS, ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41")
    assert capped["aten"] == "DEFAULT"
    assert capped["overrides"] == {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
    assert kernels_label({"kernels": capped}) == "ATen DEFAULT, ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=SSE41"
    free = _in_subprocess(KERNELS)
    assert free["overrides"] == {}
    if "avx2" in free["flags"]:  # the reference machine: uncapped, ATen uses its vector kernels
        assert free["aten"] in ("AVX2", "AVX512")


def test_the_record_keeps_the_kernel_process_view_where_it_differs_from_the_runner(tmp_path):
    # the notebook's kernel ran with 1 thread and capped kernels; the runner has its own
    code = ("import json, torch; torch.set_num_threads(1); from compendium.book.environment import kernel_side; "
            "print(json.dumps(kernel_side()))")
    side = _in_subprocess(code, ATEN_CPU_CAPABILITY="default")
    assert side["cpu"]["torch_threads"] == 1 and side["cpu"]["kernels"]["aten"] == "DEFAULT"
    rec = environment_record(tmp_path, kernel=side)
    assert rec["cpu"] == side["cpu"] and rec["packages"]["torch"] == side["torch"]
    runner = environment_record(tmp_path)["cpu"]
    assert rec.get("runner_cpu") == (runner if runner != side["cpu"] else None)
    same = environment_record(tmp_path, kernel=kernel_side())
    assert "runner_cpu" not in same  # one process: nothing to tell apart
    json.dumps(rec)  # it goes into the results record as it is


def test_pages_name_threads_and_kernels_and_old_records_still_render():
    cpu = {"model": "Some CPU", "torch_threads": 2, "kernels": {"aten": "AVX512", "flags": ["avx2", "avx512f"],
                                                                  "overrides": {}}}
    assert threads_and_kernels(cpu) == "2 threads, ATen AVX512"
    box = run_box({"chapter": "demo", "profile": "quick", "wall_time_s": 1.0, "environment": {"cpu": cpu}})
    assert "(Some CPU, 2 threads, ATen AVX512)" in box
    assert "`compendium run demo --profile quick --threads 2`" in box  # the command that repeats it
    assert "--threads" not in run_box({"chapter": "demo", "profile": "quick", "environment": {"cpu": {}}})
    old = {"model": "Some CPU", "torch_threads": 2}  # a record written before the kernels were recorded
    assert threads_and_kernels(old) == "2 threads" and kernels_label(old) == ""
    assert "(Some CPU, 2 threads)" in run_box({"chapter": "demo", "profile": "quick", "environment": {"cpu": old}})
    assert "(Some CPU)" in run_box({"chapter": "demo", "profile": "quick", "environment": {"cpu": {"model": "Some CPU"}}})
