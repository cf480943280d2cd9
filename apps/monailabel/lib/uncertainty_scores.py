"""Case uncertainty of the datastore's unlabelled images, and the order they are served for labelling.

The scoring (:func:`score_unlabelled`) runs the served cascade on each image of the datastore that has
no final label and stores the case uncertainty of :mod:`cascade.uncertainty` in the image's info
(MONAI Label's ``update_image_info``, as its radiology app stores ``epistemic_entropy``):

- ``uncertainty``: the case uncertainty ``U`` (the volume the ensemble's passes dispute over the
  volume the cascade labels); ``null`` when the cascade labelled nothing in the image;
- ``uncertainty_passes``: the passes per window it was measured over (checkpoints times mirrorings);
- ``uncertainty_tta``: ``true`` when the scoring turned test-time mirroring on itself, because the
  served weights predict each window once (one model without mirroring: no spread to measure);
- ``uncertainty_key``: which weights and settings measured it (checkpoint files and their times,
  layered configs, settings); a later scoring skips an image whose key is the current one;
- ``uncertainty_ts``: when (seconds since the epoch).

The order of :func:`ranked_for_labelling` serves the least certain image first. Here only the
bookkeeping; the cascade and the measure are :class:`cascade.engine.CascadeEngine`'s and
:mod:`cascade.uncertainty`'s, built by the app's :class:`~lib.infers.predictors.EngineCache`.
This module imports no MONAI Label (the app's ``lib/activelearning.py`` wraps it in MONAI Label's
``ScoringMethod`` and ``Strategy``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any, Protocol

from cascade.bundles import STAGES
from cascade.engine import CascadeEngine

from lib.infers.predictors import EngineCache, InferSettings

__all__ = [
    "UNCERTAINTY", "PASSES", "TTA_ADDED", "KEY", "TIME", "ImageStore", "scoring_engine", "scoring_key",
    "score_unlabelled", "ranked_for_labelling",
]

logger = logging.getLogger(__name__)

UNCERTAINTY, PASSES, TTA_ADDED = "uncertainty", "uncertainty_passes", "uncertainty_tta"
KEY, TIME = "uncertainty_key", "uncertainty_ts"


class ImageStore(Protocol):
    """What the scoring needs of a MONAI Label datastore (``monailabel.interfaces.datastore.Datastore``)."""

    def get_unlabeled_images(self) -> list[str]: ...

    def get_image_uri(self, image_id: str) -> str: ...

    def get_image_info(self, image_id: str) -> dict[str, Any]: ...

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None: ...


def scoring_engine(engines: EngineCache, settings: InferSettings) -> tuple[CascadeEngine, InferSettings, bool]:
    """The engine that scores: the served weights with ``settings``, and with test-time mirroring
    turned on where they would predict each window once.

    Returns:
        The engine, the settings it runs with, and whether mirroring was turned on here.

    Raises:
        MissingCheckpointError: a stage has no weights.
    """
    engine = engines.engine(settings)
    if engine.passes > 1:
        return engine, settings, False
    mirrored = replace(settings, tta=True)
    return engines.engine(mirrored), mirrored, True


def scoring_key(engines: EngineCache, settings: InferSettings) -> str:
    """16 hex digits identifying the served checkpoints (paths and modification times), their layered
    configs and the settings (the device aside): scores with the same key need no rescoring."""
    served = {}
    for stage in STAGES:
        weights = engines.weights.served(stage)
        served[stage] = [[str(p), p.stat().st_mtime_ns] for p in weights.checkpoints]
        served[stage] += [str(config) for config in weights.configs]
    chosen = {name: value for name, value in asdict(settings).items() if name != "device"}
    return hashlib.sha256(json.dumps([served, chosen], sort_keys=True).encode()).hexdigest()[:16]


def score_unlabelled(engines: EngineCache, datastore: ImageStore, settings: InferSettings, force: bool = False) -> dict:
    """Score every image without a final label and store its uncertainty in its info (module docstring).

    Images already scored with the current :func:`scoring_key` are skipped unless ``force``. An image
    the cascade fails on is logged in one line and left as it was (a later run tries it again).

    Args:
        engines: the app's engine cache.
        datastore: MONAI Label's datastore.
        settings: the request's settings (``None`` values: the stages' config values).
        force: score every unlabelled image again.

    Returns:
        A summary: ``total`` unlabelled images, ``scored``, ``skipped``, ``failed`` (ids), ``seconds``, and
        where there were images to score ``passes``, ``tta_added`` and ``key``.

    Raises:
        MissingCheckpointError: a stage has no weights (nothing can be scored).
    """
    start = time.perf_counter()
    images = list(datastore.get_unlabeled_images())
    if not images:  # MONAI Label starts every scoring method at server start: build nothing then
        logger.info("uncertainty: every image has a final label: nothing to score")
        return {"total": 0, "scored": 0, "skipped": 0, "failed": [], "seconds": 0.0}
    engine, settings, tta_added = scoring_engine(engines, settings)
    key = scoring_key(engines, settings)
    if tta_added:
        logger.info(f"uncertainty: the served weights predict each window once (one model, no mirroring); "
                    f"scoring with test-time mirroring on: {engine.passes} passes per window")
    scored, skipped, failed = 0, 0, []
    for image_id in images:
        if not force and datastore.get_image_info(image_id).get(KEY) == key:
            skipped += 1
            continue
        try:
            result = engine.predict_image(datastore.get_image_uri(image_id), name=image_id)
            datastore.update_image_info(image_id, {
                UNCERTAINTY: result.uncertainty, PASSES: result.passes, TTA_ADDED: tta_added, KEY: key,
                TIME: int(time.time()),
            })
        except Exception as err:  # one image's failure (unreadable, a DICOM fetch, ...) must not end the run
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            logger.error(f"uncertainty: {image_id}: not scored: {message}")
            failed.append(image_id)
            continue
        scored += 1
        value = "null (nothing labelled)" if result.uncertainty is None else f"{result.uncertainty:.4f}"
        logger.info(f"uncertainty: {image_id}: {value} over {result.passes} passes")
    summary = {"total": len(images), "scored": scored, "skipped": skipped, "failed": failed, "passes": engine.passes,
               "tta_added": tta_added, "key": key, "seconds": round(time.perf_counter() - start, 1)}
    logger.info(f"uncertainty: {summary}")
    return summary


def ranked_for_labelling(infos: Mapping[str, Mapping[str, Any]], served_ts: Mapping[str, float] | None = None,
                         now: float | None = None, served_within_s: float = 3600.0) -> list[str]:
    """Unlabelled image ids in the order the next-sample strategy serves them.

    1. scored images where the cascade labelled nothing (``uncertainty`` null: it missed the atria);
    2. scored images by ``uncertainty``, highest first;
    3. images not scored yet (or whose scoring failed).

    Ties go by image id. Images the strategy served within the last ``served_within_s`` seconds go
    after all others, the longest ago first, so that a second annotator (or *Next Sample* pressed to
    skip an image) gets the next image rather than the same one.

    Args:
        infos: image id -> its datastore info.
        served_ts: image id -> when the strategy last served it (seconds since the epoch).
        now: the time to compare with (default: now).
        served_within_s: how long a served image stays behind the others.

    Returns:
        The ids of ``infos``, the one to serve first.
    """
    served_ts = served_ts or {}
    now = time.time() if now is None else now

    def order(image_id: str) -> tuple:
        served = served_ts.get(image_id)
        if served is not None and now - served < served_within_s:
            return (1, served, 0, 0.0, image_id)
        info = infos[image_id]
        if UNCERTAINTY not in info:
            return (0, 0.0, 2, 0.0, image_id)
        value = info[UNCERTAINTY]
        return (0, 0.0, 0, 0.0, image_id) if value is None else (0, 0.0, 1, -float(value), image_id)

    return sorted(infos, key=order)
