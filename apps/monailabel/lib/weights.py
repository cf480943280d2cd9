"""Which bundles and weights the app serves, from the server's ``--conf`` options.

The options are ``cascade predict``'s (``demo``, ``models``, ``folds``) and are resolved by the
same code (:func:`cascade.bundles.stage_weights`), so the app and the command line load the same
weights the same way:

- default: each bundle's ``models/model.pt`` (``models/fold<k>/model.pt`` with ``folds``);
- ``demo true``: the shipped phantom demo weights ``models/demo/model.pt`` with ``configs/demo.json``;
- ``models WORK``: a cross-validation or imported work folder, each fold's
  :func:`cascade.bundles.fold_checkpoint` (``model_final.pt``, else ``model.pt``) for every fold found
  (or those in ``folds``), ensembled, with ``WORK/<stage>/config.json`` layered over the bundle's
  configs when it exists.

A model published by the app's own training (``<model_dir>/atria_<stage>/model.pt``) replaces its
stage's checkpoints, as MONAI Label's infer tasks pick up what its trainers publish. Weights are
looked up on every request, so a server started without weights answers once they exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cascade.bundles import BUNDLE_NAMES, STAGES, MissingCheckpointError, StageWeights, bundles_root, stage_weights
from cascade.settings import as_bool
from cascade.errors import InputError

__all__ = ["ServedWeights", "weights_from_conf"]


@dataclass(frozen=True)
class ServedWeights:
    """The weights options of a server and where its train tasks publish.

    Attributes:
        bundles: stage -> bundle folder.
        models: work folder (``--conf models``), or None.
        folds: fold ids to ensemble (``--conf folds``), or None.
        pretrained: shipped weights to serve by name (``demo``, ``la2018``), or None.
        model_dir: MONAI Label's model folder (train tasks write ``<model_dir>/atria_<stage>/``).
        hint: how to serve weights, for missing-checkpoint messages.
    """

    bundles: Mapping[str, Path]
    models: str | None
    folds: str | None
    pretrained: str | None
    model_dir: Path
    hint: str

    @property
    def source(self) -> str:
        """One line saying where the weights come from."""
        if self.pretrained == "demo":
            return "demo weights, trained on phantoms only"
        if self.pretrained:
            return f"the shipped {self.pretrained} weights"
        if self.models:
            return f"work folder {self.models}"
        return f"bundle checkpoints in {Path(self.bundles['localizer']).parent}"

    def published(self, stage: str) -> Path:
        """Where the app's train task of ``stage`` publishes its best model."""
        return self.model_dir / BUNDLE_NAMES[stage] / "model.pt"

    def configured(self, stage: str) -> StageWeights:
        """The stage's weights as ``cascade predict`` would find them with the same options.

        Raises:
            MissingCheckpointError: a checkpoint does not exist (the message says how to serve weights).
        """
        try:
            return stage_weights(
                stage, self.bundles[stage], models=self.models, folds=self.folds, pretrained=self.pretrained,
            )
        except MissingCheckpointError as err:
            raise MissingCheckpointError(f"{err} ({self.hint})") from err

    def served(self, stage: str) -> StageWeights:
        """The stage's configured weights, or its published model with the configured overlays.

        Raises:
            MissingCheckpointError: neither a published model nor the configured checkpoints exist.
        """
        published = self.published(stage)
        try:
            weights = self.configured(stage)
        except MissingCheckpointError:
            if not published.is_file() or self.pretrained or self.models:
                raise
            weights = StageWeights([], [], "")  # bundle defaults: no overlay
        if published.is_file():
            return StageWeights([published], weights.configs, f"{published}, trained by the app")
        return weights


def weights_from_conf(conf: Mapping[str, str], model_dir: str | os.PathLike, hint: str) -> ServedWeights:
    """Read the ``--conf`` options ``pretrained`` (or ``demo``), ``models``, ``folds`` and ``bundles``.

    Args:
        conf: MONAI Label's app configuration (strings), e.g. ``{"pretrained": "la2018"}``;
            ``{"demo": "true"}`` is ``{"pretrained": "demo"}``.
        model_dir: MONAI Label's model folder.
        hint: how to serve weights, appended to missing-checkpoint messages.

    Raises:
        InputError: shipped weights and ``models`` together, ``models`` not a folder, or no bundles found.
    """
    pretrained = conf.get("pretrained") or None
    if as_bool(conf.get("demo", "false"), "conf demo"):
        if pretrained not in (None, "demo"):
            raise InputError(f"--conf demo true and --conf pretrained {pretrained} exclude each other: choose one")
        pretrained = "demo"
    models = conf.get("models") or None
    if pretrained and models:
        raise InputError(f"--conf pretrained {pretrained} and --conf models WORK exclude each other: choose one")
    if models and not Path(models).is_dir():
        raise InputError(f"--conf models {models}: not a folder")
    root = Path(conf["bundles"]) if conf.get("bundles") else bundles_root()
    bundles = {stage: root / BUNDLE_NAMES[stage] for stage in STAGES}
    return ServedWeights(bundles, models, conf.get("folds") or None, pretrained, Path(model_dir), hint)
