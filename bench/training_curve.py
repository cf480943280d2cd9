"""Validation Dice against training iterations, read from bundle training runs' TensorBoard logs.

A bundle training (``train.json``) logs ``val_mean_dice`` after every ``val_interval`` epochs and
the training loss after every iteration to ``<bundle_root>/runs/`` (MONAI's
``TensorBoardStatsHandler``; a resumed run adds event files, the last value of an epoch wins). This
prints, per run, the validation Dice at each validation with its iteration and the gain over the
last ``--window`` iterations (how flat the curve has become), and with ``--plot`` draws the curves
with the training loss (mean per epoch) beside them (PNG).

    python bench/training_curve.py WORK/segmenter/fold0 --iterations_per_epoch 50 --plot curve.png
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(run: Path, tag: str) -> dict[int, float]:
    """``step -> value`` of one tag over every event file of a run (later files win)."""
    values: dict[int, float] = {}
    for events in sorted((run / "runs").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values.update({event.step: event.value for event in accumulator.Scalars(tag)})
    return dict(sorted(values.items()))


def epoch_means(values: dict[int, float], iterations_per_epoch: int) -> dict[int, float]:
    """Iteration-level values averaged per epoch, keyed by the iteration the epoch ends at."""
    epochs: dict[int, list[float]] = defaultdict(list)
    for step, value in values.items():
        epochs[(step - 1) // iterations_per_epoch + 1].append(value)
    return {epoch * iterations_per_epoch: sum(v) / len(v) for epoch, v in sorted(epochs.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bundle roots of training runs (holding runs/)")
    parser.add_argument("--iterations_per_epoch", type=int, required=True)
    parser.add_argument("--window", type=int, default=1000, help="iterations over which the last gain is taken")
    parser.add_argument("--labels", nargs="*", help="one legend label per run (default: the folder)")
    parser.add_argument("--plot", type=Path, help="PNG to write")
    args = parser.parse_args()

    curves = {}
    for index, run in enumerate(args.runs):
        label = args.labels[index] if args.labels else str(run)
        dice = {epoch * args.iterations_per_epoch: v for epoch, v in scalars(run, "val_mean_dice").items()}
        loss = epoch_means(scalars(run, "train_loss"), args.iterations_per_epoch)
        curves[label] = (dice, loss)
        print(f"{label}: validation Dice (iteration: Dice)")
        print("  " + ", ".join(f"{it}: {v:.4f}" for it, v in dice.items()))
        if dice:
            last = max(dice)
            earlier = [it for it in dice if it <= last - args.window]
            gain = f"{dice[last] - dice[max(earlier)]:+.4f}" if earlier else "n/a"
            print(f"  last {dice[last]:.4f} at {last}; best {max(dice.values()):.4f}; "
                  f"gain over the last {args.window} iterations {gain}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        for label, (dice, loss) in curves.items():
            left.plot(list(dice), list(dice.values()), marker="o", label=label)
            right.plot(list(loss), list(loss.values()), label=label)
        left.set(xlabel="iteration", ylabel="validation Dice (mean over labelled classes)")
        right.set(xlabel="iteration", ylabel="training loss (mean per epoch)")
        for axis in (left, right):
            axis.grid(alpha=0.3)
        left.legend(fontsize=8)
        figure.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
