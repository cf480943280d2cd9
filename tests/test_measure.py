"""cascade measure on analytic phantoms: spheres and spherical shells of known wall thickness on an
isotropic and an MBAS-like grid, stored with rotated affines in RAS and LPS axis order, with
enhancement planted on a known share of the wall."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import meshio
import nibabel as nib
import numpy as np
import pytest

from cascade.labels import LEFT_ATRIUM, RIGHT_ATRIUM, WALL
from cascade.measure import csv_columns, measure_case, parse_thresholds
from cascade.surfaces import class_surface
from tests.conftest import write_nifti

ISOTROPIC = (1.0, 1.0, 1.0)
MBAS_GRID = (0.625, 0.625, 2.5)  # (X, Y, Z): 2.5 mm slices
R_CAVITY, R_WALL = 12.0, 15.0  # mm: a 3 mm wall
BLOOD, NORMAL_WALL, FIBROSIS, SCAR = 100.0, 70.0, 125.0, 150.0  # IIR 0.7, 1.25 (between thresholds), 1.5


def rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    a, b, c = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(spacing, axes: str) -> np.ndarray:
    """A rotated voxel-to-RAS affine whose voxel axes run to R, A, S (``ras``), L, P, S (``lps``, as DICOM
    stores them), or R, P, S (``flipped``: one axis reversed, a left-handed grid)."""
    flips = {"ras": (1, 1, 1), "lps": (-1, -1, 1), "flipped": (1, -1, 1)}[axes]
    affine = np.eye(4)
    affine[:3, :3] = np.diag(flips) @ rotation((12.0, -7.0, 25.0)) @ np.diag(spacing)
    affine[:3, 3] = (31.5, -140.25, 62.0)
    return affine


def physical_grid(shape, spacing, centre_mm):
    """Coordinates (mm) of every voxel centre along the voxel axes, relative to ``centre_mm``."""
    axes = [np.arange(n) * s - c for n, s, c in zip(shape, spacing, centre_mm)]
    return np.meshgrid(*axes, indexing="ij")


def shell_phantom(spacing, two_atria: bool = False, seed: int = 0):
    """Left atrium: a sphere of radius 12 mm inside a 3 mm wall (shell to 15 mm); with ``two_atria`` a
    right atrium of the same shape 33 mm along x (the walls touch: a septum). The image holds blood 100,
    wall 70 (IIR 0.7), 125 (IIR 1.25) on the wall's slab 4 mm < x < 8 mm from the LA's centre and 150
    (IIR 1.5) beyond 8 mm, a partial-volume rim of 85 on the cavity's outer 1.5 mm (the erosion must
    drop it), noise SD 1.

    Returns:
        labels, image, and the truth: the wall voxels above each threshold (boolean maps) and the
        wall voxels nearer the left atrium's centre.
    """
    extent = (R_WALL + 3) * 2 + (33.0 if two_atria else 0.0)
    size_mm = (extent, 2 * R_WALL + 6, 2 * R_WALL + 6)
    shape = tuple(int(np.ceil(e / s)) for e, s in zip(size_mm, spacing))
    centre = (R_WALL + 3 + 0.17, size_mm[1] / 2 + 0.11, size_mm[2] / 2 - 0.23)  # off the voxel grid
    x, y, z = physical_grid(shape, spacing, centre)
    r_left = np.sqrt(x**2 + y**2 + z**2)
    labels = np.zeros(shape, np.uint8)
    labels[r_left <= R_WALL] = WALL
    near_left = np.ones(shape, bool)
    if two_atria:
        r_right = np.sqrt((x - 33.0) ** 2 + y**2 + z**2)
        labels[r_right <= R_WALL] = WALL
        labels[r_right <= R_CAVITY] = RIGHT_ATRIUM
        near_left = r_left <= r_right
    labels[r_left <= R_CAVITY] = LEFT_ATRIUM
    rng = np.random.default_rng(seed)
    image = np.full(shape, 20.0)
    image[labels == LEFT_ATRIUM] = BLOOD
    image[(labels == LEFT_ATRIUM) & (r_left > R_CAVITY - 1.5)] = 85.0
    image[labels == RIGHT_ATRIUM] = BLOOD
    wall = labels == WALL
    image[wall] = NORMAL_WALL
    fibrosis, scar = wall & (x > 4.0) & (x <= 8.0) & near_left, wall & (x > 8.0) & near_left
    image[fibrosis], image[scar] = FIBROSIS, SCAR
    image = (image + rng.normal(0, 1.0, shape)).astype(np.float32)
    truth = {"above_1.2": fibrosis | scar, "above_1.32": scar, "near_left": wall & near_left}
    return labels, image, truth


def voxel_ml(spacing) -> float:
    return float(np.prod(spacing)) / 1000.0


def label_centroid_lps(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ras = nib.affines.apply_affine(affine, np.argwhere(mask).mean(axis=0))
    return ras * np.array([-1.0, -1.0, 1.0])


GRIDS = [
    pytest.param(ISOTROPIC, "ras", 0.15, 0.03, id="isotropic-ras"),
    pytest.param(ISOTROPIC, "lps", 0.15, 0.03, id="isotropic-lps"),
    pytest.param(MBAS_GRID, "ras", 0.25, 0.06, id="mbas-ras"),
    pytest.param(MBAS_GRID, "lps", 0.25, 0.06, id="mbas-lps"),
    pytest.param(MBAS_GRID, "flipped", 0.25, 0.06, id="mbas-flipped"),
]


@pytest.mark.parametrize("spacing, axes, thickness_tolerance, volume_tolerance", GRIDS)
def test_shell_measures_match_the_phantom(spacing, axes, thickness_tolerance, volume_tolerance):
    labels, image, truth = shell_phantom(spacing)
    affine = make_affine(spacing, axes)
    measures = measure_case(labels, affine, image, wall_surface=True, name="phantom")
    values = measures.values
    assert measures.warnings == ["phantom: no right_atrium voxels: its measures are left empty"]
    # volumes are the label's voxel counts
    for name, value in (("left_atrium", LEFT_ATRIUM), ("wall", WALL)):
        assert values[f"{name}_ml"] == pytest.approx((labels == value).sum() * voxel_ml(spacing), rel=1e-12)
    assert "right_atrium_ml" not in values and "ra_wall_ml" not in values  # not labelled: left empty, not 0
    assert values["la_wall_ml"] == values["wall_ml"]
    # thickness of a 3 mm shell
    for stat in ("mean", "median"):
        assert values[f"wall_thickness_{stat}_mm"] == pytest.approx(R_WALL - R_CAVITY, rel=thickness_tolerance)
    assert values["wall_thickness_median_mm"] <= values["wall_thickness_p90_mm"]
    # enhancement: the planted shares, within 2 percentage points
    wall_count = (labels == WALL).sum()
    assert values["wall_enhanced_pct_iir_1.2"] == pytest.approx(100 * truth["above_1.2"].sum() / wall_count, abs=2.0)
    assert values["wall_enhanced_pct_iir_1.32"] == pytest.approx(100 * truth["above_1.32"].sum() / wall_count, abs=2.0)
    assert values["wall_enhanced_pct"] == values["wall_enhanced_pct_iir_1.2"]
    assert 5 < values["wall_enhanced_pct_iir_1.32"] < values["wall_enhanced_pct_iir_1.2"] < 60
    assert values["blood_pool_intensity"] == pytest.approx(BLOOD, rel=0.01)  # the 85 rim was eroded away
    # surfaces: closed, outward, the label's volume and centroid (LPS)
    for name, value in (("left_atrium", LEFT_ATRIUM), ("wall", WALL)):
        surface = measures.surfaces[name]
        edges = np.sort(surface.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        _, uses = np.unique(edges, axis=0, return_counts=True)
        assert (uses == 2).all(), f"{name}: not watertight"
        label_volume = (labels == value).sum() * np.prod(spacing)
        assert surface.volume_mm3() == pytest.approx(label_volume, rel=volume_tolerance)
        assert np.linalg.norm(surface.centroid_mm() - label_centroid_lps(labels == value, affine)) < 1.5
    sphericity = values["left_atrium_sphericity"]
    assert (0.97 if spacing == ISOTROPIC else 0.93) < sphericity <= 1.0
    # the IIR map on the surface: the vertices over the scar read above 1.32
    la = measures.surfaces["left_atrium"]
    scar_side = la.vertices @ (np.diag([-1, -1, 1]) @ affine[:3, :3] @ np.diag(1 / np.asarray(spacing)))[:, 0]
    far = scar_side > np.percentile(scar_side, 90)
    assert (la.point_data["iir"][far] > 1.32).mean() > 0.9


@pytest.mark.parametrize("spacing", [ISOTROPIC, MBAS_GRID], ids=["isotropic", "mbas"])
def test_two_atria_walls_apart(spacing):
    labels, image, truth = shell_phantom(spacing, two_atria=True)
    values = measure_case(labels, make_affine(spacing, "lps"), image).values
    assert values["la_wall_ml"] + values["ra_wall_ml"] == pytest.approx(values["wall_ml"])
    assert values["la_wall_ml"] == pytest.approx(truth["near_left"].sum() * voxel_ml(spacing), rel=0.02)
    for part in ("la_wall", "ra_wall"):
        assert values[f"{part}_thickness_median_mm"] == pytest.approx(R_WALL - R_CAVITY, rel=0.25)
    # the enhancement was planted on the left atrium's wall only
    la_wall_count = truth["near_left"].sum()
    assert values["la_wall_enhanced_pct_iir_1.32"] == pytest.approx(
        100 * truth["above_1.32"].sum() / la_wall_count, abs=2.0
    )
    assert values["ra_wall_enhanced_pct_iir_1.2"] < 1.0
    assert values["right_atrium_sphericity"] > 0.93


def test_sphere_without_wall_and_no_image():
    labels, _, _ = shell_phantom(ISOTROPIC)
    labels[labels == WALL] = 0
    measures = measure_case(labels, make_affine(ISOTROPIC, "ras"), None, labelled=(LEFT_ATRIUM,))
    assert measures.warnings == []  # the classes not labelled are no warning
    assert set(measures.values) == {"left_atrium_ml", "left_atrium_sphericity"}


def test_wall_without_cavity_keeps_its_volume():
    labels, image, _ = shell_phantom(ISOTROPIC)
    labels[labels == LEFT_ATRIUM] = 0
    measures = measure_case(labels, make_affine(ISOTROPIC, "ras"), image, labelled=(WALL, LEFT_ATRIUM), name="x.nii.gz")
    assert set(measures.values) == {"wall_ml"}
    assert measures.warnings == [
        "x.nii.gz: no left_atrium voxels: its measures are left empty",
        "x.nii.gz: a wall without a cavity: wall thickness and enhancement are left empty",
    ]


def test_parse_thresholds():
    assert parse_thresholds("1.2,1.32") == (1.2, 1.32)
    assert parse_thresholds((1.1, "1.5", 1.1)) == (1.1, 1.5)
    assert parse_thresholds(1.3) == (1.3,)
    for bad in ("", "a", "0", "-1,2", "20"):
        with pytest.raises(ValueError, match="--iir_thresholds"):
            parse_thresholds(bad)
    assert "wall_enhanced_pct_iir_1.5" in csv_columns((1.1, 1.5))


def test_class_surface_of_a_mask_touching_the_volume_edge_is_closed():
    mask = np.zeros((6, 7, 5), bool)
    mask[:3, 2:7, 0:5] = True  # touches four faces of the volume
    surface = class_surface(mask, np.diag([0.7, 0.7, 2.0, 1.0]))
    edges = np.sort(surface.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    assert (np.unique(edges, axis=0, return_counts=True)[1] == 2).all()
    assert surface.volume_mm3() == pytest.approx(
        mask.sum() * 0.7 * 0.7 * 2.0, rel=0.25
    )  # a small box loses its corners
    assert class_surface(np.zeros((3, 3, 3), bool), np.eye(4)) is None


# --- the command line ---------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def write_case(labels_dir: Path, images_dir: Path | None, case: str, labels, image, affine) -> None:
    write_nifti(labels_dir / f"{case}_label.nii.gz", labels, affine)
    if images_dir is not None:
        write_nifti(images_dir / f"{case}.nii.gz", image, affine)


@pytest.mark.parametrize("kind", ["ply", "vtk", "stl"])
def test_measure_command_writes_csv_png_and_surfaces(cascade_in_process, tmp_path, kind):
    labels, image, _ = shell_phantom(MBAS_GRID, two_atria=True)
    affine = make_affine(MBAS_GRID, "lps")
    write_case(tmp_path / "labels", tmp_path / "images", "case_a", labels, image, affine)
    before = {p: p.read_bytes() for p in (tmp_path / "labels").iterdir()}
    out = tmp_path / "out"
    result = cascade_in_process(
        "measure", tmp_path / "labels", "--images", tmp_path / "images", "--out", out, "--surfaces", kind
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert {p: p.read_bytes() for p in (tmp_path / "labels").iterdir()} == before  # inputs untouched
    [row] = read_csv(out / "measurements.csv")
    assert tuple(row) == csv_columns()
    expected = measure_case(labels, affine, image).values
    assert row["status"] == "ok" and row["message"] == ""
    for column in (
        "left_atrium_ml",
        "right_atrium_ml",
        "wall_thickness_median_mm",
        "wall_enhanced_pct_iir_1.32",
        "ra_wall_iir_mean",
    ):
        assert float(row[column]) == pytest.approx(expected[column], abs=0.01)
    assert (out / "png" / "case_a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for structure, value in (("left_atrium", LEFT_ATRIUM), ("right_atrium", RIGHT_ATRIUM), ("wall", WALL)):
        mesh = meshio.read(out / "surfaces" / f"case_a_{structure}.{kind}")
        centre = mesh.points.mean(axis=0)  # vertices in LPS mm, around the label's world centre
        assert np.linalg.norm(centre - label_centroid_lps(labels == value, affine)) < 2.0
        has_iir = "iir" in mesh.point_data
        assert has_iir == (kind != "stl" and structure != "right_atrium")
        if has_iir:
            assert mesh.point_data["iir"].shape == (len(mesh.points),) and mesh.point_data["iir"].max() > 1.32
    assert sorted(p.name for p in out.iterdir()) == ["measurements.csv", "png", "surfaces"]  # no temporary files


def test_measure_command_left_atrium_only(cascade_in_process, tmp_path):
    """The la2018 model's output: the classes not labelled are empty cells, not 0; declared, no warning."""
    labels, image, _ = shell_phantom(ISOTROPIC)
    labels[labels == WALL] = 0
    affine = make_affine(ISOTROPIC, "ras")
    write_case(tmp_path / "labels", tmp_path / "images", "la_only", labels, image, affine)
    out = tmp_path / "out"
    result = cascade_in_process(
        "measure",
        tmp_path / "labels",
        "--images",
        tmp_path / "images",
        "--out",
        out,
        "--annotated",
        "left_atrium",
        "--png",
        "false",
    )
    assert result.returncode == 0 and result.stderr == ""
    [row] = read_csv(out / "measurements.csv")
    assert float(row["left_atrium_ml"]) == pytest.approx((labels == LEFT_ATRIUM).sum() / 1000, abs=1e-4)
    assert row["right_atrium_ml"] == row["wall_ml"] == row["wall_thickness_mean_mm"] == row["wall_iir_mean"] == ""
    assert not (out / "png").exists()
    # without the declaration every class is expected: one warning line naming the file, the same numbers
    result = cascade_in_process(
        "measure", tmp_path / "labels", "--images", tmp_path / "images", "--out", tmp_path / "out2"
    )
    assert result.returncode == 0
    label_path = tmp_path / "labels" / "la_only_label.nii.gz"
    assert result.stderr.splitlines() == [
        f"cascade: warning: {label_path}: no wall or right_atrium voxels: their measures are left empty"
    ]
    [row2] = read_csv(tmp_path / "out2" / "measurements.csv")
    assert row2["status"] == "warning" and row2["left_atrium_ml"] == row["left_atrium_ml"] and row2["wall_ml"] == ""
    # a cascade predict folder: its run.json records the classes the model labels (la2018: [3])
    record = {"stages": {"segmenter": {"settings": {"labelled_classes": [LEFT_ATRIUM]}}}}
    (tmp_path / "labels" / "run.json").write_text(json.dumps(record))
    result = cascade_in_process(
        "measure", tmp_path / "labels", "--images", tmp_path / "images", "--out", tmp_path / "out3"
    )
    assert result.returncode == 0 and result.stderr == ""
    [row3] = read_csv(tmp_path / "out3" / "measurements.csv")
    assert row3["status"] == "ok" and row3["left_atrium_ml"] == row["left_atrium_ml"] and row3["wall_ml"] == ""


