"""Synthetic DICOM series for the tests: a NIfTI volume written as single-frame MR images with pydicom."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

# a DICOM file with preamble and file meta: pydicom 3's argument, or pydicom 2's (MONAI Label 0.8.5's
# environment, where the live DICOMweb test writes its series, pins pydicom 2)
PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3
SAVE_AS_FILE = {"enforce_file_format": True} if PYDICOM_3 else {"write_like_original": False}


def write_series(
    image: nib.Nifti1Image,
    folder: Path,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 5,
    description: str = "LGE 3D",
    drop: Sequence[int] = (),
    duplicate: Sequence[int] = (),
    reverse_instance_numbers: bool = False,
) -> list[Path]:
    """Write ``image`` (an (X, Y, Z) volume, slices along Z, at most 101) as one file per slice
    (slice ``k`` has InstanceNumber ``k + 1``); the files' names do not follow the slice order.

    Intensities are stored as uint16 with a rescale slope, so ``read_series`` must apply it.
    ``drop`` leaves slices out, ``duplicate`` writes slices twice (broken series).

    Returns:
        The files written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = np.asarray(image.dataobj, dtype=np.float64)
    low, high = float(data.min()), float(data.max())
    slope = (high - low) / 4000 if high > low else 1.0
    stored = np.round((data - low) / slope).astype(np.uint16)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
    column_step, row_step = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    orientation = [*(lps[:3, 0] / column_step), *(lps[:3, 1] / row_step)]
    study_uid, series_uid, frame_uid = study_uid or generate_uid(), series_uid or generate_uid(), generate_uid()
    count = data.shape[2]
    written = []
    for k in [k for k in range(count) if k not in drop] + list(duplicate):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = MRImageStorage, ExplicitVRLittleEndian
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Atria", "PHANTOM", "19700101", "O"
        ds.StudyInstanceUID, ds.StudyID, ds.StudyDate, ds.StudyTime = study_uid, "1", "20261206", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, series_number
        ds.SeriesDescription, ds.Modality = description, "MR"
        ds.FrameOfReferenceUID, ds.Manufacturer = frame_uid, "atria-cascade tests"
        ds.InstanceNumber = count - k if reverse_instance_numbers else k + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (lps @ [0, 0, k, 1])[:3]]
        ds.PixelSpacing = [f"{row_step:.6f}", f"{column_step:.6f}"]
        ds.SliceThickness = f"{np.linalg.norm(lps[:3, 2]):.6f}"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.8g}", f"{low:.8g}"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        copy = "d" if len(written) >= count - len(drop) else ""  # the second file of a duplicated slice
        path = folder / f"IM{(k * 37) % 101:03d}{copy}.dcm"
        ds.save_as(path, **SAVE_AS_FILE)
        written.append(path)
    return written
