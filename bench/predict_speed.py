"""Stage-2 cost: whole volume vs mask region, MONAI's inferer vs nnU-Net's, and seconds per case.

Part 1, sliding window. One full-size phantom (44 x 576 x 576 at 2.5 x 0.625 x 0.625 mm), the
segmenter network with random weights (the cost does not depend on them), for each overlap: stage 2
over the whole volume and over the mask region, with

- ``monai``: the inferer of the segmenter's inference.json, parsed with MONAI's ConfigParser as
  ``cascade predict`` parses it (``--sw_batch_sizes`` overrides its ``sw_batch_size``);
- ``nnunet``: nnU-Net v2's ``nnUNetPredictor.predict_sliding_window_return_logits`` (Gaussian
  weighting, ``tile_step_size = 1 - overlap``, no mirroring), when ``nnunetv2`` is importable
  (``pip install nnunetv2``; it is not a dependency of this project).

Printed: windows, seconds, seconds per window, the time inside the network, the sliding-window
overhead (total minus network time, as a fraction of network time) and the speed-up over the
whole-volume pass of the same inferer.

Part 2, the cascade per case (``--cascade``). Both stages through the engine's ``StagePredictor``
(the code ``cascade predict`` runs: preprocessing, inference, postprocessing of each bundle's
inference.json) with random weights (seeded, so exported networks are found in the backends' cache
on later runs) or shipped ones (``--pretrained demo|la2018``, with their overlays), on the phantom
or on ``--image`` (with its ``--label``); stage 2 is gated by the case's own label (dilated), which
stands in for a trained localizer's mask. For each overlap (one value, or a per-stage pair
``LOCALIZER,SEGMENTER``), stage-2 region (``--regions``), mirroring TTA off (and on with ``--tta``)
and runtime (``--backends``, side by side, e.g. ``openvino:int8``): per stage the build seconds (an
OpenVINO export or int8 quantization included when the network is not cached yet; not part of the
case), windows, the seconds of preprocessing, inference and postprocessing, and the agreement of its
output (stage 1: the mask; stage 2: each label) with the first runtime listed at the same settings,
as Dice per label value; per case the total, the speed-up over the first runtime listed, and the
peak resident memory of the process while that setting was built and ran (Linux ``VmHWM``, reset
per setting). Agreement means something with trained weights only (``--pretrained``).

    python bench/predict_speed.py                               # full networks (CPU: ~40 s/window)
    python bench/predict_speed.py --width 0.25 --threads 2      # features / 4, for CPU-only machines
    python bench/predict_speed.py --cascade --tta               # on a GPU: the whole-cascade table
    python bench/predict_speed.py --cascade --no_windows --regions "mask region" \\
        --backends torch:fp32 openvino:fp32 openvino:bf16       # CPU runtimes side by side
    python bench/predict_speed.py --cascade --no_windows --regions "mask region" --pretrained la2018 \\
        --image SCAN --label LABEL --overlaps 0.5 0,0.5 --backends openvino:fp32 openvino:int8

The mask region in part 1 is cut as the segmenter's inference.json cuts it: the phantom's label
dilated by ``dilation_radius``, its bounding box plus ``crop_margin``, grown to at least one patch
inside the volume.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from cascade.labels import LABEL_VALUES
from cascade.phantom import DEFAULT_SHAPE, DEFAULT_SPACING, case_seed, make_phantom, write_phantoms
from cascade.bundles import STAGES, bundle_dir, read_stage_config, stage_weights
from cascade.data import labelled_cases
from cascade.engine import StagePredictor
from cascade.metrics import dice
from cascade.runtime import StageRuntime
from cascade.settings import as_overlap
from cascade.transforms import CropForegroundMinSize, dilate_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timed_network import TimedNetwork, synchronize  # noqa: E402



def stage_config(stage: str, overrides: dict, configs: list[str] = ()) -> ConfigParser:
    parser = read_stage_config(bundle_dir(stage), "inference", configs, overrides)
    return parser


def scaled_features(parser: ConfigParser, width: float) -> list[int]:
    return [max(4, int(round(f * width))) for f in parser.get_parsed_content("features_per_stage")]


def mask_region(mask: torch.Tensor, margin: list[int], min_size: list[int]) -> tuple[slice, ...]:
    """The segmenter's crop of an (X, Y, Z) mask: bounding box + ``margin``, at least ``min_size``."""
    crop = CropForegroundMinSize(min_size, margin=margin, allow_smaller=True)
    start, end = crop.compute_bounding_box(mask[None])
    return tuple(slice(int(a), int(b)) for a, b in zip(start, end))


