"""DICOM in, DICOM SEG out: image series read as checked volumes, label maps written as DICOM
Segmentation objects that reference the series they were made from.

Needs the optional extra ``atria-cascade[dicom]`` (pydicom and highdicom).

MONAI's ``PydicomReader`` reads every DICOM file of a folder as one series, orders the slices by
InstanceNumber, takes the slice spacing from the z coordinate alone and only warns about slices
that do not fit; a study folder (several series), a sagittal stack or a series with a lost slice
would be segmented on a wrong grid without a word. This module therefore groups files by
SeriesInstanceUID, orders slices by their position along the slice normal and checks the
series before building the volume; on a clean single-series folder the volume and affine equal
``PydicomReader``'s (tested). Files stored without the 128-byte preamble are read when they hold an
image object; direction cosines within :data:`COSINE_TOLERANCE` of unit length are normalised, and
the voxel size comes from PixelSpacing and the slice positions alone. A series whose files name
several patients or studies is refused before any network runs.

Which series are predicted (:func:`choose_series`): with ``--series UID[,UID...]`` exactly those;
otherwise one per study (StudyInstanceUID): among its single-frame image series, the one whose
slices lie at distinct positions (a volume, not a cine or multi-phase series) with the most
slices, ties broken by the higher SeriesNumber. Every other series is named on stderr with the
reason it was not used.

Arrays follow :mod:`cascade.io`: (X, Y, Z) = (column, row, slice) of the sorted series, affine in
RAS millimetres; slice ``k`` of a label map is frame ``k`` of the series (its ``datasets[k]``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cascade import __version__
from cascade.errors import InputError
from cascade.io import check_geometry, check_intensities, file_sha256, write_atomic
from cascade.labels import CLASS_NAMES

__all__ = [
    "DicomSeries", "SEGMENT_CODES", "find_series", "choose_series", "read_series", "series_sha256",
    "write_segmentation", "has_dicom_files", "is_dicom_file", "is_segmentation", "require_highdicom", "series_uid",
]

INSTALL_HINT = "pip install 'atria-cascade[dicom]'"
HEADER_TAGS = (
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "SeriesNumber",
    "SeriesDescription", "NumberOfFrames", "ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns",
    "PatientID",
)
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR
NOT_IMAGES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"}
POSITION_TOLERANCE_MM = 0.05  # slice positions off their line by more than this are a broken series
# ImageOrientationPatient's direction cosines are unit vectors; headers written with few digits miss that by about 1e-4.
# Within this tolerance of length 1 (and of perpendicular) they are normalised, beyond it the series is refused.
COSINE_TOLERANCE = 0.01
# The first bytes of a DICOM data set stored without the 128-byte preamble and "DICM" (as some PACS exports and
# old CDs store them): the group number of its first element, file meta (0002) or identifying (0008), little endian.
_HEADLESS_STARTS = (b"\x02\x00", b"\x08\x00")

# SNOMED CT codes for each class, as DICOM PS3.16 gives them (CID 7150 "Segmentation Property
# Categories"; the anatomic codes of CID 4031 "Common Anatomic Regions", which pydicom's code
# dictionary carries). The cavities take the codes of the chambers: the tables have no code for
# an atrial cavity. The wall is "Cardiac wall structure" with "Atrium" as its anatomic region.
SEGMENT_CODES = {
    1: {"type": ("272657006", "Cardiac wall structure"), "region": ("59652004", "Atrium")},
    2: {"type": ("73829009", "Right atrium"), "region": None},
    3: {"type": ("82471001", "Left atrium"), "region": None},
}
CATEGORY_CODE = ("91723000", "Anatomical Structure")
SEGMENT_LABELS = {1: "Atrial wall", 2: "Right atrium cavity", 3: "Left atrium cavity"}
# Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1) that a SEG copies from its source:
# anonymised exports often drop them; they are present but may be empty
_TYPE_2_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)


def require_highdicom() -> None:
    """Raises :class:`~cascade.errors.InputError` with the install hint when highdicom is missing."""
    if importlib.util.find_spec("highdicom") is None:
        raise InputError(f"DICOM SEG output needs highdicom: {INSTALL_HINT}")


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise InputError(f"DICOM input needs pydicom: {INSTALL_HINT}") from None
    return pydicom


@dataclass(frozen=True)
class DicomSeries:
    """One series found under an input folder.

    Attributes:
        uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID.
        folder: the deepest folder holding all its files.
        files: its files, in the order found.
        number: SeriesNumber (``None`` when absent).
        description: SeriesDescription (may be empty).
        distinct_positions: every slice lies at its own position (a volume, not a time series).
    """

    uid: str
    study_uid: str
    folder: Path
    files: tuple[Path, ...]
    number: int | None
    description: str
    distinct_positions: bool

    @property
    def name(self) -> str:
        """How messages name it: the folder and the series UID."""
        return f"{self.folder} (series {self.uid})"

    def summary(self) -> str:
        number = "" if self.number is None else f" #{self.number}"
        description = f" '{self.description}'" if self.description else ""
        return f"series{number}{description} {self.uid} ({len(self.files)} files)"


def has_dicom_files(folder: str | os.PathLike) -> bool:
    """Whether a folder, or one below it, holds a DICOM file (see :func:`is_dicom_file`)."""
    return any(
        is_dicom_file(Path(root) / name)
        for root, _, names in os.walk(folder)
        for name in names
        if not name.startswith(".")
    )


def is_regular_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file (links followed): FIFOs, sockets and devices are never opened,
    since reading a FIFO blocks until something writes to it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether a regular file carries the DICOM preamble (``DICM`` at byte 128), or starts like a data
    set stored without it (see :data:`_HEADLESS_STARTS`; :func:`find_series` then checks that it
    reads as an image object)."""
    if not is_regular_file(path):
        return False
    try:
        with open(path, "rb") as stream:
            head = stream.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or head[:2] in _HEADLESS_STARTS


