"""Predicting a folder of images: output safety, per-case isolation, resume, and the QC report.

For every case the engine's label map is written as ``OUT/<case>_label.nii.gz`` and, for DICOM
input with ``--output_format dicom-seg`` or ``both``, as the DICOM Segmentation ``<case>_seg.dcm``
(:mod:`cascade.dicom`); with ``--save_masks`` also the stage-1 mask ``<case>_mask.nii.gz`` and the
gate stage 2 was confined to, ``<case>_gate.nii.gz``; with ``--save_uncertainty`` the segmenter's
disagreement map ``<case>_uncertainty.nii.gz`` (float32 in [0, 1]; :mod:`cascade.uncertainty`);
each atomically, on the input's exact grid.
``OUT/predictions.csv`` holds one row per case (:data:`REPORT_COLUMNS`); the volume of a class
the weights do not label (e.g. the wall and right atrium of la2018) is left empty, not 0. Its
``uncertainty`` is the case uncertainty of :mod:`cascade.uncertainty` (``n/a`` where the segmenter
predicts each window once: one model without test-time mirroring), ``review`` is ``true`` by
:func:`cascade.uncertainty.needs_review` with the segmenter's ``review_uncertainty`` (``n/a`` where
there is no uncertainty and no warning).

Rules, checked before any case runs:

- an output path that is one of the inputs (an image or a label found beside it) is refused,
  ``--overwrite`` or not, so ground truth can never be replaced by a prediction;
- an existing output is an error unless ``--overwrite`` (replace it) or ``--resume`` (keep it when
  it is a readable label map with the input's geometry and the report records it as made from
  this very input file, by its SHA-256, and as this very file, by its own; redo it otherwise); not both;
- an earlier ``predictions.csv`` or ``run.json`` that cannot be read back or replaced (a folder, a
  report in another encoding) is an error; what a person added to the report (columns, rows, a
  byte order mark) is kept.

A folder is pipelined: a loader thread reads and checks the next case (and, with ``--resume``,
checks its finished outputs) while the networks run on the current one.

A case that fails, for any reason, is one error line naming the file; the others still run, the
summary lists the failures, and the exit status is 1. An interruption (Ctrl-C, SIGTERM) stops
after removing the partial file of the case in flight; ``--resume`` completes the folder. The
report is rewritten after every case, and temporary files a ``kill -9`` left behind are removed
by the next run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from cascade import dicom
from cascade.data import NoCasesError, case_id, image_datalist, is_datalist_file, scan_folder
from monai.data import MetaTensor

from cascade.engine import CascadeEngine, CaseResult
from cascade.errors import InputError
from cascade.io import (
    check_writable_folder, file_sha256, load_nifti, read_header, remove_stale_temporaries, same_geometry,
    save_nifti_atomic, write_text_atomic,
)
from cascade.labels import CLASS_NAMES
from cascade.qc import class_volumes_ml, grid_warnings, orientation_warnings, volume_warnings
from cascade.run_record import RUN_RECORD_NAME, new_run_record, software_versions, write_run_record
from cascade.uncertainty import UNCERTAINTY_UNAVAILABLE, needs_review

__all__ = [
    "REPORT_COLUMNS", "PredictionReport", "read_report", "run_record", "check_resume_record", "same_labels_record",
    "list_inputs", "OUTPUT_FORMATS", "output_kinds", "output_paths", "outputs_sha256",
    "check_output_folder", "check_outputs", "out_of_memory", "predict_cases",
]

REPORT_COLUMNS = (
    "case", "image", "image_sha256", "status", "shape", "spacing_mm", "stage1_ml", "wall_ml", "right_atrium_ml",
    "left_atrium_ml", "seconds", "uncertainty", "review", "message", "outputs_sha256",
)
REPORT_NAME = "predictions.csv"
OUTPUT_FORMATS = ("nifti", "dicom-seg", "both")
NAME_MAX = 255  # bytes in a file name on the usual file systems (ext4, XFS, APFS, NTFS)
OUTPUT_SUFFIXES = {
    "label": "_label.nii.gz", "seg": "_seg.dcm", "mask": "_mask.nii.gz", "gate": "_gate.nii.gz",
    "uncertainty": "_uncertainty.nii.gz",
}


def output_kinds(
    save_masks: bool = False, output_format: str = "nifti", save_uncertainty: bool = False
) -> tuple[str, ...]:
    """What is written per case: ``label`` (NIfTI) and/or ``seg`` (DICOM SEG) by ``output_format``
    (one of :data:`OUTPUT_FORMATS`), ``mask`` and ``gate`` with ``save_masks``, ``uncertainty``
    with ``save_uncertainty``.

    Raises:
        InputError: an unknown format.
    """
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"--output_format {output_format}: expected one of {', '.join(OUTPUT_FORMATS)}")
    kinds = {"nifti": ("label",), "dicom-seg": ("seg",), "both": ("label", "seg")}[output_format]
    return kinds + (("mask", "gate") if save_masks else ()) + (("uncertainty",) if save_uncertainty else ())


def output_paths(case: str, out_dir: Path, kinds: Sequence[str] = ("label",)) -> dict[str, Path]:
    """The files written for a case, by kind (see :func:`output_kinds`)."""
    return {kind: out_dir / f"{case}{OUTPUT_SUFFIXES[kind]}" for kind in kinds}


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def check_outputs(inputs: Sequence[dict], out_dir: Path, kinds: Sequence[str], overwrite: bool, resume: bool) -> None:
    """Refuse outputs that are inputs, and existing outputs without ``overwrite``/``resume``.

    Raises:
        InputError: ``overwrite`` with ``resume``; a DICOM SEG for NIfTI input, or without highdicom;
            an output name too long for the file system; an output path that is an input file; an
            existing output (only without ``overwrite`` or ``resume``); two cases with the same output.
    """
    if "seg" in kinds:
        nifti = next((item for item in inputs if "series" not in item), None)
        if nifti is not None:
            raise InputError(f"{nifti['image']}: a DICOM SEG output needs DICOM input "
                             "(it references the source images); use --output_format nifti for NIfTI input")
        dicom.require_highdicom()
    if overwrite and resume:
        raise InputError("--overwrite and --resume exclude each other: "
                         "--resume keeps finished outputs, --overwrite replaces them")
    protected = {_real(item[key]): item[key] for item in inputs for key in ("image", "label", "mask") if item.get(key)}
    seen: dict[str, str] = {}
    longest = NAME_MAX - len(".." + "x" * 8)  # write_atomic's temporary name: ".<name>.<8 random characters><suffixes>"
    for item in inputs:
        for path in output_paths(item["case"], out_dir, kinds).values():
            size = len(os.fsencode(path.name)) + len("".join(path.suffixes[-2:]))
            if size > longest:
                raise InputError(f"{item['image']}: the output name {path.name[:40]}... is too long for the file "
                                 f"system ({size} of at most "
                                 f"{longest} bytes with the temporary name); rename the input")
            real = _real(path)
            if real in protected:
                raise InputError(f"{path}: this output would replace the input {protected[real]}; "
                                 "choose another output folder")
            if real in seen:
                raise InputError(f"{path}: output of both {seen[real]} and {item['image']} (same case id)")
            seen[real] = item["image"]
            if path.exists() and not (overwrite or resume):
                raise InputError(f"{path}: output exists (--resume keeps finished cases, --overwrite replaces them)")


def _input_sha256(item: dict) -> str:
    """The input's checksum: the image file's, or for a DICOM series :func:`cascade.dicom.series_sha256`."""
    return dicom.series_sha256(item["series"].files) if "series" in item else file_sha256(item["image"])


def outputs_sha256(paths: dict[str, Path]) -> str:
    """The SHA-256 of each of a case's output files, ``kind=hex`` joined by ``;`` (kinds sorted): recorded
    in the report so that ``--resume`` keeps only the very files a run wrote, not another case's label
    map copied over (per kind, so a resume with fewer kinds, e.g. without ``--save_masks``, still matches)."""
    return ";".join(f"{kind}={file_sha256(paths[kind])}" for kind in sorted(paths))


def _recorded_outputs_match(recorded: str, paths: dict[str, Path]) -> bool:
    """Whether every output in ``paths`` has the checksum the report's ``outputs_sha256`` cell records."""
    sums = dict(entry.split("=", 1) for entry in recorded.split(";") if "=" in entry)
    return all(sums.get(kind) == file_sha256(path) for kind, path in paths.items())


