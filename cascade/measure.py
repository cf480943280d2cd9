"""From label maps to what clinicians read: ``cascade measure LABELS --images IMAGES --out DIR``.

Per case (docs/measurements.md defines every column): class volumes in ml, the cavities'
sphericity, the local wall thickness (:mod:`cascade.wall`), the wall's image intensity ratio (IIR)
to the left-atrial blood pool and the share of wall voxels above each IIR threshold, for the whole
wall and for the left- and right-atrial walls apart (each wall voxel belongs to its nearer cavity).
Outputs, each written atomically:

- ``DIR/measurements.csv``: one row per case (:func:`csv_columns`); a cell is empty, never 0, where
  its class is not labelled or a measure cannot be made (the row's ``message`` says why);
- ``DIR/png/<case>.png``: the left-atrial surface coloured by IIR, anterior and posterior views,
  and the wall thickness histogram (:mod:`cascade.measure_png`);
- with ``surfaces``: ``DIR/surfaces/<case>_<structure>.<stl|ply|vtk>`` for left_atrium,
  right_atrium and wall, closed, in LPS mm (:mod:`cascade.surfaces`); in PLY and VTK the
  left_atrium and wall surfaces carry the IIR per vertex (point data ``iir``).

Which classes are labelled: those the model declares (``cascade predict --measure``, or the
``run.json`` that ``cascade predict`` left in the labels folder), else ``--annotated`` or the labels
folder's ``dataset.json`` (:mod:`cascade.annotation`), else all three; ``--annotated`` wins over
the record.
A labelled class with no voxel in a label map gets empty cells and a warning line; a class declared
not labelled gets empty cells without a word (the la2018 model labels the left atrium only).

A case whose label map cannot be read fails (one error line, a ``failed`` row). A case measured only
in part is a warning line and a ``warning`` row: no image (the shape measures only), an image on
another grid than its label map (another case, or a resampled label: the intensities are not used),
an empty labelled class, a wall without a cavity (its volume only), no blood pool left after the
erosion. Every other case is measured all the same.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from cascade.errors import InputError
from cascade.io import AFFINE_TOLERANCE, load_nifti, same_geometry, write_text_atomic
from cascade.labels import CLASS_NAMES, LEFT_ATRIUM, RIGHT_ATRIUM, WALL
from cascade.qc import voxel_volume_ml
from cascade.surfaces import LPS_FROM_RAS, SURFACE_FORMATS, Surface, class_surface, require_meshio, write_surface
from cascade.wall import BLOOD_POOL_EROSION_MM, WallVoxels, blood_pool, crop_box, intensity_ratio, wall_voxels

__all__ = [
    "DEFAULT_IIR_THRESHOLDS",
    "REPORT_NAME",
    "PREDICTION_FOLDER",
    "WALL_PARTS",
    "parse_thresholds",
    "csv_columns",
    "CaseMeasures",
    "measure_case",
    "MeasureReport",
    "check_measure_outputs",
    "measure_cases",
    "pair_labels_images",
    "prediction_cases",
    "check_prediction_measure",
    "measure_predictions",
]

DEFAULT_IIR_THRESHOLDS = (1.2, 1.32)  # fibrosis, dense scar (Benito et al. 2017)
REPORT_NAME = "measurements.csv"
PREDICTION_FOLDER = "measurements"  # cascade predict --measure writes OUT/measurements/
WALL_PARTS = {"wall": None, "la_wall": LEFT_ATRIUM, "ra_wall": RIGHT_ATRIUM}  # column prefix -> cavity of its voxels
VERTEX_RADIUS_MM = 3.0  # a vertex shows the highest IIR of the wall within this distance (through the wall)
VERTEX_NEIGHBOURS = 64
PNG_HINT = "pip install 'atria-cascade[measure]'"


def parse_thresholds(value: float | str | Sequence[float | str]) -> tuple[float, ...]:
    """``--iir_thresholds``: IIR values, comma-separated (fire may pass a number or a tuple), each in (0, 10].

    Raises:
        ValueError: no value, or one that is not a number in range.
    """
    items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (tuple, list)) else [value]
    thresholds = []
    for item in items:
        try:
            number = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"--iir_thresholds: expected numbers like 1.2,1.32, got {value!r}") from None
        if not 0 < number <= 10:
            raise ValueError(f"--iir_thresholds: {number:g} is not an intensity ratio in (0, 10]")
        thresholds.append(number)
    if not thresholds:
        raise ValueError("--iir_thresholds: no value given")
    return tuple(dict.fromkeys(thresholds))


def csv_columns(thresholds: Sequence[float] = DEFAULT_IIR_THRESHOLDS) -> tuple[str, ...]:
    """The columns of ``measurements.csv`` (docs/measurements.md defines each)."""
    columns = ["case", "label", "image", "status", "message"]
    columns += [f"{name}_ml" for name in ("left_atrium", "right_atrium", "wall", "la_wall", "ra_wall")]
    columns += ["left_atrium_sphericity", "right_atrium_sphericity"]
    columns += [f"{part}_thickness_{stat}_mm" for part in WALL_PARTS for stat in ("mean", "median", "p90")]
    columns += ["blood_pool_ml", "blood_pool_intensity"]
    for part in WALL_PARTS:
        columns += [f"{part}_iir_mean", f"{part}_enhanced_pct"] + [f"{part}_enhanced_pct_iir_{t:g}" for t in thresholds]
    return tuple(columns)


@dataclass
class CaseMeasures:
    """What :func:`measure_case` found.

    Attributes:
        values: measured columns of ``measurements.csv`` (numbers; the columns left out stay empty).
        warnings: one line each for what could not be measured.
        surfaces: closed surfaces by structure name (``left_atrium``, ``right_atrium``, ``wall``).
        wall: the wall voxels with their side and thickness (``None`` without a wall or a cavity).
        iir: (N,) IIR of each wall voxel, in the order of ``wall.points`` (``None`` when not measured).
    """

    values: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    surfaces: dict[str, Surface] = field(default_factory=dict)
    wall: WallVoxels | None = None
    iir: np.ndarray | None = None


def _padded_crop(labels: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray, tuple[int, int, int]]:
    """The labelled region with 2 voxels around it and one of background padding (so every region has an outside)."""
    box = crop_box(labels > 0, margin=2)
    crop = np.pad(labels[box], 1)
    return box, crop, tuple(int(s.start) - 1 for s in box)


def _vertex_iir(surface: Surface, wall_lps: np.ndarray, iir: np.ndarray) -> np.ndarray:
    """Per vertex, the highest IIR of the wall voxels within :data:`VERTEX_RADIUS_MM` (among the nearest
    :data:`VERTEX_NEIGHBOURS`; the nearest voxel's where none is that close): a projection through the wall."""
    from scipy.spatial import cKDTree

    tree = cKDTree(wall_lps)
    neighbours = min(VERTEX_NEIGHBOURS, len(wall_lps))
    distances, indices = tree.query(surface.vertices, k=neighbours, distance_upper_bound=VERTEX_RADIUS_MM)
    distances, indices = distances.reshape(len(surface.vertices), -1), indices.reshape(len(surface.vertices), -1)
    padded = np.append(iir, -np.inf)  # index len(iir) marks "no neighbour within the radius"
    values = padded[indices].max(axis=1)
    lonely = ~np.isfinite(values)
    if lonely.any():
        values[lonely] = iir[tree.query(surface.vertices[lonely], k=1)[1]]
    return values


def measure_case(
    labels: np.ndarray,
    affine: np.ndarray,
    image: np.ndarray | None = None,
    labelled: Sequence[int] = tuple(CLASS_NAMES),
    thresholds: Sequence[float] = DEFAULT_IIR_THRESHOLDS,
    wall_surface: bool = False,
    name: str = "label map",
) -> CaseMeasures:
    """Measure one label map (and its image, on the same grid).

    Args:
        labels: (X, Y, Z) label map, values in {0, 1, 2, 3}.
        affine: its 4x4 voxel-to-RAS affine (mm).
        image: (X, Y, Z) intensities on the same grid, or ``None`` (no IIR).
        labelled: label values the map labels (the others are left empty without a warning).
        thresholds: IIR thresholds; the first gives ``*_enhanced_pct``.
        wall_surface: also make the wall's surface (the cavities' are always made).
        name: how warnings name the label map.

    Returns:
        The measures (see :class:`CaseMeasures`); volumes in ml, thicknesses in mm, shares in percent.
    """
    result = CaseMeasures()
    voxel_ml, spacing = voxel_volume_ml(affine), np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=4)
    empty = [CLASS_NAMES[v] for v in sorted(labelled) if counts[v] == 0]
    if empty:
        pronoun = "its" if len(empty) == 1 else "their"
        result.warnings.append(f"{name}: no {' or '.join(empty)} voxels: {pronoun} measures are left empty")
    measured = {v for v in labelled if counts[v] > 0}
    for value in sorted(measured):
        result.values[f"{CLASS_NAMES[value]}_ml"] = counts[value] * voxel_ml
    if not measured:
        return result
    box, crop, origin = _padded_crop(np.where(np.isin(labels, sorted(measured)), labels, 0))
    for value in (LEFT_ATRIUM, RIGHT_ATRIUM):
        if value in measured:
            surface = result.surfaces[CLASS_NAMES[value]] = class_surface(crop == value, affine, origin)
            result.values[f"{CLASS_NAMES[value]}_sphericity"] = surface.sphericity()
    if WALL not in measured:
        return result
    if wall_surface:
        result.surfaces["wall"] = class_surface(crop == WALL, affine, origin)
    cavities = [v for v in (LEFT_ATRIUM, RIGHT_ATRIUM) if v in measured]
    if not cavities:
        result.warnings.append(f"{name}: a wall without a cavity: wall thickness and enhancement are left empty")
        return result
    result.wall = wall_voxels(crop, spacing, cavities)
    parts = {
        part: result.wall.sides == side if side else np.ones(len(result.wall.points), bool)
        for part, side in WALL_PARTS.items()
        if side is None or side in measured
    }
    _thickness_measures(result, parts, voxel_ml)
    if image is None:
        return result
    if LEFT_ATRIUM not in measured:
        result.warnings.append(
            f"{name}: no left atrium: the wall's IIR (relative to the left-atrial blood pool) is left empty"
        )
        return result
    pool = blood_pool(crop == LEFT_ATRIUM, spacing)
    try:
        result.iir, reference = intensity_ratio(np.pad(image[box], 1), result.wall.points, pool)
    except ValueError as err:
        result.warnings.append(
            f"{name}: IIR not measured: {err} ({BLOOD_POOL_EROSION_MM:g} mm erosion of the left atrium)"
        )
        return result
    result.values.update(blood_pool_ml=int(pool.sum()) * voxel_ml, blood_pool_intensity=reference)
    _enhancement_measures(result, parts, thresholds)
    _surface_iir(result, affine, origin)
    return result