def test_measure_command_bad_cases_one_line_each(cascade_in_process, tmp_path):
    labels, image, _ = shell_phantom(ISOTROPIC)
    affine = make_affine(ISOTROPIC, "ras")
    labels_dir, images_dir = tmp_path / "labels", tmp_path / "images"
    write_case(labels_dir, images_dir, "good", labels, image, affine)
    write_case(labels_dir, None, "other_grid", labels, None, affine)
    write_nifti(images_dir / "other_grid.nii.gz", image[:-2], affine)  # the label map is on another grid
    write_case(labels_dir, None, "other_case", labels, None, affine)
    shifted = affine.copy()
    shifted[:3, 3] += 40.0
    write_nifti(images_dir / "other_case.nii.gz", image, shifted)  # same shape, another place: another case's image
    no_cavity = np.where(labels == LEFT_ATRIUM, 0, labels).astype(np.uint8)
    write_case(labels_dir, images_dir, "no_cavity", no_cavity, image, affine)
    write_case(labels_dir, None, "no_image", labels, None, affine)
    (labels_dir / "broken_label.nii.gz").write_bytes(b"not a nifti file")
    out = tmp_path / "out"
    declared = ("--annotated", "wall,left_atrium", "--png", "false")
    result = cascade_in_process("measure", labels_dir, "--images", images_dir, "--out", out, *declared)
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert result.returncode == 1  # the broken label map gave nothing
    expected = {
        "broken": f"cascade: error: {labels_dir / 'broken_label.nii.gz'}: not a readable NIfTI file",
        "other_grid": f"cascade: warning: {labels_dir / 'other_grid_label.nii.gz'}: geometry differs from its image "
        f"{images_dir / 'other_grid.nii.gz'} (shape",
        "other_case": f"cascade: warning: {labels_dir / 'other_case_label.nii.gz'}: geometry differs from its image "
        f"{images_dir / 'other_case.nii.gz'} (affine differs by up to 40 mm",
        "no_cavity_empty": f"cascade: warning: {labels_dir / 'no_cavity_label.nii.gz'}: no left_atrium voxels",
        "no_cavity": f"cascade: warning: {labels_dir / 'no_cavity_label.nii.gz'}: a wall without a cavity",
        "no_image": f"cascade: warning: {labels_dir / 'no_image_label.nii.gz'}: no image found for case no_image",
    }
    for key, start in expected.items():
        assert sum(line.startswith(start) for line in lines) == 1, (key, lines)
    assert len(lines) == len(expected)
    rows = {row["case"]: row for row in read_csv(out / "measurements.csv")}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["left_atrium_ml"] == ""
    assert rows["good"]["status"] == "ok" and rows["good"]["wall_iir_mean"] != ""
    for case in ("other_grid", "other_case", "no_image"):  # shape measures kept, no IIR
        assert rows[case]["status"] == "warning"
        assert rows[case]["left_atrium_ml"] == rows["good"]["left_atrium_ml"]
        assert rows[case]["wall_thickness_median_mm"] == rows["good"]["wall_thickness_median_mm"]
        assert rows[case]["wall_iir_mean"] == ""
    assert rows["no_cavity"]["wall_ml"] == rows["good"]["wall_ml"] and rows["no_cavity"]["wall_thickness_mean_mm"] == ""
    # without the broken file everything useful was made: exit 0
    (labels_dir / "broken_label.nii.gz").unlink()
    assert (
        cascade_in_process(
            "measure", labels_dir, "--images", images_dir, "--out", tmp_path / "out2", *declared
        ).returncode
        == 0
    )


