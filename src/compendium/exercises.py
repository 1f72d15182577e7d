"""Checks for the book's coding exercises: ``check("primer", 1, answer)``.

Every chapter has at least one coding exercise whose answer a student can check. Each check
computes its reference answer with the package itself (so it stays true as the code changes),
compares with a tolerance, and, when the answer is wrong, says what the usual mistakes give and
how to get on. The exercise's text lives in the chapter (a numbered ``{exercise}`` block); its
worked solution is a hidden ``{solution}`` that ends by calling this check; the student release
(``compendium course --student``) replaces the solution with the stub recorded here.

>>> from compendium.exercises import check
>>> check("dashnet", 1, 6)   # doctest: +SKIP
✓ dashnet, exercise 1: correct (6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Exercise", "CheckResult", "EXERCISES", "check", "reference", "exercise", "stub"]


@dataclass(frozen=True)
class Exercise:
    chapter: str
    number: int
    title: str
    reference: Callable[[], Any]  # the reference solution (calls the package)
    hint: str  # shown for any wrong answer
    stub: str  # the code cell a student starts from
    rel: float = 0.0  # relative tolerance
    abs: float = 0.0  # absolute tolerance
    mistakes: tuple[tuple[Callable[[], Any], str], ...] = field(default=())  # (typical wrong answer, its hint)
    lab: bool = True  # fits a lab session (minutes, no long training)


@dataclass(frozen=True)
class CheckResult:
    """Truthy when the answer is right; its text is what a notebook shows."""

    ok: bool
    message: str
    hint: str = ""

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


def _close(answer: Any, ref: Any, rel: float, abs_: float) -> bool:
    try:
        a, r = float(answer), float(ref)
    except (TypeError, ValueError):
        return False
    if math.isnan(a):
        return False
    return math.isclose(a, r, rel_tol=rel, abs_tol=abs_) if (rel or abs_) else a == r


# ---------------------------------------------------------------------------------------------
# reference solutions: small, fast computations with the package (seconds at most)


def _primer_spikes(reset: str = "zero", decay: float = 0.9) -> int:
    import torch

    from compendium.spiking import lif_sequence

    spikes, _ = lif_sequence(torch.full((50, 1), 0.25), decay, 1.0, reset)
    return int(spikes.sum())


def _tdbn_std(alpha: float = 2 ** -0.5, threshold: float = 0.5) -> float:
    import torch

    from compendium.spiking.norm import TdBN

    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(4, 16, 4, 6, 6, generator=g) + 2
    norm = TdBN(4, threshold=threshold, alpha=alpha).train()
    with torch.no_grad():
        return float(norm(x).std())


def _msresnet_blocks(stages: int = 3) -> int:
    from compendium.spiking.studies import blocks_for_depth

    return stages * blocks_for_depth(482)


def _hybrid_trace(mode: str = "lp") -> float:
    import torch

    from compendium.plasticity.hybrid import PlasticLIF

    layer = PlasticLIF(1, 1, mode=mode)
    with torch.no_grad():
        layer.linear.weight.fill_(1.0)
        layer.linear.bias.zero_()
        layer(torch.ones(3, 1, 1))
    return float(layer.trace[0, 0])


def _dashnet_events(log: bool = True) -> int:
    import torch

    from compendium.events.simulator import frames_to_events

    if not log:  # the typical mistake: contrast on linear intensity
        return int((0.8 - 0.2) // 0.2)
    ev = frames_to_events(torch.tensor([[0.2], [0.8]]), threshold=0.2, counts=True)
    return int(ev[0, 0, 0])


def _h2learn_ratio() -> float:
    from compendium.hardware import EnergyModel

    e = EnergyModel.load("horowitz45", "fp32")
    return e.energy_pj(macs=1) / e.energy_pj(acs=1)


def _h2learn_mult_only() -> float:
    from compendium.hardware import EnergyModel

    e = EnergyModel.load("horowitz45", "fp32")
    return (e.mac_pj - e.ac_pj) / e.ac_pj


def _adversarial_rsf(p: float = 0.2, gamma: float = 0.1) -> float:
    # expectation of S xor Bernoulli(gamma) for S ~ Bernoulli(p); a simulation with
    # compendium.attacks.spike.rsf lands within the tolerance
    return p * (1 - gamma) + (1 - p) * gamma


def _compression_levels(bits: int = 3) -> int:
    import torch

    from compendium.compression import quantize

    return int(quantize(torch.linspace(-1, 1, 101), bits).unique().numel())


def _stfn_entry(self_loops: bool = True) -> float:
    import torch

    from compendium.graph.layers import normalized_adjacency

    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    if not self_loops:
        return 1 / math.sqrt(1 * 2)
    return float(normalized_adjacency(edges, 3).to_dense()[0, 1])


def _memristor_ppf(inverse: bool = False) -> float:
    from compendium.devices.memristor import ppf

    v = float(ppf([0.05])[0])
    return 1 / v if inverse else v


def _calibration_basis(scale: bool = True) -> float:
    import numpy as np

    from compendium.stats.splines import rcs_basis

    return float(rcs_basis(np.array([50.0]), np.array([20.0, 40.0, 60.0, 80.0]), scale=scale)[0, 1])


def _calibration_linear() -> float:
    return 50.0


_CHECK = 'from compendium.exercises import check\ncheck("{chapter}", {number}, answer)'

EXERCISES: dict[tuple[str, int], Exercise] = {}


def _add(chapter: str, number: int, title: str, reference: Callable[[], Any], hint: str, stub: str, **kw: Any) -> None:
    text = stub.rstrip() + "\n\n" + _CHECK.format(chapter=chapter, number=number)
    EXERCISES[(chapter, number)] = Exercise(chapter, number, title, reference, hint, text, **kw)


_add("primer", 1, "Count the spikes of one LIF neuron", _primer_spikes,
     "Drive one neuron for 50 steps: `lif_sequence(torch.full((50, 1), 0.25), decay, threshold, reset)` "
     "returns (spikes, membrane); sum the spikes. Use k = 0.9, V_th = 1.0 and the hard reset ('zero').",
     "import torch\nfrom compendium.spiking import lif_sequence\n\n"
     "# 50 steps of a constant current 0.25 into one neuron with k = 0.9, V_th = 1.0, hard reset\n"
     "answer = ...  # the number of spikes (an int)",
     mistakes=((lambda: _primer_spikes("subtract"), "That is the soft reset's count: the exercise asks for the "
                "hard reset (reset='zero'), which restarts the membrane from 0 after each spike."),
               (lambda: _primer_spikes(decay=0.5), "That is the count with the chapter's decay k = 0.5; "
                "the exercise uses k = 0.9.")))
_add("tdbn", 1, "What tdBN's threshold scaling does", _tdbn_std,
     "In training mode tdBN normalises each channel over (T, B, H, W) to unit variance and then scales it "
     "by α·V_th (the affine weight starts at 1, the bias at 0). Build `TdBN(4, threshold=0.5, alpha=2**-0.5)` "
     "and take the standard deviation of its output, all channels together.",
     "import torch\nfrom compendium.spiking.norm import TdBN\n\n"
     "g = torch.Generator().manual_seed(0)\nx = 3 * torch.randn(4, 16, 4, 6, 6, generator=g) + 2  # [T, B, C, H, W]\n"
     "answer = ...  # standard deviation of TdBN(4, threshold=0.5, alpha=2**-0.5)(x), a float",
     rel=0.02,
     mistakes=((lambda: 0.5, "0.5 is V_th alone: tdBN scales by α·V_th, and this α is 1/√2 (the residual "
                "blocks' value)."),
               (lambda: 1.0, "1.0 is what ordinary batch normalisation gives: tdBN also scales to α·V_th."),
               (lambda: 3.0, "3 is the input's own spread: apply the layer in training mode (`.train()`), so it "
                "normalises with the batch's statistics.")))
_add("msresnet", 1, "How many blocks at 482 layers", _msresnet_blocks,
     "A CIFAR-style ResNet of 6n+2 layers has three stages of n blocks, each block two convolutions; "
     "`compendium.spiking.studies.blocks_for_depth(depth)` gives n.",
     "from compendium.spiking.studies import blocks_for_depth\n\n"
     "answer = ...  # residual blocks in the whole 482-layer CIFAR-style net (an int)",
     mistakes=((lambda: _msresnet_blocks(1), "That is one stage: the net has three stages of that many blocks."),
               (lambda: 480, "480 is the number of convolutions in the blocks: each block holds two."),
               (lambda: 482, "482 counts layers, not blocks.")))
_add("hybrid", 1, "The Hebbian trace of one synapse", _hybrid_trace,
     "Build `PlasticLIF(1, 1, mode='lp')`, set `layer.linear.weight` to 1 and the bias to 0 (under "
     "`torch.no_grad()`), feed `torch.ones(3, 1, 1)` ([T, B, in]) and read `layer.trace` afterwards: each step "
     "adds β·x·tanh(u/θ − η) after decaying the trace by λ.",
     "import torch\nfrom compendium.plasticity.hybrid import PlasticLIF\n\n"
     "layer = PlasticLIF(1, 1, mode='lp')\n# set the weight to 1, the bias to 0, run three steps of input 1\n"
     "answer = ...  # the trace P after the call (a float)",
     rel=1e-3,
     mistakes=((lambda: 0.0, "A zero trace: the 'gp' mode has no local plasticity, or the forward call did not run; "
                "use mode='lp' and read `layer.trace` after calling the layer."),))
_add("dashnet", 1, "Events from one brightening pixel", _dashnet_events,
     "A DVS pixel fires an ON event each time its *log* intensity rises by the contrast threshold: "
     "`frames_to_events(torch.tensor([[0.2], [0.8]]), threshold=0.2, counts=True)` returns [interval, ON/OFF, pixel].",
     "import torch\nfrom compendium.events.simulator import frames_to_events\n\n"
     "# one pixel brightens from 0.2 to 0.8 between two frames; contrast threshold 0.2\n"
     "answer = ...  # the number of ON events (an int)",
     mistakes=((lambda: _dashnet_events(log=False), "That counts steps of 0.2 in *linear* intensity: events fire on "
                "changes of log intensity, log(I + ε)."),))
_add("h2learn", 1, "How many accumulates cost one MAC", _h2learn_ratio,
     "`EnergyModel.load('horowitz45', 'fp32')` gives the energy of a multiply-accumulate (mac_pj = add + mult) and "
     "of an accumulate (ac_pj = add); divide `energy_pj(macs=1)` by `energy_pj(acs=1)`.",
     "from compendium.hardware import EnergyModel\n\ne = EnergyModel.load('horowitz45', 'fp32')\n"
     "answer = ...  # MAC energy / AC energy (a float)",
     rel=1e-3,
     mistakes=((lambda: 1.0, "A MAC is an add *and* a multiply; a spike's accumulate is the add alone."),
               (_h2learn_mult_only, "That is the multiply alone over the add: a MAC also includes the add.")))
_add("adversarial", 1, "What random spike flipping does to the firing rate", _adversarial_rsf,
     "RSF flips every bit with probability γ: ones become zeros with probability γ and zeros become ones with "
     "probability γ. Simulate it with `compendium.attacks.spike.rsf` on a large Bernoulli(0.2) tensor, or work "
     "out the expectation.",
     "import torch\nfrom compendium.attacks.spike import rsf\n\n"
     "g = torch.Generator().manual_seed(0)\nspikes = torch.bernoulli(torch.full((8, 1000, 100), 0.2), generator=g)\n"
     "answer = ...  # the fraction of ones after rsf(spikes, gamma=0.1) (a float)",
     abs=0.01,
     mistakes=((lambda: 0.18, "0.18 only removes spikes: RSF also turns silent bits (80 % of them) into spikes."),
               (lambda: 0.3, "0.3 adds γ to every bit: only the silent ones gain spikes, and the firing ones lose some.")))
_add("compression", 1, "Levels of a 3-bit quantiser", _compression_levels,
     "The package's b-bit grid is symmetric, α·{−L, …, L} with L = 2^(b−1) − 1; count the distinct values of "
     "`quantize(torch.linspace(-1, 1, 101), 3)`.",
     "import torch\nfrom compendium.compression import quantize\n\n"
     "answer = ...  # the number of distinct values after quantize(torch.linspace(-1, 1, 101), 3) (an int)",
     mistakes=((lambda: 8, "8 = 2³ is an asymmetric grid: the package's grid is symmetric around zero, so one code "
                "is left unused."),))
_add("stfn", 1, "GCN's normalised adjacency", _stfn_entry,
     "GCN adds self-loops before normalising: Â = D^-1/2 (A + I) D^-1/2 with D the degrees *including* the "
     "self-loop. `compendium.graph.layers.normalized_adjacency(edge_index, 3).to_dense()` computes it.",
     "import torch\nfrom compendium.graph.layers import normalized_adjacency\n\n"
     "edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # the path 0 - 1 - 2, both directions\n"
     "answer = ...  # the entry (0, 1) of the normalised adjacency (a float)",
     rel=1e-4,
     mistakes=((lambda: _stfn_entry(False), "That normalises without self-loops: GCN adds I before computing degrees."),))
_add("memristor", 1, "Paired-pulse facilitation at 50 ms", _memristor_ppf,
     "`compendium.devices.memristor.ppf([0.05])` gives A2/A1 for two pulses 50 ms apart with the chapter's "
     "synapse parameters.",
     "from compendium.devices.memristor import ppf\n\n"
     "answer = ...  # the PPF index A2/A1 at 50 ms (a float)",
     rel=1e-3,
     mistakes=((lambda: _memristor_ppf(inverse=True), "That is A1/A2: the index is the second response over the first."),))
_add("calibration", 1, "A restricted cubic spline by hand", _calibration_basis,
     "With knots t = (20, 40, 60, 80), the second basis column at x is [(x−t1)³₊ − (x−t3)³₊·(t4−t1)/(t4−t3) + "
     "(x−t4)³₊·(t3−t1)/(t4−t3)] / (t4−t1)²; `compendium.stats.splines.rcs_basis` computes it (scale=True divides "
     "by (t4 − t1)²).",
     "import numpy as np\nfrom compendium.stats.splines import rcs_basis\n\n"
     "answer = ...  # rcs_basis at x = 50 with knots (20, 40, 60, 80): the second column (a float)",
     rel=1e-6,
     mistakes=((lambda: _calibration_basis(scale=False), "That is the unscaled cube: the package divides by "
                "(t_K − t_1)² so that the columns have the exposure's scale."),
               (_calibration_linear, "That is the first column, x itself: the exercise asks for the second (the first "
                "non-linear term).")))


def exercise(chapter: str, number: int) -> Exercise:
    try:
        return EXERCISES[(chapter, int(number))]
    except KeyError:
        known = ", ".join(f"{c} {n}" for c, n in sorted(EXERCISES))
        raise KeyError(f"no checked exercise {chapter!r} {number}; the checked exercises are: {known}") from None


def reference(chapter: str, number: int) -> Any:
    """The reference answer (computed with the package)."""
    return exercise(chapter, number).reference()


def stub(chapter: str, number: int) -> str:
    """The code a student starts from (what the student release puts in place of the solution)."""
    return exercise(chapter, number).stub


def check(chapter: str, number: int, answer: Any) -> CheckResult:
    """Compare ``answer`` with the reference solution; on a wrong answer, say why it may be wrong."""
    ex = exercise(chapter, number)
    where = f"{chapter}, exercise {number}"
    if answer is None or answer is Ellipsis:
        return CheckResult(False, f"… {where}: no answer yet. Hint: {ex.hint}", ex.hint)
    ref = ex.reference()
    if _close(answer, ref, ex.rel, ex.abs):
        return CheckResult(True, f"✓ {where}: correct ({answer!r}).")
    for wrong, why in ex.mistakes:
        w = wrong()
        if not _close(w, ref, ex.rel, ex.abs) and _close(answer, w, max(ex.rel, 1e-9), ex.abs):
            return CheckResult(False, f"✗ {where}: not yet ({answer!r}). {why} Hint: {ex.hint}", why)
    try:
        float(answer)
    except (TypeError, ValueError):
        why = f"the answer should be a number, got {type(answer).__name__}."
        return CheckResult(False, f"✗ {where}: not yet — {why} Hint: {ex.hint}", why)
    return CheckResult(False, f"✗ {where}: not yet ({answer!r}). Hint: {ex.hint}", ex.hint)
