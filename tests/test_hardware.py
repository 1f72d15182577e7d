"""Energy constants, BPTT workload counts, the LUT arithmetic and the H2Learn model."""


import pytest
import torch
from torch import nn

from compendium.hardware import EnergyModel
from compendium.hardware import h2learn
from compendium.hardware.workload import LayerWorkload, characterise
from compendium.spiking.nets import spiking_mlp


def test_energy_model_uses_its_cited_constants():
    e = EnergyModel.load("horowitz45", "fp32")
    assert e.mac_pj == pytest.approx(0.9 + 3.7) and e.ac_pj == pytest.approx(0.9)
    assert "Horowitz" in e.source
    assert e.energy_pj(macs=10, acs=100) == pytest.approx(10 * 4.6 + 100 * 0.9)
    with pytest.raises(KeyError):
        EnergyModel.load("horowitz45", "fp8")


@pytest.mark.parametrize("K", [1, 2, 3, 4, 5])
def test_lut_paths_equal_the_dense_products(K):
    g = torch.Generator().manual_seed(K)
    spikes = (torch.rand(7, 11, generator=g) < 0.4).double()
    w = torch.randn(5, 11, generator=g, dtype=torch.float64)
    torch.testing.assert_close(h2learn.lut_forward(spikes, w, K), spikes @ w.T)
    delta = torch.randn(7, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(h2learn.lut_weight_update(delta, spikes, K), delta.T @ spikes)


def test_workload_counts_by_hand():
    """Direct coding of a binary image: the first layer's input spikes are the image itself."""
    torch.manual_seed(0)
    net = spiking_mlp((6, 4, 3, 2), T=3, encoding="direct", lif={"decay": 0.5, "threshold": 0.2, "detach_reset": True})
    x = torch.tensor([[1.0, 0, 1, 0, 0, 1], [0, 0, 0, 1, 0, 0]])
    y = torch.tensor([0, 1])
    first, second, readout = characterise(net, x, y)
    assert first.fan_in == 6 and first.fan_out == 4 and first.T == 3 and first.batch == 2
    assert first.ops["forward dense MAC"] == 3 * 2 * 6 * 4
    assert first.ops["forward AC"] == 3 * (3 + 1) * 4  # 4 ones per step, each reaching 4 outputs
    assert first.spike_density == pytest.approx(4 / 12)
    assert first.ops["backward dense MAC"] == 0  # no gradient is needed for the network's input
    assert second.ops["backward dense MAC"] == 3 * 2 * 4 * 3
    assert 0 <= second.ops["backward dual-sparse MAC"] <= second.ops["backward dense MAC"]
    assert 0 <= second.ops["update sparse AC"] <= second.ops["update dense MAC"]
    # the non-spiking readout (3 -> 2) is a layer too: the cross-entropy sends a gradient to both of
    # its outputs at every step, and it reaches only the hidden neurons whose own h(u) is non-zero
    assert (readout.fan_in, readout.fan_out, readout.T, readout.batch) == (3, 2, 3, 2)
    assert readout.surrogate_density == 1.0 and readout.grad_density == 1.0
    assert readout.ops["backward dense MAC"] == 3 * 2 * 3 * 2
    assert readout.ops["backward dual-sparse MAC"] == pytest.approx(2 * second.surrogate_density * 3 * 2 * 3)
    with pytest.raises(ValueError, match="no Linear"):
        characterise(nn.Sequential(nn.Linear(3, 2)), torch.rand(1, 3), torch.tensor([0]))


def _layer(scale=1.0):
    dense = 8 * 32 * 100 * 50
    return LayerWorkload("l", 100, 50, 8, 32, 0.2, 0.3, 0.4, ops={
        "forward dense MAC": dense, "forward AC": 0.2 * dense * scale, "backward dense MAC": dense,
        "backward dual-sparse MAC": min(0.12 * dense * scale, dense), "update dense MAC": dense,
        "update sparse AC": min(0.08 * dense * scale, dense)})


def test_more_activity_never_costs_fewer_cycles():
    for kw in ({}, {"lut": False, "event_driven": True}, {"lut": False}, {"pipeline": False}):
        cfg = h2learn.H2LearnConfig.load(**kw)
        times = [h2learn.h2learn_step([_layer(s)], cfg).time_s for s in (0.25, 0.5, 1.0, 2.0, 4.0)]
        assert all(a <= b + 1e-15 for a, b in zip(times, times[1:])), kw


def test_model_arithmetic_and_ablations():
    cfg = h2learn.H2LearnConfig.load()
    L = _layer()
    est = h2learn.h2learn_step([L], cfg.with_(pipeline=False))
    rate = cfg.clock_ghz * 1e9 * cfg.utilisation
    assert est.engine_time_s["backward"] == pytest.approx(L.ops["backward dual-sparse MAC"] / (cfg.backward_pes * rate))
    assert est.time_s == pytest.approx(sum(est.engine_time_s.values()))
    assert h2learn.h2learn_step([L], cfg).time_s == pytest.approx(max(est.engine_time_s.values()))
    assert h2learn.h2learn_step([L], cfg.with_(dual_sparsity=False)).ops["backward"] == L.ops["backward dense MAC"]
    gpu = h2learn.GPUConfig.load()
    g = h2learn.gpu_step([L], gpu)
    assert g.ops["flops"] == 2 * 3 * L.ops["forward dense MAC"]
    assert g.energy_j == pytest.approx(g.time_s * gpu.board_power_w)
    assert h2learn.area_mm2(cfg) == pytest.approx(3 * 512 * cfg.area_per_pe_mm2 + cfg.sram_mb * cfg.area_per_mb_mm2)
    need = h2learn.pes_for_speedup([L], 5.0, cfg, gpu)
    faster = cfg.with_(forward_pes=int(need), update_pes=int(need), backward_pes=int(need))
    assert h2learn.compare([L], faster, gpu)["speedup"] == pytest.approx(5.0, rel=0.01)


def test_every_hardware_number_has_a_provenance():
    for section in h2learn.provenance().values():
        for name, entry in section.items():
            assert entry.get("provenance"), name


# --- robustness of the modelled claims ---------------------------------------------------------

def _claims():
    from compendium.book.claims import PaperClaims
    from conftest import ROOT

    return PaperClaims.load(ROOT / "data" / "papers" / "h2learn.yaml").claims


def test_constants_and_scaling():
    consts = {f"{c['section']}.{c['name']}": c for c in h2learn.constants()}
    assert "h2learn.lut_group" not in consts
    assert consts["h2learn.clock_ghz"]["assumed"] and consts["v100.efficiency"]["assumed"]
    assert not consts["h2learn.energy_add_pj"]["assumed"] and not consts["v100.die_mm2"]["assumed"]
    cfg, gpu = h2learn.H2LearnConfig.load(), h2learn.GPUConfig.load()
    c2, g2 = h2learn.scaled(cfg, gpu, {("h2learn", "utilisation"): 2.0, ("h2learn", "forward_pes"): 1 / 3,
                                       ("v100", "efficiency"): 3.0, ("h2learn", "clock_ghz"): 0.5})
    assert c2.utilisation == 1.0 and g2.efficiency == 1.0  # fractions capped at 1
    assert c2.forward_pes == round(512 / 3) and isinstance(c2.forward_pes, int)
    assert c2.clock_ghz == pytest.approx(0.5) and c2.update_pes == cfg.update_pes


def test_claim_metrics_span_and_technique_gains():
    cfg, gpu = h2learn.H2LearnConfig.load(), h2learn.GPUConfig.load()
    work = {"a": [_layer(1.0)], "b": [_layer(3.0)]}
    m = h2learn.claim_metrics(work, cfg, gpu)
    each = [h2learn.compare(w, cfg, gpu)["speedup"] for w in work.values()]
    assert m["speedup_lowest"] == pytest.approx(min(each)) and m["speedup_highest"] == pytest.approx(max(each))
    assert m["area_saving"] == pytest.approx(gpu.die_mm2 / h2learn.area_mm2(cfg))
    off = min(h2learn.compare(w, cfg, gpu)["speedup"] / h2learn.compare(w, cfg.with_(pipeline=False), gpu)["speedup"]
              for w in work.values())
    assert m["pipeline_gain_min"] == pytest.approx(off) and m["pipeline_gain_min"] >= 1


def test_assumption_search_counts_the_draws_where_each_rule_holds():
    claims = _claims()
    work = {"a": [_layer(1.0)]}
    qs, table = h2learn.assumption_search(work, claims, draws=60, seed=3)
    assert {q.name for q in qs} == {"speedup_holds_share", "energy_saving_holds_share", "area_saving_holds_share",
                                    "techniques_help_holds_share"}
    area = next(q for q in qs if q.name == "area_saving_holds_share")
    assert area.method == "wilson" and area.n == 60
    assert area.estimate == pytest.approx(((table["area_saving"] - 7.38).abs() <= 1.0).mean())
    again, _ = h2learn.assumption_search(work, claims, draws=60, seed=3)
    assert [q.estimate for q in again] == [q.estimate for q in qs]  # seeded
    assert all(table.filter(like="log2 ").abs().max() <= 1.0)  # within ½×–2×


def test_margins_find_the_area_boundary_by_hand():
    """Area saving = 815 / (1536·0.03·f + 12): within 7.38 ± 1 for f in [1.850, 2.512]."""
    margins = h2learn.assumption_margins({"a": [_layer()]}, _claims(), points=321)
    row = margins[(margins.constant == "h2learn.area_per_pe_mm2") & (margins.claim == "area_saving")].iloc[0]
    assert not row["holds at ×1"] and row["flip"] == pytest.approx(1.850, rel=0.02)
    assert "1.9–2.5" in row["where"] or "1.8–2.5" in row["where"]
    table, unmoved = h2learn.margin_table(margins)
    assert "h2learn.energy_add_pj" in unmoved and "h2learn.area_per_pe_mm2" in table.index
