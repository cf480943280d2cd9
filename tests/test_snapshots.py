"""The PNG snapshots (cascade.snapshots) follow the radiological convention: a marker on the patient's right is drawn on
the image's left in the axial and coronal planes, anterior and superior are up, and the legend shows
every class colour."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cascade.labels import CLASS_COLOURS, LEFT_ATRIUM, RIGHT_ATRIUM, WALL
from cascade.snapshots import BORDER, GAP, LEGEND, PIXEL_MM, TITLE, save_overlay_png
from tests.conftest import MBAS_AFFINE, write_nifti

SHAPE = (40, 36, 12)  # voxels along the file's axes: towards the patient's left, posterior, superior (MBAS_AFFINE)


def marked_phantom() -> np.ndarray:
    """Three slabs: wall on the patient's right, right atrium anterior, left atrium superior."""
    label = np.zeros(SHAPE, np.uint8)
    label[1:6, :, :] = WALL  # low first index: the patient's right (the affine's x step is negative)
    label[8:, 1:6, :] = RIGHT_ATRIUM  # low second index: anterior
    label[8:, 8:, 9:11] = LEFT_ATRIUM  # high third index: superior
    return label


def panels(png: Image.Image, spacing_mm: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """The three plane pictures of a snapshot, cut out at the positions the layout gives them."""
    sx, sy, sz = spacing_mm
    sizes = {
        "axial": (SHAPE[0] * sx, SHAPE[1] * sy),
        "coronal": (SHAPE[0] * sx, SHAPE[2] * sz),
        "sagittal": (SHAPE[1] * sy, SHAPE[2] * sz),
    }
    pixels, cut, left = np.asarray(png), {}, 0
    for name, (width_mm, height_mm) in sizes.items():
        width, height = round(width_mm / PIXEL_MM), round(height_mm / PIXEL_MM)
        x0, y0 = left + BORDER, TITLE + BORDER
        cut[name] = pixels[y0:y0 + height, x0:x0 + width]
        left += width + 2 * BORDER + GAP
    return cut


def centre_of(panel: np.ndarray, value: int) -> tuple[float, float]:
    """Mean (row, column) of a class's pixels, as fractions of the panel's height and width."""
    colour = (0.55 * np.asarray(CLASS_COLOURS[value])).astype(np.uint8)  # on a black image (constant intensities)
    rows, cols = np.nonzero(np.all(panel == colour, axis=-1))
    assert len(rows), f"class {value} not drawn"
    return rows.mean() / panel.shape[0], cols.mean() / panel.shape[1]


def test_patient_right_is_drawn_on_the_image_left(tmp_path):
    label = marked_phantom()
    write_nifti(tmp_path / "image.nii.gz", np.zeros(SHAPE, np.float32))
    write_nifti(tmp_path / "label.nii.gz", label)
    written = save_overlay_png(tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", tmp_path / "case.png")
    png = Image.open(written).convert("RGB")
    cut = panels(png, (0.625, 0.625, 2.5))

    assert centre_of(cut["axial"], WALL)[1] < 0.2  # patient's right: image's left
    assert centre_of(cut["axial"], RIGHT_ATRIUM)[0] < 0.2  # anterior up
    assert centre_of(cut["coronal"], WALL)[1] < 0.2
    assert centre_of(cut["coronal"], LEFT_ATRIUM)[0] < 0.3  # superior up
    assert centre_of(cut["sagittal"], RIGHT_ATRIUM)[1] < 0.2  # anterior on the left
    assert centre_of(cut["sagittal"], LEFT_ATRIUM)[0] < 0.3

    legend = np.asarray(png)[-LEGEND:]
    for colour in CLASS_COLOURS.values():
        assert np.all(legend == np.asarray(colour, np.uint8), axis=-1).sum() > 100  # a swatch of each class
    letters = np.asarray(png)[TITLE:TITLE + cut["axial"].shape[0] + 2 * BORDER, :BORDER]
    assert (letters == 255).all(axis=-1).any()  # the letter at the axial plane's left edge (R)


def test_the_picture_does_not_depend_on_the_file_axis_order(tmp_path):
    """The same patient stored with the first axis reversed (a RAS affine) gives the same picture."""
    label = marked_phantom()
    image = np.random.default_rng(0).normal(100, 20, SHAPE).astype(np.float32)
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = SHAPE[0] - 1
    ras = MBAS_AFFINE @ flip  # voxel i of the flipped array is voxel SHAPE[0]-1-i of the original
    write_nifti(tmp_path / "a_image.nii.gz", image)
    write_nifti(tmp_path / "a_label.nii.gz", label)
    write_nifti(tmp_path / "b_image.nii.gz", image[::-1].copy(), ras)
    write_nifti(tmp_path / "b_label.nii.gz", label[::-1].copy(), ras)
    a = save_overlay_png(tmp_path / "a_image.nii.gz", tmp_path / "a_label.nii.gz", tmp_path / "a.png")
    b = save_overlay_png(tmp_path / "b_image.nii.gz", tmp_path / "b_label.nii.gz", tmp_path / "b.png")
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
