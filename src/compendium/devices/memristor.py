"""A phenomenological three-terminal synapse with two independent state variables
(after Zhang et al., arXiv:1810.00898, whose device shows concomitant STP and LTP through
independent physical mechanisms; their equations and figures were not transcribed, so this
model reproduces the *claimed behaviours*, not fitted device curves).

Short-term plasticity — Tsodyks–Markram dynamics on the drain (signal) terminal. Between
pulses the utilisation ``u`` decays to 0 with ``τ_fac`` and the resources ``x`` recover to 1
with ``τ_rec``; at a pulse of amplitude ``V``::

    u⁺ = u⁻ + U(V) (1 - u⁻),      efficacy = g · u⁺ · x⁻,      x⁺ = x⁻ (1 - u⁺)

so a lone pulse has efficacy ``g · U(V)``. ``U(V)`` grows with amplitude, so intensity moves
the synapse between facilitation (small ``U``) and depression (large ``U``), and so does
frequency (facilitation needs pulses faster than ``τ_fac``, depression faster than ``τ_rec``).

Long-term plasticity — a non-volatile conductance ``g`` on the gate terminal: a gate pulse
above ``V_gate_th`` potentiates (``g += α_p (g_max - g)``) or, negative, depresses
(``g -= α_d (g - g_min)``); below threshold it does nothing. ``g`` persists without input
(``τ_retention`` = ∞). The transient efficacy combines both multiplicatively: ``g · u⁺ · x⁻``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from importlib import resources
from typing import Iterable

import numpy as np
import yaml

from compendium import smoke


@dataclass(frozen=True)
class SynapseParams:
    U0: float
    U_slope: float
    V_ref: float
    tau_fac: float
    tau_rec: float
    g_min: float
    g_max: float
    alpha_p: float
    alpha_d: float
    V_gate_th: float
    tau_retention: float

    @classmethod
    def load(cls) -> "SynapseParams":
        table = yaml.safe_load(resources.files("compendium.devices").joinpath("memristor.yaml").read_text())["synapse"]
        return cls(**{f.name: float(table[f.name]["value"]) for f in fields(cls)})

    @staticmethod
    def provenance() -> dict[str, dict]:
        return yaml.safe_load(resources.files("compendium.devices").joinpath("memristor.yaml").read_text())["synapse"]

    def utilisation(self, amplitude: float) -> float:
        """``U(V)``: ``U0`` at and below ``V_ref``, rising towards 1 above it."""
        if amplitude <= self.V_ref:
            return self.U0 * max(amplitude, 0.0) / self.V_ref
        return 1 - (1 - self.U0) * math.exp(-self.U_slope * (amplitude - self.V_ref))


@dataclass
class SynapseState:
    u: float = 0.0
    x: float = 1.0
    g: float = 1.0
    t: float = 0.0


class ThreeTerminalSynapse:
    """Event-driven simulation: drain pulses read the synapse (STP), gate pulses write it (LTP).

    ``stp=False`` freezes ``u`` at ``U(V)`` and ``x`` at 1 (no short-term memory);
    ``ltp=False`` ignores gate pulses (no long-term memory)."""

    def __init__(self, params: SynapseParams | None = None, g0: float | None = None, stp: bool = True, ltp: bool = True):
        self.p = params or SynapseParams.load()
        self.stp, self.ltp = stp, ltp
        self.state = SynapseState(g=self.p.g_min if g0 is None else g0)

    def _relax(self, t: float) -> None:
        s, p = self.state, self.p
        dt = t - s.t
        if dt < 0:
            raise ValueError(f"pulses must come in time order (t={t} < {s.t})")
        s.u *= math.exp(-dt / p.tau_fac)
        s.x = 1 - (1 - s.x) * math.exp(-dt / p.tau_rec)
        if math.isfinite(p.tau_retention):
            s.g = p.g_min + (s.g - p.g_min) * math.exp(-dt / p.tau_retention)
        s.t = t

    def read(self, t: float, amplitude: float | None = None) -> float:
        """A drain pulse at time ``t``: returns the transient efficacy ``g · u⁺ · x⁻``."""
        U = self.p.utilisation(self.p.V_ref if amplitude is None else amplitude)
        self._relax(t)
        s = self.state
        if not self.stp:
            return s.g * U
        u_plus = s.u + U * (1 - s.u)
        efficacy = s.g * u_plus * s.x
        s.u, s.x = u_plus, s.x * (1 - u_plus)
        return efficacy

    def write(self, t: float, amplitude: float) -> float:
        """A gate pulse: potentiates (positive) or depresses (negative) above threshold; returns ``g``."""
        self._relax(t)
        s, p = self.state, self.p
        if self.ltp and abs(amplitude) >= p.V_gate_th:
            if amplitude > 0:
                s.g += p.alpha_p * (p.g_max - s.g)
            else:
                s.g -= p.alpha_d * (s.g - p.g_min)
        return s.g


def ppf(intervals: Iterable[float], params: SynapseParams | None = None, amplitude: float | None = None) -> np.ndarray:
    """Paired-pulse facilitation index ``A2 / A1`` for each inter-pulse interval (s)."""
    out = []
    for dt in intervals:
        syn = ThreeTerminalSynapse(params)
        a1 = syn.read(0.0, amplitude)
        a2 = syn.read(float(dt), amplitude)
        out.append(a2 / a1)
    return np.asarray(out)


def fit_double_exponential(intervals: np.ndarray, index: np.ndarray) -> dict[str, float]:
    """Fit ``PPF = 1 + C1 exp(-Δt/τ1) + C2 exp(-Δt/τ2)`` (the usual device-paper form); τ1 < τ2."""
    from scipy.optimize import curve_fit

    def f(t, c1, t1, c2, t2):
        return 1 + c1 * np.exp(-t / t1) + c2 * np.exp(-t / t2)

    best = None
    span = float(intervals[-1] / intervals[0])
    for ratio in (3.0, 10.0, 30.0):  # several starts: one-component optima are common local minima
        for sign in (1.0, -1.0):
            t1 = float(intervals[0] * span ** 0.3)
            p0 = (float(index[0] - 1) + 0.2, t1, sign * 0.2, t1 * ratio)
            try:
                popt, _ = curve_fit(f, intervals, index, p0=p0, maxfev=20000)
            except RuntimeError:
                continue
            rmse = float(np.sqrt(np.mean((f(intervals, *popt) - index) ** 2)))
            if best is None or rmse < best[1]:
                best = (popt, rmse)
    if best is None:
        raise RuntimeError("the double-exponential fit did not converge from any start")
    (c1, t1, c2, t2), rmse = best
    if t1 > t2:
        c1, t1, c2, t2 = c2, t2, c1, t1
    return {"C1": float(c1), "tau1": float(t1), "C2": float(c2), "tau2": float(t2), "rmse": rmse}


def train_gain(frequency: float, amplitude: float | None = None, n_pulses: int = 10,
               params: SynapseParams | None = None) -> float:
    """Efficacy of the last pulse of a regular train over that of the first: > 1 facilitation, < 1 depression."""
    syn = ThreeTerminalSynapse(params)
    effs = [syn.read(i / frequency, amplitude) for i in range(n_pulses)]
    return effs[-1] / effs[0]


def retention(params: SynapseParams | None = None, n_write: int = 20, n_read: int = 20, read_rate: float = 50.0,
              wait: float = 3600.0) -> dict[str, float]:
    """Potentiate through the gate while reading through the drain, then wait: the short-term
    state returns to baseline, the long-term one stays. Returns the states before and after."""
    p = params or SynapseParams.load()
    syn = ThreeTerminalSynapse(p)
    g0 = syn.state.g
    t = 0.0
    for i in range(n_write):
        syn.write(t, p.V_gate_th * 1.5)
        t += 0.01
    for i in range(n_read):
        syn.read(t)
        t += 1.0 / read_rate
    during = {"u": syn.state.u, "x": syn.state.x, "g": syn.state.g}
    syn._relax(t + wait)
    return {"g_before": g0, "g_after_writes": during["g"], "u_after_train": during["u"], "x_after_train": during["x"],
            "g_after_wait": syn.state.g, "u_after_wait": syn.state.u, "x_after_wait": syn.state.x}


# --- the claims' quantities, and how special the chosen parameters are -------------------------

MAP_FREQUENCIES = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)  # Hz, the chapter's map
MAP_AMPLITUDES = (0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0)  # V
PROBE_AMPLITUDE, PROBE_FREQUENCY = 0.6, 20.0  # the row and column of the map the full-range claim reads
# drawn in the robustness search; tau_retention stays infinite (non-volatile LTP is part of the model)
DRAWN = ("U0", "U_slope", "V_ref", "tau_fac", "tau_rec", "g_min", "g_max", "alpha_p", "alpha_d", "V_gate_th")


def concomitance(params: SynapseParams | None = None, wait: float = 3600.0) -> dict[str, float]:
    """What the concomitant claim reads, for one parameter set (numerical zeros when it holds):

    ``stp_left_after_wait``   max(|u|, |1 - x|) after writing and reading concurrently and waiting ``wait`` s;
    ``ltp_lost_after_wait``   fraction of the written conductance change lost after the wait
                              (1 when the writes changed nothing);
    ``g_change_by_reads``     |Δg| (µS) after a 50 Hz read train alone;
    ``stp_change_by_writes``  max(|u|, |1 - x|) after gate pulses alone."""
    p = params or SynapseParams.load()
    r = retention(p, wait=wait)
    written = r["g_after_writes"] - r["g_before"]
    lost = 1.0 - (r["g_after_wait"] - r["g_before"]) / written if written > 0 else 1.0
    reads = ThreeTerminalSynapse(p)
    for i in range(20):
        reads.read(i * 0.02)
    writes = ThreeTerminalSynapse(p)
    for i in range(20):
        writes.write(i * 0.01, 1.5 * p.V_gate_th)
    return {"stp_left_after_wait": max(abs(r["u_after_wait"]), abs(1.0 - r["x_after_wait"])),
            "ltp_lost_after_wait": abs(lost),
            "g_change_by_reads": abs(reads.state.g - p.g_min),
            "stp_change_by_writes": max(abs(writes.state.u), abs(1.0 - writes.state.x))}


def modulation(params: SynapseParams | None = None, n_pulses: int = 10, frequencies=MAP_FREQUENCIES,
               amplitudes=MAP_AMPLITUDES, probe_amplitude: float = PROBE_AMPLITUDE,
               probe_frequency: float = PROBE_FREQUENCY) -> dict[str, float]:
    """What the full-range claim reads: the lowest and highest train gain (:func:`train_gain`)
    across ``frequencies`` at ``probe_amplitude`` and across ``amplitudes`` at ``probe_frequency``
    (below 1: depression, above 1: facilitation)."""
    by_f = [train_gain(f, probe_amplitude, n_pulses, params) for f in frequencies]
    by_a = [train_gain(probe_frequency, a, n_pulses, params) for a in amplitudes]
    return {"gain_min_by_frequency": min(by_f), "gain_max_by_frequency": max(by_f),
            "gain_min_by_intensity": min(by_a), "gain_max_by_intensity": max(by_a)}


def exact_quantities(values: dict[str, float]) -> list:
    """Deterministic model outputs as exact quantities."""
    from compendium.book.quantities import Quantity

    return [Quantity.exact(k, v) for k, v in values.items()]


def random_synapses(n: int, seed: int = 0, factor: float = 2.0, base: SynapseParams | None = None) -> list[SynapseParams]:
    """``n`` parameter sets around ``base`` (default: the chosen one): each parameter in
    :data:`DRAWN` drawn log-uniformly within ``[value / factor, value × factor]``, independently
    (seeded); ``tau_retention`` kept. ``g_max`` is kept above ``g_min``."""
    base = base or SynapseParams.load()
    rng = np.random.default_rng(seed)
    logf = rng.uniform(-math.log(factor), math.log(factor), size=(int(n), len(DRAWN)))
    out = []
    for row in logf:
        kw = {k: getattr(base, k) * math.exp(x) for k, x in zip(DRAWN, row)}
        kw["g_max"] = max(kw["g_max"], kw["g_min"] * 1.01)
        out.append(SynapseParams(**{**{f.name: getattr(base, f.name) for f in fields(SynapseParams)}, **kw}))
    return out


def synapse_robustness(claims, draws: int, seed: int = 0, n_pulses: int = 10, factor: float = 2.0):
    """For the synapse claims (``concomitant``, ``full_range``): the fraction of random parameter
    sets (:func:`random_synapses`) under which each claim's declared rule holds, with the
    protocol and probe points unchanged — a rate with a Wilson interval, named by the claim's
    ``modelled.sensitivity``. Returns ``(quantities, table)``, the table one row per draw."""
    import pandas as pd

    from compendium.book.quantities import Quantity

    draws = smoke.limit(draws, smoke.DRAWS)
    readers = {"concomitant": lambda p: concomitance(p), "full_range": lambda p: modulation(p, n_pulses)}
    chosen = {c.id: c for c in claims if c.id in readers and c.rule is not None and c.modelled
              and c.modelled.get("sensitivity")}
    rows = []
    for p in random_synapses(draws, seed, factor):
        row = {k: getattr(p, k) for k in DRAWN}
        for cid, c in chosen.items():
            values = readers[cid](p)
            row.update(values)
            row[f"holds {cid}"] = c.holds_on(values)
        rows.append(row)
    table = pd.DataFrame(rows)
    return [Quantity.rate(c.modelled["sensitivity"], int(table[f"holds {cid}"].sum()), int(draws))
            for cid, c in chosen.items()], table
