"""Where the two bundles and their weights are, in a source checkout and in an installed package.

The bundles live in the repository's ``bundles/`` folder and are installed with the package as
``cascade/_bundles/`` (package data, demo weights included), so ``cascade predict --demo`` works
from any folder after ``pip install atria-cascade``. The environment variable ``CASCADE_BUNDLES``
points at another folder holding ``atria_localizer/`` and ``atria_segmenter/`` (e.g. copies with
trained weights in ``models/model.pt``); ``--localizer`` / ``--segmenter`` choose each bundle.

Trained weights are found in one of three places:

- a work folder (``--models WORK``): each fold's :func:`fold_checkpoint` under
  ``WORK/<stage>/fold<k>/models/`` as ``cascade crossval`` and ``cascade import-nnunet`` write them,
  with an optional config overlay ``WORK/<stage>/config.json`` layered over the bundle's configs;
- the bundle's ``models/model.pt`` (``models/fold<k>/model.pt`` with ``--folds``);
- shipped weights (``--pretrained NAME``): every ``models/NAME/*.pt`` of the bundle, or ``fold<k>.pt`` of the
  ``--folds`` given (several are
  an ensemble), with the overlay ``configs/NAME.json`` they were trained with: ``demo`` (phantoms
  only) and ``la2018`` (real LGE-MRI, left atrium; each folder's README.md is its model card).
  Weights may be stored in half precision; they are loaded into the fp32 network. Each is checked
  against the SHA-256 the bundle's ``large_files.json`` records before it is used.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cascade.errors import InputError
from cascade.weights_manifest import record_shipped_weights, verify_shipped_weights

if TYPE_CHECKING:
    from monai.bundle import ConfigParser

__all__ = [
    "BUNDLE_NAMES",
    "STAGES",
    "BUNDLES_ENV",
    "MissingCheckpointError",
    "RENAMED_KEYS",
    "bundles_root",
    "bundle_dir",
    "check_weight_choice",
    "fold_checkpoint",
    "overlay_path",
    "StageWeights",
    "pretrained_names",
    "publish_weights",
    "read_stage_config",
    "note_single_fold",
    "require_checkpoint",
    "stage_config_files",
    "stage_weights",
    "stop_on_input_error",
    "unfinished_fold",
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


RENAMED_KEYS = {"crop_to_mask": "mask_region"}  # old config key -> new, read with a deprecation line until 0.3


def stage_config_files(bundle: str | os.PathLike, base: str, overlays: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """``configs/<base>.json`` of a bundle and its overlays (:func:`overlay_path`), in layering order.

    Raises:
        InputError: a file does not exist.
    """
    first = Path(bundle) / "configs" / f"{base}.json"
    if not first.is_file():
        raise InputError(f"{first}: bundle config not found")
    return [first, *(overlay_path(bundle, overlay) for overlay in overlays)]


def read_stage_config(
    bundle: str | os.PathLike,
    base: str = "inference",
    overlays: Sequence[str | os.PathLike] = (),
    overrides: Mapping | None = None,
) -> ConfigParser:
    """A bundle's config as MONAI reads it: ``configs/<base>.json``, the overlays layered in order,
    then ``overrides``; ``bundle_root`` is the bundle folder. Renamed keys of earlier releases
    (:data:`RENAMED_KEYS`) in an overlay or the overrides still apply, with a deprecation line.

    Raises:
        InputError: a config file does not exist.
    """
    from monai.bundle import ConfigParser  # here, not at the top: the command line's help and checks need no MONAI

    files = stage_config_files(bundle, base, overlays)
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    updates = {"bundle_root": str(Path(bundle)), **(overrides or {})}
    for old, new in RENAMED_KEYS.items():
        holders = [holder for holder in (updates, parser.config) if old in holder]
        if holders:
            warnings.warn(
                f"config key '{old}' is now '{new}'; '{old}' is read until version 0.3", FutureWarning, stacklevel=2
            )
            updates.setdefault(new, holders[0].pop(old))
    parser.update(updates)
    return parser


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


def fold_checkpoint(models: str | os.PathLike, stage: str, fold: int) -> Path:
    """The weights a work folder's fold stands for: the training's last weights ``model_final.pt``
    where it has them, else ``model.pt``.

    A bundle training also saves ``model.pt``, the weights with the best validation Dice; in
    cross-validation that validation set is the fold's own out-of-fold cases, so scoring or shipping
    the best weights would let the cases that are scored choose the model. As nnU-Net scores and
    ships its ``checkpoint_final``, the final weights are used. ``model.pt`` alone is a fold of
    ``cascade import-nnunet`` or an unfinished training (see :func:`unfinished_fold`).
    """
    models_dir = Path(models) / stage / f"fold{fold}" / "models"
    final = models_dir / "model_final.pt"
    return final if final.is_file() else models_dir / "model.pt"


def work_folds(models: str | os.PathLike, stage: str) -> list[int]:
    """Fold ids of a work folder's stage with a :func:`fold_checkpoint`, sorted."""
    stage_dir = Path(models) / stage
    if not stage_dir.is_dir():
        return []
    folds = []
    for child in stage_dir.iterdir():
        match = re.fullmatch(r"fold(\d+)", child.name)
        if match and fold_checkpoint(models, stage, int(match.group(1))).is_file():
            folds.append(int(match.group(1)))
    return sorted(folds)


