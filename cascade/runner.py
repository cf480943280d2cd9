"""The cascade runner: localizer -> largest component -> dilation -> gated segmenter, per case.

The runner is thin: each stage is a bundle's ``inference.json`` parsed with MONAI's
``ConfigParser`` (so a user's overrides apply), and its ``preprocessing``, ``network_def``,
``inferer`` and ``postprocessing`` are used as the bundle defines them. The runner adds what a
single bundle run lacks: the hand-off of the stage-1 mask to stage 2, checkpoint ensembles
(softmax averaged, as nnU-Net ensembles its folds), mirroring test-time augmentation, per-case
error handling and atomic outputs on the input's exact grid.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from tqdm import tqdm

from cascade.data import case_id, image_datalist
from cascade.io import InputError, load_nifti, save_nifti_atomic

__all__ = ["BundlePredictor", "CascadePredictor", "PredictionReport", "resolve_device", "MissingCheckpointError"]

logger = logging.getLogger(__name__)

REPO_BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
MIRROR_AXES = (2, 3, 4)  # spatial axes of a (B, C, X, Y, Z) batch


class MissingCheckpointError(InputError):
    """A stage has no trained weights."""


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``/``cuda:N``."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


class BundlePredictor:
    """One cascade stage: a bundle's inference config with its network weights loaded.

    Args:
        bundle_dir: bundle folder (holding ``configs/inference.json``).
        checkpoints: one or more weight files; their softmax outputs are averaged.
        overrides: config ids and values applied after reading (e.g. ``{"overlap": 0}``).
        extra_configs: further config files of the bundle layered over ``inference.json``
            (e.g. ``["demo.json"]``), as ``--config_file`` lists do.
        mirror: average over the 8 mirrorings of the three spatial axes (test-time augmentation).

    Attributes:
        seconds: wall-clock seconds of the last call's ``preprocessing``, ``inference`` and
            ``postprocessing`` (CUDA work included).

    Raises:
        MissingCheckpointError: a checkpoint file does not exist.
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        checkpoints: Sequence[str | os.PathLike],
        overrides: dict | None = None,
        extra_configs: Sequence[str] = (),
        mirror: bool = False,
    ) -> None:
        bundle_dir = Path(bundle_dir)
        configs = [bundle_dir / "configs" / name for name in ("inference.json", *extra_configs)]
        for config in configs:
            if not config.is_file():
                raise InputError(f"{config}: bundle config not found")
        missing = [str(c) for c in checkpoints if not Path(c).is_file()]
        if missing:
            raise MissingCheckpointError(f"{missing[0]}: checkpoint not found")
        self.parser = ConfigParser()
        self.parser.read_config([str(c) for c in configs])
        self.parser.update({"bundle_root": str(bundle_dir), **(overrides or {})})
        self.device = self.parser.get_parsed_content("device")
        if self.device.type == "cuda":
            # Every window has the patch's shape, so cuDNN's autotuning pays off (nnU-Net's
            # predictor turns it on too; MONAI's set_determinism would turn it off).
            torch.backends.cudnn.benchmark = True
        self.preprocessing = self.parser.get_parsed_content("preprocessing")
        self.inferer = self.parser.get_parsed_content("inferer")
        self.postprocessing = self.parser.get_parsed_content("postprocessing")
        self.networks = [self._load_network(path) for path in checkpoints]
        self.mirror = mirror
        self.seconds: dict[str, float] = {}

    def _load_network(self, checkpoint: str | os.PathLike) -> torch.nn.Module:
        network = self.parser.get_parsed_content("network_def", lazy=False)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        try:
            network.load_state_dict(state)
        except RuntimeError as err:
            first_line = str(err).splitlines()[0]
            raise InputError(f"{checkpoint}: weights do not fit the configured network ({first_line})") from err
        return network.to(self.device).eval()

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Mean softmax over networks (and mirrorings) of a (1, C, X, Y, Z) batch."""
        flips = [()]
        if self.mirror:
            flips = [axes for n in range(len(MIRROR_AXES) + 1) for axes in itertools.combinations(MIRROR_AXES, n)]
        total = None
        for network in self.networks:
            for axes in flips:
                flipped = torch.flip(image, axes) if axes else image
                with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                    logits = self.inferer(flipped, network)
                probs = torch.softmax(logits.float(), dim=1)
                probs = torch.flip(probs, axes) if axes else probs
                total = probs if total is None else total + probs
        return total / (len(self.networks) * len(flips))

    def __call__(self, item: dict) -> dict:
        """Run preprocessing, inference and the bundle's postprocessing on one case.

        Args:
            item: the bundle's input keys (file paths), e.g. ``{"image": ...}``.

        Returns:
            The postprocessed dictionary; ``pred`` is on the input grid.
        """
        start = time.perf_counter()
        data = self.preprocessing(dict(item))
        image = data["image"]
        preprocessed = time.perf_counter()
        probs = self.probabilities(image.unsqueeze(0).to(self.device))[0].cpu()
        inferred = time.perf_counter()
        # The bundle's postprocessing starts with a softmax: log-probabilities make it return the
        # averaged probabilities unchanged.
        data["pred"] = MetaTensor(torch.log(probs.clamp_min(1e-12)), meta=image.meta)
        data["pred"].applied_operations = list(image.applied_operations)
        result = self.postprocessing(data)
        self.seconds = {
            "preprocessing": preprocessed - start,
            "inference": inferred - preprocessed,
            "postprocessing": time.perf_counter() - inferred,
        }
        return result


@dataclass
class PredictionReport:
    """What a ``cascade predict`` run did."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    stage_seconds: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> str:
        per_case = ""
        if self.seconds:
            stages = ", ".join(f"{stage} {np.mean(s):.1f} s" for stage, s in self.stage_seconds.items())
            per_case = f", {np.mean(self.seconds):.1f} s per case ({stages})"
        return f"{len(self.done)} cases done, {len(self.skipped)} skipped, {len(self.failed)} failed{per_case}"


