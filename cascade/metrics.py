"""Segmentation metrics in the MBAS challenge's convention and in the paper's.

- :func:`hd95_mm` reproduces the organisers' scorer (medpy ``hd95`` with the header spacing):
  surface = mask XOR its erosion by the 6-connected cross, voxels on the volume border count as
  surface (the erosion treats the outside as background); exact anisotropic Euclidean distances
  from each surface voxel to the other mask's surface, both directions; the 95th percentile
  (linear interpolation) of the union of both distance sets.
- :func:`hd95_monai_vox` is what the paper reported: MONAI's ``HausdorffDistanceMetric(
  percentile=95, directed=False)`` without spacing, i.e. voxel units and the maximum of the two
  directed 95th percentiles.

Masks are boolean arrays of any (equal) shape. Spacing is always in the arrays' axis order
(nibabel arrays are (X, Y, Z): 0.625, 0.625, 2.5 mm for MBAS); the wrong order changes HD95 up to
4x. An empty prediction or truth makes HD95 undefined: NaN with a status (:data:`STATUSES`), never
0 and never dropped. Dice of an empty prediction against a non-empty truth is 0. A class the
reference does not annotate (partially labelled data, e.g. left atrium only) is not scored: NaN
with the status ``not_annotated``, never a Dice of 0 against a label map that is silent about it.

Both HD95 functions work on the masks cropped to the bounding box of their union grown by one
voxel and clipped to the volume, which gives the same surfaces and distances as the whole volume
(see :func:`_union_box`) at a fraction of the cost.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from cascade.labels import CLASS_NAMES

__all__ = [
    "STATUSES",
    "dice",
    "overlap",
    "hd95_mm",
    "hd95_monai_vox",
    "case_status",
    "score_binary",
    "score_case",
    "region_recall",
]

STATUSES = ("ok", "empty_prediction", "empty_truth", "both_empty", "not_annotated")
HD95_PERCENTILE = 95.0


def _as_mask_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    return pred, truth


def _union_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``a | b`` (non-empty) grown by one voxel on each side, clipped to the volume.

    Cropping to this box leaves both surfaces and all distances unchanged. Whether a voxel is
    eroded depends on its six neighbours: those inside the box are unchanged, and those outside
    it are background either way (beyond the real volume border the erosion assumes background,
    ``border_value=0``, with or without the crop; elsewhere they lie outside the union). So a
    voxel on the real border stays surface and no voxel becomes surface because of the crop (the
    tight box would already be exact; the margin keeps a layer of background around the objects,
    as MONAI's own crop does). Distances between surface voxels do not depend on the voxels around
    them.
    """
    union = a | b
    box = []
    for axis, size in enumerate(union.shape):
        present = np.flatnonzero(np.any(union, axis=tuple(i for i in range(union.ndim) if i != axis)))
        box.append(slice(max(int(present[0]) - 1, 0), min(int(present[-1]) + 2, size)))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it; voxels on the array border included."""
    cross = generate_binary_structure(mask.ndim, 1)
    return mask & ~binary_erosion(mask, structure=cross, border_value=0)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|A ∩ B| / (|A| + |B|) of two masks of equal shape.

    Returns:
        Dice in [0, 1]; 0 when exactly one mask is empty, NaN when both are.
    """
    pred, truth = _as_mask_pair(pred, truth)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(pred & truth)) / total


def overlap(pred: np.ndarray, truth: np.ndarray) -> float:
    """The paper's stage-1 overlap |A ∩ B| / |B|: the share of the truth covered by the prediction.

    Returns:
        Overlap in [0, 1]; NaN when ``truth`` is empty.
    """
    pred, truth = _as_mask_pair(pred, truth)
    reference = int(np.count_nonzero(truth))
    if reference == 0:
        return float("nan")
    return int(np.count_nonzero(pred & truth)) / reference