def _dcmread(path: str | os.PathLike, **kwargs):
    """``pydicom.dcmread`` that also reads a data set stored without preamble and file meta (``force``),
    with the transfer syntax it was read in recorded when its file meta has none (pixel decoding needs it).

    Raises:
        InputError: not a DICOM object (no SOPClassUID) although its first bytes looked like one.
    """
    pydicom = _pydicom()
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    dataset = pydicom.dcmread(path, force=True, **kwargs)
    if "SOPClassUID" not in dataset and "MediaStorageSOPClassUID" not in getattr(dataset, "file_meta", {}):
        raise InputError(f"{path}: not a DICOM file (no SOPClassUID)")
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" not in meta:
        implicit, little = dataset.original_encoding
        explicit = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else explicit
    return dataset


def _number(value: object) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def find_series(root: str | os.PathLike, report: Callable[[str], None]) -> list[DicomSeries]:
    """Every DICOM series under ``root`` (searched recursively), from the files' headers only.

    Files with the DICOM preamble and files that start like a DICOM data set without it (as some
    PACS exports store them) are read. What is not used is named through ``report`` with the
    reason: files that are not regular (FIFOs, sockets: never opened), unreadable files, non-image
    objects (SEG, structured reports, DICOMDIR), multi-frame images, and files of an image series
    that are not slices of it (no ImageOrientationPatient: a screenshot or secondary capture).

    Raises:
        InputError: pydicom is not installed.
    """
    _pydicom()
    files: dict[str, list[tuple[Path, object]]] = {}
    for folder, subfolders, names in sorted(os.walk(root)):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if name.startswith("."):
                continue
            if not is_regular_file(path):
                if os.path.lexists(path) and os.path.exists(path):
                    report(f"skipped {path}: not a regular file (a FIFO, socket or device): not read")
                continue
            if not is_dicom_file(path):
                continue
            try:
                header = _dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
            except InputError as err:
                report(f"skipped {err}")
                continue
            except Exception as err:  # pydicom raises many types for damaged files
                report(f"skipped {path}: unreadable DICOM file ({type(err).__name__}: {err})")
                continue
            uid = str(header.get("SeriesInstanceUID", ""))
            if not uid:
                report(f"skipped {path}: no SeriesInstanceUID (a DICOMDIR or another non-image object)")
                continue
            files.setdefault(uid, []).append((path, header))
    found = []
    for uid, members in files.items():
        slices = [(path, h) for path, h in members
                  if str(h.get("Modality", "")) not in NOT_IMAGES and "ImageOrientationPatient" in h]
        slice_paths = {path for path, _ in slices}
        first = (slices or members)[0][1]
        paths = tuple(path for path, _ in slices or members)
        modality, frames = str(first.get("Modality", "")), _number(first.get("NumberOfFrames")) or 1
        series = DicomSeries(
            uid=uid, study_uid=str(first.get("StudyInstanceUID", "")), folder=Path(
                os.path.commonpath([p.parent for p in paths])
            ),
            files=paths, number=_number(first.get("SeriesNumber")), description=str(first.get("SeriesDescription", "")),
            distinct_positions=len(slices) == len({
                tuple(np.round(np.asarray(h.get("ImagePositionPatient", [np.nan] * 3), float), 3)) for _, h in slices}),
        )
        if not slices:
            report(
                f"skipped {series.folder}: {series.summary()} is not an image series (Modality {modality or 'unknown'})"
            )
            continue
        for path, header in members:
            if path not in slice_paths:
                report(f"skipped {path}: not a slice of {series.summary()} "
                       f"(Modality {header.get('Modality', 'unknown')}, "
                       "no ImageOrientationPatient: a screenshot, secondary capture or report filed in the series)")
        if frames > 1:
            report(f"skipped {series.folder}: {series.summary()} is a multi-frame (enhanced) object, not supported: "
                   "convert it to NIfTI (e.g. dcm2niix) or export it as single-frame images")
        else:
            found.append(series)
    return found


