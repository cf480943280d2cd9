"""Scoring folders of predicted label maps against ground truth: ``cascade evaluate PRED GT --out DIR``.

Predictions and ground truth are paired by case id; either side may be any layout
:func:`cascade.data.discover_cases` reads (flat ``<case>_label.nii.gz``, MBAS, nnU-Net raw), and
only the label maps are used; the ground truth may also be a datalist JSON (``cascade datalist``).
Each pair must share shape and affine; the spacing comes from the ground truth's affine, in array
axis order. The classes each ground-truth case annotates come from the datalist, ``--annotated``
or the ground-truth folder's ``dataset.json`` (:mod:`cascade.annotation`); a class a case does not
annotate is reported as ``not_annotated``, never scored. Outputs (written atomically):

- ``DIR/metrics.csv``: columns ``case,class,dice,hd95_mm,hd95_monai_vox,status``, one row per case
  and class (wall, right_atrium, left_atrium); undefined values are empty, never 0, and the row is
  kept (see :mod:`cascade.metrics` for the conventions and statuses);
- ``DIR/summary.json``: per class and metric the mean, std (population), median over the defined
  values, ``n_valid`` and ``n_undefined``; per class the status counts; ``mean``: the mean over the
  three classes of the per-class means; ``cases``, ``missing``, ``extra`` and their counts;
- with ``--masks DIR`` (the ``<case>_mask.nii.gz`` and ``<case>_gate.nii.gz`` that ``cascade
  predict --save_masks`` and ``cascade crossval`` write): ``DIR/gate.csv``, per case and class
  (wall, right_atrium, left_atrium and their union ``atria``) the share of the true class inside the
  stage-1 mask (``mask_recall``; for ``atria`` the paper's stage-1 overlap) and inside the gate stage
  2 was confined to (``gate_recall``), and their statistics under ``gate`` in the summary;
- volume agreement (:mod:`cascade.volume_agreement`): ``DIR/volumes.csv`` (per case and class the
  two volumes and their difference in ml and %), the Bland-Altman bias and 95% limits per class
  under ``volume_agreement`` in the summary, and ``DIR/bland_altman.png``.

A table in the paper's column order (wall, right atrium, left atrium; Dice then HD95 in both
conventions) is printed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from cascade.annotation import declared_classes, parse_classes
from cascade.data import is_datalist_file, load_datalist, scan_folder
from cascade.errors import InputError
from cascade.io import AFFINE_TOLERANCE, load_nifti, same_geometry, voxel_spacing, write_text_atomic
from cascade.labels import CLASS_NAMES
from cascade.metrics import STATUSES, region_recall, score_case
from cascade.qc import voxel_volume_ml
from cascade.volume_agreement import format_volume_table, write_volume_agreement

__all__ = [
    "METRIC_COLUMNS",
    "CSV_COLUMNS",
    "EvaluationError",
    "truth_files",
    "pair_cases",
    "score_pair",
    "summarize",
    "annotation_hint",
    "format_table",
    "score_gate",
    "summarize_gates",
    "format_gate_table",
    "evaluate",
]

METRIC_COLUMNS = ("dice", "hd95_mm", "hd95_monai_vox")
CSV_COLUMNS = ("case", "class", *METRIC_COLUMNS, "status")
GATE_METRICS = ("mask_recall", "gate_recall")
GATE_COLUMNS = ("case", "class", *GATE_METRICS)
GATE_CLASSES = (*CLASS_NAMES.values(), "atria")
_TABLE_CLASSES = {"wall": "Wall", "right_atrium": "Right atrium", "left_atrium": "Left atrium"}
_TABLE_METRICS = {"dice": "Dice", "hd95_mm": "HD95 mm", "hd95_monai_vox": "HD95 vox"}


class EvaluationError(InputError):
    """Predictions and ground truth cannot be paired or compared; the message names the files."""


def _label_files(root: str | os.PathLike, side: str) -> dict[str, str]:
    scan = scan_folder(root)
    if scan.conflicts:  # a stale X.nii beside X.nii.gz: scoring either could score the wrong one
        raise EvaluationError(scan.conflicts[0])
    cases = scan.cases
    labels = {c["case"]: c["label"] for c in cases if c["label"]}
    if not labels:
        raise EvaluationError(
            f"{root}: no {side} label maps among {len(cases)} case(s) "
            "(expected <case>_label.nii.gz files, MBAS folders or nnU-Net labelsTr)"
        )
    return labels


def truth_files(gt: str | os.PathLike, annotated: str | list | None = None) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Ground-truth label maps by case, each with the classes it annotates.

    Args:
        gt: folder of label maps, or a datalist JSON (its ``label`` and ``annotated`` entries).
        annotated: classes every case annotates (names or values), winning over the datalist's
            and ``dataset.json``'s.

    Raises:
        EvaluationError: no label map.
        InputError: a missing folder, a bad declaration.
    """
    if is_datalist_file(gt):
        entries = [e for e in load_datalist(gt) if e.get("label")]
        if not entries:
            raise EvaluationError(f"{gt}: the datalist holds no label map")
        override = parse_classes(annotated) if annotated else None
        return {e["case"]: (e["label"], override or tuple(e["annotated"])) for e in entries}
    classes = declared_classes(gt, annotated)
    return {case: (path, classes) for case, path in _label_files(gt, "ground-truth").items()}


