"""What a reproduction at paper scale costs: the cost table (``compendium list --cost`` and the
book's "What a reproduction costs" page), from the smoke runs' measured step times.

Each chapter's smoke run (``compendium run <id> --profile paper --smoke``, recorded in
``results/smoke/<id>.json``) times every training step it takes through
:func:`compendium.learning.fit` at the paper's input shapes and architecture, at a batch of at
most two, and records what the full run would do: each training run's epochs, batch and full
training set. From these:

- **measured**: the median step time on this CPU (batch ≤ 2) and the time per sample;
- **estimated** CPU-hours of the full paper run's training = planned samples × time per sample
  (linear in the batch: a larger batch is usually cheaper per sample, so this leans high);
- **estimated** GPU-hours = the CPU estimate ÷ :data:`ASSUMED_GPU_SPEEDUP`, an assumption (no
  GPU was available to measure), unless a GPU throughput record exists
  (``results/gpu/<id>.json`` with ``s_per_sample``), which is then used instead.

Both estimates count only the training steps of the training runs the smoke run executed
(each at its full epochs and data); seeds, learning-rate trials and replicates that smoke mode
skipped, evaluation passes and loops outside ``fit`` (attacks, meta-learning episodes,
simulations) are not counted, so they are lower bounds on those counts. They are estimates,
labelled as such wherever they are shown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compendium.project import Project

# Assumed per-sample speed-up of one data-centre GPU (A100/H100 class) over this 2-core CPU for
# these conv/MLP spiking workloads. An assumption, not a measurement: stated on the page.
ASSUMED_GPU_SPEEDUP = 50.0


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cost_rows(project: Project) -> list[dict[str, Any]]:
    """One row per chapter: the smoke run's measurements and the estimates derived from them
    (``None`` where the chapter has no smoke record, or trains nothing through ``fit``)."""
    from compendium.chapters import available_chapters

    rows = []
    for c in available_chapters(project):
        rec = _load(project.results_dir / "smoke" / f"{c}.json")
        gpu = _load(project.results_dir / "gpu" / f"{c}.json")
        row: dict[str, Any] = {"chapter": c, "smoke": rec is not None}
        if rec is None:
            rows.append(row)
            continue
        s = rec.get("summary") or {}
        env = rec.get("environment") or {}
        row.update({"smoke_wall_s": rec.get("wall_time_s"), "fit_runs": s.get("fit_runs"),
                    "median_step_s": s.get("median_step_s"), "s_per_sample": s.get("median_s_per_sample"),
                    "planned_steps": s.get("planned_steps"), "planned_samples": s.get("planned_samples"),
                    "measured_at": rec.get("started_at"), "machine": (env.get("platform") or env.get("machine")),
                    "synthetic": sorted(k for k, v in (rec.get("data") or {}).items() if str(v).startswith("absent"))})
        per = row["s_per_sample"]
        row["no_estimate"] = s.get("data_cut_without_scale") or []
        if per is not None and row["planned_samples"] and not row["no_estimate"]:
            row["cpu_hours_est"] = row["planned_samples"] * per / 3600
            if gpu and gpu.get("s_per_sample"):
                row["gpu_hours_est"] = row["planned_samples"] * float(gpu["s_per_sample"]) / 3600
                row["gpu_basis"] = f"measured GPU throughput ({gpu.get('device', 'GPU')})"
            else:
                row["gpu_hours_est"] = row["cpu_hours_est"] / ASSUMED_GPU_SPEEDUP
                row["gpu_basis"] = f"CPU estimate / {ASSUMED_GPU_SPEEDUP:g} (assumed)"
        rows.append(row)
    return rows


def _fmt(v: Any, kind: str = "") -> str:
    if v is None:
        return "—"
    if kind == "ms":
        return f"{v * 1000:.0f} ms"
    if kind == "h":
        return f"{v:.2g}" if v < 10 else f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


ASSUMPTIONS = [
    "Step times are measured by the smoke run on this machine's CPU, at the paper profile's input shapes and "
    "architecture, at a batch of at most 2 (the median of the measured steps; the first step of each run, "
    "which pays for warm-up, is left out of the per-sample time).",
    "CPU-hours (estimate) = planned training samples of the full paper run × measured seconds per sample: every "
    "training run the smoke run executed, at its full epochs and full training set; linear in the batch "
    "(larger batches are usually cheaper per sample, so this leans high).",
    f"GPU-hours (estimate) = CPU-hours ÷ {ASSUMED_GPU_SPEEDUP:g}, an assumed per-sample speed-up of one "
    "data-centre GPU over this CPU — no GPU was available to measure one; a GPU throughput record "
    "(`results/gpu/<chapter>.json`) replaces the assumption where it exists.",
    "Not counted (so the estimates are lower bounds on these): learning-rate trials beyond the first two "
    "(smoke mode keeps two), evaluation passes, and loops outside the training loop "
    "(adversarial attacks, meta-learning episodes, simulations, statistics). Chapters that train nothing "
    "through the loop show no estimate, nor do chapters whose training data the smoke run generated at "
    "smoke size without knowing the full size (DashNet's synthetic sequences).",
]


def cost_markdown(project: Project) -> str:
    """The book page: the cost table with its assumptions, labelled as estimates."""
    rows = cost_rows(project)
    out = ["# What a reproduction costs", "",
           "For each chapter's `paper` profile: what its smoke run (`compendium run <chapter> --profile paper "
           "--smoke`) measured on this CPU at the paper's shapes, and **estimates** of the compute of the full "
           "paper run derived from it. The estimates are not measurements; their assumptions are listed "
           "below the table.", "",
           "| chapter | smoke run (s) | training runs | median step (batch ≤ 2) | planned steps | "
           "CPU-hours (estimate) | GPU-hours (estimate) | synthetic data in the smoke run |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["smoke"]:
            out.append(f"| {r['chapter']} | not measured (no smoke record) | | | | | | |")
            continue
        out.append(f"| {r['chapter']} | {_fmt(r['smoke_wall_s'])} | {_fmt(r['fit_runs'])} | "
                   f"{_fmt(r['median_step_s'], 'ms')} | {_fmt(r['planned_steps'])} | "
                   f"{_fmt(r.get('cpu_hours_est'), 'h')} | {_fmt(r.get('gpu_hours_est'), 'h')} | "
                   f"{', '.join(r['synthetic']) or 'none'} |")
    measured = sorted({r.get("measured_at", "")[:10] for r in rows if r["smoke"] and r.get("measured_at")})
    out += ["", "**Assumptions of the estimates.**", ""] + [f"- {a}" for a in ASSUMPTIONS]
    out += ["", f"Measured on: {', '.join(measured) or 'never'} (the smoke records in `results/smoke/`). "
            "No GPU was available to this project's runs, so no GPU throughput is shown as measured.", ""]
    return "\n".join(out)


def write_cost_page(project: Project) -> Path:
    """Regenerate ``book/cost.md`` (under the output root) from the smoke records; every smoke run calls it."""
    page = project.output_root / "book" / "cost.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    tmp = page.with_name(".cost.md.tmp")
    tmp.write_text(cost_markdown(project), encoding="utf-8")
    tmp.replace(page)
    return page


def print_cost(project: Project) -> None:
    """``compendium list --cost``: the table on the terminal."""
    rows = cost_rows(project)
    print(f"{'chapter':<12} {'smoke s':>8} {'runs':>5} {'step (b<=2)':>12} {'planned steps':>14} "
          f"{'CPU-h est.':>11} {'GPU-h est.':>11}")
    for r in rows:
        if not r["smoke"]:
            print(f"{r['chapter']:<12} no smoke record: compendium run {r['chapter']} --profile paper --smoke")
            continue
        print(f"{r['chapter']:<12} {_fmt(r['smoke_wall_s']):>8} {_fmt(r['fit_runs']):>5} "
              f"{_fmt(r['median_step_s'], 'ms'):>12} {_fmt(r['planned_steps']):>14} "
              f"{_fmt(r.get('cpu_hours_est'), 'h'):>11} {_fmt(r.get('gpu_hours_est'), 'h'):>11}")
    print("\nESTIMATES, not measurements:")
    for a in ASSUMPTIONS:
        print(f"  - {a}")
