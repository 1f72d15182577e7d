"""Event-camera data: a frame-to-event simulator and event-style stand-ins for DVS datasets."""

from compendium.events.simulator import frames_to_events
from compendium.events.saccade import nmnist_like, saccade_frames

__all__ = ["frames_to_events", "saccade_frames", "nmnist_like"]