def pair_cases(
    pred: str | os.PathLike, gt: str | os.PathLike, annotated: str | list | None = None
) -> tuple[list[tuple[str, str, str, tuple[int, ...]]], list[str], list[str]]:
    """Pair prediction and ground-truth label maps by case id.

    Args:
        pred: folder of predicted label maps.
        gt: folder of ground-truth label maps (cases without a label, e.g. test images, are
            ignored), or a datalist JSON.
        annotated: see :func:`truth_files`.

    Returns:
        ``(pairs, missing, extra)``: ``(case, prediction path, truth path, annotated classes)``
        sorted by case, ground-truth cases without a prediction, and predictions without a ground
        truth.

    Raises:
        EvaluationError: either side holds no label map.
        InputError: a folder is missing or holds no NIfTI case.
    """
    predictions, truths = _label_files(pred, "predicted"), truth_files(gt, annotated)
    pairs = [(case, predictions[case], *truths[case]) for case in sorted(truths) if case in predictions]
    missing = sorted(truths.keys() - predictions.keys())
    extra = sorted(predictions.keys() - truths.keys())
    return pairs, missing, extra


def score_pair(case: str, prediction: str, truth: str, annotated: tuple[int, ...] | None = None) -> list[dict]:
    """Rows of ``metrics.csv`` for one case.

    Args:
        case: case id written in the ``case`` column.
        prediction: predicted label map (NIfTI, values in {0, 1, 2, 3}).
        truth: ground-truth label map of the same geometry.
        annotated: label values the truth annotates (default: all); the others are ``not_annotated``.

    Returns:
        ``[{"case", "class", "dice", "hd95_mm", "hd95_monai_vox", "status", "prediction_ml", "truth_ml"}, ...]``,
        one per class (the class volumes in ml feed :mod:`cascade.volume_agreement`).

    Raises:
        EvaluationError: the two files differ in shape or affine.
        InputError: a file is unreadable or not a valid label map.
    """
    pred_img, truth_img = load_nifti(prediction, label=True), load_nifti(truth, label=True)
    if not same_geometry(pred_img, truth_img):
        if pred_img.shape[:3] != truth_img.shape[:3]:
            detail = f"shape {pred_img.shape[:3]} vs {truth_img.shape[:3]}"
        else:
            worst = float(np.abs(pred_img.affine - truth_img.affine).max())
            detail = f"affine differs by up to {worst:.4g} (tolerance {AFFINE_TOLERANCE} mm)"
        raise EvaluationError(f"{prediction}: geometry differs from ground truth {truth}: {detail}")
    pred_labels = np.asanyarray(pred_img.dataobj).astype(np.uint8)
    truth_labels = np.asanyarray(truth_img.dataobj).astype(np.uint8)
    drawn = sorted(set(np.unique(truth_labels).tolist()) - {0} - set(annotated or CLASS_NAMES))
    if drawn:  # the declaration contradicts the label map: scoring would compare the wrong classes
        raise EvaluationError(f"{truth}: label values {drawn} are not among the annotated classes {sorted(annotated)} "
                              "(declared by the datalist's 'annotated', --annotated or the data's dataset.json); "
                              "fix the declaration")
    rows = score_case(pred_labels, truth_labels, voxel_spacing(truth_img), annotated)
    voxel_ml = voxel_volume_ml(truth_img.affine)
    pred_ml, truth_ml = (np.bincount(labels.ravel(), minlength=4) * voxel_ml for labels in (pred_labels, truth_labels))
    values = {name: value for value, name in CLASS_NAMES.items()}
    return [{"case": case, **row, "prediction_ml": float(pred_ml[values[row["class"]]]),
             "truth_ml": float(truth_ml[values[row["class"]]])} for row in rows]


