"""How the context margin of the mask-region stage 2 changes its labels, against the whole-volume pass.

Stage 1 runs once per case. Stage 2 then runs over the whole volume (the paper's pass) and over the
dilated stage-1 mask's bounding box grown by ``margin`` voxels per side, for margins of 0, 1/4, 1/2,
1 and 2 times the segmenter's ``crop_margin`` (``--scales``). For each margin it prints the stage-2
windows and seconds per case, the Dice between the region and whole-volume label maps per class
(mean and minimum over cases) and, where the cases have labels, the Dice against them.

The region pass puts its windows at other places on the anatomy than the whole-volume pass, so
the two maps differ where the network's output depends on window placement (thin structures such
as the wall most); the Dice against the labels shows whether that costs accuracy.

    python bench/mask_region_agreement.py                     # 8 phantoms, demo weights
    python bench/mask_region_agreement.py --data DIR --weights model   # your data, trained bundles

With ``--weights demo`` both stages use the shipped demo weights and their demo.json grids
(segmenter at 1.25 x 1.25 x 2.5 mm, patch 128 x 128 x 16); with ``--weights model`` each bundle's
``models/model.pt`` and its inference.json. The generated phantoms default to the grid the demo
weights were trained on (24 x 160 x 160 at 2.5 x 1.25 x 1.25 mm): on full-size phantoms
(``--shape 44 576 576 --spacing 2.5 0.625 0.625``) the demo weights are outside their training
field of view and their labels depend on window placement more than on the margin.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from cascade.data import image_datalist
from cascade.labels import CLASS_NAMES
from cascade.metrics import dice
from cascade.phantom import write_phantoms
from cascade.bundles import bundle_dir
from cascade.engine import CascadeEngine, StagePredictor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timed_network import TimedNetwork  # noqa: E402

def stage(bundle: Path, weights: str, overrides: dict) -> StagePredictor:
    demo = weights == "demo"
    checkpoint = bundle / "models" / ("demo" if demo else "") / "model.pt"
    predictor = StagePredictor(bundle, [checkpoint], overrides=overrides, configs=["demo"] if demo else [])
    predictor.network.members = [TimedNetwork(network) for network in predictor.network.members]
    return predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="data folder (any supported layout); default: generated phantoms")
    parser.add_argument("--cases", type=int, default=8, help="phantoms to generate when --data is not given")
    parser.add_argument("--seed", type=int, default=7000, help="phantom seed (the demo weights saw seed 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=[24, 160, 160], help="phantom grid (Z, Y, X) in voxels")
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=[2.5, 1.25, 1.25], help="phantom voxel size (Z, Y, X) in mm"
    )
    parser.add_argument("--weights", choices=["demo", "model"], default="demo")
    parser.add_argument(
        "--scales", type=float, nargs="+", default=[0, 0.25, 0.5, 1, 2], help="margins, in units of crop_margin"
    )
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    common = {"device": torch.device(args.device), "overlap": args.overlap, "num_workers": 0}

    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        if data is None:
            data = Path(scratch) / "phantoms"
            write_phantoms(data, cases=args.cases, seed=args.seed, shape=tuple(args.shape), spacing=tuple(args.spacing))
        cases = image_datalist(data)
        localizer = stage(bundle_dir("localizer"), args.weights, common)
        whole = stage(bundle_dir("segmenter"), args.weights, {**common, "mask_region": False, "mask_from_label": False})
        patch = whole.parser.get_parsed_content("patch_size")
        base_margin = whole.parser.get_parsed_content("crop_margin")
        margins = [[int(round(m * scale)) for m in base_margin] for scale in args.scales]
        regions = [
            stage(
                bundle_dir("segmenter"), args.weights,
                {**common, "mask_region": True, "crop_margin": m, "mask_from_label": False},
            )
            for m in margins
        ]
        pixdim = whole.parser.get_parsed_content("pixdim")
        print(f"{len(cases)} cases from {args.data or 'phantoms seed ' + str(args.seed)}; weights {args.weights}; "
              f"segmenter grid {pixdim} mm, patch {patch}, overlap {args.overlap}")

        rows = {"whole volume": [], **{str(m): [] for m in margins}}
        engine = CascadeEngine(localizer)
        for case in cases:
            image, _ = engine.read(case["image"])
            mask = engine.localize(image)
            truth = np.asanyarray(nib.load(case["label"]).dataobj) if "label" in case else None
            reference = None
            for name, predictor in (("whole volume", whole), *zip(map(str, margins), regions)):
                predictor.network.members[0].reset()
                labels = CascadeEngine(localizer, predictor).segment(image, mask)[0]
                reference = labels if reference is None else reference
                rows[name].append({
                    "windows": predictor.network.members[0].windows,
                    "seconds": sum(predictor.seconds.values()),
                    "agreement": [dice(labels == v, reference == v) for v in CLASS_NAMES],
                    "truth": [dice(labels == v, truth == v) for v in CLASS_NAMES] if truth is not None
                    else [np.nan] * 3,
                })
            print(f"  {case['case']}: stage-1 mask {int(mask.sum())} voxels", flush=True)

    names = " ".join(f"{n[:12]:>12}" for n in CLASS_NAMES.values())
    print(
        f"\n{'stage 2 over':<22} {'windows':>7} {'s/case':>7}   Dice "
        f"vs whole volume, mean (min): {names}   Dice vs label: {names}"
    )
    for name, results in rows.items():
        label = name if name == "whole volume" else f"margin {name}"
        agreement = np.array([r["agreement"] for r in results])
        truth = np.array([r["truth"] for r in results])
        windows, seconds = np.mean([r["windows"] for r in results]), np.mean([r["seconds"] for r in results])
        print(f"{label:<22} {windows:>7.1f} {seconds:>7.1f}   "
              + " ".join(f"{np.nanmean(a):>6.4f} ({np.nanmin(a):.3f})" for a in agreement.T) + "   "
              + " ".join(f"{np.nanmean(t):>12.3f}" for t in truth.T))


if __name__ == "__main__":
    main()
