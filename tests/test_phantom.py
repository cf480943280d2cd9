"""Synthetic phantoms: MBAS layout and geometry, label topology, wall thickness, physical size,
determinism and intensity confounders, on reduced grids."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion, distance_transform_edt, generate_binary_structure
from scipy.ndimage import label as connected_components

from cascade.labels import LEFT_ATRIUM, RIGHT_ATRIUM, WALL
from cascade.phantom import _structure_masks, make_phantom, write_phantoms

SMALL_SHAPE, SMALL_SPACING = (24, 160, 160), (2.5, 1.25, 1.25)  # (Z, Y, X): 60 x 200 x 200 mm
FINE_SHAPE, FINE_SPACING = (24, 320, 320), (2.5, 0.625, 0.625)  # same field of view, MBAS in-plane spacing
TINY_SHAPE, TINY_SPACING = (12, 48, 40), (2.5, 2.5, 2.5)
SIX = generate_binary_structure(3, 1)


@pytest.fixture(scope="module")
def small_case():
    return make_phantom(11, SMALL_SHAPE, SMALL_SPACING)


@pytest.fixture(scope="module")
def fine_case():
    return make_phantom(11, FINE_SHAPE, FINE_SPACING)


def test_mbas_layout_and_geometry(tmp_path):
    written = write_phantoms(tmp_path, cases=2, seed=3, shape=SMALL_SHAPE, spacing=SMALL_SPACING)
    assert written == ["MBAS_001", "MBAS_002"]
    assert sorted(p.name for p in tmp_path.iterdir()) == written
    assert sorted(p.name for p in (tmp_path / "MBAS_002").iterdir()) == ["MBAS_002_gt.nii.gz", "MBAS_002_label.nii.gz"]
    image = nib.load(str(tmp_path / "MBAS_001" / "MBAS_001_gt.nii.gz"))
    label = nib.load(str(tmp_path / "MBAS_001" / "MBAS_001_label.nii.gz"))
    assert image.shape == label.shape == (160, 160, 24)  # stored (X, Y, Z)
    np.testing.assert_allclose(image.header.get_zooms(), (1.25, 1.25, 2.5))
    np.testing.assert_allclose(np.diag(image.affine)[:3], (-1.25, -1.25, 2.5))
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    assert np.all(np.abs(image.affine[:3, 3]) < 300)  # a scanner-like origin (mm)
    for img in (image, label):
        np.testing.assert_allclose(img.affine, image.affine)
        qform, qcode = img.get_qform(coded=True)
        sform, scode = img.get_sform(coded=True)
        assert qcode in (1, 2) and scode in (1, 2)
        np.testing.assert_allclose(qform, sform, atol=1e-5)
    assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
    assert not list(tmp_path.rglob(".*"))  # no temporary files left behind


def test_labels_are_one_six_connected_component_with_all_classes(small_case):
    _, label, _ = small_case
    assert label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, WALL, RIGHT_ATRIUM, LEFT_ATRIUM}
    _, components = connected_components(label > 0, structure=SIX)
    assert components == 1


def test_wall_separates_the_cavities_and_encloses_them_but_for_the_vein_openings(small_case):
    _, label, _ = small_case
    left, right, cavity = label == LEFT_ATRIUM, label == RIGHT_ATRIUM, label > WALL
    assert not (binary_dilation(left, SIX) & right).any()  # the septum is wall
    surface = cavity & binary_dilation(~cavity, SIX)
    open_surface = cavity & binary_dilation(label == 0, SIX)
    assert 0 < open_surface.sum() < 0.08 * surface.sum()  # open only where the veins leave


def test_wall_is_two_to_three_mm_thick(fine_case):
    _, label, _ = fine_case
    spacing = (0.625, 0.625, 2.5)
    cavity = label > WALL
    # across the shell: distance from the wall's outer in-plane surface to the nearest cavity voxel
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = SIX[:, :, 1]
    outer_wall = (label == WALL) & binary_dilation(label == 0, in_plane)
    thickness = np.median(distance_transform_edt(~cavity, sampling=spacing)[outer_wall])
    assert 1.8 <= thickness <= 3.2


def test_anatomy_keeps_its_physical_size_and_fits_the_reduced_field_of_view(small_case, fine_case):
    for _, label, _ in (small_case, fine_case):
        inside = label > 0
        for axis in range(3):
            border = np.take(inside, [0, -1], axis=axis)
            assert not border.any(), f"labels touch the border of axis {axis}"
    # mm^3 per class; the 2-3 mm wall is one or two 1.25 mm voxels thick, so its volume is coarser
    for values, tolerance in (((RIGHT_ATRIUM,), 0.03), ((LEFT_ATRIUM,), 0.03), ((WALL,), 0.12), ((1, 2, 3), 0.05)):
        small = np.isin(small_case[1], values).sum() * np.prod(SMALL_SPACING)
        fine = np.isin(fine_case[1], values).sum() * np.prod(FINE_SPACING)
        assert small == pytest.approx(fine, rel=tolerance), values
    total_ml = (fine_case[1] > 0).sum() * np.prod(FINE_SPACING) / 1000
    assert 100 < total_ml < 450  # MBAS: about 270k voxels of 0.98 mm^3


def test_deterministic_per_case_and_seed(tmp_path):
    first, again, other = (make_phantom(s, TINY_SHAPE, TINY_SPACING) for s in (5, 5, 6))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    assert not np.array_equal(first[0], other[0])
    write_phantoms(tmp_path / "two", cases=2, seed=9, shape=TINY_SHAPE, spacing=TINY_SPACING)
    write_phantoms(tmp_path / "one", cases=1, seed=9, shape=TINY_SHAPE, spacing=TINY_SPACING)
    for suffix in ("gt", "label"):
        arrays = [
            np.asanyarray(nib.load(str(root / "MBAS_001" / f"MBAS_001_{suffix}.nii.gz")).dataobj)
            for root in (tmp_path / "two", tmp_path / "one")
        ]
        assert arrays[0].tobytes() == arrays[1].tobytes()
    second = np.asanyarray(nib.load(str(tmp_path / "two" / "MBAS_002" / "MBAS_002_label.nii.gz")).dataobj)
    assert not np.array_equal(arrays[1], second)


def test_pose_and_size_vary_between_cases():
    centroids, volumes = [], []
    for seed in (1, 2, 3):
        _, label, _ = make_phantom(seed, TINY_SHAPE, TINY_SPACING)
        centroids.append(np.argwhere(label == LEFT_ATRIUM).mean(0) * TINY_SPACING[::-1])
        volumes.append((label > 0).sum())
    assert max(np.linalg.norm(a - b) for a in centroids for b in centroids) > 2.0  # mm
    assert max(volumes) > 1.1 * min(volumes)


def test_intensity_alone_cannot_find_the_atria(small_case):
    image, label, _ = small_case
    masks = _structure_masks(11, SMALL_SHAPE, SMALL_SPACING)
    np.testing.assert_array_equal(masks["left_atrium"], label == LEFT_ATRIUM)
    core = {name: binary_erosion(masks[name], SIX, iterations=2) for name in ("blood", "lungs", "myocardium")}
    blood = image[label > WALL].mean()
    # ventricles and great vessels, unlabelled, as bright as atrial blood
    assert core["blood"].sum() > 0.3 * (label > WALL).sum()
    assert image[core["blood"]].mean() == pytest.approx(blood, rel=0.2)
    assert image[core["lungs"]].mean() < 0.2 * blood
    assert image[core["myocardium"]].mean() < 0.3 * blood  # nulled
    far = distance_transform_edt(label == 0, sampling=SMALL_SPACING[::-1]) > 10  # mm from any label
    assert ((image > 0.8 * blood) & far).sum() > (label > WALL).sum()
    wall = image[label == WALL]
    assert np.median(wall) < 0.6 * blood < np.percentile(wall, 95)  # dark wall with enhanced patches
    assert image.min() >= 0 and np.median(image[~masks["body"]]) < 0.1 * blood  # Rician magnitude, dark air


def test_invalid_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="cases"):
        write_phantoms(tmp_path, cases=0)
    with pytest.raises(ValueError, match="shape and spacing"):
        write_phantoms(tmp_path, cases=1, shape=(24, 160), spacing=SMALL_SPACING)
    with pytest.raises(ValueError, match="shape and spacing"):
        make_phantom(0, SMALL_SHAPE, (2.5, 0.0, 1.25))
    assert not any(tmp_path.iterdir())