def _statistics(values: list[float]) -> dict:
    valid = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    stats = {"mean": None, "std": None, "median": None, "min": None}
    stats.update(n_valid=int(valid.size), n_undefined=len(values) - int(valid.size))
    if valid.size:
        stats.update(
            mean=float(valid.mean()), std=float(valid.std()), median=float(np.median(valid)), min=float(valid.min())
        )
    return stats


def summarize(rows: list[dict]) -> dict:
    """Statistics over cases per class and metric, and the mean of the class means.

    Args:
        rows: rows as :func:`score_pair` returns them (NaN for undefined values).

    Returns:
        ``{class: {metric: {"mean", "std", "median", "n_valid", "n_undefined"}, "status_counts":
        {status: n}}, "mean": {metric: value}}``; statistics of no defined value are ``None``.
        Rows of cases that do not annotate a class are left out of its statistics (they count
        under ``status_counts["not_annotated"]``); ``mean`` is over the classes some case
        annotates.
    """
    summary: dict = {}
    for name in CLASS_NAMES.values():
        class_rows = [r for r in rows if r["class"] == name]
        scored = [r for r in class_rows if r["status"] != "not_annotated"]
        summary[name] = {m: _statistics([r[m] for r in scored]) for m in METRIC_COLUMNS}
        summary[name]["status_counts"] = {s: sum(r["status"] == s for r in class_rows) for s in STATUSES}
    annotated = [
        name for name in CLASS_NAMES.values()
        if summary[name]["status_counts"]["not_annotated"] < sum(r["class"] == name for r in rows)
    ]
    summary["mean"] = {}
    for metric in METRIC_COLUMNS:
        means = [summary[name][metric]["mean"] for name in annotated]
        summary["mean"][metric] = None if None in means or not means else float(np.mean(means))
    return summary


def annotation_hint(rows: list[dict]) -> str | None:
    """One hint line when no ground-truth case holds a class that is scored while others are held:
    partially labelled truth (e.g. left atrium only) evaluated without ``--annotated``.

    Args:
        rows: the rows of :func:`score_pair` of every case.
    """
    statuses = {
        name: [r["status"] for r in rows if r["class"] == name and r["status"] != "not_annotated"]
        for name in CLASS_NAMES.values()
    }
    absent = [name for name, found in statuses.items() if found and set(found) <= {"empty_truth", "both_empty"}]
    held = [name for name, found in statuses.items() if found and name not in absent]
    if not absent or not held:
        return None
    return (f"[evaluate] hint: no ground-truth case holds {' or '.join(absent)}; if the labels annotate only "
            f"{', '.join(held)}, rerun with --annotated {','.join(held)} (the others are then reported as not "
            "annotated instead of scored)")