def choose_series(
    found: Sequence[DicomSeries], uids: Sequence[str] | None, report: Callable[[str], None]
) -> list[DicomSeries]:
    """The series to predict: those named by ``uids``, or one per study (the rule of the module docstring).

    Raises:
        InputError: a UID in ``uids`` that is not among ``found``.
    """
    if uids:
        by_uid = {series.uid: series for series in found}
        missing = [uid for uid in uids if uid not in by_uid]
        if missing:
            listed = "; ".join(series.summary() for series in found[:10]) or "none"
            raise InputError(f"--series {missing[0]}: no image series with this UID in the input (found: {listed})")
        return [by_uid[uid] for uid in dict.fromkeys(uids)]
    studies: dict[str, list[DicomSeries]] = {}
    for series in found:
        studies.setdefault(series.study_uid, []).append(series)
    chosen = []
    for members in studies.values():
        best = max(members, key=lambda s: (s.distinct_positions, len(s.files), s.number or 0))
        chosen.append(best)
        for other in members:
            if other is not best:
                report(f"skipped {other.folder}: {other.summary()}: its study's {best.summary()} is predicted "
                       "(one series per study: the volume with the most slices); pick others with --series UID")
    return chosen


def series_uid(path: str | os.PathLike) -> str:
    """The SeriesInstanceUID of a DICOM file.

    Raises:
        InputError: unreadable, or without one.
    """
    try:
        header = _dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SeriesInstanceUID"])
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{path}: not a readable DICOM file ({type(err).__name__}: {err})") from err
    uid = header.get("SeriesInstanceUID")
    if header.file_meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
        raise InputError(f"{path}: a DICOMDIR (the index of a CD or DVD), not an image; give the folder that holds it")
    if not uid:
        raise InputError(f"{path}: a DICOM file without SeriesInstanceUID (not an image)")
    return str(uid)


