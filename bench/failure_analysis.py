"""Where a left-atrium prediction goes wrong: per-case error volumes, located anatomically.

For each case of a prediction folder and its reference labels (the left-atrium cavity, value 3),
prints Dice, the predicted and true LA volume (ml), the missed (false-negative) and extra
(false-positive) volume, and the largest connected error regions: their volume, whether they are
missed or extra, and where they lie relative to the true LA's centroid in patient directions
(distances in mm along right-left, anterior-posterior and inferior-superior; RAS world
coordinates from the NIfTI affine). The location names the usual failure sites: pulmonary-vein
ostia (posterior, superior and lateral of the LA body), the appendage (anterior, left and
superior), the mitral-valve plane (anterior-inferior, toward the left ventricle).

Worst cases first. With ``--pictures DIR`` it also writes overlay PNGs (axial, coronal, sagittal
through the largest error region) with the prediction and the reference drawn as outlines. Those
pictures show scan intensities: write them outside the repository when the scans may not be
redistributed (the la2018 scans may not; docs/real_data.md).

    python bench/failure_analysis.py PRED_DIR GT_DIR --worst 5 [--pictures /tmp/failures]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from cascade.evaluation import pair_cases
from cascade.metrics import dice

LEFT_ATRIUM = 3
DIRECTIONS = (("L", "R"), ("A", "P"), ("S", "I"))  # RAS: positive along +x is left, +y anterior, +z superior


def _world(affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def describe_offset(offset_mm: np.ndarray) -> str:
    """An RAS offset in mm as patient directions, largest first, e.g. ``'24 mm P, 11 mm S'``."""
    parts = []
    for axis in np.argsort(-np.abs(offset_mm)):
        value = float(offset_mm[axis])
        if abs(value) >= 5:
            parts.append(f"{abs(value):.0f} mm {DIRECTIONS[axis][0 if value > 0 else 1]}")
    return ", ".join(parts) or "at the centre"


def error_regions(
    pred: np.ndarray, truth: np.ndarray, affine: np.ndarray, voxel_ml: float, top: int = 3, rim_mm: float = 2.0
) -> list[dict]:
    """The ``top`` largest connected missed or extra regions, with volume and place.

    Args:
        pred, truth: boolean masks of one shape (X, Y, Z).
        affine: the NIfTI voxel-to-RAS affine.
        voxel_ml: one voxel's volume in ml.
        top: how many regions to return.
        rim_mm: a region's voxels closer than this to the true boundary count as its rim share.

    Returns:
        Dicts with ``kind`` (missed or extra), ``ml``, ``offset_mm`` (RAS, from the true LA's
        centroid), ``where`` (the offset in patient directions) and ``rim`` (the share of the
        region within ``rim_mm`` of the true boundary: near 1 for a boundary drawn a little too
        wide or narrow all along, low for a missed or added structure), largest first.
    """
    centre = _world(affine, np.argwhere(truth).mean(axis=0))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    to_boundary = np.where(truth, ndimage.distance_transform_edt(truth, sampling=spacing),
                           ndimage.distance_transform_edt(~truth, sampling=spacing))
    regions = []
    for kind, error in (("missed", truth & ~pred), ("extra", pred & ~truth)):
        components, count = ndimage.label(error, structure=np.ones((3, 3, 3)))
        if not count:
            continue
        sizes = ndimage.sum_labels(error, components, index=np.arange(1, count + 1))
        for index in np.argsort(-sizes)[:top]:
            voxels = np.argwhere(components == index + 1)
            offset = _world(affine, voxels.mean(axis=0)) - centre
            regions.append({
                "kind": kind, "ml": float(sizes[index]) * voxel_ml, "offset_mm": offset,
                "where": describe_offset(offset), "rim": float(np.mean(to_boundary[tuple(voxels.T)] <= rim_mm)),
            })
    return sorted(regions, key=lambda r: -r["ml"])[:top]


def analyse_case(case: str, prediction: str, truth: str) -> dict:
    pred_img, truth_img = nib.load(prediction), nib.load(truth)
    pred = np.asarray(pred_img.dataobj) == LEFT_ATRIUM
    ref = np.asarray(truth_img.dataobj) == LEFT_ATRIUM
    voxel_ml = float(np.prod(truth_img.header.get_zooms()[:3])) / 1000
    return {
        "case": case, "dice": dice(pred, ref),
        "pred_ml": pred.sum() * voxel_ml, "true_ml": ref.sum() * voxel_ml,
        "missed_ml": (ref & ~pred).sum() * voxel_ml, "extra_ml": (pred & ~ref).sum() * voxel_ml,
        "regions": error_regions(pred, ref, truth_img.affine, voxel_ml),
        "files": (prediction, truth),
    }


def save_pictures(row: dict, image_path: str, folder: Path) -> Path:
    """Overlay PNG through the largest error region: reference outline green, prediction red."""
    from PIL import Image

    image = nib.as_closest_canonical(nib.load(image_path))
    pred = nib.as_closest_canonical(nib.load(row["files"][0]))
    ref = nib.as_closest_canonical(nib.load(row["files"][1]))
    volume = np.asarray(image.dataobj, dtype=np.float32)
    masks = [np.asarray(m.dataobj) == LEFT_ATRIUM for m in (ref, pred)]
    centre = np.argwhere(masks[0] ^ masks[1]).mean(axis=0).round().astype(int) if (masks[0] ^ masks[1]).any() else (
        np.array(volume.shape) // 2)
    low, high = np.percentile(volume, (0.5, 99.5))
    zooms = image.header.get_zooms()[:3]
    panels = []
    for axis in (2, 1, 0):  # axial, coronal, sagittal in RAS
        take = [slice(None)] * 3
        take[axis] = int(centre[axis])
        grey = np.clip((volume[tuple(take)] - low) / max(high - low, 1e-6), 0, 1)
        rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)
        for mask, colour in zip((m[tuple(take)] for m in masks), ((0, 220, 0), (230, 30, 30))):
            rgb[mask & ~ndimage.binary_erosion(mask)] = colour
        spacing = [zooms[i] for i in range(3) if i != axis]
        picture = Image.fromarray(np.ascontiguousarray(np.rot90(rgb)))  # superior/anterior up
        size = (round(picture.width * spacing[0] / 0.5), round(picture.height * spacing[1] / 0.5))
        panels.append(picture.resize(size, Image.NEAREST))
    canvas = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{row['case']}.png"
    canvas.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", help="folder of <case>_label.nii.gz")
    parser.add_argument("truth", help="folder of reference labels in any layout `cascade evaluate` reads")
    parser.add_argument("--worst", type=int, default=5, help="cases to describe, worst Dice first")
    parser.add_argument("--pictures", type=Path, help="write overlay PNGs of the described cases here")
    parser.add_argument("--images", help="image folder for --pictures (default: the truth folder)")
    args = parser.parse_args()
    pairs, _, _ = pair_cases(args.predictions, args.truth, "left_atrium")
    rows = sorted((analyse_case(case, pred, truth) for case, pred, truth, _ in pairs), key=lambda r: r["dice"])
    for row in rows[: args.worst]:
        print(f"{row['case']}: Dice {row['dice']:.3f}, LA {row['pred_ml']:.1f} ml predicted / {row['true_ml']:.1f} ml "
              f"true, missed {row['missed_ml']:.1f} ml, extra {row['extra_ml']:.1f} ml")
        for region in row["regions"]:
            print(f"    {region['kind']} {region['ml']:.1f} ml, {region['where']} of the LA centre, "
                  f"{region['rim']:.0%} within 2 mm of the true boundary")
        if args.pictures:
            images = Path(args.images or args.truth)
            image = next(p for p in images.rglob(f"{row['case']}*.nii*") if "_label" not in p.name)
            print(f"    picture: {save_pictures(row, str(image), args.pictures)}")


if __name__ == "__main__":
    main()