def format_table(summary: dict) -> str:
    """The paper's column order (wall, right atrium, left atrium; Dice, HD95), HD95 in both conventions.

    Rows: mean, std, median and the number of undefined values over the cases that annotate the
    class; a last line names the classes some cases do not annotate.
    """
    width = 9
    group = width * len(_TABLE_METRICS)
    lines = [
        f"{'':<10}" + "".join(f"{_TABLE_CLASSES[name]:^{group}}" for name in CLASS_NAMES.values()),
        f"{'':<10}" + "".join(f"{label:>{width}}" for _ in CLASS_NAMES for label in _TABLE_METRICS.values()),
    ]
    for stat in ("mean", "std", "median", "n_undefined"):
        cells = []
        for name in CLASS_NAMES.values():
            for metric in METRIC_COLUMNS:
                value = summary[name][metric][stat]
                cells.append("n/a" if value is None else str(value) if stat == "n_undefined" else f"{value:.3f}")
        lines.append(f"{stat:<10}" + "".join(f"{cell:>{width}}" for cell in cells))
    means = summary["mean"]
    lines.append(
        "mean of classes: "
        + ", ".join(f"{_TABLE_METRICS[m]} {'n/a' if means[m] is None else f'{means[m]:.3f}'}" for m in METRIC_COLUMNS)
    )
    silent = {name: summary[name]["status_counts"]["not_annotated"] for name in CLASS_NAMES.values()}
    if any(silent.values()):
        lines.append(
            "not annotated (not scored): " + ", ".join(f"{name} in {n} case(s)" for name, n in silent.items() if n)
        )
    return "\n".join(lines)


def _csv_text(rows: list[dict], columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(row[k], float) and math.isnan(row[k]) else row[k] for k in columns})
    return buffer.getvalue()


def score_gate(case: str, truth: str, regions: dict[str, str]) -> list[dict]:
    """Rows of ``gate.csv`` for one case: how much of each true class the stage-1 mask and the gate hold.

    Args:
        case: case id.
        truth: ground-truth label map.
        regions: ``{"mask": path, "gate": path}`` (either may be absent).

    Raises:
        EvaluationError: a region's geometry differs from the truth's.
        InputError: an unreadable file or values outside {0, 1, 2, 3}.
    """
    truth_img = load_nifti(truth, label=True)
    truth_labels = np.asanyarray(truth_img.dataobj).astype(np.uint8)
    recalls = {}
    for kind in ("mask", "gate"):
        if kind not in regions:
            recalls[kind] = dict.fromkeys(GATE_CLASSES, float("nan"))
            continue
        region = load_nifti(regions[kind], label=True)
        if not same_geometry(region, truth_img):
            raise EvaluationError(f"{regions[kind]}: geometry differs from ground truth {truth}")
        recalls[kind] = region_recall(np.asanyarray(region.dataobj) > 0, truth_labels)
    return [
        {"case": case, "class": name, "mask_recall": recalls["mask"][name], "gate_recall": recalls["gate"][name]}
        for name in GATE_CLASSES
    ]


def _gate_regions(masks: str | os.PathLike, cases: list[str]) -> dict[str, dict[str, str]]:
    """``<case>_mask.nii.gz`` / ``<case>_gate.nii.gz`` of each case in a folder.

    Raises:
        EvaluationError: the folder is missing, or a case has neither file.
    """
    folder = Path(masks)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: --masks folder not found")
    regions = {}
    for case in cases:
        found = {
            kind: str(folder / f"{case}_{kind}.nii.gz")
            for kind in ("mask", "gate")
            if (folder / f"{case}_{kind}.nii.gz").is_file()
        }
        if not found:
            raise EvaluationError(f"{folder / (case + '_gate.nii.gz')}: no stage-1 mask or gate for case {case}")
        regions[case] = found
    return regions


def summarize_gates(rows: list[dict]) -> dict:
    """Statistics over cases of ``mask_recall`` and ``gate_recall`` per class (see :func:`score_gate`)."""
    return {
        name: {m: _statistics([r[m] for r in rows if r["class"] == name]) for m in GATE_METRICS}
        for name in GATE_CLASSES
    }


def format_gate_table(gates: dict) -> str:
    """Mean (min) recall per class of the stage-1 mask and of the gate."""
    lines = [f"{'recall':<12}" + "".join(f"{name:>18}" for name in GATE_CLASSES)]
    for metric, label in (("mask_recall", "stage-1 mask"), ("gate_recall", "gate")):
        cells = []
        for name in GATE_CLASSES:
            stats = gates[name][metric]
            cells.append("n/a" if stats["mean"] is None else f"{stats['mean']:.4f} ({stats['min']:.3f})")
        lines.append(f"{label:<12}" + "".join(f"{cell:>18}" for cell in cells))
    return "\n".join(lines)


def _single_threaded_worker() -> None:
    """Pool initializer: one torch thread per worker process (the workers already use the cores)."""
    import torch

    torch.set_num_threads(1)


