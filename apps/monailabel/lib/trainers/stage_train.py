"""MONAI Label train task for one cascade stage, built from the stage bundle's ``train.json``.

MONAI Label's ``BasicTrainTask`` wires the engines, the datastore's datalist, checkpoint publishing
and train statistics; everything that defines the training (network, loss, optimizer, learning
rate schedule, transforms, sampling, validation inferer and metrics) is parsed from the bundle's
``configs/train.json`` (plus the layered configs of the served weights), so training through
MONAI Label and ``python -m monai.bundle run training`` train the same way.

Pretrained weights: the stage's served checkpoint (the first one of an ensemble) is loaded
strictly before the first iteration, unless the task's own earlier run left a ``model.pt``
(MONAI Label's ``BasicTrainTask.load_path``); ``pretrained: false`` in the request starts from
random weights.

The segmenter's gate: the datastore holds images and labels only, so the segmenter trains with
``mask_from_label`` (the ground truth's atria, dilated like the stage-1 mask at inference, gate
the loss), the setting of the paper's Table 5.
"""

from __future__ import annotations

import logging

import torch
from monai.bundle import ConfigParser
from monai.handlers import LrScheduleHandler, MeanDice, from_engine
from monai.inferers import SimpleInferer
from monai.transforms import Activationsd, AsDiscreted, Lambdad
from monailabel.config import settings
from monailabel.tasks.train.basic_train import BasicTrainTask, Context

from cascade.bundles import read_stage_config
from cascade.errors import InputError

from lib.weights import ServedWeights

__all__ = ["CascadeStageTrainTask"]

logger = logging.getLogger(__name__)


def full_resolution(pred: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """The full-resolution output of a deep-supervision list (itself when not a list)."""
    return pred[0] if isinstance(pred, (list, tuple)) else pred


def first_channel(label: torch.Tensor) -> torch.Tensor:
    """Channel 0 of a channel-first label (the segmenter's training label carries its gate as channel 1)."""
    return label[:1]


class CascadeStageTrainTask(BasicTrainTask):
    """Train the localizer or the segmenter on the datastore's labelled images.

    Args:
        weights: the served weights; the stage's overlays are layered over ``train.json`` and its
            checkpoint (the first of an ensemble) is the pretrained start. The task runs in
            ``<model_dir>/atria_<stage>/<name>`` and publishes its best model to
            ``<model_dir>/atria_<stage>/model.pt``, which the infer tasks then serve.
        stage: ``localizer`` or ``segmenter``.
        num_classes: output channels of the network (2 for the localizer, 4 for the segmenter).
        overrides: config ids and values applied over ``train.json`` (e.g. ``{"mask_from_label": True}``).
        description: shown by MONAI Label's ``/info/``.
    """

    def __init__(
        self,
        weights: ServedWeights,
        stage: str,
        num_classes: int,
        overrides: dict | None = None,
        description: str = "",
    ) -> None:
        self.bundle = weights.bundles[stage]
        self.num_classes = num_classes
        self.overrides = dict(overrides or {})
        try:
            served = weights.served(stage)
            self.overlays, pretrained = list(served.configs), str(served.checkpoints[0])
        except InputError as err:
            logger.warning(f"{err}; training the {stage} starts from random weights")
            self.overlays, pretrained = [], None
        defaults = self._bundle_parser({}).get
        published = weights.published(stage)
        super().__init__(
            str(published.parent),
            description,
            config={
                "max_epochs": int(defaults("num_epochs")),
                "iterations_per_epoch": int(defaults("iterations_per_epoch")),
                "train_batch_size": int(defaults("batch_size")),
                "learning_rate": float(defaults("learning_rate")),
                "val_split": 0.2,
                "multi_gpu": False,
                # what the bundle's config uses (MONAI Label's own dataset choices do not apply)
                "dataset": "CacheDataset",
                "dataloader": "DataLoader",
                "tracking": "None",  # a request may ask for "mlflow" (requirements.txt installs it)
            },
            # MONAI Label's default store is a file:// folder, which MLflow as MONAI 1.6 runs it refuses;
            # an sqlite store beside the published model works (MONAI_LABEL_TRACKING_URI still wins)
            tracking_uri=settings.MONAI_LABEL_TRACKING_URI or f"sqlite:///{published.parent / 'mlflow.db'}",
            amp=torch.cuda.is_available(),
            load_path=pretrained,
            publish_path=str(published),
            load_strict=True,
        )

    def _bundle_parser(self, values: dict) -> ConfigParser:
        return read_stage_config(self.bundle, "train", self.overlays, {**self.overrides, **values})

    def parser(self, context: Context) -> ConfigParser:
        """The bundle's training config for this run (parsed once per run, kept on ``context``)."""
        if getattr(context, "bundle_parser", None) is None:
            request = context.request
            context.bundle_parser = self._bundle_parser({
                "device": torch.device(context.device),
                "amp": self._amp,
                "num_workers": 0,
                "num_epochs": context.max_epochs,
                "iterations_per_epoch": int(request["iterations_per_epoch"]),
                "batch_size": context.train_batch_size,
                "learning_rate": float(request["learning_rate"]),
                "ckpt_dir": context.output_dir,
                "output_dir": context.events_dir,
                "train#datalist": list(context.train_datalist),
                "validate#datalist": list(context.val_datalist),
            })
        return context.bundle_parser

    def network(self, context: Context) -> torch.nn.Module:
        return self.parser(context).get_parsed_content("network")

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        return self.parser(context).get_parsed_content("optimizer")

    def loss_function(self, context: Context):
        return self.parser(context).get_parsed_content("loss")

    def lr_scheduler_handler(self, context: Context) -> LrScheduleHandler:
        scheduler = self.parser(context).get_parsed_content("lr_scheduler")
        return LrScheduleHandler(scheduler, epoch_level=False, print_lr=False)

    def train_data_loader(self, context: Context, num_workers: int = 0, shuffle: bool = True):
        return self.parser(context).get_parsed_content("train#dataloader")

    def val_data_loader(self, context: Context, num_workers: int = 0):
        return self.parser(context).get_parsed_content("validate#dataloader")

    def train_pre_transforms(self, context: Context):
        return self.parser(context).get_parsed_content("train#preprocessing")

    def val_pre_transforms(self, context: Context):
        return self.parser(context).get_parsed_content("validate#preprocessing")

    def train_inferer(self, context: Context) -> SimpleInferer:
        return self.parser(context).get_parsed_content("train#inferer")

    def val_inferer(self, context: Context):
        return self.parser(context).get_parsed_content("validate#inferer")

    def train_post_transforms(self, context: Context) -> list:
        # The training Dice MONAI Label reports: full-resolution output against the label channel.
        return [
            Lambdad(keys="pred", func=full_resolution),
            Lambdad(keys="label", func=first_channel),
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=self.num_classes),
        ]

    def train_key_metric(self, context: Context) -> dict:
        return {
            self.TRAIN_METRIC_MEAN_DICE: MeanDice(
                output_transform=from_engine(["pred", "label"]), include_background=False,
            ),
        }

    def val_post_transforms(self, context: Context):
        return self.parser(context).get_parsed_content("validate#postprocessing")

    def val_key_metric(self, context: Context) -> dict:
        return dict(self.parser(context).get_parsed_content("validate#key_metric"))

    def val_additional_metrics(self, context: Context) -> dict:
        return dict(self.parser(context).get_parsed_content("validate#additional_metrics"))
