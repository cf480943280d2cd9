"""Reading and writing NIfTI volumes with the checks every entry point shares.

Arrays stay in nibabel's storage order, (X, Y, Z), which is also the order MONAI's ``LoadImage``
returns; spacing is given in that order, in mm.

An image is usable when its header describes one single-component 3D volume of at least two
voxels along each axis (a trailing singleton 4th axis is accepted) on a finite, invertible affine
whose voxel sizes lie in :data:`PLAUSIBLE_SPACING_MM`, and its intensities are finite and within
:data:`MAX_INTENSITY`. The spacing range excludes headers written in metres or micrometres
(0.000625 or 625 for a 0.625 mm voxel), which would otherwise be resampled to a grid a thousand
times too coarse or too fine and segmented without a word.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from cascade.errors import InputError
from cascade.labels import LABEL_VALUES

__all__ = [
    "MAX_INTENSITY",
    "check_intensities",
    "check_geometry",
    "AFFINE_TOLERANCE",
    "PLAUSIBLE_SPACING_MM",
    "read_header",
    "check_writable_folder",
    "load_nifti",
    "write_atomic",
    "remove_stale_temporaries",
    "file_sha256",
    "write_text_atomic",
    "save_nifti_atomic",
    "same_geometry",
    "voxel_spacing",
]

AFFINE_TOLERANCE = 1e-3  # mm; MBAS headers round-trip through float32
PLAUSIBLE_SPACING_MM = (0.1, 20.0)  # smallest and largest voxel edge of a human cardiac MRI
MAX_INTENSITY = 1e15  # |x| above this squares past float32's range (3.4e38) in the variance of z-scoring


def _format_zooms(zooms: tuple[float, ...]) -> str:
    return " x ".join(f"{z:.6g}" for z in zooms)


def read_header(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI file and check its header (no voxel data is read).

    Args:
        path: ``.nii`` or ``.nii.gz`` file.

    Returns:
        The image proxy (data not loaded).

    Raises:
        InputError: missing or unreadable file; not one 3D volume (multi-component such as RGB,
            vector-valued, or several volumes); a non-finite or singular affine; voxel sizes
            outside :data:`PLAUSIBLE_SPACING_MM`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
    except PermissionError as err:
        raise InputError(f"{path}: permission denied") from err
    except Exception as err:  # nibabel raises many types for truncated or foreign files
        with open(path, "rb") as stream:
            archive = stream.read(4) == b"PK\x03\x04"
        if archive:
            raise InputError(f"{path}: a zip archive, not a NIfTI file; unpack it and give the folder") from err
        raise InputError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI image ({type(img).__name__})")
    check_geometry(img, path)
    return img


def check_geometry(img: nib.Nifti1Image, path: str | os.PathLike) -> None:
    """Refuse a volume that is not one single-component 3D volume on a usable grid.

    Args:
        img: the volume (its header only is read).
        path: the name its messages give (a file, or a DICOM series).

    Raises:
        InputError: multi-component voxels, not 3D, empty, a single slice, a non-finite or singular
            affine, voxel sizes outside :data:`PLAUSIBLE_SPACING_MM`.
    """
    dtype = img.get_data_dtype()
    if dtype.fields is not None or dtype.kind == "c":
        raise InputError(f"{path}: multi-component voxels ({dtype}); expected one intensity per voxel")
    shape = img.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise InputError(f"{path}: expected a 3D volume, got shape {tuple(shape)}")
    if min(shape[:3]) < 1:
        raise InputError(f"{path}: empty volume of shape {tuple(shape)}")
    if min(shape[:3]) == 1:  # as a DICOM series of one image is refused: no 3D context, yet every class could be drawn
        raise InputError(f"{path}: one slice (shape {tuple(shape)}), not a 3D volume; give the 3D scan")
    affine = img.affine
    if not np.isfinite(affine).all():
        raise InputError(f"{path}: the affine holds non-finite values")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: the affine is singular (voxel axes are not independent)")
    zooms = tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0))
    low, high = PLAUSIBLE_SPACING_MM
    if not all(low <= z <= high for z in zooms):
        hint = " (metres instead of millimetres?)" if max(zooms) < low else ""
        raise InputError(
            f"{path}: voxel size {_format_zooms(zooms)} mm is outside the plausible {low:g}-{high:g} mm{hint}"
        )


def load_nifti(path: str | os.PathLike, *, label: bool = False) -> nib.Nifti1Image:
    """Read a NIfTI volume and check that it can be used.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        label: check label-map rules (values in :data:`cascade.labels.LABEL_VALUES`) instead of
            image rules (finite intensities).

    Returns:
        The image with its data loaded, squeezed to 3D.

    Raises:
        InputError: any header problem of :func:`read_header`, a corrupt data block, non-finite
            intensities, or label values outside the label set.
    """
    img = read_header(path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:
        raise InputError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from err
    if data.ndim == 4:
        data = data[..., 0]
    img = nib.Nifti1Image(data, img.affine, img.header)  # in memory: later reads of dataobj are free
    if label:
        values = np.unique(data)
        unexpected = [v for v in values.tolist() if v not in LABEL_VALUES]
        if unexpected:
            raise InputError(f"{path}: label values must be in {set(LABEL_VALUES)}, found {unexpected[:5]}")
    else:
        check_intensities(path, data)
    return img


def check_intensities(path: str | os.PathLike, data: np.ndarray) -> None:
    """Refuse intensities the normalisation cannot handle: NaN, infinities, or beyond :data:`MAX_INTENSITY`.

    Raises:
        InputError: naming ``path`` and the problem.
    """
    if not np.isfinite(data).all():
        raise InputError(f"{path}: image contains NaN or infinite intensities")
    largest = float(np.abs(data).max()) if data.size else 0.0
    if largest > MAX_INTENSITY:
        raise InputError(
            f"{path}: intensities up to {largest:.3g} overflow float32 statistics (z-scoring squares them); "
            f"rescale the image below {MAX_INTENSITY:.0e}"
        )


def voxel_spacing(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel size in mm, in array axis order (X, Y, Z) for nibabel arrays, from the affine.

    The affine (the sform or qform nibabel chooses) places every voxel; ``pixdim`` may disagree
    with it in a badly written header, and distances must follow the geometry the rest of the
    pipeline uses.
    """
    return tuple(float(z) for z in np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0))


