"""The three-terminal synapse and the sleep-wake circuit."""

import math

import numpy as np
import pytest

from compendium.devices import circuit
from compendium.devices.memristor import (SynapseParams, ThreeTerminalSynapse, fit_double_exponential, ppf, retention,
                                          train_gain)


def test_every_parameter_is_labelled():
    prov = SynapseParams.provenance()
    assert set(prov) == set(SynapseParams.__dataclass_fields__)
    assert all(v["provenance"] in ("chosen", "paper") for v in prov.values())


def test_one_pulse_by_hand():
    p = SynapseParams.load()
    syn = ThreeTerminalSynapse(p, g0=2.0)
    assert syn.read(0.0) == pytest.approx(2.0 * p.U0)  # u+ = U, x- = 1
    # second pulse after dt: u decays then jumps, x recovers from 1 - U
    dt = 0.03
    u = p.U0 * math.exp(-dt / p.tau_fac)
    u_plus = u + p.U0 * (1 - u)
    x = 1 - (1 - (1 - p.U0)) * math.exp(-dt / p.tau_rec)
    assert syn.read(dt) == pytest.approx(2.0 * u_plus * x)


def test_stp_decays_to_baseline_and_ltp_persists():
    r = retention(wait=3600.0)
    assert r["g_after_writes"] > r["g_before"] and r["g_after_wait"] == r["g_after_writes"]
    assert r["u_after_train"] > 0.1 and r["x_after_train"] < 0.9  # the train did change the short-term state
    assert r["u_after_wait"] == pytest.approx(0.0, abs=1e-12) and r["x_after_wait"] == pytest.approx(1.0)


def test_gate_pulses_below_threshold_do_nothing_and_ltp_can_be_removed():
    p = SynapseParams.load()
    syn = ThreeTerminalSynapse(p)
    assert syn.write(0.0, 0.9 * p.V_gate_th) == p.g_min
    assert syn.write(0.1, 1.2 * p.V_gate_th) > p.g_min
    g = syn.state.g
    assert syn.write(0.2, -1.2 * p.V_gate_th) < g
    assert ThreeTerminalSynapse(p, ltp=False).write(0.0, 5 * p.V_gate_th) == p.g_min
    with pytest.raises(ValueError, match="time order"):
        syn.read(0.0)


def test_ppf_above_one_for_short_intervals_and_one_for_long():
    idx = ppf([0.002, 0.01, 5.0, 20.0])
    assert idx[0] > 1.3 and idx[1] > 1.2
    assert idx[2] == pytest.approx(1.0, abs=1e-6) and idx[3] == pytest.approx(1.0, abs=1e-9)


def test_double_exponential_fit_recovers_known_constants():
    t = np.geomspace(0.001, 3, 50)
    y = 1 + 0.6 * np.exp(-t / 0.02) + 0.3 * np.exp(-t / 0.4)
    fit = fit_double_exponential(t, y)
    assert fit["tau1"] == pytest.approx(0.02, rel=1e-3) and fit["tau2"] == pytest.approx(0.4, rel=1e-3)
    assert fit["C1"] == pytest.approx(0.6, rel=1e-3) and fit["C2"] == pytest.approx(0.3, rel=1e-3)


def test_frequency_and_intensity_move_between_depression_and_facilitation():
    assert train_gain(20, 0.6) > 1 and train_gain(200, 0.6) < 1  # by frequency
    assert train_gain(20, 0.6) > 1 and train_gain(20, 2.0) < 1  # by intensity
    frozen = ThreeTerminalSynapse(stp=False)
    reads = [frozen.read(i * 0.005) for i in range(5)]  # 200 Hz: no facilitation, no depression
    assert reads == [reads[0]] * 5


def test_example_circuit_alternates_only_with_both_plasticities():
    """The representative set: both → a day-like cycle; either removed → no alternation.
    (The chapter shows how rare such sets are; see the search test below.)"""
    ex = circuit.as_array(circuit.EXAMPLE)
    both = circuit.alternation(circuit.simulate(ex, True, True, hours=96))
    assert both.alternates[0] and 16 < both.period_h[0] < 36
    assert not circuit.alternation(circuit.simulate(ex, False, True, hours=96)).alternates[0]
    assert not circuit.alternation(circuit.simulate(ex, True, False, hours=96)).alternates[0]


