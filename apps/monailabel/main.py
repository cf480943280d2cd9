"""MONAI Label app serving the atria cascade (see README.md beside this file).

Start: ``monailabel start_server --app apps/monailabel --studies STUDIES [--conf pretrained la2018 |
--conf demo true | --conf models WORK] [--conf folds 0,1] [--conf bundles DIR] [--conf model_dir DIR]``.

Infer tasks: ``atria_cascade`` (the whole cascade, labels 1 wall, 2 right atrium, 3 left atrium)
and ``atria_localizer`` (stage 1's atria mask). Train tasks: ``atria_localizer`` and
``atria_segmenter`` (gated by the dilated ground truth), both from the datastore's final labels.
"""

from __future__ import annotations

import logging
import os

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

import cascade
from cascade.bundles import BUNDLE_NAMES, STAGES
from cascade.io import InputError
from cascade.labels import LABEL_VALUES
from lib.infers.cascade_tasks import CASCADE_LABELS, AtriaCascadeInfer, AtriaLocalizerInfer
from lib.infers.predictors import EngineCache
from lib.trainers.stage_train import CascadeStageTrainTask
from lib.weights import weights_from_conf

logger = logging.getLogger(__name__)

MISSING_WEIGHTS_HINT = (
    "start the server with --conf pretrained la2018 (real scans, left atrium) or --conf demo true (phantoms) for shipped weights, or --conf models WORK for a "
    "cross-validation work folder, or train the stage with the app's train task or its bundle"
)


class AtriaCascadeApp(MONAILabelApp):
    """The cascade's infer and train tasks over a MONAI Label datastore.

    Args:
        app_dir: this folder.
        studies: datastore (a folder of NIfTI images with labels in ``labels/final/``).
        conf: ``--conf`` options: ``pretrained``, ``demo``, ``models``, ``folds``, ``bundles`` (which weights, see
            ``lib/weights.py``) and ``model_dir`` (where the train tasks write and publish,
            default ``<app_dir>/model``).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict) -> None:
        self.weights = weights_from_conf(conf, conf.get("model_dir") or os.path.join(app_dir, "model"), MISSING_WEIGHTS_HINT)
        for stage in STAGES:
            try:
                logger.info(f"{stage}: serving {self.weights.served(stage).source}")
            except InputError as err:
                logger.warning(f"{err}; inference answers HTTP 503 until the {stage} has weights")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="atria-cascade",
            description=f"Atria in 3D LGE cardiac MRI: wall, right and left atrium ({self.weights.source})",
            version=cascade.__version__,
            labels=CASCADE_LABELS,
        )

    def init_infers(self) -> dict[str, InferTask]:
        engines = EngineCache(self.weights)
        return {"atria_cascade": AtriaCascadeInfer(engines), "atria_localizer": AtriaLocalizerInfer(engines)}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {
            BUNDLE_NAMES["localizer"]: CascadeStageTrainTask(
                self.weights, "localizer", num_classes=2,
                description="Stage 1 (binary atria mask) from the datastore's final labels",
            ),
            BUNDLE_NAMES["segmenter"]: CascadeStageTrainTask(
                self.weights, "segmenter", num_classes=len(LABEL_VALUES), overrides={"mask_from_label": True},
                description="Stage 2 (wall, right and left atrium), gated by the dilated ground truth",
            ),
        }
