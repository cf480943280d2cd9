"""User settings: parsed and checked once, then mapped onto each stage's bundle config.

Values arrive as strings or numbers (python-fire turns ``--overlap 0.5`` into a float and ``2024``
into an int; MONAI Label passes request params as JSON or strings); the ``as_*`` functions turn
them into typed values or raise a :class:`~cascade.errors.SettingError` naming the setting, which each caller
words in its own terms (``--overlap`` on the command line, ``overlap`` in a MONAI Label request).

Which settings a stage takes is declared by its bundle, not listed here: each bundle's
``configs/inference.json`` holds ``user_settings`` (the config ids a user may change, e.g.
``overlap``) and ``recorded_settings`` (those a run records in ``run.json``), read the way MONAI
Label's bundle tasks read the config ids a bundle declares (:func:`declared_settings`).
:func:`stage_overrides` maps the prediction settings onto each stage that declares them, under
the config ids (one name per switch).

A stage's defaults are its own bundle config's values (:func:`stage_defaults`). The CLI, the
engine, the MONAI Label app and the bench scripts all go through this module, and so do the
bundles' own runs (:func:`check_bundle_run`, the first step of every ``run`` list).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cascade.bundles import STAGES, bundle_dir, read_stage_config
from cascade.errors import InputError, SettingError

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "RUNTIME_SETTINGS",
    "SETTING_DECLARATIONS",
    "as_bool",
    "as_number",
    "as_seed",
    "as_triple",
    "as_margin",
    "as_overlap",
    "as_path",
    "as_uids",
    "as_precision",
    "as_paths",
    "as_classes",
    "check_bundle_run",
    "check_runtime",
    "declared_settings",
    "recorded_overrides",
    "resolve_device",
    "stage_overrides",
    "stage_defaults",
    "stage_settings",
]

BACKENDS = ("torch", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
# Prediction settings that are not config values: they go into a stage's runtime (cascade.runtime.StageRuntime)
RUNTIME_SETTINGS = ("device", "backend", "precision", "progress")
SETTING_DECLARATIONS = ("user_settings", "recorded_settings")  # the config ids of inference.json declaring settings


def as_bool(value: bool | str | int, flag: str) -> bool:
    """A boolean setting: fire passes ``--flag false`` on as the string ``"false"``, which is truthy.

    Raises:
        SettingError: the value is not one of true/false, yes/no, 1/0 (any case).
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise SettingError(flag, f"expected true or false, got {value!r}")


