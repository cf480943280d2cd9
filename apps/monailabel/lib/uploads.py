"""What the app's datastore accepts: NIfTI images the cascade can read (checked before they are stored)."""

from __future__ import annotations

from cascade.errors import InputError
from cascade.io import load_nifti

__all__ = ["NIFTI_SUFFIXES", "check_image_upload"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def check_image_upload(path: str, name: str) -> None:
    """Refuse an upload that is not a usable NIfTI image, before MONAI Label stores it.

    Args:
        path: the uploaded file (a temporary file with the client's file name suffixes).
        name: how the message names it (the image id or the client's file name).

    Raises:
        InputError: not ``.nii``/``.nii.gz``, or any check of :func:`cascade.io.load_nifti`; one line
            naming ``name``.
    """
    if not path.lower().endswith(NIFTI_SUFFIXES):
        raise InputError(f"{name}: only NIfTI images (.nii, .nii.gz) can be stored here; convert DICOM series with "
                         "dcm2niix or predict them with `cascade predict` (DICOM in, DICOM SEG out)")
    try:
        load_nifti(path)
    except InputError as err:
        raise InputError(str(err).replace(path, name)) from None
