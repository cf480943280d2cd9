"""The two bundles through MONAI's own command line: metadata, network shapes, quick training,
resuming, inference and evaluation on phantom data."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from tests.bundle_utils import BUNDLES, SCHEMA, config_files, run_bundle
from tests.conftest import labelled_outside_gate

QUICK_TRAIN = config_files("train", "quick")
QUICK_INFER = config_files("inference", "quick")
QUICK_EVAL = config_files("train", "evaluate", "quick")


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_verify_metadata(bundle):
    if not SCHEMA.is_file():
        pytest.skip(f"no offline schema at {SCHEMA} (set CASCADE_METADATA_SCHEMA)")
    result = run_bundle(bundle, "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SCHEMA))
    assert "metadata is verified with no error" in result.stdout + result.stderr


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_verify_net_in_out(bundle):
    result = run_bundle(
        bundle, "verify_net_in_out", "--net_id", "network_def", "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.json",
    )
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def localizer_run(phantom_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("localizer")
    run_bundle(
        "atria_localizer", "run", "training", "--meta_file", "configs/metadata.json", "--config_file", QUICK_TRAIN,
        "--bundle_root", str(root), "--dataset_dir", str(phantom_dir), "--num_folds", "2", "--fold", "0",
    )
    return root


@pytest.fixture(scope="module")
def segmenter_run(phantom_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("segmenter")
    # MONAI Label's and the zoo's command form: `run` with the config's default run id.
    run_bundle(
        "atria_segmenter", "run", "--meta_file", "configs/metadata.json", "--config_file", QUICK_TRAIN,
        "--bundle_root", str(root), "--dataset_dir", str(phantom_dir), "--num_folds", "2", "--mask_from_label", "true",
    )
    return root


def assert_same_geometry(output: Path, reference: Path) -> None:
    out, ref = nib.load(str(output)), nib.load(str(reference))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-4)
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(ref.affine)


def test_localizer_training_writes_checkpoints(localizer_run):
    models = localizer_run / "models"
    assert {"model.pt", "model_final.pt", "checkpoint_final.pt"} <= {p.name for p in models.iterdir()}
    best = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert any(key.startswith("encoder.stem") for key in best)


def test_localizer_resumes_from_checkpoint(localizer_run, phantom_dir):
    result = run_bundle(
        "atria_localizer", "run", "training", "--meta_file", "configs/metadata.json", "--config_file", QUICK_TRAIN,
        "--bundle_root", str(localizer_run), "--dataset_dir", str(phantom_dir), "--num_folds", "2",
        "--num_epochs", "5", "--resume_ckpt", str(localizer_run / "models" / "checkpoint_final.pt"),
    )
    log = result.stdout + result.stderr
    epochs = {int(e) for e in re.findall(r"Epoch: (\d+)/5", log)}
    assert epochs == {5}, f"the resumed run should train epoch 5 only, trained {sorted(epochs)}"


def test_localizer_inference_keeps_geometry(localizer_run, phantom_dir):
    out = localizer_run / "masks"
    run_bundle(
        "atria_localizer", "run", "--meta_file", "configs/metadata.json", "--config_file", QUICK_INFER,
        "--bundle_root", str(localizer_run), "--dataset_dir", str(phantom_dir), "--output_dir", str(out),
    )
    for case_dir in sorted(phantom_dir.iterdir()):
        mask = out / f"{case_dir.name}_mask.nii.gz"
        assert_same_geometry(mask, case_dir / f"{case_dir.name}_gt.nii.gz")
        values = np.unique(np.asanyarray(nib.load(str(mask)).dataobj))
        assert set(values.tolist()) <= {0, 1}


def test_localizer_evaluation_writes_per_case_metrics(localizer_run, phantom_dir):
    out = localizer_run / "evaluation"
    run_bundle(
        "atria_localizer", "run", "--meta_file", "configs/metadata.json", "--config_file", QUICK_EVAL,
        "--bundle_root", str(localizer_run), "--dataset_dir", str(phantom_dir), "--num_folds", "2",
        "--output_dir", str(out),
    )
    metrics = {}
    # train.json's validation metrics
    for metric in ("val_mean_dice", "val_hd95_vox", "val_mask_overlap", "val_gate_recall"):
        rows = list(csv.DictReader((out / f"{metric}_raw.csv").open()))
        assert len(rows) == 2  # the two validation cases of fold 0
        metrics[metric] = {r["filename"]: float(r["mean"]) for r in rows}
    assert set(metrics["val_mean_dice"]) <= {p.name for p in phantom_dir.iterdir()}
    for case, dice in metrics["val_mean_dice"].items():
        overlap, recall, hd95 = (metrics[m][case] for m in ("val_mask_overlap", "val_gate_recall", "val_hd95_vox"))
        assert 0 <= dice <= 1 and 0 <= overlap <= 1 and 0 <= recall <= 1, (case, dice, overlap, recall)  # no nan either
        assert recall >= overlap, case  # the dilated mask covers at least what the mask covers
        assert (0 <= hd95 < np.inf) if dice > 0 else True, (case, hd95)


def test_segmenter_evaluation_writes_per_case_metrics(segmenter_run, phantom_dir):
    out = segmenter_run / "evaluation"
    run_bundle(
        "atria_segmenter", "run", "evaluating", "--meta_file", "configs/metadata.json", "--config_file", QUICK_EVAL,
        "--bundle_root", str(segmenter_run), "--dataset_dir", str(phantom_dir), "--num_folds", "2",
        "--mask_from_label", "true",
        "--output_dir", str(out),
    )
    for metric in ("val_mean_dice", "val_hd95_vox"):  # train.json's validation metrics
        rows = list(csv.DictReader((out / f"{metric}_raw.csv").open()))
        assert len(rows) == 2 and {r["filename"] for r in rows} <= {p.name for p in phantom_dir.iterdir()}


@pytest.mark.parametrize("mask_region", ["true", "false"])
def test_segmenter_gated_inference(segmenter_run, phantom_dir, mask_region):
    """Stage 2 over the mask region (default) or the whole volume never labels outside the mask."""
    assert (segmenter_run / "models" / "model.pt").is_file()
    out = segmenter_run / f"labels_crop_{mask_region}"
    run_bundle(
        "atria_segmenter", "run", "--meta_file", "configs/metadata.json", "--config_file", QUICK_INFER,
        "--bundle_root", str(segmenter_run), "--dataset_dir", str(phantom_dir), "--output_dir", str(out),
        "--mask_from_label", "true", "--mask_region", mask_region,
    )
    parser = ConfigParser()
    parser.read_config(
        [str(BUNDLES["atria_segmenter"] / "configs" / f"{name}.json") for name in ("inference", "quick")]
    )
    margin = parser.get_parsed_content("gate_margin_mm")
    for case_dir in sorted(phantom_dir.iterdir()):
        label_file = case_dir / f"{case_dir.name}_label.nii.gz"
        prediction = out / f"{case_dir.name}_label.nii.gz"
        assert_same_geometry(prediction, label_file)
        predicted = np.asanyarray(nib.load(str(prediction)).dataobj)
        assert predicted.dtype == np.uint8 and set(np.unique(predicted).tolist()) <= {0, 1, 2, 3}
        truth = nib.load(str(label_file))
        outside = labelled_outside_gate(predicted, np.asanyarray(truth.dataobj), truth.header.get_zooms(), margin)
        assert outside == 0, "a voxel outside the dilated mask was labelled"


def test_class_ratio_sampling():
    """Patch centres fall on wall / right atrium / left atrium at about 0.5 / 0.25 / 0.25."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES["atria_segmenter"] / "configs" / "train.json"))
    parser["patch_size"] = [8, 8, 4]
    crop = next(
        t for t in parser.get_parsed_content("train#random_transforms") if type(t).__name__ == "RandCropByLabelClassesd"
    )
    sampling = Compose(parser.get_parsed_content("train#sampling_transforms"))  # caches the class indices
    label = torch.zeros(1, 40, 40, 12)
    label[0, 10:30, 10:30, 3:9] = 1
    label[0, 12:20, 12:28, 4:8] = 2
    label[0, 21:28, 12:28, 4:8] = 3
    crop.set_random_state(seed=0)
    counts = np.zeros(4)
    draws = 2000
    for _ in range(draws):
        data = sampling({"image": label.clone(), "label": label.clone(), "mask": label.clone()})
        [patch] = crop(data)
        counts[int(patch["label"][0, 4, 4, 2])] += 1
    fractions = counts / draws
    assert fractions[0] == 0
    np.testing.assert_allclose(fractions[1:], [0.5, 0.25, 0.25], atol=0.04)


