"""A sleep–wake flip-flop built from the three-terminal synapse (our model; the paper's
circuit equations were not transcribed).

Two rate populations, wake-promoting ``W`` and sleep-promoting ``S`` (rates in [0, 1], time
in **hours**), inhibit each other. Each excites itself through a *short-term* facilitating
synapse (utilisation ``u``, the rate form of the device's STP), and the sleep population is
driven through a *long-term* conductance ``g`` (the device's non-volatile LTP state) that is
potentiated by wake activity and depressed by sleep activity — sleep pressure stored in a
synapse::

    τ dW/dt = -W + σ(J u_W W - C S + I_W - θ)
    τ dS/dt = -S + σ(J u_S S - C W + G g - θ)
    du/dt   = -(u - U)/τ_f + ν U (1 - u) r          (r = W or S; STP)
    dg/dt   = a_p W (1 - g) - a_d S g                 (LTP; no decay without activity)

with ``σ(z) = 1 / (1 + exp(-z/κ))``. ``stp=False`` fixes ``u = U``; ``ltp=False`` fixes ``g``.
The device's STP acts in milliseconds and the cycle takes a day: the circuit uses the same
equations with time constants in hours, a rescaling stated here rather than hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compendium import smoke

PARAM_NAMES = ("J", "C", "I_W", "G", "theta", "U", "tau_f", "nu", "a_p", "a_d")
# Ranges of the random parameter search (ours).
SEARCH_RANGES = {"J": (0.5, 3.0), "C": (0.1, 1.5), "I_W": (0.3, 1.2), "G": (0.5, 3.0), "theta": (0.3, 1.0),
                 "U": (0.05, 0.3), "tau_f": (0.2, 3.0), "nu": (1.0, 10.0), "a_p": (0.02, 0.3), "a_d": (0.02, 0.5)}
# A representative set, found by that search (seed 0) as one whose cycle is day-like and which
# stops alternating when either plasticity is removed. It is one set, not a typical one: the
# chapter reports how often the search finds such behaviour.
EXAMPLE = {"J": 0.769, "C": 1.335, "I_W": 0.339, "G": 2.498, "theta": 0.391, "U": 0.124, "tau_f": 2.043,
           "nu": 5.615, "a_p": 0.072, "a_d": 0.377}
KAPPA, TAU = 0.08, 0.05  # sigmoid softness; population time constant (h)


def random_parameters(n: int, seed: int = 0) -> np.ndarray:
    """``n`` random circuit parameter sets (rows) within :data:`SEARCH_RANGES` (seeded; a few in smoke mode)."""
    n = smoke.limit(n, smoke.DRAWS)
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(*SEARCH_RANGES[k], n) for k in PARAM_NAMES])


def as_array(params: dict[str, float]) -> np.ndarray:
    return np.array([[params[k] for k in PARAM_NAMES]], dtype=float)


def simulate(P: np.ndarray, stp: bool = True, ltp: bool = True, hours: float = 120.0, dt: float = 0.01,
             g0: float = 0.3) -> dict[str, np.ndarray]:
    """Euler integration of ``m`` circuits at once (``P`` is ``[m, 10]``, columns :data:`PARAM_NAMES`).
    Returns time (h) and ``[n_steps, m]`` traces of W, S, u_W, u_S, g."""
    J, C, I_W, G, theta, U, tau_f, nu, a_p, a_d = (P[:, k] for k in range(P.shape[1]))
    m, n = P.shape[0], int(round(hours / dt))
    W, S, uW, uS, g = np.full(m, 0.9), np.zeros(m), U.copy(), U.copy(), np.full(m, g0)
    out = {k: np.empty((n, m), dtype=np.float32) for k in ("W", "S", "u_W", "u_S", "g")}

    def sig(z):
        return 1 / (1 + np.exp(-np.clip(z / KAPPA, -50, 50)))

    for i in range(n):
        eW = J * (uW if stp else U) * W - C * S + I_W - theta
        eS = J * (uS if stp else U) * S - C * W + G * g - theta
        W, S = W + dt / TAU * (-W + sig(eW)), S + dt / TAU * (-S + sig(eS))
        if stp:
            uW = uW + dt * (-(uW - U) / tau_f + nu * U * (1 - uW) * W)
            uS = uS + dt * (-(uS - U) / tau_f + nu * U * (1 - uS) * S)
        if ltp:
            g = g + dt * (a_p * W * (1 - g) - a_d * S * g)
        out["W"][i], out["S"][i], out["u_W"][i], out["u_S"][i], out["g"][i] = W, S, uW, uS, g
    out["t"] = np.arange(1, n + 1) * dt
    return out


@dataclass
class Alternation:
    transitions: np.ndarray  # state changes after the first third (transient dropped)
    wake_fraction: np.ndarray
    period_h: np.ndarray  # inf when it does not alternate

    @property
    def alternates(self) -> np.ndarray:
        return self.transitions >= 4

    def day_like(self, period=(16.0, 36.0), wake=(0.55, 0.8)) -> np.ndarray:
        return self.alternates & (self.period_h > period[0]) & (self.period_h < period[1]) & \
            (self.wake_fraction > wake[0]) & (self.wake_fraction < wake[1])


def alternation(trace: dict[str, np.ndarray]) -> Alternation:
    """Wake is ``W > 0.5``; counts state changes over the last two thirds of the run."""
    t, W = trace["t"], trace["W"]
    keep = W[W.shape[0] // 3:] > 0.5
    transitions = np.sum(np.diff(keep.astype(np.int8), axis=0) != 0, axis=0)
    span = (t[-1] - t[t.shape[0] // 3]) if t.shape[0] > 3 else 0.0
    period = np.where(transitions >= 2, 2 * span / np.maximum(transitions, 1), np.inf)
    return Alternation(transitions, keep.mean(0), period)


# the three circuits the chapter compares, and the short names of their quantities
VARIANTS = {"STP + LTP": (True, True), "LTP only (no STP)": (False, True), "STP only (no LTP)": (True, False)}
SHORT = {"STP + LTP": "both", "LTP only (no STP)": "no_stp", "STP only (no LTP)": "no_ltp"}


def needs_both(search: dict[str, Alternation]) -> np.ndarray:
    """Per parameter set: alternates with both plasticities and stops when either is removed."""
    return search["STP + LTP"].alternates & ~search["LTP only (no STP)"].alternates & ~search["STP only (no LTP)"].alternates


def sleep_wake_quantities(example: dict[str, Alternation], search: dict[str, Alternation]) -> list:
    """What the sleep–wake claim reads, from the representative set and the random search
    (both keyed by :data:`VARIANTS` labels):

    ``example_transitions_<v>``  state changes of the representative circuit (exact; it
                                 alternates at 4 or more);
    ``alternates_<v>``           fraction of the search's parameter sets that alternate (Wilson);
    ``needs_both_share``         fraction that alternate with both plasticities and stop when either
                                 is removed (Wilson) — the per-set version of what the representative
                                 set was chosen for.
    ``<v>`` is ``both``, ``no_stp`` or ``no_ltp``."""
    from compendium.book.quantities import Quantity

    out = [Quantity.exact(f"example_transitions_{SHORT[k]}", float(a.transitions[0])) for k, a in example.items()]
    out += [Quantity.rate(f"alternates_{SHORT[k]}", int(a.alternates.sum()), int(a.alternates.size)) for k, a in search.items()]
    nb = needs_both(search)
    out.append(Quantity.rate("needs_both_share", int(nb.sum()), int(nb.size)))
    return out
