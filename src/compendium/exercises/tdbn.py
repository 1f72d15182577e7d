"""The tdbn chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

from compendium.exercises import check, register

__all__ = ["check"]


def _tdbn_std(alpha: float = 2 ** -0.5, threshold: float = 0.5) -> float:
    import torch

    from compendium.spiking.norm import TdBN

    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(4, 16, 4, 6, 6, generator=g) + 2
    norm = TdBN(4, threshold=threshold, alpha=alpha).train()
    with torch.no_grad():
        return float(norm(x).std())


register("tdbn", 1, "What tdBN's threshold scaling does", _tdbn_std,
         "In training mode tdBN normalises each channel over (T, B, H, W) to unit variance and then scales it "
         "by α·V_th (the affine weight starts at 1, the bias at 0). Build `TdBN(4, threshold=0.5, alpha=2**-0.5)` "
         "and take the standard deviation of its output, all channels together.",
         "import torch\nfrom compendium.spiking.norm import TdBN\n\n"
         "g = torch.Generator().manual_seed(0)\nx = 3 * torch.randn(4, 16, 4, 6, 6, generator=g) + 2  # [T, B, C, H, W]\n"
         "answer = ...  # standard deviation of TdBN(4, threshold=0.5, alpha=2**-0.5)(x), a float",
         rel=0.02,
         mistakes=((lambda: 0.5, "0.5 is V_th alone: tdBN scales by α·V_th, and this α is 1/√2 (the residual "
                    "blocks' value)."),
                   (lambda: 1.0, "1.0 is what ordinary batch normalisation gives: tdBN also scales to α·V_th."),
                   (lambda: 3.0, "3 is the input's own spread: apply the layer in training mode (`.train()`), so it "
                    "normalises with the batch's statistics.")))
