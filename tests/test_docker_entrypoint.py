"""The Docker image's entrypoint, docker/predict.sh, run as the image runs it (CI has no Docker daemon):
against a regular, non-editable install of what the Dockerfile copies, from another folder, with
INPUT and OUTPUT pointing where the image mounts /input and /output."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cascade.phantom import write_phantoms

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docker" / "predict.sh"
COPIED = ("pyproject.toml", "README.md", "LICENSE", "cascade", "bundles")  # the Dockerfile's COPY lines


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install --no-deps`` of a copy of what the image copies, into a folder of its own (on top of
    this environment's dependencies, which docker/requirements.txt pins): about 5 s."""
    tmp = tmp_path_factory.mktemp("image")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp / "src" / name, ignore=shutil.ignore_patterns("__pycache__", "runs", "eval"))
        else:
            (tmp / "src").mkdir(exist_ok=True)
            shutil.copy(source, tmp / "src" / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(tmp / "site"), str(tmp / "src")], check=True, capture_output=True, timeout=300)
    return tmp / "site"


def entrypoint(site: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    unset = ("CASCADE_BUNDLES", "WEIGHTS", "PREDICT_ARGS", "MODELS", "INPUT", "OUTPUT")
    environment = {key: value for key, value in os.environ.items() if key not in unset}
    environment.update(PATH=f"{site / 'bin'}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(site), **env)
    return subprocess.run(["sh", str(SCRIPT), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=600)


def test_the_entrypoint_segments_an_mbas_folder_with_the_installed_package(installed, tmp_path):
    write_phantoms(tmp_path / "input", cases=1, seed=5, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    result = entrypoint(installed, tmp_path, INPUT=str(tmp_path / "input"), OUTPUT=str(tmp_path / "output"),
                        WEIGHTS="demo")
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path / 'input'} -> {tmp_path / 'output'} with weights demo" in result.stdout
    written = sorted(p.name for p in (tmp_path / "output").iterdir())
    assert written == ["MBAS_001_label.nii.gz", "predictions.csv", "run.json"]
    image = nib.load(str(tmp_path / "input" / "MBAS_001" / "MBAS_001_gt.nii.gz"))
    label = nib.load(str(tmp_path / "output" / "MBAS_001_label.nii.gz"))
    assert label.shape == image.shape and np.allclose(label.affine, image.affine)
    assert set(np.unique(np.asanyarray(label.dataobj)).tolist()) == {0, 1, 2, 3}
    with open(tmp_path / "output" / "predictions.csv", newline="") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["ok"]
    record = json.loads((tmp_path / "output" / "run.json").read_text())
    for stage in ("localizer", "segmenter"):  # the installed package data, not the checkout's bundles
        [checkpoint] = record["stages"][stage]["checkpoints"]
        assert Path(checkpoint["path"]).is_relative_to(installed.resolve() / "cascade" / "_bundles")


def test_the_default_weights_are_la2018_and_a_wrong_name_stops_before_the_input(installed, tmp_path):
    missing = str(tmp_path / "no_input")
    default = entrypoint(installed, tmp_path, INPUT=missing, OUTPUT=str(tmp_path / "output"))
    assert "with weights la2018" in default.stdout
    assert default.returncode == 1 and default.stderr.strip() == f"cascade: error: {missing}: input not found"
    wrong = entrypoint(installed, tmp_path, INPUT=missing, OUTPUT=str(tmp_path / "output"), WEIGHTS="la2019")
    assert wrong.returncode == 1 and "--pretrained la2019: no such shipped weights" in wrong.stderr
    assert not (tmp_path / "output").exists()


def test_the_image_pins_the_versions_the_tests_run(installed):
    """docker/requirements.txt pins every core and dicom dependency, monai and torch at this environment's versions."""
    pins = dict(re.findall(r"^([\w.-]+)==(\S+)$", (ROOT / "docker" / "requirements.txt").read_text(), re.M))
    [metadata] = installed.glob("atria_cascade-*.dist-info")
    for requirement in importlib.metadata.PathDistribution(metadata).requires:
        name, condition = re.match(r"([\w.-]+)[^;]*;?\s*(.*)", requirement).groups()
        if not condition or 'extra == "dicom"' in condition:
            assert name.lower() in pins, f"{name} is a dependency but docker/requirements.txt does not pin it"
    for name in ("monai", "torch"):
        assert pins[name] == importlib.metadata.version(name).split("+")[0]