def same_geometry(a: nib.Nifti1Image, b: nib.Nifti1Image, tol: float = AFFINE_TOLERANCE) -> bool:
    """Whether two volumes share shape and affine (within ``tol`` mm)."""
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=tol)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Create ``path`` so that it either holds the complete file or does not exist.

    ``write`` fills a temporary file in the same folder (keeping ``path``'s suffixes, so writers
    that choose a format by suffix choose the same one), which is then renamed over ``path``; on
    any error or interruption the temporary file is removed.

    Args:
        path: destination; its folder is created.
        write: called with the temporary file's path.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, 64 hex digits (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files :func:`write_atomic` left for ``path`` when a process was killed
    (``kill -9``, power loss) between creating and renaming them.

    Only hidden files named after ``path`` (``.<name>.<random><suffix>``) are touched; call it
    when no other process writes ``path``.

    Returns:
        The files removed.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    stale = [p for p in path.parent.glob(f".{glob.escape(path.name)}.*{suffix}") if p.is_file()]
    for temporary in stale:
        temporary.unlink(missing_ok=True)
    return stale


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Refuse, before any work, a folder that cannot take a file.

    The folder (or, while it does not exist, the nearest existing folder above it) must be a
    folder where a file can be created: a probe file is made there and removed at once.

    Args:
        folder: the folder a run will write to.
        what: its role, for the message (e.g. ``"the output folder"``).

    Raises:
        InputError: it is, or lies under, an existing file or a symbolic link to nothing, or it cannot
            be written (the reason, e.g. permission denied or a read-only file system, is named).
    """
    folder = Path(folder)
    dangling = next((p for p in (folder, *folder.absolute().parents) if p.is_symlink() and not p.exists()), None)
    if dangling is not None:
        raise InputError(f"{dangling}: {what} {'is' if dangling == folder else 'lies under'} a symbolic link to "
                         f"{os.readlink(dangling)}, which does not exist; create that folder or choose another one")
    existing = next(parent for parent in (folder, *folder.absolute().parents) if parent.exists())
    if not existing.is_dir():
        raise InputError(
            f"{existing}: {what} {'is' if existing == folder else 'lies under'} an existing file, not a folder"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        reason = "permission denied" if isinstance(err, PermissionError) else err.strerror or str(err)
        raise InputError(f"{existing}: {what} cannot be written ({reason})") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file (UTF-8, newlines as given) with :func:`write_atomic`.

    File names that the file system encoding could not decode (a non-ASCII path under ``LC_ALL=C``:
    Python holds its bytes as surrogates) are written as their original bytes (``surrogateescape``).
    """
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, "utf-8", "surrogateescape", newline=""))


def save_nifti_atomic(
    array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, header: nib.Nifti1Header | None = None
) -> Path:
    """Write a NIfTI file with :func:`write_atomic`.

    Args:
        array: volume in (X, Y, Z) order; its dtype is kept.
        affine: 4x4 voxel-to-world matrix (mm); with ``header``, it must be that header's best affine.
        path: destination ``.nii.gz`` path; its folder is created.
        header: optional header of the input whose geometry the output keeps exactly: its qform
            (quaternion, offsets, qfac) and sform rows with their codes (0 included), pixdim and
            units are copied as they are, so every reader (nibabel, ITK/SimpleITK, 3D Slicer)
            places input and output alike even where qform and sform disagree. Intensity scaling,
            display range and extensions are not copied.

    Returns:
        The destination path.

    Raises:
        ValueError: ``affine`` is not ``header``'s best affine.
    """
    if header is None:
        img = nib.Nifti1Image(array, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    else:
        header = nib.Nifti1Header.from_header(header)
        if not np.allclose(header.get_best_affine(), affine, atol=AFFINE_TOLERANCE):
            raise ValueError(f"{path}: the affine to write is not the geometry of the header it keeps")
        header.extensions.clear()
        header["cal_min"] = header["cal_max"] = 0
        img = nib.Nifti1Image(array, None, header=header)  # no affine: nibabel keeps the header's qform/sform
    img.set_data_dtype(array.dtype)
    img.header.set_slope_inter(1.0, 0.0)  # never inherit an input's intensity scaling
    return write_atomic(path, lambda tmp: nib.save(img, tmp))
