"""The h2learn chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

from compendium.exercises import check, register

__all__ = ["check"]


def _h2learn_ratio() -> float:
    from compendium.hardware import EnergyModel

    e = EnergyModel.load("horowitz45", "fp32")
    return e.energy_pj(macs=1) / e.energy_pj(acs=1)


def _h2learn_mult_only() -> float:
    from compendium.hardware import EnergyModel

    e = EnergyModel.load("horowitz45", "fp32")
    return (e.mac_pj - e.ac_pj) / e.ac_pj


register("h2learn", 1, "How many accumulates cost one MAC", _h2learn_ratio,
         "`EnergyModel.load('horowitz45', 'fp32')` gives the energy of a multiply-accumulate (mac_pj = add + mult) and "
         "of an accumulate (ac_pj = add); divide `energy_pj(macs=1)` by `energy_pj(acs=1)`.",
         "from compendium.hardware import EnergyModel\n\ne = EnergyModel.load('horowitz45', 'fp32')\n"
         "answer = ...  # MAC energy / AC energy (a float)",
         rel=1e-3,
         mistakes=((lambda: 1.0, "A MAC is an add *and* a multiply; a spike's accumulate is the add alone."),
                   (_h2learn_mult_only, "That is the multiply alone over the add: a MAC also includes the add.")))