def is_segmentation(path: str | os.PathLike) -> bool:
    """Whether a file is a readable DICOM Segmentation object (for ``--resume``)."""
    _pydicom()
    try:
        return is_regular_file(path) and str(_dcmread(path, stop_before_pixels=True).get("Modality")) == "SEG"
    except Exception:
        return False


def series_sha256(files: Sequence[str | os.PathLike]) -> str:
    """SHA-256 over the files' own SHA-256 digests, in sorted path order: a series' identity for ``--resume``."""
    digest = hashlib.sha256()
    for path in sorted(str(p) for p in files):
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _vector(dataset, keyword: str, name: str, length: int) -> np.ndarray:
    value = dataset.get(keyword)
    array = np.asarray(value if value is not None else [], dtype=float)
    if array.shape != (length,) or not np.isfinite(array).all():
        raise InputError(f"{name}: slice {dataset.filename} has no usable {keyword} ({value!r})")
    return array


def _unit_cosines(orientation: np.ndarray, dataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The row and column direction cosines of ImageOrientationPatient, normalised to length 1.

    Raises:
        InputError: parallel (collinear) directions, lengths off 1 or directions off perpendicular by
            more than :data:`COSINE_TOLERANCE` (a broken header: scaling the voxel size by such cosines
            would change every volume).
    """
    row, column = orientation[:3], orientation[3:]
    lengths = np.linalg.norm(row), np.linalg.norm(column)
    where = f"{name}: ImageOrientationPatient of {dataset.filename} ({', '.join(f'{v:g}' for v in orientation)})"
    if min(lengths) < 1e-6 or np.linalg.norm(np.cross(row, column)) < 1e-6 * lengths[0] * lengths[1]:
        raise InputError(f"{where}: its row and column directions are parallel (or zero), so the slices have "
                         "no normal; a broken header: re-export the series")
    if max(abs(length - 1) for length in lengths) > COSINE_TOLERANCE:
        raise InputError(f"{where}: direction cosines of length {lengths[0]:.4g} and {lengths[1]:.4g}, not 1; "
                         "a broken header (the voxel size would be wrong): re-export the series")
    row, column = row / lengths[0], column / lengths[1]
    if abs(float(row @ column)) > COSINE_TOLERANCE:
        raise InputError(f"{where}: row and column directions are not perpendicular "
                         f"(cosine {float(row @ column):.3g}); "
                         "a broken header: re-export the series")
    return row, column


def _slice_geometry(datasets: Sequence, name: str) -> tuple[list, np.ndarray]:
    """Datasets sorted along the slice normal and the 4x4 LPS affine of the (column, row, slice) grid.

    Direction cosines within :data:`COSINE_TOLERANCE` of unit length and of perpendicular are
    normalised (:func:`_unit_cosines`); the voxel size is PixelSpacing and the slice step alone.

    Raises:
        InputError: slices of other sizes, spacings or orientations; a broken orientation; fewer than
            two slices; slices not evenly spaced on one line (a duplicated or missing slice is named as such).
    """
    first = datasets[0]
    orientation = _vector(first, "ImageOrientationPatient", name, 6)
    spacing = _vector(first, "PixelSpacing", name, 2)
    for dataset in datasets:
        same = (
            (dataset.get("Rows"), dataset.get("Columns")) == (first.get("Rows"), first.get("Columns"))
            and np.allclose(_vector(dataset, "ImageOrientationPatient", name, 6), orientation, atol=1e-4)
            and np.allclose(_vector(dataset, "PixelSpacing", name, 2), spacing, atol=1e-4)
        )
        if not same:
            raise InputError(
                f"{name}: slice {dataset.filename} differs from {first.filename} in size, pixel spacing or orientation"
            )
        if int(dataset.get("SamplesPerPixel", 1)) != 1:
            raise InputError(
                f"{name}: slice {dataset.filename} has {dataset.SamplesPerPixel} "
                "samples per pixel; expected one intensity"
            )
    if not (spacing > 0).all():
        raise InputError(f"{name}: PixelSpacing of {first.filename} is {spacing[0]:g} x {spacing[1]:g} mm; a "
                         "broken header: re-export the series")
    row_cosine, column_cosine = _unit_cosines(orientation, first, name)
    if len(datasets) < 2:
        raise InputError(f"{name}: one slice, not a 3D volume")
    normal = np.cross(row_cosine, column_cosine)
    ordered = sorted(datasets, key=lambda d: float(_vector(d, "ImagePositionPatient", name, 3) @ normal))
    positions = np.array([_vector(d, "ImagePositionPatient", name, 3) for d in ordered])
    gaps = np.diff(positions @ normal)
    typical = float(np.median(gaps))
    for k, gap in enumerate(gaps):
        files = f"{Path(ordered[k].filename).name} and {Path(ordered[k + 1].filename).name}"
        if gap < POSITION_TOLERANCE_MM:
            raise InputError(
                f"{name}: two slices at the same position ({files}): a "
                "duplicated slice, or several phases or series in one"
            )
        if gap > 1.5 * typical:
            raise InputError(
                f"{name}: {gap / typical - 1:.0f} slice(s) missing between "
                f"{files} ({gap:.3g} mm apart, the others {typical:.3g} mm)"
            )
    step = (positions[-1] - positions[0]) / (len(ordered) - 1)
    off_line = np.linalg.norm(positions - (positions[0] + np.arange(len(ordered))[:, None] * step), axis=1)
    if off_line.max() > POSITION_TOLERANCE_MM:
        worst = Path(ordered[int(off_line.argmax())].filename).name
        raise InputError(
            f"{name}: slices are not evenly spaced on one line ({worst} lies {off_line.max():.3g} mm off it)"
        )
    affine = np.eye(4)
    affine[:3, 0] = row_cosine * spacing[1]  # X: along a row, one column apart
    affine[:3, 1] = column_cosine * spacing[0]  # Y: along a column, one row apart
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return ordered, affine


_ONE_ACQUISITION = {
    "PatientID": "patients", "StudyInstanceUID": "studies", "FrameOfReferenceUID": "frames of reference",
}


def _check_one_acquisition(datasets: Sequence, name: str) -> None:
    """Refuse a series whose slices name several patients, studies or frames of reference (a mixed-up export).

    Raises:
        InputError: naming the attribute, two of its values and a file holding each.
    """
    for keyword, what in _ONE_ACQUISITION.items():
        first_of: dict[str, str] = {}
        for dataset in datasets:
            first_of.setdefault(str(dataset.get(keyword, "")), dataset.filename)
        if len(first_of) > 1:
            (a, file_a), (b, file_b) = list(first_of.items())[:2]
            raise InputError(f"{name}: its slices belong to {len(first_of)} {what} ({keyword} {a!r} in "
                             f"{Path(file_a).name}, {b!r} in "
                             f"{Path(file_b).name}): a mixed-up export; re-export the series, or separate the files")


def read_series(series: DicomSeries) -> tuple[nib.Nifti1Image, list]:
    """Read and check a series: the volume with the checks of :mod:`cascade.io`, and its datasets.

    Returns:
        ``(image, datasets)``: a float32 (X, Y, Z) volume on its RAS affine (qform and sform code
        1, scanner) with the modality rescale applied, and the datasets in slice order.

    Raises:
        InputError: naming the series: unreadable files or pixel data, inconsistent slices (see
            :func:`_slice_geometry`) and every check of :func:`cascade.io.check_geometry` and
            :func:`cascade.io.check_intensities`; slices of several patients, studies or frames of reference.
    """
    _pydicom()
    from pydicom.pixels import apply_rescale

    datasets = []
    for path in series.files:
        try:
            datasets.append(_dcmread(path))
        except PermissionError as err:
            raise InputError(f"{path}: permission denied") from err
        except Exception as err:
            raise InputError(
                f"{series.name}: {path} is not a readable DICOM file ({type(err).__name__}: {err})"
            ) from err
    _check_one_acquisition(datasets, series.name)
    ordered, affine = _slice_geometry(datasets, series.name)
    slices = []
    for dataset in ordered:
        try:
            pixels = dataset.pixel_array
        except Exception as err:  # missing decoders, truncated pixel data
            raise InputError(
                f"{series.name}: pixel data of {dataset.filename} cannot be decoded ({type(err).__name__}: {err})"
            ) from err
        slices.append(np.asarray(apply_rescale(pixels, dataset), dtype=np.float32).T)
    data = np.stack(slices, axis=-1)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # DICOM's patient axes are LPS
    image = nib.Nifti1Image(data, ras)
    image.set_qform(ras, code=1)
    image.set_sform(ras, code=1)
    check_geometry(image, series.name)
    check_intensities(series.name, data)
    return image, ordered


def _segment_descriptions(classes: Sequence[int]) -> list:
    import highdicom as hd
    from pydicom.sr.coding import Code

    algorithm = hd.AlgorithmIdentificationSequence(
        name="atria-cascade", version=__version__, family=Code("123109", "DCM", "Artificial Intelligence")
    )
    descriptions = []
    for number, value in enumerate(classes, 1):
        codes = SEGMENT_CODES[value]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=SEGMENT_LABELS[value],
            segmented_property_category=Code(CATEGORY_CODE[0], "SCT", CATEGORY_CODE[1]),
            segmented_property_type=Code(codes["type"][0], "SCT", codes["type"][1]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[Code(codes["region"][0], "SCT", codes["region"][1])] if codes["region"] else None,
        ))
    return descriptions


def write_segmentation(labels: np.ndarray, datasets: Sequence, path: str | os.PathLike, classes: Sequence[int]) -> Path:
    """Write a label map as a binary DICOM Segmentation of its source series (atomically).

    Args:
        labels: uint8 (X, Y, Z) label map on the series grid of :func:`read_series`.
        datasets: the series' datasets in slice order (as :func:`read_series` returns them).
        path: destination ``.dcm`` file.
        classes: label values to encode, one segment each, numbered 1, 2, ... in this order
            (segment labels and codes: :data:`SEGMENT_LABELS`, :data:`SEGMENT_CODES`).

    Patient and study attributes an anonymised series lacks (:data:`_TYPE_2_COPIED`) are written empty,
    as the standard allows for type 2 attributes.

    Returns:
        The destination path.

    Raises:
        ImportError: highdicom is not installed.
    """
    import highdicom as hd

    for dataset in datasets:  # in memory only: the files are not touched
        for keyword in _TYPE_2_COPIED:
            if keyword not in dataset:
                setattr(dataset, keyword, "")
    frames = np.zeros(labels.shape[::-1], np.uint8)  # (slices, rows, columns)
    for number, value in enumerate(classes, 1):
        frames[labels.transpose(2, 1, 0) == value] = number
    source = datasets[0]
    number = _number(source.get("SeriesNumber"))
    segmentation = hd.seg.Segmentation(
        source_images=list(datasets),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(classes),
        series_instance_uid=hd.UID(),
        series_number=1000 + (number or 0),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="atria-cascade",
        manufacturer_model_name="atria-cascade",
        software_versions=__version__,
        device_serial_number="none",
        content_label="ATRIA",
        content_description=", ".join(CLASS_NAMES[value] for value in classes)[:64],
        omit_empty_frames=bool(frames.any()),
    )
    return write_atomic(path, lambda tmp: segmentation.save_as(tmp))
