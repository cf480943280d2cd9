"""Building blocks of the residual-encoder U-Net: a conv-norm-act unit, a residual block, weight init.

The operators are nnU-Net's for 3D data: ``Conv3d`` (with bias), ``Dropout3d`` when a dropout
probability is given, ``InstanceNorm3d(eps=1e-5, affine=True)`` and ``LeakyReLU(0.01, inplace=True)``.
Submodule names (``conv``, ``norm``, ``conv1``, ``conv2``, ``skip``) follow nnU-Net's
``dynamic_network_architectures`` so that its checkpoints map onto these modules by a few renames
(see :mod:`cascade.networks.nnunet_weights`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["as_triple", "ConvNormAct", "ResidualBlock", "init_weights"]

NORM_EPS = 1e-5
NEGATIVE_SLOPE = 1e-2


def as_triple(value: int | Sequence[int], name: str = "value") -> tuple[int, int, int]:
    """Expand an int to the same value on the three spatial axes, or check a per-axis sequence.

    Args:
        value: an int, or a sequence of three ints, one per spatial axis.
        name: what ``value`` is, for the error message.

    Returns:
        The three per-axis values.

    Raises:
        ValueError: when ``value`` is a sequence whose length is not 3.
    """
    if isinstance(value, int):
        return (value, value, value)
    triple = tuple(int(v) for v in value)
    if len(triple) != 3:
        raise ValueError(f"{name} must be an int or 3 per-axis ints, got {value!r}.")
    return triple  # type: ignore[return-value]


class ConvNormAct(nn.Sequential):
    """Conv3d -> (Dropout3d) -> InstanceNorm3d -> (LeakyReLU), nnU-Net's ``ConvDropoutNormReLU``.

    The convolution pads ``(k - 1) // 2`` on each axis, so odd kernels keep the size and a stride
    ``s`` divides it by ``s`` (rounding up).

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: int or one size per spatial axis.
        stride: int or one stride per spatial axis.
        dropout: probability of ``Dropout3d`` after the convolution; 0 adds no dropout layer.
        act: whether to end with a LeakyReLU.
        bias: whether the convolution has a bias.

    Input (B, C_in, X, Y, Z), output (B, C_out, X / sx, Y / sy, Z / sz).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        dropout: float = 0.0,
        act: bool = True,
        bias: bool = True,
    ) -> None:
        kernel = as_triple(kernel_size, "kernel_size")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv3d(
            in_channels,
            out_channels,
            kernel,
            as_triple(stride, "stride"),
            padding=tuple((k - 1) // 2 for k in kernel),
            bias=bias,
        )
        if dropout > 0:
            layers["dropout"] = nn.Dropout3d(dropout)
        layers["norm"] = nn.InstanceNorm3d(out_channels, eps=NORM_EPS, affine=True)
        if act:
            layers["act"] = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        super().__init__(layers)


class ResidualBlock(nn.Module):
    """nnU-Net's ``BasicBlockD``: two convolutions with a ResNet-D shortcut.

    Main path: ``conv1`` (conv, strided when the block downsamples, dropout, norm, act) then
    ``conv2`` (conv, norm). Shortcut: identity, or when the shape changes, average pooling with
    kernel = stride (if strided) then a 1x1x1 convolution without bias and a norm (if the channels
    change). The sum goes through a LeakyReLU.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: int or one size per spatial axis, for both main-path convolutions.
        stride: int or one stride per spatial axis, applied by ``conv1`` and the shortcut.
        dropout: ``Dropout3d`` probability after ``conv1``'s convolution (never after ``conv2``).

    Input (B, C_in, X, Y, Z) with each spatial size divisible by its stride, output
    (B, C_out, X / sx, Y / sy, Z / sz).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        stride = as_triple(stride, "stride")
        self.conv1 = ConvNormAct(in_channels, out_channels, kernel_size, stride, dropout=dropout)
        self.conv2 = ConvNormAct(out_channels, out_channels, kernel_size, act=False)
        shortcut: list[nn.Module] = []
        if stride != (1, 1, 1):
            shortcut.append(nn.AvgPool3d(stride, stride))
        if in_channels != out_channels:
            shortcut.append(ConvNormAct(in_channels, out_channels, 1, act=False, bias=False))
        self.skip = nn.Sequential(*shortcut) if shortcut else nn.Identity()
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        out += self.skip(x)
        return self.act(out)


def init_weights(module: nn.Module, negative_slope: float = NEGATIVE_SLOPE) -> None:
    """Initialise one module as nnU-Net initialises its ResidualEncoderUNet; use with ``net.apply``.

    Convolution and transposed-convolution weights get ``kaiming_normal_(a=negative_slope)``
    (fan-in mode) and their biases zero (nnU-Net's ``InitWeights_He(1e-2)``). In each
    :class:`ResidualBlock` the norm closing the main path gets weight and bias zero, so that the
    block starts as ``act(shortcut(x))`` (nnU-Net's ``init_last_bn_before_add_to_0``). Other
    modules keep PyTorch's defaults (norm weight 1, bias 0).

    Args:
        module: any module; those of other types are left unchanged.
        negative_slope: the LeakyReLU slope the gain is computed for.
    """
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=negative_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, ResidualBlock):
        nn.init.zeros_(module.conv2.norm.weight)
        nn.init.zeros_(module.conv2.norm.bias)
