"""Ignite handlers for the localizer's validation and evaluation: how much of the atria it keeps.

- :class:`Overlap`: the paper's stage-1 overlap, |A ∩ B| / |B|, per case and class. MONAI's
  ``ConfusionMatrix(metric_name="sensitivity")`` aggregates the same ratio but stores raw confusion
  counts as per-case details; this metric stores the per-case ratio itself, so ``MetricsSaver``
  writes one overlap per case and class.
- :class:`GateRecall`: the share of each true class (wall, right atrium, left atrium) and of their
  union inside the gate the mask becomes after the segmenter's hand-off (dilation by the
  ``gate_margin_mm`` of the segmenter's configs), computed on the localizer's grid: what stage 2
  could label at best.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction, ignore_background
from monai.networks.utils import one_hot
from monai.utils import MetricReduction

from cascade.labels import CLASS_NAMES
from cascade.transforms import dilate_mask, margin_voxels

__all__ = ["pred_and_atria", "OverlapMetric", "Overlap", "GateRecallMetric", "GateRecall"]


def pred_and_atria(output: list[dict]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``output_transform`` of the localizer's metrics: each case's one-hot ``pred`` and its label's
    union of classes (the localizer's target) one-hot, (2, X, Y, Z). The label itself stays a
    multi-class map so that :class:`GateRecall` can score each class."""
    return [o["pred"] for o in output], [one_hot(o["label"] > 0, num_classes=2, dim=0) for o in output]


def covered_share(region: torch.Tensor, truth: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """|region ∩ truth| / |truth| summed over ``dims`` (boolean tensors); NaN where ``truth`` is empty."""
    reference = truth.sum(dims).float()
    covered = (region & truth).sum(dims).float()
    return torch.where(reference > 0, covered / reference.clamp_min(1), torch.full_like(reference, float("nan")))


class _CaseShareMetric(CumulativeIterationMetric):
    """A per-case (cases, columns) buffer of shares, reduced with MONAI's ``do_metric_reduction``."""

    reduction: MetricReduction | str

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor:
        """Reduce the buffered per-case shares."""
        value, _ = do_metric_reduction(self.get_buffer(), reduction or self.reduction)
        return value


class OverlapMetric(_CaseShareMetric):
    """Per case and class, the fraction of the reference covered by the prediction: |A ∩ B| / |B|.

    Args:
        include_background: whether to score channel 0.
        reduction: MONAI reduction of the (cases, classes) buffer.

    Inputs are one-hot (B, C, X, Y, Z) tensors; an empty reference gives NaN.
    """

    def __init__(
        self, include_background: bool = False, reduction: MetricReduction | str = MetricReduction.MEAN
    ) -> None:
        super().__init__()
        self.include_background = include_background
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.include_background:
            y_pred, y = ignore_background(y_pred, y)
        return covered_share(y_pred.bool(), y.bool(), tuple(range(2, y.ndim)))


class Overlap(IgniteMetricHandler):
    """Ignite handler of :class:`OverlapMetric`, used like MONAI's ``MeanDice`` handler."""

    def __init__(
        self,
        include_background: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=OverlapMetric(include_background, reduction),
            output_transform=output_transform,
            save_details=save_details,
        )


class GateRecallMetric(_CaseShareMetric):
    """Per case, the share of each true class and of the atria inside the dilated stage-1 mask.

    Args:
        margin_mm: the hand-off's dilation margin in mm, isotropic or per axis (X, Y, Z).
        spacing: voxel size in mm (X, Y, Z) of the inputs; ``None`` reads it from each
            prediction's affine (inputs must then be MetaTensors).
        reduction: MONAI reduction of the (cases, 4) buffer.

    Inputs: ``y_pred`` the one-hot stage-1 prediction (B, 2, X, Y, Z) after its postprocessing;
    ``y`` the label map (B, 1, X, Y, Z) with values 0-3. Columns: wall, right atrium, left atrium,
    atria; an absent class gives NaN.
    """

    def __init__(
        self,
        margin_mm: float | list[float],
        spacing: list[float] | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
    ) -> None:
        super().__init__()
        self.margin_mm = margin_mm
        self.spacing = spacing
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        spacing = self.spacing
        if spacing is None:
            directions = torch.as_tensor(y_pred.affine, dtype=torch.float64)[..., :3, :3]
            spacing = torch.linalg.norm(directions, dim=-2).reshape(-1, 3)[0].tolist()
        gate = dilate_mask(y_pred[:, 1:2], margin_voxels(self.margin_mm, spacing)).bool()
        classes = [y == value for value in CLASS_NAMES] + [y > 0]
        dims = tuple(range(1, y.ndim))
        return torch.stack([covered_share(gate, truth, dims) for truth in classes], dim=1)


class GateRecall(IgniteMetricHandler):
    """Ignite handler of :class:`GateRecallMetric` (feed it ``pred`` and the multi-class label)."""

    def __init__(
        self,
        margin_mm: float | list[float],
        spacing: list[float] | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=GateRecallMetric(margin_mm, spacing, reduction),
            output_transform=output_transform,
            save_details=save_details,
        )