@pytest.mark.parametrize("bundle", ["atria_localizer", "atria_segmenter"])
def test_bundle_runs_without_weights_or_with_too_few_cases_fail_in_one_line(bundle, tmp_path, mbas_dir):
    """The model-zoo way, no overlay: a missing ./models/model.pt, and 4 labelled cases for 5 folds,
    each end with one line (after MONAI's own config warning) and status 1, not a traceback."""
    copy = tmp_path / bundle
    shutil.copytree(BUNDLES[bundle], copy, ignore=shutil.ignore_patterns("models"))
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = {
        "inference": ["run", "--config_file", "configs/inference.json", "--dataset_dir", str(mbas_dir)],
        "training": [
            "run", "training", "--config_file", "configs/train.json", "--dataset_dir", str(mbas_dir),
            "--mask_from_label", "true",
        ],
    }
    for name, args in runs.items():
        result = subprocess.run(
            [sys.executable, "-m", "monai.bundle", *args], cwd=copy, capture_output=True, text=True, env=environment,
            timeout=300,
        )
        assert result.returncode == 1, (name, result.stderr[-2000:])
        [line] = [line for line in result.stderr.splitlines() if line.strip()]
        expected = {
            "inference": "error: ./models/model.pt: checkpoint not found; get weights:",
            "training": "error: 4 cases cannot be split into 5 folds",
        }[name]
        assert line.startswith(expected), (name, line)


