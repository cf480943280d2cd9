"""The ``cascade`` command line (a ``fire`` CLI).

Every subcommand turns bad input into one error line on stderr and exit status 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fire

from cascade.io import InputError

__all__ = ["main"]


def as_bool(value: bool | str | int, flag: str) -> bool:
    """A boolean flag's value: fire passes ``--flag false`` on as the string ``"false"``, which is truthy.

    Raises:
        ValueError: the value is not one of true/false, yes/no, 1/0 (any case).
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise ValueError(f"--{flag}: expected true or false, got {value!r}")


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

    run_evaluation(pred, gt, out, allow_missing=as_bool(allow_missing, "allow_missing"), workers=workers)


def _stage_checkpoints(bundle: Path, folds: str | int | tuple | None, demo: bool) -> list[Path]:
    if demo:
        return [bundle / "models" / "demo" / "model.pt"]
    if folds is None or folds == "":
        return [bundle / "models" / "model.pt"]
    fold_ids = folds if isinstance(folds, (tuple, list)) else str(folds).split(",")
    return [bundle / "models" / f"fold{int(k)}" / "model.pt" for k in fold_ids]


def predict(
    input: str,
    out: str,
    localizer: str | None = None,
    segmenter: str | None = None,
    device: str = "auto",
    overlap: float = 0.5,
    dilation: int = 2,
    mask_region: bool = True,
    save_masks: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    folds: str | None = None,
    tta: bool = False,
    demo: bool = False,
) -> None:
    """Segment wall, right atrium and left atrium: one ``<case>_label.nii.gz`` per input image.

    Args:
        input: a NIfTI file, or a folder in MBAS, nnU-Net (imagesTs) or flat layout.
        out: output folder.
        localizer: stage-1 bundle folder (default: the repository's ``bundles/atria_localizer``).
        segmenter: stage-2 bundle folder (default: the repository's ``bundles/atria_segmenter``).
        device: ``auto``, ``cpu`` or ``cuda``.
        overlap: sliding-window overlap of both stages (0.5; 0 is the paper's step 1.0).
        dilation: radius in voxels of the ball dilating the stage-1 mask (2).
        mask_region: run stage 2 only over the dilated mask's bounding box plus a margin
            (default); false slides over the whole volume as the paper does.
        save_masks: also write the stage-1 masks ``<case>_mask.nii.gz``.
        overwrite: replace existing outputs (otherwise they are an error).
        resume: skip cases whose output exists.
        folds: comma-separated fold ids; their checkpoints ``models/fold<k>/model.pt`` of each
            bundle are ensembled (softmax averaged).
        tta: mirroring test-time augmentation (8 mirrorings per network).
        demo: use the shipped demo weights, trained on phantoms only.
    """
    from cascade.runner import REPO_BUNDLES, BundlePredictor, CascadePredictor, MissingCheckpointError, list_inputs, resolve_device

    mask_region, save_masks, overwrite, resume, tta, demo = (
        as_bool(value, flag)
        for flag, value in [("mask_region", mask_region), ("save_masks", save_masks), ("overwrite", overwrite),
                            ("resume", resume), ("tta", tta), ("demo", demo)]
    )
    stages = {
        "localizer": Path(localizer) if localizer else REPO_BUNDLES / "atria_localizer",
        "segmenter": Path(segmenter) if segmenter else REPO_BUNDLES / "atria_segmenter",
    }
    if demo:
        print("cascade: using the DEMO weights, trained on synthetic phantoms only: not a model of real anatomy")
    # inferer#progress: a tqdm bar over the sliding windows of each stage of each case
    common = {
        "device": f"$torch.device('{resolve_device(device)}')",
        "overlap": overlap,
        "num_workers": 0,
        "inferer#progress": True,
    }
    stage_overrides = {
        "localizer": common,
        "segmenter": {**common, "dilation_radius": dilation, "crop_to_mask": mask_region, "mask_from_label": False},
    }
    inputs = list_inputs(input)
    predictors = {}
    for stage, bundle in stages.items():
        try:
            predictors[stage] = BundlePredictor(
                bundle,
                _stage_checkpoints(bundle, folds, demo),
                overrides=stage_overrides[stage],
                extra_configs=["demo.json"] if demo else [],
                mirror=tta,
            )
        except MissingCheckpointError as err:
            raise MissingCheckpointError(
                f"{err} (the {stage} has no trained weights: train it with `python -m monai.bundle run training` "
                "in its bundle folder, see its docs/README.md, or pass --demo for the phantom demo weights)"
            ) from err
    report = CascadePredictor(predictors["localizer"], predictors["segmenter"]).predict(
        inputs, out, overwrite=overwrite, resume=resume, save_masks=save_masks
    )
    print(report.summary())
    if report.failed:  # each failure was reported on its own error line
        sys.exit(1)


