"""Energy per operation, from one data file of cited constants (``energy.yaml``).

A multiply-accumulate costs a multiply plus an add; a synaptic accumulate (a weight added
on an incoming spike) costs an add. ``E = n_MAC · (E_mult + E_add) + n_AC · E_add``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml


@dataclass(frozen=True)
class EnergyModel:
    name: str
    source: str
    mac_pj: float
    ac_pj: float

    @classmethod
    def load(cls, name: str = "horowitz45", precision: str = "fp32") -> "EnergyModel":
        table = yaml.safe_load(resources.files("compendium.hardware").joinpath("energy.yaml").read_text())
        if name not in table:
            raise KeyError(f"unknown energy table {name!r}; known: {sorted(table)}")
        ops = table[name]["ops_pj"]
        try:
            add, mult = ops[f"{precision}_add"], ops[f"{precision}_mult"]
        except KeyError:
            raise KeyError(f"table {name!r} has no {precision} add/mult; it has {sorted(ops)}") from None
        return cls(f"{name} {precision}", table[name]["source"], mac_pj=add + mult, ac_pj=add)

    def energy_pj(self, macs: float = 0.0, acs: float = 0.0) -> float:
        return macs * self.mac_pj + acs * self.ac_pj
