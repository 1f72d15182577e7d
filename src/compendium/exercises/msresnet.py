"""The msresnet chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

from compendium.exercises import check, register

__all__ = ["check"]


def _msresnet_blocks(stages: int = 3) -> int:
    from compendium.spiking.studies import blocks_for_depth

    return stages * blocks_for_depth(482)


register("msresnet", 1, "How many blocks at 482 layers", _msresnet_blocks,
         "A CIFAR-style ResNet of 6n+2 layers has three stages of n blocks, each block two convolutions; "
         "`compendium.spiking.studies.blocks_for_depth(depth)` gives n.",
         "from compendium.spiking.studies import blocks_for_depth\n\n"
         "answer = ...  # residual blocks in the whole 482-layer CIFAR-style net (an int)",
         mistakes=((lambda: _msresnet_blocks(1), "That is one stage: the net has three stages of that many blocks."),
                   (lambda: 480, "480 is the number of convolutions in the blocks: each block holds two."),
                   (lambda: 482, "482 counts layers, not blocks.")))