def unfinished_fold(models: str | os.PathLike, stage: str, fold: int) -> bool:
    """Whether a work folder's fold is a training that did not finish, by ``cascade crossval``'s rule:
    a fold a training run made is finished once ``model_final.pt`` is written. A fold is a training
    run's when the work folder is a crossval one (``crossval.json``) or the fold holds the training's
    ``checkpoint_*.pt``; a ``model.pt`` alone elsewhere (``cascade import-nnunet``) is taken as is."""
    models_dir = Path(models) / stage / f"fold{fold}" / "models"
    if (models_dir / "model_final.pt").is_file():
        return False
    return (Path(models) / "crossval.json").is_file() or any(models_dir.glob("checkpoint_*.pt"))


def _fold_ids(folds: str | int | Sequence | None) -> list[int] | None:
    if folds is None or folds == "":
        return None
    values = folds if isinstance(folds, (tuple, list)) else str(folds).split(",")
    try:
        ids = [int(k) for k in values]
    except ValueError as err:
        raise InputError(f"--folds: expected comma-separated fold numbers, got {folds!r}") from err
    twice = sorted({k for k in ids if ids.count(k) > 1})
    if twice:  # an ensemble would weigh that fold double
        raise InputError(f"--folds {','.join(map(str, ids))}: fold(s) {twice} given twice")
    return ids


def pretrained_names(bundle: str | os.PathLike) -> list[str]:
    """Names of the shipped weights of a bundle: ``models/NAME/*.pt`` with a ``configs/NAME.json``."""
    models = Path(bundle) / "models"
    if not models.is_dir():
        return []
    return sorted(
        d.name
        for d in models.iterdir()
        if d.is_dir() and any(d.glob("*.pt")) and (Path(bundle) / "configs" / f"{d.name}.json").is_file()
    )


def check_weight_choice(
    stage: str, bundle: str | os.PathLike, models: str | os.PathLike | None, pretrained: str | None
) -> None:
    """Check the choice of weights before any file is read: ``pretrained`` names shipped weights of
    the bundle, and not together with ``models``.

    Raises:
        InputError: both given, or an unknown ``pretrained`` name (the message lists the known ones).
    """
    if pretrained and models:
        raise InputError(f"--pretrained {pretrained} and --models exclude each other")
    if pretrained:
        names = pretrained_names(bundle)
        if pretrained not in names:
            raise InputError(
                f"--pretrained {pretrained}: no such shipped weights for "
                f"the {stage} (available: {', '.join(names) or 'none'})"
            )