def hd95_mm(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance in mm, exactly as the MBAS organisers' scorer computes it.

    Equal to ``medpy.metric.binary.hd95(pred, truth, voxelspacing=spacing)``.

    Args:
        pred: mask, any shape.
        truth: mask of the same shape.
        spacing: voxel size in mm per array axis, in the arrays' axis order.

    Returns:
        HD95 in mm; NaN when either mask is empty.

    Raises:
        ValueError: shapes differ or ``spacing`` does not have one value per axis.
    """
    pred, truth = _as_mask_pair(pred, truth)
    sampling = np.asarray(spacing, dtype=np.float64)
    if sampling.shape != (pred.ndim,):
        raise ValueError(f"spacing {tuple(spacing)} must have one value per array axis ({pred.ndim})")
    if not pred.any() or not truth.any():
        return float("nan")
    box = _union_box(pred, truth)
    pred_surface, truth_surface = _surface(pred[box]), _surface(truth[box])
    to_truth = distance_transform_edt(~truth_surface, sampling=sampling)[pred_surface]
    to_pred = distance_transform_edt(~pred_surface, sampling=sampling)[truth_surface]
    return float(np.percentile(np.concatenate([to_truth, to_pred]), HD95_PERCENTILE))


def hd95_monai_vox(pred: np.ndarray, truth: np.ndarray) -> float:
    """The paper's HD95: MONAI ``compute_hausdorff_distance(percentile=95, directed=False)``, no spacing.

    The maximum of the two directed 95th percentiles, in voxels (every axis counts one voxel as
    one unit whatever its size in mm).

    Args:
        pred: mask, any shape.
        truth: mask of the same shape.

    Returns:
        HD95 in voxels; NaN when either mask is empty (MONAI also returns NaN there, with a warning).

    Raises:
        ValueError: shapes differ.
    """
    pred, truth = _as_mask_pair(pred, truth)
    if not pred.any() or not truth.any():
        return float("nan")
    box = _union_box(pred, truth)
    as_batch = [torch.from_numpy(np.ascontiguousarray(m[box]))[None, None] for m in (pred, truth)]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument it passes to itself
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            *as_batch, include_background=True, percentile=HD95_PERCENTILE, directed=False
        )
    return float(value.item())


def case_status(pred: np.ndarray, truth: np.ndarray) -> str:
    """Which of :data:`STATUSES` applies: ``ok``, ``empty_prediction``, ``empty_truth``, ``both_empty``."""
    pred_empty, truth_empty = not np.any(pred), not np.any(truth)
    if pred_empty and truth_empty:
        return "both_empty"
    if pred_empty:
        return "empty_prediction"
    return "empty_truth" if truth_empty else "ok"


def score_binary(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict:
    """Dice, both HD95 conventions, overlap and status of two masks (e.g. stage-1 atrial masks).

    Args:
        pred: mask, any shape.
        truth: mask of the same shape.
        spacing: voxel size in mm per array axis, in the arrays' axis order.

    Returns:
        ``{"dice", "hd95_mm", "hd95_monai_vox", "overlap", "status"}``; undefined values are NaN.
    """
    pred, truth = _as_mask_pair(pred, truth)
    status = case_status(pred, truth)
    if status != "both_empty":  # one crop serves every metric
        box = _union_box(pred, truth)
        pred, truth = pred[box], truth[box]
    return {
        "dice": dice(pred, truth),
        "hd95_mm": hd95_mm(pred, truth, spacing),
        "hd95_monai_vox": hd95_monai_vox(pred, truth),
        "overlap": overlap(pred, truth),
        "status": status,
    }


def score_case(
    pred_labels: np.ndarray,
    truth_labels: np.ndarray,
    spacing: Sequence[float],
    annotated: Collection[int] | None = None,
) -> list[dict]:
    """Per-class scores of one case, one row per class in label order (wall, right_atrium, left_atrium).

    Args:
        pred_labels: predicted label map, e.g. (X, Y, Z), values in {0, 1, 2, 3}.
        truth_labels: reference label map of the same shape.
        spacing: voxel size in mm per array axis, in the arrays' axis order.
        annotated: label values the reference annotates (default: all); the others get NaN and
            the status ``not_annotated``.

    Returns:
        ``[{"class", "dice", "hd95_mm", "hd95_monai_vox", "status"}, ...]``; undefined values are NaN.

    Raises:
        ValueError: shapes differ.
    """
    if pred_labels.shape != truth_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} differs from truth shape {truth_labels.shape}")
    rows = []
    for value, name in CLASS_NAMES.items():
        if annotated is not None and value not in annotated:
            unscored = dict.fromkeys(("dice", "hd95_mm", "hd95_monai_vox"), float("nan"))
            rows.append({"class": name, **unscored, "status": "not_annotated"})
            continue
        scores = score_binary(pred_labels == value, truth_labels == value, spacing)
        del scores["overlap"]
        rows.append({"class": name, **scores})
    return rows


def region_recall(region: np.ndarray, truth_labels: np.ndarray) -> dict[str, float]:
    """Share of each true class, and of their union ``atria``, inside a region (e.g. the gate).

    Whatever a class has outside the gate stage 2 can never label, so this bounds stage 2's recall;
    for the stage-1 mask and ``atria`` it is the paper's stage-1 overlap |A ∩ B| / |B|.

    Args:
        region: mask (X, Y, Z), e.g. the stage-1 mask or the gate after dilation.
        truth_labels: label map of the same shape, values in {0, 1, 2, 3}.

    Returns:
        ``{"wall", "right_atrium", "left_atrium", "atria"}`` -> recall in [0, 1]; NaN for an absent
        class (so for a class partially labelled data does not annotate, and ``atria`` is then the
        union of the annotated classes).
    """
    recall = {name: overlap(region, truth_labels == value) for value, name in CLASS_NAMES.items()}
    recall["atria"] = overlap(region, truth_labels > 0)
    return recall
