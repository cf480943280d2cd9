"""nnU-Net's residual-encoder U-Net as a plain PyTorch module: encoder, decoder, network.

The encoder knows nothing about decoding; the decoder builds its mirror image from the channels,
strides and kernel sizes the encoder records. Output-equal to
``dynamic_network_architectures.architectures.unet.ResidualEncoderUNet`` (version 0.4.4) built with
``Conv3d``, ``conv_bias=True``, ``InstanceNorm3d(eps=1e-5, affine=True)``, ``LeakyReLU(0.01)``,
``BasicBlockD`` blocks and, when ``dropout > 0``, ``Dropout3d(p=dropout)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from cascade.networks.blocks import ConvNormAct, ResidualBlock, as_triple, init_weights

__all__ = ["ResidualEncoder", "UNetDecoder", "ResEncUNet"]


def _per_stage(value: int | Sequence[int], n_stages: int, name: str) -> tuple[int, ...]:
    """Broadcast an int to ``n_stages`` entries or check a sequence's length; all must be >= 1."""
    values = (value,) * n_stages if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != n_stages:
        raise ValueError(f"{name} needs {n_stages} entries (one per stage), got {value!r}.")
    if min(values) < 1:
        raise ValueError(f"{name} entries must be >= 1, got {value!r}.")
    return values


def _per_stage_triples(
    value: int | Sequence[int | Sequence[int]], n_stages: int, name: str
) -> tuple[tuple[int, int, int], ...]:
    """Per-stage, per-axis sizes from an int (every stage and axis) or one int/triple per stage."""
    if isinstance(value, int):
        return (as_triple(value, name),) * n_stages
    if len(value) != n_stages:
        raise ValueError(f"{name} needs {n_stages} entries (one per stage), got {value!r}.")
    return tuple(as_triple(v, f"{name}[{i}]") for i, v in enumerate(value))