def stage_weights(
    stage: str,
    bundle: str | os.PathLike,
    models: str | os.PathLike | None = None,
    folds: str | int | Sequence | None = None,
    pretrained: str | None = None,
) -> StageWeights:
    """Find the weights of one stage (see the module docstring for the places looked in).

    Args:
        stage: ``localizer`` or ``segmenter``.
        bundle: the stage's bundle folder.
        models: a work folder (``cascade crossval --work`` or ``cascade import-nnunet --out``).
        folds: fold ids to ensemble (comma-separated string or sequence); with ``models`` the
            default is every fold found there, with ``pretrained`` every shipped file
            (``fold<k>.pt`` picks fold ``k``).
        pretrained: name of shipped weights (``demo``, ``la2018``; see :func:`pretrained_names`).

    Returns:
        The checkpoints (each checked to exist) and the overlays to layer.

    Raises:
        InputError: ``pretrained`` and ``models`` together, an unknown ``pretrained`` name, a bad
            ``folds`` value, or no fold in ``models``; with ``models`` and no ``folds``, an unfinished
            fold (:func:`unfinished_fold`; given by ``folds`` it is used, and named in the source).
        MissingCheckpointError: a checkpoint file does not exist.
    """
    bundle = Path(bundle)
    fold_ids = _fold_ids(folds)
    check_weight_choice(stage, bundle, models, pretrained)
    if pretrained:
        checkpoints = sorted((bundle / "models" / pretrained).glob("*.pt"))
        if fold_ids is not None:
            shipped = {c.stem: c for c in checkpoints}
            absent = [k for k in fold_ids if f"fold{k}" not in shipped]
            if absent:
                raise InputError(
                    f"--folds {','.join(map(str, fold_ids))}: the {pretrained} weights of the {stage} have no fold "
                    f"{','.join(map(str, absent))} (shipped: {', '.join(sorted(shipped)) or 'none'})"
                )
            checkpoints = [shipped[f"fold{k}"] for k in fold_ids]
        description = f"the {pretrained} weights" + (f", folds {fold_ids}" if fold_ids is not None else "")
        weights = StageWeights(checkpoints, [bundle / "configs" / f"{pretrained}.json"], description)
        verify_shipped_weights(bundle, checkpoints)
    elif models:
        work = Path(models)
        if not work.is_dir():
            raise InputError(f"{work}: --models folder not found")
        found = work_folds(work, stage)
        note = ""
        if fold_ids is None:
            if not found:
                raise MissingCheckpointError(
                    f"{work / stage}: no fold<k>/models/model_final.pt or model.pt found for the {stage}"
                )
            unfinished = [k for k in found if unfinished_fold(work, stage, k)]
            if unfinished:
                finished = [k for k in found if k not in unfinished]
                folds_flag = ",".join(map(str, finished))
                hint = f"name the finished ones with --folds {folds_flag}" if finished else "none has finished"
                raise InputError(
                    f"{work / stage / f'fold{unfinished[0]}'}: unfinished training (model.pt without model_final.pt) "
                    f"of the {stage} "
                    f"fold(s) {unfinished}; finish them (rerun the same cascade crossval) or {hint}"
                )
            fold_ids = found
        else:
            asked = [k for k in fold_ids if k in found and unfinished_fold(work, stage, k)]
            note = f" (unfinished training: fold(s) {asked}, as --folds asked)" if asked else ""
        overlay = work / stage / "config.json"
        checkpoints = [fold_checkpoint(work, stage, k) for k in fold_ids]
        weights = StageWeights(checkpoints, [overlay] if overlay.is_file() else [], f"{work}, folds {fold_ids}{note}")
    else:
        checkpoints = [bundle / "models" / f"fold{k}" / "model.pt" for k in fold_ids or ()]
        checkpoints = checkpoints or [bundle / "models" / "model.pt"]
        weights = StageWeights(checkpoints, [], ", ".join(str(c) for c in checkpoints))
    for checkpoint in weights.checkpoints:
        if not checkpoint.is_file():
            raise MissingCheckpointError(f"{checkpoint}: checkpoint not found")
    return weights