def test_measure_command_refuses_before_any_work(cascade_in_process, tmp_path):
    labels, image, _ = shell_phantom(ISOTROPIC)
    write_case(tmp_path / "labels", tmp_path / "images", "a", labels, image, make_affine(ISOTROPIC, "ras"))
    out = tmp_path / "out"
    args = ("measure", tmp_path / "labels", "--images", tmp_path / "images", "--out", out, "--png", "false")
    assert cascade_in_process(*args).returncode == 0
    written = (out / "measurements.csv").read_bytes()
    result = cascade_in_process(*args)
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"cascade: error: {out / 'measurements.csv'}: output exists (--overwrite replaces it)"
    )
    assert (out / "measurements.csv").read_bytes() == written
    assert cascade_in_process(*args, "--overwrite").returncode == 0
    result = cascade_in_process(*args, "--overwrite", "--surfaces", "obj")
    assert (
        result.returncode == 1
        and result.stderr.strip() == "cascade: error: --surfaces obj: expected one of stl, ply, vtk"
    )
    result = cascade_in_process(*args, "--overwrite", "--iir_thresholds", "x")
    assert result.returncode == 1 and "--iir_thresholds" in result.stderr and "Traceback" not in result.stderr


def test_measure_command_thresholds_and_mbas_layout(cascade_in_process, tmp_path):
    """Images found beside the labels (an MBAS folder), thresholds from the command line (two tokens)."""
    labels, image, truth = shell_phantom(ISOTROPIC)
    case_dir = tmp_path / "mbas" / "MBAS_007"
    write_nifti(case_dir / "MBAS_007_gt.nii.gz", image, make_affine(ISOTROPIC, "lps"))
    write_nifti(case_dir / "MBAS_007_label.nii.gz", labels, make_affine(ISOTROPIC, "lps"))
    out = tmp_path / "out"
    result = cascade_in_process(
        "measure",
        tmp_path / "mbas",
        "--out",
        out,
        "--annotated",
        "wall,left_atrium",
        "--iir_thresholds",
        "1.4",
        "1.0",
        "--png",
        "false",
    )
    assert result.returncode == 0, result.stderr
    [row] = read_csv(out / "measurements.csv")
    assert "wall_enhanced_pct_iir_1.4" in row and "wall_enhanced_pct_iir_1.32" not in row
    wall_count = (labels == WALL).sum()
    assert float(row["wall_enhanced_pct"]) == pytest.approx(
        100 * truth["above_1.32"].sum() / wall_count, abs=2.0
    )  # first: 1.4
    assert float(row["wall_enhanced_pct_iir_1"]) == pytest.approx(100 * truth["above_1.2"].sum() / wall_count, abs=2.0)


