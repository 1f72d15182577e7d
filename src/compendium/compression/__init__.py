"""SNN compression: pruning and quantisation by ADMM around STBP training, activity
regularisation, and the compression metrics (Deng, Wu et al., arXiv 1911.00822)."""

from compendium.compression.projections import Constraint, prune, prune_quantize, quantize
from compendium.compression.admm import ADMM, constrained_finetuning, hard_project
from compendium.compression.activity import SpikeActivity
from compendium.compression.metrics import compression_metrics

__all__ = ["Constraint", "prune", "quantize", "prune_quantize", "ADMM", "hard_project", "constrained_finetuning",
           "SpikeActivity", "compression_metrics"]
