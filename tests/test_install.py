"""A non-editable install finds its bundles and demo weights from any working folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nibabel as nib

from cascade.phantom import write_phantoms
from tests.bundle_utils import REPO


def test_installed_package_predicts_with_the_demo_weights(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "cascade", source / "cascade", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        REPO / "bundles", source / "bundles", ignore=shutil.ignore_patterns("runs", "eval", "model.pt", "fold*")
    )
    shutil.copy(
        REPO / "bundles/atria_localizer/models/demo/model.pt", source / "bundles/atria_localizer/models/demo/model.pt"
    )
    shutil.copy(
        REPO / "bundles/atria_segmenter/models/demo/model.pt", source / "bundles/atria_segmenter/models/demo/model.pt"
    )
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(source)],
        check=True, timeout=300,
    )
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    write_phantoms(elsewhere / "data", cases=1, seed=77, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("CASCADE_BUNDLES", None)
    where = subprocess.run(
        [
            sys.executable, "-c",
            "import cascade, cascade.bundles as b; print(cascade.__file__); print(b.bundles_root())",
        ],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert where[0].startswith(str(site)) and where[1] == str(site / "cascade" / "_bundles")
    result = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "predict", "data", "out", "--demo", "--device", "cpu"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert nib.load(str(elsewhere / "out" / "MBAS_001_label.nii.gz")).shape == (160, 160, 24)
