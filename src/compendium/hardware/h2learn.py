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
