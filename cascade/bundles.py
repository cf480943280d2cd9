"""Where the two bundles and their weights are, in a source checkout and in an installed package.

The bundles live in the repository's ``bundles/`` folder and are installed with the package as
``cascade/_bundles/`` (package data, demo weights included), so ``cascade predict --demo`` works
from any folder after ``pip install atria-cascade``. The environment variable ``CASCADE_BUNDLES``
points at another folder holding ``atria_localizer/`` and ``atria_segmenter/`` (e.g. copies with
trained weights in ``models/model.pt``); ``--localizer`` / ``--segmenter`` choose each bundle.

Trained weights are found in one of three places:

- a work folder (``--models WORK``): ``WORK/<stage>/fold<k>/models/model.pt`` as ``cascade
  crossval`` and ``cascade import-nnunet`` write them, with an optional config overlay
  ``WORK/<stage>/config.json`` layered over the bundle's configs;
- the bundle's ``models/model.pt`` (``models/fold<k>/model.pt`` with ``--folds``);
- the shipped phantom demo weights ``models/demo/model.pt`` with the overlay ``configs/demo.json``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cascade.io import InputError

__all__ = [
    "BUNDLE_NAMES",
    "STAGES",
    "BUNDLES_ENV",
    "MissingCheckpointError",
    "bundles_root",
    "bundle_dir",
    "overlay_path",
    "StageWeights",
    "stage_weights",
    "work_folds",
]

STAGES = ("localizer", "segmenter")
BUNDLE_NAMES = {"localizer": "atria_localizer", "segmenter": "atria_segmenter"}
BUNDLES_ENV = "CASCADE_BUNDLES"
_PACKAGE = Path(__file__).resolve().parent


class MissingCheckpointError(InputError):
    """A stage has no trained weights where they were looked for."""


def bundles_root() -> Path:
    """The folder holding both bundles: ``$CASCADE_BUNDLES``, else the source tree's, else the installed copy.

    Raises:
        InputError: ``$CASCADE_BUNDLES`` is set but is not a folder, or no bundles are found.
    """
    configured = os.environ.get(BUNDLES_ENV)
    if configured:
        if not Path(configured).is_dir():
            raise InputError(f"{configured}: ${BUNDLES_ENV} is not a folder")
        return Path(configured)
    for candidate in (_PACKAGE.parent / "bundles", _PACKAGE / "_bundles"):
        if (candidate / BUNDLE_NAMES["localizer"] / "configs").is_dir():
            return candidate
    raise InputError(f"no bundles found next to {_PACKAGE} (reinstall atria-cascade or set ${BUNDLES_ENV})")


def bundle_dir(stage: str) -> Path:
    """Default bundle folder of ``stage`` (``localizer`` or ``segmenter``)."""
    return bundles_root() / BUNDLE_NAMES[stage]


def overlay_path(bundle: str | os.PathLike, overlay: str | os.PathLike) -> Path:
    """A config overlay: a bundle's own by name (``quick`` -> ``configs/quick.json``) or a file path.

    Raises:
        InputError: the file does not exist.
    """
    text = str(overlay)
    if os.sep not in text and "/" not in text and not text.endswith(".json"):
        path = Path(bundle) / "configs" / f"{text}.json"
    else:
        path = Path(overlay).resolve()
    if not path.is_file():
        raise InputError(f"{path}: config overlay not found")
    return path


@dataclass
class StageWeights:
    """Checkpoints of one stage and the config overlays they need.

    Attributes:
        checkpoints: weight files, ensembled when more than one.
        configs: overlay config files layered over ``inference.json``, in order.
        source: where they came from, for messages.
    """

    checkpoints: list[Path]
    configs: list[Path] = field(default_factory=list)
    source: str = ""


def work_folds(models: str | os.PathLike, stage: str) -> list[int]:
    """Fold ids with a checkpoint ``WORK/<stage>/fold<k>/models/model.pt``, sorted."""
    stage_dir = Path(models) / stage
    if not stage_dir.is_dir():
        return []
    folds = []
    for child in stage_dir.iterdir():
        match = re.fullmatch(r"fold(\d+)", child.name)
        if match and (child / "models" / "model.pt").is_file():
            folds.append(int(match.group(1)))
    return sorted(folds)


def _fold_ids(folds: str | int | Sequence | None) -> list[int] | None:
    if folds is None or folds == "":
        return None
    values = folds if isinstance(folds, (tuple, list)) else str(folds).split(",")
    try:
        return [int(k) for k in values]
    except ValueError as err:
        raise InputError(f"--folds: expected comma-separated fold numbers, got {folds!r}") from err


def stage_weights(
    stage: str,
    bundle: str | os.PathLike,
    models: str | os.PathLike | None = None,
    folds: str | int | Sequence | None = None,
    demo: bool = False,
) -> StageWeights:
    """Find the weights of one stage (see the module docstring for the places looked in).

    Args:
        stage: ``localizer`` or ``segmenter``.
        bundle: the stage's bundle folder.
        models: a work folder (``cascade crossval --work`` or ``cascade import-nnunet --out``).
        folds: fold ids to ensemble (comma-separated string or sequence); with ``models`` the
            default is every fold found there.
        demo: the shipped phantom demo weights.

    Returns:
        The checkpoints (each checked to exist) and the overlays to layer.

    Raises:
        InputError: ``demo`` and ``models`` together, a bad ``folds`` value, or no fold in ``models``.
        MissingCheckpointError: a checkpoint file does not exist.
    """
    bundle = Path(bundle)
    fold_ids = _fold_ids(folds)
    if demo and models:
        raise InputError("--demo and --models exclude each other")
    if demo:
        weights = StageWeights([bundle / "models" / "demo" / "model.pt"], [bundle / "configs" / "demo.json"], "the demo weights")
    elif models:
        work = Path(models)
        if not work.is_dir():
            raise InputError(f"{work}: --models folder not found")
        found = work_folds(work, stage)
        if fold_ids is None:
            if not found:
                raise MissingCheckpointError(f"{work / stage}: no fold<k>/models/model.pt found for the {stage}")
            fold_ids = found
        overlay = work / stage / "config.json"
        checkpoints = [work / stage / f"fold{k}" / "models" / "model.pt" for k in fold_ids]
        weights = StageWeights(checkpoints, [overlay] if overlay.is_file() else [], f"{work}, folds {fold_ids}")
    else:
        checkpoints = [bundle / "models" / f"fold{k}" / "model.pt" for k in fold_ids] if fold_ids else [bundle / "models" / "model.pt"]
        weights = StageWeights(checkpoints, [], ", ".join(str(c) for c in checkpoints))
    for checkpoint in weights.checkpoints:
        if not checkpoint.is_file():
            raise MissingCheckpointError(f"{checkpoint}: checkpoint not found")
    return weights
