"""The stage-1 hand-off: how much atrium each gating rule keeps, and what the cascade makes of it.

For each case the localizer's foreground probability is computed once on the input grid; every
rule then builds its gate from it (threshold, largest component, dilation margin in mm) and runs
stage 2 through the cascade engine with that gate. Printed per rule: gate recall per class (mean
and minimum over cases: the share of each true class inside the gate, which bounds what stage 2
can label), the gate's volume relative to the atria, Dice and HD95 (mm) per class, and stage-2
windows per case. A single-stage model (segmenter trained with ``configs/single_stage.json``, no
gate) is added with ``--single_stage``.

    python bench/gate_study.py --localizer L.pt --segmenter S.pt [--single_stage S1.pt] --config demo
        [--data DIR | --cases 8 --seed 7000 --shape 44 288 288 --spacing 2.5 1.25 1.25]

Rules are ``threshold:margin_mm[:nolcc]``, e.g. ``0.5:1.25,1.25,5`` (the paper's: argmax, largest
component, 2 voxels at 0.625 x 0.625 x 2.5 mm) or ``0.3:3`` (threshold 0.3, 3 mm isotropic).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose, KeepLargestConnectedComponent

from cascade.bundles import bundle_dir
from cascade.data import image_datalist
from cascade.engine import CascadeEngine, StagePredictor
from cascade.io import voxel_spacing
from cascade.labels import CLASS_NAMES
from cascade.metrics import region_recall, score_case
from cascade.phantom import write_phantoms
from cascade.transforms import dilate_mask, margin_voxels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timed_network import TimedNetwork  # noqa: E402

PAPER_RULE = "0.5:1.25,1.25,5"


def parse_rule(text: str) -> dict:
    parts = text.split(":")
    margin = [float(v) for v in parts[1].split(",")]
    return {
        "name": text, "threshold": float(parts[0]), "margin": margin if len(margin) == 3 else margin[0],
        "lcc": "nolcc" not in parts[2:],
    }


def stage(name: str, checkpoint: str, configs: list[str], overrides: dict) -> StagePredictor:
    predictor = StagePredictor(bundle_dir(name), [checkpoint], overrides=overrides, configs=configs)
    predictor.network.members = [TimedNetwork(m) for m in predictor.network.members]
    return predictor


def foreground_probability(localizer: StagePredictor, image) -> np.ndarray:
    """The localizer's foreground probability on the input grid (its postprocessing up to the inversion)."""
    steps = localizer.postprocessing.transforms
    inverted = next(i for i, t in enumerate(steps) if type(t).__name__ == "Invertd")
    localizer.postprocessing = Compose(steps[: inverted + 1])
    return localizer({"image": image.clone()})["pred"][0].numpy()


