"""Spiking core: LIF neurons, surrogate gradients, encoders, multi-step layers, counters."""

from compendium.spiking.counters import OpCounter
from compendium.spiking.encoding import direct, events_to_frames, rate
from compendium.spiking.layers import Encoder, MeanOverTime, SeqFold
from compendium.spiking.neuron import LIF, lif_maxpool2d, lif_sequence, lif_sequence_reference, lif_step
from compendium.spiking.surrogate import ArcTan, Rectangular, Sigmoid, Surrogate

__all__ = [
    "LIF", "lif_step", "lif_sequence", "lif_sequence_reference", "lif_maxpool2d", "Surrogate", "Rectangular", "ArcTan", "Sigmoid",
    "direct", "rate", "events_to_frames", "SeqFold", "MeanOverTime", "Encoder", "OpCounter",
]
