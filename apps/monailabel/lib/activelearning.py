"""Uncertainty-driven active learning: MONAI Label's scoring method and next-sample strategy.

``POST /scoring/uncertainty`` runs :class:`UncertaintyScoring` (by default MONAI Label also starts it
at server start, after each training and after each next-sample request); ``POST
/activelearning/uncertainty`` (3D Slicer's *Next Sample* with the strategy ``uncertainty``) runs
:class:`MostUncertain`. The work is done in :mod:`lib.uncertainty_scores`.
"""

from __future__ import annotations

import logging

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.utils.others.generic import name_to_device

from cascade.settings import as_bool, as_number

from lib.infers.predictors import EngineCache, client_settings, settings_from_request
from lib.uncertainty_scores import UNCERTAINTY, ranked_for_labelling, score_unlabelled

__all__ = ["UncertaintyScoring", "MostUncertain"]

logger = logging.getLogger(__name__)


class UncertaintyScoring(ScoringMethod):
    """Stores the case uncertainty of every unlabelled image in its datastore info.

    Args:
        engines: the app's engine cache (the served weights).

    Request (``POST /scoring/uncertainty`` JSON body, all optional): ``overlap``, ``tta``,
    ``mask_region`` as for ``/infer/atria_cascade``; ``device``; ``force`` (true: score images already
    scored with the same weights and settings again). Weights that predict each window once are scored
    with test-time mirroring on.
    """

    def __init__(self, engines: EngineCache) -> None:
        super().__init__(
            f"Case uncertainty of the unlabelled images: the ensemble's disagreement ({engines.weights.source})")
        self.engines = engines

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        chosen = {key: request[key] for key in client_settings(self.engines.weights.bundles) if key in request}
        settings = settings_from_request(chosen, name_to_device(request.get("device")))
        return score_unlabelled(self.engines, datastore, settings, force=as_bool(request.get("force", False), "force"))


class MostUncertain(Strategy):
    """Serves the unlabelled image with the highest stored uncertainty
    (:func:`lib.uncertainty_scores.ranked_for_labelling` gives the whole order).

    Request (``POST /activelearning/uncertainty`` JSON body, optional): ``served_within_s`` (default
    3600): an image served in the last that many seconds goes after the others.
    """

    def __init__(self) -> None:
        super().__init__("The unlabelled image the cascade is least certain about (run the uncertainty scoring first)")

    def __call__(self, request: dict, datastore: Datastore) -> dict | None:
        strategy = request.get("strategy", "uncertainty")
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            logger.info(f"{strategy}: every image has a final label: no next sample")
            return None
        infos = {image: datastore.get_image_info(image) for image in images}
        served = {image: info["strategy"][strategy]["ts"] for image, info in infos.items()
                  if "ts" in info.get("strategy", {}).get(strategy, {})}
        within = as_number(request.get("served_within_s", 3600), "served_within_s", 0.0, float("inf"))
        image = ranked_for_labelling(infos, served, served_within_s=within)[0]
        value = infos[image].get(UNCERTAINTY, "not scored")
        logger.info(f"{strategy}: next sample {image} (uncertainty {value}; {len(images)} unlabelled)")
        return {"id": image, UNCERTAINTY: infos[image].get(UNCERTAINTY)}
