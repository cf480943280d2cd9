"""Reading and writing NIfTI volumes with the checks every entry point shares.

Arrays stay in nibabel's storage order, (X, Y, Z), which is also the order MONAI's ``LoadImage``
returns; spacing is given in that order, in mm.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["InputError", "load_nifti", "save_nifti_atomic", "same_geometry", "voxel_spacing"]

AFFINE_TOLERANCE = 1e-3  # mm; MBAS headers round-trip through float32


class InputError(ValueError):
    """A file that cannot be used as given; the message names the file and the problem."""


def load_nifti(path: str | os.PathLike, *, label: bool = False) -> nib.Nifti1Image:
    """Read a NIfTI volume and check that it can be used.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        label: check label-map rules (integer values in {0, 1, 2, 3}) instead of image rules
            (finite intensities).

    Returns:
        The image with its data loaded (``get_fdata`` cached).

    Raises:
        InputError: unreadable or corrupt file, not 3D (a trailing singleton 4th axis is accepted),
            non-finite intensities, or label values outside {0, 1, 2, 3}.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for truncated or foreign files
        raise InputError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
        img = nib.Nifti1Image(data, img.affine, img.header)
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3D volume, got shape {tuple(data.shape)}")
    if label:
        values = np.unique(data)
        unexpected = [v for v in values.tolist() if v not in (0, 1, 2, 3)]
        if unexpected:
            raise InputError(f"{path}: label values must be in {{0, 1, 2, 3}}, found {unexpected[:5]}")
    elif not np.isfinite(data).all():
        raise InputError(f"{path}: image contains NaN or infinite intensities")
    return img


def voxel_spacing(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel size in mm, in array axis order (X, Y, Z) for nibabel arrays."""
    return tuple(float(z) for z in img.header.get_zooms()[:3])


def same_geometry(a: nib.Nifti1Image, b: nib.Nifti1Image, tol: float = AFFINE_TOLERANCE) -> bool:
    """Whether two volumes share shape and affine (within ``tol`` mm)."""
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=tol)


def save_nifti_atomic(
    array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, header: nib.Nifti1Header | None = None
) -> Path:
    """Write a NIfTI file so that ``path`` either holds the complete file or does not exist.

    The data goes to a temporary file in the same folder first and is then renamed over ``path``.

    Args:
        array: volume in (X, Y, Z) order; its dtype is kept.
        affine: 4x4 voxel-to-world matrix (mm).
        path: destination ``.nii.gz`` path; its folder is created.
        header: optional header to copy geometry codes from (qform/sform codes, units).

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, affine, header=header)
    img.set_data_dtype(array.dtype)
    img.header.set_slope_inter(1.0, 0.0)  # never inherit an input's intensity scaling
    qform_code = int(header["qform_code"]) if header is not None else 0
    sform_code = int(header["sform_code"]) if header is not None else 0
    img.set_qform(affine, code=qform_code or 1)
    img.set_sform(affine, code=sform_code or 1)
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