def summarize(name: str, rows: list[dict]) -> str:
    recall = np.array([[r["recall"][c] for c in (*CLASS_NAMES.values(), "atria")] for r in rows])
    dice = np.array([[r["scores"][c]["dice"] for c in CLASS_NAMES.values()] for r in rows])
    hd95 = np.array([[r["scores"][c]["hd95_mm"] for c in CLASS_NAMES.values()] for r in rows])
    gate = np.mean([r["gate_ratio"] for r in rows])
    windows = np.mean([r["windows"] for r in rows])
    cells = " ".join(f"{m:.4f}({lo:.3f})" for m, lo in zip(np.nanmean(recall, 0), np.nanmin(recall, 0)))
    return (f"{name:<22} {cells}  {gate:5.2f}  " + " ".join(f"{v:.3f}" for v in np.nanmean(dice, 0))
            + f"  {np.nanmean(dice):.3f}  " + " ".join(f"{v:6.2f}" for v in np.nanmean(hd95, 0))
            + f"  {np.nanmean(hd95):6.2f}  {windows:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--localizer", required=True, help="localizer checkpoint")
    parser.add_argument("--segmenter", required=True, help="segmenter checkpoint")
    parser.add_argument("--single_stage", help="single-stage segmenter checkpoint (configs/single_stage.json)")
    parser.add_argument("--config", action="append", default=[], help="overlay(s) of both bundles, e.g. demo")
    parser.add_argument(
        "--rules", nargs="+", default=[PAPER_RULE, "0.5:2.5", "0.5:5", "0.3:2.5", "0.3:5", "0.5:5:nolcc"]
    )
    parser.add_argument("--data", help="labelled data folder; default: generated phantoms")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7000, help="phantom seed (unseen by the demo weights)")
    parser.add_argument("--shape", type=int, nargs=3, default=[44, 288, 288], help="phantom grid (Z, Y, X)")
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=[2.5, 1.25, 1.25], help="phantom voxel size (Z, Y, X) mm"
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--gates_only", action="store_true", help="gate recall only, no stage 2")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rules = [parse_rule(r) for r in args.rules]
    common = {"device": torch.device("cpu")}
    localizer = stage("localizer", args.localizer, args.config, common)
    segmenters = {}
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or Path(scratch) / "phantoms"
        if not args.data:
            write_phantoms(data, cases=args.cases, seed=args.seed, shape=tuple(args.shape), spacing=tuple(args.spacing))
        cases = [c for c in image_datalist(data, report=lambda line: None) if "label" in c]
        results = {rule["name"]: [] for rule in rules} | ({"single stage": []} if args.single_stage else {})
        for case in cases:
            engine = CascadeEngine(localizer)
            image, source = engine.read(case["image"])
            truth = np.asanyarray(nib.load(case["label"]).dataobj).astype(np.uint8)
            spacing = voxel_spacing(source)
            probability = foreground_probability(localizer, image)
            for rule in rules:
                mask = (probability >= rule["threshold"]).astype(np.uint8)
                if rule["lcc"]:
                    mask = np.asarray(
                        KeepLargestConnectedComponent(applied_labels=[1])(torch.as_tensor(mask[None]))[0], np.uint8
                    )
                key = str(rule["margin"])
                if key not in segmenters:
                    segmenters[key] = stage(
                        "segmenter", args.segmenter, args.config, {**common, "gate_margin_mm": rule["margin"]}
                    )
                segmenter = segmenters[key]
                if args.gates_only:
                    gate = dilate_mask(torch.as_tensor(mask[None]), margin_voxels(rule["margin"], spacing))[0].numpy()
                    labels, windows = np.zeros_like(truth), 0
                else:
                    segmenter.network.members[0].reset()
                    empty = (np.zeros_like(truth),) * 2
                    labels, gate = CascadeEngine(localizer, segmenter).segment(image, mask) if mask.any() else empty
                    windows = segmenter.network.members[0].windows
                results[rule["name"]].append({
                    "recall": region_recall(gate > 0, truth),
                    "gate_ratio": float((gate > 0).sum()) / max(1, int((truth > 0).sum())),
                    "scores": {row["class"]: row for row in score_case(labels, truth, spacing)},
                    "windows": windows,
                })
            if args.single_stage:
                single = segmenters.setdefault(
                    "single", stage("segmenter", args.single_stage, [*args.config, "single_stage"], common)
                )
                single.network.members[0].reset()
                labels, gate = CascadeEngine(None, single).segment(image, None)
                results["single stage"].append({
                    "recall": region_recall(gate > 0, truth),
                    "gate_ratio": float((gate > 0).sum()) / max(1, int((truth > 0).sum())),
                    "scores": {row["class"]: row for row in score_case(labels, truth, spacing)},
                    "windows": single.network.members[0].windows,
                })
            print(f"  {case['case']} done", flush=True)
    names = (*CLASS_NAMES.values(), "atria")
    print(
        f"\n{len(cases)} cases from "
        f"{args.data or f'phantoms seed {args.seed}, {args.shape} at {args.spacing} mm'}; configs {args.config}"
    )
    print(f"{'rule':<22} " + " ".join(f"{'recall ' + n[:8]:>15}" for n in names)
          + "  gate/atria  Dice wall RA LA mean  HD95 mm wall RA LA mean  windows")
    for name, rows in results.items():
        print(summarize(name, rows))


if __name__ == "__main__":
    main()
