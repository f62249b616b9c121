"""Segmentation losses on logits: weighted cross-entropy (U-Net), soft Dice, Dice + CE, and
Dice + CE + the boundary loss of `thyroidseg.training.boundary_loss`.

Every loss is an `torch.nn.Module` called as ``loss(logits, target)`` with

- ``logits``: float tensor ``(N, C, H, W)``, the raw output of `thyroidseg.models.unet.UNet`
  (softmax is applied inside, in float32 even under bfloat16 autocast);
- ``target``: int64 tensor ``(N, H, W)`` of class indices in ``[0, C)``, where pixels equal to
  ``ignore_index`` (default ``-100``, as `torch.nn.CrossEntropyLoss`) count for nothing.

Any other target value or a shape mismatch raises ``ValueError``. Non-finite logits give a
non-finite loss (no check here, no extra device sync): the `Trainer` stops on it with
`thyroidseg.training.divergence.NonFiniteLossError`, naming the epoch and step.

`unet_weight_map` computes the per-pixel weights of Ronneberger et al. (2015) from a mask
with NumPy and OpenCV, so a dataset can precompute it once per image.

Examples
--------
>>> import torch
>>> logits = torch.zeros(1, 2, 4, 4)
>>> target = torch.zeros(1, 4, 4, dtype=torch.int64)
>>> target[0, 1:3, 1:3] = 1
>>> round(make_loss("ce")(logits, target).item(), 4)  # log(2): both classes at 0.5
0.6931
>>> round(make_loss("dice")(logits, target).item(), 4)  # 1 - 2*2/(8 + 4)
0.6667
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thyroidseg.training._loss_parts import _check_inputs, _cross_entropy
from thyroidseg.training.boundary_loss import BoundaryLoss

__all__ = [
    "LOSS_NAMES",
    "ClassWeights",
    "DiceCEBoundaryLoss",
    "DiceCELoss",
    "SoftDiceLoss",
    "WeightedCrossEntropyLoss",
    "make_loss",
    "unet_weight_map",
]

ClassWeights = Literal["balanced"] | Sequence[float] | None


def unet_weight_map(
    mask: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: ClassWeights = "balanced",
    num_classes: int = 2,
    ignore_index: int | None = None,
) -> np.ndarray:
    r"""Per-pixel loss weights of the U-Net paper (Ronneberger et al. 2015, eq. 2).

    $$
    w(x) = w_c(x) + w_0 \exp\left(-\frac{(d_1(x) + d_2(x))^2}{2\sigma^2}\right)
    \quad\text{for background pixels,}\qquad w(x) = w_c(x) \text{ for the others,}
    $$

    where objects are the 8-connected components of the foreground (``mask > 0``),
    $d_1$ is the Euclidean distance to the nearest object and $d_2$ the distance to
    the second-nearest one (OpenCV's exact ``distanceTransform``, one per component). The border
    term makes the thin background gaps between objects expensive to get wrong.

    With **exactly one object** (the usual thyroid frame) there is no second object; then
    $d_2 = d_1$, so the term is $w_0 \exp(-2 d_1^2 / \sigma^2)$: a band of about
    $\sigma$ pixels around the nodule's outline weighs up to $w_0$, which is what
    Zhou et al. (2022) use the weights for (edges of the nodule count more). With two or more
    objects the paper's definition applies unchanged, so a side of a nodule far from any other
    object gets almost no border weight. Without objects the border term is 0.

    Parameters
    ----------
    mask
        ``(H, W)`` integer array of class indices (``{0, 1}`` for nodule masks).
    w0, sigma
        Height and width (pixels) of the border term; the paper's 10 and 5. ``w0=0`` turns the
        term off.
    class_weights
        $w_c$. ``"balanced"``: $w_c = n / (k\, n_c)$ for each class ``c`` present in
        this mask, with ``n`` counted pixels, ``k`` classes present and $n_c$ pixels of
        class ``c`` (so the classes weigh the same in total; scikit-learn's "balanced"). A
        sequence gives one fixed weight per class. ``None`` gives 1 everywhere.
    num_classes
        Number of classes; mask values must lie in ``[0, num_classes)``.
    ignore_index
        Mask value to leave out: weight 0, not counted in the class frequencies and not an object.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the mask's shape.

    Examples
    --------
    >>> mask = np.zeros((5, 8), dtype=np.uint8)
    >>> mask[:, :2] = 1  # one object: 10 of 40 pixels
    >>> w = unet_weight_map(mask, w0=10, sigma=5)
    >>> float(w[0, 0])  # foreground: n / (2 n_1) = 40 / 20
    2.0
    >>> round(float(w[0, 2]), 3)  # background, d1 = d2 = 1: 40/60 + 10 exp(-4 / 50)
    9.898
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.bool_:
        raise ValueError(f"mask must hold integer class indices, got dtype {mask.dtype}")
    if not (np.isfinite(w0) and w0 >= 0 and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"need w0 >= 0 and sigma > 0, got w0={w0}, sigma={sigma}")
    mask = mask.astype(np.int64)
    counted = np.ones(mask.shape, dtype=bool) if ignore_index is None else mask != ignore_index
    labels = mask[counted]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"mask values must lie in [0, {num_classes}) (or be ignore_index={ignore_index}),"
            f" got min {labels.min()}, max {labels.max()}"
        )

    if class_weights is None:
        per_class = np.ones(num_classes)
    elif isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f'class_weights must be "balanced", a sequence or None, got {class_weights!r}'
            )
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        present = counts > 0
        per_class = np.zeros(num_classes)
        per_class[present] = labels.size / (present.sum() * counts[present])
    else:
        per_class = np.asarray(class_weights, dtype=np.float64)
        if per_class.shape != (num_classes,) or not np.all(
            np.isfinite(per_class) & (per_class >= 0)
        ):
            raise ValueError(
                f"class_weights must be {num_classes} finite non-negative numbers,"
                f" got {class_weights!r}"
            )
    weights = np.where(counted, per_class[np.where(counted, mask, 0)], 0.0)

    if w0 > 0:
        foreground = ((mask > 0) & counted).astype(np.uint8)
        n_objects, components = cv2.connectedComponents(foreground, connectivity=8)
        if n_objects > 1:  # label 0 is the background
            d1 = np.full(mask.shape, np.inf, dtype=np.float32)
            d2 = np.full(mask.shape, np.inf, dtype=np.float32)
            for label in range(1, n_objects):
                outside = (components != label).astype(np.uint8)  # zero on the object
                distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                d2 = np.minimum(d2, np.maximum(d1, distance))
                d1 = np.minimum(d1, distance)
            if n_objects == 2:  # a single object: d2 := d1 (see above)
                d2 = d1
            border = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
            weights = weights + np.where(counted & (mask == 0), border, 0.0)
    return weights.astype(np.float32)