def as_number(
    value: float | int | str | None, flag: str, low: float, high: float, integer: bool = False
) -> float | int | None:
    """A numeric setting checked against ``[low, high]``; ``None`` (not given) passes through.

    Raises:
        SettingError: not a number, not an integer where one is needed, or out of range.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise SettingError(flag, f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingError(flag, f"expected a number, got {value!r}") from None
    if integer and not number.is_integer():
        raise SettingError(flag, f"expected a whole number, got {value!r}")
    if not low <= number <= high:
        raise SettingError(flag, f"expected a value in [{low}, {high}], got {value!r}")
    return int(number) if integer else number


def as_seed(value: int | str | None, default: int) -> int:
    """A ``--seed`` value: a whole number in [0, 2**32 - 1] (NumPy's seed range), ``default`` when not given."""
    return default if value is None else as_number(value, "seed", 0, 2**32 - 1, integer=True)


def as_triple(value: tuple | list | str, flag: str, low: float, high: float, integer: bool = False) -> tuple:
    """A three-value setting (``--shape Z Y X``, ``--spacing SZ SY SX``), each value checked by :func:`as_number`.

    Raises:
        SettingError: not three values, or one is not a number in ``[low, high]``.
    """
    values = value.split(",") if isinstance(value, str) else value if isinstance(value, (tuple, list)) else [value]
    if len(values) != 3:
        raise SettingError(flag, f"expected three values (Z Y X), got {value!r}")
    return tuple(as_number(v, flag, low, high, integer=integer) for v in values)


def as_margin(value: float | str | tuple | list | None) -> float | list[float] | None:
    """``gate_margin_mm``: one margin in mm or three (X Y Z), each in [0, 50]; ``None`` passes through.

    Raises:
        SettingError: not 1 or 3 numbers in range.
    """
    if value is None:
        return None
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    if len(values) not in (1, 3):
        raise SettingError("gate_margin_mm", f"expected one value or three (X Y Z), got {value!r}")
    margins = [as_number(v, "gate_margin_mm", 0.0, 50.0) for v in values]
    return margins[0] if len(margins) == 1 else margins


def as_overlap(value: float | str | tuple | list | None) -> float | dict[str, float] | None:
    """``overlap``: one sliding-window overlap for both stages, or two (``LOCALIZER,SEGMENTER``),
    each in [0, 0.99]; ``None`` passes through.

    Raises:
        SettingError: not 1 or 2 numbers in range.
    """
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        values = list(value)
    else:
        values = value.split(",") if isinstance(value, str) else [value]
    if len(values) not in (1, 2):
        raise SettingError("overlap", f"expected one value or two (LOCALIZER,SEGMENTER), got {value!r}")
    overlaps = [as_number(v, "overlap", 0.0, 0.99) for v in values]
    return overlaps[0] if len(overlaps) == 1 else dict(zip(STAGES, overlaps))


def as_path(value: str | int | float | None) -> str | None:
    """A path setting as a string: fire reads a name like ``2024`` as a number."""
    return None if value is None else str(value)


def as_paths(value: str | tuple | list) -> str | list[str]:
    """A path setting that may name several paths: fire turns ``a,b`` into a tuple."""
    return [str(v) for v in value] if isinstance(value, (tuple, list)) else str(value)


def as_precision(value: str | tuple | list | None) -> str | dict[str, str] | None:
    """``precision``: one value for both stages, or ``LOCALIZER,SEGMENTER`` (fire may pass a tuple)."""
    if value is None:
        return None
    values = [str(v).strip() for v in value] if isinstance(value, (tuple, list)) else str(value).split(",")
    if len(values) == 1:
        return values[0]
    if len(values) != 2:
        raise InputError(f"--precision {','.join(values)}: one value, or LOCALIZER,SEGMENTER")
    return dict(zip(STAGES, values))


def as_uids(value: str | tuple | list | None, flag: str) -> list[str] | None:
    """DICOM UIDs, comma-separated (fire passes ``a,b`` as a tuple): digits and dots, at most 64 characters.

    Raises:
        InputError: a value that is not a UID.
    """
    if value is None:
        return None
    parts = value if isinstance(value, (tuple, list)) else str(value).split(",")
    uids = [str(v).strip() for v in parts]
    for uid in uids:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid) or len(uid) > 64:
            raise InputError(f"--{flag} {uid}: not a DICOM UID (digits and dots, e.g. 1.2.840.113619.2.1)")
    return uids


def as_classes(value: str | int | tuple | list | None) -> str | None:
    """``annotated``: class names or values, comma-separated (fire may pass a tuple or a number)."""
    if value is None:
        return None
    return ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)


def check_runtime(backend: str, precisions: Sequence[str | None]) -> None:
    """Check ``--backend`` and ``--precision`` names (``None``: the default precision).

    Raises:
        InputError: an unknown backend or precision.
    """
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
    for precision in precisions:
        if precision is not None and precision not in PRECISIONS:
            raise InputError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")


def resolve_device(device: str) -> torch.device:
    """Check a device name: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The device, as the bundles' ``device`` config id takes it (MONAI's ``ConfigParser`` keeps an
        object given as an override as it is).

    Raises:
        InputError: an unknown name, or CUDA asked for on a machine without it.
    """
    import torch  # here, not at the top: the command line checks its other settings without torch

    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"--device {device}: expected auto, cpu, cuda or cuda:N") from err
    if parsed.type not in ("cpu", "cuda"):
        raise InputError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return parsed


def recorded_overrides(overrides: Mapping) -> dict:
    """Config overrides as run records and cache keys write them: a ``torch.device`` as the config
    expression creating it (``$torch.device('cpu')``), every other value as it is."""
    import torch

    return {key: f"$torch.device('{value}')" if isinstance(value, torch.device) else value
            for key, value in overrides.items()}


