"""Plausibility of a cascade result: class volumes against generous physiological bounds.

A network answers every input, a blank or foreign image included; these checks turn an answer
that cannot be an adult's atria into a warning naming the file. The bounds are deliberately wide
(several times beyond the normal limits, so enlarged atria of atrial-fibrillation patients pass):

- left and right atrial cavity 10-400 ml. In CMR reference ranges for adults the normal maximal
  volume of each atrium is of the order of 50-150 ml (Kawel-Boehm et al., "Reference ranges for
  cardiovascular magnetic resonance in adults and children: 2020 update", JCMR 22:87; Maceira et
  al., JCMR 2010 12:65 for the left and 2013 15:29 for the right atrium); severely enlarged atria
  reach a few hundred ml.
- atrial walls (both atria) 2-200 ml: a 2-3 mm wall over the two atrial surfaces is some tens of
  ml.
- stage-1 mask (the union of the three) at least :data:`MIN_STAGE1_ML`: below it the localizer
  found no atria worth segmenting.

- voxels up to :data:`MAX_WALL_VOXEL_MM` on every axis: the atrial wall is 2-3 mm thick, so a
  coarser axis (a 2D stack of 8-10 mm slices, say) cannot resolve it, and partial volume turns
  wall into cavity or background; the wall volume (and the cavities' edges) are then unreliable.

The MBAS cases hold about 270k labelled voxels of 0.98 mm^3 (about 260 ml, the paper's appendix
A.2), inside every bound.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from cascade.labels import CLASS_NAMES

__all__ = [
    "VOLUME_RANGES_ML", "MIN_STAGE1_ML", "MAX_WALL_VOXEL_MM", "voxel_volume_ml", "class_volumes_ml", "volume_warnings",
    "grid_warnings", "orientation_warnings",
]

VOLUME_RANGES_ML = {"wall": (2.0, 200.0), "right_atrium": (10.0, 400.0), "left_atrium": (10.0, 400.0)}
MIN_STAGE1_ML = 20.0
MAX_WALL_VOXEL_MM = 4.0


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in ml of a 4x4 affine in mm."""
    return float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


def class_volumes_ml(labels: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Volumes in ml of the stage-1 mask (``stage1``) and of each class of a label map.

    Args:
        labels: (X, Y, Z) label map.
        mask: (X, Y, Z) stage-1 mask.
        affine: the grid's 4x4 affine (mm).
    """
    voxel = voxel_volume_ml(affine)
    counts = np.bincount(labels.ravel(), minlength=max(CLASS_NAMES) + 1)
    volumes = {"stage1": float(np.count_nonzero(mask)) * voxel}
    volumes.update({name: float(counts[value]) * voxel for value, name in CLASS_NAMES.items()})
    return volumes


def volume_warnings(source: str, volumes: dict[str, float], labelled: Collection[int] | None = None) -> list[str]:
    """One warning line per volume outside its bound (see the module docstring).

    Args:
        source: the image file, named in each line.
        volumes: as :func:`class_volumes_ml` returns them.
        labelled: label values the model labels (default: all); a model trained on left-atrium
            labels only leaves the other classes empty by design, which is no warning.
    """
    if volumes["stage1"] < MIN_STAGE1_ML:
        return [f"{source}: stage-1 mask of {volumes['stage1']:.1f} ml, below {MIN_STAGE1_ML:g} ml: no plausible atria"]
    checked = {CLASS_NAMES[v] for v in (CLASS_NAMES if labelled is None else labelled)}
    warnings = []
    for name, (low, high) in VOLUME_RANGES_ML.items():
        if name in checked and not low <= volumes[name] <= high:
            warnings.append(
                f"{source}: {name.replace('_', ' ')} of {volumes[name]:.1f} "
                f"ml is outside the plausible {low:g}-{high:g} ml"
            )
    return warnings


def grid_warnings(source: str, affine: np.ndarray) -> list[str]:
    """A warning line when the grid is too coarse to resolve the atrial wall (see the module docstring)."""
    sizes = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    if sizes.max() <= MAX_WALL_VOXEL_MM:
        return []
    size = " x ".join(f"{s:.3g}" for s in sizes)
    return [f"{source}: voxel size {size} mm is coarser than {MAX_WALL_VOXEL_MM:g} mm on an axis: the 2-3 mm "
            "atrial wall cannot be resolved there, so wall volume and cavity edges are unreliable"]


def orientation_warnings(source: str, header: object) -> list[str]:
    """A warning line when a NIfTI header states no orientation (qform and sform codes 0, as Analyze-era
    converters write): nibabel then places the voxels by their sizes alone, and left-right, front-back
    or head-foot may be mirrored for the networks, which learnt on oriented scans."""
    if header is None or "qform_code" not in header or (int(header["qform_code"]), int(header["sform_code"])) != (0, 0):
        return []
    return [f"{source}: the header states no orientation (qform and sform codes 0): the voxels are placed by "
            "their sizes alone and "
            "the anatomy may be mirrored; set the orientation (e.g. re-convert from DICOM) and check the label map"]
