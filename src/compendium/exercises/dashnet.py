"""The dashnet chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

from compendium.exercises import check, register

__all__ = ["check"]


def _dashnet_events(log: bool = True) -> int:
    import torch

    from compendium.events.simulator import frames_to_events

    if not log:  # the typical mistake: contrast on linear intensity
        return int((0.8 - 0.2) // 0.2)
    ev = frames_to_events(torch.tensor([[0.2], [0.8]]), threshold=0.2, counts=True)
    return int(ev[0, 0, 0])


register("dashnet", 1, "Events from one brightening pixel", _dashnet_events,
         "A DVS pixel fires an ON event each time its *log* intensity rises by the contrast threshold: "
         "`frames_to_events(torch.tensor([[0.2], [0.8]]), threshold=0.2, counts=True)` returns [interval, ON/OFF, pixel].",
         "import torch\nfrom compendium.events.simulator import frames_to_events\n\n"
         "# one pixel brightens from 0.2 to 0.8 between two frames; contrast threshold 0.2\n"
         "answer = ...  # the number of ON events (an int)",
         mistakes=((lambda: _dashnet_events(log=False), "That counts steps of 0.2 in *linear* intensity: events fire on "
                    "changes of log intensity, log(I + ε)."),))
