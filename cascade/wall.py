"""Voxel-wise measures of the atrial wall: which atrium each wall voxel belongs to, its local thickness
in mm, and its image intensity ratio (IIR) to the left-atrial blood pool.

All functions work on (X, Y, Z) arrays with the voxel spacing in mm in the same axis order, and are
correct on anisotropic grids (MBAS: 0.625 x 0.625 x 2.5 mm): every distance is a Euclidean distance
in mm from :func:`scipy.ndimage.distance_transform_edt` with ``sampling=spacing``.

**Side.** A wall voxel belongs to the cavity nearer to it (left or right atrium, by that distance);
the septum is split half-way.

**Thickness** (written here: neither scipy nor scikit-image measures the thickness of a shell). The
thickness at a wall voxel is its distance to the endocardial boundary (its own cavity) plus its
distance to the epicardial boundary (anything that is neither wall nor its own cavity: the
background, or the other atrium across the septum). In the continuum this sum is the same for every
point of a wall of constant thickness, whatever its depth, and equals that thickness (on a spherical
shell of radii ``r1 < r2`` a point at radius ``r`` is ``r - r1`` and ``r2 - r`` away from the two
boundaries). It was preferred to

- the local thickness (the largest inscribed sphere, Hildebrand & Ruegsegger 1997), which needs
  several voxels across the wall to tell spheres apart; the atrial wall is 1-4 voxels thick, one
  voxel along the 2.5 mm axis;
- Laplace streamlines (Jones et al. 2000), which solve a PDE per case: far slower on 44 x 640 x 640
  volumes, no more accurate where the wall is this thin.

Each distance is measured from the voxel's centre to the centre of the nearest voxel of the other
region, then shortened by the half-voxel that separates a voxel centre from the region's boundary:
along a unit direction ``u`` that is the radius of the ellipsoid inscribed in a voxel, ``0.5 /
sqrt(sum((u_i / h_i)^2))`` (``h_i / 2`` along axis ``i``). A wall one voxel thick along an axis
thus measures that voxel's size. On the 3 mm spherical shell of ``bench/measure_accuracy.py`` the
mean is 2.79 mm at 1 mm isotropic and 2.97 mm at 0.625 x 0.625 x 2.5 mm (docs/measurements.md).

**IIR** (Benito et al. 2017): the intensity of a wall voxel divided by the mean intensity of the
left-atrial blood pool, the cavity voxels at least :data:`BLOOD_POOL_EROSION_MM` from any voxel
outside it (an erosion in mm, against partial volume with the wall). Every wall voxel, of either
atrium, is divided by the left atrium's pool, as the method defines it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from cascade.labels import WALL

__all__ = ["BLOOD_POOL_EROSION_MM", "crop_box", "WallVoxels", "wall_voxels", "blood_pool", "intensity_ratio"]

BLOOD_POOL_EROSION_MM = 3.0


def crop_box(mask: np.ndarray, margin: int = 2) -> tuple[slice, ...] | None:
    """The bounding box of a mask grown by ``margin`` voxels (clipped to the array); ``None`` when empty."""
    where = (
        np.nonzero(mask.any(axis=(1, 2)))[0],
        np.nonzero(mask.any(axis=(0, 2)))[0],
        np.nonzero(mask.any(axis=(0, 1)))[0],
    )
    if any(w.size == 0 for w in where):
        return None
    return tuple(slice(max(0, int(w[0]) - margin), min(n, int(w[-1]) + 1 + margin)) for w, n in zip(where, mask.shape))


def _nearest(region: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) of every voxel to the nearest voxel centre of ``region``, and that voxel's indices (3, X, Y, Z)."""
    return distance_transform_edt(~region, sampling=spacing, return_indices=True)


def _to_boundary(nearest: np.ndarray, points: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from voxel centres ``points`` (N, 3) to the boundary of the region whose nearest
    voxels ``nearest`` (3, X, Y, Z) gives: centre to centre, less the half-voxel along the way (module docstring)."""
    step = (nearest[:, points[:, 0], points[:, 1], points[:, 2]].T - points) * spacing
    length = np.linalg.norm(step, axis=1)
    direction = step / length[:, None]
    return length - 0.5 / np.sqrt(((direction / spacing) ** 2).sum(axis=1))


@dataclass
class WallVoxels:
    """The wall voxels of a label map, their cavity and thickness.

    Attributes:
        points: (N, 3) voxel indices.
        sides: (N,) label value of each voxel's cavity (the nearer one).
        thickness_mm: (N,) local thickness in mm.
    """

    points: np.ndarray
    sides: np.ndarray
    thickness_mm: np.ndarray


def wall_voxels(labels: np.ndarray, spacing: Sequence[float], cavities: Sequence[int]) -> WallVoxels:
    """Side and thickness of every wall voxel (the methods of the module docstring).

    Args:
        labels: (X, Y, Z) label map with background around the wall (pad a crop first).
        spacing: voxel size in mm, (X, Y, Z).
        cavities: label values of the cavities the wall belongs to (right and/or left atrium), each
            present in ``labels``.
    """
    spacing = np.asarray(spacing, np.float64)
    points = np.argwhere(labels == WALL)
    nearest, distances = {}, []
    for value in cavities:
        distance, nearest[value] = _nearest(labels == value, spacing)
        distances.append(distance[tuple(points.T)])
    sides = np.asarray(cavities)[np.argmin(np.stack(distances), axis=0)]
    thickness = np.zeros(len(points))
    for value in cavities:
        chosen = sides == value
        if not chosen.any():
            continue
        _, outside = _nearest((labels != WALL) & (labels != value), spacing)
        inner = _to_boundary(nearest.pop(value), points[chosen], spacing)
        thickness[chosen] = inner + _to_boundary(outside, points[chosen], spacing)
    return WallVoxels(points, sides, thickness)


def blood_pool(cavity: np.ndarray, spacing: Sequence[float], erosion_mm: float = BLOOD_POOL_EROSION_MM) -> np.ndarray:
    """The cavity voxels at least ``erosion_mm`` (centre to centre) from every voxel outside the cavity.

    Args:
        cavity: (X, Y, Z) boolean mask with background around it.
        spacing: voxel size in mm, (X, Y, Z).
    """
    return distance_transform_edt(cavity, sampling=np.asarray(spacing, np.float64)) >= erosion_mm


def intensity_ratio(image: np.ndarray, points: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, float]:
    """IIR of the voxels ``points`` (N, 3): their intensity over the mean intensity of ``pool``.

    Returns:
        (N,) ratios and the pool's mean intensity.

    Raises:
        ValueError: the pool is empty or its mean intensity is not positive (a ratio is then meaningless).
    """
    if not pool.any():
        raise ValueError("no blood pool left after the erosion")
    reference = float(image[pool].astype(np.float64).mean())
    if reference <= 0:
        raise ValueError(
            f"the blood pool's mean intensity is {reference:.4g}, not positive (an intensity-normalised image?)"
        )
    return image[tuple(points.T)].astype(np.float64) / reference, reference