def publish_weights(
    models: str | os.PathLike, stage: str, name: str, bundle: str | os.PathLike | None = None
) -> list[Path]:
    """Ship a work folder's fold models as a bundle's ``models/NAME/fold<k>.pt``, in half precision.

    Half precision halves the repository's share of the weights; :func:`cascade.engine.load_checkpoint`
    loads them into the fp32 network (the rounding moves the label maps by far less than the
    fold-to-fold spread). The overlay ``configs/NAME.json`` they need must exist in the bundle. Their
    SHA-256 go into the bundle's ``large_files.json`` (:mod:`cascade.weights_manifest`), which
    ``--pretrained`` checks before loading.

    Args:
        models: work folder of ``cascade crossval`` (each fold's :func:`fold_checkpoint`).
        stage: ``localizer`` or ``segmenter``.
        name: the ``--pretrained`` name.
        bundle: the stage's bundle folder (default: the repository's).

    Returns:
        The files written.

    Raises:
        MissingCheckpointError: the work folder has no fold model of the stage.
        InputError: the bundle has no ``configs/NAME.json``.
    """
    import torch

    bundle = Path(bundle) if bundle else bundle_dir(stage)
    overlay_path(bundle, name)
    folds = work_folds(models, stage)
    if not folds:
        raise MissingCheckpointError(
            f"{Path(models) / stage}: no fold<k>/models/model_final.pt or model.pt found for the {stage}"
        )
    target = bundle / "models" / name
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for k in folds:
        state = torch.load(fold_checkpoint(models, stage, k), map_location="cpu", weights_only=True)
        if isinstance(state.get("model"), dict):  # a MONAI checkpoint rather than a bare state dict
            state = state["model"]
        half = {key: value.half() if value.is_floating_point() else value for key, value in state.items()}
        torch.save(half, target / f"fold{k}.pt")
        written.append(target / f"fold{k}.pt")
    record_shipped_weights(bundle, written)
    return written


def require_checkpoint(checkpoint: str | os.PathLike) -> None:
    """Check that a bundle's ``checkpoint`` exists, saying how to get weights when it does not.

    Raises:
        MissingCheckpointError: no file at ``checkpoint``.
    """
    if not Path(checkpoint).is_file():
        raise MissingCheckpointError(
            f"{checkpoint}: checkpoint not found; get weights: the shipped ones (add configs/demo.json or "
            "configs/la2018.json to --config_file), a trained fold (--checkpoint WORK/<stage>/fold<k>/models/model.pt "
            "from `cascade crossval` or a training run), or `cascade import-nnunet`"
        )


def note_single_fold(checkpoint: str | os.PathLike) -> str | None:
    """Say in one logged line that a bundle run predicts with one fold of shipped fold weights.

    A step of the inference configs' ``run`` lists: ``configs/la2018.json`` points ``checkpoint``
    at ``models/la2018/fold0.pt``, so ``python -m monai.bundle run`` with it runs fold 0 alone, while
    ``cascade predict --pretrained la2018`` ensembles every ``fold<k>.pt`` of the folder.

    Returns:
        The line logged (warning level, logger ``cascade.bundles``), or ``None`` when
        ``checkpoint`` is not one ``fold<k>.pt`` of several in its folder.
    """
    path = Path(checkpoint)
    folds = sorted(path.parent.glob("fold*.pt"))
    if not re.fullmatch(r"fold\d+\.pt", path.name) or len(folds) < 2:
        return None
    name = path.parent.name
    line = (f"{path}: this bundle run predicts with {path.stem} alone, one of the {len(folds)} folds of the {name} "
            f"weights; `cascade predict IN OUT --pretrained {name}` ensembles all {len(folds)} (docs/README.md)")
    logging.getLogger(__name__).warning(line)
    return line


def stop_on_input_error(check: Callable[..., object], *args, **kwargs) -> None:
    """Run ``check(*args, **kwargs)``; turn a bad-input error into a one-line exit (status 1).

    For the first step of a bundle config's ``run`` list: ``python -m monai.bundle run`` prints the
    whole traceback of any exception (70-110 lines for a missing checkpoint or too few cases),
    while ``SystemExit`` with a message prints that one line.

    Raises:
        SystemExit: ``check`` raised :class:`~cascade.errors.InputError` or ``ValueError``.
    """
    try:
        check(*args, **kwargs)
    except (InputError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
