"""Stage-1 postprocessing: MONAI's full inverse then threshold, against the box-limited inverse.

The localizer's postprocessing turns its low-resolution foreground probability into the mask on
the input grid. ``Invertd`` + ``AsDiscreted`` resample the whole probability back, then threshold;
``cascade.transforms.ThresholdOnInputGridd`` (the bundle's default) resamples only the box where
the threshold can be reached. Both are run on the same network output, side by side, with the
largest-component step after them; the script prints the median seconds of each route, their
ratio, the candidate box's share of the scan and whether the masks are equal voxel for voxel.

    python bench/stage1_postprocessing.py                          # a full-size phantom, demo and la2018 weights
    python bench/stage1_postprocessing.py --images a.nii.gz b.nii.gz --pretrained la2018
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from cascade.engine import CascadeEngine
from cascade.phantom import make_phantom
from cascade.transforms import ThresholdOnInputGridd


def routes(engine: CascadeEngine) -> dict[str, Compose]:
    """The localizer's postprocessing as configured (box route) and with the full inverse instead."""
    transforms = engine.localizer.postprocessing.transforms
    full = [t.full_inverse if isinstance(t, ThresholdOnInputGridd) else t for t in transforms]
    return {"Invertd + AsDiscreted": Compose(full), "ThresholdOnInputGridd": Compose(list(transforms))}


def network_output(engine: CascadeEngine, image_path: Path) -> dict:
    """The preprocessed case with the localizer's logits as ``pred`` (what its postprocessing receives)."""
    localizer = engine.localizer
    image, _ = engine.read(image_path)
    data = localizer.preprocessing({"image": image})
    with torch.no_grad():
        logits = localizer.inferer(data["image"].as_tensor()[None].to(localizer.device), localizer.network)
    data["pred"] = MetaTensor(
        logits[0].float().cpu(), meta=data["image"].meta, applied_operations=list(data["image"].applied_operations)
    )
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="*", type=Path, help="NIfTI scans (default: one generated full-size phantom)")
    parser.add_argument("--pretrained", nargs="+", default=["demo", "la2018"], help="shipped weights to run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        images = args.images
        if not images:
            image, _, affine = make_phantom(7)  # the generator's default 44 x 576 x 576 grid at 0.625 x 0.625 x 2.5 mm
            images = [Path(folder) / "phantom.nii.gz"]
            nib.save(nib.Nifti1Image(image, affine), images[0])
        print(
            f"{'weights':8} {'image':28} {'shape':14} {'route':24} "
            f"{'median s':>9} {'ratio':>6} {'mask voxels':>11} {'equal':>5}"
        )
        for weights in args.pretrained:
            engine = CascadeEngine.from_options(pretrained=weights, stages=("localizer",), device="cpu", overlap=0)
            for path in images:
                data = network_output(engine, path)
                seconds, masks = {}, {}
                for name, route in routes(engine).items():
                    times = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        masks[name] = route({**data, "pred": data["pred"].clone()})["pred"]
                        times.append(time.perf_counter() - start)
                    seconds[name] = statistics.median(times)
                full, box = seconds.values()
                equal = torch.equal(*(m.as_tensor() for m in masks.values()))
                shape = "x".join(str(n) for n in masks["ThresholdOnInputGridd"].shape[1:])
                for name, value in seconds.items():
                    print(f"{weights:8} {path.name[:28]:28} {shape:14} {name:24} {value:9.3f} {full / value:6.2f} "
                          f"{int(masks[name].sum()):11d} {str(equal):>5}")


if __name__ == "__main__":
    main()