def _thickness_measures(result: CaseMeasures, parts: dict[str, np.ndarray], voxel_ml: float) -> None:
    """Volume of each atrium's wall, and thickness statistics of each wall part (``parts``: prefix -> voxels chosen)."""
    for part, chosen in parts.items():
        if part != "wall":
            result.values[f"{part}_ml"] = int(chosen.sum()) * voxel_ml
        if chosen.any():
            thickness = result.wall.thickness_mm[chosen]
            result.values[f"{part}_thickness_mean_mm"] = float(thickness.mean())
            result.values[f"{part}_thickness_median_mm"] = float(np.median(thickness))
            result.values[f"{part}_thickness_p90_mm"] = float(np.percentile(thickness, 90))


def _enhancement_measures(result: CaseMeasures, parts: dict[str, np.ndarray], thresholds: Sequence[float]) -> None:
    """Per wall part, the mean IIR and the share (%) of voxels above each threshold (the first: ``*_enhanced_pct``)."""
    for part, chosen in parts.items():
        if chosen.any():
            ratios = result.iir[chosen]
            result.values[f"{part}_iir_mean"] = float(ratios.mean())
            for index, threshold in enumerate(thresholds):
                share = 100.0 * float((ratios > threshold).mean())
                result.values[f"{part}_enhanced_pct_iir_{threshold:g}"] = share
                if index == 0:
                    result.values[f"{part}_enhanced_pct"] = share


