"""What measuring the uncertainty costs: the cascade per case with the segmenter's votes off and on.

Builds the engine ``cascade predict`` builds from the options given, then predicts each case
alternately without votes (the blended logits only) and with them (the logits plus the vote shares,
the disagreement map and the case uncertainty), ``--repeats`` times, and prints seconds per case
for each and their ratio. ``--map`` also brings the map to the input grid (``--save_uncertainty``).
The label maps of both must be identical (checked).

    python bench/uncertainty_cost.py DATA --cases 3 --pretrained la2018 --folds 0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cascade.data import image_datalist
from cascade.engine import CascadeEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pretrained", default="la2018")
    parser.add_argument("--folds", default=None)
    parser.add_argument("--tta", default=None, choices=("true", "false"))
    parser.add_argument("--map", action="store_true", help="also bring the map to the input grid")
    args = parser.parse_args()

    settings = {"tta": None if args.tta is None else args.tta == "true"}
    engine = CascadeEngine.from_options(pretrained=args.pretrained, folds=args.folds, device="cpu", **settings)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; segmenter passes per window: {engine.passes}")
    images = [item["image"] for item in image_datalist(args.data)][: args.cases]
    loaded = [engine.read(image) for image in images]
    seconds = {False: [], True: []}
    for _ in range(args.repeats):
        for (image, source), path in zip(loaded, images):
            labels = {}
            for votes in (False, True):
                engine.segmenter.network.votes = votes
                start = time.perf_counter()
                result = engine.predict_loaded(image, source, path, disagreement_map=votes and args.map)
                seconds[votes].append(time.perf_counter() - start)
                labels[votes] = result.labels
            if not np.array_equal(labels[False], labels[True]):
                raise SystemExit(f"{path}: the votes changed the label map")
    off, on = np.mean(seconds[False]), np.mean(seconds[True])
    print(f"{len(images)} cases x {args.repeats}: without votes {off:.2f} s per case, with votes {on:.2f} s "
          f"({'with' if args.map else 'without'} the map on the input grid); ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
