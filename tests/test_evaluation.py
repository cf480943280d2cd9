import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from cascade.evaluation import CSV_COLUMNS, EvaluationError, evaluate
from tests.conftest import MBAS_AFFINE, toy_case, write_nifti

CASES = ("MBAS_001", "MBAS_002", "MBAS_003")


@pytest.fixture
def truth_dir(tmp_path):
    """Three MBAS-layout cases with image and label (spacing 0.625 x 0.625 x 2.5 mm, (X, Y, Z))."""
    root = tmp_path / "gt"
    for i, case in enumerate(CASES, 1):
        image, label = toy_case(seed=i)
        write_nifti(root / case / f"{case}_gt.nii.gz", image)
        write_nifti(root / case / f"{case}_label.nii.gz", label)
    return root


def flat_predictions(tmp_path, change=None, cases=CASES):
    root = tmp_path / "pred"
    for i, case in enumerate(cases, 1):
        label = toy_case(seed=i)[1]
        write_nifti(root / f"{case}_label.nii.gz", change(label) if change else label)
    return root


def read_rows(out):
    with (out / "metrics.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        return tuple(reader.fieldnames), list(reader)


def test_identical_folders_score_perfectly(truth_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    summary = evaluate(str(truth_dir), str(truth_dir), str(out), workers=2)
    columns, rows = read_rows(out)
    assert columns == CSV_COLUMNS == ("case", "class", "dice", "hd95_mm", "hd95_monai_vox", "status")
    assert [(r["case"], r["class"]) for r in rows] == [
        (case, name) for case in CASES for name in ("wall", "right_atrium", "left_atrium")
    ]
    assert all(float(r["dice"]) == 1.0 and float(r["hd95_mm"]) == 0.0 == float(r["hd95_monai_vox"]) for r in rows)
    assert all(r["status"] == "ok" for r in rows)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["cases"] == 3 and summary["n_missing"] == 0 == summary["n_extra"]
    assert summary["mean"] == {"dice": 1.0, "hd95_mm": 0.0, "hd95_monai_vox": 0.0}
    assert summary["wall"]["dice"] == {
        "mean": 1.0, "std": 0.0, "median": 1.0, "min": 1.0, "n_valid": 3, "n_undefined": 0
    }
    # no temporary files left
    assert sorted(p.name for p in out.iterdir()) == ["bland_altman.png", "metrics.csv", "summary.json", "volumes.csv"]
    printed = capsys.readouterr().out
    assert printed.index("Wall") < printed.index("Right atrium") < printed.index("Left atrium")
    assert printed.index("Dice") < printed.index("HD95 mm") < printed.index("HD95 vox")


def test_known_shift_scored_in_mm_along_the_header_axes(truth_dir, tmp_path):
    """Moving the left atrium one slice along Z (2.5 mm) in MBAS_002: half its voxels still overlap."""

    def shift_left_atrium(label):
        label = label.copy()
        label[label == 3] = 1
        label[5:11, 10:13, 3:5] = 3  # the toy atrium is [5:11, 10:13, 2:4]
        return label

    pred = tmp_path / "pred"
    for i, case in enumerate(CASES, 1):  # predictions in the MBAS layout too
        label = toy_case(seed=i)[1]
        write_nifti(pred / case / f"{case}_label.nii.gz", shift_left_atrium(label) if case == "MBAS_002" else label)
    summary = evaluate(str(pred), str(truth_dir), str(tmp_path / "ev"), workers=1)
    rows = {(r["case"], r["class"]): r for r in read_rows(tmp_path / "ev")[1]}
    la = rows[("MBAS_002", "left_atrium")]
    assert float(la["dice"]) == pytest.approx(0.5)
    assert float(la["hd95_mm"]) == pytest.approx(2.5)  # not 0.625: the spacing follows the array axes
    assert float(la["hd95_monai_vox"]) == pytest.approx(1.0)
    assert summary["left_atrium"]["hd95_mm"]["mean"] == pytest.approx(2.5 / 3)
    assert summary["left_atrium"]["hd95_mm"]["median"] == 0.0
    assert float(rows[("MBAS_001", "left_atrium")]["dice"]) == 1.0


def test_empty_class_is_undefined_not_dropped(truth_dir, tmp_path):
    def drop_right_atrium(label):
        label = label.copy()
        label[label == 2] = 0
        return label

    pred = flat_predictions(tmp_path, drop_right_atrium)
    summary = evaluate(str(pred), str(truth_dir), str(tmp_path / "ev"), workers=1)
    ra = summary["right_atrium"]
    assert ra["dice"]["mean"] == 0.0 and ra["dice"]["n_valid"] == 3 and ra["dice"]["n_undefined"] == 0
    assert ra["hd95_mm"] == {"mean": None, "std": None, "median": None, "min": None, "n_valid": 0, "n_undefined": 3}
    assert ra["hd95_monai_vox"]["n_undefined"] == 3
    assert ra["status_counts"]["empty_prediction"] == 3
    assert summary["mean"]["dice"] == pytest.approx(2 / 3) and summary["mean"]["hd95_mm"] is None
    rows = [r for r in read_rows(tmp_path / "ev")[1] if r["class"] == "right_atrium"]
    assert len(rows) == 3
    assert all(r["status"] == "empty_prediction" and r["dice"] == "0.0" for r in rows)
    assert all(r["hd95_mm"] == "" and r["hd95_monai_vox"] == "" for r in rows)
    assert not any(math.isnan(float(r["dice"])) for r in rows)


def test_missing_case_is_an_error_unless_allowed(truth_dir, tmp_path):
    pred = flat_predictions(tmp_path, cases=CASES[:2])
    out = tmp_path / "ev"
    with pytest.raises(EvaluationError, match="no prediction for 1 ground-truth case.*MBAS_003"):
        evaluate(str(pred), str(truth_dir), str(out), workers=1)
    assert not out.exists()
    summary = evaluate(str(pred), str(truth_dir), str(out), allow_missing=True, workers=1)
    assert summary["cases"] == 2 and summary["missing"] == ["MBAS_003"] and summary["n_missing"] == 1
    assert {r["case"] for r in read_rows(out)[1]} == {"MBAS_001", "MBAS_002"}


def test_extra_prediction_is_reported(truth_dir, tmp_path, capsys):
    pred = flat_predictions(tmp_path)
    write_nifti(pred / "MBAS_099_label.nii.gz", toy_case(seed=9)[1])
    summary = evaluate(str(pred), str(truth_dir), str(tmp_path / "ev"), workers=1)
    assert summary["extra"] == ["MBAS_099"] and summary["n_extra"] == 1 and summary["cases"] == 3
    assert "MBAS_099" in capsys.readouterr().out


@pytest.mark.parametrize("mismatch", ["affine", "shape"])
def test_geometry_mismatch_names_the_file(truth_dir, tmp_path, mismatch):
    pred = flat_predictions(tmp_path)
    label, affine = toy_case(seed=2)[1], MBAS_AFFINE.copy()
    if mismatch == "affine":
        affine[2, 3] += 2.5
    else:
        label = label[:, :, :5]
    write_nifti(pred / "MBAS_002_label.nii.gz", label, affine)
    expected = f"MBAS_002_label.nii.gz: geometry differs from ground truth .*MBAS_002_label.nii.gz: {mismatch}"
    with pytest.raises(EvaluationError, match=expected):
        evaluate(str(pred), str(truth_dir), str(tmp_path / "ev"), workers=1)


def test_prediction_folder_without_label_maps_is_explained(truth_dir, tmp_path):
    pred = tmp_path / "pred"
    write_nifti(pred / "MBAS_001.nii.gz", toy_case(seed=1)[1])  # nnU-Net naming, read as an image
    with pytest.raises(EvaluationError, match="no predicted label maps"):
        evaluate(str(pred), str(truth_dir), str(tmp_path / "ev"), workers=1)


def test_cli_exit_status_and_one_line_error(truth_dir, tmp_path):
    pred = flat_predictions(tmp_path, cases=CASES[1:])
    result = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "evaluate", str(pred), str(truth_dir), "--out", str(tmp_path / "ev")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("cascade: error:")]
    assert len(errors) == 1 and "MBAS_001" in errors[0]


def test_gate_recall_of_known_regions(truth_dir, tmp_path, capsys):
    """The stage-1 mask holds the cavities but not the wall; the gate holds everything but one wall slab."""
    import numpy as np

    from cascade.labels import LEFT_ATRIUM, RIGHT_ATRIUM, WALL

    masks = tmp_path / "masks"
    expected = {}
    for i, case in enumerate(CASES, 1):
        label = toy_case(seed=i)[1]
        write_nifti(masks / f"{case}_mask.nii.gz", np.isin(label, (RIGHT_ATRIUM, LEFT_ATRIUM)).astype(np.uint8))
        gate = (label > 0).astype(np.uint8)
        gate[:, :, 1] = 0  # the wall's bottom slab is outside the gate
        write_nifti(masks / f"{case}_gate.nii.gz", gate)
        wall = label == WALL
        expected[case] = {
            "wall": (0.0, wall[:, :, 2:].sum() / wall.sum()),
            "right_atrium": (1.0, 1.0),
            "left_atrium": (1.0, 1.0),
            "atria": ((label > 1).sum() / (label > 0).sum(), (label[:, :, 2:] > 0).sum() / (label > 0).sum()),
        }
    summary = evaluate(
        str(flat_predictions(tmp_path)), str(truth_dir), str(tmp_path / "ev"), workers=1, masks=str(masks)
    )
    with (tmp_path / "ev" / "gate.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * len(CASES)
    for row in rows:
        mask_recall, gate_recall = expected[row["case"]][row["class"]]
        assert float(row["mask_recall"]) == pytest.approx(mask_recall)
        assert float(row["gate_recall"]) == pytest.approx(gate_recall)
    assert summary["gate"]["right_atrium"]["gate_recall"]["mean"] == 1.0
    assert summary["gate"]["wall"]["mask_recall"]["mean"] == 0.0
    assert "stage-1 mask" in capsys.readouterr().out

    (masks / "MBAS_002_mask.nii.gz").unlink()
    (masks / "MBAS_002_gate.nii.gz").unlink()
    with pytest.raises(EvaluationError, match="no stage-1 mask or gate for case MBAS_002"):
        evaluate(str(flat_predictions(tmp_path)), str(truth_dir), str(tmp_path / "ev2"), workers=1, masks=str(masks))


def test_hd95_spacing_follows_the_affine_not_pixdim(truth_dir, tmp_path):
    """A header whose pixdim disagrees with its sform: distances follow the affine, as the geometry does."""
    import nibabel as nib

    for case in CASES:
        path = truth_dir / case / f"{case}_label.nii.gz"
        img = nib.load(str(path))
        tampered = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)
        tampered.header["pixdim"][1:4] = [1.25, 1.25, 5.0]  # twice the sform's voxel size
        nib.save(tampered, str(path))
        assert nib.load(str(path)).header.get_zooms()[2] == 5.0 and np.allclose(nib.load(str(path)).affine, MBAS_AFFINE)

    def shift_left_atrium(label):
        label = label.copy()
        label[label == 3] = 1
        label[5:11, 10:13, 3:5] = 3
        return label

    pred = flat_predictions(tmp_path, shift_left_atrium)
    evaluate(str(pred), str(truth_dir), str(tmp_path / "ev"), workers=1)
    rows = {(r["case"], r["class"]): r for r in read_rows(tmp_path / "ev")[1]}
    assert float(rows[("MBAS_002", "left_atrium")]["hd95_mm"]) == pytest.approx(2.5)  # not 5.0 from pixdim


def test_left_atrium_only_truth_without_annotated_gets_one_hint(tmp_path, capsys):
    """Truth holding only the left atrium, scored as if it annotated every class: a hint names the
    flag; with --annotated given, or with truth holding every class, there is none."""
    truth, pred = tmp_path / "gt", tmp_path / "pred"
    for i, case in enumerate(CASES, 1):
        label = toy_case(seed=i)[1]
        write_nifti(truth / f"{case}_label.nii.gz", np.where(label == 3, 3, 0).astype(np.uint8))
        write_nifti(pred / f"{case}_label.nii.gz", label)
    evaluate(str(pred), str(truth), str(tmp_path / "ev"), workers=1)
    [hint] = [line for line in capsys.readouterr().out.splitlines() if "hint" in line]
    assert "no ground-truth case holds wall or right_atrium" in hint and "--annotated left_atrium" in hint
    evaluate(str(pred), str(truth), str(tmp_path / "ev2"), workers=1, annotated="left_atrium")
    evaluate(str(pred), str(pred), str(tmp_path / "ev3"), workers=1)
    assert "hint" not in capsys.readouterr().out