def _surface_iir(result: CaseMeasures, affine: np.ndarray, origin: tuple[int, int, int]) -> None:
    """Per-vertex IIR on the left atrium's surface (from its wall) and on the wall's (from the whole wall)."""
    world = (LPS_FROM_RAS @ np.asarray(affine, np.float64))[:3]
    wall = result.wall
    wall_lps = (wall.points + np.asarray(origin)) @ world[:, :3].T + world[:, 3]
    for structure, chosen in (("left_atrium", wall.sides == LEFT_ATRIUM), ("wall", np.ones(len(wall.points), bool))):
        if structure in result.surfaces and chosen.any():
            surface = result.surfaces[structure]
            surface.point_data["iir"] = _vertex_iir(surface, wall_lps[chosen], result.iir[chosen])


_DECIMALS = {"_ml": 4, "_sphericity": 4, "_mm": 3, "_iir_mean": 4, "blood_pool_intensity": 6}


def _cell(column: str, value: float) -> str:
    if "enhanced_pct" in column:
        return f"{value:.2f}"
    decimals = next((d for suffix, d in _DECIMALS.items() if column.endswith(suffix)), 4)
    return f"{value:.{decimals}f}"


@dataclass
class MeasureReport:
    """The rows of ``measurements.csv``, one per case."""

    rows: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "failed"]

    def summary(self) -> str:
        done = [row for row in self.rows if row["status"] != "failed"]
        warned = sum(row["status"] == "warning" for row in self.rows)
        text = f"{len(done)} case(s) measured ({warned} with warnings), {len(self.failed)} failed"
        return text + ("; failed: " + ", ".join(row["case"] for row in self.failed) if self.failed else "")

    def write(self, path: Path, thresholds: Sequence[float]) -> Path:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=csv_columns(thresholds), lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(self.rows, key=lambda row: row["case"]))
        return write_text_atomic(path, buffer.getvalue())


