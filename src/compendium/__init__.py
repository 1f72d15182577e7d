"""A reproducibility compendium of ten papers, as one package.

The package is organised by mechanism, not by paper (see ``DESIGN.md``): spiking core
(:mod:`compendium.spiking`), learning (:mod:`compendium.learning`), datasets
(:mod:`compendium.datasets`) and the book tooling (:mod:`compendium.book`) are shared by
every chapter. Importing this top-level package is cheap: it imports no torch.
"""

__version__ = "0.1.0"