def _finished(item: dict, paths: dict[str, Path], recorded: dict) -> bool:
    """Whether every output of a case exists, is readable (a label map with the input's geometry, a
    DICOM Segmentation), was made from this input (the earlier report's ``image_sha256`` equals its
    checksum: a scan replaced by another of the same grid is predicted again), and is the file that
    run wrote (``outputs_sha256``: a label map copied over from another case is predicted again; not
    checked for reports written before the column existed)."""
    try:
        if not recorded.get("image_sha256") or recorded["image_sha256"] != _input_sha256(item):
            return False
        if "outputs_sha256" in recorded and not _recorded_outputs_match(recorded["outputs_sha256"] or "", paths):
            return False
        # a series' geometry follows from its checksum
        source = None if "series" in item else read_header(item["image"])
        for kind, path in paths.items():
            if kind == "seg":
                if not dicom.is_segmentation(path):
                    return False
            else:
                output = load_nifti(path, label=kind != "uncertainty")
                if source is not None and not same_geometry(output, source):
                    return False
        return True
    except (InputError, OSError):
        return False


@dataclass
class PredictionReport:
    """What a prediction run did: one row per case (see :data:`REPORT_COLUMNS`)."""

    rows: list[dict] = field(default_factory=list)
    interrupted: str = ""

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "failed"]

    def summary(self) -> str:
        done = [row for row in self.rows if row["status"] in ("ok", "warning")]
        text = (
            f"{len(done)} cases done ({self.count('warning')} with warnings), {self.count('resumed')} kept from an "
            f"earlier run, {len(self.failed)} failed"
        )
        if done:
            text += f", {np.mean([float(row['seconds']) for row in done]):.1f} s per case"
        if self.failed:
            text += "; failed: " + ", ".join(row["case"] for row in self.failed)
        return text

    def write(self, path: Path) -> Path:
        """Write the rows as CSV atomically, keeping what the earlier report there holds beyond them: rows of
        cases not run now (hand-added ones too), and columns added by hand, with their cells for every case."""
        earlier, extra_columns = read_report(path)
        rows = {row["case"]: row for row in earlier}
        for row in self.rows:
            if row["status"] != "resumed" or row["case"] not in rows:
                written_by_hand = {column: rows.get(row["case"], {}).get(column, "") for column in extra_columns}
                rows[row["case"]] = written_by_hand | row
        buffer = io.StringIO()
        columns = REPORT_COLUMNS + extra_columns
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for case in sorted(rows):
            writer.writerow(rows[case])
        return write_text_atomic(path, buffer.getvalue())


