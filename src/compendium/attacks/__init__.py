"""Adversarial attacks on spiking and analog classifiers (Liang et al. 2021, arXiv 2001.01587)."""

from compendium.attacks.spike import AttackResult, g2s, output_loss, rsf, spike_attack, topk_flips, zero_gradient
from compendium.attacks.image import l2_attack, lattice_l2_attack, transfer

__all__ = ["g2s", "rsf", "topk_flips", "spike_attack", "output_loss", "AttackResult", "zero_gradient", "l2_attack", "lattice_l2_attack", "transfer"]
