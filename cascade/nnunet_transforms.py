"""nnU-Net v2's image resampling as an invertible MONAI transform pair (array and dictionary).

The nnU-Net preprocessing overlay (``configs/nnunet_preprocessing.json`` of each bundle) builds
nnU-Net's preprocessing from MONAI transforms where MONAI has them (``CropForegroundd`` with
``x != 0`` for the crop to the non-zero box, ``NormalizeIntensityd`` for the z-score) and from
:class:`NNUNetResampled` for the one step MONAI cannot reproduce: nnU-Net's resampling
(``nnunetv2.preprocessing.resampling.default_resampling.resample_data_or_seg``), which differs from
``Spacingd`` in three ways:

- the output grid: nnU-Net rounds the shape, ``round(old_spacing / new_spacing * old_shape)``, and
  maps the field of view edge to edge (output voxel ``i`` samples input position
  ``(i + 0.5) * old_shape / new_shape - 0.5``), so the output spacing is only close to the target;
  ``Spacingd`` keeps the exact target spacing and the first voxel centre;
- the interpolation: B-splines of order 3 through ``skimage.transform.resize`` (edge padding, no
  anti-aliasing, output clipped to the input's range), where MONAI's torch resamplers are at most
  (tri)linear and its scipy path does not clip;
- anisotropic grids (largest / smallest spacing > 3, in the input or the target): every slice is
  resized in plane with the spline order and the out-of-plane axis separately, with order 0
  (nearest) by default, a per-axis interpolation order that no MONAI resampler has.

The inverse resamples back to the grid before the transform, as nnU-Net's export resamples the
network's output to the cropped input grid: with ``inverse_order`` 1 (linear) in plane and
``inverse_order_z`` 0 along a separate axis by default (nnU-Net's
``resampling_fn_probabilities_kwargs``). ``Invertd(..., nearest_interp=True)`` turns the inverse
into nearest-neighbour resampling (for masks).

Arrays are MONAI's (C, X, Y, Z); nnU-Net's arrays are (C, Z, Y, X) but every rule here is per
axis, so the results are the same up to that transposition.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import convert_to_tensor, ensure_tuple_rep
from skimage.transform import resize

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "nnunet_output_shape",
    "separate_resampling_axis",
    "resample_nnunet",
    "NNUNetResample",
    "NNUNetResampled",
]

ANISOTROPY_THRESHOLD = 3.0  # nnunetv2.configuration.ANISO_THRESHOLD


def nnunet_output_shape(
    shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple[int, ...]:
    """The grid size nnU-Net resamples to: ``round(spacing / new_spacing * shape)`` per axis.

    Args:
        shape: spatial size in voxels.
        spacing: voxel size of ``shape`` in mm, same axis order.
        new_spacing: target voxel size in mm, same axis order.

    Returns:
        The new spatial size (Python's round, as nnU-Net's ``compute_new_shape``).
    """
    return tuple(int(round(old / new * size)) for size, old, new in zip(shape, spacing, new_spacing))


def _lowest_resolution_axes(spacing: Sequence[float]) -> list[int]:
    largest = max(spacing)
    return [axis for axis, s in enumerate(spacing) if largest / s == 1]


def separate_resampling_axis(
    spacing: Sequence[float],
    new_spacing: Sequence[float],
    force_separate: bool | None = None,
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD,
) -> int | None:
    """The axis nnU-Net resamples on its own (``determine_do_sep_z_and_axis``), or None.

    Args:
        spacing: current voxel size in mm.
        new_spacing: target voxel size in mm.
        force_separate: None decides from the spacings: the input's lowest-resolution axis when the
            input is anisotropic (largest / smallest spacing > ``anisotropy_threshold``), else the
            target's when the target is; True always uses the input's; False never separates.
        anisotropy_threshold: the anisotropy ratio above which an axis is separated.

    Returns:
        The axis index, or None when the grid is resampled in 3D at once (also when two or three
        axes share the largest spacing).
    """
    if force_separate is not None:
        axes = _lowest_resolution_axes(spacing) if force_separate else []
    elif max(spacing) / min(spacing) > anisotropy_threshold:
        axes = _lowest_resolution_axes(spacing)
    elif max(new_spacing) / min(new_spacing) > anisotropy_threshold:
        axes = _lowest_resolution_axes(new_spacing)
    else:
        axes = []
    return axes[0] if len(axes) == 1 else None


def _resize(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    return resize(array, tuple(shape), order=order, mode="edge", anti_aliasing=False)


def _resample_axis(volume: np.ndarray, axis: int, size: int, order: int) -> np.ndarray:
    """Resample one axis of a 3D volume with nnU-Net's edge-to-edge mapping (orders 0 and 1)."""
    old = volume.shape[axis]
    positions = old / size * (np.arange(size) + 0.5) - 0.5
    if order == 0:
        # scipy's map_coordinates (nnU-Net's tool here) rounds half up at order 0
        return np.take(volume, np.clip(np.floor(positions + 0.5), 0, old - 1).astype(int), axis=axis)
    if order != 1:
        raise ValueError(f"order along the separate axis must be 0 or 1, got {order}")
    clipped = np.clip(positions, 0, old - 1)
    below = np.floor(clipped).astype(int)
    above = np.minimum(below + 1, old - 1)
    weight_shape = [1, 1, 1]
    weight_shape[axis] = size
    weight = (clipped - below).reshape(weight_shape)
    return np.take(volume, below, axis=axis) * (1 - weight) + np.take(volume, above, axis=axis) * weight