def _as_path_text(value: object) -> object:
    """A cell as this process spells file names: under a non-UTF-8 locale (``LC_ALL=C``) the UTF-8 bytes of a
    non-ASCII name are held as surrogates, and case ids read back must equal those of the files."""
    return os.fsdecode(value.encode("utf-8", "surrogateescape")) if isinstance(value, str) else value


def read_report(path: Path) -> tuple[list[dict], tuple[str, ...]]:
    """The rows of an earlier ``predictions.csv`` (a spreadsheet's UTF-8 byte order mark accepted) and the
    columns it has beyond :data:`REPORT_COLUMNS` (added by hand); no file: no rows.

    Raises:
        InputError: the path is a folder or another non-file, or the file is not a readable UTF-8 CSV
            report with a ``case`` column (it is then never overwritten: what a person wrote there stays).
    """
    path = Path(path)
    if not os.path.lexists(path):
        return [], ()
    if not dicom.is_regular_file(path):
        raise InputError(f"{path}: not a file (a folder?); the report is written there: move it away")
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            rows = [{key: _as_path_text(value) for key, value in row.items()} for row in reader if row.get("case")]
            columns = reader.fieldnames or []
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable CSV report ({type(err).__name__}: {err}); save it as UTF-8 CSV, "
                         "or move it away (it is never overwritten)") from None
    if columns and "case" not in columns:
        raise InputError(f"{path}: a CSV without the 'case' column, not a report of cascade predict; move it "
                         "away (it is never overwritten)")
    return rows, tuple(c for c in columns if c and c not in REPORT_COLUMNS)


def out_of_memory(err: BaseException | None) -> bool:
    """Whether an exception, or one in its chain (MONAI wraps transform errors), is an allocation failure."""
    while err is not None:
        text = str(err).lower()
        if isinstance(err, MemoryError) or "out of memory" in text or "can't allocate memory" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def _failure_message(image: str, err: Exception, device: object) -> str:
    """One line for a case that failed other than by bad input: out of memory and permissions named as such."""
    if isinstance(err, PermissionError):
        return f"{err.filename or image}: permission denied"
    if not out_of_memory(err):
        return f"{image}: unexpected {type(err).__name__}: {err}"
    try:
        header = read_header(image)
        shape, field_mm = header.shape[:3], np.array(header.shape[:3]) * np.linalg.norm(header.affine[:3, :3], axis=0)
        size = (f" on a volume of {shape[0]} x {shape[1]} x {shape[2]} voxels ({np.prod(shape) / 1e6:.1f} M) covering "
                f"{field_mm[0]:.0f} x {field_mm[1]:.0f} x {field_mm[2]:.0f} mm")
    except InputError:
        size = ""
    return (f"{image}: out of memory on {device}{size}; "
            "free memory, use another --device, --tta false or --mask_region true")


