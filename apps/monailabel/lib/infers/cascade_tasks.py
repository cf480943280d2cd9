"""MONAI Label infer tasks: the whole cascade (``atria_cascade``) and its localizer alone.

Like MONAI Label's multi-stage pipelines (the radiology app's vertebra pipeline), the cascade task
overrides ``__call__`` and chains its stages itself. The stages run in
:class:`cascade.engine.CascadeEngine`, the engine of ``cascade predict``, so the server's label
map equals the command line's. Results keep the input's exact shape, affine and header (uint8).
"""

from __future__ import annotations

import logging
import tempfile
import time
from abc import abstractmethod

import numpy as np
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.utils.others.generic import name_to_device

from cascade.bundles import MissingCheckpointError
from cascade.engine import CaseResult
from cascade.errors import InputError
from cascade.io import save_nifti_atomic
from cascade.labels import CLASS_COLOURS, CLASS_NAMES

from lib.infers.predictors import (
    EngineCache, InferSettings, check_request_keys, default_settings, settings_from_request,
)

__all__ = ["AtriaCascadeInfer", "AtriaLocalizerInfer", "CASCADE_LABELS", "LOCALIZER_LABELS"]

logger = logging.getLogger(__name__)

CASCADE_LABELS = {name: value for value, name in CLASS_NAMES.items()}
CASCADE_COLOURS = {CLASS_NAMES[value]: list(rgb) for value, rgb in CLASS_COLOURS.items()}
LOCALIZER_LABELS = {"atria": 1}  # the stage-1 mask: every atrial class together


class _CascadeTask(BasicInferTask):
    """Shared request handling: settings, errors as one-line HTTP answers, the NIfTI result.

    Args:
        engines: the cached engine of the served weights.
        labels: label name -> value of the returned map.
        description: shown by ``/info/``.
        settings: the settings a client may set, with their defaults (the task's config, shown by
            ``/info/`` and echoed with the values a request chose).
    """

    label_colours: dict[str, list[int]] = {}  # label name -> RGB 0-255, in /info/ and the result JSON

    def __init__(self, engines: EngineCache, labels: dict[str, int], description: str, settings: dict) -> None:
        super().__init__(
            path=None, network=None, type=InferType.SEGMENTATION, labels=labels, dimension=3,
            description=description, config=settings,
        )
        self.engines = engines

    def info(self) -> dict:
        return {**super().info(), "label_colors": self.label_colours}

    def is_valid(self) -> bool:
        # Stay listed without weights: a request then gets the missing-checkpoint message.
        return True

    def pre_transforms(self, data=None) -> list:
        return []

    def post_transforms(self, data=None) -> list:
        return []

    @abstractmethod
    def predict(self, image_path: str, settings: InferSettings) -> CaseResult:
        """Run on one image file.

        Raises:
            InputError: the image cannot be used (one line naming the file).
            MissingCheckpointError: a stage has no weights.
        """

    def __call__(self, request: dict, callbacks=None) -> tuple[str, dict]:
        """Run on ``request["image"]`` (a NIfTI path); returns the label file and the result JSON.

        Raises:
            HTTPException: 400 for an unusable image, an unknown setting or a bad value, 503 when
                weights are missing; the detail is one line naming the file or setting and the problem.
        """
        start = time.perf_counter()
        image_path = str(request.get("image"))
        try:
            check_request_keys(request, list(self._config))
            # settings the client does not send stay each stage's own config value
            settings = settings_from_request(
                {key: request[key] for key in self._config if key in request}, name_to_device(request.get("device")),
            )
            result = self.predict(image_path, settings)
        except MissingCheckpointError as err:
            logger.error(str(err))
            raise HTTPException(status_code=503, detail=str(err)) from err
        except InputError as err:
            logger.error(str(err))
            raise HTTPException(status_code=400, detail=str(err)) from err
        warnings = result.input_warnings + result.warnings
        for warning in warnings:
            logger.warning(warning)
        output = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        save_nifti_atomic(self.label_map(result), result.affine, output, header=result.header)
        seconds = {**result.seconds, "total": time.perf_counter() - start}
        return output, {
            "label_names": self.labels,
            "label_colors": self.label_colours,
            "settings": {
                key: default if getattr(settings, key) is None else getattr(settings, key)
                for key, default in self._config.items()
            },
            "weights": self.engines.weights.source,
            "checkpoints": self.engines.checkpoints(),
            "warnings": warnings,
            "latencies": {stage: round(s, 2) for stage, s in seconds.items()},
        }

    @staticmethod
    @abstractmethod
    def label_map(result: CaseResult) -> np.ndarray:
        """The (X, Y, Z) uint8 map this task returns."""


class AtriaCascadeInfer(_CascadeTask):
    """The whole cascade: localizer, largest component, dilation, gated segmenter.

    Args:
        engines: the cached engine of the served weights.

    Request settings (``params`` of ``/infer/atria_cascade``): ``overlap``, ``tta``, ``mask_region``
    (one not sent is each stage's own inference config value; the task's config and the echoed
    settings show the segmenter's), ``device``; labels 1 wall, 2 right atrium, 3 left atrium.
    """

    label_colours = CASCADE_COLOURS

    def __init__(self, engines: EngineCache) -> None:
        super().__init__(
            engines, CASCADE_LABELS,
            f"Atrial wall, right and left atrium cavities: two-stage cascade ({engines.weights.source})",
            default_settings(engines.weights),
        )

    def predict(self, image_path: str, settings: InferSettings) -> CaseResult:
        return self.engines.engine(settings).predict_image(image_path)

    @staticmethod
    def label_map(result: CaseResult) -> np.ndarray:
        return result.labels


class AtriaLocalizerInfer(_CascadeTask):
    """Stage 1 alone: the binary atria mask (largest component) on the input grid.

    Args:
        engines: the cached engine of the served weights (only the localizer is used).
    """

    def __init__(self, engines: EngineCache) -> None:
        super().__init__(
            engines, LOCALIZER_LABELS, f"Stage 1: atria mask ({engines.weights.source})",
            default_settings(engines.weights, "localizer"),
        )

    def predict(self, image_path: str, settings: InferSettings) -> CaseResult:
        return self.engines.localize(image_path, settings)

    @staticmethod
    def label_map(result: CaseResult) -> np.ndarray:
        return result.mask
