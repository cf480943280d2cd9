"""How much Dice a training grid costs before any network: each class through the grid and back.

A stage that works on a coarser grid than the data returns its probabilities to the input grid by
linear interpolation (``Invertd`` of the bundles' ``Spacingd``). Even a perfect probability map on
the coarse grid then loses the detail the grid cannot hold; this script measures that ceiling
by sending each true class mask (as a probability, 0 or 1) to the grid and back, trilinearly, and
thresholding at 0.5.

    python bench/resolution_ceiling.py DATA --spacing 1.25 1.25 1.25 [--cases 12] [--classes 3]

Prints, per class, the mean and minimum Dice between each label and its round trip.
"""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from cascade.data import discover_cases
from cascade.io import voxel_spacing
from cascade.labels import CLASS_NAMES
from cascade.metrics import dice


def round_trip(mask: np.ndarray, spacing: tuple[float, float, float], target: tuple[float, float, float]) -> np.ndarray:
    """The mask resampled to ``target`` spacing and back to its grid (trilinear), thresholded at 0.5."""
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    coarse = [max(1, round(n * s / t)) for n, s, t in zip(mask.shape, spacing, target)]
    low = F.interpolate(tensor, size=coarse, mode="trilinear", align_corners=False)
    back = F.interpolate(low, size=mask.shape, mode="trilinear", align_corners=False)
    return back[0, 0].numpy() > 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="labelled data folder (any layout cascade reads)")
    parser.add_argument("--spacing", type=float, nargs=3, required=True, help="the training grid (X Y Z) in mm")
    parser.add_argument("--cases", type=int, default=12, help="the first N labelled cases")
    parser.add_argument("--classes", type=int, nargs="*", default=list(CLASS_NAMES), help="label values to score")
    args = parser.parse_args()
    cases = [c for c in discover_cases(args.data) if c["label"]][: args.cases]
    scores: dict[int, list[float]] = {value: [] for value in args.classes}
    for case in cases:
        label = nib.load(case["label"])
        labels = np.asanyarray(label.dataobj)
        for value in args.classes:
            if (labels == value).any():
                mask = labels == value
                scores[value].append(dice(round_trip(mask, voxel_spacing(label), tuple(args.spacing)), mask))
    print(f"{len(cases)} cases, grid {args.spacing} mm: Dice of each class with its round trip through the grid")
    for value, values in scores.items():
        if values:
            print(
                f"  {CLASS_NAMES[value]:<13} mean {np.mean(values):.4f} "
                f" min {np.min(values):.4f}  ({len(values)} cases)"
            )


if __name__ == "__main__":
    main()
