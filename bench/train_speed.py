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
  the network step alone, what no loader can beat;
- variants of ``config``: ``contiguous`` and ``channels_last`` (the configs' ``memory_format``:
  network and batches in PyTorch's default or channels-last-3d layout; the la2018 recipe trains
  channels-last), ``loader_worker`` (one loader process augments the next batch while the network
  runs; its augmentations draw from another random stream), ``compile`` (``torch.compile`` of the
  network in place, batches as plain tensors; its first iterations are compilation, so give a
  long ``--warmup``) and ``channels_last_compile``.

Printed per mode: iterations per second over the iterations after ``--warmup`` (cuDNN autotuning,
worker start-up), the share of that time the trainer spent waiting for the next batch (ignite's
GET_BATCH events), the peak GPU memory allocated, and where an iteration's time goes: milliseconds
waiting for data, in the forward pass (batch to device included), the loss, the backward pass, the
optimiser step and the rest (handlers), from MONAI's IterationEvents. A loader is the bottleneck when its it/s is
well below ``preloaded`` and the waiting share is large. ``--json FILE`` appends one JSON line per
mode (``bench/gpu.sh`` builds its table from them).

    python bench/train_speed.py --stage segmenter --data PHANTOMS --modes config preloaded
    python bench/train_speed.py --stage localizer --data PHANTOMS \\
        --configs bundles/atria_localizer/configs/quick.json --iterations 4 --warmup 1    # a CPU smoke run
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
from monai.engines.utils import IterationEvents
from monai.utils import set_determinism

from cascade.bundles import STAGES, bundle_dir, read_stage_config

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCH = Path(__file__).resolve().parent
MODES = {
    "config": [],
    "no_cache_copy": ["configs/no_cache_copy.json"],
    "gpu_augmentation": ["configs/no_cache_copy.json", "configs/gpu_augmentation.json"],
    "preloaded": [],
    "contiguous": ["configs/contiguous.json"],
    "channels_last": ["configs/channels_last.json"],
    "loader_worker": ["configs/loader_worker.json"],
    "compile": ["configs/compile.json"],
    "channels_last_compile": ["configs/channels_last.json", "configs/compile.json"],
}
# Ignite and MONAI events in the order one iteration fires them; a phase is the time between two.
PHASES = {
    "data": (Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED),
    "forward": (Events.ITERATION_STARTED, IterationEvents.FORWARD_COMPLETED),
    "loss": (IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED),
    "backward": (IterationEvents.LOSS_COMPLETED, IterationEvents.BACKWARD_COMPLETED),
    "optimiser": (IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED),
    "rest": (IterationEvents.MODEL_COMPLETED, Events.ITERATION_COMPLETED),
}


def build(stage: str, mode: str, args: argparse.Namespace, scratch: Path) -> ConfigParser:
    overlays = [str(BENCH / c.format(stage=stage)) for c in MODES[mode]]
    overrides = {
        "ckpt_dir": str(scratch / "models"), "output_dir": str(scratch / "runs"),
        "dataset_dir": str(args.data), "fold": -1, "num_folds": 2, "num_epochs": 1,
        "iterations_per_epoch": args.iterations,
        "device": torch.device(args.device), "train#dataset#progress": False,
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
        parser.get_parsed_content("train#handlers#2").attach(trainer)  # LrScheduleHandler
        if mode == "preloaded":
            batch = next(iter(trainer.data_loader))
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            trainer.data_loader = [batch] * args.iterations
        stamps, events = [], {}

        def stamp(event):
            def record(engine):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                events.setdefault(event, []).append(time.perf_counter())
            return record

        for event in {e for pair in PHASES.values() for e in pair}:
            trainer.add_event_handler(event, stamp(event))
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED, lambda engine: stamps.append(events[Events.ITERATION_COMPLETED][-1])
        )

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer.run()
        output = trainer.state.output[0] if isinstance(trainer.state.output, list) else trainer.state.output
        timed = stamps[args.warmup :]
        seconds = timed[-1] - stamps[args.warmup - 1] if args.warmup else timed[-1] - start
        phase_ms = {
            name: 1000 * sum(e - s for s, e in list(zip(events[first], events[last]))[args.warmup :]) / len(timed)
            for name, (first, last) in PHASES.items()
        }
        return {
            "stage": stage, "mode": mode, "iterations": len(timed),
            "it/s": len(timed) / seconds,
            "wait share": phase_ms["data"] * len(timed) / 1000 / seconds,
            "ms": phase_ms,
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
    parser.add_argument(
        "--data", type=Path, required=True, help="folder of cases with labels (e.g. from `cascade phantom`)"
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help="iterations left out of the timing")
    parser.add_argument("--configs", nargs="*", default=[], help="overlay configs layered over train.json first")
    parser.add_argument("--num_workers", type=int, help="override the config's num_workers")
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="append one JSON line per mode to this file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the run (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not 0 <= args.warmup < args.iterations:
        parser.error("--warmup must be smaller than --iterations")
    set_determinism(seed=args.seed)
    failed = []
    for mode in args.modes:
        try:
            row = run_mode(args.stage, mode, args)
        except Exception as err:  # one failing mode should not cost the others' numbers
            first_line = str(err).splitlines()[0] if str(err) else ""
            print(f"{args.stage} {mode}: failed: {type(err).__name__}: {first_line}", flush=True)
            traceback.print_exc()
            failed.append(mode)
            continue
        print(f"{row['stage']} {row['mode']}: {row['it/s']:.2f} it/s over {row['iterations']} iterations "
              f"(batch {row['batch']}, {row['workers']} workers, amp {row['amp']}), waiting for data "
              f"{row['wait share']:.0%}, peak GPU {row['peak GiB']:.1f} GiB, setup {row['setup s']:.0f} s, "
              f"last loss {row['last loss']:.3f}", flush=True)
        print("    ms per iteration: " + ", ".join(f"{name} {ms:.0f}" for name, ms in row["ms"].items()), flush=True)
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(row) + "\n")
    if failed:
        raise SystemExit(f"failed modes: {' '.join(failed)}")


if __name__ == "__main__":
    main()