def test_la2018_bundle_run_says_it_predicts_with_fold_0_alone(tmp_path):
    """`python -m monai.bundle run` with configs/la2018.json loads fold0.pt, while `cascade predict
    --pretrained la2018` ensembles the five folds: the run says so in one line, and labels the case."""
    from cascade.bundles import note_single_fold
    from tests.conftest import toy_case, write_nifti

    write_nifti(tmp_path / "data" / "MBAS_001" / "MBAS_001_gt.nii.gz", toy_case(seed=1)[0])
    result = run_bundle(
        "atria_localizer", "run", "--config_file", config_files("inference", "la2018"),
        "--meta_file", "configs/metadata.json", "--dataset_dir", str(tmp_path / "data"),
        "--output_dir", str(tmp_path / "out"), "--device", "$torch.device('cpu')",
    )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "predicts with fold0 alone" in line]
    assert len(lines) == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "one of the 5 folds of the la2018 weights; " in lines[0]
    assert "`cascade predict IN OUT --pretrained la2018` ensembles all 5" in lines[0]
    assert (tmp_path / "out" / "MBAS_001_mask.nii.gz").is_file()
    for stage in ("localizer", "segmenter"):
        folder = BUNDLES[f"atria_{stage}"] / "models"
        fold3 = folder / "la2018" / "fold3.pt"
        assert note_single_fold(fold3).startswith(f"{fold3}: this bundle run")
        assert note_single_fold(folder / "demo" / "model.pt") is None  # one model: nothing to say
