"""DICOM in and DICOM SEG out: series written with pydicom from phantoms, read back with highdicom."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.data import PydicomReader

from cascade.dicom import SEGMENT_CODES, choose_series, find_series, read_series, write_segmentation
from cascade.errors import InputError
from cascade.metrics import dice
from cascade.phantom import make_phantom
from cascade.predict import list_inputs
from tests.dicom_series import write_series
from tests.test_predict import error_lines


def _rotation(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[:3, :3] = [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    return rotation


@pytest.fixture(scope="module")
def oblique_phantom() -> tuple[nib.Nifti1Image, np.ndarray]:
    """A phantom on a grid tilted 20 degrees about x (an oblique acquisition), and its label map."""
    image, label, affine = make_phantom(4242, (24, 160, 160), (2.5, 1.25, 1.25))
    return nib.Nifti1Image(image, _rotation(20) @ affine), label


def _quiet(lines: list[str]):
    return lines.append


@pytest.mark.parametrize("reverse", [False, True])
def test_a_series_reads_as_the_volume_it_was_written_from_and_as_monai_reads_it(oblique_phantom, tmp_path, reverse):
    """Slices are ordered by position, not by file name or InstanceNumber; the rescale is applied;
    the grid equals the NIfTI volume's, and MONAI's PydicomReader (which orders by InstanceNumber)
    reads the same array and affine where its order is right."""
    source, _ = oblique_phantom
    write_series(source, tmp_path / "series", reverse_instance_numbers=reverse)
    found = find_series(tmp_path, _quiet([]))
    volume, datasets = read_series(found[0])
    original = np.asarray(source.dataobj)
    step = (original.max() - original.min()) / 4000
    assert volume.shape == source.shape and np.allclose(volume.affine, source.affine, atol=1e-4)
    assert np.abs(np.asarray(volume.dataobj) - original).max() <= step
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    assert (np.diff([normal @ np.asarray(d.ImagePositionPatient, float) for d in datasets]) > 0).all()
    assert (volume.header["qform_code"], volume.header["sform_code"]) == (1, 1)
    if not reverse:
        reader = PydicomReader()
        array, meta = reader.get_data(reader.read(str(tmp_path / "series")))
        assert np.allclose(array, np.asarray(volume.dataobj), atol=1e-3)
        assert np.allclose(meta["affine"], volume.affine, atol=1e-4)


def test_one_series_per_study_by_the_documented_rule_or_by_uid(oblique_phantom, tmp_path):
    source, _ = oblique_phantom
    small = nib.Nifti1Image(np.asarray(source.dataobj)[:, :, :8], source.affine)
    study = "1.2.826.0.1.3680043.8.498.1"
    write_series(source, tmp_path / "study" / "lge", study_uid=study, series_uid="1.2.3.24", series_number=7)
    write_series(small, tmp_path / "study" / "sax", study_uid=study, series_uid="1.2.3.8", series_number=9)
    write_series(
        small, tmp_path / "study" / "cine", study_uid=study, series_uid="1.2.3.99", duplicate=range(8), series_number=3
    )
    (tmp_path / "study" / "notes.txt").write_text("not DICOM")
    chosen = list_inputs(tmp_path / "study")
    # distinct positions, most slices
    assert [(item["case"], item["series"].uid) for item in chosen] == [("lge", "1.2.3.24")]
    assert [item["series"].uid for item in list_inputs(tmp_path / "study", ["1.2.3.8"])] == ["1.2.3.8"]
    file_in_sax = next((tmp_path / "study" / "sax").iterdir())
    assert [item["series"].uid for item in list_inputs(file_in_sax)] == ["1.2.3.8"]  # a file stands for its series
    with pytest.raises(InputError, match=r"--series 1\.2\.3\.5: no image series with this UID"):
        list_inputs(tmp_path / "study", ["1.2.3.5"])
    lines: list[str] = []
    choose_series(find_series(tmp_path / "study", lines.append), None, lines.append)
    assert sum("--series UID" in line for line in lines) == 2


@pytest.mark.parametrize("break_series, message", [
    (dict(drop=[10]), r"1 slice\(s\) missing between"),
    (dict(duplicate=[5]), "two slices at the same position"),
    (dict(drop=range(1, 24)), "one slice, not a 3D volume"),
])
def test_a_broken_series_is_named_in_one_line(oblique_phantom, tmp_path, break_series, message):
    source, _ = oblique_phantom
    write_series(source, tmp_path / "in" / "lge", series_uid="1.2.3.4", **break_series)
    (series,) = find_series(tmp_path / "in", _quiet([]))
    with pytest.raises(InputError, match=rf"^{tmp_path / 'in' / 'lge'} \(series 1\.2\.3\.4\): {message}"):
        read_series(series)


def test_dicom_series_to_nifti_and_dicom_seg_end_to_end(oblique_phantom, tmp_path, predict):
    """`cascade predict` on a DICOM folder: the NIfTI output on the series grid, the DICOM SEG voxel-equal
    to it, referencing every source instance, coded per class (measured on this phantom: Dice 0.720 /
    0.945 / 0.905 against its truth, as from the NIfTI input)."""
    source, truth = oblique_phantom
    files = write_series(source, tmp_path / "in" / "patient" / "lge")
    out = tmp_path / "out"
    predict(str(tmp_path / "in"), str(out), "--demo", "--output_format", "both")

    label_image = nib.load(str(out / "lge_label.nii.gz"))
    labels = np.asarray(label_image.dataobj)
    assert label_image.shape == source.shape and np.allclose(label_image.affine, source.affine, atol=1e-4)
    assert dice(labels == 2, truth == 2) > 0.85 and dice(labels == 3, truth == 3) > 0.8

    seg = hd.seg.segread(out / "lge_seg.dcm")
    sources = [pydicom.dcmread(path) for path in files]
    ordered = sorted(sources, key=lambda d: int(d.InstanceNumber))  # write_series numbers slice k as k + 1
    frames = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in ordered], combine_segments=True)
    assert np.array_equal(frames, labels.transpose(2, 1, 0))
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {d.SOPInstanceUID for d in sources}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert (seg.StudyInstanceUID, seg.PatientID, seg.FrameOfReferenceUID) == (
        sources[0].StudyInstanceUID, sources[0].PatientID, sources[0].FrameOfReferenceUID)
    codes = {int(s.SegmentNumber): s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence}
    assert codes == {value: SEGMENT_CODES[value]["type"][0] for value in (1, 2, 3)}
    assert pydicom.dcmread(out / "lge_seg.dcm").Modality == "SEG"

    again = predict(str(tmp_path / "in"), str(out), "--demo", "--output_format", "both", "--resume")
    assert "1 kept from an earlier run" in again.stdout


def test_dicom_seg_of_an_empty_or_partial_label_map(oblique_phantom, tmp_path):
    """LA-only weights give one segment (number 1, the left atrium); an empty map is still a valid SEG."""
    source, truth = oblique_phantom
    write_series(source, tmp_path / "series")
    (series,) = find_series(tmp_path, _quiet([]))
    _, datasets = read_series(series)
    la_only = write_segmentation(np.where(truth == 3, 3, 0).astype(np.uint8), datasets, tmp_path / "la.dcm", [3])
    seg = hd.seg.segread(la_only)
    assert [(int(s.SegmentNumber), s.SegmentLabel) for s in seg.SegmentSequence] == [(1, "Left atrium cavity")]
    frames = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in datasets], combine_segments=True)
    assert np.array_equal(frames == 1, (truth == 3).transpose(2, 1, 0))
    empty = hd.seg.segread(
        write_segmentation(np.zeros(truth.shape, np.uint8), datasets, tmp_path / "empty.dcm", [1, 2, 3])
    )
    assert empty.number_of_segments == 3


def test_dicom_mistakes_are_one_line(oblique_phantom, tmp_path, cascade_in_process):
    from cascade.predict import check_outputs, output_kinds

    source, _ = oblique_phantom
    write_series(source, tmp_path / "in" / "lge", drop=[3])
    nib.save(source, tmp_path / "case.nii.gz")
    with pytest.raises(InputError, match="--series selects DICOM series, but this input holds NIfTI images"):
        list_inputs(tmp_path / "case.nii.gz", ["1.2.3"])
    with pytest.raises(InputError, match="--output_format dicom: expected one of nifti, dicom-seg, both"):
        output_kinds(output_format="dicom")
    with pytest.raises(InputError, match="a DICOM SEG output needs DICOM input"):
        check_outputs(
            list_inputs(tmp_path / "case.nii.gz"), tmp_path / "out", output_kinds(output_format="both"), False, False
        )
    cases = [  # through the command line: a broken series fails its case; an option fails before any work
        ([str(tmp_path / "in"), str(tmp_path / "out")], "slice(s) missing"),
        ([str(tmp_path / "in"), str(tmp_path / "out"), "--series", "lge"], "not a DICOM UID"),
    ]
    for args, message in cases:
        result = cascade_in_process("predict", *args, "--demo", "--device", "cpu")
        lines = error_lines(result)
        assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr[-2000:]
        assert not list((tmp_path / "out").glob("*_label.nii.gz"))
