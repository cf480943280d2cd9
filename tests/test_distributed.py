"""torchrun on CPU ranks: DDP training of a bundle, and `cascade predict` split over the ranks."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cascade.phantom import write_phantoms
from tests.bundle_utils import BUNDLES, config_files

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    write_phantoms(root, cases=3, seed=11, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    return root


def test_both_bundles_share_one_multi_gpu_overlay():
    texts = [(BUNDLES[b] / "configs" / "multi_gpu_train.json").read_text() for b in sorted(BUNDLES)]
    assert texts[0] == texts[1]


def test_ddp_training_on_two_cpu_ranks(cases, tmp_path):
    root = tmp_path / "localizer"
    result = run(
        [*TORCHRUN, "-m", "monai.bundle", "run", "training", "--meta_file", "configs/metadata.json",
         "--config_file", config_files("train", "multi_gpu_train", "quick"), "--bundle_root", str(root),
         "--dataset_dir", str(cases), "--num_folds", "2", "--num_epochs", "2", "--val_interval", "1"],
        cwd=BUNDLES["atria_localizer"],
    )
    log = result.stdout + result.stderr
    assert "rank 0 of 2 training on cpu with batch 1" in log and "rank 1 of 2 training on cpu with batch 1" in log
    assert sorted(p.name for p in (root / "models").iterdir()) == [
        "checkpoint_epoch=2.pt", "checkpoint_final.pt", "model.pt", "model_final.pt"
    ]
    assert log.count("Epoch[2] Metrics") == 1  # validation metrics reduced over the ranks, logged by rank 0


def test_predict_splits_the_cases_over_the_ranks(cases, tmp_path):
    single = tmp_path / "single"
    run([sys.executable, "-m", "cascade.cli", "predict", str(cases), str(single), "--demo", "--device", "cpu"])
    split = tmp_path / "split"
    result = run([*TORCHRUN, "-m", "cascade.cli", "predict", str(cases), str(split), "--demo"])
    assert result.stdout.count("3 cases done") == 1  # one summary, from rank 0
    with (split / "predictions.csv").open() as stream:
        assert sorted(row["case"] for row in csv.DictReader(stream)) == ["MBAS_001", "MBAS_002", "MBAS_003"]
    for case in ("MBAS_001", "MBAS_002", "MBAS_003"):
        ours, reference = (nib.load(str(folder / f"{case}_label.nii.gz")) for folder in (split, single))
        np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(reference.dataobj))
        np.testing.assert_allclose(ours.affine, reference.affine)