def _output_paths(case: str, out_dir: Path, surfaces: str | None, png: bool) -> list[Path]:
    paths = [out_dir / "png" / f"{case}.png"] if png else []
    if surfaces:
        paths += [out_dir / "surfaces" / f"{case}_{structure}.{surfaces}" for structure in CLASS_NAMES.values()]
    return paths


def check_measure_outputs(
    cases: Sequence[dict], out_dir: str | os.PathLike, surfaces: str | None, png: bool, overwrite: bool
) -> None:
    """Refuse, before any work, what the run could not write: a missing optional package, an unknown
    surface format, an existing output without ``overwrite``.

    Raises:
        InputError: naming the problem (and the file).
    """
    if surfaces is not None:
        if surfaces not in SURFACE_FORMATS:
            raise InputError(f"--surfaces {surfaces}: expected one of {', '.join(SURFACE_FORMATS)}")
        require_meshio()
    if png and importlib.util.find_spec("matplotlib") is None:
        raise InputError(f"the PNGs need matplotlib: {PNG_HINT} (or --png false)")
    out_dir = Path(out_dir)
    if overwrite:
        return
    for path in [out_dir / REPORT_NAME] + [
        p for case in cases for p in _output_paths(case["case"], out_dir, surfaces, png)
    ]:
        if path.exists():
            raise InputError(f"{path}: output exists (--overwrite replaces it)")


def _read_image(case: dict) -> nib.Nifti1Image:
    if "series" in case:
        from cascade import dicom

        return dicom.read_series(case["series"])[0]
    return load_nifti(case["image"])


def _geometry_problem(label: nib.Nifti1Image, image: nib.Nifti1Image, label_path: str, image_name: str) -> str | None:
    if same_geometry(label, image):
        return None
    if label.shape[:3] != image.shape[:3]:
        detail = f"shape {label.shape[:3]} vs {image.shape[:3]}"
    else:
        worst = float(np.abs(label.affine - image.affine).max())
        detail = f"affine differs by up to {worst:.4g} mm (tolerance {AFFINE_TOLERANCE} mm)"
    return (
        f"{label_path}: geometry differs from its image {image_name} ({detail}; another case's image, or a resampled "
        "label map?): shape measures only"
    )


