"""Request settings and the cached cascade engine shared by the app's infer tasks.

Each stage is a :class:`cascade.engine.StagePredictor` (the bundle's ``inference.json`` and the
weights' overlays) built with the overrides and the runtime ``cascade predict`` applies for the same
settings (:func:`cascade.settings.stage_overrides`, :func:`cascade.runtime.stage_runtime`), and kept
while the settings and the checkpoint files stay the same. A setting the client does not give is each
stage's own config value.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

from cascade.bundles import STAGES
from cascade.engine import CascadeEngine, CaseResult, StagePredictor
from cascade.errors import InputError
from cascade.errors import SettingError
from cascade.runtime import stage_runtime
from cascade.settings import as_bool, as_number, stage_defaults, stage_overrides, stage_settings

from lib.weights import ServedWeights

__all__ = [
    "client_settings", "SERVER_KEYS", "InferSettings", "check_request_keys", "settings_from_request",
    "default_settings", "EngineCache",
]

# Keys an infer request holds without the client naming them: what MONAI Label 0.8.5 itself adds
# (endpoints/infer.py, MONAILabelApp.infer, batch inference) or reads (timeout, label_tag), and what
# its 3D Slicer plugin sends besides a task's config (device, result_*, label_info: accepted, not used).
SERVER_KEYS = frozenset({
    "model", "image", "label", "session", "description", "save_label", "label_tag", "timeout", "_id", "_image_id",
    "logging",
    "device", "client_id", "result_extension", "result_dtype", "result_compress", "label_info",
})


def check_request_keys(request: Mapping, settings: Sequence[str]) -> None:
    """Refuse a request key that is neither one of the task's ``settings`` nor one of :data:`SERVER_KEYS`:
    a misspelled setting would otherwise be ignored without a word.

    Raises:
        InputError: naming the first unknown key and the settings the task takes.
    """
    unknown = sorted(str(key) for key in set(request) - SERVER_KEYS - set(settings))
    if unknown:
        names = [name for name in settings if name not in SERVER_KEYS]
        raise InputError(f"unknown setting '{unknown[0]}': this model takes {', '.join(names)} and device")


@dataclass(frozen=True)
class InferSettings:
    """What a client may choose per request; ``None`` leaves each stage's own config value.

    Attributes:
        overlap: sliding-window overlap of both stages, in [0, 0.99] (0 is the paper's step 1.0).
        tta: average over the 8 mirrorings of the three spatial axes.
        mask_region: stage 2 over the dilated stage-1 mask's bounding box only (else the whole volume).
        device: torch device name (``cpu``, ``cuda``, ``cuda:1``).
    """

    overlap: float | None = None
    tta: bool | None = None
    mask_region: bool | None = None
    device: str = "cpu"


def client_settings(bundles: Mapping[str, str | os.PathLike]) -> tuple[str, ...]:
    """The settings a client may send: the fields of :class:`InferSettings` (the app's choice) that
    a stage's bundle declares in its ``user_settings``, but ``device`` (the server's own key).

    Args:
        bundles: stage -> bundle folder.
    """
    declared = {name for names in stage_settings(bundles).values() for name in names}
    return tuple(field.name for field in fields(InferSettings) if field.name != "device" and field.name in declared)


def default_settings(weights: ServedWeights, stage: str = "segmenter") -> dict:
    """The client settings (:func:`client_settings`) of ``stage`` as its inference config (and the
    served weights' overlays) set them: what a request without settings runs with, as ``cascade predict``."""
    try:
        overlays = weights.served(stage).configs
    except InputError:  # no weights: the bundle's own values
        overlays = []
    defaults = stage_defaults(stage, weights.bundles[stage], overlays)
    return {name: defaults[name] for name in client_settings(weights.bundles) if name in defaults}


def settings_from_request(request: Mapping, device: str) -> InferSettings:
    """Read ``overlap``, ``tta`` and ``mask_region`` from a MONAI Label request (values may be
    strings); those not in ``request`` stay ``None``. ``request`` holds only the task's
    :func:`client_settings`.

    Raises:
        InputError: a value out of range or not a boolean (one line naming the setting).
    """
    try:
        return InferSettings(
            overlap=as_number(request.get("overlap"), "overlap", 0.0, 0.99),
            tta=None if request.get("tta") is None else as_bool(request["tta"], "tta"),
            mask_region=None if request.get("mask_region") is None else as_bool(request["mask_region"], "mask_region"),
            device=device,
        )
    except SettingError as err:  # named as the request names it
        raise InputError(f"{err.setting}: {err.problem}") from err


class EngineCache:
    """Stage predictors of the served weights, rebuilt only when settings or checkpoint files change.

    Args:
        weights: the served weights (a model published by the app's training is picked up on the
            next request).
    """

    def __init__(self, weights: ServedWeights) -> None:
        self.weights = weights
        self._stages: dict[str, tuple[tuple, StagePredictor]] = {}
        self._lock = threading.Lock()

    def stage(self, stage: str, settings: InferSettings) -> StagePredictor:
        """The predictor of ``stage`` (``localizer`` or ``segmenter``) for these settings.

        Raises:
            MissingCheckpointError: the stage has no weights (the message names the file and says
                how to serve weights).
            InputError: a bad device, or weights that do not fit the configured network.
        """
        weights = self.weights.served(stage)
        key = (settings, tuple((str(p), p.stat().st_mtime_ns) for p in weights.checkpoints), tuple(weights.configs))
        with self._lock:
            cached = self._stages.get(stage)
            if cached is None or cached[0] != key:
                overrides = stage_overrides(asdict(settings), stage_settings(self.weights.bundles))[stage]
                predictor = StagePredictor(self.weights.bundles[stage], weights.checkpoints, overrides, weights.configs,
                                           stage_runtime(stage, settings.device))
                self._stages[stage] = cached = (key, predictor)
        return cached[1]

    def engine(self, settings: InferSettings, stages: Sequence[str] = STAGES) -> CascadeEngine:
        """The cascade engine of ``stages`` (``("localizer",)`` for stage 1 alone)."""
        predictors = [self.stage(stage, settings) for stage in stages]
        return CascadeEngine(*predictors)

    def localize(self, image_path: str, settings: InferSettings) -> CaseResult:
        """Stage 1 alone on an image file (the localizer task): :meth:`CascadeEngine.localize_image`, with
        ``cascade predict``'s checks and warnings (a constant image gets an empty mask and a warning).

        Raises:
            InputError: the image cannot be used (one line naming the file).
            MissingCheckpointError: the localizer has no weights.
        """
        return self.engine(settings, stages=("localizer",)).localize_image(image_path)

    def checkpoints(self) -> dict[str, list[str]]:
        """Stage -> the checkpoint files served now (empty for a stage without weights)."""
        served = {}
        for stage in STAGES:
            try:
                served[stage] = [str(p) for p in self.weights.served(stage).checkpoints]
            except InputError:
                served[stage] = []
        return served
