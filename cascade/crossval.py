"""The paper's k-fold cross-validation protocol, run through the two bundles and the cascade engine.

Training is a ``python -m monai.bundle run training`` of each bundle's ``train.json`` (no second
training loop); every prediction is made by :class:`cascade.engine.CascadeEngine` with the fold's
checkpoints, exactly as ``cascade predict --models WORK --folds k`` makes it. Every training and
stage-1 mask is skipped when it exists, and every out-of-fold prediction that is finished by
``cascade predict --resume``'s rule (input and output checksums in its fold's report) and was made
with the fold's present models, configs and settings (its fold's run record; a fold trained again
has all its predictions made again). A training run stopped part-way continues after its last
finished epoch with the same random stream (:mod:`cascade.reproducibility`), so an interrupted
run resumes where it stopped and ends as an uninterrupted one would:

1. ``WORK/datalist.json``: validated cases, the classes each annotates, and their folds;
   ``WORK/crossval.json``: the settings (folds, seed, config overlay, annotated classes) a rerun
   must match. Partially labelled cases (e.g. left atrium only) train with the marginal loss and
   are scored on their annotated classes only (:mod:`cascade.annotation`);
2. stage 1 for each fold: ``WORK/localizer/fold<k>/models/``;
3. out-of-fold stage-1 masks: ``WORK/masks/<case>_mask.nii.gz``, each from the fold model that
   did not train on the case;
4. stage 2 for each fold, trained on those masks: ``WORK/segmenter/fold<k>/models/``;
5. out-of-fold cascade predictions: ``WORK/predictions/<case>_label.nii.gz`` (with the stage-1
   mask and the gate of each case beside it), each fold's report ``predictions_fold<k>.csv`` and run
   record ``run_fold<k>.json`` (what a rerun checks), and all folds' rows in ``WORK/predictions.csv``;
6. ``cascade evaluate`` against the datalist: ``WORK/evaluation/metrics.csv``, ``WORK/evaluation/gate.csv`` (how much of
   each true class the stage-1 mask and the gate held) and ``WORK/summary.json``; ``WORK/run.json``
   records the command line, settings, each fold's checkpoint (SHA-256) and the software versions;
7. with ``--single_stage``, the paper's baseline with the same budget: the segmenter trained and
   evaluated without a gate (``configs/single_stage.json``: all-ones mask, nnU-Net's default
   one-third foreground sampling) in ``WORK/single_stage/``, its summary under ``single_stage``.

Named overlays (``--config quick``, ``demo``, ``paper_handoff``, a file, or several separated by
commas, later ones winning) are merged into ``WORK/<stage>/config.json`` and layered over the
bundle's configs for training and prediction, so ``cascade predict --models WORK`` later uses the
same networks, grids and hand-off. Logs of every training run go to ``WORK/logs/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cascade.bundles import STAGES, bundle_dir, fold_checkpoint, overlay_path
from cascade.data import (
    DEFAULT_SEED, assign_folds, is_datalist_file, load_datalist, make_datalist, validate_case, write_datalist,
)
from cascade.errors import InputError
from cascade.io import check_writable_folder, save_nifti_atomic, write_text_atomic
from cascade.reproducibility import latest_epoch_checkpoint
from cascade.run_record import file_entries, new_run_record, write_run_record

__all__ = ["TrainingError", "run_crossval"]

SINGLE_STAGE = "single_stage"  # the work folder's sub-folder of the single-stage baseline


class TrainingError(RuntimeError):
    """A bundle training run failed; the message names its log and ends with the log's last lines."""


def _resume_args(root: Path) -> dict:
    """``resume_ckpt`` of an interrupted training run in ``root`` (its latest epoch checkpoint), else nothing."""
    checkpoint = latest_epoch_checkpoint(root / "models")
    if checkpoint is None:
        return {}
    print(f"[crossval] {root}: resuming after {checkpoint.name}", flush=True)
    return {"resume_ckpt": checkpoint}


