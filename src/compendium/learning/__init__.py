"""Learning: the one training loop every chapter uses, and fair tuned comparisons built on it."""

from compendium.learning.train import History, TrainingDiverged, evaluate, fit, resolve_device, seed_everything
from compendium.learning.tuning import TunedComparison, TunedRun, choose_rate, compare_tuned, validation_split

__all__ = ["fit", "evaluate", "History", "TrainingDiverged", "resolve_device", "seed_everything", "compare_tuned",
           "TunedComparison", "TunedRun", "choose_rate", "validation_split"]
