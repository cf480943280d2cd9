"""The paper's two networks as :class:`~cascade.networks.ResEncUNet` presets, for bundles' ``_target_``.

The paper (and nnU-Net, reading images with SimpleITK) gives kernel sizes and strides in (z, y, x)
order; this project keeps nibabel/MONAI array order (x, y, z). The tables below are the paper's
values in (z, y, x) order, reversed to (x, y, z) when a network is built: the paper's kernel
(1, 3, 3) becomes (3, 3, 1) and its stride (1, 2, 2) becomes (2, 2, 1).

Shrinking a preset (quick configs, smoke tests) needs no code: any constructor argument can be
overridden, and the number of stages is ``len(features_per_stage)``. With fewer stages than the
preset, the preset's per-stage kernel sizes, strides and block counts are cut to the first
``len(features_per_stage)`` stages (the highest-resolution ones) and the decoder conv counts to one
fewer, unless given as well; more stages than the preset need all four given. A bundle's quick
config may, for example, use::

    "network_def": {"_target_": "cascade.networks.localizer_resenc_unet",
                    "features_per_stage": [4, 8, 8, 8], "n_blocks_per_stage": 1}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cascade.networks.resenc_unet import ResEncUNet

__all__ = ["localizer_resenc_unet", "segmenter_resenc_unet"]

_ISO = (3, 3, 3)
_INPLANE = (1, 3, 3)  # (z, y, x): no convolution across the thick slices

LOCALIZER_ZYX = {
    "kernel_sizes": (_INPLANE,) + (_ISO,) * 5,
    "strides": ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)),
    "n_blocks_per_stage": (1, 3, 4, 6, 6, 6),
    "n_conv_per_stage_decoder": (1,) * 5,
}
SEGMENTER_ZYX = {
    "kernel_sizes": (_INPLANE, _INPLANE) + (_ISO,) * 5,
    "strides": ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)),
    "n_blocks_per_stage": (1, 3, 4, 6, 6, 6, 6),
    "n_conv_per_stage_decoder": (1,) * 6,
}


def _build(
    preset_zyx: dict[str, tuple],
    in_channels: int,
    out_channels: int,
    features_per_stage: Sequence[int],
    dropout: float,
    deep_supervision: bool,
    overrides: dict[str, Any],
) -> ResEncUNet:
    """Fill in the preset's per-stage arguments, in (x, y, z) order, that ``overrides`` lacks."""
    n_stages = len(features_per_stage)
    n_preset = len(preset_zyx["n_blocks_per_stage"])
    defaults = {
        "kernel_sizes": tuple(k[::-1] for k in preset_zyx["kernel_sizes"][:n_stages]),
        "strides": tuple(s[::-1] for s in preset_zyx["strides"][:n_stages]),
        "n_blocks_per_stage": preset_zyx["n_blocks_per_stage"][:n_stages],
        "n_conv_per_stage_decoder": preset_zyx["n_conv_per_stage_decoder"][: n_stages - 1],
    }
    not_given = sorted(set(defaults) - set(overrides))
    if n_stages > n_preset and not_given:
        raise ValueError(
            f"features_per_stage has {n_stages} stages, more than the preset's {n_preset}: "
            f"also give {not_given}."
        )
    return ResEncUNet(
        in_channels=in_channels,
        out_channels=out_channels,
        features_per_stage=features_per_stage,
        dropout=dropout,
        deep_supervision=deep_supervision,
        **{**defaults, **overrides},
    )