class WeightedCrossEntropyLoss(nn.Module):
    r"""Cross-entropy with a per-pixel weight map, the U-Net paper's training loss.

    $$
    L = \frac{\sum_x w(x)\, \bigl(-\log p_{t(x)}(x)\bigr)}{\sum_x w(x)}
    $$

    over the pixels ``x`` whose target ``t(x)`` is not ``ignore_index``, with $p$ the
    softmax of the logits and $w$ from `unet_weight_map` (0 when every weight is 0).
    Normalising by $\sum w$ keeps the loss on the scale of plain cross-entropy, as
    `torch.nn.CrossEntropyLoss` does with class weights. With ``w0=0`` and
    ``class_weights=None`` it is plain cross-entropy (no weight map is computed); unlike
    PyTorch's, it returns 0 rather than NaN when every pixel is ignored.

    Parameters
    ----------
    w0, sigma, class_weights
        Passed to `unet_weight_map` when the weight map is computed here; defaults are the
        paper's (10, 5 px, balanced classes).
    ignore_index
        Target value that contributes nothing (default -100, PyTorch's).

    Notes
    -----
    ``forward(logits, target, weight_map=None)``: ``weight_map`` is an optional float tensor
    ``(N, H, W)`` of precomputed weights (e.g. by the dataset, which is cheaper than computing
    them here on the CPU for every batch); it must be finite and non-negative.
    """

    def __init__(
        self,
        *,
        w0: float = 10.0,
        sigma: float = 5.0,
        class_weights: ClassWeights = "balanced",
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.w0 = w0
        self.sigma = sigma
        self.class_weights = class_weights
        self.ignore_index = ignore_index
        self.uniform = w0 == 0 and class_weights is None

    def extra_repr(self) -> str:
        """Every setting, so two differently set-up losses never read alike (resume checks)."""
        return (
            f"w0={self.w0!r}, sigma={self.sigma!r}, class_weights={self.class_weights!r}, "
            f"ignore_index={self.ignore_index!r}"
        )

    def weight_map(self, target: Tensor, num_classes: int) -> Tensor:
        """`unet_weight_map` of every mask in ``target`` (``(N, H, W)`` float32)."""
        maps = [
            unet_weight_map(
                mask,
                w0=self.w0,
                sigma=self.sigma,
                class_weights=self.class_weights,
                num_classes=num_classes,
                ignore_index=self.ignore_index,
            )
            for mask in target.detach().cpu().numpy()
        ]
        return torch.from_numpy(np.stack(maps)).to(target.device)

    def forward(self, logits: Tensor, target: Tensor, weight_map: Tensor | None = None) -> Tensor:
        valid = _check_inputs(logits, target, self.ignore_index)
        if weight_map is None:
            if self.uniform:
                return _cross_entropy(logits, target, valid, self.ignore_index)
            weight_map = self.weight_map(target, logits.shape[1])
        elif weight_map.shape != target.shape:
            raise ValueError(
                f"weight_map shape {tuple(weight_map.shape)} does not match"
                f" target {tuple(target.shape)}"
            )
        elif not (torch.isfinite(weight_map).all() and (weight_map >= 0).all()):
            raise ValueError("weight_map must be finite and non-negative")
        return _cross_entropy(logits, target, weight_map * valid, self.ignore_index)


class SoftDiceLoss(nn.Module):
    r"""Soft Dice loss on softmax probabilities (as in nnU-Net).

    $$
    L = 1 - \frac{1}{|K|} \sum_{c \in K}
        \frac{2 \sum_x p_c(x)\, g_c(x) + s}{\sum_x p_c(x) + \sum_x g_c(x) + s}
    $$

    with $p$ the softmax, $g$ the one-hot target, sums over counted pixels (target not
    ``ignore_index``) and $K$ the classes scored. ``batch_dice=True`` sums over the whole
    batch before dividing (one Dice per class); ``False`` computes one Dice per image and class
    and averages them.

    Parameters
    ----------
    include_background
        Score class 0 too. Default ``False`` (nnU-Net): the background is easy and would dilute
        the nodule's Dice.
    batch_dice
        Default ``True`` (nnU-Net's 2-D setting): a frame whose nodule is tiny or absent then
        does not produce a Dice of 0 or 1 on its own.
    smooth
        $s$, added to numerator and denominator (default ``1e-5``, nnU-Net's). It keeps the
        loss finite, with finite gradients, when a class is absent from target and prediction.
    ignore_index
        Target value that contributes nothing (default -100).
    """

    def __init__(
        self,
        *,
        include_background: bool = False,
        batch_dice: bool = True,
        smooth: float = 1e-5,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        if not smooth > 0:
            raise ValueError(f"smooth must be positive, got {smooth}")
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.ignore_index = ignore_index

    def extra_repr(self) -> str:
        """Every setting, so two differently set-up losses never read alike (resume checks)."""
        return (
            f"include_background={self.include_background!r}, batch_dice={self.batch_dice!r}, "
            f"smooth={self.smooth!r}, ignore_index={self.ignore_index!r}"
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self._loss(logits, target, _check_inputs(logits, target, self.ignore_index))

    def _loss(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        """The loss for inputs already validated; ``valid`` marks the pixels that count."""
        num_classes = logits.shape[1]
        probs = logits.float().softmax(dim=1) * valid.unsqueeze(1)
        onehot = F.one_hot(target.clamp(0, num_classes - 1) * valid, num_classes)
        onehot = onehot.permute(0, 3, 1, 2).to(probs) * valid.unsqueeze(1)
        if not self.include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        dims = (0, 2, 3) if self.batch_dice else (2, 3)
        intersection = (probs * onehot).sum(dims)
        total = probs.sum(dims) + onehot.sum(dims)
        dice = (2 * intersection + self.smooth) / (total + self.smooth)
        return 1 - dice.mean()


class DiceCELoss(nn.Module):
    r"""Soft Dice + cross-entropy, nnU-Net's default loss.

    $L = \lambda_{dice} L_{dice} + \lambda_{ce} L_{ce}$ with `SoftDiceLoss` (no
    background, batch Dice) and plain cross-entropy, both weighted 1 by default.

    Parameters
    ----------
    dice_weight, ce_weight
        $\lambda_{dice}$, $\lambda_{ce}$.
    ignore_index
        Target value that contributes nothing to either term (default -100).
    **dice_kwargs
        ``include_background``, ``batch_dice``, ``smooth`` for `SoftDiceLoss`.
    """

    def __init__(
        self,
        *,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        ignore_index: int = -100,
        **dice_kwargs: float | bool,
    ) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.ignore_index = ignore_index
        self.dice = SoftDiceLoss(ignore_index=ignore_index, **dice_kwargs)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        """The weights and ``ignore_index``; the Dice part's settings show in its own line."""
        return (
            f"dice_weight={self.dice_weight!r}, ce_weight={self.ce_weight!r}, "
            f"ignore_index={self.ignore_index!r}"
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self._loss(logits, target, _check_inputs(logits, target, self.ignore_index))

    def _loss(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        """The loss for inputs already validated; ``valid`` marks the pixels that count."""
        dice = self.dice._loss(logits, target, valid)
        ce = _cross_entropy(logits, target, valid, self.ignore_index)
        return self.dice_weight * dice + self.ce_weight * ce


class DiceCEBoundaryLoss(DiceCELoss):
    r"""Soft Dice + cross-entropy + Kervadec et al.'s boundary loss.

    $L = \lambda_{dice} L_{dice} + \lambda_{ce} L_{ce} + \lambda_B L_B$: `DiceCELoss` plus
    `thyroidseg.training.boundary_loss.BoundaryLoss`
    ($L_B = \frac{1}{|\Omega|}\sum_x s(x)\,\phi(x)$, $s$ the foreground probability,
    $\phi$ the signed distance to the target's outline over the image diagonal). A candidate
    under cross-validation, not the default (docs/model.md).

    Parameters
    ----------
    boundary_weight
        $\lambda_B$ (default 1; docs/model.md gives the terms' sizes).
    dice_weight, ce_weight, ignore_index, **dice_kwargs
        As for `DiceCELoss`.
    """

    def __init__(
        self,
        *,
        boundary_weight: float = 1.0,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        ignore_index: int = -100,
        **dice_kwargs: float | bool,
    ) -> None:
        super().__init__(
            dice_weight=dice_weight, ce_weight=ce_weight, ignore_index=ignore_index, **dice_kwargs
        )
        self.boundary_weight = boundary_weight
        self.boundary = BoundaryLoss(ignore_index=ignore_index)

    def extra_repr(self) -> str:
        """`DiceCELoss`'s settings and ``boundary_weight``."""
        return f"{super().extra_repr()}, boundary_weight={self.boundary_weight!r}"

    def _loss(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        """The loss for inputs already validated; ``valid`` marks the pixels that count."""
        boundary = self.boundary._loss(logits, target, valid)
        return super()._loss(logits, target, valid) + self.boundary_weight * boundary


_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "ce": lambda **kw: WeightedCrossEntropyLoss(w0=0.0, class_weights=None, **kw),
    "weighted_ce": WeightedCrossEntropyLoss,
    "dice": SoftDiceLoss,
    "dice_ce": DiceCELoss,
    "dice_ce_boundary": DiceCEBoundaryLoss,
}
LOSS_NAMES: tuple[str, ...] = tuple(_LOSSES)
"""Names `make_loss` accepts."""


def make_loss(name: str, **kwargs: object) -> nn.Module:
    """Build a loss by name, for configuration files and the command line.

    Parameters
    ----------
    name
        ``"ce"`` (plain cross-entropy: `WeightedCrossEntropyLoss` with uniform weights),
        ``"weighted_ce"`` (`WeightedCrossEntropyLoss`, the paper's), ``"dice"``
        (`SoftDiceLoss`), ``"dice_ce"`` (`DiceCELoss`, nnU-Net's) or ``"dice_ce_boundary"``
        (`DiceCEBoundaryLoss`, Dice + CE + the boundary loss).
    **kwargs
        Keyword arguments of that class (e.g. ``ignore_index=255``).

    Examples
    --------
    >>> make_loss("dice_ce", ignore_index=255).ignore_index
    255
    """
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    return _LOSSES[name](**kwargs)
