"""Mask-gated Dice + cross-entropy, the stage-2 loss of the paper, and nnU-Net's deep-supervision weights.

MONAI has no gated variant that fits: ``DiceCELoss`` has no mask, and ``MaskedDiceLoss`` multiplies
the logits by the mask before the softmax, so masked-out voxels still score as a uniform
prediction (with ``to_onehot_y=True`` and the background channel a perfect prediction scores
about 0.2). ``MaskedDiceCELoss`` applies the mask after the softmax, to every term of the Dice
sums and to the per-voxel cross-entropy, so voxels outside the mask contribute neither loss nor
gradient.

The mask travels with the label as a second target channel, ``target = cat([label, mask], 1)``,
so MONAI's ``DeepSupervisionLoss`` downsamples both together (nearest) to every decoder level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["MaskedDiceCELoss", "nnunet_deep_supervision_weights"]


def nnunet_deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's deep-supervision weights: 1/2^i per level, the lowest resolution 0, summing to 1.

    Args:
        levels: number of network outputs, full resolution first.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    weights = [0.5**i for i in range(levels)]
    if levels > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class MaskedDiceCELoss(_Loss):
    """Soft Dice + cross-entropy computed only where a binary mask is set.

    Args:
        include_background: include channel 0 in the Dice term (nnU-Net excludes it).
        batch: batch Dice: sum Dice statistics over the batch before the ratio (the paper's
            final stage-2 setting); otherwise one Dice per sample, then averaged.
        smooth: added to numerator and denominator of each class's Dice (1e-5 as nnU-Net).
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.

    The loss is ``lambda_dice * (1 - mean Dice) + lambda_ce * CE``, with CE averaged over the
    masked voxels; with an all-ones mask it equals MONAI's ``DiceCELoss(to_onehot_y=True,
    softmax=True, smooth_nr=smooth, smooth_dr=smooth)`` with the same ``include_background``
    and ``batch``.
    """

    def __init__(
        self,
        include_background: bool = False,
        batch: bool = True,
        smooth: float = 1e-5,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
    ) -> None:
        super().__init__()
        self.include_background = include_background
        self.batch = batch
        self.smooth = smooth
        self.lambda_dice = lambda_dice
        self.lambda_ce = lambda_ce

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits (B, C, X, Y, Z).
            target: (B, 1, X, Y, Z) class indices, or (B, 2, X, Y, Z) class indices and mask
                (nonzero = inside); without a mask channel every voxel counts.

        Returns:
            Scalar loss.
        """
        if target.shape[1] not in (1, 2):
            raise ValueError(f"target must have 1 (label) or 2 (label, mask) channels, got {target.shape[1]}")
        labels = target[:, :1].long()
        mask = (target[:, 1:2] > 0).to(input.dtype) if target.shape[1] == 2 else torch.ones_like(target[:, :1], dtype=input.dtype)
        num_classes = input.shape[1]
        probs = torch.softmax(input, dim=1)
        onehot = F.one_hot(labels[:, 0], num_classes).movedim(-1, 1).to(input.dtype)

        reduce_dims = [0, *range(2, input.ndim)] if self.batch else list(range(2, input.ndim))
        intersection = (probs * onehot * mask).sum(reduce_dims)
        denominator = ((probs + onehot) * mask).sum(reduce_dims)
        dice = (2 * intersection + self.smooth) / (denominator + self.smooth)
        if not self.include_background:
            dice = dice[..., 1:]
        dice_loss = 1 - dice.mean()

        voxel_ce = F.cross_entropy(input, labels[:, 0], reduction="none")
        ce_loss = (voxel_ce * mask[:, 0]).sum() / mask.sum().clamp_min(1)
        return self.lambda_dice * dice_loss + self.lambda_ce * ce_loss
