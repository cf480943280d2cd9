"""The ``cascade`` command line (a ``fire`` CLI).

Every subcommand turns bad input into one error line on stderr and exit status 1.
"""

from __future__ import annotations

import sys

import fire

from cascade.io import InputError

__all__ = ["main"]


def datalist(data: str, folds: int = 5, out: str = "datalist.json", seed: int | None = None) -> None:
    """Validate every labelled case of DATA and write a k-fold datalist JSON.

    Args:
        data: data folder (MBAS, nnU-Net raw or flat layout).
        folds: number of cross-validation folds.
        out: JSON file to write.
        seed: fold assignment seed (default: the project's fixed seed).
    """
    from cascade.data import DEFAULT_SEED, make_datalist, write_datalist

    seed = DEFAULT_SEED if seed is None else seed
    entries = make_datalist(data, num_folds=folds, seed=seed, check_values=True)
    write_datalist(entries, out, num_folds=folds, seed=seed)
    sizes = [sum(e["fold"] == k for e in entries) for k in range(folds)]
    print(f"{len(entries)} cases, {folds} folds of sizes {sizes} -> {out}")


def phantom(
    out: str,
    cases: int = 4,
    seed: int = 0,
    shape: tuple[int, int, int] = (44, 576, 576),
    spacing: tuple[float, float, float] = (2.5, 0.625, 0.625),
) -> None:
    """Write synthetic LGE-MRI atrial phantoms in the MBAS layout.

    Args:
        out: output folder (``OUT/MBAS_001/MBAS_001_gt.nii.gz`` and ``..._label.nii.gz``).
        cases: number of cases.
        seed: base seed; case i is the same whatever the number of cases.
        shape: grid size (Z, Y, X) in voxels.
        spacing: voxel size (Z, Y, X) in mm.
    """
    import time

    from cascade.phantom import write_phantoms

    start = time.perf_counter()
    written = write_phantoms(out, cases=cases, seed=seed, shape=tuple(shape), spacing=tuple(spacing))
    print(f"{len(written)} phantom cases in {time.perf_counter() - start:.1f} s -> {out}")


def evaluate(pred: str, gt: str, out: str, allow_missing: bool = False, workers: int = 2) -> None:
    """Score predicted label maps against ground truth (Dice, HD95 in both conventions).

    Args:
        pred: predictions: flat folder of ``<case>_label.nii.gz`` or MBAS-layout folder.
        gt: ground truth, same layouts.
        out: folder for ``metrics.csv`` and ``summary.json``.
        allow_missing: score what is there when a ground-truth case has no prediction.
        workers: processes scoring cases in parallel.
    """
    from cascade.evaluation import evaluate as run_evaluation

    run_evaluation(pred, gt, out, allow_missing=allow_missing, workers=workers)


COMMANDS = {"datalist": datalist, "phantom": phantom, "evaluate": evaluate}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cascade`` console script."""
    try:
        fire.Fire(COMMANDS, command=argv, name="cascade")
    except (InputError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"cascade: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