def _measure_one(
    case: dict, out_dir: Path, labelled: Sequence[int], thresholds: Sequence[float], surfaces: str | None, png: bool
) -> tuple[dict, list[str]]:
    """One case: its row and warning lines; a label map that cannot be read raises :class:`InputError`."""
    label_img = load_nifti(case["label"], label=True)
    labels = np.asanyarray(label_img.dataobj).astype(np.uint8)
    notes, image = [], None
    image_name = case.get("name", case.get("image"))
    if not image_name:
        notes.append(f"{case['label']}: no image found for case {case['case']}: shape measures only (no IIR)")
    else:
        try:
            image_img = _read_image(case)
        except InputError as err:
            notes.append(f"{err}: shape measures only (no IIR)")
        else:
            problem = _geometry_problem(label_img, image_img, case["label"], image_name)
            if problem:
                notes.append(problem)
            else:
                image = np.asanyarray(image_img.dataobj)
    measures = measure_case(
        labels, label_img.affine, image, labelled, thresholds, wall_surface=bool(surfaces), name=case["label"]
    )
    warnings = notes + measures.warnings
    if surfaces:
        for structure, surface in measures.surfaces.items():
            write_surface(surface, out_dir / "surfaces" / f"{case['case']}_{structure}.{surfaces}")
    if png:
        from cascade.measure_png import save_measures_png

        save_measures_png(out_dir / "png" / f"{case['case']}.png", case["case"], measures, thresholds)
    row = {
        "case": case["case"],
        "label": case["label"],
        "image": image_name or "",
        "status": "warning" if warnings else "ok",
        "message": "; ".join(warnings),
    }
    return row | {column: _cell(column, value) for column, value in measures.values.items()}, warnings


