r"""Deep supervision's loss: a weighted sum of a loss over the logits of several decoder levels.

A `thyroidseg.models.unet.UNet` built with ``deep_supervision=S`` returns, in training mode,
the stacked logits ``(N, 1 + S, K, H, W)`` of its last decoder level (index 0) and of the
``S`` levels below it, each upsampled to ``H x W``. `DeepSupervisionLoss` wraps any loss of
`thyroidseg.training.losses` and computes

$$
L = \sum_{i=0}^{S} w_i\, \ell(z_i, y), \qquad
w_i = \frac{2^{-i}}{\sum_{j=0}^{S} 2^{-j}}
$$

with $z_i$ the logits of level $i$, $y$ the target and $\ell$ the wrapped loss: nnU-Net's
weights (halved at each coarser level, normalised to sum 1), unless others are given. A
4-D input (the logits alone) gives $\ell$ unchanged.

nnU-Net down-samples the target to each level instead; here the logits are up-sampled (as
MONAI's ``DynUNet`` and ``DeepSupervisionLoss``), so that per-pixel weight maps and
``ignore_index`` pass to every term unchanged. `with_deep_supervision` is how the workflows
wrap a loss for a model that needs it; ``docs/model.md`` (Deep supervision) has the rest.

Examples
--------
>>> import torch
>>> from thyroidseg.training.losses import make_loss
>>> loss = DeepSupervisionLoss(make_loss("ce"))
>>> [round(w, 4) for w in loss.level_weights(3)]  # 1, 1/2, 1/4 over 1.75
[0.5714, 0.2857, 0.1429]
>>> target = torch.zeros(1, 4, 4, dtype=torch.int64)
>>> round(loss(torch.zeros(1, 3, 2, 4, 4), target).item(), 4)  # log(2) at every level
0.6931
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["DeepSupervisionLoss", "with_deep_supervision"]


class DeepSupervisionLoss(nn.Module):
    """``sum_i w_i * loss(logits[:, i], target, **kwargs)`` over stacked levels (module docstring).

    Parameters
    ----------
    loss
        The loss of one level, ``loss(logits (N, K, H, W), target, **kwargs) -> scalar``.
    weights
        One weight per level, index 0 the full-resolution logits, used as given (finite, not
        negative, not all 0); their number must match the input's levels. ``None`` (default):
        nnU-Net's ``2**-i`` normalised to sum 1, for any number of levels.

    Attributes
    ----------
    ignore_index
        The wrapped loss's, if it has one (so that validation leaves out the same pixels).
    """

    def __init__(self, loss: Callable[..., Tensor], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not callable(loss):
            raise ValueError(f"loss must be callable (logits, target) -> loss, got {loss!r}")
        if isinstance(loss, DeepSupervisionLoss):
            raise ValueError("the loss is already a DeepSupervisionLoss: wrap the plain loss once")
        if weights is not None:
            weights = [float(w) for w in weights]
            usable = all(math.isfinite(w) and w >= 0 for w in weights) and sum(weights) > 0
            if not usable:
                raise ValueError(
                    f"weights must be finite, not negative and not all 0, got {weights}"
                )
        self.loss = loss
        self.weights = weights
        if getattr(loss, "ignore_index", None) is not None:
            self.ignore_index = loss.ignore_index  # type: ignore[attr-defined]

    def extra_repr(self) -> str:
        return f"weights={self.weights}"

    def level_weights(self, levels: int) -> list[float]:
        """The weight of each of ``levels`` levels (finest first): ``weights``, or nnU-Net's."""
        if self.weights is None:
            raw = [2.0**-i for i in range(levels)]
            return [w / sum(raw) for w in raw]
        if len(self.weights) != levels:
            raise ValueError(
                f"{len(self.weights)} weights for logits with {levels} levels (the model's "
                "deep_supervision + 1)"
            )
        return self.weights

    def forward(self, logits: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
        """The weighted sum for ``(N, 1 + S, K, H, W)`` logits; the wrapped loss for 4-D ones."""
        if logits.dim() != 5:
            return self.loss(logits, target, **kwargs)
        weights = self.level_weights(logits.shape[1])
        terms = (w * self.loss(logits[:, i], target, **kwargs) for i, w in enumerate(weights) if w)
        return sum(terms, logits.new_zeros(()))


def with_deep_supervision(loss: Callable[..., Tensor], model: nn.Module) -> Callable[..., Tensor]:
    """``loss`` wrapped in `DeepSupervisionLoss` if ``model.config["deep_supervision"] > 0``.

    Keyed on the model, not on an option, so every way of building a run (``thyroidseg
    train --deep-supervision``, a `UNet` passed to `thyroidseg.training.workflows.train_folder`)
    gets the loss its training output needs. A loss already wrapped is returned as it is.
    """
    levels = (getattr(model, "config", None) or {}).get("deep_supervision", 0)
    if not levels or isinstance(loss, DeepSupervisionLoss):
        return loss
    return DeepSupervisionLoss(loss)
