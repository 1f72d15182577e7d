"""High-speed tracking with a hybrid ANN/SNN (DashNet, Yang, Wu et al., arXiv 1909.12942):
a synthetic benchmark, the two branches, the temporal complementary filter, attention, metrics."""

from compendium.tracking.synthetic import Sequence, make_sequences, render_sequence
from compendium.tracking.fusion import attention_gate, tcf
from compendium.tracking.metrics import center_errors, ious, precision_curve, success_curve

__all__ = ["Sequence", "render_sequence", "make_sequences", "tcf", "attention_gate", "center_errors", "ious",
           "precision_curve", "success_curve"]
