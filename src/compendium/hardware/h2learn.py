"""A first-order cycle, energy and area model of H2Learn (Liang et al., arXiv:2107.11746) and
a roofline model of a V100 running the same BPTT workload.

Only the abstract of the paper could be read, so this is *our reading* of its three ideas,
applied to workloads measured by :mod:`compendium.hardware.workload`:

- **LUT-based Forward and Weight-Update Engines.** With binary spikes, a group of ``K`` inputs
  selects one of ``2^K`` partial sums of their weights. The table is built once per output
  neuron and group (``2^K`` adds) and reused by every input point (time step × sample) that
  shares the weights: one LUT read + one accumulate per group instead of up to ``K`` adds.
  The weight update does the same along the (time, sample) axis, with ``δu`` values in the
  table and the binary input spikes as the index.
- **Dual-sparsity-aware Backward Engine.** ``∂L/∂o = Wᵀ δu`` is computed only for non-zero
  ``δu`` (input sparsity) and only for outputs whose surrogate is non-zero (output sparsity).
- **Pipelining** between engines: the step takes the slowest engine's time instead of the sum.

Cycles = operations / (PEs × utilisation); energy = operations × energy per operation +
SRAM traffic + static power × time; area = PEs × area per PE + SRAM × area per MB. The GPU runs the dense workload
at ``efficiency`` × peak FP32 or at HBM bandwidth, whichever is slower, and spends board power
for that time. Every hardware number is in ``h2learn.yaml`` with its provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources

import yaml

from compendium import smoke
from compendium.hardware.workload import LayerWorkload


def lut_forward(spikes, weight, K: int):
    """``spikes @ weight.T`` computed the LUT way: for each output and group of ``K`` inputs,
    a table of all ``2^K`` partial sums of their weights, indexed by the ``K`` input bits."""
    import torch

    P, n_in = spikes.shape
    n_out = weight.shape[0]
    pad = (-n_in) % K
    s = torch.nn.functional.pad(spikes, (0, pad)).reshape(P, -1, K)  # [P, G, K]
    w = torch.nn.functional.pad(weight, (0, pad)).reshape(n_out, -1, K)  # [out, G, K]
    patterns = ((torch.arange(2 ** K)[:, None] >> torch.arange(K)) & 1).to(weight.dtype)  # [2^K, K]
    table = torch.einsum("ogk,pk->ogp", w, patterns)  # [out, G, 2^K], built once
    index = (s.long() << torch.arange(K)).sum(-1)  # [P, G], one K-bit address per group
    return table.gather(2, index.T.unsqueeze(0).expand(n_out, -1, -1)).sum(1).T  # [P, out]


def lut_weight_update(delta, spikes, K: int):
    """``delta.T @ spikes`` (the weight gradient) the LUT way along the input-point axis:
    per output, tables of the ``2^K`` partial sums of ``δu`` over groups of ``K`` points,
    indexed by each input's ``K`` spike bits."""
    return lut_forward(spikes.T, delta.T, K).T  # [in, out] -> [out, in]


def _table():
    return yaml.safe_load(resources.files("compendium.hardware").joinpath("h2learn.yaml").read_text())


@dataclass(frozen=True)
class H2LearnConfig:
    clock_ghz: float
    forward_pes: int
    update_pes: int
    backward_pes: int
    lut_group: int
    utilisation: float
    energy_add_pj: float
    energy_mac_pj: float
    energy_lut_read_pj: float
    energy_sram_pj_per_word: float
    static_power_w: float
    area_per_pe_mm2: float
    sram_mb: float
    area_per_mb_mm2: float
    # techniques, for the ablations. ``lut=False`` is a plain accumulate PE that steps through
    # every input (K adds per group); ``event_driven=True`` (with ``lut=False``) instead skips
    # zero spikes — a different design, not one the abstract describes.
    lut: bool = True
    event_driven: bool = False
    dual_sparsity: bool = True
    pipeline: bool = True

    @classmethod
    def load(cls, **overrides) -> "H2LearnConfig":
        t = _table()["h2learn"]
        base = {k: (int(v["value"]) if k.endswith("pes") or k == "lut_group" else float(v["value"])) for k, v in t.items()}
        return cls(**{**base, **overrides})

    def with_(self, **kw) -> "H2LearnConfig":
        return replace(self, **kw)


