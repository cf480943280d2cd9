"""The cascade engine: localizer -> largest component -> dilation -> gated segmenter, per image.

One engine serves ``cascade predict``, ``cascade crossval`` (out-of-fold masks and predictions)
and the MONAI Label app. It is thin: each stage is a bundle's ``inference.json`` (plus overlay
files) parsed with MONAI's ``ConfigParser``, whose ``initialize``, ``loading``,
``preprocessing_transforms``, ``network_def``, ``inferer``, ``postprocessing``, ``device`` and
``amp`` are used as the bundle defines them, so a value edited in a config takes effect here. The
engine adds what a single bundle run lacks: one read of each image for both stages, the in-memory
hand-off of the stage-1 mask to stage 2, and checkpoint ensembles with mirroring inside each
sliding window (:class:`EnsembleNetwork`).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import nullcontext
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import ImageReader, MetaTensor
from monai.transforms import Compose, Invertd, LoadImaged

from cascade.backends import compile_network
from cascade.calibration import calibration_key, calibration_windows
from cascade.bundles import (
    STAGES, MissingCheckpointError, StageWeights, bundle_dir, read_stage_config, stage_config_files, stage_weights,
)
from cascade.intensity import channel_outliers, record_intensity_outliers
from cascade.errors import InputError
from cascade.io import check_intensities, file_sha256, read_header
from cascade.labels import CLASS_NAMES
from cascade.readers import OpenedNiftiReader
from cascade.runtime import StageRuntime, stage_runtime
from cascade.settings import (
    RUNTIME_SETTINGS, declared_settings, recorded_overrides, stage_overrides, stage_settings,
)
from cascade.uncertainty import add_votes, case_uncertainty, disagreement, label_votes, vote_groups
from cascade.window_progress import WindowProgress, count_windows

__all__ = ["EnsembleNetwork", "StagePredictor", "CaseResult", "CascadeEngine", "load_checkpoint"]


def _mismatch(network: torch.nn.Module, state: dict) -> str:
    """How a state dict differs from a network's: the first tensor of another shape, missing and unexpected keys."""
    own = network.state_dict()
    shapes = [f"{key}: {list(value.shape)} in the file, {list(own[key].shape)} in the network"
              for key, value in state.items()
              if key in own and hasattr(value, "shape") and value.shape != own[key].shape]
    missing, unexpected = len(set(own) - set(state)), len(set(state) - set(own))
    parts = ([f"{len(shapes)} tensors of other shapes, e.g. {shapes[0]}"] if shapes else []) + (
        [f"{missing} tensors missing"] if missing else []) + ([f"{unexpected} unexpected"] if unexpected else [])
    return "; ".join(parts) or "tensors of other types"


def load_checkpoint(
    network: torch.nn.Module, checkpoint: str | os.PathLike, configs: Sequence[str | os.PathLike] = ()
) -> torch.nn.Module:
    """Load a weight file (a state dict, or a MONAI checkpoint with a ``model`` entry) into ``network``.

    Args:
        network: the network the configs build.
        checkpoint: the weight file.
        configs: the config files the network was built from, named in the message of a mismatch.

    Raises:
        InputError: the file is not a readable checkpoint or does not fit the network (the message
            says how they differ, for which configs, and what to do).
    """
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise InputError(f"{checkpoint}: not a readable checkpoint "
                         f"({type(err).__name__}: {str(err).splitlines()[0]})") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError(f"{checkpoint}: not a state dict ({type(state).__name__})")
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        built = f" built from {' + '.join(str(c) for c in configs)}" if configs else ""
        raise InputError(
            f"{checkpoint}: weights do not fit the network{built} ({_mismatch(network, state)}); "
            "they were trained with another config: pass the weights with the overlay they were trained with "
            "(--models WORK uses WORK/<stage>/config.json; shipped weights: --pretrained NAME), "
            "or move them away if a training run left them there (train with --bundle_root outside the checkout)"
        ) from err
    return network


