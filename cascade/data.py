"""Finding cases on disk, checking them, and splitting them into cross-validation folds.

Three layouts are understood (images single-channel NIfTI, ``.nii.gz`` or ``.nii``):

- MBAS: ``ROOT/MBAS_001/MBAS_001_gt.nii.gz`` is the image and ``MBAS_001_label.nii.gz`` the label
  (test cases have only the image; prediction folders may have only the label);
- nnU-Net raw: ``ROOT/imagesTr/X_0000.nii.gz`` with ``ROOT/labelsTr/X.nii.gz`` (or ``imagesTs``
  without labels), or a bare ``imagesTs``-style folder of ``X_0000.nii.gz`` files;
- flat: ``ROOT/<case>.nii.gz`` images and/or ``ROOT/<case>_label.nii.gz`` label maps (an image
  named ``<case>_gt.nii.gz`` belongs to ``<case>`` as in MBAS).

A datalist is a list of MONAI-style dictionaries ``{"case", "image", "label", "annotated", "fold"}``
with paths as strings and ``annotated`` the label values the case's label map annotates (see
:mod:`cascade.annotation`: partially labelled data, e.g. left atrium only); ``cascade datalist``
writes one as JSON, from one data folder or several (fully and partially labelled data in one
list), and every bundle accepts either a data folder or such a file as ``dataset_dir``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cascade.annotation import ALL_CLASSES, DATASET_JSON, annotated_classes, declared_classes
from cascade.errors import InputError
from cascade.io import load_nifti, read_header, same_geometry, write_text_atomic

__all__ = [
    "FolderScan",
    "NoCasesError",
    "scan_folder",
    "discover_cases",
    "validate_case",
    "assign_folds",
    "data_folders",
    "labelled_cases",
    "make_datalist",
    "is_datalist_file",
    "load_datalist",
    "fold_datalist",
    "image_datalist",
    "attach_masks",
    "gate_masks",
    "write_datalist",
    "case_id",
    "case_name_formatter",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
DEFAULT_SEED = 12345  # fixed so folds are the same on every machine
_SKIPPED_SUFFIXES = ("_mask", "_gate")  # stage-1 outputs written beside predictions
_PATH_KEYS = ("image", "label", "mask")


def _strip_nifti_suffix(name: str) -> str | None:
    """The name without ``.nii.gz`` / ``.nii`` (matched in any letter case), or None for other files."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def case_id(path: str | os.PathLike) -> str:
    """Case id of an image file: the name without ``.nii(.gz)``, MBAS ``_gt`` or nnU-Net ``_0000``."""
    stem = _strip_nifti_suffix(Path(path).name) or Path(path).stem
    match = re.fullmatch(r"(.+?)(_gt|_0000)", stem)
    return match.group(1) if match else stem


def case_name_formatter(metadict: dict, saver: object) -> dict:
    """``output_name_formatter`` for MONAI's ``SaveImage``: outputs are named ``<case>_<postfix>``."""
    return {"subject": case_id(metadict["filename_or_obj"]), "idx": metadict.get("patch_index")}


class NoCasesError(InputError):
    """A data folder holds no NIfTI case (the message names what was skipped and why)."""


@dataclass
class FolderScan:
    """What a data folder holds: the cases found, and every entry not used with the reason (``conflicts``:
    the files skipped because another file has the same name, which a scorer must not pass over)."""

    cases: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # two files of one name: "path: reason"

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path), reason))


def _nifti_files(folder: Path, scan: FolderScan) -> dict[str, Path]:
    """Map ``stem -> path`` for the NIfTI files directly in ``folder``; other files go to ``scan.skipped``.

    Hidden files (names starting with ``.``) and ``dataset.json`` (:mod:`cascade.annotation`) are
    ignored; sub-folders are left to the caller. Files that are not regular (FIFOs, sockets,
    devices) are skipped without being opened (reading a FIFO blocks). Two files of one name
    (``X.nii`` and ``X.nii.gz``, a stale copy beside a newer one) are both skipped, and noted in
    ``scan.conflicts``: which one is current cannot be known.
    """
    files: dict[str, Path] = {}
    twice: set[str] = set()
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir() or path.name == DATASET_JSON:
            continue
        stem = _strip_nifti_suffix(path.name)
        if stem is None:
            scan.skip(path, "not a NIfTI file (.nii or .nii.gz)")
        elif not path.exists():
            scan.skip(path, "broken symbolic link")
        elif not path.is_file():
            scan.skip(path, "not a regular file (a FIFO, socket or device): not read")
        elif stem in files or stem in twice:
            other = files.pop(stem, None)
            reason = (f"{path.name} and {other.name if other else 'another file'} are both {stem}; neither is read "
                      "(delete the stale one)")
            scan.conflicts.append(f"{path}: {reason}")
            for duplicate in (other, path):
                if duplicate is not None:
                    scan.skip(duplicate, reason)
            twice.add(stem)
        else:
            files[stem] = path
    return files


