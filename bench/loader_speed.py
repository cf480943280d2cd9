"""Training-loader throughput: patches per second per worker of each bundle's training pipeline.

Each bundle's ``train.json`` is parsed with MONAI's ConfigParser (plus overlay files, e.g.
``bench/gpu_augmentation.json``) and its two transform lists are run as training runs them:

- ``train#deterministic_transforms`` (loading, resampling, normalisation, ...) once per case: the
  one-off cost ``CacheDataset`` pays before the first epoch (seconds per case);
- ``train#random_transforms`` (the class-balanced crop from the cached class indices of
  ``train#sampling_transforms``, and every augmentation) on the
  cached output, once per patch, as a ``DataLoader`` worker runs them: in one process with one
  torch thread (``--threads``), which is what PyTorch gives each worker.

Printed, per bundle: seconds per case of the deterministic part; patches per second of the random
part (mean over ``--samples`` patches, cycling over the cases; the augmentations fire with their
configured probabilities, so their cost is averaged as in training); the workers needed to feed
``--iterations_per_s`` iterations per second at the config's ``batch_size`` (the paper trained at
~11 it/s at batch 2 on an RTX 4090); and the mean milliseconds per patch of each random transform.

With ``--device cuda`` the cached volumes are moved to the GPU at the end of the deterministic part
and the random transforms run on GPU tensors (the overlay ``bench/gpu_augmentation.json``, which
``bench/gpu.sh`` trains with): then "workers" is the number of such GPU pipelines, normally one
thread in the training process.

    python bench/loader_speed.py                                   # 3 full-size phantoms (44x576x576)
    python bench/loader_speed.py --device cuda --configs bench/gpu_augmentation.json
    python bench/loader_speed.py --data /data/MBAS --cases 8       # real data (image + label)
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from collections import defaultdict
from copy import deepcopy
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, RandomizableTrait, Transform
from monai.utils import set_determinism

from cascade.bundles import STAGES, bundle_dir, read_stage_config
from cascade.data import discover_cases
from cascade.phantom import write_phantoms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timed_network import synchronize  # noqa: E402

NO_CACHE_COPY = str(Path(__file__).resolve().parent / "configs" / "no_cache_copy.json")


def training_config(
    stage: str, data: Path, device: torch.device, configs: list[str], no_cache_copy: bool
) -> ConfigParser:
    overrides = {"dataset_dir": str(data), "fold": -1, "device": device}
    if stage == "segmenter":
        overrides["mask_from_label"] = True  # the dilated label stands in for stage-1 masks
    return read_stage_config(
        bundle_dir(stage), "train", [*([NO_CACHE_COPY] if no_cache_copy else []), *configs], overrides
    )


def transform_names(transforms: list) -> list[str]:
    """Class names, numbered where a class repeats (``RandFlipd``, ``RandFlipd #2``, ...)."""
    names, seen = [], defaultdict(int)
    for transform in transforms:
        name = type(transform).__name__
        seen[name] += 1
        names.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return names


def measure(stage: str, items: list[dict], args: argparse.Namespace, device: torch.device) -> dict:
    parser = training_config(stage, args.data, device, args.configs, args.no_cache_copy)
    pipeline = parser.get_parsed_content("train#preprocessing")
    # CacheDataset caches up to the first random transform and deep-copies the cached item per patch.
    first_random = pipeline.get_index_of_first(
        lambda transform: isinstance(transform, RandomizableTrait) or not isinstance(transform, Transform)
    )
    cached_part, random_part = pipeline.transforms[:first_random], pipeline.transforms[first_random:]
    cached, case_seconds = [], []
    for item in items:
        synchronize(device)
        start = time.perf_counter()
        cached.append(Compose(cached_part)(dict(item)))
        synchronize(device)
        case_seconds.append(time.perf_counter() - start)
    for transform in random_part:
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=args.seed)
    names, steps = transform_names(random_part), list(random_part)
    if parser.get("train#dataset#copy_cache", True):
        names, steps = ["cache copy (CacheDataset)", *names], [deepcopy, *steps]
    seconds: dict[str, float] = defaultdict(float)
    for sample in range(args.warmup + args.samples):
        data = cached[sample % len(cached)]
        for name, step in zip(names, steps):
            synchronize(device)
            start = time.perf_counter()
            data = step(data)
            if isinstance(data, list):  # croppers return num_samples patches
                data = data[0]
            synchronize(device)
            if sample >= args.warmup:
                seconds[name] += time.perf_counter() - start
    batch_size = int(parser.get_parsed_content("batch_size"))
    patches_per_s = args.samples / sum(seconds.values())
    return {
        "stage": stage, "cached shape": tuple(cached[0]["image"].shape[1:]), "patch": tuple(data["image"].shape[1:]),
        "cached part": [type(t).__name__ for t in cached_part], "case s": sum(case_seconds) / len(case_seconds),
        "patches/s": patches_per_s, "batch": batch_size,
        "workers": math.ceil(args.iterations_per_s * batch_size / patches_per_s),
        "per transform ms": {n: 1000 * s / args.samples for n, s in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder of cases with labels (default: full-size phantoms)")
    parser.add_argument("--cases", type=int, default=3, help="cases to use (phantoms written when --data is not given)")
    parser.add_argument("--samples", type=int, default=40, help="patches timed per bundle")
    parser.add_argument("--warmup", type=int, default=2, help="untimed patches first")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--configs", nargs="*", default=[], help="overlay configs layered over each train.json")
    parser.add_argument("--no_cache_copy", action="store_true",
                        help="layer bench/configs/no_cache_copy.json "
                             "(CacheDataset hands out its cached volumes uncopied)")
    parser.add_argument("--device", default="cpu", help="where the cached volumes and random transforms live")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker has 1)")
    parser.add_argument("--iterations_per_s", type=float, default=11.0, help="target (the paper: ~11 it/s at batch 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_determinism(seed=args.seed)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device {device} ({name}); torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"overlays {(['no_cache_copy.json'] if args.no_cache_copy else []) + args.configs or 'none'}")
    with tempfile.TemporaryDirectory() as scratch:
        if args.data is None:
            args.data = Path(scratch)
            start = time.perf_counter()
            write_phantoms(args.data, cases=args.cases, seed=args.seed)
            print(f"wrote {args.cases} full-size phantoms (44 x 576 x 576 at 2.5 x 0.625 x 0.625 mm) "
                  f"in {time.perf_counter() - start:.0f} s")
        items = [
            {"image": c["image"], "label": c["label"]} for c in discover_cases(args.data) if c["image"] and c["label"]
        ]
        items = items[: args.cases]
        rows = [measure(stage, items, args, device) for stage in args.stages]

    print()
    for row in rows:
        print(f"{row['stage']}: cached part {', '.join(row['cached part'])}")
    print(f"\n| bundle | cached volume | patch | deterministic s/case (once) | random part patches/s per worker "
          f"| workers for {args.iterations_per_s:g} it/s at batch {rows[0]['batch']} |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {' x '.join(map(str, row['cached shape']))} | {' x '.join(map(str, row['patch']))} "
              f"| {row['case s']:.2f} | {row['patches/s']:.2f} | {row['workers']} |")
    names = list(dict.fromkeys(n for row in rows for n in row["per transform ms"]))
    print(f"\n| random transform, ms per patch | {' | '.join(r['stage'] for r in rows)} |")
    print("|---|" + "---|" * len(rows))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{r['per transform ms'].get(n, float('nan')):.1f}" for r in rows) + " |")


if __name__ == "__main__":
    main()
