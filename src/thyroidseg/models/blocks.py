"""The building blocks of `thyroidseg.models.unet.UNet`: `ConvBlock`, the up-sampling stage,
and the choices of normalisation, activation, up-sampling and padding they take.

A block is two 3x3 convolutions with normalisation and activation, residual by default
(He et al. 2016); an up-sampling stage doubles the resolution, concatenates the encoder's
(centre-cropped) skip and runs a block (Ronneberger et al. 2015). ``docs/model.md`` says why
each default was chosen.

Examples
--------
>>> import torch
>>> block = ConvBlock(1, 8, stride=2)
>>> block(torch.zeros(1, 1, 32, 32)).shape
torch.Size([1, 8, 16, 16])
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "GROUP_NORM_GROUPS",
    "NORMS",
    "Norm",
    "PADDINGS",
    "Padding",
    "UPSAMPLES",
    "ConvBlock",
    "Upsample",
]

Norm = Literal["batch", "instance", "group", "none"]
Activation = Literal["relu", "prelu"]
Upsample = Literal["transpose", "bilinear"]
Padding = Literal["same", "valid"]

NORMS: tuple[str, ...] = get_args(Norm)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
UPSAMPLES: tuple[str, ...] = get_args(Upsample)
PADDINGS: tuple[str, ...] = get_args(Padding)

GROUP_NORM_GROUPS = 8
"""Groups for ``norm="group"``; a layer whose width it does not divide uses ``gcd(8, width)``."""


def _make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(math.gcd(GROUP_NORM_GROUPS, channels), channels)
    return nn.Identity()


def _make_activation(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(channels)
    return nn.ReLU(inplace=True)


def _center_crop(x: Tensor, height: int, width: int) -> Tensor:
    """The central ``height x width`` window of ``x`` (offset rounded down when uneven)."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by normalisation and activation, optionally residual.

    ``conv(stride) -> norm -> act -> dropout -> conv -> norm -> (+ shortcut) -> act -> dropout``.
    With ``residual=True`` the shortcut is the input itself, or a 1x1 convolution + norm when the
    channel count or the stride changes (He et al. 2016, "basic block"); in ``"valid"`` mode it is
    centre-cropped to the trimmed output. A strided shortcut takes every ``stride``-th pixel and
    then applies a stride-1 1x1 convolution, which computes the same as a strided 1x1
    convolution: with PyTorch 2.13 on CPU, the channels-last backward pass of a stride-2 1x1
    convolution with fewer than 16 input channels corrupts the heap and kills the process.

    Parameters
    ----------
    in_channels, out_channels
        Channels in and out.
    stride
        Stride of the first convolution: 2 halves the resolution (down-sampling folded into the
        block, as in nnU-Net), 1 keeps it.
    norm
        ``"batch"``, ``"instance"`` (affine), ``"group"`` (`GROUP_NORM_GROUPS` groups) or
        ``"none"``.
    activation
        ``"relu"`` or ``"prelu"`` (one learned negative slope per channel, initialised at
        0.25, as MONAI's ``UNet``); each activation layer has its own parameters.
    dropout
        Probability of zeroing whole channels (`torch.nn.Dropout2d`) after each
        activation; 0 adds no layer.
    residual
        Add the shortcut described above.
    padding
        ``"same"`` pads each convolution by 1 pixel; ``"valid"`` pads nothing, so each
        convolution trims one pixel on every side.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        norm: Norm = "batch",
        activation: Activation = "relu",
        dropout: float = 0.0,
        residual: bool = True,
        padding: Padding = "same",
    ) -> None:
        super().__init__()
        pad = 1 if padding == "same" else 0
        bias = norm == "none"  # a bias right before a normalisation is redundant
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, pad, bias=bias)
        self.norm1 = _make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, pad, bias=bias)
        self.norm2 = _make_norm(norm, out_channels)
        self.act1 = _make_activation(activation, out_channels)
        self.act2 = _make_activation(activation, out_channels)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.residual = residual
        self.stride = stride
        self.shortcut: nn.Module = nn.Identity()
        if residual and (in_channels != out_channels or stride != 1):
            # Applied to the subsampled input (see forward), which equals a stride-s 1x1
            # convolution of the full input.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=bias),
                _make_norm(norm, out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.drop(self.act1(self.norm1(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        if self.residual:
            # Subsample, then a 1x1 convolution, rather than a stride-2 1x1 convolution: the
            # latter's channels-last backward crashes PyTorch 2.13 on CPU (heap corruption)
            # for fewer than 16 input channels, e.g. with base_channels=8.
            skip = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
            out = out + _center_crop(self.shortcut(skip), out.shape[-2], out.shape[-1])
        return self.drop(self.act2(out))


class _UpBlock(nn.Module):
    """Double the resolution, concatenate the (centre-cropped) skip, then a `ConvBlock`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        upsample: Upsample,
        norm: Norm,
        activation: Activation,
        dropout: float,
        residual: bool,
        padding: Padding,
    ) -> None:
        super().__init__()
        if upsample == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 1),
            )
        self.block = ConvBlock(
            2 * out_channels,
            out_channels,
            norm=norm,
            activation=activation,
            dropout=dropout,
            residual=residual,
            padding=padding,
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        skip = _center_crop(skip, x.shape[-2], x.shape[-1])
        return self.block(torch.cat([skip, x], dim=1))
