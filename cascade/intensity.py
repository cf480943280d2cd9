"""Corrupt slices and intensity spikes: found, repaired before the networks, and reported.

A z-score (``NormalizeIntensityd``) takes its mean and standard deviation from every voxel, so one
saturated slice (a coil or reconstruction fault) or a few spike voxels inflate the deviation and
squeeze the anatomy into a sliver of the network's input range: the labels fall apart with no
other sign. MONAI has no transform for this, and a robust z-score alone (percentile clipping, as
nnU-Net does for CT) misses a whole bright slice, which holds more voxels than the clipped tail.
So, before the image is reoriented or resampled:

- a slice (across the axis of the largest voxel size: the acquisition's slice axis) whose 99th
  percentile, above the image minimum, exceeds :data:`SLICE_FACTOR` times the median slice's is
  corrupt and replaced by the nearest sound slice;
- a voxel above :data:`SPIKE_FACTOR` times the image's 99.9th percentile (above the minimum) is a
  spike and set to that percentile.

Both thresholds sit well beyond clean scans: on the 80 real LGE-MRI scans of the la2018 set the
brightest slice's 99th percentile is at most 2.2 times the median slice's and the maximum at most
2.5 times the 99.9th percentile (both above the minimum), and none is flagged, nor is any of 8
phantoms; a clean scan passes bit for bit, which keeps weights trained before this step valid.
Percentiles are taken on every second voxel in plane.

The cascade searches a case once: :func:`record_intensity_outliers` keeps what it found in the
image's metadata, and both stages' :class:`RepairIntensityOutliers` use that record instead of
searching again (a bundle run on its own searches itself).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

__all__ = [
    "SLICE_FACTOR", "SPIKE_FACTOR", "IntensityOutliers", "slice_axis", "find_intensity_outliers",
    "repair_intensity_outliers", "OUTLIERS_META_KEY", "record_intensity_outliers", "channel_outliers",
    "RepairIntensityOutliers", "RepairIntensityOutliersd",
]

SLICE_FACTOR = 4.0
SPIKE_FACTOR = 5.0
MIN_SLICES = 8  # fewer slices give no reliable median slice
OUTLIERS_META_KEY = "intensity_outliers"


@dataclass(frozen=True)
class IntensityOutliers:
    """What :func:`find_intensity_outliers` found in one (X, Y, Z) volume.

    Attributes:
        axis: the slice axis (0, 1 or 2).
        slices: indices of the corrupt slices along ``axis``.
        brightness: each corrupt slice's 99th percentile over the median slice's (both above the minimum).
        spike_bound: intensities above it are spikes.
        spike_value: what a spike becomes (the 99.9th percentile).
        spikes: number of spike voxels outside the corrupt slices.
    """

    axis: int
    slices: tuple[int, ...]
    brightness: tuple[float, ...]
    spike_bound: float
    spike_value: float
    spikes: int

    def __bool__(self) -> bool:
        return bool(self.slices) or self.spikes > 0

    def describe(self) -> str:
        """One phrase for a warning line."""
        parts = []
        if self.slices:
            many = len(self.slices) > 1
            which, ratios = ", ".join(map(str, self.slices)), ", ".join(f"{r:.1f}x" for r in self.brightness)
            parts.append(
                f"slice{'s' if many else ''} {which} along axis {self.axis} {'are' if many else 'is'} {ratios} as "
                "bright as the median slice (99th percentiles): corrupt, replaced by the nearest sound slice"
            )
        if self.spikes:
            parts.append(f"{self.spikes} spike voxels above {self.spike_bound:.4g} set to {self.spike_value:.4g}")
        return "; ".join(parts)


def slice_axis(affine: np.ndarray) -> int:
    """The axis of the largest voxel size of a 4x4 affine (the last of equals)."""
    sizes = np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)
    return int(np.flatnonzero(sizes >= sizes.max() * (1 - 1e-6))[-1])


def _sound_slices(volume: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(corrupt flags, brightness ratios) per slice along ``axis``."""
    n = volume.shape[axis]
    if n < MIN_SLICES:
        return np.zeros(n, bool), np.ones(n)
    planes = np.moveaxis(volume, axis, -1)[::2, ::2, :].reshape(-1, n)
    levels = np.percentile(planes, 99, axis=0) - volume.min()
    typical = float(np.median(levels))
    ratios = levels / typical if typical > 0 else np.ones(n)
    return ratios > SLICE_FACTOR, ratios


