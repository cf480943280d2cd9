"""The shipped la2018 model on real LGE-MRI scans (opt-in: ``pytest -m real_data``).

Reads 3 of the 80 real scans in ``$CASCADE_LA2018`` (default ``../shared/data/la2018``: never in
the repository, see its README). They were part of the model's 5-fold training, each in 4 of the 5
fold models, so this checks that the shipped pipeline (loading, resampling, both stages, the
hand-off, geometry and QC) reproduces what it learned, not how it generalises (docs/real_data.md
has the cross-validated numbers).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

DATA = Path(os.environ.get("CASCADE_LA2018", Path(__file__).resolve().parents[2] / "shared" / "data" / "la2018"))
pytestmark = [pytest.mark.real_data, pytest.mark.skipif(not DATA.is_dir(), reason=f"no real scans at {DATA}")]


def cascade(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "cascade.cli", *args], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_la2018_model_labels_real_left_atria(tmp_path):
    cases = sorted(p.name[: -len("_label.nii.gz")] for p in DATA.glob("*_label.nii.gz"))[:3]
    data = tmp_path / "data"
    data.mkdir()
    for case in cases:  # links, so the scans are read in place and never copied
        for name in (f"{case}.nii.gz", f"{case}_label.nii.gz"):
            (data / name).symlink_to(DATA / name)
    predicted = cascade("predict", str(data), str(tmp_path / "pred"), "--pretrained", "la2018", "--device", "cpu")
    assert "label only: left_atrium" in predicted.stdout
    assert "cascade: warning" not in predicted.stderr  # no QC warning about classes the model does not label
    report = list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    assert [r["status"] for r in report] == ["ok"] * 3
    for case in cases:
        output, source = nib.load(str(tmp_path / "pred" / f"{case}_label.nii.gz")), nib.load(
            str(DATA / f"{case}.nii.gz")
        )
        assert output.shape == source.shape and np.allclose(output.affine, source.affine)
        assert set(np.unique(np.asanyarray(output.dataobj)).tolist()) <= {0, 3}
    cascade("evaluate", str(tmp_path / "pred"), str(data), "--out", str(tmp_path / "ev"), "--annotated", "left_atrium")
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["left_atrium"]["dice"]["mean"] > 0.85  # 0.894 measured (0.918, 0.909, 0.856)
    assert summary["wall"]["status_counts"]["not_annotated"] == 3
