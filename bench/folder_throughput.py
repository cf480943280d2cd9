"""A folder's throughput: the loader thread reading the next case while the networks run, against one case at a time.

Both runs use the same engine (built once) on the same cases, writing to fresh output folders
through ``cascade.predict.predict_cases`` (what ``cascade predict`` runs); one warm-up case runs
first. Prints seconds, cases per hour and the ratio.

    python bench/folder_throughput.py                          # 10 full-size phantoms, demo weights
    python bench/folder_throughput.py --data DIR --pretrained la2018 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cascade.engine import CascadeEngine
from cascade.phantom import write_phantoms
from cascade.predict import list_inputs, output_kinds, predict_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="data folder (default: generated phantoms)")
    parser.add_argument("--cases", type=int, default=10, help="phantoms to generate when --data is not given")
    parser.add_argument("--shape", type=int, nargs=3, default=[44, 576, 576], help="phantom grid (Z, Y, X)")
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=[2.5, 0.625, 0.625], help="phantom voxel size (Z, Y, X) in mm"
    )
    parser.add_argument("--pretrained", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        data = args.data
        if data is None:
            data = Path(folder) / "data"
            write_phantoms(data, cases=args.cases, seed=9000, shape=tuple(args.shape), spacing=tuple(args.spacing))
        inputs = list_inputs(data)
        engine = CascadeEngine.from_options(pretrained=args.pretrained, device=args.device, overlap=args.overlap)
        predict_cases(engine, inputs[:1], Path(folder) / "warm-up", report_name=None)
        seconds = {}
        for name, prefetch in (("one case at a time", False), ("loader thread", True)):
            start = time.perf_counter()
            report = predict_cases(
                engine, inputs, Path(folder) / name.replace(" ", "_"), kinds=output_kinds(), prefetch=prefetch
            )
            seconds[name] = time.perf_counter() - start
            assert not report.failed, report.summary()
        print(
            f"{len(inputs)} cases, {args.pretrained} weights, "
            f"{args.device}, overlap {args.overlap}, {args.threads} threads"
        )
        print(f"{'run':20} {'seconds':>8} {'cases/hour':>10} {'ratio':>6}")
        baseline = seconds["one case at a time"]
        for name, value in seconds.items():
            print(f"{name:20} {value:8.1f} {3600 * len(inputs) / value:10.0f} {baseline / value:6.2f}")


if __name__ == "__main__":
    main()
