"""Request settings and cached stage predictors shared by the app's infer tasks.

Each stage is a ``cascade`` bundle predictor (the bundle's ``inference.json`` parsed with MONAI's
``ConfigParser``), built with the same overrides as ``cascade predict`` and kept while the
request's settings and the checkpoint files stay the same.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from cascade.cli import as_bool
from cascade.io import InputError
from cascade.runner import BundlePredictor, MissingCheckpointError

from lib.weights import CascadeWeights

__all__ = ["InferSettings", "settings_from_request", "StagePredictors", "DEFAULT_SETTINGS"]

DEFAULT_SETTINGS = {"overlap": 0.5, "tta": False, "mask_region": True}


@dataclass(frozen=True)
class InferSettings:
    """What a client may choose per request.

    Attributes:
        overlap: sliding-window overlap of both stages, in [0, 1) (0 is the paper's step 1.0).
        tta: average over the 8 mirrorings of the three spatial axes.
        mask_region: stage 2 over the dilated stage-1 mask's bounding box only (else the whole volume).
        device: torch device name (``cpu``, ``cuda``, ``cuda:1``).
    """

    overlap: float
    tta: bool
    mask_region: bool
    device: str


def settings_from_request(request: Mapping, device: str) -> InferSettings:
    """Read ``overlap``, ``tta`` and ``mask_region`` from a MONAI Label request (values may be strings).

    Raises:
        InputError: a value is not a number in [0, 1) or not a boolean.
    """
    try:
        overlap = float(request.get("overlap", DEFAULT_SETTINGS["overlap"]))
    except (TypeError, ValueError) as err:
        raise InputError(f"overlap: expected a number in [0, 1), got {request.get('overlap')!r}") from err
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap: expected a number in [0, 1), got {overlap}")
    try:
        tta = as_bool(request.get("tta", DEFAULT_SETTINGS["tta"]), "tta")
        mask_region = as_bool(request.get("mask_region", DEFAULT_SETTINGS["mask_region"]), "mask_region")
    except ValueError as err:
        raise InputError(str(err).lstrip("-")) from err
    return InferSettings(overlap=overlap, tta=tta, mask_region=mask_region, device=device)


class StagePredictors:
    """Stage predictors of one set of weights, rebuilt only when settings or checkpoint files change.

    Args:
        weights: the configured stages.
        model_dir: where the app's train tasks publish (``<model_dir>/atria_<stage>/model.pt``);
            a published model replaces its stage's configured checkpoints from the next request on.
        hint: what to do about missing weights, appended to the missing-checkpoint message.
    """

    def __init__(self, weights: CascadeWeights, model_dir: str | os.PathLike, hint: str) -> None:
        self.weights = weights
        self.model_dir = model_dir
        self.hint = hint
        self._cache: dict[str, tuple[tuple, BundlePredictor]] = {}
        self._lock = threading.Lock()

    def get(self, stage: str, settings: InferSettings) -> BundlePredictor:
        """The predictor of ``stage`` (``localizer`` or ``segmenter``) for these settings.

        Raises:
            MissingCheckpointError: a checkpoint of the stage does not exist (message names it and
                says how to serve weights).
            InputError: the weights do not fit the configured network.
        """
        weights = self.served().stages[stage]
        missing = weights.missing()
        if missing:
            raise MissingCheckpointError(f"{missing[0]}: {stage} checkpoint not found ({self.hint})")
        key = (settings, tuple((str(p), p.stat().st_mtime_ns) for p in weights.checkpoints))
        with self._lock:
            cached = self._cache.get(stage)
            if cached is None or cached[0] != key:
                overrides = {"device": f"$torch.device('{settings.device}')", "overlap": settings.overlap, "num_workers": 0}
                if stage == "segmenter":
                    overrides.update({"crop_to_mask": settings.mask_region, "mask_from_label": False})
                predictor = BundlePredictor(
                    weights.bundle, weights.checkpoints, overrides=overrides,
                    extra_configs=weights.extra_configs, mirror=settings.tta,
                )
                self._cache[stage] = cached = (key, predictor)
        return cached[1]

    def served(self) -> CascadeWeights:
        """The configured weights with the app's published models in place."""
        return self.weights.with_published(self.model_dir)