def _bundle_training(stage: str, configs: list[Path], args: dict, log: Path) -> None:
    """``python -m monai.bundle run training`` in the bundle folder; raises with the log's tail on failure."""
    bundle = bundle_dir(stage)
    config_files = "[" + ",".join(repr(str(c)) for c in configs) + "]"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", "configs/metadata.json",
        "--config_file", config_files,
    ]
    for key, value in args.items():
        command += [f"--{key}", str(value)]
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"[crossval] training {stage} fold {args['fold']} -> log {log}", flush=True)
    with log.open("w") as stream:
        result = subprocess.run(command, cwd=bundle, stdout=stream, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise TrainingError(f"{stage} training failed (exit {result.returncode}), see {log}:\n{tail}")
    print(f"[crossval]   done in {time.perf_counter() - start:.0f} s", flush=True)


def _settings(
    work_dir: Path, folds: int, seed: int, config: str | None, single_stage: bool, annotated: str | None
) -> None:
    """Record the run's settings, or check that a rerun uses the same ones (a baseline may be added)."""
    path = work_dir / "crossval.json"
    settings = {"folds": folds, "seed": seed, "config": config, "annotated": annotated}
    if path.is_file():
        stored = json.loads(path.read_text())
        changed = {key: (stored.get(key), value) for key, value in settings.items() if stored.get(key) != value}
        if changed:
            detail = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
            raise InputError(
                f"{path}: this work folder was made with other settings ({detail}); use another --work folder"
            )
    else:
        work_dir.mkdir(parents=True, exist_ok=True)
        if config:
            for stage in STAGES:
                _write_overlay(work_dir / stage / "config.json", stage, config.split(","))
        path.write_text(json.dumps(settings, indent=2) + "\n")
    if single_stage and not (work_dir / SINGLE_STAGE / "config.json").is_file():
        overlays = [*(config.split(",") if config else []), "single_stage"]
        _write_overlay(work_dir / SINGLE_STAGE / "config.json", "segmenter", overlays)


def _write_run_record(work_dir: Path, command: Sequence[str], folds: int) -> None:
    """``WORK/run.json`` in :mod:`cascade.run_record`'s layout: the command line, the software versions,
    per stage (and the single-stage baseline) the bundle, its overlay (``configs``) and each fold's
    :func:`~cascade.bundles.fold_checkpoint` (``checkpoints``: what the out-of-fold predictions used and
    ``cascade predict --models WORK`` ensembles), and the settings (``crossval.json``)."""
    stages = {}
    for stage, bundle in (*((s, s) for s in STAGES), (SINGLE_STAGE, "segmenter")):
        checkpoints = [fold_checkpoint(work_dir, stage, k) for k in range(folds)]
        if not any(c.is_file() for c in checkpoints):
            continue
        overlay = work_dir / stage / "config.json"
        stages[stage] = {
            "bundle": str(bundle_dir(bundle)),
            "configs": file_entries([overlay] if overlay.is_file() else []),
            "checkpoints": file_entries([c for c in checkpoints if c.is_file()]),
        }
    settings = json.loads((work_dir / "crossval.json").read_text())
    write_run_record(work_dir, new_run_record(command, stages, settings=settings))


def _write_overlay(path: Path, stage: str, overlays: list[str]) -> None:
    """Merge a stage's overlays (names or files, later ones win) into one config file."""
    merged = {}
    for name in overlays:
        merged.update(json.loads(overlay_path(bundle_dir(stage), name).read_text()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")


def _out_of_fold_masks(work_dir: Path, fold: int, cases: list[dict], masks: Path) -> None:
    """Stage-1 masks of a fold's validation cases from that fold's localizer (:meth:`CascadeEngine.localize_image`:
    an image of one intensity gets an empty mask and a warning, as in ``cascade predict``)."""
    from cascade.engine import CascadeEngine

    missing = [case for case in cases if not (masks / f"{case['case']}_mask.nii.gz").is_file()]
    if not missing:
        return
    print(f"[crossval] stage-1 masks of fold {fold}: {len(missing)} case(s)", flush=True)
    engine = CascadeEngine.from_options(models=work_dir, folds=[fold], stages=("localizer",))
    for case in missing:
        result = engine.localize_image(case["image"])
        for warning in result.input_warnings + result.warnings:
            print(f"[crossval] warning: {warning}", flush=True)
        save_nifti_atomic(result.mask, result.affine, masks / f"{case['case']}_mask.nii.gz", header=result.header)


def _out_of_fold_predictions(
    work_dir: Path, fold: int, cases: list[dict], predictions: Path, single_stage: bool = False,
    command: Sequence[str] = (),
) -> list[dict]:
    """Cascade predictions of a fold's validation cases with that fold's two models (or its single-stage model).

    The fold's report ``predictions_fold<k>.csv`` and run record ``run_fold<k>.json`` beside the outputs let a
    rerun keep what is finished by ``cascade predict --resume``'s rule (input and output checksums in the
    report); when the record names other models (a fold trained again), other configs or settings, every
    prediction of the fold is made again. The record is written once the fold is finished.

    Returns:
        The fold report's rows of ``cases`` (:data:`cascade.predict.REPORT_COLUMNS`), kept ones included.
    """
    from cascade.engine import CascadeEngine, StagePredictor
    from cascade.predict import output_kinds, predict_cases, read_report, run_record, same_labels_record

    kind = "single-stage" if single_stage else "cascade"
    print(f"[crossval] {kind} predictions of fold {fold}: {len(cases)} case(s)", flush=True)
    if single_stage:
        root = work_dir / SINGLE_STAGE
        checkpoint = fold_checkpoint(work_dir, SINGLE_STAGE, fold)
        segmenter = StagePredictor(bundle_dir("segmenter"), [checkpoint], configs=[root / "config.json"])
        engine = CascadeEngine(None, segmenter)
    else:
        engine = CascadeEngine.from_options(models=work_dir, folds=[fold])
    record, record_name = run_record(engine, command), f"run_fold{fold}.json"
    resume = same_labels_record(predictions / record_name, record)
    if not resume and (predictions / record_name).exists():
        print(f"[crossval]   fold {fold}'s models, configs or settings changed: every prediction is made again",
              flush=True)
    report_name = f"predictions_fold{fold}.csv"
    report = predict_cases(
        engine, cases, predictions, overwrite=not resume, resume=resume, kinds=output_kinds(save_masks=True),
        report_name=report_name,
    )
    if report.interrupted:
        raise KeyboardInterrupt(report.interrupted)
    if report.failed:
        raise InputError(
            f"fold {fold}: {len(report.failed)} case(s) failed: " + "; ".join(r["message"] for r in report.failed)
        )
    write_run_record(predictions, record, record_name)
    rows = {row["case"]: row for row in read_report(predictions / report_name)[0]}
    return [rows[case["case"]] for case in cases]


def _cases(data: str | list[str], folds: int, seed: int, annotated: str | None) -> list[dict]:
    """The validated cases of the data folders, or of a datalist JSON (folds assigned anew), with their folds."""
    report = lambda line: print(f"[crossval] {line}", flush=True)  # noqa: E731
    if isinstance(data, str) and is_datalist_file(data):
        if annotated:
            raise InputError(
                f"{data}: a datalist states each case's annotated classes; --annotated applies to data folders"
            )
        cases = load_datalist(data)
        for case in cases:
            validate_case(case)
        fold_of = assign_folds([c["case"] for c in cases], folds, seed)
        return [{**c, "fold": fold_of[c["case"]]} for c in cases]
    return make_datalist(data, num_folds=folds, seed=seed, report=report, annotated=annotated)


def run_crossval(
    data: str | list[str],
    work: str,
    folds: int = 5,
    config: str | None = None,
    seed: int = DEFAULT_SEED,
    single_stage: bool = False,
    annotated: str | None = None,
    command: Sequence[str] = (),
) -> dict:
    """Train and evaluate the cascade with k-fold cross-validation (see the module docstring).

    Args:
        data: data folder (any layout ``cascade.data`` reads) with labels, several folders (a list
            or comma-separated), or a datalist JSON (its cases and annotated classes; folds are
            assigned with ``folds`` and ``seed``).
        work: working folder for everything the protocol produces.
        folds: number of folds.
        config: overlays layered over both bundles' configs, comma-separated: a bundle's own by
            name (``quick``, ``demo``, ``paper_handoff``) or JSON files; ``None``: the bundles' defaults.
        seed: fold assignment seed.
        single_stage: also train and evaluate the single-stage baseline (step 7).
        annotated: the classes the data folders' labels annotate (names or values); default:
            each folder's ``dataset.json``, else all.
        command: the command line, for ``WORK/run.json``.

    Returns:
        The evaluation summary (also written to ``WORK/summary.json``).
    """
    from cascade.evaluation import evaluate
    from cascade.predict import REPORT_NAME, PredictionReport

    work_dir = Path(os.path.abspath(work))
    check_writable_folder(work_dir, "the work folder")
    _settings(work_dir, folds, seed, config, single_stage, annotated)
    datalist_path = work_dir / "datalist.json"
    if not datalist_path.is_file():
        write_datalist(_cases(data, folds, seed, annotated), datalist_path, folds, seed)
    datalist = load_datalist(datalist_path)
    logs, masks, predictions = work_dir / "logs", work_dir / "masks", work_dir / "predictions"
    common = {"dataset_dir": datalist_path, "num_folds": folds}

    rows = []
    for stage in STAGES:
        overlay = [work_dir / stage / "config.json"] if config else []
        for k in range(folds):
            root = work_dir / stage / f"fold{k}"
            if not (root / "models" / "model_final.pt").is_file():
                args = {"bundle_root": root, "fold": k, **common, **_resume_args(root)}
                if stage == "segmenter":
                    args["mask_dir"] = masks
                _bundle_training(
                    stage, [Path("configs/train.json"), *overlay], args, logs / f"{stage}_fold{k}_train.log"
                )
            validation = [
                {"case": e["case"], "image": e["image"], "label": e["label"]} for e in datalist if e["fold"] == k
            ]
            if stage == "localizer":
                _out_of_fold_masks(work_dir, k, validation, masks)
            else:
                rows += _out_of_fold_predictions(work_dir, k, validation, predictions, command=command)
    PredictionReport(rows).write(work_dir / REPORT_NAME)

    summary = evaluate(str(predictions), str(datalist_path), str(work_dir / "evaluation"), masks=str(predictions))
    if single_stage:
        root = work_dir / SINGLE_STAGE
        rows = []
        for k in range(folds):
            if not (root / f"fold{k}" / "models" / "model_final.pt").is_file():
                args = {"bundle_root": root / f"fold{k}", "fold": k, **common, **_resume_args(root / f"fold{k}")}
                configs = [Path("configs/train.json"), root / "config.json"]
                _bundle_training("segmenter", configs, args, logs / f"single_stage_fold{k}_train.log")
            validation = [
                {"case": e["case"], "image": e["image"], "label": e["label"]} for e in datalist if e["fold"] == k
            ]
            rows += _out_of_fold_predictions(
                work_dir, k, validation, root / "predictions", single_stage=True, command=command
            )
        PredictionReport(rows).write(root / REPORT_NAME)
        print("[crossval] single-stage baseline (no gate), the same budget:", flush=True)
        summary["single_stage"] = evaluate(str(root / "predictions"), str(datalist_path), str(root / "evaluation"))
    write_text_atomic(work_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    _write_run_record(work_dir, command, folds)
    return summary
