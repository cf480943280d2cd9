"""Seconds to measure one full-size case (`cascade measure`): 44 x 640 x 640 voxels at 2.5 x 0.625 x 0.625 mm.

A phantom of that grid is written by :func:`cascade.phantom.write_phantoms` (or ``--data`` names a
folder of cases with images, e.g. an MBAS folder), then for each case:

- ``read``: the label map and the image, checked (:func:`cascade.io.load_nifti`);
- ``measure``: :func:`cascade.measure.measure_case`: volumes, both cavities' surfaces and
  sphericity, the wall's surface, side and thickness of every wall voxel, blood pool and IIR, the
  IIR on the surfaces' vertices;
- ``png``: :func:`cascade.measure_png.save_measures_png`;
- ``surfaces``: the three PLY files (:func:`cascade.surfaces.write_surface`);
- ``end to end``: :func:`cascade.measure.measure_cases` on the case, everything above plus the CSV.

Run with the threads the machine gives (numpy and scipy's distance transforms are single-threaded):

    python bench/measure_speed.py
    python bench/measure_speed.py --data /data/MBAS --cases 3
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from cascade.data import scan_folder
from cascade.io import load_nifti
from cascade.measure import measure_case, measure_cases
from cascade.measure_png import save_measures_png
from cascade.phantom import write_phantoms
from cascade.surfaces import write_surface

THRESHOLDS = (1.2, 1.32)


def time_case(case: dict, out: Path) -> dict[str, float]:
    seconds = {}
    start = time.perf_counter()
    label = load_nifti(case["label"], label=True)
    image = load_nifti(case["image"])
    labels, intensities = np.asanyarray(label.dataobj).astype(np.uint8), np.asanyarray(image.dataobj)
    seconds["read"] = time.perf_counter() - start
    start = time.perf_counter()
    measures = measure_case(labels, label.affine, intensities, wall_surface=True, name=case["label"])
    seconds["measure"] = time.perf_counter() - start
    start = time.perf_counter()
    save_measures_png(out / f"{case['case']}.png", case["case"], measures, THRESHOLDS)
    seconds["png"] = time.perf_counter() - start
    start = time.perf_counter()
    for structure, surface in measures.surfaces.items():
        write_surface(surface, out / f"{case['case']}_{structure}.ply")
    seconds["surfaces"] = time.perf_counter() - start
    start = time.perf_counter()
    measure_cases([case], out / "end_to_end", surfaces="ply", overwrite=True, report=lambda line: None)
    seconds["end to end"] = time.perf_counter() - start
    faces = {name: len(surface.faces) for name, surface in measures.surfaces.items()}
    print(
        f"{case['case']}: shape {labels.shape}, {int((labels == 1).sum())} wall voxels, faces {faces}, "
        f"{len(measures.warnings)} warning(s)"
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder of cases with images and labels (default: a phantom)")
    parser.add_argument("--cases", type=int, default=1, help="cases to time")
    parser.add_argument("--shape", type=int, nargs=3, default=(44, 640, 640), help="phantom grid (Z Y X)")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="measure-speed-") as folder:
        data = args.data
        if data is None:
            data = Path(folder) / "data"
            start = time.perf_counter()
            write_phantoms(data, cases=args.cases, seed=5, shape=tuple(args.shape), spacing=(2.5, 0.625, 0.625))
            print(
                f"phantom(s) {tuple(args.shape)} at 2.5 x 0.625 x 0.625 mm written in "
                f"{time.perf_counter() - start:.1f} s"
            )
        cases = [c for c in scan_folder(data).cases if c["image"] and c["label"]][: args.cases]
        timings = [time_case(case, Path(folder)) for case in cases]
    for step in timings[0]:
        values = [t[step] for t in timings]
        print(f"{step:>11}: {np.mean(values):6.2f} s per case (min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