def test_without_ltp_nothing_alternates_in_the_search():
    P = circuit.random_parameters(300, seed=1)
    assert circuit.alternation(circuit.simulate(P, True, False, hours=72)).alternates.sum() == 0
    assert circuit.alternation(circuit.simulate(P, True, True, hours=72)).alternates.sum() > 0


# --- the claims' quantities and the robustness searches ----------------------------------------

def _claims():
    from compendium.book.claims import PaperClaims
    from conftest import ROOT

    return PaperClaims.load(ROOT / "data" / "papers" / "memristor.yaml").claims


def test_concomitance_is_zero_for_the_model_and_sees_volatile_ltp():
    from dataclasses import replace

    from compendium.devices.memristor import concomitance

    assert all(v <= 1e-12 for v in concomitance().values())
    volatile = concomitance(replace(SynapseParams.load(), tau_retention=600.0))
    assert volatile["ltp_lost_after_wait"] == pytest.approx(1 - math.exp(-3600 / 600), rel=1e-6)
    frozen = concomitance(replace(SynapseParams.load(), alpha_p=0.0))  # writes change nothing
    assert frozen["ltp_lost_after_wait"] == 1.0


def test_modulation_reads_the_probe_row_and_column():
    from compendium.devices.memristor import MAP_AMPLITUDES, MAP_FREQUENCIES, modulation

    m = modulation(n_pulses=10)
    row = [train_gain(f, 0.6, 10) for f in MAP_FREQUENCIES]
    col = [train_gain(20.0, a, 10) for a in MAP_AMPLITUDES]
    assert m["gain_min_by_frequency"] == min(row) and m["gain_max_by_frequency"] == max(row)
    assert m["gain_min_by_intensity"] == min(col) and m["gain_max_by_intensity"] == max(col)


def test_random_synapses_stay_within_the_factor_and_keep_retention():
    from compendium.devices.memristor import DRAWN, random_synapses

    base = SynapseParams.load()
    draws = random_synapses(50, seed=2)
    for p in draws:
        for k in DRAWN:
            assert getattr(base, k) / 2 - 1e-12 <= getattr(p, k) <= getattr(base, k) * 2 + 1e-12
        assert p.tau_retention == base.tau_retention and p.g_max > p.g_min
    assert random_synapses(50, seed=2) == draws


def test_synapse_robustness_counts_the_draws_where_each_rule_holds():
    from compendium.devices.memristor import synapse_robustness

    qs, table = synapse_robustness(_claims(), 40, seed=1)
    q = {x.name: x for x in qs}
    assert set(q) == {"concomitant_holds_share", "full_range_holds_share"}
    assert q["concomitant_holds_share"].estimate == 1.0  # independent state variables, by construction
    crosses = ((table.gain_min_by_frequency < 1) & (table.gain_max_by_frequency > 1) &
               (table.gain_min_by_intensity < 1) & (table.gain_max_by_intensity > 1))
    assert q["full_range_holds_share"].estimate == pytest.approx(crosses.mean()) and q["full_range_holds_share"].n == 40


def test_sleep_wake_quantities():
    P = circuit.random_parameters(60, seed=1)
    search = {k: circuit.alternation(circuit.simulate(P, *v, hours=48)) for k, v in circuit.VARIANTS.items()}
    ex = {k: circuit.alternation(circuit.simulate(circuit.as_array(circuit.EXAMPLE), *v, hours=48))
          for k, v in circuit.VARIANTS.items()}
    q = {x.name: x for x in circuit.sleep_wake_quantities(ex, search)}
    assert q["alternates_both"].estimate == pytest.approx(search["STP + LTP"].alternates.mean())
    assert q["alternates_no_ltp"].method == "wilson" and q["example_transitions_both"].method == "exact"
    nb = search["STP + LTP"].alternates & ~search["LTP only (no STP)"].alternates & ~search["STP only (no LTP)"].alternates
    assert q["needs_both_share"].estimate == pytest.approx(nb.mean())