def localizer_resenc_unet(
    in_channels: int = 1,
    out_channels: int = 2,
    features_per_stage: Sequence[int] = (32, 32, 64, 96, 96, 96),
    dropout: float = 0.5,
    deep_supervision: bool = False,
    **overrides: Any,
) -> ResEncUNet:
    """Stage 1 of the cascade: the slim, dropout-regularised localizer (11.3M parameters).

    6 stages; kernels (z, y, x) (1, 3, 3) then (3, 3, 3) x5, i.e. (x, y, z) (3, 3, 1) then
    (3, 3, 3) x5; strides (z, y, x) (1,1,1), (1,2,2), (2,2,2), (2,2,2), (1,2,2), (1,2,2), i.e.
    (x, y, z) (1,1,1), (2,2,1), (2,2,2), (2,2,2), (2,2,1), (2,2,1); 1, 3, 4, 6, 6, 6 residual blocks;
    1 decoder conv per stage; ``Dropout3d(0.5)``. Spatial sizes must be divisible by (32, 32, 4)
    in (x, y, z); the paper's patch is (x, y, z) 224 x 256 x 28.

    Args:
        in_channels: input channels C (the LGE image).
        out_channels: classes K (background, atria).
        features_per_stage: channels per stage; fewer entries give fewer stages (module docstring).
        dropout: ``Dropout3d`` probability (see :class:`ResEncUNet`).
        deep_supervision: whether ``forward`` returns the list of logits, full resolution first.
        **overrides: any other :class:`ResEncUNet` argument (``kernel_sizes``, ``strides``,
            ``n_blocks_per_stage``, ``n_conv_per_stage_decoder``), in (x, y, z) order.

    Returns:
        The network; input (B, C, X, Y, Z), output (B, K, X, Y, Z) or a list of logits.

    Raises:
        ValueError: for inconsistent arguments (see :class:`ResEncUNet`), or more stages than the
            preset without all per-stage arguments.
    """
    return _build(LOCALIZER_ZYX, in_channels, out_channels, features_per_stage, dropout, deep_supervision, overrides)


def segmenter_resenc_unet(
    in_channels: int = 1,
    out_channels: int = 4,
    features_per_stage: Sequence[int] = (32, 64, 128, 256, 320, 320, 320),
    dropout: float = 0.0,
    deep_supervision: bool = False,
    **overrides: Any,
) -> ResEncUNet:
    """Stage 2 of the cascade: the full-size segmenter of wall, right and left atrium (140M parameters).

    7 stages; kernels (z, y, x) (1, 3, 3), (1, 3, 3) then (3, 3, 3) x5, i.e. (x, y, z) (3, 3, 1),
    (3, 3, 1) then (3, 3, 3) x5; strides (z, y, x) (1,1,1), (1,2,2), (1,2,2), (2,2,2), (2,2,2),
    (1,2,2), (1,2,2), i.e. (x, y, z) (1,1,1), (2,2,1), (2,2,1), (2,2,2), (2,2,2), (2,2,1), (2,2,1);
    1, 3, 4, 6, 6, 6, 6 residual blocks; 1 decoder conv per stage; no dropout. Spatial sizes must be
    divisible by (64, 64, 4) in (x, y, z); the paper's patch is (x, y, z) 256 x 256 x 20.

    Args:
        in_channels: input channels C (the LGE image; the stage-1 mask is not an input channel).
        out_channels: classes K (background, wall, right atrium, left atrium).
        features_per_stage: channels per stage; fewer entries give fewer stages (module docstring).
        dropout: ``Dropout3d`` probability (see :class:`ResEncUNet`).
        deep_supervision: whether ``forward`` returns the list of logits, full resolution first.
        **overrides: any other :class:`ResEncUNet` argument (``kernel_sizes``, ``strides``,
            ``n_blocks_per_stage``, ``n_conv_per_stage_decoder``), in (x, y, z) order.

    Returns:
        The network; input (B, C, X, Y, Z), output (B, K, X, Y, Z) or a list of logits.

    Raises:
        ValueError: for inconsistent arguments (see :class:`ResEncUNet`), or more stages than the
            preset without all per-stage arguments.
    """
    return _build(SEGMENTER_ZYX, in_channels, out_channels, features_per_stage, dropout, deep_supervision, overrides)
