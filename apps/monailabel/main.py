"""MONAI Label app serving the atria cascade (see README.md beside this file).

Start: ``monailabel start_server --app apps/monailabel --studies STUDIES [--conf pretrained la2018 |
--conf demo true | --conf models WORK] [--conf folds 0,1] [--conf bundles DIR] [--conf model_dir DIR]``.

Infer tasks: ``atria_cascade`` (the whole cascade, labels 1 wall, 2 right atrium, 3 left atrium)
and ``atria_localizer`` (stage 1's atria mask). Train tasks: ``atria_localizer`` and
``atria_segmenter`` (gated by the dilated ground truth), both from the datastore's final labels.
Scoring method ``uncertainty`` (each unlabelled image's case uncertainty, stored in its datastore info)
and next-sample strategies ``uncertainty`` (the least certain image first) and MONAI Label's ``random``.
"""

from __future__ import annotations

import logging
import os
import shutil
from functools import partial

import monailabel.datastore.dicom
import monailabel.endpoints.infer
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.convert import nifti_to_dicom_seg
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.random import Random

import cascade
from cascade.bundles import BUNDLE_NAMES, STAGES
from cascade.errors import InputError
from cascade.labels import LABEL_VALUES
from lib.activelearning import MostUncertain, UncertaintyScoring
from lib.infers.cascade_tasks import CASCADE_LABELS, AtriaCascadeInfer, AtriaLocalizerInfer
from lib.infers.predictors import EngineCache
from lib.serving import infer_in_worker_threads
from lib.trainers.stage_train import CascadeStageTrainTask
from lib.uploads import check_image_upload
from lib.weights import weights_from_conf

logger = logging.getLogger(__name__)

MISSING_WEIGHTS_HINT = (
    "start the server with --conf pretrained la2018 (real scans, left atrium) or --conf demo true (phantoms) "
    "for shipped weights, or --conf models WORK for a "
    "cross-validation work folder, or train the stage with the app's train task or its bundle"
)


class NiftiDatastore(LocalDatastore):
    """MONAI Label's local datastore, refusing (HTTP 400, one line) uploads the cascade cannot read."""

    def add_image(self, image_id: str, image_filename: str, image_info: dict) -> str:
        try:
            check_image_upload(image_filename, image_id or os.path.basename(image_filename))
        except InputError as err:
            raise HTTPException(status_code=400, detail=str(err)) from err
        return super().add_image(image_id, image_filename, image_info)


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
        self.weights = weights_from_conf(
            conf, conf.get("model_dir") or os.path.join(app_dir, "model"), MISSING_WEIGHTS_HINT,
        )
        for stage in STAGES:
            try:
                logger.info(f"{stage}: serving {self.weights.served(stage).source}")
            except InputError as err:
                logger.warning(f"{err}; inference answers HTTP 503 until the {stage} has weights")
        self.engines = EngineCache(self.weights)  # shared by the infer tasks and the scoring
        # inferences at once, in MONAI Label's pool; its default -1 (no pool) would now mean no limit
        if settings.MONAI_LABEL_INFER_CONCURRENCY < 0:
            settings.MONAI_LABEL_INFER_CONCURRENCY = 1
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="atria-cascade",
            description=f"Atria in 3D LGE cardiac MRI: wall, right and left atrium ({self.weights.source})",
            version=cascade.__version__,
            labels=CASCADE_LABELS,
        )
        if self.studies.startswith(("http://", "https://")) and self._auto_update_scoring:
            # MONAI Label scores at every start, training and next sample: on a PACS, that fetches
            # and infers every unlabelled series
            self._auto_update_scoring = False
            logger.info("DICOMweb datastore: no automatic scoring (POST /scoring/uncertainty to score)")
        if infer_in_worker_threads(monailabel.endpoints.infer.router):
            logger.info(f"inference runs off the event loop, {settings.MONAI_LABEL_INFER_CONCURRENCY} at a time "
                        "(MONAI_LABEL_INFER_CONCURRENCY)")

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            # MONAI Label lists CT series unless told otherwise (start_server exports every setting,
            # so its default cannot be told from a user's choice of CT): LGE scans are MR
            if settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER == {"Modality": "CT"}:
                settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER = {"Modality": "MR"}
            return super().init_datastore()
        return NiftiDatastore(
            self.studies, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD, read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def _download_dcmqi_tools(self) -> None:
        """Download nothing. MONAI Label 0.8.5 fetches dcmqi from GitHub whenever a DICOMweb
        datastore starts, so a server without internet access (a hospital network) fails to start;
        this app downloads nothing at run time. dcmqi's ``itkimage2segimage`` writes the DICOM SEG
        of a final label saved back to the DICOMweb server; without it on PATH or in this app's
        ``bin/``, MONAI Label's other SEG writer (pydicom-seg, installed with it) writes it."""
        if shutil.which("itkimage2segimage") or os.path.exists(os.path.join(self.app_dir, "bin", "itkimage2segimage")):
            return
        logger.info("dcmqi's itkimage2segimage not found: final labels go to the DICOMweb server as DICOM SEG "
                    "written by pydicom-seg")
        monailabel.datastore.dicom.nifti_to_dicom_seg = partial(nifti_to_dicom_seg, use_itk=False)

    def infer(self, request: dict, datastore: Datastore | None = None) -> dict:
        """MONAI Label's inference, with the client's mistakes answered 4xx in one line: an unknown
        model (404; MONAI Label itself answers 500) and an image id the datastore does not hold
        (400 naming the id; MONAI Label passes an empty path on)."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404,
                                detail=f"unknown model '{model}': this app serves {', '.join(self._infers)}")
        image = request.get("image")
        if (isinstance(image, str) and not os.path.exists(image)
                and not (datastore or self.datastore()).get_image_uri(image)):
            raise HTTPException(status_code=400, detail=f"image '{image}' is not in the datastore "
                                                        "(GET /datastore/?output=all lists the ids)")
        return super().infer(request, datastore)

    def init_infers(self) -> dict[str, InferTask]:
        return {"atria_cascade": AtriaCascadeInfer(self.engines), "atria_localizer": AtriaLocalizerInfer(self.engines)}

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "uncertainty": MostUncertain()}

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {"uncertainty": UncertaintyScoring(self.engines)}

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