class EnsembleNetwork(torch.nn.Module):
    """Mean logits of several networks and of the mirrorings of each window.

    Handed to a sliding-window inferer in place of one network, so each window is predicted by
    every member on every mirroring before the windows are blended, as nnU-Net's predictor does
    with its mirroring. The averaged quantity is the logits, as nnU-Net averages both mirrorings
    and folds: the blended logits then go through the bundle's postprocessing (softmax, argmax)
    unchanged, and with one member and no mirroring the ensemble is exactly that member.

    Args:
        members: callables mapping a (B, C, X, Y, Z) window batch to (B, K, X, Y, Z) logits:
            torch modules (put in eval mode) or compiled runtime models.
        mirror_axes: spatial axes (0, 1, 2 for X, Y, Z) to mirror; every subset is predicted,
            2^len(mirror_axes) passes per member.
        votes: also return the share of the passes voting for each foreground label
            (:func:`cascade.uncertainty.label_votes`): the output is then (B, K + G - 1, X, Y, Z),
            the mean logits followed by the vote shares of the G - 1 foreground groups of
            :func:`cascade.uncertainty.vote_groups` (background's share is the rest), so the inferer
            blends both alike.
        labelled: with ``votes``, the label values the weights label (the others vote background).
    """

    def __init__(
        self,
        members: Sequence[Callable[[torch.Tensor], torch.Tensor]],
        mirror_axes: Sequence[int] = (),
        votes: bool = False,
        labelled: Collection[int] | None = None,
    ) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if any(axis not in (0, 1, 2) for axis in mirror_axes):
            raise ValueError(f"mirror_axes must be spatial axes 0, 1, 2; got {list(mirror_axes)}")
        self.members = list(members)
        # registered so that .to(), .eval() and state dicts reach the torch members
        self.modules_ = torch.nn.ModuleList([m for m in members if isinstance(m, torch.nn.Module)])
        dims = [axis + 2 for axis in sorted(set(mirror_axes))]
        self.flips = [combo for n in range(len(dims) + 1) for combo in itertools.combinations(dims, n)]
        self.votes, self.labelled = votes, labelled

    def split_votes(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (K, ...) logits and (G - 1, ...) foreground vote shares of a (K + G - 1, ...) output with votes."""
        channels = output.shape[0]
        classes = (channels + 1) // 2 if self.labelled is None else channels - len(set(self.labelled))
        return output[:classes], output[classes:]

    @property
    def passes(self) -> int:
        """Predictions averaged per window: members times mirrorings."""
        return len(self.members) * len(self.flips)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        total = ballots = None
        for member in self.members:
            for dims in self.flips:
                logits = member(torch.flip(windows, dims) if dims else windows)
                logits = (torch.flip(logits, dims) if dims else logits).float()
                total = logits if total is None else total + logits
                if self.votes:
                    if ballots is None:
                        groups = len(vote_groups(logits.shape[1], self.labelled))
                        ballots = logits.new_zeros((logits.shape[0], groups - 1, *logits.shape[2:]))
                    add_votes(ballots, label_votes(logits, self.labelled))
        if self.votes:
            return torch.cat([total, ballots], dim=1) / self.passes
        return total / self.passes


class StagePredictor:
    """One cascade stage: a bundle's inference config with its checkpoints loaded.

    Args:
        bundle: bundle folder (holding ``configs/inference.json``).
        checkpoints: weight files; more than one are ensembled.
        overrides: config ids and values applied after reading (e.g. ``{"overlap": 0}``).
        configs: overlay config files layered over ``inference.json``, in order: a bundle's own
            by name (``"demo"``) or paths.
        runtime: device, backend, precision, int8 calibration, progress bar and uncertainty
            (:class:`~cascade.runtime.StageRuntime`; :func:`cascade.runtime.stage_runtime` builds it
            from user settings). Its device is set as the config's ``device``.

    The config's ``tta`` (bool) and ``mirror_axes`` set the mirroring, its ``amp`` the autocast
    of inference; its ``initialize`` expressions run once here.

    Attributes:
        parser: the parsed config.
        runtime: as given.
        device: where the network runs.
        network: the :class:`EnsembleNetwork` of the checkpoints.
        seconds: ``preprocessing``, ``inference`` and ``postprocessing`` seconds of the last call.

    Raises:
        InputError: a missing config file; an unreadable or unfitting checkpoint; a backend or
            precision that is unknown, not installed or not for the device.
        MissingCheckpointError: a checkpoint file does not exist.
    """

    def __init__(
        self,
        bundle: str | os.PathLike,
        checkpoints: Sequence[str | os.PathLike],
        overrides: Mapping | None = None,
        configs: Sequence[str | os.PathLike] = (),
        runtime: StageRuntime = StageRuntime(),
    ) -> None:
        overrides = dict(overrides or {})
        if runtime.device is not None:
            if "device" in overrides:
                raise ValueError("the device is given twice: as an override and in the runtime")
            overrides = {"device": runtime.device, **overrides}
        self.bundle, self.progress, self.runtime = Path(bundle), runtime.progress, runtime
        self.calibration = [dict(case) for case in runtime.calibration] if runtime.calibration else None
        files = stage_config_files(self.bundle, "inference", configs)
        for checkpoint in checkpoints:
            if not Path(checkpoint).is_file():
                raise MissingCheckpointError(f"{checkpoint}: checkpoint not found")
        self.config_files, self.checkpoints, self.overrides = (
            files, [Path(c) for c in checkpoints], overrides
        )
        self.parser = read_stage_config(self.bundle, "inference", configs, self.overrides)
        if "initialize" in self.parser:
            self.parser.get_parsed_content("initialize")
        self.device = self.parser.get_parsed_content("device")
        self.backend, self.precision = runtime.backend, runtime.precision
        if self.backend != "torch" and self.device.type != "cpu":
            raise InputError(f"--backend {self.backend} runs on the CPU; use --device cpu")
        self.amp = bool(self.parser.get_parsed_content("amp")) if "amp" in self.parser else False
        self.loading = Compose(self.parser.get_parsed_content("loading"))
        self.preprocessing = Compose(self.parser.get_parsed_content("preprocessing_transforms"))
        self.inferer = self.parser.get_parsed_content("inferer")
        self.postprocessing = self.parser.get_parsed_content("postprocessing")
        tta = bool(self.parser.get_parsed_content("tta")) if "tta" in self.parser else False
        mirror_axes = self.parser.get_parsed_content("mirror_axes") if tta else ()
        members = [self._network(checkpoint) for checkpoint in checkpoints]
        labelled = self.parser.get_parsed_content("labelled_classes") if "labelled_classes" in self.parser else None
        votes = runtime.uncertainty and len(members) * 2 ** len(set(mirror_axes)) > 1
        self.network = EnsembleNetwork(members, mirror_axes, votes=votes, labelled=labelled).to(self.device).eval()
        self.seconds: dict[str, float] = {}

    def record(self) -> dict:
        """What determines this stage's output, for ``run.json``: the config files and checkpoints
        (paths and SHA-256), the user's overrides, the resolved settings the bundle declares recorded
        (``recorded_settings``: those a user changes or must know to reproduce a prediction), the runtime."""
        recorded = declared_settings(self.bundle, "recorded_settings", self.config_files[1:])
        settings = {key: self.parser.get_parsed_content(key) for key in recorded}
        return {
            "bundle": str(self.bundle.resolve()),
            "configs": [{"path": str(c.resolve()), "sha256": file_sha256(c)} for c in self.config_files],
            "checkpoints": [{"path": str(c.resolve()), "sha256": file_sha256(c)} for c in self.checkpoints],
            "overrides": recorded_overrides(self.overrides),
            "settings": json.loads(json.dumps(settings, default=str)),
            "backend": self.backend,
            "precision": self.precision,
            **({"calibration": [c["image"] for c in self.calibration] if self.calibration else "phantoms"}
               if self.precision == "int8" else {}),
            "device": str(self.device),
        }

    def _network(self, checkpoint: str | os.PathLike) -> Callable[[torch.Tensor], torch.Tensor]:
        network = load_checkpoint(self.parser.get_parsed_content("network_def", lazy=False), checkpoint,
                                  self.config_files)
        patch_size = self.parser.get_parsed_content("patch_size")
        if self.precision != "int8":
            return compile_network(network, patch_size, backend=self.backend, precision=self.precision)
        windows = functools.partial(calibration_windows, self.calibration, self.load, self.preprocessing, patch_size)
        return compile_network(network, patch_size, backend=self.backend, precision="int8", calibration=windows,
                               calibration_key=calibration_key(self.calibration, self.config_files, self.overrides))

    def load(self, item: Mapping[str, str], reader: ImageReader | None = None) -> dict:
        """Read the files of an item (e.g. ``{"image": path}``) with the config's ``loading`` transforms
        (``reader``: the reader its ``LoadImaged`` use, e.g. an :class:`~cascade.readers.OpenedNiftiReader`)."""
        if reader is None:
            return self.loading(dict(item))
        data = dict(item)
        for transform in self.loading.transforms:
            data = transform(data, reader) if isinstance(transform, LoadImaged) else transform(data)
        return data

    @torch.no_grad()
    def __call__(self, data: Mapping) -> dict:
        """Preprocess, infer and postprocess one loaded case.

        Args:
            data: the config's input keys as loaded channel-first MetaTensors (``image``, and
                ``mask`` for the segmenter), e.g. from :meth:`load`.

        Returns:
            The postprocessed dictionary; ``pred`` is on the input grid. Where the network votes
            (``uncertainty``), ``disagreement`` holds :func:`cascade.uncertainty.disagreement` on the
            network's grid, 0 outside the gate (see :meth:`disagreement_on_input_grid`), and
            ``disputed_mm3`` its integral in mm^3.
        """
        start = time.perf_counter()
        data = self.preprocessing(dict(data))
        image = data["image"]
        preprocessed = time.perf_counter()
        batch = image.as_tensor()[None].to(self.device)
        counted = (WindowProgress(self.network, self.bundle.name, count_windows(self.inferer, batch.shape[2:]))
                   if self.progress else nullcontext(self.network))
        with torch.autocast(self.device.type, enabled=self.amp), counted as network:
            logits = self.inferer(batch, network)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        inferred = time.perf_counter()
        logits = logits[0].float().cpu()
        if self.network.votes:
            logits, shares = self.network.split_votes(logits)
            disputed = disagreement(shares[None])[0] * (data["mask"].as_tensor() > 0 if "mask" in data else 1)
            voxel_mm3 = float(abs(torch.linalg.det(image.affine[:3, :3].double())))
            data["disputed_mm3"] = float(disputed.sum()) * voxel_mm3
            data["disagreement"] = MetaTensor(disputed, meta=image.meta,
                                              applied_operations=list(image.applied_operations))
        data["pred"] = MetaTensor(logits, meta=image.meta, applied_operations=list(image.applied_operations))
        result = self.postprocessing(data)
        self.seconds = {
            "preprocessing": preprocessed - start,
            "inference": inferred - preprocessed,
            "postprocessing": time.perf_counter() - inferred,
        }
        return result

    def disagreement_on_input_grid(self, result: Mapping) -> np.ndarray:
        """A result's ``disagreement`` brought back to the input grid through the inverse of the
        preprocessing (as the bundle's ``Invertd`` brings back ``pred``, interpolated linearly):
        an (X, Y, Z) float32 array in [0, 1]."""
        inverted = Invertd("disagreement", self.preprocessing, orig_keys="image", nearest_interp=False)(
            {"disagreement": result["disagreement"], "image": result["image"]})
        return np.clip(inverted["disagreement"][0].numpy(), 0.0, 1.0).astype(np.float32)


@dataclass
class CaseResult:
    """What the cascade made of one image; arrays are (X, Y, Z) on the input grid.

    Attributes:
        labels: uint8 label map (0 background, 1 wall, 2 right atrium, 3 left atrium).
        mask: uint8 stage-1 mask after the largest-component step.
        gate: uint8 region stage 2 may label (the mask after the segmenter's hand-off: dilation).
        affine: the input's 4x4 affine.
        header: the input's NIfTI header (geometry codes for the outputs).
        seconds: wall-clock seconds per stage (``stage 1``, ``stage 2``).
        warnings: why the label map is empty (no atria found, a constant image), one line each,
            naming the file.
        input_warnings: what was repaired in the input before the networks (corrupt slices,
            intensity spikes: :mod:`cascade.intensity`), one line each, naming the file.
        passes: predictions the segmenter averaged per window (checkpoints times mirrorings); 0
            where it did not run.
        uncertainty: the case uncertainty of :mod:`cascade.uncertainty`; ``None`` with a single
            pass (nothing to compare) or nothing labelled.
        disagreement: the float32 (X, Y, Z) disagreement map, when asked for and measured.
    """

    labels: np.ndarray
    mask: np.ndarray
    gate: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    input_warnings: list[str] = field(default_factory=list)
    passes: int = 0
    uncertainty: float | None = None
    disagreement: np.ndarray | None = None


def _channel(tensor: torch.Tensor) -> np.ndarray:
    """Channel 0 of a (1, X, Y, Z) result as a uint8 (X, Y, Z) array."""
    return np.asarray(tensor[0].detach().cpu().numpy(), dtype=np.uint8)


class CascadeEngine:
    """Localizer and gated segmenter, chained per image.

    Args:
        localizer: stage-1 predictor; ``None`` for the single-stage baseline, whose segmenter
            (trained with ``configs/single_stage.json``) is given an all-ones gate.
        segmenter: stage-2 predictor; ``None`` for an engine that only localizes (the
            out-of-fold masks of cross-validation, the localizer task of MONAI Label).
    """

    def __init__(self, localizer: StagePredictor | None, segmenter: StagePredictor | None = None) -> None:
        if localizer is None and segmenter is None:
            raise ValueError("an engine needs a localizer, a segmenter or both")
        self.localizer = localizer
        self.segmenter = segmenter
        self.weights: dict[str, str] = {}  # stage -> where its weights came from, for messages

    @classmethod
    def from_options(
        cls,
        models: str | os.PathLike | None = None,
        folds: str | int | Sequence[int] | None = None,
        pretrained: str | None = None,
        localizer: str | os.PathLike | None = None,
        segmenter: str | os.PathLike | None = None,
        stages: Sequence[str] = STAGES,
        calibration: str | os.PathLike | None = None,
        **settings,
    ) -> CascadeEngine:
        """Build the engine from the options ``cascade predict`` takes.

        Args:
            models: work folder of ``cascade crossval`` or ``cascade import-nnunet`` (each fold's
                :func:`cascade.bundles.fold_checkpoint`; see :mod:`cascade.bundles`).
            folds: fold ids to ensemble (default: every fold in ``models``, else ``models/model.pt``).
            pretrained: shipped weights by name (``demo``: phantoms; ``la2018``: real scans, left
                atrium; see :func:`cascade.bundles.pretrained_names`).
            localizer: stage-1 bundle folder (default: the installed ``atria_localizer``).
            segmenter: stage-2 bundle folder (default: the installed ``atria_segmenter``).
            stages: the stages to build; ``("localizer",)`` for a localize-only engine.
            calibration: labelled data folder (any layout) calibrating ``precision`` int8 (default:
                phantoms; see :class:`StagePredictor`).
            **settings: config values given by the user; ``None`` values are left to the configs:
                ``device`` (a name, see :func:`cascade.settings.resolve_device`), ``overlap``, ``tta``,
                ``mask_threshold`` (localizer), ``gate_margin_mm`` and ``mask_region`` (segmenter;
                see :mod:`cascade.settings`), ``progress`` (a progress bar over the windows),
                ``backend`` (``torch`` or ``openvino``; openvino runs on the CPU, the default device
                then) and ``precision`` (``fp32`` or ``bf16``, or a mapping stage -> precision;
                default :func:`cascade.backends.default_precision`).

        Raises:
            InputError: a bad option, a missing bundle, config or checkpoint (the message says
                how to get weights).
        """
        bundles = _bundle_folders(localizer, segmenter)
        declared = stage_settings(bundles)  # what each bundle's inference.json lets a user change
        unknown = set(settings) - {*declared["localizer"], *declared["segmenter"], *RUNTIME_SETTINGS}
        if unknown:
            raise TypeError(f"unknown engine settings: {sorted(unknown)}")
        per_stage = stage_overrides(settings, declared)
        predictors, sources = {}, {}
        for stage in stages:
            runtime = stage_runtime(stage, settings.get("device"), settings.get("backend"), settings.get("precision"),
                                    calibration, settings.get("progress"))
            weights = _trained_weights(stage, bundles[stage], models, folds, pretrained)
            predictors[stage] = StagePredictor(
                bundles[stage], weights.checkpoints, per_stage[stage], weights.configs, runtime
            )
            sources[stage] = weights.source
        engine = cls(predictors.get("localizer"), predictors.get("segmenter"))
        engine.weights = sources
        return engine

    def record(self) -> dict:
        """Each stage's :meth:`StagePredictor.record` and where its weights came from."""
        stages = {"localizer": self.localizer, "segmenter": self.segmenter}
        return {stage: {"weights": self.weights.get(stage, ""), **p.record()}
                for stage, p in stages.items() if p is not None}

    @property
    def labelled_classes(self) -> tuple[int, ...]:
        """Label values the segmenter labels: its config's ``labelled_classes`` (all for older configs)."""
        if self.segmenter is None or "labelled_classes" not in self.segmenter.parser:
            return tuple(CLASS_NAMES)
        return tuple(int(v) for v in self.segmenter.parser.get_parsed_content("labelled_classes"))

    @property
    def passes(self) -> int:
        """Predictions the segmenter averages per window (checkpoints times mirrorings); 0 without one."""
        return self.segmenter.network.passes if self.segmenter is not None else 0

    @property
    def review_threshold(self) -> float:
        """The case uncertainty above which a case is flagged for review: the segmenter config's
        ``review_uncertainty`` (:func:`cascade.uncertainty.needs_review`)."""
        if self.segmenter is None or "review_uncertainty" not in self.segmenter.parser:
            return float("inf")
        return float(self.segmenter.parser.get_parsed_content("review_uncertainty"))

    def read(self, image_path: str | os.PathLike, name: str | None = None) -> tuple[MetaTensor, nib.Nifti1Image]:
        """Check and load an image file once for both stages.

        Args:
            image_path: NIfTI file.
            name: how messages name the input (default ``image_path``).

        Returns:
            See :meth:`read_opened`.

        Raises:
            InputError: a header problem (see :func:`cascade.io.read_header`) or see :meth:`read_opened`.
        """
        return self.read_opened(read_header(image_path), name or str(image_path))

    def read_opened(self, source: nib.Nifti1Image, name: str) -> tuple[MetaTensor, nib.Nifti1Image]:
        """Load an open NIfTI image (a checked file's proxy, or a DICOM series assembled in memory)
        with the first stage's ``loading`` transforms, reading its voxels once, and check it.

        Args:
            source: the image (:class:`~cascade.readers.OpenedNiftiReader` hands it to ``LoadImaged``).
            name: how messages name the input; recorded as the image's ``filename_or_obj``.

        Returns:
            The channel-first image, its intensity outliers searched once for both stages
            (:func:`cascade.intensity.record_intensity_outliers`), and ``source``.

        Raises:
            InputError: a corrupt data block or unusable intensities (:func:`cascade.io.check_intensities`).
        """
        try:
            image = (self.localizer or self.segmenter).load({"image": name}, OpenedNiftiReader(source))["image"]
        except Exception as err:  # MONAI wraps reader errors in RuntimeError chains
            raise InputError(f"{name}: not a readable NIfTI file ({type(err).__name__})") from err
        check_intensities(name, image.as_tensor().numpy())
        record_intensity_outliers(image)
        return image, source

    def localize(self, image: MetaTensor) -> np.ndarray:
        """Stage-1 mask (X, Y, Z) uint8 of a loaded image, on its grid."""
        return _channel(self._localize(image))

    def _localize(self, image: MetaTensor) -> MetaTensor:
        """The localizer's postprocessed ``pred``: the (1, X, Y, Z) stage-1 mask on the image's grid."""
        if self.localizer is None:
            raise RuntimeError("this engine has no localizer")
        return self.localizer({"image": image.clone()})["pred"]

    def segment(self, image: MetaTensor, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Stage 2 gated by a stage-1 mask: (labels, gate), uint8 (X, Y, Z) on the image's grid.

        ``mask`` (X, Y, Z) is ``None`` for the single-stage segmenter, whose config makes an all-ones gate.
        """
        if mask is not None:
            mask = MetaTensor(torch.as_tensor(mask[None], dtype=torch.float32), meta=deepcopy(image.meta))
        result = self._segment(image, mask)
        return _channel(result["pred"]), _channel(result["mask"] > 0)

    def _segment(self, image: MetaTensor, mask: MetaTensor | None) -> dict:
        """The segmenter's postprocessed result dictionary (see :meth:`StagePredictor.__call__`) for a
        (1, X, Y, Z) stage-1 mask on the image's grid (``None``: see :meth:`segment`)."""
        if self.segmenter is None:
            raise RuntimeError("this engine has no segmenter")
        data = {"image": image.clone()}
        if mask is not None:
            data["mask"] = mask
        return self.segmenter(data)

    def _add_uncertainty(self, result: CaseResult, segmented: Mapping, disagreement_map: bool) -> None:
        """Fill a result's ``passes``, ``uncertainty`` and (with ``disagreement_map``) ``disagreement``."""
        result.passes = self.passes
        if "disputed_mm3" not in segmented:
            return
        labelled_mm3 = float(np.count_nonzero(result.labels)) * abs(float(np.linalg.det(result.affine[:3, :3])))
        result.uncertainty = case_uncertainty(segmented["disputed_mm3"], labelled_mm3)
        if disagreement_map:
            result.disagreement = self.segmenter.disagreement_on_input_grid(segmented) * (result.gate > 0)

    def predict_image(
        self, image_path: str | os.PathLike, name: str | None = None, disagreement_map: bool = False
    ) -> CaseResult:
        """Run the cascade on one image file.

        Args:
            image_path: NIfTI file.
            name: how messages name the input (default ``image_path``; e.g. the DICOM series a
                temporary file was made from).
            disagreement_map: also bring the segmenter's disagreement map to the input grid.

        Raises:
            InputError: the image cannot be used (see :meth:`read`).
        """
        image, source = self.read(image_path, name)
        return self.predict_loaded(image, source, name or str(image_path), disagreement_map)

    def predict_loaded(
        self, image: MetaTensor, source: nib.Nifti1Image, name: str, disagreement_map: bool = False
    ) -> CaseResult:
        """Run the cascade on an image :meth:`read` loaded (``source``: its header, for the outputs'
        geometry; ``name``: how messages name it; ``disagreement_map``: see :meth:`predict_image`)."""
        if self.localizer is None:  # the single-stage baseline: no gate
            start = time.perf_counter()
            constant = _constant_image(image, source, name)
            if constant is not None:
                return constant
            segmented = self._segment(image, None)
            labels, gate = _channel(segmented["pred"]), _channel(segmented["mask"] > 0)
            seconds = {"stage 1": 0.0, "stage 2": time.perf_counter() - start}
            result = CaseResult(labels, gate, gate, source.affine, source.header, seconds,
                                input_warnings=_input_warnings(image, name))
            self._add_uncertainty(result, segmented, disagreement_map)
            return result
        result, stage1 = self._localized(image, source, name)
        if stage1 is None or not result.mask.any() or self.segmenter is None:
            return result
        start = time.perf_counter()
        segmented = self._segment(image, stage1)
        result.labels, result.gate = _channel(segmented["pred"]), _channel(segmented["mask"] > 0)
        self._add_uncertainty(result, segmented, disagreement_map)
        result.seconds["stage 2"] = time.perf_counter() - start
        return result

    def localize_image(self, image_path: str | os.PathLike, name: str | None = None) -> CaseResult:
        """Stage 1 alone on one image file, with the checks and warnings of :meth:`predict_image`
        (the out-of-fold masks of cross-validation, the localizer task of MONAI Label).

        Returns:
            A result whose ``mask`` is the stage-1 mask (empty, with a warning, for a constant
            image or where no atria are found); ``labels`` and ``gate`` are empty.

        Raises:
            InputError: the image cannot be used (see :meth:`read`).
        """
        image, source = self.read(image_path, name)
        return self.localize_loaded(image, source, name or str(image_path))

    def localize_loaded(self, image: MetaTensor, source: nib.Nifti1Image, name: str) -> CaseResult:
        """Stage 1 of an image :meth:`read` loaded (see :meth:`localize_image`; arguments as
        :meth:`predict_loaded`)."""
        return self._localized(image, source, name)[0]

    def _localized(
        self, image: MetaTensor, source: nib.Nifti1Image, name: str
    ) -> tuple[CaseResult, MetaTensor | None]:
        """:meth:`localize_loaded`'s result and the stage-1 mask as the localizer made it (a (1, X, Y, Z)
        MetaTensor, handed to stage 2 as it is); ``None`` for a constant image."""
        start = time.perf_counter()
        constant = _constant_image(image, source, name)
        if constant is not None:
            return constant, None
        input_warnings = _input_warnings(image, name)
        shape = tuple(source.shape[:3])
        stage1 = self._localize(image)
        mask = _channel(stage1)
        if mask.shape != shape:
            raise RuntimeError(f"{name}: stage-1 output shape {mask.shape} differs from the input {shape}")
        seconds = {"stage 1": time.perf_counter() - start, "stage 2": 0.0}
        result = CaseResult(np.zeros(shape, np.uint8), mask, np.zeros(shape, np.uint8), source.affine, source.header,
                            seconds, input_warnings=input_warnings)
        if not mask.any():
            result.warnings.append(f"{name}: the localizer found no atria; the label map is empty")
        return result, stage1


def _bundle_folders(
    localizer: str | os.PathLike | None, segmenter: str | os.PathLike | None
) -> dict[str, Path]:
    """Each stage's bundle folder (default: the installed one), checked to hold ``configs/inference.json``."""
    bundles = {stage: Path(path) if path else bundle_dir(stage) for stage, path in zip(STAGES, (localizer, segmenter))}
    for bundle in bundles.values():
        if not (bundle / "configs" / "inference.json").is_file():
            raise InputError(f"{bundle}: not a bundle folder (no configs/inference.json)")
    return bundles


def _trained_weights(
    stage: str, bundle: Path, models: str | os.PathLike | None, folds: str | int | Sequence[int] | None,
    pretrained: str | None,
) -> StageWeights:
    """:func:`cascade.bundles.stage_weights`, with a missing checkpoint's message saying how to get weights."""
    try:
        return stage_weights(stage, bundle, models=models, folds=folds, pretrained=pretrained)
    except MissingCheckpointError as err:
        raise MissingCheckpointError(
            f"{err} (the {stage} has no trained weights there: train with `cascade crossval` or "
            "`python -m monai.bundle run training` (see the bundle's docs/README.md) and pass --models "
            "or --localizer/--segmenter, or pass --pretrained la2018 or --pretrained demo for shipped weights)"
        ) from err


def _constant_image(image: MetaTensor, source: nib.Nifti1Image, name: str) -> CaseResult | None:
    """The empty result, with its warning, of an image of one intensity (not a scan); ``None`` for any other."""
    low, high = float(image.min()), float(image.max())
    if low != high:
        return None
    empty = np.zeros(tuple(source.shape[:3]), np.uint8)
    warning = f"{name}: constant intensity {low:g}, not a scan; the label map is empty"
    return CaseResult(empty, empty, empty, source.affine, source.header, {"stage 1": 0.0, "stage 2": 0.0}, [warning])


def _input_warnings(image: MetaTensor, name: str) -> list[str]:
    """What the bundles' repair of intensity outliers finds in an image, one line naming it."""
    outliers = channel_outliers(image)[0]
    return [f"{name}: {outliers.describe()}"] if outliers else []