def resample_nnunet(
    data: np.ndarray, new_shape: Sequence[int], separate_axis: int | None, order: int = 3, order_z: int = 0
) -> np.ndarray:
    """Resample a channel-first 3D array to ``new_shape`` as nnU-Net's ``resample_data_or_seg`` does.

    Args:
        data: (C, X, Y, Z) array (any float or integer type; computed in float64).
        new_shape: spatial output size (X', Y', Z').
        separate_axis: spatial axis (0-2) resampled on its own with ``order_z`` after every slice
            across it was resized with ``order``; None resizes in 3D with ``order``.
        order: spline order of ``skimage.transform.resize`` (0 nearest, 1 linear, 3 cubic).
        order_z: interpolation order along ``separate_axis``, 0 or 1.

    Returns:
        (C, X', Y', Z') array of ``data``'s dtype; ``data`` itself when the shape does not change.
    """
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    channels = []
    for channel in data.astype(np.float64, copy=False):
        if separate_axis is None:
            channels.append(_resize(channel, new_shape, order))
            continue
        slice_shape = [s for axis, s in enumerate(new_shape) if axis != separate_axis]
        slices = [
            _resize(np.take(channel, k, axis=separate_axis), slice_shape, order)
            for k in range(channel.shape[separate_axis])
        ]
        resized = np.stack(slices, axis=separate_axis)
        if resized.shape[separate_axis] != new_shape[separate_axis]:
            resized = _resample_axis(resized, separate_axis, new_shape[separate_axis], order_z)
        channels.append(resized)
    return np.stack(channels).astype(data.dtype, copy=False)


def _edge_to_edge_affine(old_shape: Sequence[int], new_shape: Sequence[int]) -> torch.Tensor:
    """Voxel-space affine from the resampled grid to the input grid (edges of the field of view kept)."""
    scale = np.asarray(old_shape, dtype=np.float64) / np.asarray(new_shape, dtype=np.float64)
    matrix = np.diag([*scale, 1.0])
    matrix[:3, 3] = (scale - 1) / 2
    return torch.as_tensor(matrix, dtype=torch.float64)


