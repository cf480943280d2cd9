import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt, label as connected_components

from cascade.labels import LEFT_ATRIUM, RIGHT_ATRIUM, WALL
from cascade.phantom import make_phantom, write_phantoms

SMALL = dict(shape_zyx=(24, 160, 160), spacing_zyx=(2.5, 1.25, 1.25))


@pytest.fixture(scope="module")
def small_case():
    return make_phantom(11, **SMALL)


def test_mbas_layout_and_geometry(tmp_path):
    written = write_phantoms(tmp_path, cases=2, seed=3, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    assert written == ["MBAS_001", "MBAS_002"]
    image = nib.load(str(tmp_path / "MBAS_001" / "MBAS_001_gt.nii.gz"))
    label = nib.load(str(tmp_path / "MBAS_001" / "MBAS_001_label.nii.gz"))
    assert image.shape == label.shape == (160, 160, 24)  # stored (X, Y, Z)
    np.testing.assert_allclose(image.header.get_zooms(), (1.25, 1.25, 2.5))
    np.testing.assert_allclose(np.diag(image.affine)[:3], (-1.25, -1.25, 2.5))
    np.testing.assert_array_equal(image.affine, label.affine)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    assert label.get_data_dtype() == np.uint8 and image.get_data_dtype() == np.float32


def test_labels_are_one_component_with_all_classes(small_case):
    _, label, _ = small_case
    assert set(np.unique(label).tolist()) == {0, WALL, RIGHT_ATRIUM, LEFT_ATRIUM}
    _, components = connected_components(label > 0, structure=np.ones((3, 3, 3)))
    assert components == 1


def test_wall_is_two_to_three_mm_thick(small_case):
    _, label, _ = small_case
    spacing = (1.25, 1.25, 2.5)
    cavity = (label == RIGHT_ATRIUM) | (label == LEFT_ATRIUM)
    outside = label == 0
    # thickness across the shell: distance from the outer surface to the cavity, at the outer surface
    to_cavity = distance_transform_edt(~cavity, sampling=spacing)
    outer_wall = (label == WALL) & (distance_transform_edt(~outside, sampling=spacing) <= 1.25)
    thickness = np.median(to_cavity[outer_wall])
    assert 1.5 <= thickness <= 3.5


def test_deterministic_per_case_and_seed(tmp_path):
    a = make_phantom(5, **SMALL)
    b = make_phantom(5, **SMALL)
    c = make_phantom(6, **SMALL)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    write_phantoms(tmp_path / "two", cases=2, seed=9, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    write_phantoms(tmp_path / "one", cases=1, seed=9, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    first = [np.asanyarray(nib.load(str(p / "MBAS_001" / "MBAS_001_gt.nii.gz")).dataobj) for p in (tmp_path / "two", tmp_path / "one")]
    np.testing.assert_array_equal(*first)


def test_anatomy_keeps_its_physical_size_on_other_grids():
    volumes = []
    for shape, spacing in (((24, 160, 160), (2.5, 1.25, 1.25)), ((24, 200, 200), (2.5, 1.0, 1.0))):
        _, label, _ = make_phantom(4, shape, spacing)
        volumes.append((label > 0).sum() * np.prod(spacing))
    assert volumes[0] == pytest.approx(volumes[1], rel=0.1)


def test_confounders_are_as_bright_as_atrial_blood(small_case):
    image, label, _ = small_case
    cavity_mean = image[(label == LEFT_ATRIUM) | (label == RIGHT_ATRIUM)].mean()
    bright_outside = (image > 0.8 * cavity_mean) & (label == 0)
    # ventricles, great vessels and fat outside the atria are as bright: intensity alone cannot segment
    assert bright_outside.sum() > (label > 1).sum()
    assert image[label == 0].min() >= 0  # Rician magnitude
