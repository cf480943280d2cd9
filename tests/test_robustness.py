"""Messy real-world input through `cascade predict`: no silent wrong result, no aborted batch, no lost file."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from cascade.metrics import dice
from cascade.phantom import make_phantom
from tests.conftest import write_nifti

SHAPE, SPACING = (24, 160, 160), (2.5, 1.25, 1.25)


def cascade(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cascade.cli", *args], capture_output=True, text=True, timeout=900, **kwargs
    )


def lines(stream: str, kind: str) -> list[str]:
    return [line for line in stream.splitlines() if line.startswith(f"cascade: {kind}:")]


def report(out: Path) -> dict[str, dict]:
    with (out / "predictions.csv").open() as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def labels_of(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return make_phantom(4242, SHAPE, SPACING)


def stored_as(
    image: np.ndarray, affine: np.ndarray, order: tuple[int, int, int], flips: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The same world-space image stored with its axes permuted to ``order`` and then ``flips`` reversed."""
    data, matrix = image.transpose(order), affine[:, list(order) + [3]].copy()
    for axis in flips:
        data = np.flip(data, axis)
        matrix[:3, 3] += matrix[:3, axis] * (data.shape[axis] - 1)
        matrix[:3, axis] *= -1
    return np.ascontiguousarray(data), matrix


def back_to_original(labels: np.ndarray, order: tuple[int, int, int], flips: tuple[int, ...]) -> np.ndarray:
    for axis in flips:
        labels = np.flip(labels, axis)
    return labels.transpose(np.argsort(order))


