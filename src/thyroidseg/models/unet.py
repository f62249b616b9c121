"""A configurable 2-D U-Net that returns logits at the input's size.

The network follows Ronneberger, Fischer & Brox (2015), "U-Net: Convolutional Networks for
Biomedical Image Segmentation": an encoder of ``depth`` down-sampling stages whose width doubles
at each stage, a mirrored decoder, and skip connections that concatenate encoder features into
the decoder at the same resolution. The defaults are chosen for speed on a CPU (see
``docs/model.md`` for the measurements): 16 base channels, down-sampling by a stride-2 first
convolution in each stage (as nnU-Net does) instead of max-pooling, and residual blocks.

Two padding modes:

``"same"`` (default)
    3x3 convolutions are zero-padded and the input is zero-padded at the bottom and right to the
    next multiple of ``2 ** depth``; the logits are cropped back, so any ``H x W`` gives
    ``H x W`` logits.
``"valid"``
    The original unpadded U-Net: every 3x3 convolution trims one pixel on each side and the skip
    connections are centre-cropped, so the logits are smaller than the input (572 -> 388 for the
    paper's depth 4). `valid_output_size` says which sizes are allowed and what comes out.

The blocks it is built of (`ConvBlock`, the up-sampling stage) and their choices
(`Norm`, `Activation`, `Upsample`, `Padding`) are `thyroidseg.models.blocks`', re-exported here.

Examples
--------
>>> import torch
>>> model = UNet(in_channels=1, num_classes=2, seed=0)
>>> model(torch.zeros(1, 1, 45, 61)).shape
torch.Size([1, 2, 45, 61])
>>> UNet(**model.config).config == model.config
True
>>> valid_output_size((572, 572), depth=4)
(388, 388)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thyroidseg._checks import check_int
from thyroidseg.models.auxiliary_heads import AuxiliaryHeads
from thyroidseg.models.blocks import (
    ACTIVATIONS,
    GROUP_NORM_GROUPS,
    NORMS,
    PADDINGS,
    UPSAMPLES,
    Activation,
    ConvBlock,
    Norm,
    Padding,
    Upsample,
    _make_activation,
    _make_norm,
    _UpBlock,
)

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "DOWNSAMPLES",
    "GROUP_NORM_GROUPS",
    "MAX_WEIGHTS",
    "NORMS",
    "PADDINGS",
    "UPSAMPLES",
    "ConvBlock",
    "Downsample",
    "Norm",
    "Padding",
    "UNet",
    "Upsample",
    "valid_output_size",
]

Downsample = Literal["strided", "maxpool"]
DOWNSAMPLES: tuple[str, ...] = get_args(Downsample)

MAX_WEIGHTS = 500_000_000
"""Most convolution weights a `UNet` may have (2 GB in float32): a guard against a
mistyped ``depth`` or ``base_channels`` that would fill the memory (the default has 2 M)."""


def _conv_weight_count(in_channels: int, base_channels: int, depth: int) -> int:
    """Weights of the 3x3 convolutions of a `UNet` (the bulk of its parameters)."""
    widths = [base_channels * 2**i for i in range(depth + 1)]
    count = 9 * (in_channels * widths[0] + widths[0] ** 2)
    for low, high in itertools.pairwise(widths):
        count += 9 * (low * high + high**2)  # encoder stage
        count += 9 * (2 * low * low + low**2) + 4 * high * low  # decoder stage + up-sampling
    return count


def _with_position(x: Tensor) -> Tensor:
    """``x`` with two more channels: each pixel's row and column centre, ``(2i + 1) / n - 1``."""
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    rows = (torch.arange(height, dtype=x.dtype, device=x.device) * 2 + 1) / height - 1
    columns = (torch.arange(width, dtype=x.dtype, device=x.device) * 2 + 1) / width - 1
    grid = torch.stack(torch.meshgrid(rows, columns, indexing="ij"))
    return torch.cat([x, grid.unsqueeze(0).expand(n, 2, height, width)], dim=1)


def _valid_size_1d(size: int, depth: int) -> int:
    """Output size along one axis of a ``"valid"`` U-Net (see `valid_output_size`)."""

    def fail(reason: str) -> ValueError:
        return ValueError(
            f"size {size} is not valid for a valid-mode U-Net of depth {depth}: {reason}"
        )

    n = size - 4  # the first block's two unpadded 3x3 convolutions
    for _ in range(depth):
        if n < 1:
            raise fail("too small")
        if n % 2:
            raise fail(f"an odd feature map ({n}) would reach a 2x2 max-pool")
        n = n // 2 - 4
    for _ in range(depth):  # skips are even, so centre-cropping them to 2 * n is exact
        if n < 1:
            raise fail("too small")
        n = 2 * n - 4
    if n < 1:
        raise fail("too small")
    return n