@dataclass(frozen=True)
class GPUConfig:
    peak_tflops_fp32: float
    hbm_gb_s: float
    board_power_w: float
    die_mm2: float
    efficiency: float

    @classmethod
    def load(cls, **overrides) -> "GPUConfig":
        t = _table()["v100"]
        return cls(**{**{k: float(v["value"]) for k, v in t.items()}, **overrides})


def provenance() -> dict[str, dict[str, dict]]:
    return _table()


@dataclass
class Estimate:
    time_s: float
    energy_j: float
    engine_time_s: dict[str, float]
    ops: dict[str, float]


def h2learn_step(layers: list[LayerWorkload], cfg: H2LearnConfig) -> Estimate:
    """Time and energy of one BPTT training step (forward, backward, weight update) on H2Learn."""
    K = cfg.lut_group
    ops = {"forward": 0.0, "backward": 0.0, "update": 0.0, "lut_build_adds": 0.0}
    energy_pj = 0.0
    for L in layers:
        points = L.T * L.batch  # input points sharing the weights
        groups_in = -(-L.fan_in // K)
        if cfg.lut:
            # forward: build 2^K sums per (output, group) once, then one read+accumulate per point
            build = L.fan_out * groups_in * (2 ** K)
            reads = L.fan_out * groups_in * points
            ops["lut_build_adds"] += build
            ops["forward"] += reads + build
            energy_pj += build * cfg.energy_add_pj + reads * (cfg.energy_lut_read_pj + cfg.energy_add_pj)
            # update: tables over groups of K points per output; each input reads them
            groups_pts = -(-points // K)
            build_u = L.fan_out * groups_pts * (2 ** K)
            reads_u = L.fan_in * L.fan_out * groups_pts
            ops["lut_build_adds"] += build_u
            ops["update"] += reads_u + build_u
            energy_pj += build_u * cfg.energy_add_pj + reads_u * (cfg.energy_lut_read_pj + cfg.energy_add_pj)
        elif cfg.event_driven:
            ops["forward"] += L.ops["forward AC"]
            ops["update"] += L.ops["update sparse AC"]
            energy_pj += (L.ops["forward AC"] + L.ops["update sparse AC"]) * cfg.energy_add_pj
        else:
            ops["forward"] += L.ops["forward dense MAC"]  # one accumulate per input and output, spike or not
            ops["update"] += L.ops["update dense MAC"]
            energy_pj += (L.ops["forward dense MAC"] + L.ops["update dense MAC"]) * cfg.energy_add_pj
        bwd = L.ops["backward dual-sparse MAC"] if cfg.dual_sparsity else L.ops["backward dense MAC"]
        ops["backward"] += bwd
        energy_pj += bwd * cfg.energy_mac_pj
        # SRAM traffic: weights read in forward and backward, written in update; states per point
        words = 3 * L.fan_in * L.fan_out + 4 * points * L.fan_out
        energy_pj += words * cfg.energy_sram_pj_per_word
    rate = cfg.clock_ghz * 1e9 * cfg.utilisation
    engine_time = {"forward": ops["forward"] / (cfg.forward_pes * rate),
                   "backward": ops["backward"] / (cfg.backward_pes * rate),
                   "update": ops["update"] / (cfg.update_pes * rate)}
    time_s = max(engine_time.values()) if cfg.pipeline else sum(engine_time.values())
    return Estimate(time_s, energy_pj * 1e-12 + cfg.static_power_w * time_s, engine_time, ops)


def gpu_step(layers: list[LayerWorkload], gpu: GPUConfig, bytes_per_value: int = 4) -> Estimate:
    """Roofline time of the dense BPTT step on the GPU; energy = board power × time (upper bound)."""
    flops = 2 * sum(L.ops["forward dense MAC"] + L.ops["backward dense MAC"] + L.ops["update dense MAC"] for L in layers)
    values = sum(3 * L.fan_in * L.fan_out + L.T * L.batch * (2 * L.fan_in + 6 * L.fan_out) for L in layers)
    t_compute = flops / (gpu.peak_tflops_fp32 * 1e12 * gpu.efficiency)
    t_memory = values * bytes_per_value / (gpu.hbm_gb_s * 1e9)
    t = max(t_compute, t_memory)
    return Estimate(t, t * gpu.board_power_w, {"compute": t_compute, "memory": t_memory}, {"flops": flops})


def area_mm2(cfg: H2LearnConfig) -> float:
    return (cfg.forward_pes + cfg.update_pes + cfg.backward_pes) * cfg.area_per_pe_mm2 + cfg.sram_mb * cfg.area_per_mb_mm2


def compare(layers: list[LayerWorkload], cfg: H2LearnConfig | None = None, gpu: GPUConfig | None = None) -> dict[str, float]:
    """Modelled speedup, energy saving and area saving of H2Learn over the GPU."""
    cfg = cfg or H2LearnConfig.load()
    gpu = gpu or GPUConfig.load()
    h, g = h2learn_step(layers, cfg), gpu_step(layers, gpu)
    return {"speedup": g.time_s / h.time_s, "energy_saving": g.energy_j / h.energy_j,
            "area_saving": gpu.die_mm2 / area_mm2(cfg), "h2learn_time_s": h.time_s, "gpu_time_s": g.time_s,
            "h2learn_energy_j": h.energy_j, "gpu_energy_j": g.energy_j}


def pes_for_speedup(layers: list[LayerWorkload], target: float, cfg: H2LearnConfig | None = None,
                    gpu: GPUConfig | None = None) -> float:
    """How many PEs per engine (all three scaled alike) the model needs to reach ``target`` speedup."""
    cfg = cfg or H2LearnConfig.load()
    s = compare(layers, cfg, gpu)["speedup"]
    return cfg.forward_pes * target / s  # time is inversely proportional to the PE count


def sensitivity(layers: list[LayerWorkload], factor: float = 2.0, cfg: H2LearnConfig | None = None,
                gpu: GPUConfig | None = None):
    """Speedup and energy saving when each numeric assumption is divided and multiplied by ``factor``."""
    import pandas as pd

    cfg = cfg or H2LearnConfig.load()
    gpu = gpu or GPUConfig.load()
    base = compare(layers, cfg, gpu)
    rows = []
    numeric = [f for f in cfg.__dataclass_fields__ if isinstance(getattr(cfg, f), (int, float)) and not isinstance(getattr(cfg, f), bool)]
    for name in numeric:
        if name == "lut_group":
            continue
        for f in (1 / factor, factor):
            v = getattr(cfg, name) * f
            if name == "utilisation":
                v = min(v, 1.0)
            c = cfg.with_(**{name: int(round(v)) if name.endswith("pes") else v})
            r = compare(layers, c, gpu)
            rows.append({"assumption": f"h2learn.{name}", "factor": f, "speedup": r["speedup"],
                         "energy_saving": r["energy_saving"], "area_saving": r["area_saving"]})
    for name in ("peak_tflops_fp32", "efficiency", "board_power_w"):
        for f in (1 / factor, factor):
            v = getattr(gpu, name) * f
            g = replace(gpu, **{name: min(v, 1.0) if name == "efficiency" else v})
            r = compare(layers, cfg, g)
            rows.append({"assumption": f"v100.{name}", "factor": f, "speedup": r["speedup"],
                         "energy_saving": r["energy_saving"], "area_saving": r["area_saving"]})
    df = pd.DataFrame(rows)
    df["speedup change"] = df["speedup"] / base["speedup"]
    df["energy change"] = df["energy_saving"] / base["energy_saving"]
    df["area change"] = df["area_saving"] / base["area_saving"]
    return df


# --- robustness of the modelled claims to the assumptions ------------------------------------

TECHNIQUES = {"lut": {"lut": False}, "dual_sparsity": {"dual_sparsity": False}, "pipeline": {"pipeline": False}}
_CAPPED = {("h2learn", "utilisation"), ("v100", "efficiency")}  # fractions: never above 1


def constants(table: dict | None = None) -> list[dict]:
    """Every numeric constant of the model (``lut_group`` aside: it is a chapter parameter) as
    ``{section, name, value, provenance, assumed}``; ``assumed`` when its provenance begins
    with "assumed" (the values the random search draws)."""
    table = table or _table()
    out = []
    for section in ("h2learn", "v100"):
        for name, entry in table[section].items():
            if name == "lut_group":
                continue
            prov = str(entry["provenance"])
            out.append({"section": section, "name": name, "value": float(entry["value"]), "provenance": prov,
                        "assumed": prov.strip().lower().startswith("assumed")})
    return out


def scaled(cfg: H2LearnConfig, gpu: GPUConfig, factors: dict[tuple[str, str], float]) -> tuple[H2LearnConfig, GPUConfig]:
    """``cfg`` and ``gpu`` with each named constant ``(section, name)`` multiplied by its factor;
    PE counts are rounded (at least 1), utilisation and GPU efficiency capped at 1."""
    kw: dict[str, dict[str, float]] = {"h2learn": {}, "v100": {}}
    for (section, name), f in factors.items():
        v = getattr(cfg if section == "h2learn" else gpu, name) * f
        if (section, name) in _CAPPED:
            v = min(v, 1.0)
        if name.endswith("pes"):
            v = max(1, int(round(v)))
        kw[section][name] = v
    return cfg.with_(**kw["h2learn"]), replace(gpu, **kw["v100"])


def claim_metrics(workloads: dict[str, list[LayerWorkload]], cfg: H2LearnConfig, gpu: GPUConfig) -> dict[str, float]:
    """The modelled numbers the chapter's claims read, over all ``workloads``:

    ``speedup_lowest`` / ``speedup_highest`` and ``energy_saving_lowest`` / ``energy_saving_highest``
    (the two ends of the span over the workloads), ``area_saving``, and for each technique
    ``<technique>_gain_min``: the smallest, over the workloads, of the speedup with every technique
    on divided by the speedup with that technique switched off (above 1: it helps on every workload)."""
    on = {w: compare(layers, cfg, gpu) for w, layers in workloads.items()}
    sp = [r["speedup"] for r in on.values()]
    en = [r["energy_saving"] for r in on.values()]
    m = {"speedup_lowest": min(sp), "speedup_highest": max(sp), "energy_saving_lowest": min(en),
         "energy_saving_highest": max(en), "area_saving": gpu.die_mm2 / area_mm2(cfg)}
    for tech, off in TECHNIQUES.items():
        m[f"{tech}_gain_min"] = min(on[w]["speedup"] / compare(layers, cfg.with_(**off), gpu)["speedup"]
                                    for w, layers in workloads.items())
    return m


def metric_quantities(metrics: dict[str, float]) -> list:
    """The metrics as exact quantities (deterministic model outputs from declared constants)."""
    from compendium.book.quantities import Quantity

    return [Quantity.exact(k, v, "x" if not k.endswith("gain_min") else "") for k, v in metrics.items()]


def _sensitive(claims) -> list:
    return [c for c in claims if c.rule is not None and c.modelled and c.modelled.get("sensitivity")]


def assumption_search(workloads: dict[str, list[LayerWorkload]], claims, cfg: H2LearnConfig | None = None,
                      gpu: GPUConfig | None = None, draws: int = 2000, factor: float = 2.0, seed: int = 0):
    """Random search over the assumed constants: each drawn log-uniformly in
    ``[value / factor, value × factor]`` (independently, seeded), the sourced ones held.

    For every claim with a ``modelled.sensitivity`` quantity, measures the fraction of draws
    under which its declared rule holds ("reproduced" on that draw's exact metrics), as a rate
    with a Wilson interval named by that quantity. Returns ``(quantities, draws_table)``; the
    table has one row per draw: the log2 factor of each assumed constant, the metrics, and
    whether each claim held."""
    import numpy as np
    import pandas as pd

    from compendium.book.quantities import Quantity

    draws = smoke.limit(draws, smoke.DRAWS)  # smoke mode: a few draws
    cfg = cfg or H2LearnConfig.load()
    gpu = gpu or GPUConfig.load()
    drawn = [(c["section"], c["name"]) for c in constants() if c["assumed"]]
    rng = np.random.default_rng(seed)
    logf = rng.uniform(-np.log(factor), np.log(factor), size=(int(draws), len(drawn)))
    sens = _sensitive(claims)
    rows = []
    for i in range(int(draws)):
        c2, g2 = scaled(cfg, gpu, {k: float(np.exp(x)) for k, x in zip(drawn, logf[i])})
        m = claim_metrics(workloads, c2, g2)
        row = {f"log2 {s}.{n}": float(x / np.log(2)) for (s, n), x in zip(drawn, logf[i])}
        row.update(m)
        row.update({f"holds {c.id}": c.holds_on(m) for c in sens})
        rows.append(row)
    table = pd.DataFrame(rows)
    quantities = [Quantity.rate(c.modelled["sensitivity"], int(table[f"holds {c.id}"].sum()), int(draws)) for c in sens]
    return quantities, table


def _runs(mask) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


def assumption_margins(workloads: dict[str, list[LayerWorkload]], claims, cfg: H2LearnConfig | None = None,
                       gpu: GPUConfig | None = None, span: float = 16.0, points: int = 161):
    """One constant at a time (the others at their table values), multiplied by factors from
    ``1/span`` to ``span`` (log grid): for each claim with a sensitivity quantity, the range of
    factors within which its declared rule holds, and how far the constant can move before the
    claim's verdict under the model changes (``flip``: the factor nearest 1 at which it does;
    ``None`` when it never does on the grid). Returns a long table, one row per constant and claim."""
    import numpy as np
    import pandas as pd

    cfg = cfg or H2LearnConfig.load()
    gpu = gpu or GPUConfig.load()
    grid = np.geomspace(1 / span, span, points)
    one = int(np.argmin(np.abs(np.log(grid))))
    grid[one] = 1.0
    sens = _sensitive(claims)
    rows = []
    for const in constants():
        key = (const["section"], const["name"])
        held = {c.id: [] for c in sens}
        for f in grid:
            m = claim_metrics(workloads, *scaled(cfg, gpu, {key: float(f)}))
            for c in sens:
                held[c.id].append(c.holds_on(m))
        for c in sens:
            h = np.array(held[c.id])
            flips = [f for f, x in zip(grid, h) if x != h[one]]
            flip = min(flips, key=lambda f: abs(np.log(f))) if flips else None
            runs = _runs(h)
            if not runs:
                where = f"never in 1/{span:g}–{span:g}×"
            else:
                near = min(runs, key=lambda r: 0 if r[0] <= one <= r[1] else min(abs(np.log(grid[r[0]])), abs(np.log(grid[r[1]]))))
                lo = "≤1/%g" % span if near[0] == 0 else f"{grid[near[0]]:.2g}"
                hi = "≥%g" % span if near[1] == points - 1 else f"{grid[near[1]]:.2g}"
                where = ("holds for ×" if h[one] else "holds only for ×") + f"{lo}–{hi}" + \
                    (f" (and {len(runs) - 1} other range{'s' if len(runs) > 2 else ''})" if len(runs) > 1 else "")
            rows.append({"constant": f"{const['section']}.{const['name']}", "value": const["value"],
                         "assumed": const["assumed"], "claim": c.id, "holds at ×1": bool(h[one]),
                         "flip": flip, "distance (log2)": abs(float(np.log2(flip))) if flip else np.inf, "where": where})
    return pd.DataFrame(rows)


def margin_table(margins):
    """:func:`assumption_margins` as one row per constant that changes some claim's outcome on
    the grid: where each claim holds, the factor nearest 1 at which an outcome changes, and how
    far that is (``×`` the larger of the factor and its inverse); sorted so that the constants
    the conclusions depend on most come first. Returns ``(table, unmoved)``: ``unmoved`` lists
    the constants that change no claim's outcome anywhere on the grid."""
    import numpy as np

    by = margins.groupby("constant", sort=False)
    nearest = by["distance (log2)"].min().sort_values(kind="stable")
    moved = [c for c in nearest.index if np.isfinite(nearest[c])]
    unmoved = [c for c in nearest.index if not np.isfinite(nearest[c])]
    table = margins.pivot(index="constant", columns="claim", values="where").loc[moved]
    flips = margins.dropna(subset=["flip"]).sort_values("distance (log2)").drop_duplicates("constant").set_index("constant")
    table.insert(0, "move needed (×)", [2 ** nearest[c] for c in moved])
    table.insert(0, "first change at ×", [flips.loc[c, "flip"] for c in moved])
    table.insert(0, "assumed", by["assumed"].first().loc[moved])
    table.columns.name = None
    return table, unmoved
