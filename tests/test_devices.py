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