def _row(
    item: dict,
    result: CaseResult | None = None,
    volumes: Mapping[str, float] | None = None,
    seconds: float = 0.0,
    labelled: Sequence[int] | None = None,
) -> dict:
    """A report row; ``volumes``: the result's :func:`class_volumes_ml`; the volumes of classes the
    model does not label (``labelled``: label values) stay empty."""
    row = {key: "" for key in REPORT_COLUMNS} | {
        "case": item["case"], "image": item["image"], "image_sha256": item.get("sha256", "")}
    if result is not None:
        unlabelled = {name for value, name in CLASS_NAMES.items() if labelled is not None and value not in labelled}
        spacing = np.linalg.norm(result.affine[:3, :3], axis=0)
        row.update(
            shape="x".join(str(n) for n in result.labels.shape),
            spacing_mm="x".join(f"{s:.4g}" for s in spacing),
            seconds=f"{seconds:.2f}",
            **{f"{name}_ml": "" if name in unlabelled else f"{volume:.2f}" for name, volume in volumes.items()},
        )
    return row


def _save(result: CaseResult, paths: dict[str, Path], datasets: Sequence, classes: Sequence[int]) -> None:
    """Write a case's outputs; when one fails, those written before it are removed (a case is all or nothing).
    The uncertainty map of a case stage 2 did not run on (no atria found, a constant image) is 0."""
    disagreement = result.disagreement if result.disagreement is not None else np.zeros(result.labels.shape, np.float32)
    arrays = {"label": result.labels, "mask": result.mask, "gate": result.gate, "uncertainty": disagreement}
    written = []
    try:
        for kind, path in paths.items():
            if kind == "seg":
                dicom.write_segmentation(result.labels, datasets, path, classes)
            else:
                save_nifti_atomic(arrays[kind], result.affine, path, header=result.header)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def predict_cases(
    engine: CascadeEngine,
    inputs: Sequence[dict],
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    resume: bool = False,
    kinds: Sequence[str] = ("label",),
    debug: bool = False,
    report_name: str | None = REPORT_NAME,
    record: dict | None = None,
    prefetch: bool = True,
) -> PredictionReport:
    """Predict every case, isolating failures, and write the outputs and the QC report.

    Args:
        engine: a cascade engine with both stages.
        inputs: ``{"case", "image"}`` entries (``label`` entries name files to protect), from
            :func:`list_inputs` (a DICOM series' entry also holds ``series`` and ``name``).
        out_dir: output folder (created).
        overwrite: replace existing outputs.
        resume: keep finished outputs (see :func:`_finished`; the checksums come from the earlier
            report ``OUT/<report_name>``, or ``OUT/predictions.csv`` without ``report_name``), redo the others.
        kinds: the files to write per case (:func:`output_kinds`).
        debug: print the traceback of unexpected errors.
        report_name: file name of the QC report in ``out_dir``; ``None`` writes none.
        record: the run's :func:`run_record`: with ``resume`` it must match the earlier run's
            ``OUT/run.json`` (:func:`check_resume_record`); written there with the report.
        prefetch: load the next case in a loader thread while the current one runs (``False``:
            one case at a time, for comparison: bench/folder_throughput.py).

    Returns:
        The report; ``interrupted`` names the signal when the run was stopped.

    Raises:
        InputError: the output rules of :func:`check_outputs`.
    """
    out_dir = Path(out_dir)
    _check_before_any_case(inputs, out_dir, kinds, overwrite, resume, report_name, record)
    _prepare_output_folder(inputs, out_dir, kinds, report_name, record)
    recorded = _earlier_rows(out_dir / (report_name or REPORT_NAME)) if resume else None
    loader = _CaseLoader(engine, inputs, out_dir, kinds, recorded)
    report = PredictionReport()
    try:
        _predict_in_turn(engine, inputs, out_dir, kinds, debug, report_name, loader, prefetch, report)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM turned into one by the CLI
        report.interrupted = str(interrupt) or "SIGINT"
    finally:
        loader.shutdown()
        if report_name:
            report.write(out_dir / report_name)
    return report


