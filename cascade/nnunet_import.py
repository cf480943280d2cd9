"""Import trained nnU-Net v2 ResEnc models into a cascade stage (``cascade import-nnunet``).

An nnU-Net v2 trained-model folder (``<Trainer>__<Plans>__<configuration>/``) holds ``dataset.json``,
``plans.json`` and ``fold_<k>/checkpoint_final.pth`` (or ``checkpoint_best.pth``). The import reads
them without nnU-Net installed, checks that the model is one this project's bundles can run, and
writes, for stage ``localizer`` or ``segmenter``::

    WORK/<stage>/fold<k>/models/model.pt   a plain state dict that the bundle's network_def loads
    WORK/<stage>/config.json               a config overlay for the bundle's inference.json

What the checks accept (anything else is an :class:`~cascade.errors.InputError` naming the file and field):

- architecture: ``dynamic_network_architectures``' ``ResidualEncoderUNet`` with 3D convolutions with
  bias, ``InstanceNorm3d(eps=1e-5, affine=True)``, ``LeakyReLU(0.01)``, ``BasicBlockD`` blocks and
  no bottleneck or squeeze-excitation: the network :class:`~cascade.networks.ResEncUNet` is
  output-equal to. Stage count, features, kernel sizes, strides and block counts may differ from the
  bundle's: they go into the overlay, as do the plans' spacing and patch size.
- one input channel; ``ZScoreNormalization`` without ``use_mask_for_norm``; nnU-Net's default
  resampling functions (their orders go into the overlay); the SimpleITK or nibabel reader (both
  give nnU-Net arrays in (z, y, x) storage order, which this module maps to MONAI's (x, y, z)
  through ``transpose_forward``).
- labels: the segmenter needs exactly labels 0-3 (background, wall, right atrium, left atrium) as
  softmax classes. The localizer needs one foreground class: either two labels (background and
  one foreground label) or exactly one region (a sigmoid output, e.g. ``"atria": [1, 2, 3]``). A
  region's sigmoid head ``z`` becomes the two softmax logits ``(0, z)``, whose softmax is
  ``(1 - sigmoid(z), sigmoid(z))`` exactly, and whose argmax is nnU-Net's threshold at 0.5. A
  model with several foreground classes or regions cannot be a localizer (import it as the
  segmenter if it has the four classes).

The overlay layers the bundle's ``configs/nnunet_preprocessing.json`` (nnU-Net's crop, z-score,
resampling and resampling of the output back) and ``configs/nnunet_inferer.json`` (nnU-Net's
sliding-window placement and blending) unless ``preprocessing="monai"`` keeps the bundle's own.
MONAI's ``monai.apps.nnunet`` does not fit here: it wraps nnU-Net's own predictor (nnunetv2 at
run time, argmax only) or builds nnU-Net's network class, while the cascade needs the weights in
its own (x, y, z) network inside a MONAI bundle pipeline.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from cascade.bundles import STAGES, bundle_dir, read_stage_config
from cascade.errors import InputError
from cascade.networks.nnunet_weights import CHECKPOINT_WEIGHTS_KEY, convert_nnunet_state_dict

__all__ = ["NNUNetModel", "ImportReport", "read_nnunet_model", "stage_overlay", "convert_weights", "import_nnunet"]

CHECKPOINT_FILES = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
NNUNET_OVERLAYS = ("nnunet_preprocessing.json", "nnunet_inferer.json")

_ARCHITECTURE = "dynamic_network_architectures.architectures.{}.ResidualEncoderUNet"
_ACCEPTED_ARCHITECTURES = {_ARCHITECTURE.format("unet"), _ARCHITECTURE.format("residual_unet")}
_ACCEPTED_OPS = {
    "conv_op": {"torch.nn.modules.conv.Conv3d", "torch.nn.Conv3d"},
    "norm_op": {"torch.nn.modules.instancenorm.InstanceNorm3d", "torch.nn.InstanceNorm3d"},
    "nonlin": {"torch.nn.LeakyReLU", "torch.nn.modules.activation.LeakyReLU"},
    "dropout_op": {None, "torch.nn.Dropout3d", "torch.nn.modules.dropout.Dropout3d"},
    "block": {None, "dynamic_network_architectures.building_blocks.residual.BasicBlockD"},
}
_READERS = {"SimpleITKIO", "NibabelIO"}
_RESAMPLING_FUNCTION = "resample_data_or_seg_to_shape"
SEGMENTER_LABELS = (0, 1, 2, 3)
try:
    from numpy._core.multiarray import scalar as _scalar  # numpy >= 2
except ImportError:  # numpy 1
    from numpy.core.multiarray import scalar as _scalar
# nnU-Net logs numpy scalars in its checkpoints; numpy 1 pickles name the numpy.core module
_NUMPY_SCALARS = [
    np.dtype,
    (_scalar, "numpy.core.multiarray.scalar"),
    (_scalar, "numpy._core.multiarray.scalar"),
    *{type(np.dtype(code)) for code in "?bhilqBHILQefd"},
]


@dataclass
class NNUNetModel:
    """An nnU-Net v2 trained-model folder, read and resolved.

    Attributes:
        folder: the trained-model folder.
        dataset: ``dataset.json``.
        plans: ``plans.json``.
        configuration_name: the configuration the checkpoints were trained with (e.g. ``3d_fullres``).
        configuration: that configuration with ``inherits_from`` resolved.
        checkpoints: checkpoint file per fold number.
    """

    folder: Path
    dataset: dict
    plans: dict
    configuration_name: str
    configuration: dict
    checkpoints: dict[str, Path]

    @property
    def plans_file(self) -> Path:
        return self.folder / "plans.json"

    @property
    def dataset_file(self) -> Path:
        return self.folder / "dataset.json"

    def field_error(self, field_name: str, problem: str, in_dataset: bool = False) -> InputError:
        """One error line naming the file and the field."""
        if in_dataset:
            return InputError(f"{self.dataset_file}: {field_name}: {problem}")
        where = f"configurations.{self.configuration_name}." if not field_name.startswith("plans.") else ""
        return InputError(f"{self.plans_file}: {where}{field_name.removeprefix('plans.')}: {problem}")


@dataclass
class ImportReport:
    """What an import wrote and how the model differs from the bundle."""

    stage: str
    folds: list[str]
    weights: list[Path]
    config: Path | None
    differences: list[str] = field(default_factory=list)
    labels: str = ""

    def summary(self) -> str:
        lines = [f"{self.stage}: {len(self.folds)} fold(s) {', '.join(self.folds)} -> {self.weights[0].parents[2]}"]
        lines.append(f"labels: {self.labels}")
        same = ["same network, spacing and patch size as the bundle"]
        lines += [f"differs from the bundle: {d}" for d in self.differences] or same
        lines.append(f"config overlay: {self.config}" if self.config else "no config overlay needed")
        return "\n".join(lines)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: file not found (not an nnU-Net v2 trained-model folder?)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err


def _load_checkpoint(path: Path) -> dict:
    """An nnU-Net checkpoint, read without executing pickled code (numpy scalars allowed, as nnU-Net logs them)."""
    try:
        with torch.serialization.safe_globals(_NUMPY_SCALARS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: not a readable nnU-Net checkpoint ({first_line})") from err
    if not isinstance(checkpoint, dict) or CHECKPOINT_WEIGHTS_KEY not in checkpoint:
        raise InputError(f"{path}: no '{CHECKPOINT_WEIGHTS_KEY}' in the checkpoint (not an nnU-Net v2 checkpoint)")
    return checkpoint


def _resolve_configuration(plans: dict, name: str, plans_file: Path) -> dict:
    configurations = plans.get("configurations", {})
    if name not in configurations:
        raise InputError(f"{plans_file}: configurations: no configuration {name!r} (has {sorted(configurations)})")
    configuration = dict(configurations[name])
    seen = {name}
    while "inherits_from" in configuration:
        parent = configuration.pop("inherits_from")
        if parent in seen or parent not in configurations:
            raise InputError(f"{plans_file}: configurations.{name}.inherits_from: cannot resolve {parent!r}")
        seen.add(parent)
        configuration = {**configurations[parent], **configuration}
    return configuration


def read_nnunet_model(
    model_dir: str | os.PathLike, folds: Sequence[str] | None = None, checkpoint: str = "final"
) -> NNUNetModel:
    """Read an nnU-Net v2 trained-model folder.

    Args:
        model_dir: the folder holding ``dataset.json``, ``plans.json`` and ``fold_<k>/``.
        folds: fold numbers to import; None takes every numbered fold with the checkpoint.
        checkpoint: ``final`` (``checkpoint_final.pth``) or ``best`` (``checkpoint_best.pth``).

    Returns:
        The model; checkpoints are only located here, :func:`import_nnunet` reads them.

    Raises:
        InputError: a missing or unreadable file, no such fold or configuration, a fold that is not
            a number (nnU-Net's ``fold_all``: the work layout numbers its folds).
    """
    folder = Path(model_dir)
    if checkpoint not in CHECKPOINT_FILES:
        raise InputError(f"--checkpoint must be one of {sorted(CHECKPOINT_FILES)}, got {checkpoint!r}")
    if not folder.is_dir():
        raise InputError(f"{folder}: model folder not found")
    dataset = _read_json(folder / "dataset.json")
    plans = _read_json(folder / "plans.json")
    name = CHECKPOINT_FILES[checkpoint]
    if folds is None:
        folds = sorted(int(p.parent.name[5:]) for p in folder.glob(f"fold_*/{name}") if p.parent.name[5:].isdigit())
        if not folds:
            raise InputError(f"{folder}: no fold_<k>/{name} with a numbered fold k")
    if not all(str(k).isdigit() for k in folds):
        raise InputError(
            f"--folds {','.join(map(str, folds))}: fold numbers only (the work "
            "layout has fold<k> folders; nnU-Net's fold_all is not imported)"
        )
    checkpoints = {str(int(k)): folder / f"fold_{int(k)}" / name for k in folds}
    for path in checkpoints.values():
        if not path.is_file():
            raise InputError(f"{path}: checkpoint not found")
    first = _load_checkpoint(next(iter(checkpoints.values())))
    configuration_name = (first.get("init_args") or {}).get("configuration") or folder.name.split("__")[-1]
    configuration = _resolve_configuration(plans, configuration_name, folder / "plans.json")
    return NNUNetModel(folder, dataset, plans, configuration_name, configuration, checkpoints)


def _ours_from_network_axes(values: Sequence, axis_order: Sequence[int]) -> list:
    """Per-axis values in network axis order -> MONAI (x, y, z) order."""
    return [values[i] for i in axis_order]


def _network_axis_order(model: NNUNetModel) -> list[int]:
    """For each MONAI axis (x, y, z), the nnU-Net network axis that sees it.

    nnU-Net's arrays are (z, y, x) in storage order, permuted by ``transpose_forward`` before the
    network: network axis ``i`` is storage axis ``transpose_forward[i]`` of the (z, y, x) array,
    i.e. MONAI axis ``2 - transpose_forward[i]``.
    """
    forward = model.plans.get("transpose_forward", [0, 1, 2])
    if sorted(forward) != [0, 1, 2]:
        raise model.field_error("plans.transpose_forward", f"expected a permutation of [0, 1, 2], got {forward}")
    return [forward.index(2 - axis) for axis in range(3)]


def _check_architecture(model: NNUNetModel) -> dict:
    """The network arguments in MONAI axis order, after checking the plans' architecture."""
    architecture = model.configuration.get("architecture")
    if architecture is None:
        raise model.field_error(
            "architecture", "missing (plans from nnU-Net before v2.4: re-run nnUNetv2_plan_experiment)"
        )
    name = architecture.get("network_class_name")
    if name not in _ACCEPTED_ARCHITECTURES:
        raise model.field_error(
            "architecture.network_class_name",
            f"{name!r} is not nnU-Net's ResidualEncoderUNet (the only network the bundles run)",
        )
    kwargs = architecture.get("arch_kwargs", {})
    for key, accepted in _ACCEPTED_OPS.items():
        if kwargs.get(key) not in accepted:
            raise model.field_error(
                f"architecture.arch_kwargs.{key}",
                f"{kwargs.get(key)!r} is not supported (expected one of {sorted(a for a in accepted if a)})",
            )
    norm = kwargs.get("norm_op_kwargs") or {}
    if float(norm.get("eps", 1e-5)) != 1e-5 or not norm.get("affine", False):
        raise model.field_error(
            "architecture.arch_kwargs.norm_op_kwargs", f"{norm} (expected eps 1e-05 and affine true)"
        )
    slope = (kwargs.get("nonlin_kwargs") or {}).get("negative_slope", 1e-2)
    if float(slope) != 1e-2:
        raise model.field_error("architecture.arch_kwargs.nonlin_kwargs", f"negative_slope {slope} (expected 0.01)")
    if kwargs.get("conv_bias") is not True:
        raise model.field_error("architecture.arch_kwargs.conv_bias", "must be true")
    for key in ("bottleneck_channels", "stem_channels"):
        if kwargs.get(key) is not None:
            raise model.field_error(f"architecture.arch_kwargs.{key}", "must be null")
    if kwargs.get("squeeze_excitation"):
        raise model.field_error("architecture.arch_kwargs.squeeze_excitation", "must be false")
    n_stages = int(kwargs.get("n_stages", -1))
    axis_order = _network_axis_order(model)

    def per_stage(key: str, count: int) -> list:
        values = kwargs.get(key)
        if isinstance(values, int):
            values = [values] * count
        if not isinstance(values, list) or len(values) != count:
            raise model.field_error(f"architecture.arch_kwargs.{key}", f"expected {count} entries, got {values!r}")
        return values

    def per_axis(key: str) -> list[list[int]]:
        values = per_stage(key, n_stages)
        if any(not isinstance(v, list) or len(v) != 3 for v in values):
            raise model.field_error(
                f"architecture.arch_kwargs.{key}", f"expected one (z, y, x) triple per stage, got {values!r}"
            )
        return [_ours_from_network_axes(v, axis_order) for v in values]

    return {
        "features_per_stage": [int(f) for f in per_stage("features_per_stage", n_stages)],
        "kernel_sizes": per_axis("kernel_sizes"),
        "strides": per_axis("strides"),
        "n_blocks_per_stage": [int(b) for b in per_stage("n_blocks_per_stage", n_stages)],
        "n_conv_per_stage_decoder": [int(c) for c in per_stage("n_conv_per_stage_decoder", n_stages - 1)],
    }


def _check_preprocessing(model: NNUNetModel) -> dict:
    """Spacing, patch size and resampling orders in MONAI axis order, after checking the plans."""
    config = model.configuration
    channels = model.dataset.get("channel_names", model.dataset.get("modality", {}))
    if len(channels) != 1:
        raise model.field_error(
            "channel_names", f"the cascade has one input channel (the LGE image), got {channels}", in_dataset=True
        )
    if config.get("normalization_schemes") != ["ZScoreNormalization"]:
        raise model.field_error(
            "normalization_schemes", f"{config.get('normalization_schemes')} (only ZScoreNormalization is supported)"
        )
    if config.get("use_mask_for_norm") not in ([False], None):
        raise model.field_error("use_mask_for_norm", f"{config.get('use_mask_for_norm')} (only [false] is supported)")
    reader = model.plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in _READERS:
        raise model.field_error(
            "plans.image_reader_writer",
            f"{reader!r} (supported: {sorted(_READERS)}, which keep the stored voxel order)",
        )
    orders = {}
    for kind in ("data", "probabilities"):
        function = config.get(f"resampling_fn_{kind}")
        if function != _RESAMPLING_FUNCTION:
            raise model.field_error(
                f"resampling_fn_{kind}", f"{function!r} (only nnU-Net's {_RESAMPLING_FUNCTION} is supported)"
            )
        kwargs = config.get(f"resampling_fn_{kind}_kwargs", {})
        if kwargs.get("is_seg", False) or int(kwargs.get("order_z", 0)) not in (0, 1):
            raise model.field_error(f"resampling_fn_{kind}_kwargs", f"{kwargs} (needs is_seg false and order_z 0 or 1)")
        orders[kind] = (int(kwargs.get("order", 3)), int(kwargs.get("order_z", 0)), kwargs.get("force_separate_z"))
    if orders["data"][2] != orders["probabilities"][2]:
        raise model.field_error(
            "resampling_fn_probabilities_kwargs", "force_separate_z differs from resampling_fn_data_kwargs"
        )
    axis_order = _network_axis_order(model)
    spacing, patch = config.get("spacing"), config.get("patch_size")
    if not isinstance(spacing, list) or len(spacing) != 3 or min(spacing) <= 0:
        raise model.field_error("spacing", f"expected three positive voxel sizes (a 3D configuration), got {spacing}")
    if not isinstance(patch, list) or len(patch) != 3:
        raise model.field_error("patch_size", f"expected three sizes (a 3D configuration), got {patch}")
    return {
        "pixdim": [float(s) for s in _ours_from_network_axes(spacing, axis_order)],
        "patch_size": [int(p) for p in _ours_from_network_axes(patch, axis_order)],
        "nnunet_image_order": orders["data"][0],
        "nnunet_image_order_z": orders["data"][1],
        "nnunet_probabilities_order": orders["probabilities"][0],
        "nnunet_probabilities_order_z": orders["probabilities"][1],
        "nnunet_force_separate_z": orders["data"][2],
    }


def _label_heads(model: NNUNetModel, stage: str) -> tuple[bool, str]:
    """Whether the single sigmoid head needs a zero background logit; and the label mapping, in words."""
    labels = model.dataset.get("labels")
    if not isinstance(labels, dict) or labels.get("background") != 0:
        raise model.field_error(
            "labels", f"expected nnU-Net v2 labels {{name: value}} with background 0, got {labels}", in_dataset=True
        )
    classes = {name: value for name, value in labels.items() if name not in ("background", "ignore")}
    has_regions = any(isinstance(v, list) and len(v) > 1 for v in classes.values())
    if stage == "segmenter":
        values = sorted(v for v in classes.values() if not isinstance(v, list))
        if has_regions or [0, *values] != list(SEGMENTER_LABELS):
            raise model.field_error(
                "labels",
                "the segmenter needs the softmax classes 0-3 (background, wall, right atrium, left atrium), "
                f"got {labels}",
                in_dataset=True,
            )
        names = sorted(classes, key=classes.get)
        return False, ", ".join(f"{classes[n]} {n!r}" for n in names) + " -> wall, right atrium, left atrium"
    if len(classes) != 1:
        raise model.field_error(
            "labels",
            f"the localizer needs one foreground class (one label or one region), got {len(classes)}: {sorted(classes)}"
            + (" (a model with labels 0-3 can be imported as the segmenter)" if not has_regions else ""),
            in_dataset=True,
        )
    (name, value), = classes.items()
    if has_regions:
        return True, f"region {name!r} {value} (sigmoid) -> atria (softmax over logits (0, z))"
    return False, f"label {value} {name!r} -> atria"


def convert_weights(
    network_weights: dict, axis_order: Sequence[int], add_background_logit: bool
) -> dict[str, torch.Tensor]:
    """nnU-Net ``ResidualEncoderUNet`` weights -> a :class:`~cascade.networks.ResEncUNet` state dict.

    Args:
        network_weights: the checkpoint's ``network_weights``.
        axis_order: for each MONAI axis (x, y, z), the network axis it corresponds to.
        add_background_logit: prepend a zero output channel to every segmentation head (weights and
            bias), turning one sigmoid region into two softmax classes.

    Returns:
        The state dict, kernels permuted to MONAI axis order.
    """
    state = convert_nnunet_state_dict(network_weights)
    permutation = (0, 1, *(2 + axis for axis in axis_order))
    converted = {}
    for key, tensor in state.items():
        tensor = tensor.permute(permutation).contiguous() if tensor.ndim == 5 else tensor
        if add_background_logit and key.startswith("decoder.seg_layers."):
            tensor = torch.cat([torch.zeros_like(tensor[:1]), tensor])
        converted[key] = tensor
    return converted


def _bundle_parser(bundle: Path, overlay: dict) -> ConfigParser:
    return read_stage_config(bundle, "inference", overrides=overlay)


def _network_arguments(network: torch.nn.Module) -> dict:
    encoder, decoder = network.encoder, network.decoder
    return {
        "features_per_stage": list(encoder.output_channels),
        "kernel_sizes": [list(k) for k in encoder.kernel_sizes],
        "strides": [list(s) for s in encoder.strides],
        "n_blocks_per_stage": [len(stage) for stage in encoder.stages],
        "n_conv_per_stage_decoder": [len(stage) for stage in decoder.stages],
    }


def stage_overlay(
    model: NNUNetModel, bundle: str | os.PathLike, preprocessing: str = "nnunet"
) -> tuple[dict, list[str]]:
    """The config overlay that makes ``bundle`` run ``model``, and the differences in words.

    Args:
        model: the nnU-Net model.
        bundle: the stage's bundle folder.
        preprocessing: ``nnunet`` layers the bundle's ``configs/nnunet_preprocessing.json`` (with the
            plans' resampling orders) and ``configs/nnunet_inferer.json`` (nnU-Net's window placement
            and blending); ``monai`` keeps the bundle's own preprocessing and inferer.

    Returns:
        The overlay (config ids -> values; empty when nothing differs and ``preprocessing`` is
        ``monai``) and one line per field that differs from the bundle.

    Raises:
        InputError: the plans do not fit (see the module docstring).
    """
    bundle = Path(bundle)
    if preprocessing not in ("nnunet", "monai"):
        raise InputError(f"--preprocessing must be nnunet or monai, got {preprocessing!r}")
    network_args = _check_architecture(model)
    grid = _check_preprocessing(model)
    divisors = [math.prod(s[axis] for s in network_args["strides"]) for axis in range(3)]
    if any(p % d for p, d in zip(grid["patch_size"], divisors)):
        raise model.field_error(
            "patch_size",
            f"not divisible by the network's total stride (x, y, z patch {grid['patch_size']}, strides {divisors})",
        )
    parser = _bundle_parser(bundle, {})
    with torch.device("meta"):
        bundle_network = parser.get_parsed_content("network_def", lazy=False)
    bundle_args = _network_arguments(bundle_network)
    differences = [f"{k}: bundle {bundle_args[k]}, nnU-Net {v}" for k, v in network_args.items() if bundle_args[k] != v]
    overlay: dict = {}
    if differences:
        overlay.update({key: network_args[key] for key in ("features_per_stage", "n_blocks_per_stage")})
        overlay.update(
            {f"network_def#{k}": network_args[k] for k in ("kernel_sizes", "strides", "n_conv_per_stage_decoder")}
        )
    for key in ("pixdim", "patch_size"):
        if [float(v) for v in parser[key]] != [float(v) for v in grid[key]]:
            differences.append(f"{key} (x, y, z): bundle {parser[key]}, nnU-Net {grid[key]}")
            overlay[key] = grid[key]
    if preprocessing == "nnunet":
        for name in reversed(NNUNET_OVERLAYS):
            overlay = {**_read_json(bundle / "configs" / name), **overlay}
        overlay.update({k: v for k, v in grid.items() if k.startswith("nnunet_")})
    return overlay, differences


def _mirror_axes(checkpoint: dict, axis_order: Sequence[int]) -> list[int]:
    """The spatial axes (x, y, z) nnU-Net allows mirroring at inference (all three when unrecorded)."""
    axes = checkpoint.get("inference_allowed_mirroring_axes")
    return [0, 1, 2] if axes is None else sorted(axis for axis in range(3) if axis_order[axis] in axes)


def import_nnunet(
    model_dir: str | os.PathLike,
    stage: str,
    out: str | os.PathLike,
    folds: Sequence[str] | None = None,
    checkpoint: str = "final",
    preprocessing: str = "nnunet",
    bundle: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ImportReport:
    """Check an nnU-Net v2 model against a stage's bundle and write its weights and config overlay.

    Args:
        model_dir: nnU-Net trained-model folder.
        stage: ``localizer`` or ``segmenter``.
        out: working folder; writes ``OUT/<stage>/fold<k>/models/model.pt`` and ``OUT/<stage>/config.json``.
        folds: fold ids (default: every fold with the checkpoint).
        checkpoint: ``final`` or ``best``.
        preprocessing: ``nnunet`` (the model's own preprocessing, default) or ``monai`` (the bundle's).
        bundle: the stage's bundle folder (default: this repository's).
        overwrite: replace existing weights and overlay.

    Returns:
        What was written.

    Raises:
        InputError: the model does not fit the stage (one line naming the file and field), or the
            converted weights do not load into the configured network.
        FileExistsError: outputs exist and ``overwrite`` is not set.
    """
    if stage not in STAGES:
        raise InputError(f"--stage must be one of {sorted(STAGES)}, got {stage!r}")
    bundle = Path(bundle) if bundle else bundle_dir(stage)
    model = read_nnunet_model(model_dir, folds, checkpoint)
    add_background_logit, labels = _label_heads(model, stage)
    overlay, differences = stage_overlay(model, bundle, preprocessing)
    axis_order = _network_axis_order(model)
    stage_dir = Path(out) / stage
    targets = {k: stage_dir / f"fold{k}" / "models" / "model.pt" for k in model.checkpoints}
    config_path = stage_dir / "config.json"
    existing = [p for p in [*targets.values(), config_path] if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: exists (use --overwrite)")
    parser = _bundle_parser(bundle, overlay)
    network = parser.get_parsed_content("network_def", lazy=False)
    states = {}
    for fold, path in model.checkpoints.items():
        checkpoint_dict = _load_checkpoint(path)
        states[fold] = convert_weights(checkpoint_dict[CHECKPOINT_WEIGHTS_KEY], axis_order, add_background_logit)
        try:
            network.load_state_dict(states[fold], strict=True)
        except RuntimeError as err:
            raise InputError(
                f"{path}: weights do not fit the network the plans describe ({str(err).splitlines()[0]})"
            ) from err
        mirror_axes = _mirror_axes(checkpoint_dict, axis_order)
    if mirror_axes != [0, 1, 2]:  # the engine's test-time mirroring reads "mirror_axes"
        overlay["mirror_axes"] = mirror_axes
        differences.append(f"mirror_axes (x, y, z): nnU-Net allows {mirror_axes}")
    for fold, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(states[fold], target)
    if overlay:
        config_path.write_text(json.dumps(overlay, indent=4) + "\n")
    elif config_path.exists():
        config_path.unlink()
    return ImportReport(
        stage, list(model.checkpoints), list(targets.values()), config_path if overlay else None, differences, labels
    )
