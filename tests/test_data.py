import numpy as np
import pytest

from cascade.data import assign_folds, discover_cases, fold_datalist, load_datalist, make_datalist, write_datalist
from cascade.errors import InputError
from tests.conftest import MBAS_AFFINE, toy_case, write_nifti


def test_discover_mbas_layout(mbas_dir):
    cases = discover_cases(mbas_dir)
    assert [c["case"] for c in cases] == [f"MBAS_{i:03d}" for i in range(1, 6)]
    assert cases[0]["image"].endswith("MBAS_001/MBAS_001_gt.nii.gz")
    assert cases[0]["label"].endswith("MBAS_001/MBAS_001_label.nii.gz")
    assert cases[4]["label"] is None


def test_discover_nnunet_and_flat_layouts(tmp_path):
    image, label = toy_case()
    write_nifti(tmp_path / "ds" / "imagesTr" / "heart_7_0000.nii.gz", image)
    write_nifti(tmp_path / "ds" / "labelsTr" / "heart_7.nii.gz", label)
    [case] = discover_cases(tmp_path / "ds")
    assert case["case"] == "heart_7" and case["label"].endswith("labelsTr/heart_7.nii.gz")

    write_nifti(tmp_path / "ts" / "a_0000.nii.gz", image)
    assert [c["case"] for c in discover_cases(tmp_path / "ts")] == ["a"]

    write_nifti(tmp_path / "flat" / "p1.nii.gz", image)
    write_nifti(tmp_path / "flat" / "p1_label.nii.gz", label)
    write_nifti(tmp_path / "flat" / "p2_label.nii.gz", label)
    write_nifti(tmp_path / "flat" / "p2_mask.nii.gz", (label > 0).astype(np.uint8))
    cases = discover_cases(tmp_path / "flat")
    assert [(c["case"], c["image"] is not None, c["label"] is not None) for c in cases] == [
        ("p1", True, True),
        ("p2", False, True),
    ]


def test_discover_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        discover_cases(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no NIfTI cases"):
        discover_cases(tmp_path / "empty")
    write_nifti(tmp_path / "mc" / "imagesTr" / "x_0001.nii.gz", toy_case()[0])
    with pytest.raises(InputError, match="single-channel"):
        discover_cases(tmp_path / "mc")


def test_folds_deterministic_and_complete():
    ids = [f"c{i}" for i in range(23)]
    folds = assign_folds(ids, 5, seed=3)
    assert folds == assign_folds(list(reversed(ids)), 5, seed=3)
    sizes = np.bincount(list(folds.values()))
    assert sizes.sum() == 23 and sizes.max() - sizes.min() <= 1
    assert folds != assign_folds(ids, 5, seed=4)


def test_fold_datalist_partitions(mbas_dir, tmp_path):
    datalist = make_datalist(mbas_dir, num_folds=2)
    assert len(datalist) == 4  # the unlabelled case is not part of training
    validated = [e["case"] for k in range(2) for e in fold_datalist(mbas_dir, k, "validation", num_folds=2)]
    assert sorted(validated) == sorted(e["case"] for e in datalist)
    train = fold_datalist(mbas_dir, 0, "train", num_folds=2)
    val = fold_datalist(mbas_dir, 0, "validation", num_folds=2)
    assert not {e["case"] for e in train} & {e["case"] for e in val}
    assert len(fold_datalist(mbas_dir, -1, "train", num_folds=2)) == 4

    path = tmp_path / "dl.json"
    write_datalist(datalist, path, num_folds=2, seed=0)
    assert load_datalist(path) == datalist


def test_validation_messages_name_the_file(tmp_path):
    image, label = toy_case()
    root = tmp_path / "bad"
    write_nifti(root / "A" / "A_gt.nii.gz", image)
    bad_label = label.copy()
    bad_label[0, 0, 0] = 7
    write_nifti(root / "A" / "A_label.nii.gz", bad_label)
    with pytest.raises(InputError, match=r"A_label\.nii\.gz: label values"):
        make_datalist(root, num_folds=2)

    write_nifti(root / "A" / "A_label.nii.gz", label[:, :, :5])
    with pytest.raises(InputError, match=r"A_label\.nii\.gz: geometry differs"):
        make_datalist(root, num_folds=2)

    shifted = MBAS_AFFINE.copy()
    shifted[0, 3] += 1.0
    write_nifti(root / "A" / "A_label.nii.gz", label, shifted)
    with pytest.raises(InputError, match="geometry differs"):
        make_datalist(root, num_folds=2)

    nan_image = image.copy()
    nan_image[1, 1, 1] = np.nan
    write_nifti(root / "A" / "A_gt.nii.gz", nan_image)
    write_nifti(root / "A" / "A_label.nii.gz", label)
    with pytest.raises(InputError, match=r"A_gt\.nii\.gz: image contains NaN"):
        make_datalist(root, num_folds=2)

    write_nifti(root / "A" / "A_gt.nii.gz", image[..., None].repeat(2, -1))
    with pytest.raises(InputError, match="expected a 3D volume"):
        make_datalist(root, num_folds=2)

    (root / "A" / "A_gt.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match=r"A_gt\.nii\.gz: not a readable NIfTI"):
        make_datalist(root, num_folds=2)


def test_too_few_cases_for_the_folds_names_the_flags():
    message = r"4 cases cannot be split into 5 folds .*use at most 4 folds \(--num_folds 4 for a bundle run, --folds 4 "
    with pytest.raises(ValueError, match=message):
        assign_folds(["a", "b", "c", "d"], 5)
