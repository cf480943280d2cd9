import math

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, generate_binary_structure

from cascade.metrics import dice, hd95_mm, hd95_monai_vox, overlap, score_binary, score_case

MBAS_SPACING = (0.625, 0.625, 2.5)  # nibabel (X, Y, Z) order


def ball_mask(shape, centre_mm, radius_mm, spacing):
    grid = np.indices(shape).astype(float)
    dist2 = sum(((grid[a] * spacing[a]) - centre_mm[a]) ** 2 for a in range(3))
    return dist2 <= radius_mm**2


def test_offset_spheres_on_anisotropic_grid():
    shape, radius, offset = (96, 96, 24), 15.0, 5.0
    centre = np.array([30.0, 30.0, 30.0])
    a = ball_mask(shape, centre, radius, MBAS_SPACING)
    b = ball_mask(shape, centre + [offset, 0, 0], radius, MBAS_SPACING)
    # analytic overlap of two equal spheres at distance d: V_lens / V_sphere
    d, r = offset, radius
    lens = math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12
    expected_dice = lens / (4 / 3 * math.pi * r**3)
    assert dice(a, b) == pytest.approx(expected_dice, abs=0.03)
    # the farthest surface points are `offset` apart; HD95 lies below it and within a voxel of it
    assert offset - 2.5 <= hd95_mm(a, b, MBAS_SPACING) <= offset + 0.625


def test_matches_medpy_including_border_objects():
    binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(25):
        shape = (30, 26, 10)
        a = rng.random(shape) > 0.7
        b = ball_mask(shape, rng.uniform(0, 30, 3), rng.uniform(3, 12), MBAS_SPACING)
        a[:, :, 0] |= rng.random(shape[:2]) > 0.5  # objects touching the volume border
        if not b.any():
            continue
        assert hd95_mm(a, b, MBAS_SPACING) == pytest.approx(binary.hd95(a, b, voxelspacing=MBAS_SPACING), abs=1e-9)
        checked += 1
    assert checked > 10


def test_cropping_keeps_the_volume_border_rule():
    """An object flush with the volume border: the border face is surface, so HD95 = 0 for equal masks
    and a one-voxel shrink costs exactly one voxel of distance."""
    a = np.zeros((20, 20, 8), bool)
    a[0:6, 5:12, 2:6] = True
    b = a.copy()
    b[0:5] = a[1:6]
    b[5] = False
    assert hd95_mm(a, a, MBAS_SPACING) == 0.0
    assert hd95_mm(a, b, MBAS_SPACING) == pytest.approx(0.625)


def test_far_false_positive_blob_is_below_the_95th_percentile():
    """A far blob holding ~3.6% of the union of surfaces leaves HD95 at 0 in the MBAS convention, but
    ~7% of the prediction's own surface, so the paper's max-of-directed-percentiles convention sees it."""
    shape = (160, 160, 20)
    truth = ball_mask(shape, (35.0, 35.0, 25.0), 15.0, MBAS_SPACING)
    surface = int((truth ^ binary_erosion(truth, generate_binary_structure(3, 1))).sum())
    blob = int(np.ceil(0.075 * surface))
    pred = truth.copy()
    side = int(np.ceil(np.sqrt(blob)))
    sheet = np.zeros((side, side), bool).ravel()
    sheet[:blob] = True
    pred[150 - side : 150, 150 - side : 150, 3] = sheet.reshape(side, side)  # a one-voxel sheet > 40 mm away
    assert hd95_mm(pred, truth, MBAS_SPACING) == 0.0
    assert hd95_monai_vox(pred, truth) > 40
    assert dice(pred, truth) < 1


def test_spacing_order_matters():
    a = ball_mask((60, 60, 20), (18.0, 18.0, 25.0), 10.0, MBAS_SPACING)
    b = ball_mask((60, 60, 20), (18.0, 18.0, 30.0), 10.0, MBAS_SPACING)
    right, wrong = hd95_mm(a, b, MBAS_SPACING), hd95_mm(a, b, MBAS_SPACING[::-1])
    assert right == pytest.approx(5.0, abs=0.7)
    assert abs(right - wrong) > 1.0


def test_empty_classes_are_nan_with_status_not_zero():
    truth = np.zeros((10, 10, 4), np.uint8)
    truth[2:6, 2:6, 1:3] = 2
    pred = np.zeros_like(truth)
    pred[2:6, 2:6, 1:3] = 3
    rows = {r["class"]: r for r in score_case(pred, truth, MBAS_SPACING)}
    assert rows["right_atrium"]["status"] == "empty_prediction"
    assert rows["right_atrium"]["dice"] == 0.0 and math.isnan(rows["right_atrium"]["hd95_mm"])
    assert rows["left_atrium"]["status"] == "empty_truth" and math.isnan(rows["left_atrium"]["hd95_monai_vox"])
    assert rows["wall"]["status"] == "both_empty" and math.isnan(rows["wall"]["dice"])


def test_binary_scores_and_overlap():
    truth = np.zeros((10, 10, 4), bool)
    truth[2:8, 2:8, 1:3] = True
    pred = np.zeros_like(truth)
    pred[2:8, 2:5, 1:3] = True
    scores = score_binary(pred, truth, MBAS_SPACING)
    assert scores["overlap"] == pytest.approx(0.5) == overlap(pred, truth)
    assert scores["dice"] == pytest.approx(2 * 36 / (36 + 72))
    assert scores["status"] == "ok"
