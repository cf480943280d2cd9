"""An image reader for MONAI's ``LoadImage(d)`` that hands over a NIfTI image already open.

The cascade opens every input once: a file's header is checked (:func:`cascade.io.read_header`) and a
DICOM series is assembled in memory (:func:`cascade.dicom.read_series`); the bundles' declared
``loading`` transforms (``LoadImaged``) then read the voxels through :class:`OpenedNiftiReader`
instead of opening the file by its name again or writing the series to a temporary file. MONAI's
readers take file names only, hence this small subclass.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import nibabel as nib
from monai.data import NibabelReader
from monai.data.utils import correct_nifti_header_if_necessary
from monai.utils import ensure_tuple

__all__ = ["OpenedNiftiReader"]


class OpenedNiftiReader(NibabelReader):
    """MONAI's :class:`~monai.data.NibabelReader` whose ``read`` returns a given, open NIfTI image.

    ``get_data`` is NibabelReader's, so the array and metadata equal what ``LoadImage`` makes of the
    file. As NibabelReader does, an image whose header voxel sizes disagree with its affine gets its
    header corrected, here on a copy: the caller's image (whose header the outputs reuse) stays as it is.

    Args:
        image: a NIfTI image: a file's proxy (voxels not yet read) or an in-memory volume.
        kwargs: NibabelReader's options.
    """

    def __init__(self, image: nib.Nifti1Image, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image = image

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        return True

    def read(self, data: Sequence[str] | str, **kwargs) -> nib.Nifti1Image:
        """The given image (``data``, the name ``LoadImage`` records as ``filename_or_obj``, is not opened)."""
        self.filenames = ensure_tuple(data)
        return correct_nifti_header_if_necessary(copy.deepcopy(self.image))