def test_predict_measure(predict, phantom_dir, tmp_path):
    out = tmp_path / "pred"
    result = predict(phantom_dir / "MBAS_001" / "MBAS_001_gt.nii.gz", out, "--demo", "--measure", "--surfaces", "vtk")
    assert "measurements.csv" in result.stdout
    [row] = read_csv(out / "measurements" / "measurements.csv")
    predicted = nib.load(out / "MBAS_001_label.nii.gz")
    counts = np.bincount(np.asanyarray(predicted.dataobj).astype(np.int64).ravel(), minlength=4)
    voxel = abs(np.linalg.det(predicted.affine[:3, :3])) / 1000
    assert float(row["left_atrium_ml"]) == pytest.approx(counts[LEFT_ATRIUM] * voxel, abs=1e-3)
    assert row["image"] == str(phantom_dir / "MBAS_001" / "MBAS_001_gt.nii.gz") and row["wall_iir_mean"] != ""
    assert (out / "measurements" / "png" / "MBAS_001.png").is_file()
    assert (out / "measurements" / "surfaces" / "MBAS_001_wall.vtk").is_file()
    report = read_csv(out / "predictions.csv")
    assert [r["case"] for r in report] == ["MBAS_001"]
    from cascade.evaluation import evaluate

    summary = evaluate(str(out), str(phantom_dir), str(tmp_path / "ev"), allow_missing=True, workers=1)
    assert summary["cases"] == 1 and summary["n_extra"] == 0  # OUT/measurements/ is no case of the prediction folder