def _case_entry(case: str, image: Path | None, label: Path | None) -> dict:
    return {"case": case, "image": str(image) if image else None, "label": str(label) if label else None}


def _nnunet_cases(images: Path, labels: Path | None, scan: FolderScan) -> None:
    label_files = _nifti_files(labels, scan) if labels is not None and labels.is_dir() else {}
    cases: dict[str, Path] = {}
    for stem, path in _nifti_files(images, scan).items():
        match = re.fullmatch(r"(.+)_(\d{4})", stem)
        if match is None:
            raise InputError(f"{path}: nnU-Net image names end in a channel suffix like _0000")
        if match.group(2) != "0000":
            raise InputError(f"{path}: only single-channel data (_0000) is supported")
        cases[match.group(1)] = path
    for case in sorted(label_files.keys() - cases.keys()):
        scan.skip(label_files[case], "label map without an image")
    scan.cases += [_case_entry(case, path, label_files.get(case)) for case, path in sorted(cases.items())]


def _flat_cases(folder: Path, scan: FolderScan) -> None:
    candidates: dict[str, list[Path]] = {}
    labels: dict[str, Path] = {}
    for stem, path in _nifti_files(folder, scan).items():
        lower = stem.lower()
        if lower.endswith(_SKIPPED_SUFFIXES):
            scan.skip(path, "a stage-1 mask or gate written by cascade predict")
        elif lower.endswith("_label"):
            labels[stem[: -len("_label")]] = path
        else:
            candidates.setdefault(stem[: -len("_gt")] if lower.endswith("_gt") else stem, []).append(path)
    images = {}
    for case, paths in candidates.items():
        if len(paths) == 1:
            images[case] = paths[0]
            continue
        names = " and ".join(p.name for p in paths)
        for path in paths + ([labels.pop(case)] if case in labels else []):
            scan.skip(path, f"case {case!r} is given by {names}; none of them is read")
    scan.cases += [
        _case_entry(case, images.get(case), labels.get(case)) for case in sorted(images.keys() | labels.keys())
    ]


def _mbas_cases(root: Path, scan: FolderScan) -> None:
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _nifti_files(sub, scan)
        image, label = files.pop(f"{sub.name}_gt", None), files.pop(f"{sub.name}_label", None)
        for path in files.values():
            scan.skip(path, f"not {sub.name}_gt or {sub.name}_label (the MBAS layout)")
        if image or label:
            scan.cases.append(_case_entry(sub.name, image, label))
        elif not files:
            scan.skip(sub, f"folder without {sub.name}_gt.nii.gz or {sub.name}_label.nii.gz")


def _skip_beside(root: Path, read: set[str], scan: FolderScan) -> None:
    """Report what sits beside the folders of an nnU-Net raw dataset (its JSON files excepted)."""
    for path in sorted(root.iterdir()):
        if path.name not in read and not path.name.startswith(".") and path.suffix.lower() != ".json":
            scan.skip(path, f"beside {'/'.join(sorted(read))} of an nnU-Net raw dataset: not read")


