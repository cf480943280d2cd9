"""Ignite handlers for bundle validation: the paper's stage-1 overlap, |A ∩ B| / |B|, per case and class.

MONAI's ``ConfusionMatrix(metric_name="sensitivity")`` aggregates the same ratio but stores raw
confusion counts as per-case details; this metric stores the per-case ratio itself, so
``MetricsSaver`` writes one overlap per case and class.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction, ignore_background
from monai.utils import MetricReduction

__all__ = ["OverlapMetric", "Overlap"]


class OverlapMetric(CumulativeIterationMetric):
    """Per case and class, the fraction of the reference covered by the prediction: |A ∩ B| / |B|.

    Args:
        include_background: whether to score channel 0.
        reduction: MONAI reduction of the (cases, classes) buffer.

    Inputs are one-hot (B, C, X, Y, Z) tensors; an empty reference gives NaN.
    """

    def __init__(self, include_background: bool = False, reduction: MetricReduction | str = MetricReduction.MEAN) -> None:
        super().__init__()
        self.include_background = include_background
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.include_background:
            y_pred, y = ignore_background(y_pred, y)
        dims = tuple(range(2, y.ndim))
        covered = (y_pred.bool() & y.bool()).sum(dims).float()
        reference = y.bool().sum(dims).float()
        return torch.where(reference > 0, covered / reference.clamp_min(1), torch.full_like(reference, float("nan")))

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor:
        """Reduce the buffered (cases, classes) overlaps."""
        value, _ = do_metric_reduction(self.get_buffer(), reduction or self.reduction)
        return value


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