def monai_inferer(overlap: float, sw_batch_size: int):
    config = stage_config("segmenter", {"overlap": overlap, "sw_batch_size": sw_batch_size})
    inferer = config.get_parsed_content("inferer")
    return lambda image, network: inferer(image, network)


def nnunet_inferer(overlap: float, patch: list[int], classes: int, device: torch.device):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=1 - overlap, use_gaussian=True, use_mirroring=False,
        perform_everything_on_device=device.type == "cuda", device=device, verbose=False, allow_tqdm=False,
    )
    # The parts of a trained-model setup that the sliding-window prediction reads.
    predictor.configuration_manager = SimpleNamespace(patch_size=patch)
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=classes)
    predictor.allowed_mirroring_axes = (0, 1, 2)

    def infer(image: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        predictor.network = network
        return predictor.predict_sliding_window_return_logits(image[0])

    return infer


def sliding_window_table(args: argparse.Namespace, device: torch.device) -> None:
    features = scaled_features(stage_config("segmenter", {}), args.width)
    config = stage_config("segmenter", {"features_per_stage": features})
    patch, margin = config.get_parsed_content("patch_size"), config.get_parsed_content("crop_margin")
    image, label, _ = make_phantom(case_seed(args.seed, 1))  # the case part 2 writes
    image = torch.as_tensor(image, dtype=torch.float32)
    image = ((image - image.mean()) / image.std())[None, None].to(device)
    mask = dilate_mask(torch.as_tensor(label > 0)[None], radius=config.get_parsed_content("dilation_radius"))[0]
    region = mask_region(mask, margin, patch)
    network = TimedNetwork(config.get_parsed_content("network_def").to(device).eval())
    print(f"segmenter features {features}; patch {patch}; volume {tuple(image.shape[2:])}; "
          f"mask region {tuple(s.stop - s.start for s in region)} (crop_margin {margin})")

    inferers = {}
    for overlap in [float(o) for o in args.overlaps if "," not in o]:
        if "monai" in args.inferers:
            for batch in args.sw_batch_sizes or [config.get_parsed_content("sw_batch_size")]:
                inferers[overlap, f"monai b{batch}"] = monai_inferer(overlap, batch)
        if "nnunet" in args.inferers:
            try:
                inferers[overlap, "nnunet"] = nnunet_inferer(overlap, patch, len(LABEL_VALUES), device)
            except ImportError:
                print("nnunet: skipped, nnunetv2 is not importable")
    views = {"whole volume": image, "mask region": image[(slice(None), slice(None), *region)]}
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        network(torch.zeros(1, 1, *patch, device=device))  # warm-up
        rows = []
        for (overlap, inferer_name), infer in inferers.items():
            for view_name in args.regions:
                network.reset()
                synchronize(device)
                start = time.perf_counter()
                infer(views[view_name], network)
                synchronize(device)
                rows.append(
                    (overlap, inferer_name, view_name, network.windows, time.perf_counter() - start, network.seconds)
                )

    print(f"\n{'overlap':>7} {'inferer':<9} {'stage 2 over':<13} {'windows':>7} {'seconds':>9} {'s/window':>9} "
          f"{'network s':>9} {'overhead':>8} {'vs whole':>8}")
    for overlap, inferer_name, view_name, windows, seconds, network_seconds in rows:
        whole = [r[4] for r in rows if r[:3] == (overlap, inferer_name, "whole volume")]
        speedup = f"{whole[0] / seconds:>7.2f}x" if whole else f"{'':>8}"
        overhead = (seconds - network_seconds) / network_seconds
        print(f"{overlap:>7.2f} {inferer_name:<9} {view_name:<13} {windows:>7d} {seconds:>9.2f} "
              f"{seconds / windows:>9.3f} {network_seconds:>9.2f} {overhead:>8.1%} {speedup}")


def random_weights(stage: str, features: list[int], path: Path, configs: list[str]) -> Path:
    torch.manual_seed(0)  # the same weights every run: exported networks are found in the cache again
    network = stage_config(stage, {"features_per_stage": features}, configs).get_parsed_content("network_def")
    torch.save(network.state_dict(), path)
    return path


def reset_peak_rss() -> None:
    """Start a new peak of the resident set size (Linux; elsewhere the process peak stays)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_gib() -> float:
    try:
        status = Path("/proc/self/status").read_text()
        peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        return int(peak.split()[1]) / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cascade_table(args: argparse.Namespace, device: torch.device) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        case = scratch / "phantom" / "MBAS_001"
        write_phantoms(case.parent, cases=1, seed=args.seed, shape=tuple(args.shape), spacing=tuple(args.spacing))
        item = {"image": str(case / "MBAS_001_gt.nii.gz"), "label": str(case / "MBAS_001_label.nii.gz")}
        if args.image:
            item = {"image": str(args.image), "label": str(args.label)}
        if args.pretrained:
            found = {s: stage_weights(s, bundle_dir(s), pretrained=args.pretrained) for s in STAGES}
            weights = {s: found[s].checkpoints for s in STAGES}
            configs = {s: [*found[s].configs, *args.configs] for s in STAGES}
            features = {s: None for s in STAGES}
        else:
            features = {s: scaled_features(stage_config(s, {}, args.configs), args.width) for s in STAGES}
            weights = {s: [random_weights(s, features[s], scratch / f"{s}.pt", args.configs)] for s in STAGES}
            configs = {s: args.configs for s in STAGES}
        print(f"\ncascade on {nib.load(item['image']).shape} ({'--image' if args.image else 'phantom'}); "
              f"{f'{args.pretrained} weights' if args.pretrained else f'features {features}; random weights'}, "
              "stage 2 gated by the case's label; overlays "
              f"{({s: [Path(c).stem for c in configs[s]] for s in STAGES})}")
        print(f"{'overlap':>7} {'stage 2 over':<13} {'TTA':<4} {'backend':<14} {'stage':<10} {'build s':>7} "
              f"{'windows':>7} {'prep s':>7} {'infer s':>8} {'post s':>7} {'total s':>8} {'vs ref':>8} "
              f"{'peak RSS':>8}  Dice vs ref (label=Dice)")
        if device.type == "cuda":  # cuDNN autotunes each shape on its first call: not part of a case
            last_overlap, last_region, reference = as_overlap(args.overlaps[-1]), args.regions[-1], args.backends[0]
            cascade_row(args, device, item, weights, features, configs, last_overlap, last_region, False, reference)
        rows = []
        for overlap in map(as_overlap, args.overlaps):
            for region in args.regions:
                for tta in (False, True) if args.tta else (False,):
                    for setting in args.backends:
                        row = cascade_row(args, device, item, weights, features, configs, overlap, region, tta, setting)
                        rows.append(row)
                        reference = next(r for r in rows if r["setting"] == args.backends[0] and
                                         (r["overlap"], r["region"], r["tta"]) == (row["overlap"], region, tta))
                        ratio = reference["seconds"] / row["seconds"]
                        for stage, steps in row["stages"].items():
                            ours, theirs = row["labels"][stage], reference["labels"][stage]
                            values = sorted((set(np.unique(ours)) | set(np.unique(theirs))) - {0})
                            steps["dice vs reference"] = {int(v): class_dice(ours, theirs, v) for v in values}
                            print(f"{row['overlap'][stage]:>7.2f} {region:<13} {'on' if tta else 'off':<4} "
                                  f"{setting:<14} {stage:<10} {steps['build']:>7.1f} {steps['windows']:>7d} "
                                  f"{steps['preprocessing']:>7.2f} {steps['inference']:>8.2f} "
                                  f"{steps['postprocessing']:>7.2f} {steps['total']:>8.2f} "
                                  f"{'':>8} {'':>8}  "
                                  + " ".join(f"{v}={d:.4f}" for v, d in steps["dice vs reference"].items()))
                        print(f"{'':>7} {'':<13} {'':<4} {setting:<14} {'cascade':<10} {'':>7} {'':>7} {'':>7} "
                              f"{'':>8} {'':>7} {row['seconds']:>8.2f} {ratio:>7.2f}x {row['peak RSS GiB']:>6.2f} G",
                              flush=True)
                        if args.json:
                            with args.json.open("a") as f:
                                record = {k: v for k, v in row.items() if k != "labels"}
                                record |= {"width": args.width, "speed-up": ratio}
                                f.write(json.dumps(record, default=str) + "\n")


def class_dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    """Dice of one label value between two maps (1 when both lack it)."""
    x, y = a == value, b == value
    return 1.0 if not (x.any() or y.any()) else float(dice(x, y))


def cascade_row(args, device, item, weights, features, configs, overlap, region, tta, setting) -> dict:
    """Both stages on the case with one runtime setting (``backend:precision``); ``overlap`` is one
    value or stage -> value. The row keeps each stage's label map (``labels``) for the agreement."""
    backend, precision = setting.split(":")
    overlap = overlap if isinstance(overlap, dict) else dict.fromkeys(STAGES, overlap)
    gc.collect()
    reset_peak_rss()
    stages, labels = {}, {}
    for stage in STAGES:
        overrides = {"overlap": overlap[stage], "num_workers": 0, "tta": tta}
        if features[stage] is not None:
            overrides["features_per_stage"] = features[stage]
        if stage == "segmenter":
            overrides["mask_region"] = region == "mask region"
        start = time.perf_counter()
        calibration = labelled_cases(args.calibration) if args.calibration and precision == "int8" else None
        runtime = StageRuntime(device, backend, precision, tuple(calibration) if calibration else None)
        predictor = StagePredictor(bundle_dir(stage), weights[stage], overrides, configs[stage], runtime)
        build = time.perf_counter() - start  # with the export when the network is not in the cache yet
        predictor.network.members = [TimedNetwork(n) for n in predictor.network.members]
        result = predictor(
            predictor.load({"image": item["image"], **({"mask": item["label"]} if stage == "segmenter" else {})})
        )
        labels[stage] = result["pred"][0].numpy().astype(np.uint8)
        stages[stage] = {**predictor.seconds, "total": sum(predictor.seconds.values()), "build": build,
                         "windows": predictor.network.members[0].windows}
        del predictor
    return {"overlap": overlap, "region": region, "mask region": region == "mask region", "tta": tta,
            "setting": setting, "seconds": sum(s["total"] for s in stages.values()), "stages": stages,
            "peak RSS GiB": peak_rss_gib(), "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0, help="multiply both networks' features (1 = the paper's)")
    parser.add_argument("--overlaps", nargs="+", default=["0.5", "0"],
                        help="overlaps; part 2 also takes per-stage pairs LOCALIZER,SEGMENTER (e.g. 0,0.5)")
    parser.add_argument("--inferers", nargs="+", default=["monai", "nnunet"], choices=["monai", "nnunet"])
    parser.add_argument(
        "--regions", nargs="+", default=["whole volume", "mask region"], choices=["whole volume", "mask region"]
    )
    parser.add_argument(
        "--sw_batch_sizes", type=int, nargs="+", help="MONAI sw_batch_size values (default: the config's)"
    )
    parser.add_argument("--cascade", action="store_true", help="also time the whole cascade per case (part 2)")
    parser.add_argument("--tta", action="store_true", help="part 2 also with mirroring TTA (8x the windows)")
    parser.add_argument("--no_windows", action="store_true", help="skip part 1")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed")
    parser.add_argument("--json", type=Path, help="part 2: append one JSON line per cascade setting to this file")
    parser.add_argument("--backends", nargs="+", default=["torch:fp32"], metavar="BACKEND:PRECISION",
                        help="part 2: runtimes side by side, the first is the reference "
                             "(e.g. torch:fp32 openvino:fp32 openvino:bf16)")
    parser.add_argument(
        "--configs", nargs="*", default=[], help="part 2: bundle overlays (e.g. demo: the demo grids, for a smoke run)"
    )
    parser.add_argument(
        "--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), help="part 2: phantom grid (Z, Y, X)"
    )
    parser.add_argument(
        "--pretrained", help="part 2: shipped weights (demo, la2018) instead of random ones, with their overlays"
    )
    parser.add_argument(
        "--image", type=Path, help="part 2: a case to run instead of the phantom (with --label, which gates stage 2)"
    )
    parser.add_argument("--label", type=Path, help="part 2: the label map of --image")
    parser.add_argument(
        "--calibration", type=Path, help="part 2: labelled folder calibrating int8 (default: the engine's phantoms)"
    )
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=list(DEFAULT_SPACING), help="part 2: phantom spacing (Z, Y, X) mm"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as cascade predict and nnU-Net's predictor set it on CUDA
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"device {device} ({name}); torch {torch.__version__}, CPU "
        f"threads {torch.get_num_threads()}; width {args.width}"
    )
    if not args.no_windows:
        sliding_window_table(args, device)
    if args.cascade:
        cascade_table(args, device)


if __name__ == "__main__":
    main()
