"""Mask-gated, partial-label Dice + cross-entropy (the stage-2 loss), and nnU-Net's deep-supervision weights.

MONAI has no gated variant that fits: ``DiceCELoss`` has no mask, and ``MaskedDiceLoss`` multiplies
the logits by the mask before the softmax, so masked-out voxels still score as a uniform
prediction (with ``to_onehot_y=True`` and the background channel a perfect prediction scores
about 0.2). ``MaskedDiceCELoss`` applies the mask after the softmax, to every term of the Dice
sums and to the per-voxel cross-entropy, so voxels outside the mask contribute neither loss nor
gradient.

Nor does MONAI train on partially labelled data (a label map that annotates, e.g., the left atrium
only, where 0 means "background or a class not drawn"). ``MaskedDiceCELoss`` uses the marginal
formulation there: per voxel, the probabilities of the classes the case does not annotate are
merged with background before the cross-entropy and the Dice, and those classes get no Dice term
from that case. A fully annotated case gives exactly the plain loss.

The mask and the annotation travel with the label as extra target channels, ``target = cat([label,
mask, code], 1)`` (:class:`cascade.annotation.AnnotationChanneld` appends the code), so MONAI's
``DeepSupervisionLoss`` downsamples them together (nearest) to every decoder level.
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
    """Soft Dice + cross-entropy computed only where a binary mask is set, on partially labelled data.

    Args:
        include_background: include channel 0 in the Dice term (nnU-Net excludes it).
        batch: batch Dice: sum Dice statistics over the batch before the ratio (the paper's
            final stage-2 setting); otherwise one Dice per sample, then averaged.
        smooth: added to numerator and denominator of each class's Dice (1e-5 as nnU-Net).
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.

    The loss is ``lambda_dice * (1 - mean Dice) + lambda_ce * CE``, with CE averaged over the
    masked voxels; with an all-ones mask and full annotation it equals MONAI's
    ``DiceCELoss(to_onehot_y=True, softmax=True, smooth_nr=smooth, smooth_dr=smooth)`` with the
    same ``include_background`` and ``batch``.

    Partial annotation (the marginal formulation): at a voxel whose case does not annotate class
    k, a label 0 means "background or k", so the cross-entropy is ``-log(p_0 + sum_k p_k)`` and
    the background Dice uses that merged probability; class k's Dice sums leave the voxel out,
    and a class no case of the reduction annotates leaves the mean of the Dice terms.
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
            target: (B, 1, X, Y, Z) class indices; (B, 2, X, Y, Z) class indices and mask (nonzero =
                inside); or (B, 3, X, Y, Z) class indices, mask and annotation code (bit c set where
                class c is annotated, :func:`cascade.annotation.annotation_code`). Without a mask
                every voxel counts; without a code every class is annotated.

        Returns:
            Scalar loss.
        """
        if target.shape[1] not in (1, 2, 3):
            raise ValueError(
                f"target must have 1 (label), 2 (label, mask) or 3 (label, mask, code) channels, got {target.shape[1]}"
            )
        labels = target[:, :1].long()
        mask = (target[:, 1:2] > 0).to(input.dtype) if target.shape[1] >= 2 else torch.ones_like(
            target[:, :1], dtype=input.dtype
        )
        num_classes = input.shape[1]
        onehot = F.one_hot(labels[:, 0], num_classes).movedim(-1, 1).to(input.dtype)
        log_probs = torch.log_softmax(input, dim=1)
        probs = log_probs.exp()
        reduce_dims = [0, *range(2, input.ndim)] if self.batch else list(range(2, input.ndim))

        if target.shape[1] == 3:  # the marginal formulation
            bits = torch.arange(num_classes, device=input.device).view(1, -1, *([1] * (input.ndim - 2)))
            annotated = (target[:, 2:3].long() >> bits & 1).bool() | (bits == 0)
            silent = ~annotated  # classes merged into background at each voxel
            in_target = onehot.bool() | (silent & (labels == 0))
            voxel_ce = -torch.logsumexp(log_probs.masked_fill(~in_target, float("-inf")), dim=1)
            merged_background = probs[:, :1] + (probs * silent).sum(1, keepdim=True)
            probs = torch.cat([merged_background, probs[:, 1:]], dim=1)
            weight = mask * annotated.to(input.dtype)
            scored = annotated.flatten(2).any(-1).any(0) if self.batch else annotated.flatten(2).any(-1)
        else:
            voxel_ce = F.cross_entropy(input, labels[:, 0], reduction="none")
            weight = mask
            scored = None

        intersection = (probs * onehot * weight).sum(reduce_dims)
        denominator = ((probs + onehot) * weight).sum(reduce_dims)
        dice = (2 * intersection + self.smooth) / (denominator + self.smooth)
        if not self.include_background:
            dice = dice[..., 1:]
            scored = scored[..., 1:] if scored is not None else None
        dice_loss = 1 - (dice.mean() if scored is None else dice[scored].mean() if scored.any() else dice.sum() * 0)

        ce_loss = (voxel_ce * mask[:, 0]).sum() / mask.sum().clamp_min(1)
        return self.lambda_dice * dice_loss + self.lambda_ce * ce_loss