def test_storage_order_and_orientation_do_not_change_the_labels(phantom, tmp_path, cascade_in_process):
    """The same scan stored slice axis first or flipped gets the same labels in world space (each
    image is brought to RAS before resampling and back on output)."""
    image, _, affine = phantom
    storages = {"original": ((0, 1, 2), ()), "slices_first": ((2, 0, 1), ()), "flipped": ((1, 0, 2), (0, 2))}
    for name, (order, flips) in storages.items():
        data, matrix = stored_as(image, affine, order, flips)
        write_nifti(tmp_path / "in" / f"{name}.nii.gz", data, matrix)
    result = cascade_in_process("predict", str(tmp_path / "in"), str(tmp_path / "out"), "--demo", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    reference = labels_of(tmp_path / "out" / "original_label.nii.gz")
    assert set(np.unique(reference)) == {0, 1, 2, 3}
    for name, (order, flips) in storages.items():
        output = nib.load(str(tmp_path / "out" / f"{name}_label.nii.gz"))
        assert np.allclose(output.affine, nib.load(str(tmp_path / "in" / f"{name}.nii.gz")).affine, atol=1e-4)
        np.testing.assert_array_equal(back_to_original(np.asanyarray(output.dataobj), order, flips), reference)


def rotation_about(axis: int, degrees: float) -> np.ndarray:
    """(3, 3) rotation by ``degrees`` about world axis ``axis`` (0 = x, 1 = y, 2 = z)."""
    angle = np.deg2rad(degrees)
    i, j = [k for k in range(3) if k != axis]
    rotation = np.eye(3)
    rotation[i, i] = rotation[j, j] = np.cos(angle)
    rotation[i, j], rotation[j, i] = -np.sin(angle), np.sin(angle)
    return rotation


def sampled_on(
    grid_affine: np.ndarray, shape: tuple[int, int, int], array: np.ndarray, affine: np.ndarray, order: int
) -> np.ndarray:
    """``array`` (on ``affine``) sampled at the voxel centres of a grid of ``shape`` on ``grid_affine``."""
    world = grid_affine[:3, :3] @ np.indices(shape).reshape(3, -1) + grid_affine[:3, 3:]
    source = np.linalg.solve(affine[:3, :3], world - affine[:3, 3:])
    assert (source >= -0.5).all() and (source <= np.array(array.shape)[:, None] - 0.5).all(), "grid leaves the source"
    return map_coordinates(array, source, order=order).reshape(shape).astype(array.dtype)


def test_a_tilted_grid_labels_like_an_axis_aligned_one(tmp_path, cascade_in_process):
    """One phantom (rendered at 1.25 mm isotropic over 275 x 275 x 170 mm) sampled on an axis-aligned
    200 x 200 x 80 mm grid of 1.25 x 1.25 x 2.5 mm voxels and on the same grid tilted 30 degrees about
    x, y and z: every class's Dice against the ground truth on its own grid stays within 0.05 of the
    axis-aligned one (both stages resample onto an axis-aligned world grid, ``Spacingd(diagonal=True)``)."""
    image, label, affine = make_phantom(4242, (136, 220, 220), (1.25, 1.25, 1.25))
    centre = affine[:3, :3] @ ((np.array(image.shape) - 1) / 2) + affine[:3, 3]
    shape = (160, 160, 32)
    tilts = {"aligned": np.eye(3), **{f"tilt_{name}": rotation_about(axis, 30) for axis, name in enumerate("xyz")}}
    truth = {}
    for name, rotation in tilts.items():
        grid = np.eye(4)
        grid[:3, :3] = rotation @ np.diag([-1.25, -1.25, 2.5])
        grid[:3, 3] = centre - grid[:3, :3] @ ((np.array(shape) - 1) / 2)
        write_nifti(tmp_path / "in" / f"{name}.nii.gz", sampled_on(grid, shape, image, affine, 1), grid)
        truth[name] = sampled_on(grid, shape, label, affine, 0)
    result = cascade_in_process("predict", str(tmp_path / "in"), str(tmp_path / "out"), "--demo", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = {
        name: np.array([
            dice(labels_of(tmp_path / "out" / f"{name}_label.nii.gz") == value, truth[name] == value)
            for value in (1, 2, 3)
        ])
        for name in tilts
    }
    assert (scores["aligned"] > [0.55, 0.85, 0.8]).all(), scores["aligned"]
    for name in tilts:
        assert np.abs(scores[name] - scores["aligned"]).max() < 0.05, (name, scores[name], scores["aligned"])


def test_corrupt_slices_and_spikes_do_not_wreck_the_labels_and_are_reported(phantom, tmp_path, cascade_in_process):
    """An edge slice saturated at 6x the image maximum or at 65535, or a few spike voxels, once
    flattened the z-score and the labels (Dice 0.5 or 0); now they are repaired before the
    networks, the labels stay within 0.05 Dice of the clean scan's, and the QC row says what was
    repaired. The clean scan gets no warning."""
    image, label, affine = phantom
    rng = np.random.default_rng(0)
    variants = {"clean": image, "saturated": image.copy(), "saturated_65535": image.copy(), "spikes": image.copy()}
    variants["saturated"][:, :, -1] = 6 * image.max()
    variants["saturated_65535"][:, :, 0] = 65535
    variants["spikes"][tuple(rng.integers(0, n, 40) for n in image.shape)] = 1e6
    for name, data in variants.items():
        write_nifti(tmp_path / "in" / f"{name}.nii.gz", data, affine)
    thick, _, thick_affine = make_phantom(4242, (8, 160, 160), (8.0, 1.25, 1.25))  # a 2D stack of 8 mm slices
    write_nifti(tmp_path / "in" / "thick_slices.nii.gz", thick, thick_affine)
    result = cascade_in_process("predict", str(tmp_path / "in"), str(tmp_path / "out"), "--demo", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = report(tmp_path / "out")
    assert (rows["clean"]["status"], rows["clean"]["message"]) == ("ok", "")
    # stderr is not a terminal here, as in a batch job's log: one progress line per case, in order
    progress = [line for line in result.stderr.splitlines() if line.startswith("cascade: [")]
    assert [line.split("]")[0] for line in progress] == [f"cascade: [{i}/5" for i in range(1, 6)]
    assert "/5] clean: ok, " in progress[0]
    assert all(re.search(r"\d+\.\d s; ETA (\d+ min )?\d+ s$", line) for line in progress), progress
    assert "slice 23 along axis 2 is " in rows["saturated"]["message"]
    assert "slice 0 along axis 2 is " in rows["saturated_65535"]["message"]
    assert "40 spike voxels" in rows["spikes"]["message"]
    assert "voxel size 1.25 x 1.25 x 8 mm is coarser than 4 mm on an axis" in rows["thick_slices"]["message"]
    warned = [
        line for line in lines(result.stderr, "warning")
        if "as bright as the median slice" in line or "spike voxels" in line
    ]
    assert len(warned) == 3
    scores = {
        name: np.array(
            [dice(labels_of(tmp_path / "out" / f"{name}_label.nii.gz") == value, label == value) for value in (1, 2, 3)]
        )
        for name in variants
    }
    for name in variants:
        assert np.abs(scores[name] - scores["clean"]).max() < 0.05, (name, scores[name], scores["clean"])


def test_out_of_memory_is_named_with_the_case_and_its_size(phantom, tmp_path):
    """A 1.6 m field of view resampled to the localizer's 2 mm grid cannot fit a process limited to
    4 GB of address space (RLIMIT_AS): the case fails with one line saying so, the next case runs."""
    resource = pytest.importorskip("resource")
    image, _, affine = phantom
    huge = np.random.default_rng(0).normal(100, 10, (100, 100, 100)).astype(np.float32)
    write_nifti(tmp_path / "in" / "huge.nii.gz", huge, np.diag([16.0, 16.0, 16.0, 1.0]))
    write_nifti(tmp_path / "in" / "normal.nii.gz", image, affine)
    limit = 4 << 30

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = cascade(
        "predict", str(tmp_path / "in"), str(tmp_path / "out"), "--demo", "--device", "cpu", preexec_fn=limit_memory
    )
    assert result.returncode == 1, result.stderr[-3000:]
    [line] = [line for line in lines(result.stderr, "error") if "huge" in line]
    assert (
        "huge.nii.gz: out of memory on cpu on a volume of 100 x 100 x 100 voxels (1.0 M) covering 1600 x 1600 x 1600 mm"
    ) in line
    assert report(tmp_path / "out")["normal"]["status"] == "ok"
    assert not (tmp_path / "out" / "huge_label.nii.gz").exists()


def test_bad_files_are_one_line_each_and_the_rest_of_the_folder_completes(phantom, tmp_path, cascade_in_process):
    image, label, affine = phantom
    source = tmp_path / "in"
    write_nifti(source / "good.nii.gz", image, affine)
    write_nifti(source / "metres.nii.gz", image, np.diag([0.001, 0.001, 0.001, 1]) @ affine)
    singular = affine.copy()
    singular[:3, 2] = 0
    flat_slices = nib.Nifti1Image(image, None)
    flat_slices.set_sform(singular, 1)  # a qform cannot even hold it
    nib.save(flat_slices, str(source / "singular.nii.gz"))
    rgb = np.zeros(image.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, affine), str(source / "rgb.nii.gz"))
    (source / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    write_nifti(source / "constant.nii.gz", np.full(image.shape, 7.0, np.float32), affine)
    write_nifti(source / "good_label.nii.gz", label, affine)  # ground truth beside its image
    before = {p.name: p.read_bytes() for p in source.iterdir()}

    result = cascade_in_process("predict", str(source), str(tmp_path / "out"), "--demo", "--device", "cpu")
    assert result.returncode == 1
    errors = lines(result.stderr, "error")
    expected = {
        "metres.nii.gz": (
            "voxel size 0.00125 x 0.00125 x 0.0025 mm is outside the plausible 0.1-20 mm "
            "(metres instead of millimetres?)"
        ),
        "singular.nii.gz": "affine is singular",
        "rgb.nii.gz": "multi-component voxels",
        "corrupt.nii.gz": "not a readable NIfTI file",
    }
    assert len(errors) == len(expected)
    for name, message in expected.items():
        assert any(name in line and message in line for line in errors), (name, errors)
    [warning] = lines(result.stderr, "warning")
    assert "constant.nii.gz: constant intensity 7" in warning
    assert "4 failed" in result.stdout and all(name.split(".")[0] in result.stdout for name in expected)
    rows = report(tmp_path / "out")
    assert rows["good"]["status"] == "ok" and float(rows["good"]["left_atrium_ml"]) > 10
    assert rows["constant"]["status"] == "warning" and not labels_of(tmp_path / "out" / "constant_label.nii.gz").any()
    assert {rows[name.split(".")[0]]["status"] for name in expected} == {"failed"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "constant_label.nii.gz", "good_label.nii.gz", "predictions.csv", "run.json"
    ]
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before  # inputs never modified


def test_inputs_are_never_overwritten_and_resume_checks_outputs(phantom, tmp_path, cascade_in_process):
    image, label, affine = phantom
    flat = tmp_path / "flat"
    write_nifti(flat / "case.nii.gz", image, affine)
    truth = write_nifti(flat / "case_label.nii.gz", label, affine)
    before = truth.read_bytes()
    refused = cascade_in_process("predict", str(flat), str(flat), "--demo", "--overwrite", "--device", "cpu")
    assert refused.returncode == 1 and truth.read_bytes() == before
    [error] = lines(refused.stderr, "error")
    assert "the output folder is the input folder" in error and "--overwrite" not in error

    # a folder inside the data (an MBAS-style case folder of it, or any other) would mix with its cases
    for inside in (flat / "case", flat / "predictions"):
        refused = cascade_in_process("predict", str(flat), str(inside), "--demo", "--device", "cpu")
        assert refused.returncode == 1 and not inside.exists() and truth.read_bytes() == before
        [error] = lines(refused.stderr, "error")
        assert f"{inside}: the output folder lies inside the input folder {flat}" in error

    # a single image names its folder's label map as an input too: neither --overwrite nor --resume takes it
    for flag in ("--overwrite", "--resume"):
        refused = cascade_in_process("predict", str(flat / "case.nii.gz"), str(flat), "--demo", flag, "--device", "cpu")
        assert refused.returncode == 1 and truth.read_bytes() == before
        [error] = lines(refused.stderr, "error")
        assert "would replace the input" in error and str(truth) in error

    both = cascade_in_process(
        "predict", str(flat / "case.nii.gz"), str(tmp_path / "out"), "--resume", "--overwrite", "--demo"
    )
    assert both.returncode == 1 and "exclude each other" in both.stderr

    out = tmp_path / "out"
    out.mkdir()
    (out / "case_label.nii.gz").write_bytes(b"")  # an empty file left by a crash of another tool
    resumed = cascade_in_process(
        "predict", str(flat / "case.nii.gz"), str(out), "--resume", "--demo", "--device", "cpu"
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "1 cases done" in resumed.stdout and labels_of(out / "case_label.nii.gz").shape == image.shape
    write_nifti(out / "case_label.nii.gz", label[:, :, :10], affine)  # wrong geometry
    again = cascade_in_process("predict", str(flat / "case.nii.gz"), str(out), "--resume", "--demo", "--device", "cpu")
    assert "1 cases done" in again.stdout and labels_of(out / "case_label.nii.gz").shape == image.shape
    kept = cascade_in_process("predict", str(flat / "case.nii.gz"), str(out), "--resume", "--demo", "--device", "cpu")
    assert "1 kept from an earlier run" in kept.stdout
    assert report(out)["case"]["image_sha256"] == hashlib.sha256((flat / "case.nii.gz").read_bytes()).hexdigest()

    write_nifti(flat / "case.nii.gz", np.roll(image, 2, axis=1), affine)  # another scan on the same grid
    redone = cascade_in_process("predict", str(flat / "case.nii.gz"), str(out), "--resume", "--demo", "--device", "cpu")
    assert "1 cases done" in redone.stdout and "0 kept" in redone.stdout


def predict_until(phantom, folder: Path, cases: int, first_output: str, **streams) -> tuple[subprocess.Popen, Path]:
    """Start `cascade predict` on ``cases`` copies of the phantom in ``folder/in``; return once
    ``folder/out/first_output`` exists (or the run ended)."""
    image, _, affine = phantom
    for index in range(cases):
        write_nifti(folder / "in" / f"case{index}.nii.gz", image, affine)
    out = folder / "out"
    command = [
        sys.executable, "-m", "cascade.cli", "predict", str(folder / "in"), str(out), "--demo", "--device", "cpu"
    ]
    process = subprocess.Popen(command, text=True, **streams)
    deadline = time.time() + 600
    while not (out / first_output).exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    return process, out


def test_sigterm_leaves_no_partial_output_and_resume_completes(phantom, tmp_path):
    process, out = predict_until(
        phantom, tmp_path, 4, "case0_label.nii.gz", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary or partial file
    done = sorted(p.name for p in out.glob("*_label.nii.gz"))
    assert 1 <= len(done) < 4
    resumed = cascade("predict", str(tmp_path / "in"), str(out), "--demo", "--resume", "--device", "cpu")
    assert resumed.returncode == 0 and f"{len(done)} kept from an earlier run" in resumed.stdout
    assert len(list(out.glob("*_label.nii.gz"))) == 4 and len(report(out)) == 4


def test_kill_9_keeps_the_report_of_every_finished_case(phantom, tmp_path):
    process, out = predict_until(
        phantom, tmp_path, 3, "predictions.csv", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    process.kill()
    process.wait(timeout=60)
    rows = report(out)
    assert 1 <= len(rows) < 3
    for case, row in rows.items():
        assert row["status"] in ("ok", "warning") and float(row["left_atrium_ml"]) > 0
        assert (out / f"{case}_label.nii.gz").is_file()
    stale = out / ".case2_label.nii.gz.k9x2a7q1.nii.gz"  # as a kill between writing and renaming leaves it
    stale.write_bytes(b"partial")
    resumed = cascade("predict", str(tmp_path / "in"), str(out), "--demo", "--resume", "--device", "cpu")
    assert resumed.returncode == 0 and f"{len(rows)} kept from an earlier run" in resumed.stdout
    assert not stale.exists() and not [p for p in out.iterdir() if p.name.startswith(".")] and len(report(out)) == 3


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(phantom, tmp_path, where, cascade_in_process):
    image, _, affine = phantom
    source = write_nifti(tmp_path / "in" / "case.nii.gz", image, affine)
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "out"
    result = cascade_in_process("predict", str(source), str(out), "--demo", "--device", "cpu")
    assert result.returncode == 1
    [error] = lines(result.stderr, "error")
    assert error.startswith(f"cascade: error: {blocker}: the output folder") and "not a folder" in error
    assert blocker.read_text() == "not a folder"
    assert "weights of" not in result.stdout  # refused before loading any model


def test_an_unwritable_cache_folder_is_refused_before_any_work(phantom, tmp_path):
    """The OpenVINO backend keeps exported networks in $CASCADE_CACHE_DIR: one under a file is one line."""
    image, _, affine = phantom
    source = write_nifti(tmp_path / "in" / "case.nii.gz", image, affine)
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    environment = os.environ | {"CASCADE_CACHE_DIR": str(blocker / "cache")}
    result = cascade("predict", str(source), str(tmp_path / "out"), "--demo", "--backend", "openvino", env=environment)
    assert result.returncode == 1
    [error] = lines(result.stderr, "error")
    assert error == (
        f"cascade: error: {blocker}: the cache folder of exported networks ($CASCADE_CACHE_DIR) lies under an existing "
        "file, not a folder"
    )
    assert not (tmp_path / "out").exists() and "weights of" not in result.stdout


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_files_and_folders_are_named_as_permission_denied(phantom, tmp_path):
    image, _, affine = phantom
    write_nifti(tmp_path / "in" / "good.nii.gz", image, affine)
    locked = write_nifti(tmp_path / "in" / "locked.nii.gz", image, affine)
    locked.chmod(0)
    result = cascade("predict", str(tmp_path / "in"), str(tmp_path / "out"), "--demo", "--device", "cpu")
    assert result.returncode == 1
    assert [line for line in lines(result.stderr, "error") if "locked" in line] == [
        f"cascade: error: {locked}: permission denied"
    ]
    folder = tmp_path / "in"
    folder.chmod(0)
    try:
        result = cascade("predict", str(folder), str(tmp_path / "out2"), "--demo", "--device", "cpu")
    finally:
        folder.chmod(0o755)
    [error] = lines(result.stderr, "error")
    assert result.returncode == 1 and error.startswith(f"cascade: error: {folder}") and error.endswith(
        ": permission denied"
    )


def test_discovery_reports_what_it_skips(tmp_path):
    image = np.random.default_rng(0).normal(size=(8, 8, 4)).astype(np.float32)
    flat = tmp_path / "flat"
    write_nifti(flat / "UPPER.NII.GZ", image)
    write_nifti(flat / "a.nii.gz", image)
    write_nifti(flat / "a_gt.nii.gz", image)
    (flat / "notes.txt").write_text("scan notes")
    os.symlink(flat / "missing.nii.gz", flat / "dangling.nii.gz")
    from cascade.data import image_datalist, make_datalist

    seen: list[str] = []
    entries = image_datalist(flat, report=seen.append)
    assert [e["case"] for e in entries] == ["UPPER"]
    assert any("notes.txt" in s and "not a NIfTI file" in s for s in seen)
    assert any("dangling.nii.gz" in s and "broken symbolic link" in s for s in seen)
    assert sum("case 'a' is given by a.nii.gz and a_gt.nii.gz" in s for s in seen) == 2

    nnunet = tmp_path / "nnunet"
    write_nifti(nnunet / "imagesTr" / "x_0000.nii.gz", image)
    write_nifti(nnunet / "labelsTr" / "x.nii.gz", (image > 0).astype(np.uint8))
    write_nifti(nnunet / "imagesTr" / "z_0000.nii.gz", image)
    write_nifti(nnunet / "labelsTr" / "z.nii.gz", (image > 0).astype(np.uint8))
    write_nifti(nnunet / "imagesTr" / "y_0000.nii.gz", image)
    write_nifti(nnunet / "MBAS_001" / "MBAS_001_gt.nii.gz", image)
    seen.clear()
    assert [e["case"] for e in make_datalist(nnunet, num_folds=2, seed=0, report=seen.append)] == ["x", "z"]
    assert any("MBAS_001" in s and "nnU-Net raw dataset: not read" in s for s in seen)
    assert any("y_0000.nii.gz" in s and "image without a label map" in s for s in seen)


def test_a_folder_with_nothing_usable_says_why(tmp_path):
    """When every file is skipped, the one error line carries the reasons (nothing is dropped silently)."""
    from cascade.errors import InputError
    from cascade.data import scan_folder

    image = np.zeros((8, 8, 4), np.float32)
    write_nifti(tmp_path / "a.nii.gz", image)
    write_nifti(tmp_path / "a_gt.nii.gz", image)
    with pytest.raises(
        InputError, match=r"no NIfTI cases found .*skipped a.nii.gz: case 'a' is given by a.nii.gz and a_gt.nii.gz"
    ):
        scan_folder(tmp_path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "IN", "OUT", "--ressume"], "unknown flag --ressume (did you mean --resume?)"),
        (["predict", "IN", "OUT", "--device", "gpu"], "--device gpu: expected auto, cpu, cuda or cuda:N"),
        (["predict", "IN", "OUT", "--gate_margin_mm", "-1"],
         "--gate_margin_mm: expected a value in [0.0, 50.0], got -1"),
        (["predict", "IN", "OUT", "--overlap", "1.5"], "--overlap: expected a value in [0.0, 0.99]"),
        (["datalist", "IN", "--out", "OUT_DIR"], "--out is a folder"),
    ],
    ids=["misspelled-flag", "device", "gate-margin", "overlap", "datalist-out-folder"],
)
def test_bad_options_are_one_line_before_any_work(phantom, tmp_path, args, message, cascade_in_process):
    image, label, affine = phantom
    write_nifti(tmp_path / "in" / "c" / "c_gt.nii.gz", image, affine)
    write_nifti(tmp_path / "in" / "c" / "c_label.nii.gz", label, affine)
    (tmp_path / "OUT_DIR").mkdir()
    swap = {"IN": str(tmp_path / "in"), "OUT": str(tmp_path / "out"), "OUT_DIR": str(tmp_path / "OUT_DIR")}
    result = cascade_in_process(*[swap.get(a, a) for a in args], "--demo" if args[0] == "predict" else "--folds=2")
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.strip()] == lines(result.stderr, "error")
    assert message in result.stderr
    assert not (tmp_path / "out").exists()