def _check_before_any_case(
    inputs: Sequence[dict], out_dir: Path, kinds: Sequence[str], overwrite: bool, resume: bool,
    report_name: str | None, record: dict | None,
) -> None:
    """The checks of :func:`predict_cases` that come before anything is written: the output rules, a report
    or run record that could not be replaced (it would stop the run half-way), and with ``resume`` the earlier
    run's record.

    Raises:
        InputError: see :func:`check_outputs`, :func:`read_report` and :func:`check_resume_record`; a
            ``run.json`` that is not a file.
    """
    check_outputs(inputs, out_dir, kinds, overwrite, resume)
    if report_name:
        read_report(out_dir / report_name)
        record_path = out_dir / RUN_RECORD_NAME
        if record is not None and os.path.lexists(record_path) and not dicom.is_regular_file(record_path):
            raise InputError(f"{record_path}: not a file (a folder?); the run record is written "
                             "there: move it away")
    if resume and record is not None:
        check_resume_record(out_dir, record)


def _prepare_output_folder(
    inputs: Sequence[dict], out_dir: Path, kinds: Sequence[str], report_name: str | None, record: dict | None
) -> None:
    """Create the output folder, write the run record (with a report) and remove the temporary files a
    ``kill -9`` of an earlier run left beside the outputs and the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if record is not None and report_name:
        write_run_record(out_dir, record)
    outputs = [path for item in inputs for path in output_paths(item["case"], out_dir, kinds).values()]
    for path in outputs + ([out_dir / report_name] if report_name else []):
        remove_stale_temporaries(path)


def _earlier_rows(report: Path) -> dict[str, dict]:
    """The rows of an earlier report by case (:func:`read_report`), what ``--resume`` checks outputs against."""
    return {row["case"]: row for row in read_report(report)[0]}


class _CaseLoader:
    """Loads cases (:func:`_load_case`) in one loader thread, so that the next case is read while the
    networks run on the current one.

    Args:
        engine: the engine that reads the images.
        inputs: the cases, as :func:`predict_cases` takes them.
        out_dir: the output folder.
        kinds: the files written per case.
        recorded: with ``--resume``, the earlier report's rows by case; ``None`` without.
    """

    def __init__(
        self, engine: CascadeEngine, inputs: Sequence[dict], out_dir: Path, kinds: Sequence[str],
        recorded: dict[str, dict] | None,
    ) -> None:
        self.engine, self.inputs, self.out_dir, self.kinds, self.recorded = engine, inputs, out_dir, kinds, recorded
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cascade-loader")

    def load(self, index: int) -> Future:
        """Start loading case ``index``; the future's result is its :class:`_Loaded`."""
        item = self.inputs[index]
        earlier = None if self.recorded is None else self.recorded.get(item["case"], {})
        paths = output_paths(item["case"], self.out_dir, self.kinds)
        return self.executor.submit(_load_case, self.engine, item, paths, earlier)

    def shutdown(self) -> None:
        """Wait for the case being loaded and drop those not started."""
        self.executor.shutdown(wait=True, cancel_futures=True)


def _predict_in_turn(
    engine: CascadeEngine, inputs: Sequence[dict], out_dir: Path, kinds: Sequence[str], debug: bool,
    report_name: str | None, loader: _CaseLoader, prefetch: bool, report: PredictionReport,
) -> None:
    """Predict (or keep) each case in turn, adding its row to ``report`` and writing the report after every
    case, so that a ``kill -9`` loses at most the case in flight (see :func:`predict_cases`)."""
    log_lines, computed = not sys.stderr.isatty(), []  # without a terminal (a batch job's log): one line per case
    upcoming = loader.load(0) if inputs else None
    for index, item in enumerate(tqdm(inputs, desc="cases", unit="case", file=sys.stderr, disable=None), 1):
        paths = output_paths(item["case"], out_dir, kinds)
        start = time.perf_counter()
        loaded: _Loaded = upcoming.result()
        upcoming = loader.load(index) if prefetch and index < len(inputs) else None
        if loaded.finished:
            row = _row(item) | {"status": "resumed"}
        else:
            row = _predict_case(engine, item, paths, debug, loaded)
            computed.append(time.perf_counter() - start)
        report.rows.append(row)
        if not prefetch and index < len(inputs):  # one case at a time: nothing overlaps the networks
            upcoming = loader.load(index)
        if log_lines:
            _log_case(index, len(inputs), item["case"], row["status"], time.perf_counter() - start, computed)
        if report_name:
            report.write(out_dir / report_name)


