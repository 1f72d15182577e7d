"""A reproducibility compendium of ten papers, as one package.

The package is organised by mechanism, not by paper (see ``DESIGN.md``): spiking core
(:mod:`compendium.spiking`), learning (:mod:`compendium.learning`), datasets
(:mod:`compendium.datasets`) and the book tooling (:mod:`compendium.book`) are shared by
every chapter. Importing this top-level package is cheap: it imports no torch. It raises
glibc's mmap and trim thresholds for the process (:mod:`compendium.runtime`), so that large
training buffers are reused instead of page-faulted in afresh every step.
"""

from compendium.runtime import tune_allocator as _tune_allocator

__version__ = "0.1.0"
_tune_allocator()