class ResidualEncoder(nn.Module):
    """Stem and residual stages; returns the output of every stage (the skips).

    The stem is one :class:`~cascade.networks.blocks.ConvNormAct` with stage 0's kernel and
    ``features_per_stage[0]`` channels. Stage ``s`` is ``n_blocks_per_stage[s]`` residual blocks
    with ``kernel_sizes[s]``; its first block applies ``strides[s]``.

    Args:
        in_channels: input channels C.
        features_per_stage: output channels of each stage; its length is the number of stages.
        kernel_sizes: int, or one entry per stage (int or one size per spatial axis).
        strides: int, or one entry per stage (int or one stride per spatial axis).
        n_blocks_per_stage: int, or one block count per stage.
        dropout: ``Dropout3d`` probability in the stem and the first convolution of every block.

    Raises:
        ValueError: when a per-stage argument has the wrong length or a count is below 1.
    """

    def __init__(
        self,
        in_channels: int,
        features_per_stage: Sequence[int],
        kernel_sizes: int | Sequence[int | Sequence[int]],
        strides: int | Sequence[int | Sequence[int]],
        n_blocks_per_stage: int | Sequence[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n_stages = len(features_per_stage)
        self.output_channels = _per_stage(features_per_stage, n_stages, "features_per_stage")
        self.kernel_sizes = _per_stage_triples(kernel_sizes, n_stages, "kernel_sizes")
        self.strides = _per_stage_triples(strides, n_stages, "strides")
        n_blocks = _per_stage(n_blocks_per_stage, n_stages, "n_blocks_per_stage")
        self.dropout = dropout

        self.stem = ConvNormAct(in_channels, self.output_channels[0], self.kernel_sizes[0], dropout=dropout)
        stages = []
        channels = self.output_channels[0]
        for features, kernel, stride, blocks in zip(self.output_channels, self.kernel_sizes, self.strides, n_blocks):
            stage = [ResidualBlock(channels, features, kernel, stride, dropout)]
            stage += [ResidualBlock(features, features, kernel, 1, dropout) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            channels = features
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encode.

        Args:
            x: (B, C, X, Y, Z).

        Returns:
            One tensor per stage, highest resolution first: stage ``s`` gives
            (B, features_per_stage[s], X / px, Y / py, Z / pz) with p the product of strides[0..s].
        """
        x = self.stem(x)
        skips: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """Mirror of a :class:`ResidualEncoder`: upsample, concatenate the skip, convolve, segment.

    Decoder stage ``s`` (s = 0 next to the bottleneck) has a transposed convolution (kernel =
    stride = the encoder stride it undoes, with bias) from the channels below to the skip's
    channels, ``n_conv_per_stage[s]`` conv-norm-act units (the first takes the concatenation, twice
    the skip's channels; all use the skip stage's kernel and the encoder's dropout) and a 1x1x1
    segmentation head. Every stage has its head whether or not deep supervision is used, so the
    state dict does not depend on it; the encoder's deepest stage has none. The encoder is read,
    not stored.

    Args:
        encoder: the encoder whose ``output_channels``, ``strides``, ``kernel_sizes`` and
            ``dropout`` the decoder mirrors.
        out_channels: channels of every segmentation head (number of classes).
        n_conv_per_stage: int, or one count per decoder stage (``n_stages - 1`` entries, the stage
            next to the bottleneck first).

    Raises:
        ValueError: when the encoder has fewer than 2 stages or ``n_conv_per_stage`` has the wrong
            length or a count below 1.
    """

    def __init__(self, encoder: ResidualEncoder, out_channels: int, n_conv_per_stage: int | Sequence[int]) -> None:
        super().__init__()
        channels = encoder.output_channels
        n_stages = len(channels)
        if n_stages < 2:
            raise ValueError(f"A U-Net needs at least 2 encoder stages, got {n_stages}.")
        n_convs = _per_stage(n_conv_per_stage, n_stages - 1, "n_conv_per_stage_decoder")
        transpconvs, stages, seg_layers = [], [], []
        for s in range(1, n_stages):
            below, skip = channels[-s], channels[-(s + 1)]
            stride, kernel = encoder.strides[-s], encoder.kernel_sizes[-(s + 1)]
            transpconvs.append(nn.ConvTranspose3d(below, skip, stride, stride, bias=True))
            convs = [ConvNormAct(2 * skip, skip, kernel, dropout=encoder.dropout)]
            convs += [ConvNormAct(skip, skip, kernel, dropout=encoder.dropout) for _ in range(n_convs[s - 1] - 1)]
            stages.append(nn.Sequential(*convs))
            seg_layers.append(nn.Conv3d(skip, out_channels, 1, bias=True))
        self.transpconvs = nn.ModuleList(transpconvs)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: list[torch.Tensor], deep_supervision: bool = False) -> list[torch.Tensor]:
        """Decode.

        Args:
            skips: the encoder's outputs, highest resolution first (bottleneck last).
            deep_supervision: whether to return the logits of every decoder stage or only the last.

        Returns:
            Logits (B, out_channels, ...) at the resolution of ``skips[0]`` first, then (deep
            supervision only) at the resolutions of ``skips[1]``, ..., ``skips[-2]``.
        """
        x = skips[-1]
        logits: list[torch.Tensor] = []
        last = len(self.stages) - 1
        for s, (up, stage, head) in enumerate(zip(self.transpconvs, self.stages, self.seg_layers)):
            x = stage(torch.cat((up(x), skips[-(s + 2)]), dim=1))
            if deep_supervision or s == last:
                logits.insert(0, head(x))
        return logits


class ResEncUNet(nn.Module):
    """nnU-Net's residual-encoder U-Net (``ResidualEncoderUNet``) for 3D images.

    Our own implementation, because MONAI lacks nnU-Net's residual-encoder U-Net (MONAI's
    ``DynUNet`` has one block per resolution and a strided 1x1x1 convolution as the residual
    shortcut, not several ResNet-D blocks with an average-pooling shortcut). Weights of nnU-Net's
    network load with :func:`cascade.networks.load_nnunet_state_dict`, after which the outputs are
    equal. Weights are initialised as nnU-Net does: He-normal convolutions (a=0.01), zero biases,
    zero for the norm closing each residual block's main path
    (:func:`~cascade.networks.blocks.init_weights`).

    Axes are whatever the caller's arrays use: kernel sizes and strides are given per axis in the
    order of the input's spatial dimensions ((x, y, z) throughout this project).

    Args:
        in_channels: input channels C.
        out_channels: output channels (classes) K of the logits.
        features_per_stage: channels of each encoder stage; its length is the number of stages
            (at least 2).
        kernel_sizes: int, or one entry per stage (int or one size per spatial axis).
        strides: int, or one entry per stage (int or one stride per spatial axis); stage 0's is
            normally 1.
        n_blocks_per_stage: int, or one residual block count per encoder stage.
        n_conv_per_stage_decoder: int, or one conv count per decoder stage (``n_stages - 1``
            entries, the stage next to the bottleneck first).
        dropout: ``Dropout3d`` probability in the stem, the first convolution of every residual
            block and every decoder convolution (where nnU-Net puts its ``dropout_op``); 0 for none.
        deep_supervision: whether ``forward`` returns the logits of every decoder stage while the
            module is in training mode; in eval mode it always returns the full-resolution logits,
            as MONAI's ``DynUNet`` and ``MedNeXt`` do, so one network object serves a trainer and
            its sliding-window validator. A plain attribute, it can be switched after construction.

    Raises:
        ValueError: when a per-stage argument has the wrong length, a count is below 1, there are
            fewer than 2 stages or dropout is outside [0, 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features_per_stage: Sequence[int],
        kernel_sizes: int | Sequence[int | Sequence[int]],
        strides: int | Sequence[int | Sequence[int]],
        n_blocks_per_stage: int | Sequence[int],
        n_conv_per_stage_decoder: int | Sequence[int],
        dropout: float = 0.0,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.deep_supervision = deep_supervision
        self.encoder = ResidualEncoder(
            in_channels, features_per_stage, kernel_sizes, strides, n_blocks_per_stage, dropout
        )
        self.decoder = UNetDecoder(self.encoder, out_channels, n_conv_per_stage_decoder)
        # Each spatial size must be divisible by the product of the strides along its axis.
        self.size_divisors = [math.prod(axis) for axis in zip(*self.encoder.strides)]
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segment.

        Args:
            x: (B, in_channels, X, Y, Z), each spatial size divisible by the product of the strides
                along its axis (``size_divisors``).

        Returns:
            Without deep supervision or in eval mode, logits (B, out_channels, X, Y, Z). With it in
            training mode, a list of logits,
            full resolution first, then the output of each lower decoder stage down to the one
            next to the bottleneck (``n_stages - 1`` tensors), as MONAI's ``DeepSupervisionLoss``
            takes them.

        Raises:
            ValueError: when a spatial size is not divisible by its ``size_divisors`` entry.
        """
        if not torch.jit.is_tracing():  # a traced graph would freeze the check's outcome
            self._check_spatial_size(x)
        deep_supervision = self.deep_supervision and self.training
        logits = self.decoder(self.encoder(x), deep_supervision)
        if deep_supervision:
            return logits
        return logits[0]

    def _check_spatial_size(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the size when a spatial size is not a multiple of its divisor."""
        for axis, divisor in enumerate(self.size_divisors):
            if x.shape[axis + 2] % divisor != 0:
                raise ValueError(
                    f"Spatial size {list(x.shape[2:])} must be divisible by {self.size_divisors} "
                    "(the product of the strides along each axis)."
                )
