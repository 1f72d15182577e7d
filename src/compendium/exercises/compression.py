"""The compression chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

from compendium.exercises import check, register

__all__ = ["check"]


def _compression_levels(bits: int = 3) -> int:
    import torch

    from compendium.compression import quantize

    return int(quantize(torch.linspace(-1, 1, 101), bits).unique().numel())


register("compression", 1, "Levels of a 3-bit quantiser", _compression_levels,
         "The package's b-bit grid is symmetric, α·{−L, …, L} with L = 2^(b−1) − 1; count the distinct values of "
         "`quantize(torch.linspace(-1, 1, 101), 3)`.",
         "import torch\nfrom compendium.compression import quantize\n\n"
         "answer = ...  # the number of distinct values after quantize(torch.linspace(-1, 1, 101), 3) (an int)",
         mistakes=((lambda: 8, "8 = 2³ is an asymmetric grid: the package's grid is symmetric around zero, so one code "
                    "is left unused."),))
