"""Does a morphological clean-up of one class help? Label-map post-processing scored against references.

For each case of a prediction folder and its reference labels, one class (default: the left-atrium
cavity, value 3) is scored as predicted and after each clean-up:

- ``fill holes``: enclosed background inside the class is added (3D);
- ``open R``: a morphological opening with a ball of radius R mm (on the voxel spacing), then its
  largest component: cuts away parts joined to the body through a neck narrower than 2 R
  (a leak through a valve plane, a touching neighbour);
- ``open R + rim``: the prediction within R mm of that opened body: the body's own boundary
  (which the opening rounds off) comes back, thin parts farther out stay removed.

The prediction already has its largest component kept (the segmenter's postprocessing), so a
clean-up only helps where the error hangs on the body. Printed per variant: mean and lowest Dice,
mean HD95 (mm), the volume bias and the mean absolute volume difference (% of the reference) over
the cases. Meant for out-of-fold predictions (every case scored by a model that did not see it).

    python bench/label_postprocessing.py PRED_DIR GT_DIR [--label 3] [--radii_mm 2.5 3.75 5]
"""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np
from scipy import ndimage

from cascade.evaluation import pair_cases
from cascade.metrics import dice, hd95_mm


def erode(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Erosion by a ball of ``radius_mm``: the voxels farther than that from the background (exact, via the EDT)."""
    return ndimage.distance_transform_edt(mask, sampling=spacing) > radius_mm


def dilate(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Dilation by a ball of ``radius_mm``: the voxels within that distance of the mask."""
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def largest_component(mask: np.ndarray) -> np.ndarray:
    components, count = ndimage.label(mask)
    if count < 2:
        return mask
    return components == 1 + np.argmax(ndimage.sum_labels(mask, components, index=np.arange(1, count + 1)))


def variants(pred: np.ndarray, spacing: np.ndarray, radii_mm: list[float]) -> dict[str, np.ndarray]:
    """The prediction as is and after each clean-up (see the module docstring)."""
    out = {"as is": pred, "fill holes": ndimage.binary_fill_holes(pred)}
    for radius in radii_mm:
        body = largest_component(dilate(erode(pred, radius, spacing), radius, spacing))
        out[f"open {radius:g} mm"] = body
        out[f"open {radius:g} mm + rim"] = pred & dilate(body, radius, spacing)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", help="folder of <case>_label.nii.gz")
    parser.add_argument("truth", help="folder of reference labels in any layout `cascade evaluate` reads")
    parser.add_argument("--label", type=int, default=3, help="the class value to clean up (default 3, left atrium)")
    parser.add_argument("--radii_mm", type=float, nargs="+", default=[2.5, 3.75, 5.0])
    args = parser.parse_args()
    pairs, _, _ = pair_cases(args.predictions, args.truth, [args.label])
    scores: dict[str, list[tuple[float, float, float]]] = {}
    for _, pred_path, truth_path, _ in pairs:
        image = nib.load(pred_path)
        spacing = np.asarray(image.header.get_zooms()[:3], dtype=float)
        truth = np.asarray(nib.load(truth_path).dataobj) == args.label
        for name, mask in variants(np.asarray(image.dataobj) == args.label, spacing, args.radii_mm).items():
            difference = 100 * (int(mask.sum()) - int(truth.sum())) / truth.sum()
            scores.setdefault(name, []).append((dice(mask, truth), hd95_mm(mask, truth, spacing), difference))
    print(f"{len(pairs)} cases, class {args.label}")
    print("| variant | Dice mean | lowest | HD95 mm | volume bias % | mean abs. volume difference % |")
    print("|---|---|---|---|---|---|")
    for name, rows in scores.items():
        values = np.asarray(rows)
        print(f"| {name} | {values[:, 0].mean():.4f} | {values[:, 0].min():.3f} | {values[:, 1].mean():.2f} | "
              f"{values[:, 2].mean():+.1f} | {np.abs(values[:, 2]).mean():.1f} |")


if __name__ == "__main__":
    main()