def valid_output_size(size: int | Sequence[int], *, depth: int = 4) -> tuple[int, ...]:
    """Output size of a ``padding="valid"`` `UNet` for an input of ``size``.

    Each block's two unpadded 3x3 convolutions trim 4 pixels, each 2x2 max-pool halves (so the
    size must be even there) and each 2x up-sampling doubles. For depth 4 (the paper) the input
    must be ``16 k + 12`` with ``k >= 11`` (188, 204, ..., 572, ...) and the output is
    ``input - 184``; in general the output is ``input - 4 * (3 * 2**depth - 2)``.

    Parameters
    ----------
    size
        Input height, or ``(height, width)``.
    depth
        Number of down-sampling stages (as in `UNet`).

    Returns
    -------
    tuple of int
        The output size per axis, in the same order as ``size``.

    Raises
    ------
    ValueError
        The size cannot go through the network without rounding, or is too small; the message
        says why.

    Examples
    --------
    >>> valid_output_size(572)
    (388,)
    >>> valid_output_size((188, 204), depth=4)
    (4, 20)
    >>> valid_output_size(200)
    Traceback (most recent call last):
    ...
    ValueError: size 200 is not valid for a valid-mode U-Net of depth 4: an odd feature map (43) would reach a 2x2 max-pool
    """  # noqa: E501
    sizes = (size,) if isinstance(size, int) else tuple(size)
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    return tuple(_valid_size_1d(int(n), depth) for n in sizes)


