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
