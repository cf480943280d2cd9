"""Stage-2 cost: whole volume vs mask region, at overlap 0.5 and 0, and the sliding-window overhead.

On one full-size phantom (44 x 576 x 576 at 2.5 x 0.625 x 0.625 mm) with the segmenter network
(random weights: the cost does not depend on them), this prints for each variant the number of
windows evaluated, seconds, seconds per window and the ratio to the whole-volume pass, and the
sliding-window overhead: total time minus the time of the same number of bare forward passes.

    python bench/predict_speed.py                       # full network (slow on a CPU: ~40 s/window)
    python bench/predict_speed.py --width 0.25 --threads 2   # features / 4, for CPU-only machines

The mask is the phantom's labelled region dilated by a ball of radius 2 voxels, standing in for a
stage-1 prediction; the region is its bounding box plus the segmenter's ``crop_margin``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

from cascade.networks import segmenter_resenc_unet
from cascade.phantom import make_phantom
from cascade.transforms import dilate_mask

SEGMENTER_INFERENCE = Path(__file__).resolve().parents[1] / "bundles" / "atria_segmenter" / "configs" / "inference.json"


class CountingNetwork(torch.nn.Module):
    """Wraps a network and counts the windows it is called on."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.windows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        return self.network(x)


def mask_region(mask: torch.Tensor, margin: list[int]) -> tuple[slice, ...]:
    """Bounding box of a (X, Y, Z) mask plus ``margin`` voxels per axis, clipped to the volume."""
    nonzero = torch.nonzero(mask)
    low = (nonzero.min(0).values - torch.tensor(margin)).clamp_min(0)
    high = torch.minimum(nonzero.max(0).values + 1 + torch.tensor(margin), torch.tensor(mask.shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_inference(network: CountingNetwork, image: torch.Tensor, inferer: SlidingWindowInferer, device) -> tuple[int, float]:
    network.windows = 0
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        inferer(image, network)
    synchronize(device)
    return network.windows, time.perf_counter() - start


def time_forward(network: torch.nn.Module, patch: list[int], windows: int, device) -> float:
    """Seconds of ``windows`` bare forward passes on one patch each (after a warm-up pass)."""
    x = torch.randn(1, 1, *patch, device=device)
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        network(x)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(windows):
            network(x)
        synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0, help="multiply the segmenter's features (1 = the paper's)")
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.5, 0.0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = json.loads(SEGMENTER_INFERENCE.read_text())
    patch, margin = config["patch_size"], config["crop_margin"]

    image, label, _ = make_phantom(args.seed)
    image = torch.as_tensor(image, dtype=torch.float32)
    image = ((image - image.mean()) / image.std())[None, None].to(device)
    mask = dilate_mask(torch.as_tensor(label > 0)[None], radius=config["dilation_radius"])[0]
    region = mask_region(mask, margin)

    features = [max(4, int(round(f * args.width))) for f in config["features_per_stage"]]
    network = CountingNetwork(segmenter_resenc_unet(features_per_stage=features).to(device).eval())
    print(f"device {device} ({platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}); "
          f"segmenter features {features}; patch {patch}; volume {tuple(image.shape[2:])}; "
          f"mask region {tuple(s.stop - s.start for s in region)} (margin {margin})")
    rows = []
    for overlap in args.overlaps:
        inferer = SlidingWindowInferer(roi_size=patch, sw_batch_size=1, overlap=overlap, mode="gaussian")
        for name, view in (("whole volume", image), ("mask region", image[(slice(None), slice(None), *region)])):
            windows, seconds = time_inference(network, view, inferer, device)
            forward = time_forward(network.network, patch, windows, device)
            rows.append((overlap, name, windows, seconds, forward))
    print(f"{'overlap':>7} {'stage 2 over':<13} {'windows':>7} {'seconds':>9} {'s/window':>9} {'vs whole':>8} {'overhead':>9}")
    for overlap, name, windows, seconds, forward in rows:
        whole = next(r for r in rows if r[0] == overlap and r[1] == "whole volume")
        overhead = (seconds - forward) / forward
        print(f"{overlap:>7.2f} {name:<13} {windows:>7d} {seconds:>9.2f} {seconds / windows:>9.3f} "
              f"{whole[3] / seconds:>7.2f}x {overhead:>8.1%}")


if __name__ == "__main__":
    main()