def scan_folder(root: str | os.PathLike) -> FolderScan:
    """Find the cases in a data folder of any supported layout, and what is not used.

    Args:
        root: MBAS-layout folder, nnU-Net raw dataset folder (or its ``imagesTs``-style image
            folder), or flat folder.

    Returns:
        ``cases``: ``[{"case": id, "image": path or None, "label": path or None}, ...]`` sorted by
        case id; ``skipped``: ``(path, reason)`` for every file or folder not used.

    Raises:
        InputError: ``root`` is missing or holds no NIfTI case; a case id found twice.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: data folder not found")
    scan = FolderScan()
    if (root / "imagesTr").is_dir():
        _nnunet_cases(root / "imagesTr", root / "labelsTr", scan)
        _skip_beside(root, {"imagesTr", "labelsTr", "imagesTs"}, scan)
    elif (root / "imagesTs").is_dir():
        _nnunet_cases(root / "imagesTs", None, scan)
        _skip_beside(root, {"imagesTs"}, scan)
    elif any(re.fullmatch(r".+_0000", stem) for stem in _nifti_files(root, FolderScan())):
        _nnunet_cases(root, None, scan)
    else:
        _flat_cases(root, scan)
        _mbas_cases(root, scan)
        scan.cases.sort(key=lambda c: c["case"])
    ids = [c["case"] for c in scan.cases]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise InputError(f"{root}: case ids found twice (flat file and sub-folder?): {duplicated}")
    if not scan.cases:
        reasons = "; ".join(f"{Path(path).name}: {reason}" for path, reason in scan.skipped[:5])
        more = f" (and {len(scan.skipped) - 5} more)" if len(scan.skipped) > 5 else ""
        skipped = f"; skipped {reasons}{more}" if reasons else ""
        raise NoCasesError(f"{root}: no NIfTI cases found (expected MBAS, nnU-Net raw or flat layout){skipped}")
    return scan


def discover_cases(root: str | os.PathLike) -> list[dict]:
    """The cases of :func:`scan_folder`."""
    return scan_folder(root).cases


def validate_case(case: dict, check_values: bool = True) -> None:
    """Check that a case can be used for training or evaluation.

    Args:
        case: datalist entry with ``image`` and optionally ``label`` paths and ``annotated``
            classes (default: all).
        check_values: also read the voxels (finite intensities, label values among background
            and the annotated classes); without it only headers are read (shape,
            dimensionality, geometry).

    Raises:
        InputError: one message naming the offending file and the problem.
    """
    read = (lambda p, label: load_nifti(p, label=label)) if check_values else (lambda p, label: read_header(p))
    image = read(case["image"], False) if case.get("image") else None
    label = read(case["label"], True) if case.get("label") else None
    if image is not None and label is not None and not same_geometry(image, label):
        raise InputError(
            f"{case['label']}: geometry differs from {case['image']} "
            f"(shape {label.shape[:3]} vs {image.shape[:3]}, or affine beyond tolerance)"
        )
    annotated = set(case.get("annotated", ALL_CLASSES))
    if check_values and label is not None and annotated != set(ALL_CLASSES):
        present = set(np.unique(np.asanyarray(label.dataobj)).astype(int).tolist()) - {0}
        if present - annotated:
            raise InputError(
                f"{case['label']}: label values {sorted(present - annotated)} are not among the annotated classes "
                f"{sorted(annotated)} (declared by --annotated or the data's dataset.json)"
            )


def assign_folds(case_ids: list[str], num_folds: int = 5, seed: int = DEFAULT_SEED) -> dict[str, int]:
    """Deterministic k-fold assignment: every case is validated in exactly one fold.

    Cases are sorted, shuffled with ``seed`` and dealt round-robin, so fold sizes differ by at
    most one and the assignment does not depend on the order cases were found in.
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    if len(case_ids) < num_folds:
        raise ValueError(
            f"{len(case_ids)} cases cannot be split into {num_folds} folds (each fold validates at least one case): "
            f"use at most {len(case_ids)} folds (--num_folds {len(case_ids)} for a bundle run, --folds {len(case_ids)} "
            "for cascade datalist or crossval)"
        )
    order = np.random.default_rng(seed).permutation(len(case_ids))
    ordered = sorted(case_ids)
    return {ordered[i]: rank % num_folds for rank, i in enumerate(order)}


