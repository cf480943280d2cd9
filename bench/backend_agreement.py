"""Label maps of each inference runtime against torch fp32, on the demo weights and unseen phantoms.

The rule for the default precision (issue 12): bf16 only where its label maps agree with fp32 at
Dice >= 0.99 per class. For every runtime setting the whole cascade (``cascade predict``'s engine,
the shipped demo weights) runs on ``--cases`` phantoms the demo weights never saw (their training
grid, 24 x 160 x 160 at 2.5 x 1.25 x 1.25 mm, seed ``--seed``), and its stage-1 masks and label
maps are compared with those of torch fp32: Dice per class, mean and minimum over cases (a class
absent from both maps counts as 1). Settings: ``torch/fp32`` (the reference), ``openvino/fp32``,
``openvino/bf16``, ``openvino/bf16+fp32`` (bf16 in stage 1 only), ``openvino/int8`` (NNCF
post-training quantization, calibrated on ``--calibration`` or the default phantoms) and the mixes
``openvino/int8+bf16`` and ``openvino/bf16+int8``. The int8 rule is the same: Dice >= 0.99 per class.

    python bench/backend_agreement.py --cases 8
    python bench/backend_agreement.py --pretrained la2018 --data SCANS --settings openvino/int8   # your scans
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from cascade.data import image_datalist
from cascade.engine import CascadeEngine
from cascade.labels import CLASS_NAMES
from cascade.metrics import dice
from cascade.phantom import write_phantoms

SETTINGS = {  # name -> (backend, localizer precision, segmenter precision)
    "torch/fp32": ("torch", "fp32", "fp32"),
    "openvino/fp32": ("openvino", "fp32", "fp32"),
    "openvino/bf16": ("openvino", "bf16", "bf16"),
    "openvino/bf16+fp32": ("openvino", "bf16", "fp32"),
    "openvino/int8": ("openvino", "int8", "int8"),
    "openvino/int8+bf16": ("openvino", "int8", "bf16"),
    "openvino/bf16+int8": ("openvino", "bf16", "int8"),
}


def class_dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    x, y = a == value, b == value
    return 1.0 if not (x.any() or y.any()) else float(dice(x, y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7000, help="phantom seed (the demo weights were trained on seed 0)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--overlap", type=float, help="both stages' overlap (default: the configs')")
    parser.add_argument("--pretrained", default="demo", help="shipped weights (demo or la2018)")
    parser.add_argument("--data", type=Path, help="images to compare on (default: generated phantoms)")
    parser.add_argument(
        "--calibration", type=Path, help="labelled folder calibrating int8 (default: the engine's phantoms)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.data is None:
            write_phantoms(scratch, cases=args.cases, seed=args.seed, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
        listed = image_datalist(args.data or scratch, report=lambda line: None)
        images = [Path(item["image"]) for item in listed][: args.cases]
        results = {}
        for name in ["torch/fp32", *(s for s in args.settings if s != "torch/fp32")]:
            backend, localizer, segmenter = SETTINGS[name]
            engine = CascadeEngine.from_options(
                pretrained=args.pretrained, device="cpu", overlap=args.overlap, backend=backend,
                precision={"localizer": localizer, "segmenter": segmenter}, calibration=args.calibration,
            )
            results[name] = [engine.predict_image(image) for image in images]
    reference = results["torch/fp32"]
    classes = list(CLASS_NAMES.items())
    header = " | ".join(["stage-1 mask", *(name for _, name in classes)])
    source = args.data or f"unseen phantoms (seed {args.seed})"
    print(f"{args.pretrained} weights, {len(images)} images of {source}; Dice vs torch/fp32, mean (min) over cases\n")
    print(f"| setting | {header} |")
    print("|---|" + "---|" * (len(classes) + 1))
    for name, cases in results.items():
        if name == "torch/fp32":
            continue
        columns = [[class_dice(c.mask, r.mask, 1) for c, r in zip(cases, reference)]]
        columns += [[class_dice(c.labels, r.labels, value) for c, r in zip(cases, reference)] for value, _ in classes]
        cells = " | ".join(f"{np.mean(col):.4f} ({np.min(col):.4f})" for col in columns)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