def measure_cases(
    cases: Sequence[dict],
    out_dir: str | os.PathLike,
    labelled: Sequence[int] = tuple(CLASS_NAMES),
    thresholds: Sequence[float] = DEFAULT_IIR_THRESHOLDS,
    surfaces: str | None = None,
    png: bool = True,
    overwrite: bool = False,
    report: Callable[[str], None] | None = None,
    debug: bool = False,
) -> MeasureReport:
    """Measure every case and write ``measurements.csv`` (and the PNGs and surfaces) into ``out_dir``.

    Args:
        cases: ``{"case", "label"}`` entries, with ``"image"`` (a NIfTI file; a DICOM series' entry
            also holds ``"series"`` and ``"name"``) where the case has an image.
        out_dir: output folder (created).
        labelled: label values the label maps label (see the module docstring).
        thresholds: IIR thresholds (:func:`parse_thresholds`).
        surfaces: ``stl``, ``ply`` or ``vtk`` to write surfaces; ``None`` writes none.
        png: write a PNG per case (needs matplotlib).
        overwrite: replace existing outputs.
        report: called with each ``warning:``/``error:`` line (default: stderr, ``cascade: `` first).
        debug: print the traceback of a case that fails.

    Returns:
        The report; a case whose label map cannot be read is a ``failed`` row.

    Raises:
        InputError: the checks of :func:`check_measure_outputs`.
    """
    report = report or (lambda line: print(f"cascade: {line}", file=sys.stderr, flush=True))
    out_dir = Path(out_dir)
    check_measure_outputs(cases, out_dir, surfaces, png, overwrite)
    result = MeasureReport()
    for case in cases:
        try:
            row, warnings = _measure_one(case, out_dir, labelled, thresholds, surfaces, png)
        except Exception as err:  # one bad case must not stop the others
            if debug:
                traceback.print_exc()
            message = (
                str(err) if isinstance(err, InputError) else f"{case['label']}: unexpected {type(err).__name__}: {err}"
            )
            report(f"error: {message}")
            result.rows.append(
                {
                    "case": case["case"],
                    "label": case["label"],
                    "image": case.get("name", case.get("image")) or "",
                    "status": "failed",
                    "message": message,
                }
            )
            continue
        for warning in warnings:
            report(f"warning: {warning}")
        result.rows.append(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.write(out_dir / REPORT_NAME, thresholds)
    return result


def recorded_labelled_classes(labels: str | os.PathLike) -> tuple[int, ...] | None:
    """The classes the model labels, as ``cascade predict`` recorded them in ``LABELS/run.json``; None
    without a record."""
    import json

    try:
        record = json.loads((Path(labels) / "run.json").read_text())
        classes = record["stages"]["segmenter"]["settings"]["labelled_classes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(classes, list) or not classes or not all(c in CLASS_NAMES for c in classes):
        return None
    return tuple(sorted(classes))


def pair_labels_images(labels: str | os.PathLike, images: str | os.PathLike | None = None) -> list[dict]:
    """The cases of a labels folder, each with its image by case id.

    Args:
        labels: folder of label maps in any layout :func:`cascade.data.scan_folder` reads (e.g. the
            ``<case>_label.nii.gz`` files ``cascade predict`` writes, or an MBAS folder).
        images: where the images are, any input ``cascade predict`` reads (NIfTI folder or file,
            DICOM folder); ``None``: the images found beside the labels (an MBAS folder's ``_gt``).

    Returns:
        ``{"case", "label"}`` entries with ``"image"`` (and for DICOM ``"series"``, ``"name"``)
        where an image of that case id was found.

    Raises:
        InputError: no label map in ``labels``; an unreadable ``images``.
    """
    from cascade.data import scan_folder

    found = [c for c in scan_folder(labels).cases if c["label"]]
    if not found:
        raise InputError(f"{labels}: no label maps found (expected <case>_label.nii.gz files or MBAS folders)")
    if images is None:
        by_case = {c["case"]: {"image": c["image"]} for c in found if c["image"]}
    else:
        from cascade.predict import list_inputs

        by_case = {
            entry["case"]: {k: v for k, v in entry.items() if k in ("image", "series", "name")}
            for entry in list_inputs(images)
        }
    return [{"case": c["case"], "label": c["label"], **by_case.get(c["case"], {})} for c in found]


def prediction_cases(inputs: Sequence[dict], rows: Sequence[dict], out_dir: str | os.PathLike) -> list[dict]:
    """The cases ``cascade predict`` left a label map for (status ok, warning or resumed), with their inputs as images.

    Args:
        inputs: the entries predicted (:func:`cascade.predict.list_inputs`).
        rows: the rows of the prediction report.
        out_dir: the prediction folder holding ``<case>_label.nii.gz``.
    """
    done = {row["case"] for row in rows if row["status"] in ("ok", "warning", "resumed")}
    return [
        {
            "case": item["case"],
            "label": str(Path(out_dir) / f"{item['case']}_label.nii.gz"),
            **{key: item[key] for key in ("image", "series", "name") if key in item},
        }
        for item in inputs
        if item["case"] in done
    ]


def check_prediction_measure(
    inputs: Sequence[dict], out_dir: Path, kinds: Sequence[str], surfaces: str | None, overwrite: bool
) -> None:
    """``cascade predict --measure``: refuse, before any case is predicted, what the measuring could not do.

    Raises:
        InputError: no NIfTI label maps written (``--output_format dicom-seg``), and the checks of
            :func:`check_measure_outputs` on ``OUT/measurements/``.
    """
    if "label" not in kinds:
        raise InputError("--measure reads the NIfTI label maps: use --output_format nifti or both")
    check_measure_outputs(inputs, Path(out_dir) / PREDICTION_FOLDER, surfaces, True, overwrite)


def measure_predictions(
    inputs: Sequence[dict],
    rows: Sequence[dict],
    out_dir: Path,
    labelled: Sequence[int],
    thresholds: Sequence[float],
    surfaces: str | None,
    debug: bool = False,
) -> MeasureReport:
    """``cascade predict --measure``: measure the label maps just written, with their input images, into
    ``OUT/measurements/`` (replacing an earlier run's; :func:`check_prediction_measure` ran first)."""
    cases = prediction_cases(inputs, rows, out_dir)
    report = measure_cases(
        cases, Path(out_dir) / PREDICTION_FOLDER, labelled, thresholds, surfaces, overwrite=True, debug=debug
    )
    print(f"cascade: {report.summary()} -> {Path(out_dir) / PREDICTION_FOLDER / REPORT_NAME}")
    return report
