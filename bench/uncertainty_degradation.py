"""Does the case uncertainty rise when a scan is degraded on purpose?

Takes labelled scans (any layout ``cascade predict`` reads, labels beside the images), writes
degraded copies of each into a work folder, one folder per degradation and level, predicts each
folder with ``cascade predict`` (the prediction options after ``--``) and prints, per degradation
and level, the mean case uncertainty, the mean Dice against the (equally transformed) reference and
the share of cases the report flags for review. Degradations, each at the levels given:

- ``noise``: additive Gaussian noise, standard deviation a fraction of the scan's 1-99 percentile range;
- ``blur``: Gaussian blur, standard deviation in mm;
- ``inhomogeneity``: a smooth multiplicative bias field ``exp(a * r)``, ``r`` from -1 to 1 across the
  field of view along a diagonal, ``a`` the level;
- ``field_of_view``: the field of view cut on one side by a fraction of the first axis (the affine
  moved with it), as a scan planned off centre.

The work folder holds the degraded scans: keep it outside the repository when the scans may not be
redistributed.

    python bench/uncertainty_degradation.py DATA WORK --cases 4 -- --pretrained la2018 --folds 0
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from cascade.annotation import parse_classes
from cascade.data import labelled_cases
from cascade.evaluation import score_pair

LEVELS = {"noise": (0.05, 0.1, 0.2), "blur": (1.5, 3.0), "inhomogeneity": (0.4, 0.8), "field_of_view": (0.2, 0.35)}


def degrade(image: np.ndarray, label: np.ndarray, affine: np.ndarray, kind: str, level: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A degraded (image, label, affine); the label changes only with the field of view."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if kind == "noise":
        low, high = np.percentile(image, [1, 99])
        return image + rng.normal(0, level * (high - low), image.shape).astype(np.float32), label, affine
    if kind == "blur":
        return ndimage.gaussian_filter(image, sigma=level / spacing).astype(np.float32), label, affine
    if kind == "inhomogeneity":
        axes = np.meshgrid(*(np.linspace(-1, 1, n) for n in image.shape), indexing="ij")
        ramp = (axes[0] + axes[1] + axes[2]) / 3
        return (image * np.exp(level * ramp)).astype(np.float32), label, affine
    if kind == "field_of_view":
        start = int(round(level * image.shape[0]))
        moved = affine.copy()
        moved[:3, 3] = affine[:3, :3] @ np.array([start, 0, 0]) + affine[:3, 3]
        return image[start:], label[start:], moved
    raise ValueError(kind)


def write(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, 1)
    image.set_sform(affine, 1)
    nib.save(image, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--cases", type=int, default=4, help="the first N labelled cases (sorted by id)")
    parser.add_argument("--annotated", default="left_atrium")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, options = parser.parse_args(argv[:split]), argv[split + 1:]  # after --: options of cascade predict
    classes = parse_classes(args.annotated)

    cases = sorted(labelled_cases(args.data), key=lambda c: c["case"])[: args.cases]
    runs = [("clean", 0.0)] + [(kind, level) for kind, levels in LEVELS.items() for level in levels]
    print(f"{len(cases)} cases; cascade predict {' '.join(options)}")
    print(f"{'degradation':<15}{'level':>7}{'uncertainty':>13}{'Dice':>8}{'review':>8}")
    for kind, level in runs:
        folder = args.work / f"{kind}_{level:g}"
        data, out = folder / "data", folder / "pred"
        data.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for case in cases:
            image, label = nib.load(case["image"]), nib.load(case["label"])
            array, truth, affine = (np.asarray(image.dataobj, np.float32), np.asarray(label.dataobj, np.uint8),
                                    image.affine)
            if kind != "clean":
                array, truth, affine = degrade(array, truth, affine, kind, level, rng)
            write(array, affine, data / f"{case['case']}.nii.gz")
            write(truth, affine, data / f"{case['case']}_label.nii.gz")
        subprocess.run([sys.executable, "-m", "cascade.cli", "predict", str(data), str(out), "--overwrite", *options],
                       check=True, capture_output=True, text=True)
        with (out / "predictions.csv").open(newline="") as stream:
            rows = list(csv.DictReader(stream))
        values = [float(r["uncertainty"]) for r in rows if r["uncertainty"] not in ("", "n/a")]
        scores = []
        for row in rows:
            truth = data / f"{row['case']}_label.nii.gz"
            scored = score_pair(row["case"], str(out / f"{row['case']}_label.nii.gz"), str(truth), classes)
            scores += [r["dice"] for r in scored if r["status"] != "not_annotated"]
        flagged = np.mean([r["review"] == "true" for r in rows])
        print(f"{kind:<15}{level:>7g}{np.mean(values):>13.4f}{np.mean(scores):>8.3f}{flagged:>8.0%}", flush=True)


if __name__ == "__main__":
    main()