def _score_all(pairs: list[tuple[str, str, str, tuple[int, ...]]], workers: int) -> list[list[dict]]:
    if workers == 1 or len(pairs) == 1:
        return [score_pair(*pair) for pair in pairs]
    with ProcessPoolExecutor(min(workers, len(pairs)), initializer=_single_threaded_worker) as pool:
        futures = [pool.submit(score_pair, *pair) for pair in pairs]
        try:
            return [future.result() for future in futures]
        except BaseException:
            pool.shutdown(cancel_futures=True)  # a bad pair stops the run without scoring the rest
            raise


def evaluate(
    pred: str,
    gt: str,
    out: str,
    allow_missing: bool = False,
    workers: int = 2,
    masks: str | None = None,
    annotated: str | list | None = None,
) -> dict:
    """Score every ground-truth case against its prediction and write ``metrics.csv`` and ``summary.json``.

    Args:
        pred: folder of predicted label maps: flat (``<case>_label.nii.gz``) or MBAS layout.
        gt: folder of ground-truth label maps, same layouts (or nnU-Net raw), or a datalist JSON.
        out: output folder (created) for ``metrics.csv`` and ``summary.json``.
        allow_missing: score the cases that have a prediction when some ground-truth cases have none
            (they are listed under ``missing``).
        workers: processes scoring cases in parallel; 1 scores in this process.
        masks: folder of each case's stage-1 mask and gate: adds ``gate.csv`` and ``gate`` in the
            summary (see the module docstring).
        annotated: the classes the ground truth annotates (names or values, e.g.
            ``"left_atrium"``); default: the datalist's, else the folder's ``dataset.json``, else all.

    Returns:
        The summary written to ``summary.json`` (see the module docstring).

    Raises:
        EvaluationError: a ground-truth case without prediction (unless ``allow_missing``), no case
            to score, or a pair whose geometry differs.
        InputError: a missing folder or an unreadable or invalid label map.
        ValueError: ``workers`` below 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if os.path.realpath(pred) == os.path.realpath(gt):  # a self-check, or a mistake: say which it is
        print(f"cascade: warning: {pred}: the predictions are the ground truth folder itself; every score is perfect",
              file=sys.stderr)
    pairs, missing, extra = pair_cases(pred, gt, annotated)
    if missing and not allow_missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise EvaluationError(
            f"{pred}: no prediction for {len(missing)} ground-truth case(s) of {gt}: {shown} "
            "(--allow_missing scores the others)"
        )
    if not pairs:
        raise EvaluationError(f"{pred}: no prediction matches a ground-truth case of {gt}")
    regions = _gate_regions(masks, [case for case, *_ in pairs]) if masks else {}
    print(f"[evaluate] scoring {len(pairs)} case(s) with {min(workers, len(pairs))} worker(s)", flush=True)
    rows = [row for case_rows in _score_all(pairs, workers) for row in case_rows]
    gate_rows = [
        row for case, _, truth, _ in pairs if case in regions for row in score_gate(case, truth, regions[case])
    ]
    summary = {
        **summarize(rows),
        "cases": len(pairs),
        "n_missing": len(missing),
        "n_extra": len(extra),
        "missing": missing,
        "extra": extra,
    }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "metrics.csv", _csv_text(rows))
    summary["volume_agreement"] = write_volume_agreement(rows, out_dir)
    if gate_rows:
        summary["gate"] = summarize_gates(gate_rows)
        write_text_atomic(out_dir / "gate.csv", _csv_text(gate_rows, GATE_COLUMNS))
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(format_table(summary))
    print(format_volume_table(summary["volume_agreement"]))
    if gate_rows:
        print(format_gate_table(summary["gate"]))
    hint = annotation_hint(rows)
    if hint:
        print(hint)
    notes = [f"{len(pairs)} case(s) scored"]
    if missing:
        notes.append(f"{len(missing)} without prediction: {', '.join(missing[:10])}")
    if extra:
        notes.append(f"{len(extra)} prediction(s) without ground truth: {', '.join(extra[:10])}")
    print("[evaluate] " + "; ".join(notes) + f" -> {out_dir / 'metrics.csv'}, {out_dir / 'summary.json'}")
    return summary
