"""The localizer's ignite metrics on analytic cases: overlap and gate recall per case and class."""

from __future__ import annotations

import math

import torch
from monai.data import MetaTensor
from monai.networks.utils import one_hot

from cascade.handlers import GateRecallMetric, OverlapMetric


def test_overlap_is_the_covered_share_of_the_reference():
    reference = torch.zeros(1, 1, 10, 10, 4)
    reference[0, 0, 0:4, 0:5] = 1  # 80 voxels
    prediction = torch.zeros_like(reference)
    prediction[0, 0, 0:2, 0:5] = 1  # covers 40 of them
    prediction[0, 0, 8:10] = 1  # outside: does not count
    metric = OverlapMetric()
    metric(one_hot(prediction, 2, dim=1), one_hot(reference, 2, dim=1))
    assert math.isclose(metric.aggregate().item(), 0.5)
    empty = OverlapMetric()
    empty(one_hot(prediction, 2, dim=1), one_hot(torch.zeros_like(reference), 2, dim=1))
    assert torch.isnan(empty.get_buffer()).all()


def test_gate_recall_counts_what_the_dilated_mask_keeps():
    """A mask of slab x < 4, a 2 mm margin at 1 mm voxels: the gate is x < 6; classes at x = 5 and 7."""
    labels = torch.zeros(1, 1, 12, 6, 6)
    labels[0, 0, 2] = 2  # right atrium inside the mask
    labels[0, 0, 5] = 1  # wall within the margin
    labels[0, 0, 7] = 3  # left atrium beyond it
    mask = torch.zeros(1, 1, 12, 6, 6)
    mask[0, 0, :4] = 1
    metric = GateRecallMetric(margin_mm=2.0, spacing=[1.0, 1.0, 1.0])
    metric(one_hot(mask, 2, dim=1), labels)
    wall, right, left, atria = metric.get_buffer()[0].tolist()
    assert (wall, right, left) == (1.0, 1.0, 0.0)
    assert math.isclose(atria, 2 / 3, rel_tol=1e-6)  # a float32 ratio
    # the spacing read from the prediction's affine: 2 mm voxels make the 2 mm margin one voxel
    coarse = GateRecallMetric(margin_mm=2.0)
    coarse(MetaTensor(one_hot(mask, 2, dim=1), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0]))), labels)
    assert coarse.get_buffer()[0, 0].item() == 0.0