class NNUNetResample(InvertibleTransform, Transform):
    """Resample a channel-first image to a target spacing the way nnU-Net v2 does (module docstring).

    The input spacing is read from the image's affine. Meta data (affine, pixdim) follow the new
    grid; the inverse restores the input grid.

    Args:
        pixdim: target voxel size in mm, in the array's axis order (X, Y, Z).
        order: spline order in plane (or in 3D when no axis is separated); 3 for images, 0 for labels.
        order_z: order along the separate axis (0 or 1).
        inverse_order: spline order of the inverse (1: nnU-Net's resampling of probabilities).
        inverse_order_z: order of the inverse along the separate axis.
        force_separate_z: see :func:`separate_resampling_axis` (``force_separate``).

    Raises:
        ValueError: for an input without an affine (a plain tensor or array).
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        pixdim: Sequence[float],
        order: int = 3,
        order_z: int = 0,
        inverse_order: int = 1,
        inverse_order_z: int = 0,
        force_separate_z: bool | None = None,
    ) -> None:
        self.pixdim = tuple(float(p) for p in pixdim)
        self.order = order
        self.order_z = order_z
        self.inverse_order = inverse_order
        self.inverse_order_z = inverse_order_z
        self.force_separate_z = force_separate_z

    def __call__(self, img: torch.Tensor | np.ndarray) -> MetaTensor:
        """Args: img (C, X, Y, Z) with meta data. Returns: the resampled MetaTensor (C, X', Y', Z')."""
        if not isinstance(img, MetaTensor):
            raise ValueError("NNUNetResample needs a MetaTensor with an affine to read the input spacing from")
        spacing = tuple(float(s) for s in affine_to_spacing(img.peek_pending_affine(), r=3))
        old_shape = tuple(img.shape[1:])
        new_shape = nnunet_output_shape(old_shape, spacing, self.pixdim)
        axis = separate_resampling_axis(spacing, self.pixdim, self.force_separate_z)
        array = img.detach().cpu().numpy()
        resampled = resample_nnunet(array, new_shape, axis, self.order, self.order_z)
        meta = self.track_transform_meta(
            img,
            sp_size=new_shape,
            affine=_edge_to_edge_affine(old_shape, new_shape),
            extra_info={
                "spacing": list(spacing),
                "pixdim": list(self.pixdim),
                "mode": self.inverse_order,
                "order_z": self.inverse_order_z,
            },
            orig_size=old_shape,
            transform_info=self.get_transform_info(),
        )
        out = convert_to_tensor(resampled, track_meta=True)
        return out.copy_meta_from(meta) if isinstance(out, MetaTensor) else out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Resample ``data`` (C, X', Y', Z') back to the grid this transform was applied to.

        Like nnU-Net's export, the axis decision uses the target spacing as the current one; the
        order is ``inverse_order`` (``"nearest"`` when ``Invertd`` asks for nearest interpolation).
        """
        transform = self.pop_transform(data)
        info = transform["extra_info"]
        nearest = info["mode"] == "nearest"
        order, order_z = (0, 0) if nearest else (int(info["mode"]), int(info["order_z"]))
        orig_shape = tuple(int(s) for s in transform["orig_size"])
        axis = separate_resampling_axis(info["pixdim"], info["spacing"], self.force_separate_z)
        array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        current_shape = array.shape[1:]
        resampled = resample_nnunet(array, orig_shape, axis, order, order_z)
        out = convert_to_tensor(resampled, track_meta=True)
        if isinstance(data, MetaTensor) and isinstance(out, MetaTensor):
            out.copy_meta_from(data)
            out.affine = data.affine.to(torch.float64) @ _edge_to_edge_affine(current_shape, orig_shape)
        return out


class NNUNetResampled(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`NNUNetResample`.

    Args:
        keys: keys to resample (images and masks of one case share the grid).
        pixdim: target voxel size in mm (X, Y, Z).
        order: per key or one for all: 3 for images, 0 for masks and labels.
        order_z: per key or one for all.
        inverse_order: per key or one for all (1: probabilities, as nnU-Net).
        inverse_order_z: per key or one for all.
        force_separate_z: see :func:`separate_resampling_axis`.
        allow_missing_keys: skip absent keys.
    """

    backend = NNUNetResample.backend

    def __init__(
        self,
        keys: KeysCollection,
        pixdim: Sequence[float],
        order: Sequence[int] | int = 3,
        order_z: Sequence[int] | int = 0,
        inverse_order: Sequence[int] | int = 1,
        inverse_order_z: Sequence[int] | int = 0,
        force_separate_z: bool | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        per_key = [ensure_tuple_rep(v, len(self.keys)) for v in (order, order_z, inverse_order, inverse_order_z)]
        self.resamplers = {
            key: NNUNetResample(pixdim, o, oz, io, ioz, force_separate_z)
            for key, o, oz, io, ioz in zip(self.keys, *per_key)
        }

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resamplers[key](d[key])
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resamplers[key].inverse(d[key])
        return d
