"""Learning: the one training loop every chapter uses."""

from compendium.learning.train import History, TrainingDiverged, evaluate, fit, resolve_device, seed_everything

__all__ = ["fit", "evaluate", "History", "TrainingDiverged", "resolve_device", "seed_everything"]