def _report_skipped(scan: FolderScan, report: Callable[[str], None] | None) -> None:
    for path, reason in scan.skipped:
        (report or _warn)(f"{path}: skipped: {reason}")


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def data_folders(root: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """One data folder, or several given as a sequence or comma-separated."""
    roots = root.split(",") if isinstance(root, str) else [root] if isinstance(root, os.PathLike) else list(root)
    folders = [Path(r) for r in roots if str(r).strip()]
    if not folders:
        raise InputError("no data folder given")
    return folders


def labelled_cases(
    root: str | os.PathLike, annotated: str | Sequence | None = None, report: Callable[[str], None] | None = None
) -> list[dict]:
    """The labelled cases of a data folder, each with the classes its label maps annotate.

    Args:
        root: data folder of any supported layout.
        annotated: the classes the labels annotate (names or values); default: the folder's
            ``dataset.json``, else all (see :mod:`cascade.annotation`).
        report: called with one line for every file not used (images without labels included);
            default: a Python warning each.

    Returns:
        ``{"case", "image", "label", "annotated"}`` entries sorted by case.

    Raises:
        InputError: no labelled case, a case without image, or a bad declaration.
    """
    classes = list(declared_classes(root, annotated))
    scan = scan_folder(root)
    for case in scan.cases:
        if not case["label"]:
            scan.skip(Path(case["image"]), "image without a label map: not used for training")
    _report_skipped(scan, report)
    cases = [{**c, "annotated": classes} for c in scan.cases if c["label"]]
    if not cases:
        raise InputError(f"{root}: no labelled cases found")
    for case in cases:
        if not case["image"]:
            raise InputError(f"{case['label']}: label map without an image")
    return cases


def make_datalist(
    root: str | os.PathLike | Sequence[str | os.PathLike],
    num_folds: int = 5,
    seed: int = DEFAULT_SEED,
    check_values: bool = True,
    report: Callable[[str], None] | None = None,
    annotated: str | Sequence | None = None,
) -> list[dict]:
    """Datalist of the labelled cases of one or more data folders with their fold, each case validated.

    Args:
        root: data folder of any supported layout, or several (a sequence or comma-separated):
            e.g. fully labelled MBAS cases and left-atrium-only cases in one list.
        num_folds: number of folds.
        seed: fold assignment seed.
        check_values: read the voxels too (see :func:`validate_case`).
        report: called with one line for every file not used (images without labels included);
            default: a Python warning each.
        annotated: the classes every folder's labels annotate (names or values); default: each
            folder's ``dataset.json``, else all classes.

    Raises:
        InputError: no labelled case, a case without image, a case id in two folders, or a case
            that fails validation.
    """
    cases: list[dict] = []
    for folder in data_folders(root):
        cases += labelled_cases(folder, annotated, report)
    ids = [c["case"] for c in cases]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise InputError(f"{root}: case ids found in more than one data folder: {duplicated[:10]}")
    for case in cases:
        validate_case(case, check_values=check_values)
    folds = assign_folds([c["case"] for c in cases], num_folds, seed)
    return sorted(({**c, "fold": folds[c["case"]]} for c in cases), key=lambda c: c["case"])


def write_datalist(datalist: list[dict], path: str | os.PathLike, num_folds: int, seed: int) -> None:
    """Write a datalist as JSON: ``{"num_folds", "seed", "training": [...]}``.

    File paths are stored relative to the JSON's folder (as :func:`load_datalist` reads them), so
    the file means the same from any working folder and moves with its data.
    """
    folder = Path(os.path.abspath(path)).parent
    entries = [
        {
            key: os.path.relpath(os.path.abspath(value), folder) if key in _PATH_KEYS and value else value
            for key, value in entry.items()
        }
        for entry in datalist
    ]
    stored = {"num_folds": num_folds, "seed": seed, "training": entries}
    write_text_atomic(folder / Path(path).name, json.dumps(stored, indent=2) + "\n")


def is_datalist_file(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a datalist JSON file (rather than a data folder)."""
    return Path(source).is_file() and Path(source).suffix.lower() == ".json"


def load_datalist(
    source: str | os.PathLike, num_folds: int = 5, seed: int = DEFAULT_SEED, check_values: bool = False
) -> list[dict]:
    """Datalist from data folders (cases discovered and split) or a JSON file from ``cascade datalist``.

    A JSON file keeps the folds stored in it; ``num_folds`` and ``seed`` then only apply to
    entries without a ``fold``. Entries without ``annotated`` annotate every class.
    """
    if is_datalist_file(source):
        source = Path(source)
        try:
            content = json.loads(source.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{source}: not a valid datalist JSON ({err})") from err
        entries = content.get("training") if isinstance(content, dict) else content
        named = isinstance(entries, list) and all(isinstance(e, dict) and type(e.get("case")) is str for e in entries)
        if not named or not all(e["case"] for e in entries):
            raise InputError(f"{source}: not a datalist: expected "
                             '{"training": [{"case": ..., "image": ..., "label": ...}, ...]} '
                             "as `cascade datalist` writes it")
        base = source.parent
        datalist = []
        for entry in entries:
            entry = dict(entry)
            for key in _PATH_KEYS:
                if entry.get(key) is not None and not isinstance(entry[key], str):
                    raise InputError(f"{source}: case {entry['case']}: {key!r} must be a file path, got "
                                     f"{json.dumps(entry[key])}")
                if entry.get(key) and not os.path.isabs(entry[key]):
                    entry[key] = str(base / entry[key])
            where = f"{source}: case {entry['case']}"
            declared = annotated_classes(entry["annotated"], where) if "annotated" in entry else ALL_CLASSES
            entry["annotated"] = list(declared)
            if "fold" in entry and (isinstance(entry["fold"], bool) or not isinstance(entry["fold"], int)):
                raise InputError(f"{where}: 'fold' must be a whole number, got {json.dumps(entry['fold'])}")
            datalist.append(entry)
        ids = [e["case"] for e in datalist]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise InputError(f"{source}: case ids listed more than once: {duplicated[:10]}")
        if any("fold" not in e for e in datalist):
            folds = assign_folds([e["case"] for e in datalist], num_folds, seed)
            datalist = [{**e, "fold": e.get("fold", folds[e["case"]])} for e in datalist]
        return datalist
    return make_datalist(source, num_folds=num_folds, seed=seed, check_values=check_values)


def fold_datalist(
    source: str | os.PathLike,
    fold: int,
    split: str,
    num_folds: int = 5,
    seed: int = DEFAULT_SEED,
    mask_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """One side of a cross-validation split, as bundles' configs ask for it.

    Args:
        source: data folder or datalist JSON (see :func:`load_datalist`).
        fold: the validation fold, ``0 <= fold < num_folds``; ``-1`` trains on every case and
            validates on none (the paper's final, all-data models).
        split: ``"train"`` (every other fold) or ``"validation"`` (this fold).
        num_folds: number of folds.
        seed: fold assignment seed.
        mask_dir: optional folder of stage-1 masks ``<case>_mask.nii.gz`` added as key ``mask``.

    Returns:
        The entries of that split.
    """
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    if not -1 <= fold < num_folds:
        raise ValueError(f"fold must be in [-1, {num_folds - 1}], got {fold}")
    datalist = load_datalist(source, num_folds=num_folds, seed=seed)
    if split == "train":
        chosen = [e for e in datalist if e["fold"] != fold]
    else:
        chosen = [e for e in datalist if e["fold"] == fold]
    return attach_masks(chosen, mask_dir) if mask_dir else chosen


def image_datalist(
    source: str | os.PathLike,
    mask_dir: str | os.PathLike | None = None,
    report: Callable[[str], None] | None = None,
    scan: FolderScan | None = None,
) -> list[dict]:
    """Every case of a data folder that has an image, for inference.

    Args:
        source: data folder of any supported layout.
        mask_dir: folder of stage-1 masks to attach (see :func:`attach_masks`).
        report: called with one line for every file not used (label maps without an image
            included); default: a Python warning each.
        scan: the folder's :func:`scan_folder`, when the caller made it already.

    Returns:
        ``{"case", "image"}`` entries, with ``"label"`` where the case has one and ``"mask"``
        when ``mask_dir`` is given.
    """
    scan = scan or scan_folder(source)
    for case in scan.cases:
        if not case["image"]:
            scan.skip(Path(case["label"]), "label map without an image: nothing to predict")
    _report_skipped(scan, report)
    entries = [{key: value for key, value in case.items() if value is not None} for case in scan.cases if case["image"]]
    if not entries:
        raise InputError(f"{source}: no images found")
    return attach_masks(entries, mask_dir) if mask_dir else entries


def gate_masks(mask_dir: str | os.PathLike | None, gate_from_config: bool) -> str | None:
    """The segmenter's mask folder for a bundle run, or ``None`` when its config makes the gate.

    A guard for ``python -m monai.bundle run`` of the segmenter's configs: without a gate stage 2 has
    nothing to be confined to, so the run stops here with one line saying how to give one (as
    ``SystemExit``, which MONAI's config parser lets through without a traceback).

    Args:
        mask_dir: folder of stage-1 masks ``<case>_mask.nii.gz`` (``--mask_dir``), or empty.
        gate_from_config: the config builds the gate itself (``mask_from_label`` or ``single_stage``).
    """
    if gate_from_config:
        return None
    if not mask_dir:
        raise SystemExit(
            "atria_segmenter: stage 2 needs its gate: pass --mask_dir DIR (stage-1 masks <case>_mask.nii.gz, "
            "e.g. from the localizer bundle's inference) or --mask_from_label true (the label, dilated)"
        )
    return str(mask_dir)


def attach_masks(datalist: list[dict], mask_dir: str | os.PathLike) -> list[dict]:
    """Add each case's stage-1 mask ``mask_dir/<case>_mask.nii.gz`` under key ``mask``.

    Raises:
        InputError: a case has no mask file.
    """
    mask_dir = Path(mask_dir)
    result = []
    for entry in datalist:
        candidates = [mask_dir / f"{entry['case']}_mask{suffix}" for suffix in NIFTI_SUFFIXES]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise InputError(f"{candidates[0]}: stage-1 mask for case {entry['case']} not found")
        result.append({**entry, "mask": str(found)})
    return result