def output_name(image_path: str | os.PathLike, postfix: str) -> str:
    """``MBAS_001_gt.nii.gz`` -> ``MBAS_001_<postfix>.nii.gz`` (likewise nnU-Net and flat names)."""
    return f"{case_id(image_path)}_{postfix}.nii.gz"


def list_inputs(source: str | os.PathLike) -> list[dict]:
    """Cases to predict: a single NIfTI file, or every image of a data folder of any layout."""
    source = Path(source)
    if source.is_file():
        return [{"case": case_id(source), "image": str(source)}]
    if not source.exists():
        raise InputError(f"{source}: input not found")
    return [{"case": e["case"], "image": e["image"]} for e in image_datalist(source)]


class CascadePredictor:
    """Localizer and gated segmenter, chained per case.

    Args:
        localizer: stage-1 predictor.
        segmenter: stage-2 predictor (its config's ``dilation_radius`` and ``crop_to_mask`` set how
            the stage-1 mask gates it).

    Attributes:
        seconds: wall-clock seconds of each stage (``stage 1``, ``stage 2``) of the last case;
            stage 2 is 0 when the stage-1 mask was empty.
    """

    def __init__(self, localizer: BundlePredictor, segmenter: BundlePredictor) -> None:
        self.localizer = localizer
        self.segmenter = segmenter
        self.seconds: dict[str, float] = {}

    def predict_case(self, image_path: str, mask_path: Path) -> np.ndarray:
        """Label map (X, Y, Z) uint8 on the input grid; the stage-1 mask is written to ``mask_path``.

        Raises:
            InputError: the image is unreadable, not 3D or not finite.
        """
        start = time.perf_counter()
        source = load_nifti(image_path)
        mask = self.localizer({"image": image_path})["pred"]
        mask_array = np.asarray(mask[0].cpu().numpy() > 0, dtype=np.uint8)
        if mask_array.shape != source.shape[:3]:
            raise RuntimeError(f"{image_path}: stage-1 output shape {mask_array.shape} differs from the input")
        save_nifti_atomic(mask_array, source.affine, mask_path, header=source.header)
        self.seconds = {"stage 1": time.perf_counter() - start, "stage 2": 0.0}
        if not mask_array.any():
            warnings.warn(f"{image_path}: the localizer found no atria; writing an empty label map", stacklevel=2)
            return np.zeros(source.shape[:3], np.uint8)
        start = time.perf_counter()
        labels = self.segmenter({"image": image_path, "mask": str(mask_path)})["pred"]
        self.seconds["stage 2"] = time.perf_counter() - start
        return np.asarray(labels[0].cpu().numpy(), dtype=np.uint8)

    def predict(
        self,
        inputs: list[dict],
        out_dir: str | os.PathLike,
        overwrite: bool = False,
        resume: bool = False,
        save_masks: bool = False,
    ) -> PredictionReport:
        """Predict every case, writing ``<case>_label.nii.gz`` (and ``<case>_mask.nii.gz``) atomically.

        Raises:
            FileExistsError: an output exists and neither ``overwrite`` nor ``resume`` is set
                (checked for every case before anything runs).
        """
        out_dir = Path(out_dir)
        report = PredictionReport()
        targets = {item["case"]: out_dir / output_name(item["image"], "label") for item in inputs}
        if not (overwrite or resume):
            existing = [str(p) for p in targets.values() if p.exists()]
            if existing:
                raise FileExistsError(f"{existing[0]}: output exists (use --overwrite or --resume)")
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in tqdm(inputs, desc="cases", unit="case"):
            target = targets[item["case"]]
            if resume and target.exists():
                report.skipped.append(item["case"])
                continue
            start = time.perf_counter()
            with tempfile.TemporaryDirectory(dir=out_dir, prefix=".stage1-") as scratch:
                mask_path = Path(scratch) / output_name(item["image"], "mask")
                try:
                    labels = self.predict_case(item["image"], mask_path)
                except InputError as err:
                    report.failed[item["case"]] = str(err)
                    tqdm.write(f"cascade: error: {err}", file=sys.stderr)
                    continue
                source = nib.load(item["image"])
                save_nifti_atomic(labels, source.affine, target, header=source.header)
                if save_masks:
                    os.replace(mask_path, out_dir / mask_path.name)
            report.done.append(item["case"])
            report.seconds.append(time.perf_counter() - start)
            for stage, seconds in self.seconds.items():
                report.stage_seconds.setdefault(stage, []).append(seconds)
        return report
