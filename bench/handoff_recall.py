"""How much of each true class the stage-1 hand-off keeps, per threshold and margin, for a trained localizer.

For the validation cases of one fold of a ``cascade crossval`` work folder, the fold's localizer
(its overlay and TTA setting as stored in ``WORK/localizer/config.json``) gives the foreground
probability; each ``--thresholds`` value, largest component kept, is dilated by each
``--margins`` value (mm, isotropic) and scored against the labels: the share of the annotated
atria inside the gate (recall: what stage 2 can label at best) and the gate's volume relative to
the atria (what stage 2 must reject). Use it to choose ``mask_threshold`` and ``gate_margin_mm``
for a new dataset before the segmenters are trained.

    python bench/handoff_recall.py WORK --fold 0 [--thresholds 0.5 0.2 0.1 0.05] [--margins 0 5 7.5 10]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from cascade.engine import CascadeEngine
from cascade.transforms import dilate_mask, margin_voxels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="cascade crossval work folder (trained localizer folds)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.2, 0.1, 0.05])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 5.0, 7.5, 10.0])
    args = parser.parse_args()
    entries = [e for e in json.loads((args.work / "datalist.json").read_text())["training"] if e["fold"] == args.fold]
    print(
        f"fold {args.fold}: {len(entries)} validation cases; recall of the "
        "annotated atria in the gate (mean, min) and gate volume / atria volume"
    )
    for threshold in args.thresholds:
        engine = CascadeEngine.from_options(
            models=args.work, folds=[args.fold], stages=("localizer",), device="cpu", mask_threshold=threshold
        )
        rows = {margin: [] for margin in args.margins}
        for entry in entries:
            image, source = engine.read(args.work / entry["image"])
            mask = torch.from_numpy(engine.localize(image)[None].astype(np.float32))
            atria = np.isin(
                np.asanyarray(nib.load(str(args.work / entry["label"])).dataobj), entry.get("annotated", [1, 2, 3])
            )
            spacing = np.linalg.norm(source.affine[:3, :3], axis=0)
            for margin in args.margins:
                gate = dilate_mask(mask, margin_voxels(margin, spacing))[0].numpy() > 0
                rows[margin].append(((gate & atria).sum() / atria.sum(), gate.sum() / atria.sum()))
        for margin, values in rows.items():
            values = np.asarray(values)
            print(f"  threshold {threshold:<5} margin {margin:>4} mm: recall {values[:, 0].mean():.4f} "
                  f"(min {values[:, 0].min():.4f}), gate / atria {values[:, 1].mean():.2f}")


if __name__ == "__main__":
    main()
