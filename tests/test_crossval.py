"""`cascade crossval --quick`: the paper's protocol on 6 phantom cases, 2 folds, through the bundles."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from cascade.phantom import write_phantoms
from cascade.runner import BundlePredictor
from tests.bundle_utils import BUNDLES


@pytest.fixture(scope="module")
def crossval_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossval")
    write_phantoms(root / "data", cases=6, seed=50, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    command = [sys.executable, "-m", "cascade.cli", "crossval", str(root / "data"), "--work", str(root / "work"), "--folds", "2", "--quick"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    return root, first, second


def test_protocol_outputs(crossval_run):
    root, first, _ = crossval_run
    work = root / "work"
    datalist = json.loads((work / "datalist.json").read_text())["training"]
    assert sorted(e["fold"] for e in datalist) == [0, 0, 0, 1, 1, 1]
    for entry in datalist:
        assert (work / "masks" / f"{entry['case']}_mask.nii.gz").is_file()
        assert (work / "predictions" / f"{entry['case']}_label.nii.gz").is_file()
    for stage in ("localizer", "segmenter"):
        for fold in (0, 1):
            assert (work / stage / f"fold{fold}" / "models" / "model.pt").is_file()
    rows = list(csv.DictReader((work / "evaluation" / "metrics.csv").open()))
    assert len(rows) == 18 and {r["class"] for r in rows} == {"wall", "right_atrium", "left_atrium"}
    summary = json.loads((work / "summary.json").read_text())
    assert summary["cases"] == 6 and set(summary["mean"]) == {"dice", "hd95_mm", "hd95_monai_vox"}
    # the Table 6 layout is printed
    assert "HD95 mm" in first.stdout and "HD95 vox" in first.stdout and "Right atrium" in first.stdout


def test_masks_are_out_of_fold(crossval_run):
    """A case's stage-1 mask is the prediction of the fold model that did not train on it."""
    root, _, _ = crossval_run
    work = root / "work"
    datalist = json.loads((work / "datalist.json").read_text())["training"]
    case = next(e for e in datalist if e["fold"] == 1)
    stored = np.asanyarray(nib.load(str(work / "masks" / f"{case['case']}_mask.nii.gz")).dataobj)
    localizer = BundlePredictor(
        BUNDLES["atria_localizer"], [work / "localizer" / "fold1" / "models" / "model.pt"],
        extra_configs=["quick.json"], overrides={"num_workers": 0},
    )
    predicted = localizer({"image": case["image"]})["pred"][0].numpy().astype(stored.dtype)
    np.testing.assert_array_equal(stored, predicted)


def test_rerun_skips_finished_steps(crossval_run):
    _, _, second = crossval_run
    assert "train quick" not in second.stdout and "inference quick" not in second.stdout
