"""The parts every loss of `thyroidseg.training.losses` and `thyroidseg.training.boundary_loss`
shares: the input check, the weighted cross-entropy and the safe division.

Private to `thyroidseg.training` (a module of its own so that `training.boundary_loss` can use
them and `training.losses` can register its losses without an import cycle).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _divide_or_zero(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` with 0 wherever the denominator is 0.

    The losses' convention: a term with nothing to weigh contributes 0, so that the loss and
    its gradient stay finite (the metrics' ``_divide_or_nan`` returns NaN instead: there an
    undefined ratio must not pass for a score).
    """
    zero = denominator == 0
    return torch.where(
        zero, torch.zeros_like(numerator), numerator / denominator.masked_fill(zero, 1)
    )


def _check_inputs(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Validate a ``(logits, target)`` pair; return the boolean mask of pixels that count."""
    if logits.dim() != 4:
        hint = (
            " (a deep-supervision UNet's stacked levels: wrap the loss in "
            "thyroidseg.training.deep_supervision.DeepSupervisionLoss)"
            if logits.dim() == 5
            else ""
        )
        raise ValueError(f"logits must be (N, C, H, W), got shape {tuple(logits.shape)}{hint}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if target.dtype != torch.int64:
        raise ValueError(f"target must be an int64 tensor of class indices, got {target.dtype}")
    n, c, h, w = logits.shape
    if tuple(target.shape) != (n, h, w):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}:"
            f" expected {(n, h, w)}"
        )
    if c < 2:
        raise ValueError(f"logits need at least 2 classes (softmax), got {c}")
    valid = target != ignore_index
    if target.numel():
        labels = target[valid]
        if labels.numel() and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(
                f"target holds values outside [0, {c}) other than ignore_index={ignore_index}:"
                f" min {labels.min().item()}, max {labels.max().item()}"
            )
    return valid


def _cross_entropy(logits: Tensor, target: Tensor, weights: Tensor, ignore_index: int) -> Tensor:
    """Weighted mean of the per-pixel cross-entropy, ``sum(w * ce) / sum(w)`` (0 for no weight)."""
    pixel_loss = F.cross_entropy(
        logits.float(), target, ignore_index=ignore_index, reduction="none"
    )
    weights = weights.to(pixel_loss)
    return _divide_or_zero((weights * pixel_loss).sum(), weights.sum())
