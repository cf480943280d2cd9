"""Which classes a dataset annotates, for training and scoring on partially labelled data.

Most public atrial data labels the left-atrium cavity only; there a 0 means "not left atrium", not
"background": the right atrium and the walls are simply not drawn. A dataset declares the classes
it annotates in one of two ways, the first found winning:

- ``--annotated left_atrium`` (``cascade datalist``, ``crossval``, ``evaluate``): class names or
  label values, comma-separated;
- a ``dataset.json`` beside the data with nnU-Net v2's ``labels`` field, e.g. ``{"labels":
  {"background": 0, "left_atrium": 3}}``: the label values it lists are the annotated classes
  (an nnU-Net raw dataset already has this file). Names are free, except that a name of one of
  this project's classes (or a common synonym, :data:`CLASS_SYNONYMS`: ``LA``, ``left atrium``,
  ``atrial_wall``, ...) must carry that class's value: ``{"left_atrium": 1}`` (nnU-Net's habit of
  numbering an LA-only set from 1) is refused, since this project's value 1 is the wall. The
  label maps are not remapped on reading: relabel them (left atrium 3) and fix the declaration.

Without either, every class (wall, right atrium, left atrium) is annotated. Datalists store each
case's classes as ``"annotated": [3]``, so one datalist can mix fully and partially labelled
cases. Inside training the set travels as an integer code (bit ``v`` set for annotated label
value ``v``; background always set), which collates in batches of mixed cases and rides along as
a constant target channel (:class:`AnnotationChanneld`) through crops, flips, rotations and
MONAI's deep-supervision downsampling to :class:`cascade.losses.MaskedDiceCELoss`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from cascade.errors import InputError
from cascade.labels import BACKGROUND, CLASS_NAMES

__all__ = [
    "ALL_CLASSES",
    "DATASET_JSON",
    "CLASS_SYNONYMS",
    "parse_classes",
    "annotated_classes",
    "declared_classes",
    "annotation_code",
    "classes_from_code",
    "AnnotationChanneld",
]

ALL_CLASSES = tuple(CLASS_NAMES)  # (1, 2, 3): wall, right atrium, left atrium
DATASET_JSON = "dataset.json"
_BY_NAME = {name: value for value, name in CLASS_NAMES.items()}
# names a dataset.json may give the project's classes (compared in lower case, spaces and hyphens as underscores)
CLASS_SYNONYMS = {
    "wall": 1, "walls": 1, "atrial_wall": 1, "atrial_walls": 1, "atria_wall": 1,
    "right_atrium": 2, "ra": 2, "right_atrial_cavity": 2, "right_atrium_cavity": 2, "ra_cavity": 2,
    "left_atrium": 3, "la": 3, "left_atrial_cavity": 3, "left_atrium_cavity": 3, "la_cavity": 3,
}


def parse_classes(spec: str | int | Iterable[str | int]) -> tuple[int, ...]:
    """Class values from names or values: ``"left_atrium"``, ``3``, ``"wall,3"``, ``["wall", "left_atrium"]``.

    Returns:
        Sorted foreground label values, a non-empty subset of :data:`ALL_CLASSES`.

    Raises:
        InputError: an unknown name or value, or no class at all.
    """
    items = spec.split(",") if isinstance(spec, str) else [spec] if isinstance(spec, int) else list(spec)
    values = set()
    for item in items:
        text = str(item).strip()
        if text.lstrip("-").isdigit() and int(text) in ALL_CLASSES:
            values.add(int(text))
        elif text in _BY_NAME:
            values.add(_BY_NAME[text])
        elif text:
            known = ", ".join(f"{name} ({value})" for value, name in CLASS_NAMES.items())
            raise InputError(f"--annotated: unknown class {text!r}; expected some of {known}")
    if not values:
        raise InputError(f"--annotated: no class given in {spec!r}")
    return tuple(sorted(values))


def annotated_classes(value: object, where: str) -> tuple[int, ...]:
    """Check a datalist entry's ``annotated`` value: a non-empty list of label values (or class names).

    One check for every reader of datalists (``cascade evaluate``, ``crossval``, the bundles).

    Args:
        value: the entry's ``annotated`` value as read from JSON.
        where: how messages name the entry (the datalist file and the case).

    Returns:
        Sorted label values among :data:`ALL_CLASSES`.

    Raises:
        InputError: not a list, empty, or holding something that is not one of the classes.
    """
    known = ", ".join(f"{number} ({name})" for number, name in CLASS_NAMES.items())
    well_typed = isinstance(value, list) and all(type(item) in (int, str) for item in value)  # not bool, an int too
    if not well_typed or not value:
        raise InputError(f"{where}: 'annotated' must be a non-empty list of the label values it annotates, "
                         f"e.g. [3] for left atrium only; got {json.dumps(value)} (values: {known})")
    try:
        return parse_classes(value)
    except InputError:
        raise InputError(f"{where}: 'annotated' holds {json.dumps(value)}; expected label values among {known}"
                         ) from None


def declared_classes(root: str | os.PathLike, annotated: str | Iterable | None = None) -> tuple[int, ...]:
    """The classes a data folder annotates (see the module docstring for the rules).

    Args:
        root: data folder; its ``dataset.json`` is read when ``annotated`` is not given.
        annotated: the user's declaration (names or values), winning over the file.

    Raises:
        InputError: a bad declaration, an unreadable ``dataset.json`` or one whose ``labels`` are
            not background 0 plus values among 1, 2, 3.
    """
    if annotated is not None and annotated != "":
        return parse_classes(annotated)
    path = Path(root) / DATASET_JSON
    if not path.is_file():
        return ALL_CLASSES
    try:
        labels = json.loads(path.read_text(encoding="utf-8-sig")).get("labels")  # with Notepad's byte order mark
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise InputError(f"{path}: not a readable dataset.json ({type(err).__name__})") from err
    if labels is None:
        return ALL_CLASSES
    values = list(labels.values()) if isinstance(labels, dict) else None
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InputError(
            f"{path}: 'labels' must map names to label values, e.g. {{\"background\": 0, \"left_atrium\": 3}}"
        )
    foreground = sorted(set(values) - {BACKGROUND})
    if BACKGROUND not in values or not foreground or any(v not in ALL_CLASSES for v in foreground):
        raise InputError(
            f"{path}: 'labels' must hold background 0 and some of the values 1, 2, 3; got {sorted(set(values))}"
        )
    for name, value in labels.items():
        meant = CLASS_SYNONYMS.get(str(name).strip().lower().replace(" ", "_").replace("-", "_"))
        if meant is not None and value != meant:
            meaning = CLASS_NAMES.get(value, "background")
            raise InputError(
                f"{path}: 'labels' gives {name!r} the value {value}, but this project's label maps use {meant} for "
                f"{CLASS_NAMES[meant]} ({value} is {meaning}); relabel the maps ({value} -> {meant}) and declare "
                f"{{\"{name}\": {meant}}}, or rename the class if {value} really is {meaning}"
            )
    return tuple(foreground)


def annotation_code(classes: Iterable[int]) -> int:
    """Integer code of a set of annotated classes: bit ``v`` for each label value, background (bit 0) always."""
    return 1 | sum(1 << int(v) for v in set(classes))


def classes_from_code(code: int) -> tuple[int, ...]:
    """The annotated foreground classes of an :func:`annotation_code`."""
    return tuple(v for v in ALL_CLASSES if int(code) >> v & 1)


class AnnotationChanneld(MapTransform):
    """Append the case's annotation code to its label as a constant channel.

    The loss then knows, per voxel, which classes the label can speak for (see
    :class:`cascade.losses.MaskedDiceCELoss`); a constant survives every spatial transform and
    nearest-neighbour downsampling unchanged.

    Args:
        keys: the label key(s), (C, X, Y, Z) tensors; the result has C + 1 channels.
        annotated_key: item key holding the case's annotated classes (a list of label values, as
            datalists store them) or their code; missing means every class.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self, keys: KeysCollection, annotated_key: str = "annotated", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.annotated_key = annotated_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        annotated = d.get(self.annotated_key, ALL_CLASSES)
        code = int(annotated) if isinstance(annotated, (int, torch.Tensor)) else annotation_code(annotated)
        for key in self.key_iterator(d):
            label = d[key]
            d[key] = torch.cat([label, torch.full_like(label[:1], float(code))], dim=0)
        return d