def crossval(data: str, work: str, folds: int = 5, quick: bool = False, seed: int | None = None) -> None:
    """The paper's k-fold protocol through both bundles: train, out-of-fold masks and predictions, evaluation.

    Args:
        data: labelled data folder (MBAS, nnU-Net raw or flat layout).
        work: working folder; every finished step found there is skipped (resumable).
        folds: number of folds.
        quick: use the bundles' quick.json smoke configuration (minutes on a CPU, not a model).
        seed: fold assignment seed (default: the project's fixed seed).
    """
    from cascade.crossval import run_crossval
    from cascade.data import DEFAULT_SEED

    run_crossval(data, work, folds=folds, quick=as_bool(quick, "quick"), seed=DEFAULT_SEED if seed is None else seed)


def demo(out: str = "demo_out", cases: int = 2, seed: int = 1000) -> None:
    """The main job on the embedded default: phantoms -> cascade predict --demo -> evaluation -> PNGs.

    Args:
        out: output folder (phantoms/, predictions/, evaluation/, png/).
        cases: number of phantom cases (reduced grid 24 x 160 x 160 at 2.5 x 1.25 x 1.25 mm).
        seed: phantom seed; the demo weights were trained on seed 0 phantoms, so these are unseen.
    """
    import time

    from cascade.overlay import save_overlay_png

    start = time.perf_counter()
    root = Path(out)
    phantom(str(root / "phantoms"), cases=cases, seed=seed, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    predict(str(root / "phantoms"), str(root / "predictions"), demo=True, overwrite=True, device="cpu")
    evaluate(str(root / "predictions"), str(root / "phantoms"), str(root / "evaluation"))
    for case_dir in sorted((root / "phantoms").iterdir()):
        png = save_overlay_png(
            case_dir / f"{case_dir.name}_gt.nii.gz",
            root / "predictions" / f"{case_dir.name}_label.nii.gz",
            root / "png" / f"{case_dir.name}.png",
        )
        print(f"overlay (axial | coronal | sagittal; wall yellow, right atrium blue, left atrium red): {png}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")


COMMANDS = {"demo": demo, "datalist": datalist, "phantom": phantom, "evaluate": evaluate, "predict": predict, "crossval": crossval}


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def join_multi_value_flags(argv: list[str]) -> list[str]:
    """``--shape 24 160 160`` -> ``--shape=[24,160,160]``: fire reads one token per flag."""
    joined: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        values = []
        while token.startswith("--") and "=" not in token and i + 1 + len(values) < len(argv) and _is_number(argv[i + 1 + len(values)]):
            values.append(argv[i + 1 + len(values)])
        if len(values) > 1:
            joined.append(f"{token}=[{','.join(values)}]")
            i += 1 + len(values)
        else:
            joined.append(token)
            i += 1
    return joined


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cascade`` console script."""
    try:
        fire.Fire(COMMANDS, command=join_multi_value_flags(sys.argv[1:] if argv is None else argv), name="cascade")
    except (InputError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"cascade: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