def check_bundle_run(dataset_dir: str | os.PathLike | None, device: object) -> None:
    """The checks of a bundle run's arguments that MONAI would otherwise report deep in a traceback:
    the data (``--dataset_dir``, whose config default is a placeholder path) and the device.

    Raises:
        InputError: ``dataset_dir`` missing; a device that is unknown or not on this machine.
    """
    resolve_device(str(device))
    if not dataset_dir or not Path(dataset_dir).exists():
        raise InputError(f"--dataset_dir {dataset_dir}: not found; pass --dataset_dir DIR (a data folder of any "
                         "supported layout, "
                         "or a datalist JSON of `cascade datalist`)")


def declared_settings(
    bundle: str | os.PathLike, declaration: str = "user_settings", overlays: Sequence[str | os.PathLike] = ()
) -> tuple[str, ...]:
    """The config ids a bundle's ``inference.json`` (with ``overlays``) declares under ``declaration``.

    Args:
        bundle: bundle folder.
        declaration: ``user_settings`` (what a user may change) or ``recorded_settings`` (what a
            run records; :data:`SETTING_DECLARATIONS`).
        overlays: overlay configs layered over ``inference.json`` (they may change a declaration).

    Raises:
        InputError: the config declares no such list, or one naming an id the config lacks.
    """
    if declaration not in SETTING_DECLARATIONS:
        raise ValueError(f"declaration must be one of {SETTING_DECLARATIONS}, got {declaration!r}")
    parser = read_stage_config(bundle, "inference", overlays)
    names = parser.get(declaration)
    where = Path(bundle) / "configs" / "inference.json"
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InputError(f"{where}: no '{declaration}' list of config ids (a bundle of an earlier release? "
                         "use the installed bundles' configs)")
    missing = [name for name in names if name not in parser]
    if missing:
        raise InputError(f"{where}: '{declaration}' names {', '.join(missing)}, not a config id of this config")
    return tuple(names)


def stage_settings(bundles: Mapping[str, str | os.PathLike | None] | None = None) -> dict[str, tuple[str, ...]]:
    """Stage -> the settings a user may change, as its bundle declares them (``user_settings``).

    Args:
        bundles: stage -> bundle folder; a stage not given (or ``None``) is the installed bundle.
    """
    bundles = bundles or {}
    return {stage: declared_settings(bundles.get(stage) or bundle_dir(stage)) for stage in STAGES}


def stage_overrides(
    settings: Mapping[str, object], declared: Mapping[str, Sequence[str]] | None = None
) -> dict[str, dict]:
    """Each stage's config overrides for prediction settings.

    Args:
        settings: setting -> value, or a mapping stage -> value for a setting the stages take
            differently (e.g. ``overlap`` from :func:`as_overlap`); ``None`` (or a missing key)
            leaves the config's value. The device (:data:`RUNTIME_SETTINGS`) is not among them: it
            reaches the config's ``device`` as a ``torch.device`` through the stage's runtime
            (:func:`cascade.runtime.stage_runtime`).
        declared: stage -> the settings it takes (default: the installed bundles' declarations,
            :func:`stage_settings`); a setting goes only to the stages declaring it.

    Returns:
        Stage -> overrides. Every stage is predicted, never trained, from them: the segmenter's
        gate comes from stage 1 (``mask_from_label`` off).
    """
    declared = stage_settings() if declared is None else declared
    overrides = {}
    for stage in STAGES:
        chosen = {name: settings.get(name) for name in declared[stage] if name not in RUNTIME_SETTINGS}
        chosen = {name: value.get(stage) if isinstance(value, Mapping) else value for name, value in chosen.items()}
        overrides[stage] = {key: value for key, value in chosen.items() if value is not None}
    overrides["segmenter"]["mask_from_label"] = False
    return overrides


def stage_defaults(stage: str, bundle: str | os.PathLike, overlays: Sequence[str | os.PathLike] = ()) -> dict:
    """A stage's own values of the settings its bundle declares (``user_settings`` but ``device``),
    from its bundle's ``inference.json`` and ``overlays``, as plain Python values."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    parser = read_stage_config(bundle, "inference", overlays)
    names = declared_settings(bundle, "user_settings", overlays)
    return {name: parser.get_parsed_content(name) for name in names if name != "device"}
