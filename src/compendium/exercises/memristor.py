"""The memristor chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

from compendium.exercises import check, register

__all__ = ["check"]


def _memristor_ppf(inverse: bool = False) -> float:
    from compendium.devices.memristor import ppf

    v = float(ppf([0.05])[0])
    return 1 / v if inverse else v


register("memristor", 1, "Paired-pulse facilitation at 50 ms", _memristor_ppf,
         "`compendium.devices.memristor.ppf([0.05])` gives A2/A1 for two pulses 50 ms apart with the chapter's "
         "synapse parameters.",
         "from compendium.devices.memristor import ppf\n\n"
         "answer = ...  # the PPF index A2/A1 at 50 ms (a float)",
         rel=1e-3,
         mistakes=((lambda: _memristor_ppf(inverse=True), "That is A1/A2: the index is the second response over the first."),))
