"""Partially labelled data: declaring the annotated classes, datalists that mix them, scoring them."""

import json

import numpy as np
import pytest
import torch

from cascade.annotation import (
    ALL_CLASSES,
    AnnotationChanneld,
    annotation_code,
    classes_from_code,
    declared_classes,
    parse_classes,
)
from cascade.data import fold_datalist, load_datalist, make_datalist, write_datalist
from cascade.evaluation import evaluate
from cascade.errors import InputError
from tests.conftest import toy_case, write_nifti


def la_only(label: np.ndarray) -> np.ndarray:
    """A full label map reduced to what a left-atrium-only dataset annotates."""
    return np.where(label == 3, 3, 0).astype(np.uint8)


def flat_cases(root, ids, reduce=None):
    for i, case in enumerate(ids, 1):
        image, label = toy_case(seed=i)
        write_nifti(root / f"{case}.nii.gz", image)
        write_nifti(root / f"{case}_label.nii.gz", reduce(label) if reduce else label)
    return root


def test_parse_classes_names_values_and_errors():
    assert parse_classes("left_atrium") == (3,)
    assert parse_classes("3,wall") == (1, 3)
    assert parse_classes(["right_atrium", 3]) == (2, 3)
    assert parse_classes(2) == (2,)
    with pytest.raises(InputError, match="unknown class 'la'"):
        parse_classes("la")
    with pytest.raises(InputError, match="unknown class '0'"):
        parse_classes("0")
    with pytest.raises(InputError, match="no class"):
        parse_classes(" , ")


def test_declared_classes_flag_beats_dataset_json(tmp_path):
    assert declared_classes(tmp_path) == ALL_CLASSES
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "LA": 3}, "numTraining": 2}))
    assert declared_classes(tmp_path) == (3,)
    assert declared_classes(tmp_path, "wall,right_atrium") == (1, 2)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "LA": 5}}))
    with pytest.raises(InputError, match="dataset.json: 'labels' must hold background 0"):
        declared_classes(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable dataset.json"):
        declared_classes(tmp_path)


def test_annotation_code_round_trip():
    assert annotation_code([3]) == 0b1001 and annotation_code(ALL_CLASSES) == 0b1111
    for classes in [(1,), (3,), (1, 3), (2, 3), ALL_CLASSES]:
        assert classes_from_code(annotation_code(classes)) == classes


def test_annotation_channel_is_constant_and_survives_collation():
    label = torch.zeros(2, 6, 5, 4)
    out = AnnotationChanneld("label")({"label": label, "annotated": [3]})
    assert out["label"].shape == (3, 6, 5, 4)
    assert torch.equal(out["label"][2], torch.full((6, 5, 4), float(annotation_code([3]))))
    assert AnnotationChanneld("label")({"label": label})["label"][2].unique().tolist() == [15.0]


def test_mixed_datalist_from_two_folders(tmp_path):
    full = flat_cases(tmp_path / "mbas", ["a1", "a2", "a3"])
    partial = flat_cases(tmp_path / "la", ["b1", "b2", "b3"], la_only)
    (partial / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "left_atrium": 3}}))
    datalist = make_datalist(f"{full},{partial}", num_folds=3)
    assert {e["case"]: e["annotated"] for e in datalist} == {
        "a1": [1, 2, 3], "a2": [1, 2, 3], "a3": [1, 2, 3], "b1": [3], "b2": [3], "b3": [3],
    }
    path = tmp_path / "mixed.json"
    write_datalist(datalist, path, num_folds=3, seed=0)
    assert load_datalist(path) == datalist
    train = fold_datalist(path, 0, "train", num_folds=3)
    assert all("annotated" in e for e in train)

    with pytest.raises(InputError, match="case ids found in more than one data folder"):
        make_datalist([full, full], num_folds=3)


def test_labels_beyond_the_declared_classes_are_refused(tmp_path):
    root = flat_cases(tmp_path / "d", ["c1", "c2"])
    with pytest.raises(
        InputError, match=r"c1_label.nii.gz: label values \[1, 2\] are not among the annotated classes \[3\]"
    ):
        make_datalist(root, num_folds=2, annotated="left_atrium")


def test_evaluate_reports_unannotated_classes_as_not_annotated(tmp_path):
    """A perfect LA prediction that also labels RA and wall: Dice 1 for the LA, no score (not 0) for the rest."""
    truth = flat_cases(tmp_path / "gt", ["c1", "c2"], la_only)
    pred = tmp_path / "pred"
    for i, case in enumerate(["c1", "c2"], 1):
        write_nifti(pred / f"{case}_label.nii.gz", toy_case(seed=i)[1])
    summary = evaluate(str(pred), str(truth), str(tmp_path / "ev"), workers=1, annotated="left_atrium")
    assert summary["left_atrium"]["dice"]["mean"] == 1.0
    for name in ("wall", "right_atrium"):
        assert summary[name]["dice"]["mean"] is None and summary[name]["dice"]["n_undefined"] == 0
        assert summary[name]["status_counts"]["not_annotated"] == 2
    assert summary["mean"]["dice"] == 1.0
    rows = (tmp_path / "ev" / "metrics.csv").read_text().splitlines()
    assert "c1,wall,,,,not_annotated" in rows and "c1,left_atrium,1.0,0.0,0.0,ok" in rows

    # without the declaration the same files score wall and right atrium as wrong
    plain = evaluate(str(pred), str(truth), str(tmp_path / "ev2"), workers=1)
    assert plain["wall"]["dice"]["mean"] == 0.0

    # a datalist carries the declaration per case
    path = tmp_path / "list.json"
    write_datalist(make_datalist(truth, num_folds=2, annotated="3"), path, num_folds=2, seed=0)
    summary = evaluate(str(pred), str(path), str(tmp_path / "ev3"), workers=1)
    assert summary["wall"]["status_counts"]["not_annotated"] == 2