def find_intensity_outliers(volume: np.ndarray, affine: np.ndarray) -> IntensityOutliers:
    """Corrupt slices and spikes of an (X, Y, Z) volume (see the module docstring).

    Args:
        volume: intensities, any real dtype, finite.
        affine: the volume's 4x4 affine (mm), for the slice axis.
    """
    axis = slice_axis(affine)
    corrupt, ratios = _sound_slices(volume, axis)
    sound = np.compress(~corrupt, volume, axis=axis)
    low = float(volume.min())
    value = float(np.percentile(sound[::2, ::2, ::2] if sound.size > 8**3 else sound, 99.9))
    bound = low + SPIKE_FACTOR * (value - low)
    spikes = int(np.count_nonzero(sound > bound)) if value > low else 0
    return IntensityOutliers(
        axis, tuple(np.flatnonzero(corrupt).tolist()), tuple(ratios[corrupt].round(2).tolist()), bound, value, spikes
    )


def repair_intensity_outliers(volume: np.ndarray, outliers: IntensityOutliers) -> np.ndarray:
    """A copy of ``volume`` with its corrupt slices and spikes repaired (the input is never changed)."""
    repaired = np.array(volume, copy=True)
    if outliers.slices:
        sound = np.setdiff1d(np.arange(volume.shape[outliers.axis]), outliers.slices)
        for index in outliers.slices:
            nearest = int(sound[np.argmin(np.abs(sound - index))])
            np.moveaxis(repaired, outliers.axis, 0)[index] = np.moveaxis(volume, outliers.axis, 0)[nearest]
    if outliers.spikes:
        repaired[repaired > outliers.spike_bound] = outliers.spike_value
    return repaired


def _grid(image: MetaTensor) -> tuple:
    return tuple(image.shape), tuple(image.affine.flatten().tolist())


def record_intensity_outliers(image: MetaTensor) -> tuple[IntensityOutliers, ...]:
    """Find the outliers of each channel of a channel-first (C, X, Y, Z) image and keep them in its
    metadata (``OUTLIERS_META_KEY``, with the grid they were found on) for :func:`channel_outliers`.

    Returns:
        One :class:`IntensityOutliers` per channel.
    """
    affine = image.affine.numpy()
    found = tuple(find_intensity_outliers(channel, affine) for channel in image.detach().cpu().numpy())
    image.meta[OUTLIERS_META_KEY] = {"grid": _grid(image), "found": found}
    return found


def channel_outliers(image: torch.Tensor) -> tuple[IntensityOutliers, ...]:
    """The outliers of each channel of a channel-first image: those :func:`record_intensity_outliers`
    kept when they were found on this very grid (shape and affine), else searched now."""
    if isinstance(image, MetaTensor):
        record = image.meta.get(OUTLIERS_META_KEY)
        if record is not None and record["grid"] == _grid(image):
            return record["found"]
    affine = image.affine.numpy() if isinstance(image, MetaTensor) else np.eye(4)
    return tuple(find_intensity_outliers(channel, affine) for channel in image.detach().cpu().numpy())


class RepairIntensityOutliers(Transform):
    """Repair a channel-first (C, X, Y, Z) image's corrupt slices and spikes, channel by channel.

    The slice axis comes from the image's affine (a ``MetaTensor``; identity otherwise); the
    outliers are :func:`channel_outliers`. A clean image is returned as it is.
    """

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        found = channel_outliers(image)
        if not any(found):
            return image
        channels = image.detach().cpu().numpy()
        repaired = np.stack([repair_intensity_outliers(c, f) if f else c for c, f in zip(channels, found)])
        result = image.clone()
        result.copy_(torch.as_tensor(repaired, dtype=image.dtype))
        if isinstance(result, MetaTensor):
            result.meta.pop(OUTLIERS_META_KEY, None)  # found in the image before its repair
        return result


class RepairIntensityOutliersd(MapTransform):
    """Dictionary version of :class:`RepairIntensityOutliers`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.repair = RepairIntensityOutliers()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.repair(d[key])
        return d