class UNet(nn.Module):
    """2-D U-Net returning per-class logits; same-size output by default.

    Encoder stage ``i`` (``0..depth``) has ``base_channels * 2**i`` channels; stage 0 works at
    full resolution and every later stage halves it. The decoder mirrors the encoder, doubling
    the resolution and concatenating the encoder's features at each stage; a final 1x1
    convolution gives ``num_classes`` logits (apply softmax yourself, or use a loss from
    `thyroidseg.training.losses`, which expect logits).

    Parameters
    ----------
    in_channels
        Image channels: 1 for grey-scale ultrasound, 3 for RGB.
    num_classes
        Output channels (2 for background / nodule, as the softmax + cross-entropy of the paper).
    base_channels
        Width of the first stage. Default 16: 6.4 GFLOPs per 256 x 256 image, against 24 for a
        plain base-32 U-Net and 96 for the paper's 64 (Ronneberger et al.); ``docs/model.md``
        has the speed measurements and a short accuracy check.
    depth
        Number of down-sampling stages. Default 4 (as the paper), so a 256 x 256 input reaches
        16 x 16 at the bottleneck.
    norm
        ``"batch"`` (default: the cheapest, and foldable into the preceding convolution in
        exported graphs), ``"instance"``, ``"group"`` (for batches of 1-2) or ``"none"`` (the
        2015 U-Net).
    activation
        ``"relu"`` (default, the paper) or ``"prelu"`` (a learned negative slope per channel,
        initialised at 0.25, as MONAI's ``UNet``).
    dropout
        Channel dropout probability after every activation. Default 0.
    downsample
        ``"strided"`` (default: the first 3x3 convolution of each stage has stride 2, as in
        nnU-Net; same FLOPs as pooling then convolving, one pass over the larger map less, and
        learnable) or ``"maxpool"`` (2x2 max-pool, the paper).
    upsample
        ``"transpose"`` (default: 2x2 stride-2 transposed convolution, the paper) or
        ``"bilinear"`` (bilinear interpolation followed by a 1x1 convolution).
    residual
        Use residual blocks (default ``True``: identity or 1x1 shortcuts around each block, He
        et al. 2016, for 6% more FLOPs). ``False`` gives the paper's plain double convolution.
    padding
        ``"same"`` (default): output size equals input size for any input size. ``"valid"``: the
        original unpadded U-Net, whose output is smaller (see `valid_output_size`); it
        needs ``downsample="maxpool"``.
    stem_stride
        Stride of stage 0. ``1`` (default) runs stage 0 at full resolution, as the paper does.
        ``2`` runs it at half resolution, as MONAI's ``UNet`` does, and adds a 2x2 stride-2
        transposed convolution (+ norm + ReLU) before the 1x1 head, so the logits are still
        full-size. No convolution then runs at full resolution except that upsampling, which
        makes a training step about 3x cheaper (``docs/model.md``). Needs ``padding="same"``
        and ``downsample="strided"``. The input is padded to a multiple of
        ``stem_stride * 2**depth``.
    deep_supervision
        Decoder levels below the last that get a 1x1 head of their own (``0``, the default:
        none; at most ``depth - 1``). In training mode `forward` then returns ``(N, 1 + S,
        num_classes, H, W)``: the logits, then those levels' logits (finest first) upsampled
        bilinearly to ``H x W`` (`thyroidseg.models.auxiliary_heads.AuxiliaryHeads`), for
        `thyroidseg.training.deep_supervision.DeepSupervisionLoss`. In eval mode, and when
        scripted or traced, it returns the logits alone and the heads do nothing. Needs
        ``padding="same"``.
    position_channels
        Append two input channels, each pixel's row and column centre scaled to ``(-1, 1)``
        over the input, $(2i + 1)/H - 1$ and $(2j + 1)/W - 1$ (CoordConv, Liu et al. 2018),
        so the network knows where in the frame a structure lies (default ``False``).
        ``in_channels`` stays the image's channels.
    seed
        If given, weights are initialised from a private generator with this seed, so the same
        seed gives the same network without touching PyTorch's global random state. ``None``
        (default) draws from the global generator (``torch.manual_seed`` applies).

    Notes
    -----
    Initialisation: He (Kaiming) normal, ``fan_out`` mode, for every convolution; zero biases;
    normalisation weights 1 and biases 0.

    The network is fastest on a CPU in ``channels_last`` memory format under bfloat16 autocast
    (``model.to(memory_format=torch.channels_last)`` and ``torch.autocast("cpu",
    dtype=torch.bfloat16)``); ``docs/model.md`` has the measured speed-ups.
    """

    __jit_ignored_attributes__ = ["config"]  # TorchScript has no type for a JSON-like dict
    config: dict[str, Any]
    """The constructor's arguments (JSON-ready): ``UNet(**model.config)`` rebuilds the network."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        *,
        base_channels: int = 16,
        depth: int = 4,
        norm: Norm = "batch",
        activation: Activation = "relu",
        dropout: float = 0.0,
        downsample: Downsample = "strided",
        upsample: Upsample = "transpose",
        residual: bool = True,
        padding: Padding = "same",
        stem_stride: Literal[1, 2] = 1,
        deep_supervision: int = 0,
        position_channels: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("base_channels", base_channels),
            ("depth", depth),
        ):
            check_int(name, value, 1)
        for option, choice, allowed in (
            ("norm", norm, NORMS),
            ("activation", activation, ACTIVATIONS),
            ("downsample", downsample, DOWNSAMPLES),
            ("upsample", upsample, UPSAMPLES),
            ("padding", padding, PADDINGS),
        ):
            if choice not in allowed:
                raise ValueError(f"{option} must be one of {allowed}, got {choice!r}")
        if padding == "valid" and downsample != "maxpool":
            raise ValueError(
                'padding="valid" needs downsample="maxpool" (the original U-Net): an unpadded '
                "stride-2 convolution cannot keep the skip connections aligned"
            )
        if stem_stride not in (1, 2) or isinstance(stem_stride, bool):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        if stem_stride == 2 and (padding != "same" or downsample != "strided"):
            raise ValueError('stem_stride=2 needs padding="same" and downsample="strided"')
        check_int("deep_supervision", deep_supervision, 0, hint="decoder levels with a head")
        if deep_supervision > depth - 1 or (deep_supervision and padding != "same"):
            raise ValueError(
                f"deep_supervision must be at most depth - 1 = {depth - 1} (the decoder levels "
                f'below the last) and needs padding="same", got {deep_supervision} with '
                f"padding={padding!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        weights = _conv_weight_count(in_channels, base_channels, depth)
        if weights > MAX_WEIGHTS:
            raise ValueError(
                f"base_channels={base_channels} with depth={depth} needs about {weights:,} "
                f"weights ({4 * weights / 2**30:.3g} GiB in float32), over the {MAX_WEIGHTS:,} "
                "this class builds; use a smaller depth or width"
            )
        self.config = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "base_channels": base_channels,
            "depth": depth,
            "norm": norm,
            "activation": activation,
            "dropout": float(dropout),
            "downsample": downsample,
            "upsample": upsample,
            "residual": bool(residual),
            "padding": padding,
            "stem_stride": stem_stride,
            "deep_supervision": int(deep_supervision),
            "position_channels": bool(position_channels),
            "seed": seed,
        }
        self.depth = depth
        self.deep_supervision = int(deep_supervision)
        self.position_channels = bool(position_channels)
        self.size_multiple = stem_stride * 2**depth
        self.same_padding = padding == "same"
        self.use_maxpool = downsample == "maxpool"
        common: dict[str, Any] = {
            "norm": norm,
            "activation": activation,
            "dropout": dropout,
            "residual": residual,
            "padding": padding,
        }
        # With a seed, PyTorch's default initialisation (overwritten below) must not advance the
        # global generator either, hence the forked RNG state.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            widths = [base_channels * 2**i for i in range(depth + 1)]
            stride = 1 if self.use_maxpool else 2
            self.encoder = nn.ModuleList(
                [
                    ConvBlock(
                        in_channels + 2 * position_channels, widths[0], stride=stem_stride, **common
                    )
                ]
            )
            self.encoder.extend(
                ConvBlock(widths[i - 1], widths[i], stride=stride, **common)
                for i in range(1, depth + 1)
            )
            self.decoder = nn.ModuleList(
                _UpBlock(widths[i + 1], widths[i], upsample=upsample, **common)
                for i in reversed(range(depth))
            )
            # stem_stride=2: back to full resolution before the head (identity otherwise).
            self.stem_up: nn.Module = (
                nn.Sequential(
                    nn.ConvTranspose2d(widths[0], widths[0], 2, stride=2, bias=norm == "none"),
                    _make_norm(norm, widths[0]),
                    _make_activation(activation, widths[0]),
                )
                if stem_stride == 2
                else nn.Identity()
            )
            self.head = nn.Conv2d(widths[0], num_classes, 1)
            # Registered after the main path, so a seed initialises that path as without them.
            self.aux_heads = AuxiliaryHeads(widths[1 : deep_supervision + 1], num_classes)
            self._init_weights(seed)

    def _init_weights(self, seed: int | None) -> None:
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(
                    module.weight, mode="fan_out", nonlinearity="relu", generator=generator
                )
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.PReLU):
                nn.init.constant_(module.weight, 0.25)
            elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.InstanceNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Logit size for an ``height x width`` input (the input size in ``"same"`` mode)."""
        if self.same_padding:
            return height, width
        out = valid_output_size((height, width), depth=self.depth)
        return out[0], out[1]

    @torch.jit.unused
    def _check_input(self, x: Tensor) -> None:
        """Refuse what would give meaningless logits or an obscure error deep in the network."""
        if not isinstance(x, Tensor):
            raise TypeError(
                f"expected a torch.Tensor (N, C, H, W), got {type(x).__name__}; for a numpy "
                "array use torch.from_numpy(array)"
            )
        if x.dim() != 4 or 0 in x.shape:
            raise ValueError(f"expected a non-empty (N, C, H, W) tensor, got shape {list(x.shape)}")
        channels = self.config["in_channels"]
        if x.shape[1] != channels:
            raise ValueError(
                f"expected {channels} input channel(s), got {x.shape[1]} (shape {list(x.shape)})"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"expected a floating-point image in [0, 1], got dtype {x.dtype}; for 8-bit "
                "frames use x.float() / 255"
            )
        weight = self.head.weight
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"input dtype {x.dtype} differs from the weights' {weight.dtype}; convert one "
                f"of them (e.g. x.to({weight.dtype}))"
            )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes, H', W')`` for images ``(N, in_channels, H, W)``.

        ``H' x W'`` is ``H x W`` in ``"same"`` mode and `valid_output_size` in ``"valid"``
        mode (a size it rejects raises ``ValueError``). With ``deep_supervision`` and in
        training mode (not scripted or traced): ``(N, 1 + S, num_classes, H, W)`` (see the
        class).
        """
        if not (torch.jit.is_scripting() or torch.jit.is_tracing()):
            self._check_input(x)
        height, width = x.shape[-2], x.shape[-1]
        if self.position_channels:
            x = _with_position(x)
        if self.same_padding:
            multiple = self.size_multiple
            x = F.pad(x, [0, (-width) % multiple, 0, (-height) % multiple])
        elif not (torch.jit.is_scripting() or torch.jit.is_tracing()):
            self.output_size(height, width)  # raises ValueError for sizes that would misalign
        padded = (x.shape[-2], x.shape[-1])
        skips: list[Tensor] = []
        for i, block in enumerate(self.encoder):
            if i > 0 and self.use_maxpool:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        levels: list[Tensor] = []  # the decoder's outputs, coarsest first
        for up in self.decoder:
            x = up(x, skips.pop())
            levels.append(x)
        logits = self.head(self.stem_up(x))
        if self.same_padding:
            logits = logits[..., :height, :width]
        if not (torch.jit.is_scripting() or torch.jit.is_tracing()):  # export: logits alone
            if self.training and self.deep_supervision > 0:
                # the levels below the last, finest first
                supervised = levels[-2 : -2 - self.deep_supervision : -1]
                return self.aux_heads.stack(logits, supervised, padded)
        return logits
