import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import HausdorffDistanceMetric
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from cascade.metrics import case_status, dice, hd95_mm, hd95_monai_vox, overlap, score_binary, score_case

MBAS_SPACING = (0.625, 0.625, 2.5)  # nibabel (X, Y, Z) order


def ball_mask(shape, centre_mm, radius_mm, spacing=MBAS_SPACING):
    grid = np.indices(shape, sparse=True)
    dist2 = sum((grid[a] * spacing[a] - centre_mm[a]) ** 2 for a in range(3))
    return dist2 <= radius_mm**2


def uncropped_hd95_mm(a, b, spacing):
    """The MBAS definition on the whole volume, written out plainly (no cropping)."""
    cross = generate_binary_structure(3, 1)
    surf_a, surf_b = (m ^ binary_erosion(m, cross, border_value=0) for m in (a, b))
    d_ab = distance_transform_edt(~surf_b, sampling=spacing)[surf_a]
    d_ba = distance_transform_edt(~surf_a, sampling=spacing)[surf_b]
    return float(np.percentile(np.concatenate([d_ab, d_ba]), 95))


def uncropped_monai(a, b):
    metric = HausdorffDistanceMetric(include_background=True, percentile=95, directed=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(metric(torch.as_tensor(a)[None, None], torch.as_tensor(b)[None, None]).item())


def shapes_near_borders():
    """Mask pairs flush with, one voxel from and two voxels from the volume borders, plus noise."""
    rng = np.random.default_rng(0)
    shape = (30, 26, 10)
    pairs = []
    for gap in (0, 1, 2):
        a = np.zeros(shape, bool)
        a[gap : 12, gap : 9, gap : 5] = True
        b = np.zeros(shape, bool)
        b[10 : shape[0] - gap, 14 : shape[1] - gap, 4 : shape[2] - gap] = True
        b[gap : 8, gap : 6, gap : 3] = True
        pairs.append((a, b))
    for _ in range(6):
        a = rng.random(shape) > 0.8
        a[:, :, 0] |= rng.random(shape[:2]) > 0.5
        b = ball_mask(shape, rng.uniform(0, 18, 3), rng.uniform(4, 10))
        pairs.append((a, b))
    return pairs


def test_dice_and_overlap_of_boxes():
    truth = np.zeros((10, 10, 4), bool)
    truth[2:8, 2:8, 1:3] = True  # 72 voxels
    pred = np.zeros_like(truth)
    pred[2:8, 5:10, 1:3] = True  # 60 voxels, 36 shared
    assert dice(pred, truth) == pytest.approx(2 * 36 / (60 + 72))
    assert overlap(pred, truth) == pytest.approx(36 / 72)
    assert overlap(truth, pred) == pytest.approx(36 / 60)
    assert dice(pred, np.zeros_like(truth)) == 0.0
    assert math.isnan(dice(np.zeros_like(truth), np.zeros_like(truth)))
    assert math.isnan(overlap(pred, np.zeros_like(truth)))
    with pytest.raises(ValueError, match="shape"):
        dice(pred, truth[:, :, :2])


@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("offset", [5.0, 7.5])
def test_offset_spheres_on_anisotropic_grid(axis, offset):
    shape, radius = (96, 96, 24), 15.0
    centre = np.array([30.0, 30.0, 30.0])
    moved = centre.copy()
    moved[axis] += offset
    a, b = ball_mask(shape, centre, radius), ball_mask(shape, moved, radius)
    lens = math.pi * (4 * radius + offset) * (2 * radius - offset) ** 2 / 12  # two spheres at distance d
    assert dice(a, b) == pytest.approx(lens / (4 / 3 * math.pi * radius**3), abs=0.01)
    # the farthest surface points are `offset` apart; HD95 is at most that, and within a voxel of it
    hd = hd95_mm(a, b, MBAS_SPACING)
    assert offset - max(MBAS_SPACING) <= hd <= offset + 1e-9
    if axis == 2:  # whole flat caps of 2.5 mm slices are `offset` apart
        assert hd == pytest.approx(offset)
        assert hd95_monai_vox(a, b) == pytest.approx(offset / MBAS_SPACING[2])


def test_hd95_mm_equals_medpy_exactly():
    binary = pytest.importorskip("medpy.metric.binary")
    for a, b in shapes_near_borders():
        for spacing in (MBAS_SPACING, (1.0, 1.0, 1.0), (0.9, 1.3, 3.1)):
            assert hd95_mm(a, b, spacing) == pytest.approx(binary.hd95(a, b, voxelspacing=spacing), abs=1e-9)


def test_cropping_changes_nothing_at_or_near_the_volume_border():
    for a, b in shapes_near_borders():
        assert hd95_mm(a, b, MBAS_SPACING) == pytest.approx(uncropped_hd95_mm(a, b, MBAS_SPACING), abs=1e-9)
        assert hd95_monai_vox(a, b) == pytest.approx(uncropped_monai(a, b), abs=1e-5)
        scores = score_binary(a, b, MBAS_SPACING)
        assert scores["dice"] == dice(a, b) and scores["overlap"] == overlap(a, b)


def test_volume_border_faces_are_surface():
    """A box flush with the volume border: its border face is surface, so shrinking it by one voxel
    away from that face costs exactly one voxel; with a background margin it would cost the same."""
    a = np.zeros((20, 20, 8), bool)
    a[0:6, 5:12, 2:6] = True
    b = np.zeros_like(a)
    b[1:6, 5:12, 2:6] = True
    assert hd95_mm(a, a, MBAS_SPACING) == 0.0
    assert hd95_mm(a, b, MBAS_SPACING) == pytest.approx(0.625)
    # the same pair one voxel inside the volume gives the same value
    assert hd95_mm(np.roll(a, 1, axis=0), np.roll(b, 1, axis=0), MBAS_SPACING) == pytest.approx(0.625)


def test_far_false_positive_blob_below_five_percent_of_surfaces():
    """A far blob holding ~3.6% of the union of both surfaces leaves the MBAS HD95 at 0, but it is ~7%
    of the prediction's own surface, so the paper's max-of-directed-percentiles convention sees it."""
    shape = (160, 160, 20)
    truth = ball_mask(shape, (35.0, 35.0, 25.0), 15.0)
    surface = int((truth ^ binary_erosion(truth, generate_binary_structure(3, 1))).sum())
    blob = int(np.ceil(0.075 * surface))
    side = int(np.ceil(np.sqrt(blob)))
    sheet = np.zeros(side * side, bool)
    sheet[:blob] = True
    pred = truth.copy()
    pred[150 - side : 150, 150 - side : 150, 3] = sheet.reshape(side, side)  # one voxel thick, > 40 mm away
    assert blob / (2 * surface + blob) < 0.05 < blob / (surface + blob)
    assert hd95_mm(pred, truth, MBAS_SPACING) == 0.0
    assert hd95_monai_vox(pred, truth) > 40
    assert dice(pred, truth) < 1
    # a blob above 5% of the union does show in the MBAS convention
    bigger = pred.copy()
    bigger[150 - side : 150, 150 - side : 150, 5] = True
    bigger[150 - side : 150, 150 - side : 150, 7] = True
    assert hd95_mm(bigger, truth, MBAS_SPACING) > 40


def test_spacing_order_matters():
    a = ball_mask((60, 60, 20), (18.0, 18.0, 25.0), 10.0)
    b = ball_mask((60, 60, 20), (18.0, 18.0, 30.0), 10.0)
    right, wrong = hd95_mm(a, b, MBAS_SPACING), hd95_mm(a, b, MBAS_SPACING[::-1])
    assert right == pytest.approx(5.0)
    assert wrong < right / 2
    with pytest.raises(ValueError, match="one value per array axis"):
        hd95_mm(a, b, (0.625, 2.5))


def test_empty_masks_are_nan_with_status():
    full = np.zeros((10, 10, 4), bool)
    full[2:6, 2:6, 1:3] = True
    empty = np.zeros_like(full)
    assert case_status(empty, full) == "empty_prediction"
    assert case_status(full, empty) == "empty_truth"
    assert case_status(empty, empty) == "both_empty"
    for pred, truth in ((empty, full), (full, empty), (empty, empty)):
        assert math.isnan(hd95_mm(pred, truth, MBAS_SPACING))
        assert math.isnan(hd95_monai_vox(pred, truth))
        assert math.isnan(uncropped_monai(pred, truth))  # MONAI itself gives NaN there
    scores = score_binary(empty, full, MBAS_SPACING)
    assert scores["dice"] == 0.0 and scores["overlap"] == 0.0 and scores["status"] == "empty_prediction"
    assert math.isnan(score_binary(empty, empty, MBAS_SPACING)["dice"])


def test_score_case_keeps_every_class_with_status():
    truth = np.zeros((10, 10, 4), np.uint8)
    truth[2:6, 2:6, 1:3] = 2
    truth[6:9, 2:6, 1:3] = 1
    pred = np.zeros_like(truth)
    pred[2:6, 2:6, 1:3] = 3
    pred[6:9, 2:6, 1:3] = 1
    rows = score_case(pred, truth, MBAS_SPACING)
    assert [r["class"] for r in rows] == ["wall", "right_atrium", "left_atrium"]
    assert set(rows[0]) == {"class", "dice", "hd95_mm", "hd95_monai_vox", "status"}
    wall, ra, la = rows
    assert wall == {"class": "wall", "dice": 1.0, "hd95_mm": 0.0, "hd95_monai_vox": 0.0, "status": "ok"}
    assert ra["status"] == "empty_prediction" and ra["dice"] == 0.0
    assert math.isnan(ra["hd95_mm"]) and math.isnan(ra["hd95_monai_vox"])
    assert la["status"] == "empty_truth" and la["dice"] == 0.0 and math.isnan(la["hd95_mm"])
    both_empty = score_case(np.zeros_like(truth), np.zeros_like(truth), MBAS_SPACING)
    assert all(r["status"] == "both_empty" and math.isnan(r["dice"]) for r in both_empty)
