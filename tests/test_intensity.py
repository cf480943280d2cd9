"""Corrupt slices and spikes (cascade.intensity): found where they are, repaired, clean scans untouched."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

from cascade import intensity
from cascade.intensity import (
    OUTLIERS_META_KEY, RepairIntensityOutliersd, channel_outliers, find_intensity_outliers, record_intensity_outliers,
    repair_intensity_outliers, slice_axis,
)
from cascade.phantom import make_phantom


def phantom():
    return make_phantom(11, (24, 96, 96), (2.5, 1.25, 1.25))


def test_the_slice_axis_is_the_axis_of_the_largest_voxel_size():
    assert slice_axis(np.diag([-0.625, -0.625, 2.5, 1])) == 2
    assert slice_axis(np.array([[0, 0, 1.0, 0], [0, -3.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])) == 1
    assert slice_axis(np.eye(4)) == 2


def test_a_clean_scan_passes_bit_for_bit():
    image, _, affine = phantom()
    assert not find_intensity_outliers(image, affine)
    tensor = MetaTensor(torch.as_tensor(image[None]), affine=torch.as_tensor(affine))
    repaired = RepairIntensityOutliersd("image")({"image": tensor})["image"]
    assert torch.equal(repaired.as_tensor(), tensor.as_tensor())


def test_corrupt_slices_and_spikes_are_found_and_repaired_without_touching_the_input():
    image, _, affine = phantom()
    corrupt = image.copy()
    corrupt[:, :, 0] = 6 * image.max()
    corrupt[:, :, 13] = 65535
    spikes = (np.array([5, 40, 70]), np.array([9, 50, 80]), np.array([3, 7, 20]))
    corrupt[spikes] = 1e6
    before = corrupt.copy()
    found = find_intensity_outliers(corrupt, affine)
    assert (found.axis, found.slices, found.spikes) == (2, (0, 13), 3)
    assert "slices 0, 13 along axis 2 are " in found.describe() and "3 spike voxels" in found.describe()
    repaired = repair_intensity_outliers(corrupt, found)
    np.testing.assert_array_equal(corrupt, before)
    np.testing.assert_array_equal(repaired[:, :, 0], image[:, :, 1])
    assert any(np.array_equal(repaired[:, :, 13], image[:, :, k]) for k in (12, 14))
    assert repaired.max() <= image.max() and not find_intensity_outliers(repaired, affine)


def test_a_stack_of_few_slices_is_checked_for_spikes_only():
    image, _, affine = make_phantom(11, (6, 96, 96), (2.5, 1.25, 1.25))
    image[:, :, 0] = 6 * image.max()
    found = find_intensity_outliers(image, affine)
    assert found.slices == ()


def test_a_recorded_search_is_used_on_its_own_grid_only(monkeypatch):
    """The cascade searches a case once (record_intensity_outliers); the stages' repair uses the
    record, repairs exactly as a fresh search would, and searches anew on any other grid."""
    image, _, affine = phantom()
    image[:, :, 13] = 65535
    tensor = MetaTensor(torch.as_tensor(image[None]), affine=torch.as_tensor(affine))
    fresh = RepairIntensityOutliersd("image")({"image": tensor.clone()})["image"]
    searches = []
    monkeypatch.setattr(intensity, "find_intensity_outliers",
                        lambda *args: searches.append(1) or find_intensity_outliers(*args))
    assert record_intensity_outliers(tensor)[0].slices == (13,) and len(searches) == 1
    repaired = RepairIntensityOutliersd("image")({"image": tensor})["image"]
    assert len(searches) == 1 and torch.equal(repaired.as_tensor(), fresh.as_tensor())
    assert OUTLIERS_META_KEY not in repaired.meta  # the record described the image before its repair
    assert channel_outliers(tensor[:, :, :, 1:]) != () and len(searches) == 2  # another grid: searched
    record = {OUTLIERS_META_KEY: tensor.meta[OUTLIERS_META_KEY]}
    channel_outliers(MetaTensor(tensor.as_tensor(), affine=torch.as_tensor(affine) * 2, meta=record))
    assert len(searches) == 3
