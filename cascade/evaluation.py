"""Scoring folders of predicted label maps against ground truth: ``cascade evaluate PRED GT --out DIR``.

Writes ``DIR/metrics.csv`` (columns ``case,class,dice,hd95_mm,hd95_monai_vox,status``; undefined
values empty) and ``DIR/summary.json`` (per class and metric: mean, std, median, n_valid,
n_undefined; the mean over the three classes; case counts), and prints a table in the paper's
column order (Table 6: wall, right atrium, left atrium; Dice and HD95).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from cascade.data import discover_cases
from cascade.io import InputError, load_nifti, same_geometry, voxel_spacing
from cascade.labels import CLASS_NAMES
from cascade.metrics import score_case

__all__ = ["METRIC_COLUMNS", "EvaluationError", "pair_cases", "score_pair", "summarize", "format_table", "evaluate"]

METRIC_COLUMNS = ("dice", "hd95_mm", "hd95_monai_vox")
CSV_COLUMNS = ("case", "class", *METRIC_COLUMNS, "status")


class EvaluationError(InputError):
    """Predictions and ground truth cannot be paired or compared."""


def _label_files(root: str | os.PathLike) -> dict[str, str]:
    return {c["case"]: c["label"] for c in discover_cases(root) if c["label"]}


def pair_cases(pred: str | os.PathLike, gt: str | os.PathLike) -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    """Pair prediction and ground-truth label maps by case id.

    Returns:
        ``(pairs, missing, extra)``: ``(case, prediction, truth)`` triples, ground-truth cases
        without a prediction, and predictions without a ground truth.
    """
    predictions, truths = _label_files(pred), _label_files(gt)
    if not truths:
        raise EvaluationError(f"{gt}: no ground-truth label maps found")
    pairs = [(case, predictions[case], truths[case]) for case in sorted(truths) if case in predictions]
    missing = sorted(set(truths) - set(predictions))
    extra = sorted(set(predictions) - set(truths))
    return pairs, missing, extra


def score_pair(case: str, prediction: str, truth: str) -> list[dict]:
    """Rows of ``metrics.csv`` for one case.

    Raises:
        EvaluationError: unreadable files or differing geometry.
    """
    pred_img, truth_img = load_nifti(prediction, label=True), load_nifti(truth, label=True)
    if not same_geometry(pred_img, truth_img):
        raise EvaluationError(
            f"{prediction}: geometry differs from {truth} (shape {pred_img.shape} vs {truth_img.shape}, or affine)"
        )
    rows = score_case(
        np.asanyarray(pred_img.dataobj).astype(np.uint8),
        np.asanyarray(truth_img.dataobj).astype(np.uint8),
        voxel_spacing(truth_img),
    )
    return [{"case": case, **row} for row in rows]


def _statistics(values: list[float]) -> dict:
    valid = [v for v in values if not math.isnan(v)]
    stats = {"n_valid": len(valid), "n_undefined": len(values) - len(valid)}
    if valid:
        stats.update(mean=float(np.mean(valid)), std=float(np.std(valid)), median=float(np.median(valid)))
    else:
        stats.update(mean=None, std=None, median=None)
    return stats


def summarize(rows: list[dict]) -> dict:
    """Per class and metric statistics over cases, plus the mean over the three classes."""
    summary: dict = {}
    for name in CLASS_NAMES.values():
        class_rows = [r for r in rows if r["class"] == name]
        summary[name] = {m: _statistics([r[m] for r in class_rows]) for m in METRIC_COLUMNS}
    summary["mean"] = {}
    for metric in METRIC_COLUMNS:
        means = [summary[name][metric]["mean"] for name in CLASS_NAMES.values()]
        summary["mean"][metric] = None if None in means else float(np.mean(means))
    return summary


def format_table(summary: dict) -> str:
    """The paper's Table 6 layout: Dice and HD95 (both conventions) for wall, right and left atrium."""
    header = f"{'':<22}" + "".join(f"{name:>14}" for name in CLASS_NAMES.values()) + f"{'mean':>10}"
    lines = [header]
    for metric, label in (("dice", "Dice"), ("hd95_mm", "HD95 [mm, MBAS]"), ("hd95_monai_vox", "HD95 [vox, paper]")):
        cells = []
        for name in CLASS_NAMES.values():
            stats = summary[name][metric]
            value = "n/a" if stats["mean"] is None else f"{stats['mean']:.3f}"
            if stats["n_undefined"]:
                value += f" ({stats['n_undefined']}?)"
            cells.append(f"{value:>14}")
        mean = summary["mean"][metric]
        lines.append(f"{label:<22}" + "".join(cells) + f"{'n/a' if mean is None else f'{mean:.3f}':>10}")
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(row[k], float) and math.isnan(row[k]) else row[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


def evaluate(pred: str, gt: str, out: str, allow_missing: bool = False, workers: int = 2) -> dict:
    """Score every ground-truth case that has a prediction.

    Args:
        pred: predictions, flat (``<case>_label.nii.gz``) or MBAS-layout folder.
        gt: ground truth, same layouts.
        out: output folder for ``metrics.csv`` and ``summary.json``.
        allow_missing: score what is there when ground-truth cases have no prediction.
        workers: processes scoring cases in parallel (1: in this process).

    Returns:
        The summary written to ``summary.json``.

    Raises:
        EvaluationError: a ground-truth case without prediction (unless ``allow_missing``),
            unreadable files or differing geometry.
    """
    pairs, missing, extra = pair_cases(pred, gt)
    if missing and not allow_missing:
        raise EvaluationError(f"{pred}: no prediction for {len(missing)} ground-truth case(s): {', '.join(missing[:10])}")
    if not pairs:
        raise EvaluationError(f"{pred}: no prediction matches a ground-truth case of {gt}")
    if workers > 1 and len(pairs) > 1:
        with ProcessPoolExecutor(min(workers, len(pairs))) as pool:
            per_case = list(pool.map(score_pair, *zip(*pairs)))
    else:
        per_case = [score_pair(*pair) for pair in pairs]
    rows = [row for case_rows in per_case for row in case_rows]
    summary = {
        **summarize(rows),
        "cases": len(pairs),
        "missing": missing,
        "extra": extra,
        "status_counts": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
    }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / "metrics.csv", _csv_text(rows))
    _write_atomic(out_dir / "summary.json", json.dumps(summary, indent=2))
    print(format_table(summary))
    notes = [f"{len(pairs)} cases scored"]
    if missing:
        notes.append(f"{len(missing)} missing: {', '.join(missing[:10])}")
    if extra:
        notes.append(f"{len(extra)} predictions without ground truth: {', '.join(extra[:10])}")
    print("; ".join(notes) + f" -> {out_dir / 'metrics.csv'}, {out_dir / 'summary.json'}")
    return summary