def test_predict_measure_refusals(cascade_in_process, phantom_dir, tmp_path):
    image = phantom_dir / "MBAS_001" / "MBAS_001_gt.nii.gz"
    result = cascade_in_process("predict", image, tmp_path / "a", "--demo", "--surfaces", "ply")
    assert result.returncode == 1
    assert result.stderr.strip() == "cascade: error: --surfaces writes the surfaces of --measure: add --measure"
    (tmp_path / "b" / "measurements").mkdir(parents=True)
    (tmp_path / "b" / "measurements" / "measurements.csv").write_text("earlier\n")
    result = cascade_in_process("predict", image, tmp_path / "b", "--demo", "--measure")
    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        f"cascade: error: {tmp_path / 'b' / 'measurements' / 'measurements.csv'}: output exists"
    )
    assert not (tmp_path / "b" / "MBAS_001_label.nii.gz").exists()  # refused before predicting
    assert not (tmp_path / "a").exists()


# --- cascade evaluate: volume agreement ----------------------------------------------------------


def test_evaluate_bland_altman(tmp_path):
    from cascade.evaluation import evaluate

    rng = np.random.default_rng(3)
    affine = make_affine(MBAS_GRID, "lps")
    differences = {"wall": [], "left_atrium": []}
    truths = {"wall": [], "left_atrium": []}
    for index in range(4):
        truth = np.zeros((20, 20, 8), np.uint8)
        truth[4:16, 4:16, 2:6] = WALL
        truth[6:14, 6:14, 3:5] = LEFT_ATRIUM
        prediction = truth.copy()
        grown = int(rng.integers(1, 30))  # left-atrium voxels the prediction adds (taken from the wall)
        wall_voxels = np.argwhere(prediction == WALL)[:grown]
        prediction[tuple(wall_voxels.T)] = LEFT_ATRIUM
        write_nifti(tmp_path / "gt" / f"c{index}_label.nii.gz", truth, affine)
        write_nifti(tmp_path / "pred" / f"c{index}_label.nii.gz", prediction, affine)
        voxel = voxel_ml(MBAS_GRID)
        differences["left_atrium"].append(grown * voxel)
        differences["wall"].append(-grown * voxel)
        truths["left_atrium"].append((truth == LEFT_ATRIUM).sum() * voxel)
        truths["wall"].append((truth == WALL).sum() * voxel)
    (tmp_path / "gt" / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "wall": 1, "left_atrium": 3}})
    )
    summary = evaluate(str(tmp_path / "pred"), str(tmp_path / "gt"), str(tmp_path / "ev"), workers=1)
    agreement = summary["volume_agreement"]
    for name in ("wall", "left_atrium"):
        d = np.array(differences[name])
        assert agreement[name]["n"] == 4
        assert agreement[name]["bias_ml"] == pytest.approx(d.mean())
        assert agreement[name]["lower_ml"] == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))
        assert agreement[name]["upper_ml"] == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
        assert agreement[name]["bias_pct"] == pytest.approx(np.mean(100 * d / np.array(truths[name])))
        assert agreement[name]["mae_pct"] == pytest.approx(np.mean(np.abs(100 * d / np.array(truths[name]))))
        assert agreement[name]["mae_ml"] == pytest.approx(np.abs(d).mean())
    assert agreement["right_atrium"]["n"] == 0 and agreement["right_atrium"]["bias_ml"] is None  # not annotated
    rows = read_csv(tmp_path / "ev" / "volumes.csv")
    assert [(r["case"], r["class"]) for r in rows] == [(f"c{i}", n) for i in range(4) for n in ("wall", "left_atrium")]
    first = rows[1]
    assert float(first["difference_ml"]) == pytest.approx(differences["left_atrium"][0], abs=1e-4)
    assert float(first["difference_pct"]) == pytest.approx(
        100 * differences["left_atrium"][0] / truths["left_atrium"][0], abs=1e-3
    )
    assert (tmp_path / "ev" / "bland_altman.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["volume_agreement"] == agreement


def test_measure_command_dicom_images(cascade_in_process, tmp_path):
    """IMAGES as a DICOM folder (one series per case folder), matched to the label maps by case id."""
    pytest.importorskip("pydicom")
    from cascade.dicom import find_series, read_series
    from tests.dicom_series import write_series

    labels, image, truth = shell_phantom(ISOTROPIC)
    write_series(nib.Nifti1Image(image, make_affine(ISOTROPIC, "lps")), tmp_path / "dicom" / "case_d")
    [series] = find_series(tmp_path / "dicom", lambda line: None)
    volume, _ = read_series(series)  # the series' own geometry: the label map is drawn on it
    write_nifti(tmp_path / "labels" / "case_d_label.nii.gz", labels, volume.affine)
    out = tmp_path / "out"
    result = cascade_in_process(
        "measure",
        tmp_path / "labels",
        "--images",
        tmp_path / "dicom",
        "--out",
        out,
        "--annotated",
        "1,3",
        "--png",
        "false",
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    [row] = read_csv(out / "measurements.csv")
    assert row["status"] == "ok" and row["image"].startswith(str(tmp_path / "dicom" / "case_d"))
    wall_count = (labels == WALL).sum()
    assert float(row["wall_enhanced_pct_iir_1.32"]) == pytest.approx(
        100 * truth["above_1.32"].sum() / wall_count, abs=2.0
    )
