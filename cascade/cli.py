"""The ``cascade`` command line (a ``fire`` CLI).

Every subcommand turns bad input into one error line on stderr and exit status 1. Help and the
checks of the command line (:mod:`cascade.cli_help`) come before any import of torch or MONAI:
each command imports what it needs when it starts.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import fire

import cascade
from cascade.bundles import bundle_dir, check_weight_choice
from cascade.cli_help import THREE_VALUE_FLAGS, check_arguments, check_command, command_help, is_number, overview
from cascade.errors import InputError
from cascade.labels import CLASS_NAMES
from cascade.settings import (
    as_bool, as_classes, as_margin, as_number, as_overlap, as_path, as_paths, as_precision, as_seed, as_triple, as_uids,
    check_runtime, resolve_device,
)

if TYPE_CHECKING:  # torch and MONAI come with these: each command imports what it needs when it starts
    from cascade.distributed import Ranks
    from cascade.engine import CascadeEngine
    from cascade.predict import PredictionReport

__all__ = ["main"]


class CommandFailed(Exception):
    """A command could not finish (e.g. a training run failed); the message says where to look."""


def report_line(line: str) -> None:
    """Print a note about the input (a skipped file and why) on stderr."""
    print(f"cascade: {line}", file=sys.stderr)


def datalist(
    data: str, folds: int = 5, out: str = "datalist.json", seed: int | None = None, annotated: str | None = None
) -> None:
    """Validate every labelled case of DATA and write a k-fold datalist JSON.

    Args:
        data: data folder (MBAS, nnU-Net raw or flat layout), or several comma-separated (e.g.
            fully labelled and left-atrium-only data in one datalist).
        folds: number of cross-validation folds.
        out: JSON file to write.
        seed: fold assignment seed (default: the project's fixed seed).
        annotated: the classes the labels annotate, names or values comma-separated (e.g.
            left_atrium); default: each folder's dataset.json ("labels"), else all classes.
    """
    from cascade.data import DEFAULT_SEED, make_datalist, write_datalist

    folds = as_number(folds, "folds", 2, 1000, integer=True)
    seed, out = as_seed(seed, DEFAULT_SEED), as_path(out)
    if Path(out).is_dir():
        raise InputError(f"{out}: --out is a folder; give the datalist file to write, "
                         f"e.g. {Path(out) / 'datalist.json'}")
    entries = make_datalist(as_paths(data), num_folds=folds, seed=seed, check_values=True, report=report_line,
                            annotated=as_classes(annotated))
    write_datalist(entries, out, num_folds=folds, seed=seed)
    sizes = [sum(e["fold"] == k for e in entries) for k in range(folds)]
    partial = sum(len(e["annotated"]) < 3 for e in entries)
    note = f" ({partial} partially annotated)" if partial else ""
    print(f"{len(entries)} cases{note}, {folds} folds of sizes {sizes} -> {out}")


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

    cases, seed = as_number(cases, "cases", 1, 10_000, integer=True), as_seed(seed, 0)
    shape = as_triple(shape, "shape", 8, 4096, integer=True)
    spacing = as_triple(spacing, "spacing", 0.01, 100.0)
    start = time.perf_counter()
    written = write_phantoms(as_path(out), cases=cases, seed=seed, shape=shape, spacing=spacing)
    print(f"{len(written)} phantom cases in {time.perf_counter() - start:.1f} s -> {out}")


def evaluate(
    pred: str, gt: str, out: str, allow_missing: bool = False, workers: int = 2, masks: str | None = None,
    annotated: str | None = None
) -> None:
    """Score predicted label maps against ground truth (Dice, HD95 in both conventions).

    Args:
        pred: predictions: flat folder of ``<case>_label.nii.gz`` or MBAS-layout folder.
        gt: ground truth, same layouts, or a datalist JSON (cascade datalist).
        out: folder for ``metrics.csv`` and ``summary.json``.
        allow_missing: score what is there when a ground-truth case has no prediction.
        workers: processes scoring cases in parallel.
        masks: folder of <case>_mask.nii.gz / <case>_gate.nii.gz (cascade predict --save_masks):
            also the share of each true class inside the stage-1 mask and the gate (gate.csv).
        annotated: the classes the ground truth annotates, names or values comma-separated (e.g.
            left_atrium); the others are reported as not annotated, never scored. Default: the
            datalist's, else GT's dataset.json ("labels"), else all classes.
    """
    from cascade.evaluation import evaluate as run_evaluation

    run_evaluation(
        as_path(pred), as_path(gt), as_path(out), allow_missing=as_bool(allow_missing, "allow_missing"),
        workers=as_number(workers, "workers", 1, 256, integer=True), masks=as_path(masks),
        annotated=as_classes(annotated),
    )


def measure(
    labels: str,
    out: str,
    images: str | None = None,
    surfaces: str | None = None,
    iir_thresholds: str | float | tuple = "1.2,1.32",
    annotated: str | None = None,
    png: bool = True,
    overwrite: bool = False,
    debug: bool = False,
) -> None:
    """Atrial volumes, sphericity, wall thickness and LGE wall enhancement (IIR) of label maps (docs/measurements.md).

    Args:
        labels: folder of label maps: <case>_label.nii.gz (what cascade predict writes), or an MBAS folder.
        out: output folder: measurements.csv (one row per case), png/<case>.png, surfaces/.
        images: the cases' images, any input cascade predict reads (NIfTI folder, DICOM folder),
            matched by case id; default: the images beside the labels (an MBAS folder). A case
            without its image gets the shape measures only.
        surfaces: stl, ply or vtk: write surfaces/<case>_<structure>.<ext> (left_atrium,
            right_atrium, wall) in LPS mm; PLY and VTK carry the IIR per vertex. Needs pip
            install 'atria-cascade[measure]'.
        iir_thresholds: IIR thresholds, comma-separated (default 1.2,1.32: fibrosis, dense scar);
            the first gives wall_enhanced_pct.
        annotated: the classes the label maps label, names or values comma-separated (e.g.
            left_atrium); the others are left empty without a warning. Default: the classes
            the model labels when LABELS is a cascade predict folder (its run.json), else LABELS'
            dataset.json ("labels"), else all classes.
        png: write png/<case>.png (needs pip install 'atria-cascade[measure]').
        overwrite: replace existing outputs.
        debug: print the traceback of a case that fails.
    """
    from cascade.annotation import declared_classes
    from cascade.io import check_writable_folder
    from cascade.measure import (
        REPORT_NAME, measure_cases, pair_labels_images, parse_thresholds, recorded_labelled_classes,
    )

    labels, out, images = as_path(labels), as_path(out), as_path(images)
    png, overwrite, debug = as_bool(png, "png"), as_bool(overwrite, "overwrite"), as_bool(debug, "debug")
    thresholds = parse_thresholds(iir_thresholds)
    classes = ((None if annotated else recorded_labelled_classes(labels))
               or declared_classes(labels, as_classes(annotated)))
    check_writable_folder(out, "the output folder")
    cases = pair_labels_images(labels, images)
    surfaces = None if surfaces is None else str(surfaces)
    report = measure_cases(cases, out, classes, thresholds, surfaces, png, overwrite, debug=debug)
    print(f"cascade: {report.summary()} -> {Path(out) / REPORT_NAME}")
    if report.failed:  # each failure was reported on its own error line
        sys.exit(1)


def predict(
    input: str,
    out: str,
    models: str | None = None,
    folds: str | None = None,
    pretrained: str | None = None,
    demo: bool = False,
    localizer: str | None = None,
    segmenter: str | None = None,
    device: str | None = None,
    overlap: float | str | tuple[float, float] | None = None,
    mask_threshold: float | None = None,
    gate_margin_mm: float | tuple[float, float, float] | None = None,
    mask_region: bool | None = None,
    tta: bool | None = None,
    backend: str = "torch",
    precision: str | tuple[str, str] | None = None,
    calibration: str | None = None,
    output_format: str = "nifti",
    series: str | None = None,
    save_masks: bool = False,
    save_uncertainty: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    debug: bool = False,
    measure: bool = False,
    surfaces: str | None = None,
    iir_thresholds: str | float | tuple = "1.2,1.32",
) -> None:
    """Segment wall, right atrium and left atrium: one ``<case>_label.nii.gz`` per input image.

    Settings not given here take the value of each bundle's configs/inference.json (and of the
    overlays the weights come with).

    Args:
        input: a NIfTI file, or a folder in MBAS, nnU-Net (imagesTs) or flat layout; or DICOM: a
            folder (searched recursively) holding no NIfTI image, one series predicted per study
            (the one with the most slices; see --series), or one DICOM file (its series).
        out: output folder (also gets predictions.csv, one QC row per case, and run.json: the
            command, weights with checksums, settings per stage and software versions).
        models: a work folder of `cascade crossval` or `cascade import-nnunet`: checkpoints
            <stage>/fold<k>/models/model_final.pt (a training's last weights; else model.pt), every
            fold found is ensembled (see --folds).
        folds: comma-separated fold ids to ensemble (with --models, or the bundles'
            models/fold<k>/model.pt).
        pretrained: shipped weights: la2018 (trained on 80 real LGE-MRI scans; labels the left
            atrium cavity only) or demo (trained on synthetic phantoms; not a model of anatomy).
        demo: the same as --pretrained demo.
        localizer: stage-1 bundle folder (default: the installed atria_localizer).
        segmenter: stage-2 bundle folder (default: the installed atria_segmenter).
        device: auto, cpu, cuda or cuda:N (config default: CUDA when available).
        overlap: sliding-window overlap, one value for both stages or LOCALIZER,SEGMENTER (e.g.
            0,0.5; config default 0.5 each; 0 is the paper's step 1.0).
        mask_threshold: stage-1 foreground probability at or above which a voxel is in the mask
            (config default 0.2; the paper's argmax is 0.5; docs/gate.md).
        gate_margin_mm: the stage-1 mask is dilated by this margin in mm, one value or X,Y,Z (config
            default 2.5,2.5,5; the paper's 2 voxels at 0.625 x 0.625 x 2.5 mm are 1.25,1.25,5),
            giving the gate stage 2 may label; use the margin the segmenter was trained with.
        mask_region: run stage 2 only over the dilated mask's bounding box plus a margin (config
            default true); false slides over the whole volume as the paper does.
        tta: mirroring test-time augmentation, 8 mirrorings per window (config default false).
        backend: network runtime: torch, or openvino (CPU only; needs pip install
            'atria-cascade[openvino]'; each network is exported once and cached in
            $CASCADE_CACHE_DIR, default ~/.cache/atria-cascade; see docs/benchmarks.md).
        precision: fp32, or bf16 or int8 (openvino only; default bf16 on CPUs with native bf16, else
            fp32); one value for both stages or LOCALIZER,SEGMENTER (e.g. int8,bf16). int8 needs pip
            install 'atria-cascade[int8]' (NNCF) and is calibrated once per weights (cached).
        calibration: labelled data folder whose cases calibrate --precision int8 (default: 2
            phantoms of seed 11 on the MBAS grid; docs/benchmarks.md).
        output_format: nifti (<case>_label.nii.gz), dicom-seg (<case>_seg.dcm, a DICOM
            Segmentation referencing the source series; DICOM input only; needs pip install
            'atria-cascade[dicom]') or both.
        series: DICOM SeriesInstanceUIDs to predict, comma-separated (default: one per study).
        save_masks: also write <case>_mask.nii.gz (stage-1 mask) and <case>_gate.nii.gz (the region
            stage 2 may label).
        save_uncertainty: also write <case>_uncertainty.nii.gz: per voxel, the share of the
            segmenter's passes (models times mirrorings) voting against the majority label (0-1,
            float32; needs an ensemble or --tta true). predictions.csv's uncertainty and review
            columns come with every ensemble or --tta run (docs/uncertainty.md).
        overwrite: replace existing outputs (never an input file).
        resume: keep finished outputs, redo missing or unreadable ones; refused when run.json
            there records other weights, configs or settings.
        debug: print tracebacks of unexpected errors.
        measure: also measure each label map with its image into OUT/measurements/ (as cascade
            measure: measurements.csv, png/; the classes the weights do not label are left empty).
        surfaces: with --measure, also write surfaces (stl, ply or vtk) into OUT/measurements/surfaces/.
        iir_thresholds: with --measure, the IIR thresholds (default 1.2,1.32).

    Under torchrun (`torchrun --nproc_per_node N -m cascade.cli predict ...`) the cases are split
    over the N ranks, each on its own GPU (or the CPU), and rank 0 writes the report.
    """
    input, out, models, localizer, segmenter = (as_path(v) for v in (input, out, models, localizer, segmenter))
    demo, save_masks, save_uncertainty, overwrite, resume, debug = (
        as_bool(value, flag)
        for flag, value in [("demo", demo), ("save_masks", save_masks), ("save_uncertainty", save_uncertainty),
                            ("overwrite", overwrite), ("resume", resume), ("debug", debug)]
    )
    settings = _engine_settings(device, overlap, mask_threshold, gate_margin_mm, mask_region, tta, backend, precision)
    pretrained = _pretrained_choice(pretrained, demo)
    _check_weights_and_runtime(settings, models, pretrained, localizer, segmenter)
    series = as_uids(series, "series")
    measuring = as_bool(measure, "measure")
    if surfaces is not None and not measuring:
        raise InputError("--surfaces writes the surfaces of --measure: add --measure")

    from cascade.distributed import ranks_from_env  # the work starts: torch and MONAI are imported from here on
    from cascade.predict import output_kinds

    kinds = output_kinds(save_masks, str(output_format), save_uncertainty)
    measure_options = _measure_options(iir_thresholds, surfaces) if measuring else None
    if settings["device"] is not None:
        resolve_device(settings["device"])
    ranks = ranks_from_env()
    all_inputs = _checked_inputs(input, Path(out), series, settings["backend"], kinds, measure_options,
                                overwrite or resume)
    inputs = all_inputs
    if ranks.distributed:  # under torchrun: this rank's share of the cases, on its own device
        inputs = _rank_share(ranks, all_inputs, Path(out), kinds, overwrite, resume)
        settings["device"] = settings["device"] or ranks.device()
    if pretrained == "demo" and ranks.rank == 0:
        print("cascade: using the DEMO weights, trained on synthetic phantoms only: not a model of real anatomy")
    engine = _cascade_engine(settings, models, folds, pretrained, localizer, segmenter, calibration)
    _check_uncertainty_map(engine, save_uncertainty)
    if ranks.rank == 0:
        _announce_weights(engine)
    report = _predict_share(engine, ranks, inputs, Path(out), kinds, overwrite, resume, debug)
    measured = None
    if measure_options is not None and ranks.rank == 0:
        from cascade.measure import measure_predictions

        measured = measure_predictions(all_inputs, report.rows, Path(out), engine.labelled_classes,
                                       measure_options.thresholds, measure_options.surfaces, debug)
    if report.failed or (measured is not None and measured.failed):  # each failure had its own error line
        sys.exit(1)


@dataclass(frozen=True)
class _MeasureOptions:
    """What ``cascade predict --measure`` measures: the IIR thresholds, the surface format (``None``: none)."""

    thresholds: tuple[float, ...]
    surfaces: str | None


def _engine_settings(
    device: str | None,
    overlap: float | str | tuple[float, float] | None,
    mask_threshold: float | None,
    gate_margin_mm: float | tuple[float, float, float] | None,
    mask_region: bool | None,
    tta: bool | None,
    backend: str,
    precision: str | tuple[str, str] | None,
) -> dict:
    """``cascade predict``'s stage settings, checked, as :meth:`CascadeEngine.from_options` takes them
    (``None``: the config's value).

    Raises:
        ValueError: a value out of range or not of its type (one line naming the flag).
    """
    return {
        "device": None if device is None else str(device),
        "overlap": as_overlap(overlap),
        "mask_threshold": as_number(mask_threshold, "mask_threshold", 0.01, 0.99),
        "gate_margin_mm": as_margin(gate_margin_mm),
        "mask_region": None if mask_region is None else as_bool(mask_region, "mask_region"),
        "tta": None if tta is None else as_bool(tta, "tta"),
        "backend": str(backend),
        "precision": as_precision(precision),
    }


def _pretrained_choice(pretrained: str | None, demo: bool) -> str | None:
    """The shipped weights asked for: ``--pretrained``, or ``demo`` for ``--demo``.

    Raises:
        InputError: ``--demo`` with ``--pretrained`` other weights.
    """
    if demo:
        if pretrained not in (None, "demo"):
            raise InputError(f"--demo and --pretrained {pretrained} exclude each other")
        pretrained = "demo"
    return None if pretrained is None else str(pretrained)


def _check_weights_and_runtime(
    settings: dict, models: str | None, pretrained: str | None, localizer: str | None, segmenter: str | None
) -> None:
    """Refuse, before torch is imported, weights no stage can use and a backend/precision pair that cannot run.

    Raises:
        InputError: see :func:`cascade.bundles.check_weight_choice` and :func:`cascade.settings.check_runtime`.
    """
    for stage, bundle in (("localizer", localizer), ("segmenter", segmenter)):
        check_weight_choice(stage, bundle or bundle_dir(stage), models, pretrained)
    precisions = settings["precision"]
    check_runtime(settings["backend"], list(precisions.values()) if isinstance(precisions, dict) else [precisions])


def _measure_options(iir_thresholds: str | float | tuple, surfaces: str | None) -> _MeasureOptions:
    """``--measure``'s options, checked.

    Raises:
        ValueError: IIR thresholds that are not numbers in range.
    """
    from cascade.measure import parse_thresholds

    return _MeasureOptions(parse_thresholds(iir_thresholds), None if surfaces is None else str(surfaces))


def _checked_inputs(
    input: str, out: Path, series: list[str] | None, backend: str, kinds: tuple[str, ...],
    measure_options: _MeasureOptions | None, replacing: bool,
) -> list[dict]:
    """The cases to predict, once the output folder (the first file touched), the cache of exported networks
    (openvino) and, with ``--measure``, its outputs are known to take what the run writes.

    Raises:
        InputError: see :func:`cascade.predict.check_output_folder`, :func:`cascade.predict.list_inputs`
            and :func:`cascade.measure.check_prediction_measure`.
    """
    from cascade.backends import default_cache_dir
    from cascade.io import check_writable_folder
    from cascade.predict import check_output_folder, list_inputs

    check_output_folder(input, out)  # the first file touched: every argument is checked before
    if backend == "openvino":
        check_writable_folder(default_cache_dir(), "the cache folder of exported networks ($CASCADE_CACHE_DIR)")
    inputs = list_inputs(input, series)
    if measure_options is not None:
        from cascade.measure import check_prediction_measure

        check_prediction_measure(inputs, out, kinds, measure_options.surfaces, replacing)
    return inputs


def _rank_share(ranks: Ranks, inputs: list[dict], out: Path, kinds: tuple[str, ...], overwrite: bool,
                resume: bool) -> list[dict]:
    """Under torchrun: start the process group, check every output (all ranks, before any writes), and
    return this rank's share of the cases."""
    from cascade.predict import check_outputs

    ranks.start()
    check_outputs(inputs, out, kinds, overwrite, resume)
    ranks.barrier()
    return ranks.shard(inputs)


def _cascade_engine(
    settings: dict, models: str | None, folds: str | None, pretrained: str | None, localizer: str | None,
    segmenter: str | None, calibration: str | None,
) -> CascadeEngine:
    """Both stages with the chosen weights and settings (a progress bar over the windows on a terminal)."""
    from cascade.engine import CascadeEngine

    return CascadeEngine.from_options(
        models=models, folds=folds, pretrained=pretrained, localizer=localizer, segmenter=segmenter,
        calibration=as_path(calibration),
        progress=sys.stderr.isatty(), **settings,
    )


def _check_uncertainty_map(engine: CascadeEngine, save_uncertainty: bool) -> None:
    """Refuse ``--save_uncertainty`` where the segmenter predicts each window once.

    Raises:
        InputError: ``save_uncertainty`` with one pass per window.
    """
    if save_uncertainty and engine.passes == 1:
        raise InputError("--save_uncertainty: the segmenter predicts each window once (one model, no --tta), "
                         "so there is no disagreement to map; add --tta true or use an ensemble "
                         "(--pretrained la2018, --models with folds)")


def _announce_weights(engine: CascadeEngine) -> None:
    """Say which weights run, the classes they label when not all, and when there is no uncertainty to measure."""
    from cascade.annotation import ALL_CLASSES

    print("cascade: weights of " + "; ".join(f"the {stage}: {source}" for stage, source in engine.weights.items()))
    if engine.labelled_classes != ALL_CLASSES:
        labelled = ", ".join(CLASS_NAMES[v] for v in engine.labelled_classes)
        print(f"cascade: these weights label only: {labelled} "
              "(trained on partially labelled data; other classes stay 0)")
    if engine.passes == 1:
        print("cascade: the segmenter predicts each window once (one model, no --tta): "
              "predictions.csv's uncertainty and review say n/a (an ensemble or --tta true measures them)")


def _predict_share(
    engine: CascadeEngine, ranks: Ranks, inputs: list[dict], out: Path, kinds: tuple[str, ...], overwrite: bool,
    resume: bool, debug: bool,
) -> PredictionReport:
    """Predict this rank's cases; the report and ``run.json`` are written by the only rank, or under torchrun by
    rank 0 with every rank's rows; rank 0 prints the summary.

    Raises:
        KeyboardInterrupt: the run was interrupted (after its report was written).
    """
    from cascade.predict import REPORT_NAME, PredictionReport, predict_cases, run_record
    from cascade.run_record import write_run_record

    record = run_record(engine, ["cascade", *sys.argv[1:]])
    report = predict_cases(
        engine, inputs, out, overwrite=overwrite, resume=resume, kinds=kinds, debug=debug,
        report_name=None if ranks.distributed else REPORT_NAME, record=record,
    )
    if ranks.distributed:
        report = PredictionReport(ranks.gather(report.rows), report.interrupted)
        ranks.stop()
        if ranks.rank == 0:
            report.write(out / REPORT_NAME)
            write_run_record(out, record)
    if ranks.rank == 0:
        print(report.summary())
    if report.interrupted:
        raise KeyboardInterrupt(report.interrupted)
    return report


def crossval(
    data: str,
    work: str,
    folds: int = 5,
    config: str | None = None,
    quick: bool = False,
    seed: int | None = None,
    single_stage: bool = False,
    annotated: str | None = None,
) -> None:
    """The paper's k-fold protocol: train both bundles, out-of-fold masks and cascade predictions, evaluation.

    Then `cascade predict IN OUT --models WORK` ensembles the fold models on new cases.

    Args:
        data: labelled data folder (MBAS, nnU-Net raw or flat layout), several comma-separated,
            or a datalist JSON (cascade datalist: its cases and their annotated classes; the
            folds are assigned by --folds and --seed).
        work: working folder; every finished step found there is skipped (resumable).
        folds: number of folds.
        config: config overlays layered over both bundles for training and prediction,
            comma-separated, later ones winning: a bundle's own by name (quick: a smoke run of
            minutes on a CPU; demo: the phantom demo recipe; paper_handoff: the paper's stage-1
            hand-off instead of the default) or JSON file paths (keys must suit both bundles).
        quick: shorthand for --config quick.
        seed: fold assignment seed (default: the project's fixed seed).
        single_stage: also train and evaluate the single-stage baseline (the segmenter without a
            gate, same budget) in WORK/single_stage/: the paper's cascade-vs-single comparison.
        annotated: the classes the labels annotate, names or values comma-separated (e.g.
            left_atrium: partially labelled data); default: each folder's dataset.json, else all.
    """
    from cascade.crossval import TrainingError, run_crossval
    from cascade.data import DEFAULT_SEED

    if isinstance(config, (tuple, list)):  # fire reads "a,b" as a tuple
        config = ",".join(config)
    if as_bool(quick, "quick"):
        config = "quick" if config in (None, "quick") else f"quick,{config}"
    folds = as_number(folds, "folds", 2, 1000, integer=True)
    seed = as_seed(seed, DEFAULT_SEED)
    try:
        run_crossval(
            as_paths(data), as_path(work), folds=folds, config=config, seed=seed,
            single_stage=as_bool(single_stage, "single_stage"),
            annotated=as_classes(annotated), command=["cascade", *sys.argv[1:]],
        )
    except TrainingError as err:  # reported as bad input is; the class is imported with the (heavy) training code
        raise CommandFailed(str(err)) from None


def demo(out: str = "demo_out", cases: int = 2, seed: int = 1000) -> None:
    """The main job on the embedded default: phantoms -> cascade predict --demo -> evaluation -> PNGs.

    Args:
        out: output folder (phantoms/, predictions/, evaluation/, png/).
        cases: number of phantom cases (reduced grid 24 x 160 x 160 at 2.5 x 1.25 x 1.25 mm).
        seed: phantom seed; the demo weights were trained on seed 0 phantoms, so these are unseen.
    """
    import time

    from cascade.snapshots import save_overlay_png

    cases, seed = as_number(cases, "cases", 1, 1000, integer=True), as_seed(seed, 1000)
    start = time.perf_counter()
    root = Path(as_path(out))
    phantom(str(root / "phantoms"), cases=cases, seed=seed, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    predict(str(root / "phantoms"), str(root / "predictions"), pretrained="demo", overwrite=True, device="cpu")
    evaluate(str(root / "predictions"), str(root / "phantoms"), str(root / "evaluation"))
    for case_dir in sorted((root / "phantoms").iterdir()):
        png = save_overlay_png(
            case_dir / f"{case_dir.name}_gt.nii.gz",
            root / "predictions" / f"{case_dir.name}_label.nii.gz",
            root / "png" / f"{case_dir.name}.png",
        )
        print("overlay (axial | coronal | sagittal, radiological: the patient's right on the left; "
              f"legend below): {png}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")


def import_nnunet(
    model_dir: str,
    stage: str,
    out: str,
    folds: str | int | tuple | None = None,
    checkpoint: str = "final",
    preprocessing: str = "nnunet",
    bundle: str | None = None,
    overwrite: bool = False,
) -> None:
    """Bring a trained nnU-Net v2 ResEnc model into a cascade stage (see docs/nnunet.md).

    Args:
        model_dir: nnU-Net trained-model folder (dataset.json, plans.json, fold_<k>/checkpoint_final.pth).
        stage: ``localizer`` or ``segmenter``.
        out: working folder; writes ``OUT/<stage>/fold<k>/models/model.pt`` and ``OUT/<stage>/config.json``.
        folds: comma-separated fold ids (default: every fold with the checkpoint).
        checkpoint: ``final`` (checkpoint_final.pth) or ``best`` (checkpoint_best.pth).
        preprocessing: ``nnunet`` (the model's own: crop, z-score, nnU-Net resampling and sliding
            window; default) or ``monai`` (the bundle's).
        bundle: the stage's bundle folder (default: the repository's).
        overwrite: replace weights and overlay written before.
    """
    from cascade.nnunet_import import import_nnunet as run_import

    fold_ids = None
    if folds is not None and folds != "":
        fold_ids = [str(k) for k in (folds if isinstance(folds, (tuple, list)) else str(folds).split(","))]
    report = run_import(as_path(model_dir), stage, as_path(out), folds=fold_ids, checkpoint=checkpoint,
                        preprocessing=preprocessing, bundle=as_path(bundle), overwrite=as_bool(overwrite, "overwrite"))
    print(report.summary())


COMMANDS = {
    "demo": demo,
    "datalist": datalist,
    "phantom": phantom,
    "evaluate": evaluate,
    "measure": measure,
    "predict": predict,
    "crossval": crossval,
    "import-nnunet": import_nnunet,
}


def _takes(token: str, following: str) -> bool:
    """Whether ``following`` is one more value of flag ``token`` (numbers; any non-flag for --shape/--spacing)."""
    if not token.startswith("--") or "=" in token:
        return False
    return is_number(following) or (token in THREE_VALUE_FLAGS and not following.startswith("--"))


def join_multi_value_flags(argv: list[str]) -> list[str]:
    """``--shape 24 160 160`` -> ``--shape=[24,160,160]``: fire reads one token per flag.

    ``--shape`` and ``--spacing`` take their three tokens whatever they are, so that a typo is
    reported against its flag, not as a stray positional argument.
    """
    joined: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        values = []
        while (i + 1 + len(values) < len(argv) and len(values) < (3 if token in THREE_VALUE_FLAGS else len(argv))
               and _takes(token, argv[i + 1 + len(values)])):
            values.append(argv[i + 1 + len(values)])
        if len(values) > 1:
            joined.append(f"{token}=[{','.join(values)}]")
            i += 1 + len(values)
        else:
            joined.append(token)
            i += 1
    return joined


def show_help_or_check(argv: list[str]) -> bool:
    """Print the help ``argv`` asks for, or check its command and arguments before anything runs.

    Returns:
        Whether help (or the version) was printed: there is nothing to run.

    Raises:
        ValueError: an unknown command or flag, a missing or extra argument (one line).
    """
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(overview(COMMANDS, f"{cascade.__doc__.splitlines()[0].rstrip('.')} (version {cascade.__version__})."))
        return True
    if argv[0] == "--version":
        print(f"atria-cascade {cascade.__version__}")
        return True
    check_command(argv, COMMANDS)
    options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if "-h" in options or "--help" in options:
        print(command_help(argv[0], COMMANDS[argv[0]]))
        return True
    check_arguments(argv[0], COMMANDS[argv[0]], argv[1:])
    return False


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cascade`` console script.

    Bad input is one ``cascade: error:`` line and exit status 1; Ctrl-C and SIGTERM stop cleanly
    (no partial output, one line) with status 130 and 143.
    """
    from cascade.pipes import outliving_readers

    argv = join_multi_value_flags(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    with outliving_readers():  # `cascade predict ... | head -1` still predicts every case
        _run(argv)


def _run(argv: list[str]) -> None:
    """Run one command: bad input, Ctrl-C and SIGTERM end as :func:`main` says."""
    try:
        if show_help_or_check(argv):
            return
        fire.Fire(COMMANDS, command=argv, name="cascade")
    except PermissionError as err:
        print(f"cascade: error: {err.filename or ''}: permission denied", file=sys.stderr)
        sys.exit(1)
    except (InputError, FileExistsError, FileNotFoundError, ValueError, CommandFailed) as err:
        print(f"cascade: error: {err}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:  # the reader went away (e.g. `cascade --help | head`): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt as interrupt:
        name = str(interrupt) or "SIGINT"
        hint = {
            "predict": " (rerun with --resume to finish)", "crossval": " (rerun the same command to go on)",
        }.get(argv[0] if argv else "", "")
        print(f"cascade: interrupted by {name}; no partial output was left{hint}", file=sys.stderr)
        sys.exit(143 if name == "SIGTERM" else 130)


if __name__ == "__main__":
    main()
