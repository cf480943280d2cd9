"""MONAI Label infer tasks: the whole cascade (``atria_cascade``) and its localizer alone.

Like MONAI Label's multi-stage pipelines (the radiology app's vertebra pipeline), the cascade task
overrides ``__call__`` and chains its stages itself; the stages are the bundles' inference configs
run by the same cascade runner as ``cascade predict``, so both give the same label map. The label
map is written with the input's exact shape, affine and header (uint8).
"""

from __future__ import annotations

import logging
import tempfile
from abc import abstractmethod
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.utils.others.generic import name_to_device

from cascade.io import InputError, load_nifti, save_nifti_atomic
from cascade.labels import CLASS_NAMES
from cascade.overlay import CLASS_COLOURS
from cascade.runner import CascadePredictor, MissingCheckpointError

from lib.infers.predictors import DEFAULT_SETTINGS, InferSettings, StagePredictors, settings_from_request

__all__ = ["AtriaCascadeInfer", "AtriaLocalizerInfer", "CASCADE_LABELS", "LOCALIZER_LABELS"]

logger = logging.getLogger(__name__)

CASCADE_LABELS = {name: value for value, name in CLASS_NAMES.items()}
CASCADE_COLOURS = {CLASS_NAMES[value]: list(rgb) for value, rgb in CLASS_COLOURS.items()}
LOCALIZER_LABELS = {"atria": 1}  # the stage-1 mask: every atrial class together


class _CascadeStageTask(BasicInferTask):
    """Shared request handling: settings, errors as one-line HTTP answers, the NIfTI result."""

    label_colours: dict[str, list[int]] = {}  # label name -> RGB 0-255, in /info/ and the result JSON

    def __init__(self, predictors: StagePredictors, labels: dict[str, int], description: str, config: dict) -> None:
        super().__init__(
            path=None, network=None, type=InferType.SEGMENTATION, labels=labels, dimension=3,
            description=description, config=config,
        )
        self.predictors = predictors

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
    def predict(self, image_path: str, settings: InferSettings) -> tuple[np.ndarray, dict]:
        """Label map (X, Y, Z) uint8 on the input grid and per-stage seconds.

        Raises:
            InputError: the image cannot be used (one line naming the file).
            MissingCheckpointError: a stage has no weights.
        """

    def __call__(self, request: dict, callbacks=None) -> tuple[str, dict]:
        """Run on ``request["image"]`` (a NIfTI path); returns the label file and the result JSON.

        Raises:
            HTTPException: 400 for an unusable image or setting, 503 when weights are missing;
                the detail is one line naming the file or setting and the problem.
        """
        start = time.perf_counter()
        req = {**self._config, **request}
        image_path = str(req.get("image"))
        try:
            settings = settings_from_request(req, name_to_device(req.get("device")))
            labels, seconds = self.predict(image_path, settings)
        except MissingCheckpointError as err:
            logger.error(str(err))
            raise HTTPException(status_code=503, detail=str(err)) from err
        except InputError as err:
            logger.error(str(err))
            raise HTTPException(status_code=400, detail=str(err)) from err
        source = nib.load(image_path)
        result = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        save_nifti_atomic(labels, source.affine, result, header=source.header)
        seconds["total"] = time.perf_counter() - start
        return result, {
            "label_names": self.labels,
            "label_colors": self.label_colours,
            "settings": {key: getattr(settings, key) for key in self._config if key in DEFAULT_SETTINGS},
            "weights": self.predictors.weights.source,
            "checkpoints": {stage: [str(p) for p in w.checkpoints] for stage, w in self.predictors.served().stages.items()},
            "latencies": {stage: round(s, 2) for stage, s in seconds.items()},
        }


class AtriaCascadeInfer(_CascadeStageTask):
    """The whole cascade: localizer, largest component, dilation, gated segmenter.

    Args:
        predictors: the served stages.

    Request settings (``params`` of ``/infer/atria_cascade``): ``overlap`` (0.5), ``tta`` (false),
    ``mask_region`` (true), ``device``; labels: 1 wall, 2 right atrium, 3 left atrium.
    """

    label_colours = CASCADE_COLOURS

    def __init__(self, predictors: StagePredictors) -> None:
        super().__init__(
            predictors, CASCADE_LABELS,
            f"Atrial wall, right and left atrium cavities: two-stage cascade ({predictors.weights.source})",
            dict(DEFAULT_SETTINGS),
        )

    def predict(self, image_path: str, settings: InferSettings) -> tuple[np.ndarray, dict]:
        cascade = CascadePredictor(self.predictors.get("localizer", settings), self.predictors.get("segmenter", settings))
        with tempfile.TemporaryDirectory(prefix="atria-stage1-") as scratch:
            labels = cascade.predict_case(image_path, Path(scratch) / "mask.nii.gz")
        return labels, dict(cascade.seconds)


class AtriaLocalizerInfer(_CascadeStageTask):
    """Stage 1 alone: the binary atria mask (largest component) on the input grid.

    Args:
        predictors: the served stages (only the localizer is used).
    """

    def __init__(self, predictors: StagePredictors) -> None:
        config = {key: DEFAULT_SETTINGS[key] for key in ("overlap", "tta")}
        super().__init__(predictors, LOCALIZER_LABELS, f"Stage 1: atria mask ({predictors.weights.source})", config)

    def predict(self, image_path: str, settings: InferSettings) -> tuple[np.ndarray, dict]:
        start = time.perf_counter()
        load_nifti(image_path)  # one-line errors for unusable inputs, as in the cascade
        mask = self.predictors.get("localizer", settings)({"image": image_path})["pred"]
        return np.asarray(mask[0].cpu().numpy() > 0, dtype=np.uint8), {"stage 1": time.perf_counter() - start}
