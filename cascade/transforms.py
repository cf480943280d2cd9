"""Transforms MONAI lacks, for gating stage 2 by the stage-1 mask.

- Binary dilation with a spherical element. MONAI's ``monai.transforms.utils.dilate`` uses a cube;
  the paper dilates with a ball of radius r voxels (r = 2 in the final model). The radius is in
  voxels on every axis, as the authors' nnU-Net-based code does, so on the anisotropic MBAS grid
  (0.625 x 0.625 x 2.5 mm) radius 2 adds 1.25 mm in-plane and 5 mm through-plane.
- A foreground crop of at least a given size. MONAI's ``CropForegroundd`` can only round its box up
  to a multiple of ``k_divisible``; the mask-region stage 2 needs a box of at least one patch, so
  that the sliding window sees image around a small mask instead of the zero padding the inferer
  adds to inputs smaller than the patch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import CropForeground, CropForegroundd, MapTransform, Transform
from monai.utils import convert_to_dst_type, ensure_tuple_rep

__all__ = ["ball", "dilate_mask", "DilateMask", "DilateMaskd", "CropForegroundMinSize", "CropForegroundMinSized"]


def ball(radius: int) -> np.ndarray:
    """Spherical structuring element: voxels whose offset (i, j, k) has i² + j² + k² <= radius².

    Returns:
        bool array of shape (2r+1, 2r+1, 2r+1); radius 0 is the single voxel.
    """
    if radius < 0:
        raise ValueError(f"dilation radius must be >= 0 voxels, got {radius}")
    offsets = np.arange(-radius, radius + 1)
    i, j, k = np.meshgrid(offsets, offsets, offsets, indexing="ij")
    return i**2 + j**2 + k**2 <= radius**2


def dilate_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a mask with :func:`ball` of ``radius`` voxels (outside the volume is empty).

    Computed as a convolution with the ball, so it runs on the mask's device (CPU or GPU).

    Args:
        mask: (C, X, Y, Z) or (B, C, X, Y, Z); nonzero voxels are foreground.
        radius: ball radius in voxels.

    Returns:
        Float tensor of the same shape with values 0 and 1.
    """
    foreground = (mask != 0).float()
    if radius == 0:
        return foreground
    batched = foreground if foreground.ndim == 5 else foreground[None]
    b, c = batched.shape[:2]
    kernel = torch.as_tensor(ball(radius), dtype=torch.float32, device=mask.device)[None, None]
    hits = F.conv3d(batched.reshape(b * c, 1, *batched.shape[2:]), kernel, padding=radius)
    dilated = (hits > 0.5).float().reshape(batched.shape)
    return dilated if foreground.ndim == 5 else dilated[0]


class DilateMask(Transform):
    """Dilate a channel-first binary mask with a ball of ``radius`` voxels; see :func:`dilate_mask`."""

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, radius: int = 2) -> None:
        ball(radius)  # validates the radius early
        self.radius = radius

    def __call__(self, mask: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: mask of shape (C, X, Y, Z). Returns: the dilated mask, same type, shape and meta."""
        dilated = dilate_mask(torch.as_tensor(mask), self.radius)
        return convert_to_dst_type(dilated, mask, dtype=getattr(mask, "dtype", None))[0]


class DilateMaskd(MapTransform):
    """Dictionary version of :class:`DilateMask`."""

    backend = DilateMask.backend

    def __init__(self, keys: KeysCollection, radius: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.dilate = DilateMask(radius)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.dilate(d[key])
        return d


class CropForegroundMinSize(CropForeground):
    """MONAI's ``CropForeground`` whose box is then grown to at least ``min_size`` voxels per axis.

    A box axis shorter than ``min_size`` (or than the image, if that is smaller) grows about its
    centre and is shifted back inside the image where it would cross a border, so the crop holds
    only image voxels. Cropping, padding and their inversion are ``CropForeground``'s.

    Args:
        min_size: smallest box size per spatial axis, in voxels (e.g. the sliding-window patch).
        **kwargs: ``CropForeground`` arguments (``select_fn``, ``margin``, ``allow_smaller``, ...).
    """

    def __init__(self, min_size: Sequence[int] | int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_size = min_size

    def compute_bounding_box(self, img: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Start and end (exclusive) of the box per spatial axis of a (C, X, Y, Z) image."""
        start, end = super().compute_bounding_box(img)
        shape = np.asarray(img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:])
        size = end - start
        wanted = np.minimum(np.asarray(ensure_tuple_rep(self.min_size, len(shape))), shape)
        grown = wanted > size
        start = np.where(grown, np.clip(start - (wanted - size) // 2, 0, shape - wanted), start)
        return start, np.where(grown, start + wanted, end)


class CropForegroundMinSized(CropForegroundd):
    """Dictionary version of :class:`CropForegroundMinSize` (the box comes from ``source_key``).

    Args:
        keys: keys to crop.
        source_key: key of the image whose foreground sets the box (e.g. the dilated mask).
        min_size: smallest box size per spatial axis, in voxels.
        **kwargs: ``CropForegroundd`` arguments (``margin``, ``allow_smaller``, ...).
    """

    def __init__(self, keys: KeysCollection, source_key: str, min_size: Sequence[int] | int, **kwargs) -> None:
        super().__init__(keys, source_key, **kwargs)
        built = self.cropper
        self.cropper = CropForegroundMinSize(
            min_size,
            select_fn=built.select_fn,
            channel_indices=built.channel_indices,
            margin=built.margin,
            allow_smaller=built.allow_smaller,
            k_divisible=built.k_divisible,
            lazy=built.lazy,
        )
        self.cropper.padder = built.padder  # carries the padding mode and arguments
