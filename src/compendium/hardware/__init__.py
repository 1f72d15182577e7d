"""Hardware models: energy per operation with cited constants (one place for every chapter)."""

from compendium.hardware.energy import EnergyModel

__all__ = ["EnergyModel"]
