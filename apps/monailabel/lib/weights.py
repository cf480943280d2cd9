"""Which bundle configs and checkpoints the app serves, read from the server's ``--conf`` options.

The options mirror ``cascade predict``'s (``--demo``, ``--folds``, ``--models WORK``), so that the
app and the command line load the same weights the same way:

- default: each bundle's ``models/model.pt`` (or ``models/fold<k>/model.pt`` with ``folds``);
- ``demo true``: the shipped phantom demo weights ``models/demo/model.pt`` with ``configs/demo.json``;
- ``models WORK``: a cross-validation or imported work folder, ``WORK/<stage>/fold<k>/models/model.pt``
  for every fold found (or those in ``folds``), ensembled, with ``WORK/<stage>/config.json`` layered
  over the bundle's configs when it exists.

A model published by the app's own training (``<model_dir>/<trainer>/model.pt``) replaces its
stage's checkpoints, as MONAI Label's infer tasks pick up what its trainers publish.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from cascade.cli import as_bool
from cascade.io import InputError
from cascade.runner import REPO_BUNDLES

__all__ = ["STAGE_BUNDLES", "StageWeights", "CascadeWeights", "weights_from_conf"]

STAGE_BUNDLES = {"localizer": "atria_localizer", "segmenter": "atria_segmenter"}


@dataclass(frozen=True)
class StageWeights:
    """One stage: its bundle folder, the config files layered over its configs, its checkpoints.

    Attributes:
        bundle: bundle folder (holding ``configs/inference.json`` and ``configs/train.json``).
        extra_configs: config files layered over the bundle's ``inference.json`` or
            ``train.json``: names inside ``bundle/configs`` or absolute paths.
        checkpoints: weight files; more than one are ensembled.
    """

    bundle: Path
    extra_configs: tuple[str, ...] = ()
    checkpoints: tuple[Path, ...] = ()

    def config_files(self, base: str) -> list[Path]:
        """``base`` (e.g. ``"train.json"``) of the bundle followed by the layered files."""
        return [self.bundle / "configs" / name for name in (base, *self.extra_configs)]

    def missing(self) -> list[Path]:
        """Checkpoints that do not exist (all of them when none is configured)."""
        return [path for path in self.checkpoints if not path.is_file()]


@dataclass(frozen=True)
class CascadeWeights:
    """Both stages and a one-line description of where their weights come from."""

    source: str
    stages: Mapping[str, StageWeights] = field(default_factory=dict)

    def with_published(self, model_dir: str | os.PathLike) -> CascadeWeights:
        """Stages whose app-trained model ``<model_dir>/atria_<stage>/model.pt`` exists use it alone."""
        stages = dict(self.stages)
        for stage, bundle_name in STAGE_BUNDLES.items():
            published = Path(model_dir) / bundle_name / "model.pt"
            if published.is_file():
                stages[stage] = replace(stages[stage], checkpoints=(published,))
        return replace(self, stages=stages)


def _fold_ids(folds: str | None) -> list[int] | None:
    if folds is None or str(folds).strip() == "":
        return None
    try:
        return [int(k) for k in str(folds).split(",")]
    except ValueError as err:
        raise InputError(f"--conf folds {folds}: expected comma-separated fold numbers, e.g. 0,1,2") from err


def weights_from_conf(conf: Mapping[str, str]) -> CascadeWeights:
    """Resolve the ``--conf`` options ``demo``, ``models``, ``folds`` and ``bundles``.

    Args:
        conf: MONAI Label's app configuration (strings), e.g. ``{"demo": "true"}``.

    Returns:
        Both stages' weights. Checkpoints are not checked here: the tasks report missing ones.

    Raises:
        InputError: ``demo`` and ``models`` are both given, ``models`` is not a folder, or
            ``folds`` is not a list of numbers.
    """
    bundles = Path(conf.get("bundles") or REPO_BUNDLES)
    demo = as_bool(conf.get("demo", "false"), "conf demo")
    work = conf.get("models")
    folds = _fold_ids(conf.get("folds"))
    if demo and work:
        raise InputError("--conf demo true and --conf models WORK exclude each other: choose one")
    stages = {}
    for stage, bundle_name in STAGE_BUNDLES.items():
        bundle = bundles / bundle_name
        if demo:
            stages[stage] = StageWeights(bundle, ("demo.json",), (bundle / "models" / "demo" / "model.pt",))
        elif work:
            root = Path(work).resolve()
            if not root.is_dir():
                raise InputError(f"--conf models {work}: not a folder")
            fold_dirs = sorted(root.glob(f"{stage}/fold*")) if folds is None else [root / stage / f"fold{k}" for k in folds]
            overlay = root / stage / "config.json"
            stages[stage] = StageWeights(
                bundle,
                (str(overlay),) if overlay.is_file() else (),
                tuple(d / "models" / "model.pt" for d in fold_dirs) or (root / stage / "fold0" / "models" / "model.pt",),
            )
        elif folds is not None:
            stages[stage] = StageWeights(bundle, (), tuple(bundle / "models" / f"fold{k}" / "model.pt" for k in folds))
        else:
            stages[stage] = StageWeights(bundle, (), (bundle / "models" / "model.pt",))
    source = "demo weights (phantoms only)" if demo else f"work folder {work}" if work else f"bundle checkpoints in {bundles}"
    return CascadeWeights(source, stages)
