"""Shared fixtures: tiny NIfTI cases written with nibabel (no dependency on the phantom module)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

MBAS_AFFINE = np.array(
    [[-0.625, 0, 0, 180.0], [0, -0.625, 0, 170.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]], dtype=np.float64
)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = MBAS_AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    nib.save(img, str(path))
    return path


def toy_case(shape=(24, 20, 6), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A small (X, Y, Z) image and a label map with all three classes."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    label[4:12, 4:14, 1:5] = 1
    label[5:11, 5:9, 2:4] = 2
    label[5:11, 10:13, 2:4] = 3
    image = (rng.normal(100, 10, shape) + 50 * (label > 1)).astype(np.float32)
    return image, label


@pytest.fixture
def mbas_dir(tmp_path: Path) -> Path:
    """Five MBAS-layout cases, the last one without a label (a test case)."""
    root = tmp_path / "mbas"
    for i in range(1, 6):
        case = f"MBAS_{i:03d}"
        image, label = toy_case(seed=i)
        write_nifti(root / case / f"{case}_gt.nii.gz", image)
        if i < 5:
            write_nifti(root / case / f"{case}_label.nii.gz", label)
    return root


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """Four reduced-grid phantom cases (24 x 160 x 160 at 2.5 x 1.25 x 1.25 mm) in the MBAS layout."""
    from cascade.phantom import write_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    write_phantoms(str(root), cases=4, seed=7, shape=(24, 160, 160), spacing=(2.5, 1.25, 1.25))
    return root


def labelled_outside_gate(labels: np.ndarray, mask: np.ndarray, spacing, margin_mm) -> int:
    """Labelled voxels farther from ``mask`` than the gate's margin (mm) allows.

    The gate is the mask dilated by ``margin_mm`` (one value or one per axis) on stage 2's grid and
    brought back to the input grid, so a voxel of either grid is allowed on top of the margin.
    """
    spacing = np.asarray(spacing, float)
    distance = distance_transform_edt(mask == 0, sampling=spacing)
    allowed = float(np.max(margin_mm)) + float(np.linalg.norm(spacing))
    return int(((labels > 0) & (distance > allowed)).sum())


@pytest.fixture
def cascade_in_process(capsys) -> Callable[..., subprocess.CompletedProcess]:
    """``cascade ARGS`` run by :func:`cascade.cli.main` in this process (no interpreter start-up, a
    few seconds less per call): exit status, stdout and stderr as a finished subprocess's."""
    from cascade.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        handler, argv = signal.getsignal(signal.SIGTERM), sys.argv  # main() installs its own handler
        sys.argv = ["cascade", *map(str, args)]  # as a process sees it (run.json records the command)
        try:
            main()
            status = 0
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        finally:
            signal.signal(signal.SIGTERM, handler)
            sys.argv = argv
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(["cascade", *args], status, captured.out, captured.err)

    return run


@pytest.fixture
def predict(cascade_in_process) -> Callable[..., subprocess.CompletedProcess]:
    """``cascade predict ARGS --device cpu`` in this process, asserted to succeed (the error-path
    tests of test_predict.py run ``cascade_cli``: a fresh interpreter shows any warning printed on the way)."""

    def run(*args: str) -> subprocess.CompletedProcess:
        result = cascade_in_process("predict", *args, "--device", "cpu")
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run
