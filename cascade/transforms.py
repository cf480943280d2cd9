"""Transforms MONAI lacks, for gating stage 2 by the stage-1 mask and for lean postprocessing.

- Binary dilation with a spherical or ellipsoidal element. MONAI's ``monai.transforms.utils.dilate``
  uses a cube; the paper dilates with a ball of radius r voxels (r = 2 in the final model, the
  authors' nnU-Net-based code), which on the anisotropic MBAS grid (0.625 x 0.625 x 2.5 mm) adds
  1.25 mm in-plane and 5 mm through-plane. A radius per axis (in voxels, fractional allowed) gives
  an ellipsoid, so a radius in mm becomes ``mm / spacing`` per axis.
- A foreground crop of at least a given size. MONAI's ``CropForegroundd`` can only round its box up
  to a multiple of ``k_divisible``; the mask-region stage 2 needs a box of at least one patch, so
  that the sliding window sees image around a small mask instead of the zero padding the inferer
  adds to inputs smaller than the patch.
- Postprocessing at the cost of the labelled region instead of the scan: the channel argmax by a
  running comparison, and MONAI's largest-component step on the labels' bounding box; both give
  exactly MONAI's results (measured costs in the docstrings).
- The stage-1 mask on the input grid at the cost of the candidate region: MONAI's ``Invertd``
  resamples the whole low-resolution probability back to the scan before the threshold (about 1 s
  for a 44 x 576 x 576 scan on 2 CPU cores); :class:`ThresholdOnInputGridd` resamples only the boxes
  where the threshold can be reached and gives exactly the same mask.
- The decision of a model trained on partially labelled data: the probabilities of the classes it
  never saw annotated are merged into background before the argmax (the marginal formulation of
  its training loss, :mod:`cascade.losses`), so it labels only what it learned.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import (
    AsDiscreted, Compose, CropForeground, CropForegroundd, Invertd, KeepLargestConnectedComponent, MapTransform,
    SpatialResample, Transform,
)
from monai.utils import TraceKeys, convert_to_dst_type, ensure_tuple_rep, get_torch_dtype_from_string
from scipy.ndimage import binary_dilation, distance_transform_edt, find_objects
from scipy.ndimage import label as ndimage_label

__all__ = [
    "ball",
    "margin_voxels",
    "dilate_mask",
    "DilateMask",
    "DilateMaskd",
    "CropForegroundMinSize",
    "CropForegroundMinSized",
    "channel_argmax",
    "ChannelArgmaxd",
    "MergeIntoBackgroundd",
    "KeepLargestComponentd",
    "ThresholdOnInputGridd",
]


def ball(radius: float | Sequence[float]) -> np.ndarray:
    """Spherical or ellipsoidal structuring element in voxels.

    Args:
        radius: one radius, or one per axis (X, Y, Z), in voxels; fractions allowed. The element
            holds the offsets (i, j, k) with (i/rx)² + (j/ry)² + (k/rz)² <= 1 (an axis of radius 0
            only its 0 offset); for a whole radius r that is i² + j² + k² <= r².

    Returns:
        bool array of shape (2⌊rx⌋+1, 2⌊ry⌋+1, 2⌊rz⌋+1); radius 0 is the single voxel.

    Raises:
        ValueError: a negative radius, or not 1 or 3 radii.
    """
    radii = np.asarray(ensure_tuple_rep(radius, 3), dtype=np.float64)
    if radii.shape != (3,) or (radii < 0).any():
        raise ValueError(f"dilation radius must be >= 0 voxels (one value, or one per axis), got {radius}")
    half = np.floor(radii + 1e-9).astype(int)
    offsets = np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij")
    scaled = [o / r if r > 0 else np.where(o == 0, 0.0, np.inf) for o, r in zip(offsets, radii)]
    return sum(s**2 for s in scaled) <= 1 + 1e-9


def dilate_mask(mask: torch.Tensor, radius: float | Sequence[float]) -> torch.Tensor:
    """Binary dilation of a mask with :func:`ball` of ``radius`` voxels (outside the volume is empty).

    Only the foreground's bounding box grown by the element is computed (nothing outside it can
    change, and a mask of the atria is a small part of a scan). On a CPU the box is dilated through
    a Euclidean distance transform scaled by the radii (a voxel joins when its scaled distance to
    the foreground is at most 1: the element's own definition), whose cost does not grow with the
    radius; on a GPU as a convolution with the element. Both give exactly the element's dilation.

    Args:
        mask: (C, X, Y, Z) or (B, C, X, Y, Z); nonzero voxels are foreground.
        radius: radius in voxels, one or per axis (X, Y, Z).

    Returns:
        Float tensor of the same shape with values 0 and 1, on the mask's device.
    """
    foreground = (mask != 0).float()
    element = ball(radius)
    if element.size == 1:
        return foreground
    batched = foreground if foreground.ndim == 5 else foreground[None]
    b, c = batched.shape[:2]
    flat = batched.reshape(b * c, *batched.shape[2:])
    present = torch.nonzero(flat.amax(0))
    dilated = torch.zeros_like(flat)
    if len(present):
        half = [n // 2 for n in element.shape]
        low = [max(int(v) - h, 0) for v, h in zip(present.amin(0), half)]
        high = [min(int(v) + h + 1, n) for v, h, n in zip(present.amax(0), half, flat.shape[1:])]
        box = (slice(None), *(slice(lo, hi) for lo, hi in zip(low, high)))
        region = flat[box]
        if region.device.type == "cpu":
            radii = ensure_tuple_rep(radius, 3)
            sampling = [1.0 / r if r > 0 else 1e6 for r in radii]  # an axis of radius 0 never reaches
            for index, channel in enumerate(region):
                if channel.any():  # a transform of nothing but background is not defined
                    grown = distance_transform_edt(channel.numpy() == 0, sampling=sampling) <= 1 + 1e-9
                    dilated[index][box[1:]] = torch.as_tensor(grown, dtype=torch.float32)
        else:
            kernel = torch.as_tensor(element, dtype=torch.float32, device=mask.device)[None, None]
            hits = F.conv3d(region[:, None], kernel, padding=tuple(half))[:, 0]
            dilated[box] = (hits > 0.5).float()
    dilated = dilated.reshape(batched.shape)
    return dilated if foreground.ndim == 5 else dilated[0]


class DilateMask(Transform):
    """Dilate a channel-first binary mask with a ball of ``radius`` voxels (one, or per axis); see
    :func:`dilate_mask`."""

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, radius: float | Sequence[float] = 2) -> None:
        ball(radius)  # validates the radius early
        self.radius = radius

    def __call__(self, mask: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: mask of shape (C, X, Y, Z). Returns: the dilated mask, same type, shape and meta."""
        dilated = dilate_mask(torch.as_tensor(mask), self.radius)
        return convert_to_dst_type(dilated, mask, dtype=getattr(mask, "dtype", None))[0]


class DilateMaskd(MapTransform):
    """Dictionary version of :class:`DilateMask`."""

    backend = DilateMask.backend

    def __init__(
        self, keys: KeysCollection, radius: float | Sequence[float] = 2, allow_missing_keys: bool = False
    ) -> None:
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


def margin_voxels(margin_mm: float | Sequence[float], pixdim: Sequence[float]) -> tuple[float, ...]:
    """A margin in mm (one value, or one per axis) as a radius in voxels per axis of a grid.

    Args:
        margin_mm: the margin in mm, isotropic or per axis (X, Y, Z).
        pixdim: voxel size in mm per axis (X, Y, Z).

    Returns:
        ``margin / pixdim`` per axis, for :class:`DilateMask` (e.g. 1.25 mm in-plane and 5 mm
        through-plane at 0.625 x 0.625 x 2.5 mm is the paper's radius of 2 voxels).
    """
    margins = ensure_tuple_rep(margin_mm, len(pixdim))
    return tuple(float(m) / float(p) for m, p in zip(margins, pixdim))


def channel_argmax(probabilities: torch.Tensor) -> torch.Tensor:
    """Index of the largest channel of a (C, ...) tensor, (1, ...) float, the first on ties.

    The result of ``torch.argmax(probabilities, 0, keepdim=True)`` (MONAI's ``AsDiscrete(argmax=
    True)``), computed by a running comparison over the channels: torch's argmax over the leading
    axis is a strided reduction, 3.6 s on a 4 x 576 x 576 x 44 volume with 2 CPU threads, the
    running comparison a few element-wise passes.
    """
    best, index = probabilities[0], torch.zeros_like(probabilities[0])
    for channel in range(1, probabilities.shape[0]):
        larger = probabilities[channel] > best
        best = torch.where(larger, probabilities[channel], best)
        index = torch.where(larger, torch.full_like(index, channel), index)
    return index[None]


class ChannelArgmaxd(MapTransform):
    """Dictionary transform replacing each key's (C, ...) tensor by :func:`channel_argmax` (meta kept)."""

    backend = [torch.Tensor]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = channel_argmax(d[key])
        return d


class MergeIntoBackgroundd(MapTransform):
    """Add the probabilities of every class but ``keep`` to background and zero them.

    A model trained where only some classes were annotated (e.g. the left atrium) learned the
    others only as part of "background or not drawn"; after this transform its argmax chooses
    between that merged background and the classes it learned. With every class kept it changes
    nothing.

    Args:
        keys: keys of (C, ...) probabilities (after the softmax).
        keep: foreground channel indices (label values) to keep, e.g. ``[3]``.
    """

    backend = [torch.Tensor]

    def __init__(self, keys: KeysCollection, keep: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.keep = {int(k) for k in keep}

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            merged = [c for c in range(1, d[key].shape[0]) if c not in self.keep]
            if merged:
                probabilities = d[key].clone()
                probabilities[0] += probabilities[merged].sum(0)
                probabilities[merged] = 0
                d[key] = probabilities
        return d


class KeepLargestComponentd(MapTransform):
    """MONAI's ``KeepLargestConnectedComponentd`` run on the bounding box of the labelled voxels only.

    Voxels outside the box are background, so the components and the result are exactly MONAI's,
    at the cost of the box instead of the volume (connected-component labelling runs on the CPU
    over every voxel it is given; a cascade's labels fill a small part of a scan).

    Args:
        keys: keys of (1, X, Y, Z) label maps.
        **kwargs: ``KeepLargestConnectedComponent`` arguments (``applied_labels``, ``independent``, ...).
    """

    backend = KeepLargestConnectedComponent.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.keep = KeepLargestConnectedComponent(**kwargs)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = d[key]
            present = torch.nonzero(torch.as_tensor(labels).reshape(-1, *labels.shape[-3:]).amax(0))
            if len(present) == 0:
                continue
            box = (slice(None), *(slice(int(lo), int(hi) + 1) for lo, hi in zip(present.amin(0), present.amax(0))))
            kept = labels.clone()
            kept[box] = self.keep(labels[box].clone())  # MONAI's transform works in place
            d[key] = kept
        return d


def _linear_resampling(operations: Sequence[Mapping]) -> tuple[np.ndarray, tuple[int, ...], dict] | None:
    """The input grid and the resampling of a history made of ``Orientation`` steps and one final
    linear or nearest-neighbour ``SpatialResample`` (``Spacing``): ``(affine, shape, resample
    arguments)``; ``None`` for any other history."""
    classes = [operation[TraceKeys.CLASS_NAME] for operation in operations]
    if not classes or classes[-1] != "SpatialResample" or set(classes[:-1]) - {"Orientation"}:
        return None
    info = operations[-1][TraceKeys.EXTRA_INFO]
    if info["mode"] not in ("bilinear", "nearest"):
        return None
    first = operations[0]
    affine = first[TraceKeys.EXTRA_INFO]["original_affine" if classes[0] == "Orientation" else "src_affine"]
    align_corners = False if info["align_corners"] == TraceKeys.NONE else info["align_corners"]
    arguments = {"mode": info["mode"], "padding_mode": info["padding_mode"], "align_corners": align_corners,
                 "dtype": get_torch_dtype_from_string(info["dtype"])}
    return np.asarray(affine, np.float64), tuple(int(n) for n in first[TraceKeys.ORIG_SIZE]), arguments


def _reachable_boxes(candidates: np.ndarray, to_input: np.ndarray, shape: Sequence[int]) -> list[tuple[slice, ...]]:
    """Boxes of the input grid holding every voxel whose interpolated value can come from a candidate
    voxel of the resampled grid, one box per cluster of candidates.

    Linear interpolation at a point mixes the (border-clamped) values of the 2 x 2 x 2 grid voxels
    around it, so a point can reach a candidate only within one voxel of it (or beyond the volume's
    border, where the border value is clamped): each cluster of candidates, grown by one voxel and
    mapped to the input grid, bounds the voxels it can reach.
    """
    clusters, _ = ndimage_label(binary_dilation(candidates, np.ones((3, 3, 3), bool)))
    size = np.asarray(candidates.shape, float)
    reach = 1e6  # voxels: stands for "unbounded" beyond a candidate on the volume's border
    boxes = []
    for found in find_objects(clusters):
        low = np.array([s.start for s in found], float)
        high = np.array([s.stop - 1 for s in found], float)
        low = np.where(low > 0, low, -reach)  # the cluster already holds the one-voxel growth
        high = np.where(high < size - 1, high, size - 1 + reach)
        points = np.where(np.array(list(np.ndindex(2, 2, 2))) == 0, low, high)  # the box's 8 corners
        mapped = (to_input @ np.c_[points, np.ones(len(points))].T)[:3].T
        start = np.clip(np.floor(mapped.min(0)) - 1, 0, np.asarray(shape) - 1).astype(int)
        stop = np.clip(np.ceil(mapped.max(0)) + 2, 0, shape).astype(int)
        if (stop > start).all():
            boxes.append(tuple(slice(int(a), int(b)) for a, b in zip(start, stop)))
    return boxes


class ThresholdOnInputGridd(MapTransform):
    """``Invertd`` followed by ``AsDiscreted(threshold=...)``, resampling only where the threshold can be reached.

    When the inverted history is the localizer's grid piece (``Orientation`` steps and one
    ``Spacing``/``SpatialResample`` with linear or nearest interpolation), every value the inverse
    would resample is a convex combination of the probabilities at the corners of its cell: outside
    the region within one voxel of a probability at or above ``threshold`` it stays below it. Only
    that region's boxes (one per cluster of such voxels) are resampled (MONAI's ``SpatialResample``,
    with the recorded arguments, from the low-resolution grid straight onto the input grid: the
    orientation steps are permutations and flips, which commute with a threshold), and the rest of
    the mask is 0: the same mask as the full inverse (tested voxel for voxel). Any other history runs
    ``Invertd`` and ``AsDiscreted``.

    Args:
        keys: keys of (C, X', Y', Z') probabilities on the preprocessed grid.
        transform: the preprocessing whose operations are inverted (as for ``Invertd``).
        orig_keys: keys of the preprocessed images holding the history (as for ``Invertd``).
        threshold: probability at or above which a voxel is in the mask.

    Returns (per key):
        A float32 (C, X, Y, Z) 0/1 mask on the input grid, with the input's affine.
    """

    def __init__(self, keys: KeysCollection, transform: Compose, orig_keys: KeysCollection, threshold: float,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.orig_keys = ensure_tuple_rep(orig_keys, len(self.keys))
        self.threshold = float(threshold)
        self.full_inverse = Compose([
            Invertd(
                keys, transform, orig_keys, nearest_interp=False, to_tensor=True, allow_missing_keys=allow_missing_keys
            ),
            AsDiscreted(keys, threshold=self.threshold, allow_missing_keys=allow_missing_keys),
        ])

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key, orig_key in self.key_iterator(d, self.orig_keys):
            resampling = _linear_resampling(d[orig_key].applied_operations)
            if resampling is None:
                d[key] = self.full_inverse({key: d[key], orig_key: d[orig_key]})[key]
            else:
                d[key] = self._threshold(d[key], *resampling)
        return d

    def _threshold(
        self, probabilities: MetaTensor, affine: np.ndarray, shape: tuple[int, ...], arguments: dict
    ) -> MetaTensor:
        grid_affine = np.asarray(probabilities.affine, np.float64)
        mask = torch.zeros((probabilities.shape[0], *shape), dtype=torch.float32)
        values = probabilities.as_tensor()
        candidates = (values >= self.threshold).any(0).numpy()
        source = MetaTensor(values, affine=torch.as_tensor(grid_affine))
        resample = SpatialResample(**arguments)
        for box in _reachable_boxes(candidates, np.linalg.solve(affine, grid_affine), shape):
            box_affine = affine.copy()
            box_affine[:3, 3] = affine[:3, :3] @ [s.start for s in box] + affine[:3, 3]
            resampled = resample(
                source, dst_affine=torch.as_tensor(box_affine), spatial_size=[s.stop - s.start for s in box]
            )
            region = (slice(None), *box)
            mask[region] = torch.maximum(mask[region], (resampled.as_tensor() >= self.threshold).float())
        result = MetaTensor(mask, meta=dict(probabilities.meta))
        result.affine = torch.as_tensor(affine)
        return result
