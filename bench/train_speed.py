"""Training throughput of a bundle: iterations per second, peak GPU memory, time waiting for data.

The trainer is the bundle's own: ``train.json`` (plus overlay files) parsed with MONAI's
ConfigParser, as ``python -m monai.bundle run training`` parses it, and its ``train#trainer`` run
for ``--iterations`` iterations (one epoch; no validation, no checkpoints: the configured handlers
are not attached, except the learning-rate schedule). Modes:

- ``config``: the bundle's loader as configured (``DataLoader`` with ``num_workers`` processes);
- ``no_cache_copy``: with ``bench/configs/no_cache_copy.json`` (no per-patch copy of the cache);
- ``gpu_augmentation``: ``no_cache_copy`` plus ``bench/configs/gpu_augmentation.json`` (volumes
  cached on the GPU, random transforms on GPU tensors, ``ThreadDataLoader`` without workers);
- ``preloaded``: one augmented batch, fetched before timing and fed every iteration: the speed of
  the network step alone, what no loader can beat.

Printed per mode: iterations per second over the iterations after ``--warmup`` (cuDNN autotuning,
worker start-up), the share of that time the trainer spent waiting for the next batch (ignite's
GET_BATCH events), and the peak GPU memory allocated. A loader is the bottleneck when its it/s is
well below ``preloaded`` and the waiting share is large. ``--json FILE`` appends one JSON line per
mode (``bench/gpu.sh`` builds its table from them).

    python bench/train_speed.py --stage segmenter --data PHANTOMS --modes config preloaded
    python bench/train_speed.py --stage localizer --data PHANTOMS --configs bundles/atria_localizer/configs/quick.json \\
        --iterations 4 --warmup 1                                    # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.utils import set_determinism

from cascade.bundles import STAGES, bundle_dir, read_stage_config

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCH = Path(__file__).resolve().parent
MODES = {
    "config": [],
    "no_cache_copy": ["configs/no_cache_copy.json"],
    "gpu_augmentation": ["configs/no_cache_copy.json", "configs/gpu_augmentation.json"],
    "preloaded": [],
}


def build(stage: str, mode: str, args: argparse.Namespace, scratch: Path) -> ConfigParser:
    overlays = [str(BENCH / c.format(stage=stage)) for c in MODES[mode]]
    overrides = {
        "ckpt_dir": str(scratch / "models"), "output_dir": str(scratch / "runs"),
        "dataset_dir": str(args.data), "fold": -1, "num_folds": 2, "num_epochs": 1, "iterations_per_epoch": args.iterations,
        "device": f"$torch.device('{args.device}')", "train#dataset#progress": False,
    }
    if args.num_workers is not None:
        overrides["num_workers"] = args.num_workers
    if stage == "segmenter":
        overrides["mask_from_label"] = True  # the dilated label stands in for stage-1 masks
    parser = read_stage_config(bundle_dir(stage), "train", [*args.configs, *overlays], overrides)
    parser.get_parsed_content("initialize")
    return parser


def run_mode(stage: str, mode: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        parser = build(stage, mode, args, Path(scratch))
        start = time.perf_counter()
        trainer = parser.get_parsed_content("train#trainer")
        setup_s = time.perf_counter() - start  # CacheDataset: the deterministic transforms of every case
        parser.get_parsed_content("train#handlers#1").attach(trainer)  # LrScheduleHandler
        if mode == "preloaded":
            batch = next(iter(trainer.data_loader))
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            trainer.data_loader = [batch] * args.iterations
        stamps, waits = [], []

        @trainer.on(Events.GET_BATCH_STARTED)
        def batch_requested(engine):
            engine.state.batch_requested = time.perf_counter()

        @trainer.on(Events.GET_BATCH_COMPLETED)
        def batch_received(engine):
            waits.append(time.perf_counter() - engine.state.batch_requested)

        @trainer.on(Events.ITERATION_COMPLETED)
        def iteration_done(engine):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer.run()
        output = trainer.state.output[0] if isinstance(trainer.state.output, list) else trainer.state.output
        timed = stamps[args.warmup :]
        seconds = timed[-1] - stamps[args.warmup - 1] if args.warmup else timed[-1] - start
        return {
            "stage": stage, "mode": mode, "iterations": len(timed),
            "it/s": len(timed) / seconds,
            "wait share": sum(waits[args.warmup :]) / seconds,
            "peak GiB": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
            "setup s": setup_s,
            "batch": int(parser.get_parsed_content("batch_size")),
            "workers": int(parser.get_parsed_content("train#dataloader").num_workers),
            "amp": bool(parser.get_parsed_content("amp")),
            "last loss": float(output["loss"]),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True, choices=list(STAGES))
    parser.add_argument("--data", type=Path, required=True, help="folder of cases with labels (e.g. from `cascade phantom`)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help="iterations left out of the timing")
    parser.add_argument("--configs", nargs="*", default=[], help="overlay configs layered over train.json first")
    parser.add_argument("--num_workers", type=int, help="override the config's num_workers")
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="append one JSON line per mode to this file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 <= args.warmup < args.iterations:
        parser.error("--warmup must be smaller than --iterations")
    set_determinism(seed=args.seed)
    failed = []
    for mode in args.modes:
        try:
            row = run_mode(args.stage, mode, args)
        except Exception as err:  # one failing mode should not cost the others' numbers
            print(f"{args.stage} {mode}: failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", flush=True)
            traceback.print_exc()
            failed.append(mode)
            continue
        print(f"{row['stage']} {row['mode']}: {row['it/s']:.2f} it/s over {row['iterations']} iterations "
              f"(batch {row['batch']}, {row['workers']} workers, amp {row['amp']}), waiting for data "
              f"{row['wait share']:.0%}, peak GPU {row['peak GiB']:.1f} GiB, setup {row['setup s']:.0f} s, "
              f"last loss {row['last loss']:.3f}", flush=True)
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(row) + "\n")
    if failed:
        raise SystemExit(f"failed modes: {' '.join(failed)}")


if __name__ == "__main__":
    main()
