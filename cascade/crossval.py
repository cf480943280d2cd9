"""The paper's k-fold cross-validation protocol, run through the two bundles.

Every step is a ``python -m monai.bundle`` run of a bundle config (no second training loop) and
is skipped when its outputs exist, so an interrupted run resumes where it stopped:

1. ``WORK/datalist.json``: validated cases and their folds;
2. stage 1 for each fold: ``WORK/localizer/fold<k>/models/``;
3. out-of-fold stage-1 masks: ``WORK/masks/<case>_mask.nii.gz``, each from the fold model that
   did not train on the case;
4. stage 2 for each fold, trained on those masks: ``WORK/segmenter/fold<k>/models/``;
5. out-of-fold cascade predictions: ``WORK/predictions/<case>_label.nii.gz``;
6. ``cascade evaluate``: ``WORK/evaluation/metrics.csv`` and ``WORK/summary.json``.

Logs of every run go to ``WORK/logs/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cascade.data import DEFAULT_SEED, load_datalist, make_datalist, write_datalist
from cascade.runner import REPO_BUNDLES

__all__ = ["run_crossval"]

STAGES = {"localizer": "atria_localizer", "segmenter": "atria_segmenter"}


def _bundle_run(bundle: str, configs: list[str], args: dict, log: Path) -> None:
    """``python -m monai.bundle run`` in the bundle folder; raises with the log's tail on failure."""
    bundle_dir = REPO_BUNDLES / bundle
    config_files = "[" + ",".join(f"'configs/{c}.json'" for c in configs) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--meta_file", "configs/metadata.json", "--config_file", config_files]
    for key, value in args.items():
        command += [f"--{key}", str(value)]
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"[crossval] {bundle}: {' '.join(configs)} -> log {log}", flush=True)
    with log.open("w") as stream:
        result = subprocess.run(command, cwd=bundle_dir, stdout=stream, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{bundle} run failed (exit {result.returncode}), see {log}:\n{tail}")
    print(f"[crossval]   done in {time.perf_counter() - start:.0f} s", flush=True)


def _all_exist(paths: list[Path]) -> bool:
    return all(p.is_file() for p in paths)


def run_crossval(data: str, work: str, folds: int = 5, quick: bool = False, seed: int = DEFAULT_SEED) -> dict:
    """Train and evaluate the cascade with k-fold cross-validation (see the module docstring).

    Args:
        data: data folder (any layout ``cascade.data`` reads) with labels.
        work: working folder for everything the protocol produces.
        folds: number of folds.
        quick: layer each bundle's ``quick.json`` (a smoke configuration, minutes on a CPU).
        seed: fold assignment seed.

    Returns:
        The evaluation summary (also written to ``WORK/summary.json``).
    """
    from cascade.evaluation import evaluate

    work_dir = Path(work).resolve()
    logs = work_dir / "logs"
    datalist_path = work_dir / "datalist.json"
    if not datalist_path.is_file():
        write_datalist(make_datalist(data, num_folds=folds, seed=seed), datalist_path, folds, seed)
    datalist = load_datalist(datalist_path)
    stored_folds = 1 + max(e["fold"] for e in datalist)
    if stored_folds != folds:
        raise ValueError(f"{datalist_path}: holds {stored_folds} folds, not {folds}; use another --work folder")
    extra = ["quick"] if quick else []
    masks, predictions = work_dir / "masks", work_dir / "predictions"
    common = {"dataset_dir": datalist_path, "num_folds": folds}

    for stage, inputs in (("localizer", {}), ("segmenter", {"mask_dir": masks})):
        bundle = STAGES[stage]
        for k in range(folds):
            root = work_dir / stage / f"fold{k}"
            if not (root / "models" / "model_final.pt").is_file():
                args = {"bundle_root": root, "fold": k, **common, **inputs}
                _bundle_run(bundle, ["train", *extra], {"run_id": "training", **args}, logs / f"{stage}_fold{k}_train.log")
            validation = [e for e in datalist if e["fold"] == k]
            out_dir = masks if stage == "localizer" else predictions
            postfix = "mask" if stage == "localizer" else "label"
            if _all_exist([out_dir / f"{e['case']}_{postfix}.nii.gz" for e in validation]):
                continue
            args = {
                "bundle_root": root,
                "output_dir": out_dir,
                "datalist": f"$cascade.data.fold_datalist({str(datalist_path)!r}, {k}, 'validation', mask_dir={str(masks)!r} if {stage == 'segmenter'} else None)",
                "num_workers": 0,
            }
            _bundle_run(bundle, ["inference", *extra], args, logs / f"{stage}_fold{k}_inference.log")

    summary = evaluate(str(predictions), data, str(work_dir / "evaluation"))
    shutil.copyfile(work_dir / "evaluation" / "summary.json", work_dir / "summary.json")
    return summary
