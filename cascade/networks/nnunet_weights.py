"""Load the weights of nnU-Net's ``ResidualEncoderUNet`` into :class:`~cascade.networks.ResEncUNet`.

Our module names follow nnU-Net's (``dynamic_network_architectures`` 0.4.4). The mapping from an
nnU-Net parameter name to ours (:func:`nnunet_key_to_cascade`):

- a leading ``_orig_mod.`` (``torch.compile``) or ``module.`` (DDP) is stripped;
- aliases are dropped: nnU-Net registers each conv-dropout-norm-act layer twice (``conv`` and
  ``all_modules.0``, ``norm`` and ``all_modules.N``) and its decoder holds the encoder again
  (``decoder.encoder.*``);
- ``encoder.stem.convs.0.`` -> ``encoder.stem.`` (our stem is one unit, not a stack of one);
- ``encoder.stages.{s}.blocks.{b}.`` -> ``encoder.stages.{s}.{b}.``;
- ``decoder.stages.{s}.convs.{c}.`` -> ``decoder.stages.{s}.{c}.``;
- every other name is the same (``conv1``, ``conv2``, ``skip``, ``conv``, ``norm``,
  ``decoder.transpconvs``, ``decoder.seg_layers``).

Axis order: nnU-Net's default reader (SimpleITK) gives arrays in (z, y, x) order, so its kernels
are (kz, ky, kx), while this project's networks work on (x, y, z) arrays. Pass
``reverse_spatial_axes=True`` to reverse the three spatial axes of every convolution and
transposed-convolution kernel when loading such a checkpoint into a network built in (x, y, z)
order (e.g. by the presets).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["nnunet_key_to_cascade", "convert_nnunet_state_dict", "load_nnunet_state_dict"]

CHECKPOINT_WEIGHTS_KEY = "network_weights"
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
_RENAMES = (
    (re.compile(r"^encoder\.stem\.convs\.0\."), "encoder.stem."),
    (re.compile(r"^encoder\.stages\.(\d+)\.blocks\."), r"encoder.stages.\1."),
    (re.compile(r"^decoder\.stages\.(\d+)\.convs\."), r"decoder.stages.\1."),
)


def nnunet_key_to_cascade(key: str) -> str | None:
    """Map one nnU-Net ``ResidualEncoderUNet`` state-dict name to the :class:`ResEncUNet` name.

    Args:
        key: a name from nnU-Net's state dict, e.g. ``encoder.stages.1.blocks.0.conv1.conv.weight``.

    Returns:
        Our name (e.g. ``encoder.stages.1.0.conv1.conv.weight``), or ``None`` for an alias of a
        tensor that is also stored under its canonical name.
    """
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                stripped = True
    if key.startswith("decoder.encoder.") or ".all_modules." in key:
        return None
    for pattern, replacement in _RENAMES:
        key = pattern.sub(replacement, key)
    return key


def _reverse_spatial(tensor: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, k0, k1, k2) -> (C_out, C_in, k2, k1, k0); other tensors unchanged."""
    return tensor.permute(0, 1, 4, 3, 2).contiguous() if tensor.ndim == 5 else tensor


def convert_nnunet_state_dict(
    state_dict: Mapping[str, object], reverse_spatial_axes: bool = False
) -> dict[str, torch.Tensor]:
    """Rename the tensors of an nnU-Net ``ResidualEncoderUNet`` state dict to our names.

    Args:
        state_dict: an nnU-Net v2 checkpoint (a dict holding the weights under
            ``"network_weights"``) or the bare state dict.
        reverse_spatial_axes: reverse the spatial axes of 5D (kernel) tensors, for a checkpoint
            trained on (z, y, x) arrays loaded into an (x, y, z) network.

    Returns:
        Our state dict (aliases dropped, wrapper prefixes stripped).
    """
    if CHECKPOINT_WEIGHTS_KEY in state_dict:
        state_dict = state_dict[CHECKPOINT_WEIGHTS_KEY]  # type: ignore[assignment]
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        name = nnunet_key_to_cascade(key)
        if name is not None:
            converted[name] = _reverse_spatial(tensor) if reverse_spatial_axes else tensor  # type: ignore[arg-type]
    return converted


def load_nnunet_state_dict(
    model: nn.Module, state_dict: Mapping[str, object], *, reverse_spatial_axes: bool = False
) -> None:
    """Load nnU-Net ``ResidualEncoderUNet`` weights into ``model`` (a :class:`ResEncUNet`), strictly.

    Args:
        model: the network to load into, built with the nnU-Net network's configuration (kernel
            sizes and strides in ``model``'s axis order).
        state_dict: an nnU-Net v2 checkpoint (weights under ``"network_weights"``) or a bare
            state dict, possibly from a ``torch.compile``'d or DDP-wrapped network.
        reverse_spatial_axes: set for a checkpoint trained on (z, y, x) arrays (nnU-Net's default
            SimpleITK reader) when ``model`` works on (x, y, z) arrays, as the presets do.

    Raises:
        ValueError: naming the missing and unexpected keys and the shape mismatches, when the
            converted weights do not fit ``model`` exactly.
    """
    converted = convert_nnunet_state_dict(state_dict, reverse_spatial_axes)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    mismatched = [k for k in expected if k in converted and converted[k].shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        model.load_state_dict(converted, strict=True)
        return
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mismatched:
        shapes = [f"{k}: checkpoint {tuple(converted[k].shape)}, model {tuple(expected[k].shape)}" for k in mismatched]
        problems.append(f"shape mismatches [{'; '.join(shapes)}]")
    message = "nnU-Net weights do not fit the model: " + "; ".join(problems) + "."
    fixable = all(_reverse_spatial(converted[k]).shape == expected[k].shape for k in mismatched)
    if mismatched and fixable and not reverse_spatial_axes:
        message += (
            " Reversing the kernels' spatial axes would fix every shape mismatch: the checkpoint"
            " looks (z, y, x)-ordered; pass reverse_spatial_axes=True."
        )
    raise ValueError(message)
