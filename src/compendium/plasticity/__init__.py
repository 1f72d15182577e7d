"""Hybrid global-local plasticity (Wu, Zhao, Zhu et al., arXiv 2006.03226; Nat. Commun. 2022)."""

from compendium.plasticity.hybrid import (MODES, HybridMLP, PlasticLIF, firing_rates, split_parameters,
                                         two_timescale_adam)

__all__ = ["MODES", "PlasticLIF", "HybridMLP", "firing_rates", "split_parameters", "two_timescale_adam"]
