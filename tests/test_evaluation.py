import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from cascade.evaluation import CSV_COLUMNS, EvaluationError, evaluate
from tests.conftest import MBAS_AFFINE, toy_case, write_nifti


@pytest.fixture
def truth_dir(tmp_path):
    root = tmp_path / "gt"
    for i in (1, 2, 3):
        image, label = toy_case(seed=i)
        write_nifti(root / f"MBAS_00{i}" / f"MBAS_00{i}_gt.nii.gz", image)
        write_nifti(root / f"MBAS_00{i}" / f"MBAS_00{i}_label.nii.gz", label)
    return root


def flat_predictions(truth_dir, tmp_path, change=None):
    root = tmp_path / "pred"
    for i in (1, 2, 3):
        _, label = toy_case(seed=i)
        if change:
            label = change(label)
        write_nifti(root / f"MBAS_00{i}_label.nii.gz", label)
    return root


def test_identical_gives_perfect_scores_and_exact_columns(truth_dir, tmp_path):
    summary = evaluate(str(truth_dir), str(truth_dir), str(tmp_path / "ev"), workers=2)
    with (tmp_path / "ev" / "metrics.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS == ("case", "class", "dice", "hd95_mm", "hd95_monai_vox", "status")
        rows = list(reader)
    assert len(rows) == 9
    assert all(float(r["dice"]) == 1.0 and float(r["hd95_mm"]) == 0.0 for r in rows)
    stored = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert stored["wall"]["dice"]["mean"] == 1.0 == summary["mean"]["dice"]
    assert stored["cases"] == 3


def test_flat_predictions_with_an_empty_class(truth_dir, tmp_path):
    def drop_right_atrium(label):
        label = label.copy()
        label[label == 2] = 0
        return label

    pred = flat_predictions(truth_dir, tmp_path, drop_right_atrium)
    summary = evaluate(str(pred), str(truth_dir), str(tmp_path / "ev"), workers=1)
    ra = summary["right_atrium"]
    assert ra["dice"]["mean"] == 0.0 and ra["dice"]["n_valid"] == 3
    assert ra["hd95_mm"]["n_undefined"] == 3 and ra["hd95_mm"]["mean"] is None
    rows = [r for r in csv.DictReader((tmp_path / "ev" / "metrics.csv").open()) if r["class"] == "right_atrium"]
    assert [r["status"] for r in rows] == ["empty_prediction"] * 3 and all(r["hd95_mm"] == "" for r in rows)


def test_missing_case_is_an_error_unless_allowed(truth_dir, tmp_path):
    pred = flat_predictions(truth_dir, tmp_path)
    (pred / "MBAS_003_label.nii.gz").unlink()
    with pytest.raises(EvaluationError, match="MBAS_003"):
        evaluate(str(pred), str(truth_dir), str(tmp_path / "ev"))
    assert not (tmp_path / "ev").exists()
    summary = evaluate(str(pred), str(truth_dir), str(tmp_path / "ev"), allow_missing=True, workers=1)
    assert summary["cases"] == 2 and summary["missing"] == ["MBAS_003"]


def test_geometry_mismatch_names_the_file(truth_dir, tmp_path):
    pred = flat_predictions(truth_dir, tmp_path)
    shifted = MBAS_AFFINE.copy()
    shifted[2, 3] += 2.5
    write_nifti(pred / "MBAS_002_label.nii.gz", toy_case(seed=2)[1], shifted)
    with pytest.raises(EvaluationError, match="MBAS_002_label.nii.gz: geometry differs"):
        evaluate(str(pred), str(truth_dir), str(tmp_path / "ev"), workers=1)


def test_cli_exit_status_and_one_line_error(truth_dir, tmp_path):
    pred = flat_predictions(truth_dir, tmp_path)
    (pred / "MBAS_001_label.nii.gz").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "evaluate", str(pred), str(truth_dir), "--out", str(tmp_path / "ev")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("cascade: error:")]
    assert len(errors) == 1 and "MBAS_001" in errors[0]