def _log_case(index: int, total: int, case: str, status: str, seconds: float, computed: Sequence[float]) -> None:
    """One line on stderr for a finished case: its status, its time and the expected time left (from the
    ``computed`` cases' times in seconds; ``unknown`` while none was computed)."""
    eta = _duration(sum(computed) / len(computed) * (total - index)) if computed else "unknown"
    print(f"cascade: [{index}/{total}] {case}: {status}, {seconds:.1f} s; ETA {eta}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 05 s`` or ``12 s``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


@dataclass
class _Loaded:
    """What the loader thread made of a case: its outputs kept (``finished``), the checked image, or
    the error that stopped it (raised again, with its traceback, when the case's turn comes)."""

    finished: bool = False
    image: MetaTensor | None = None
    source: nib.Nifti1Image | None = None
    datasets: list = field(default_factory=list)
    sha256: str = ""
    error: Exception | None = None


def _load_case(engine: CascadeEngine, item: dict, paths: dict[str, Path], recorded: dict | None) -> _Loaded:
    """Everything a case needs before the networks: the resume check (with ``recorded``, the earlier
    report's row of the case; ``None`` without ``--resume``), the input's checksum and the checked
    image. A DICOM series is read and checked once and handed to the engine in memory
    (:meth:`CascadeEngine.read_opened`), so that the bundles' own loading transforms read both kinds
    of input alike."""
    try:
        if recorded is not None and _finished(item, paths, recorded):
            return _Loaded(finished=True)
        sha256 = _input_sha256(item)
        if "series" not in item:
            image, source = engine.read(item["image"])
            return _Loaded(image=image, source=source, sha256=sha256)
        volume, datasets = dicom.read_series(item["series"])
        image, source = engine.read_opened(volume, item["name"])
        return _Loaded(image=image, source=source, datasets=datasets, sha256=sha256)
    except Exception as err:
        return _Loaded(error=err)


def _predict_case(engine: CascadeEngine, item: dict, paths: dict[str, Path], debug: bool, loaded: _Loaded) -> dict:
    """Predict and save one loaded case; its report row. A failure is one error line and a ``failed`` row."""
    start, name = time.perf_counter(), item.get("name", item["image"])
    try:
        if loaded.error is not None:
            raise loaded.error
        item = item | {"sha256": loaded.sha256}
        result = engine.predict_loaded(loaded.image, loaded.source, name, disagreement_map="uncertainty" in paths)
        datasets = loaded.datasets
        volumes = class_volumes_ml(result.labels, result.mask, result.affine)
        warnings = (result.input_warnings + grid_warnings(name, result.affine)
                    + orientation_warnings(name, result.header)
                    + (result.warnings or volume_warnings(name, volumes, engine.labelled_classes)))
        _save(result, paths, datasets, engine.labelled_classes)
    except Exception as err:  # one bad case must not stop the folder
        message = (str(err) if isinstance(err, InputError)
                   else _failure_message(name, err, (engine.localizer or engine.segmenter).device))
        tqdm.write(f"cascade: error: {message}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        elif not isinstance(err, (InputError, PermissionError)):
            tqdm.write("cascade: (run with --debug for the traceback)", file=sys.stderr)
        return _row(item) | {"status": "failed", "message": message}
    for warning in warnings:
        tqdm.write(f"cascade: warning: {warning}", file=sys.stderr)
    row = (_row(item, result, volumes, time.perf_counter() - start, engine.labelled_classes)
           | {"outputs_sha256": outputs_sha256(paths)})
    return row | _review_cells(result, engine.review_threshold, warnings) | {
        "status": "warning" if warnings else "ok", "message": "; ".join(warnings)}


def _review_cells(result: CaseResult, threshold: float, warnings: Sequence[str]) -> dict[str, str]:
    """The ``uncertainty`` and ``review`` cells of a case (see the module docstring)."""
    if result.passes <= 1 and result.labels.any():
        return {"uncertainty": UNCERTAINTY_UNAVAILABLE, "review": "true" if warnings else UNCERTAINTY_UNAVAILABLE}
    uncertainty = "" if result.uncertainty is None else f"{result.uncertainty:.4f}"
    return {"uncertainty": uncertainty, "review": str(needs_review(result.uncertainty, threshold, warnings)).lower()}


def run_record(engine: CascadeEngine, command: Sequence[str]) -> dict:
    """What a prediction run was, as nnU-Net keeps its prediction arguments beside the outputs:
    the command line, each stage's weights, configs and settings (:meth:`CascadeEngine.record`),
    and the versions of the software that computed it."""
    stages = engine.record()
    versions = software_versions(openvino=any(stage["backend"] == "openvino" for stage in stages.values()))
    return new_run_record(command, stages, versions)  # the layout of cascade.run_record


def _determining(record: dict) -> dict[str, object]:
    """The parts of a run record that determine the labels, flattened to ``stage key`` -> value
    (file contents by checksum, not by path, so a moved folder still matches)."""
    flat: dict[str, object] = {}
    for stage, entry in record.get("stages", {}).items():
        flat[f"{stage} checkpoints"] = [c["sha256"] for c in entry.get("checkpoints", [])]
        flat[f"{stage} configs"] = [c["sha256"] for c in entry.get("configs", [])]
        for key in ("backend", "precision"):
            flat[f"{stage} {key}"] = entry.get(key)
        for key, value in entry.get("settings", {}).items():
            flat[f"{stage} {key}"] = value
    return flat


def _well_formed(record: object) -> bool:
    """Whether a parsed ``run.json`` has the shape :func:`run_record` gives it (what :func:`_determining` reads)."""
    if not isinstance(record, dict) or not isinstance(record.get("stages", {}), dict):
        return False
    for entry in record.get("stages", {}).values():
        if not isinstance(entry, dict) or not isinstance(entry.get("settings", {}), dict):
            return False
        files = [entry.get(key, []) for key in ("checkpoints", "configs")]
        if not all(isinstance(group, list) and all(isinstance(c, dict) and "sha256" in c for c in group)
                   for group in files):
            return False
    return True


def check_resume_record(out_dir: Path, record: dict) -> None:
    """Refuse ``--resume`` when the outputs there were made with other weights, configs or settings.

    An output folder without ``run.json`` (made before run records existed) is not checked.

    Raises:
        InputError: naming the first setting that differs, its old and new value; a ``run.json`` that is
            not a readable run record (hand-edited or foreign: delete it to resume unchecked).
    """
    path = out_dir / RUN_RECORD_NAME
    if not os.path.lexists(path):
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        earlier = err
    if not _well_formed(earlier):
        raise InputError(f"{path}: not a run record of cascade predict (the settings of the run that made "
                         "these outputs); delete it to --resume without that check, use --overwrite, or another "
                         "output folder")
    difference = _first_difference(earlier, record)
    if difference is not None:
        raise InputError(
            f"{path}: --resume with other settings than the run that made these outputs ({difference}); "
            "rerun with the same settings, use --overwrite, or another output folder"
        )


def _first_difference(earlier: dict, record: dict) -> str | None:
    """The first part that determines the labels (:func:`_determining`, by key) and differs between two run
    records, as ``key: old -> new`` (``key: other files`` for weights and configs); ``None`` when none does."""
    old, new = _determining(earlier), _determining(record)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            shown = ("other files" if key.endswith(("checkpoints", "configs"))
                     else f"{old.get(key)!r} -> {new.get(key)!r}")
            return f"{key}: {shown}"
    return None


def same_labels_record(path: Path, record: dict) -> bool:
    """Whether the run record at ``path`` determines the labels as ``record`` does: the same weights and
    configs (by checksum), backend, precision and settings, as :func:`check_resume_record` compares them.
    A missing, unreadable or malformed file does not."""
    try:
        earlier = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return _well_formed(earlier) and _first_difference(earlier, record) is None


def check_output_folder(source: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Refuse, before any work, an output folder the run could not finish in.

    A data folder predicted into itself, or into a folder inside it, is refused: label maps written
    among the data would be read back as its ground truth (flat layout, or an MBAS case folder) or
    as extra cases. The folder (or, while it
    does not exist, the nearest existing folder above it) must take a file: a probe file is created
    there and removed at once.

    Raises:
        InputError: ``out_dir`` is the input folder, an existing file, or not writable.
    """
    out_dir = Path(out_dir)
    if Path(source).is_dir() and _real(source) == _real(out_dir):
        raise InputError(f"{out_dir}: the output folder is the input folder; "
                         "predictions would mix with the data there, choose another one")
    if Path(source).is_dir() and Path(_real(source)) in Path(_real(out_dir)).parents:
        raise InputError(
            f"{out_dir}: the output folder lies inside the input folder {source}; "
            "label maps there would mix with its cases (read back as ground truth or extra cases), "
            "choose a folder outside it"
        )
    check_writable_folder(out_dir, "the output folder")


def list_inputs(source: str | os.PathLike, series: Sequence[str] | None = None) -> list[dict]:
    """Cases to predict: a single NIfTI file, every image of a data folder of any layout, or the
    DICOM series of a folder that holds no NIfTI image (:func:`dicom_inputs`).

    Every file of a folder that is not used is reported on stderr with the reason. A single file's
    label map beside it (e.g. ``MBAS_001_label.nii.gz`` next to ``MBAS_001_gt.nii.gz``) is listed
    too, so that no output may replace it. A single DICOM file stands for its series in its folder.

    Args:
        source: a file or folder.
        series: SeriesInstanceUIDs to predict (DICOM input only; default: one series per study).

    Raises:
        InputError: the input does not exist or holds no image; ``series`` for NIfTI input.
    """
    source = Path(source)
    if source.is_file() and dicom.is_dicom_file(source):
        return dicom_inputs(source.parent, series or [dicom.series_uid(source)])
    if not source.exists():
        raise InputError(f"{source}: input not found")
    if not source.is_dir() and not dicom.is_regular_file(source):
        raise InputError(f"{source}: not a regular file or folder (a FIFO, socket or device); "
                         "give an image file or a folder")
    if source.is_file():
        if series:
            raise InputError(f"{source}: --series selects DICOM series, but this input holds NIfTI images")
        if is_datalist_file(source):
            raise InputError(f"{source}: a datalist JSON; predict reads images: give the data folder, an image "
                             "file or a DICOM folder")
        if source.name.lower().endswith(("_label.nii.gz", "_label.nii")):
            raise InputError(f"{source}: named as a label map (<case>_label); give the image it labels (e.g. "
                             "<case>.nii.gz or <case>_gt.nii.gz)")
        return [{"case": case_id(source), "image": str(source), **_label_beside(source)}]
    has_dicom = dicom.has_dicom_files(source)
    if series:
        if not has_dicom:
            raise InputError(f"{source}: --series selects DICOM series, but this input holds NIfTI images")
        return dicom_inputs(source, series)
    try:
        scan = scan_folder(source)
    except NoCasesError:
        if has_dicom:  # no NIfTI case (stray NIfTI files at most): the DICOM series are the input
            return dicom_inputs(source, series)
        raise
    if has_dicom:
        _report(f"{source}: holds NIfTI images and DICOM files; the NIfTI cases are predicted, the DICOM "
                "files are not read (give a folder holding only DICOM files to predict its series)")
    return image_datalist(source, report=_report, scan=scan)


def _report(line: str) -> None:
    tqdm.write(f"cascade: {line}", file=sys.stderr)


def dicom_inputs(source: Path, series: Sequence[str] | None = None) -> list[dict]:
    """One entry per DICOM series to predict (:func:`cascade.dicom.choose_series`):
    ``{"case", "image", "name", "series"}``; ``case`` is the name of the series' folder, made unique
    where chosen series share it (:func:`_dicom_case_ids`).

    Raises:
        InputError: pydicom is missing; no image series; a ``series`` UID that is not there.
    """
    chosen = dicom.choose_series(dicom.find_series(source, _report), series, _report)
    if not chosen:
        raise InputError(f"{source}: no DICOM image series found")
    return [{"case": case, "image": str(found.folder), "name": found.name, "series": found}
            for case, found in zip(_dicom_case_ids(chosen), chosen)]


def _dicom_case_ids(chosen: Sequence[dicom.DicomSeries]) -> list[str]:
    """Case ids of DICOM series: the series' folder name; where two share it (a CD of two patients,
    each in a folder ``DICOM``), the folders above are joined in (``PAT1_DICOM``), and where series
    share a folder, ``_S<SeriesNumber>`` (then ``_<n>``) is added. Every id made longer is reported."""
    folders = [found.folder.absolute().parts[1:] or ("series",) for found in chosen]
    depth = [1] * len(chosen)

    def ids() -> list[str]:
        return ["_".join(parts[-d:]) for parts, d in zip(folders, depth)]

    while True:
        current = ids()
        growing = [i for i, case in enumerate(current) if depth[i] < len(folders[i])
                   and any(current[j] == case and folders[j] != folders[i] for j in range(len(current)))]
        if not growing:
            break
        for i in growing:
            depth[i] += 1
    cases = ids()
    for i, found in enumerate(chosen):
        if cases.count(cases[i]) > 1:
            cases[i] = f"{cases[i]}_S{found.number if found.number is not None else i + 1}"
    for i in range(len(cases)):
        if cases.count(cases[i]) > 1:
            cases[i] = f"{cases[i]}_{i + 1}"
    for case, found in zip(cases, chosen):
        if case != found.folder.name:
            _report(f"{found.folder}: case id {case} "
                    f"(the folder name {found.folder.name} is not unique among the series)")
    return cases


def _label_beside(image: Path) -> dict:
    """``{"label": path}`` when the image's folder holds its label map (protected like a folder's)."""
    try:
        cases = scan_folder(image.parent).cases
    except InputError:
        return {}
    found = next((c for c in cases if c["image"] and _real(c["image"]) == _real(image) and c["label"]), None)
    return {"label": found["label"]} if found else {}
