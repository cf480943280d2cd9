"""Property and fuzz tests: geometry round trips, metric invariants, and any bytes given to the loader."""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascade.errors import InputError
from cascade.io import load_nifti, read_header, save_nifti_atomic
from cascade.metrics import dice, hd95_mm, overlap

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

shapes = st.tuples(*[st.integers(2, 9)] * 3)
spacings = st.tuples(*[st.floats(0.2, 5.0)] * 3)
angles = st.tuples(*[st.floats(-np.pi, np.pi)] * 3)


def affine_of(
    spacing: tuple[float, float, float], angle: tuple[float, float, float], origin: float, order: list[int]
) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = nib.eulerangles.euler2mat(*angle) @ np.diag(spacing)[:, order]
    affine[:3, 3] = origin
    return affine


@FUZZ
@given(
    shape=shapes, spacing=spacings, angle=angles, origin=st.floats(-300, 300), order=st.permutations([0, 1, 2]),
    seed=st.integers(0, 2**16),
)
def test_saved_label_maps_keep_shape_affine_and_orientation(
    tmp_path_factory, shape, spacing, angle, origin, order, seed
):
    affine = affine_of(spacing, angle, origin, order)
    labels = np.random.default_rng(seed).integers(0, 4, shape).astype(np.uint8)
    path = save_nifti_atomic(labels, affine, tmp_path_factory.mktemp("rt") / "case_label.nii.gz")
    loaded = load_nifti(path, label=True)
    assert loaded.shape == shape
    np.testing.assert_allclose(loaded.affine, affine, atol=1e-4)
    assert nib.aff2axcodes(loaded.affine) == nib.aff2axcodes(affine)
    np.testing.assert_array_equal(np.asanyarray(loaded.dataobj), labels)


masks = st.integers(0, 2**16).map(lambda seed: np.random.default_rng(seed).random((10, 9, 7)) > 0.6)


@FUZZ
@given(
    shape=shapes, spacing=spacings, angle=angles, shift=st.floats(-50, 50), codes=st.tuples(
        st.sampled_from([0, 1, 2, 3, 4]), st.sampled_from([0, 1, 2, 3, 4])
    )
)
def test_saved_label_maps_keep_any_header_geometry(tmp_path_factory, shape, spacing, angle, shift, codes):
    """Any qform/sform pair (codes 0-4, matrices that disagree): the output's are the input's."""
    qform = affine_of(spacing, angle, 0.0, [0, 1, 2])
    sform = qform.copy()
    sform[:3, 3] += shift
    source = nib.Nifti1Image(np.zeros(shape, np.float32), None)
    source.set_qform(qform, codes[0])
    source.set_sform(sform, codes[1])
    header = nib.Nifti1Header.from_header(source.header)
    labels = np.ones(shape, np.uint8)
    path = save_nifti_atomic(
        labels, header.get_best_affine(), tmp_path_factory.mktemp("hdr") / "case_label.nii.gz", header=header
    )
    saved = nib.load(str(path)).header
    for get in ("get_qform", "get_sform"):
        assert int(getattr(saved, get)(coded=True)[1]) == int(getattr(header, get)(coded=True)[1])
        np.testing.assert_allclose(getattr(saved, get)(), getattr(header, get)(), atol=1e-4)
    np.testing.assert_allclose(saved.get_best_affine(), header.get_best_affine(), atol=1e-4)


@FUZZ
@given(seed=st.integers(0, 2**16), index=st.integers(0, 11), factor=st.floats(8.0, 1e4), spacing=spacings)
def test_a_bright_slice_is_found_and_a_clean_volume_is_left_alone(seed, index, factor, spacing):
    """Smooth, noisy volumes are never flagged; one slice at ``factor`` x their maximum always is."""
    from scipy.ndimage import gaussian_filter

    from cascade.intensity import find_intensity_outliers, repair_intensity_outliers, slice_axis

    rng = np.random.default_rng(seed)
    clean = (gaussian_filter(rng.uniform(50, 150, (16, 16, 12)), 2) + rng.rayleigh(5, (16, 16, 12))).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    assert not find_intensity_outliers(clean, affine)
    axis = slice_axis(affine)
    corrupt = clean.copy()
    np.moveaxis(corrupt, axis, 0)[index % corrupt.shape[axis]] = factor * clean.max()
    found = find_intensity_outliers(corrupt, affine)
    assert found.slices == (index % corrupt.shape[axis],)
    assert repair_intensity_outliers(corrupt, found).max() <= clean.max()


@FUZZ
@given(a=masks, b=masks, spacing=spacings, order=st.permutations([0, 1, 2]))
def test_metric_invariants(a, b, spacing, order):
    assert dice(a, b) == dice(b, a)
    assert dice(a, a) == 1.0 and overlap(a, a) == 1.0
    assert 0.0 <= dice(a, b) <= 1.0 and 0.0 <= overlap(a, b) <= 1.0
    # Dice is the harmonic mean of the two overlaps (precision and recall)
    if overlap(a, b) + overlap(b, a) > 0:
        assert dice(a, b) == pytest.approx(2 * overlap(a, b) * overlap(b, a) / (overlap(a, b) + overlap(b, a)))
    # HD95 is symmetric, zero on identical masks, and moves with the axes and their spacing
    assert hd95_mm(a, b, spacing) == pytest.approx(hd95_mm(b, a, spacing))
    assert hd95_mm(a, a, spacing) == 0.0
    permuted = [spacing[i] for i in order]
    assert hd95_mm(a.transpose(order), b.transpose(order), permuted) == pytest.approx(hd95_mm(a, b, spacing))
    assert hd95_mm(a[::-1], b[::-1], spacing) == pytest.approx(hd95_mm(a, b, spacing))


def valid_nifti_bytes() -> bytes:
    img = nib.Nifti1Image(np.ones((4, 4, 3), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    return img.to_bytes()


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes_are_a_clean_input_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "random.nii.gz"
    path.write_bytes(gzip.compress(data) if data[:1] == b"\x00" else data)
    with pytest.raises(InputError, match="random.nii.gz"):
        load_nifti(path)


@FUZZ
@given(
    offset=st.integers(0, 347), values=st.binary(min_size=1, max_size=8), suffix=st.sampled_from([".nii", ".nii.gz"])
)
def test_random_headers_are_usable_or_a_clean_input_error(tmp_path_factory, offset, values, suffix):
    """A valid file with header bytes overwritten: either still a usable volume, or one InputError."""
    raw = bytearray(valid_nifti_bytes())
    raw[offset : offset + len(values)] = values[: max(0, 348 - offset)]
    path = tmp_path_factory.mktemp("fuzz") / f"header{suffix}"
    path.write_bytes(gzip.compress(bytes(raw)) if suffix == ".nii.gz" else bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel warns about odd header fields it then repairs
        try:
            img = load_nifti(path)
        except InputError as err:
            assert str(err).startswith(str(path))
            return
    assert len(img.shape) == 3 and np.isfinite(np.asanyarray(img.dataobj)).all()
    read_header(path)
