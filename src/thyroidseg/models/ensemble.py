"""Several segmentation networks as one: the average of their class probabilities.

`Ensemble` wraps trained networks that take the same input (the same preprocessing) and
returns log-probabilities, so that everything downstream of a network (softmax, argmax,
`thyroidseg.inference.Segmenter`, `thyroidseg.models.export`) treats the ensemble exactly like
one network. ``thyroidseg predict --model A.pt --model B.pt`` builds one through
`thyroidseg.inference.Segmenter.from_checkpoint`.

Examples
--------
>>> import torch
>>> from thyroidseg.models.unet import UNet
>>> ensemble = Ensemble([UNet(base_channels=4, depth=2, seed=s) for s in (0, 1)])
>>> scores = ensemble(torch.rand(1, 1, 32, 32))
>>> scores.shape, bool(torch.allclose(scores.exp().sum(dim=1), torch.ones(1, 32, 32)))
(torch.Size([1, 2, 32, 32]), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from thyroidseg.runtime import autocast

__all__ = ["Ensemble", "class_probabilities", "numpy_probabilities"]


class Ensemble(nn.Module):
    r"""Average the class probabilities of $K$ networks; one `torch.nn.Module`.

    For an input $x$ and member networks $f_1, \dots, f_K$ returning class scores (logits)
    of the same shape ``(N, classes, H, W)``, the output is

    $$
    \log \Big( \frac{1}{K} \sum_{k=1}^{K} \operatorname{softmax}(f_k(x)) \Big)
    $$

    (softmax over the class axis), computed stably as
    ``logsumexp_k(log_softmax(f_k(x))) - log K``. Its softmax is therefore the members' mean
    probability and its argmax the class of highest mean probability, as in MONAI's
    ``MeanEnsemble`` applied to probabilities. The output is float32 whatever the members'
    dtype (mixed precision). Members are averaged with equal weights.

    Parameters
    ----------
    members
        At least one network; all take the same input and give outputs of the same shape.
        A single member is allowed (the output is then its log-softmax).

    Raises
    ------
    ValueError
        ``members`` is empty or holds something that is not an ``nn.Module``.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("Ensemble needs at least one member network")
        for index, member in enumerate(members):
            if not isinstance(member, nn.Module):
                raise ValueError(
                    f"Ensemble member {index} is a {type(member).__name__}, not an nn.Module"
                )
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``log(mean_k softmax(member_k(x)))``, shape ``(N, classes, H, W)``, float32."""
        scores = []
        for member in self.members:  # a plain loop: TorchScript scripts it
            scores.append(member(x).float().log_softmax(dim=1))
        return torch.logsumexp(torch.stack(scores), dim=0) - math.log(len(scores))


def class_probabilities(
    model: nn.Module, images: torch.Tensor, *, device: torch.device, amp_dtype: torch.dtype | None
) -> torch.Tensor:
    """``softmax(model(images))`` over classes, float32 ``(N, K, H, W)``, in inference mode.

    One forward pass, on ``device`` under `thyroidseg.runtime.autocast` with ``amp_dtype``
    (flip test-time augmentation: `thyroidseg.inference.flips`).
    """
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, amp_dtype):
        return model(images).float().softmax(dim=1)


def numpy_probabilities(
    model: nn.Module,
    batch: np.ndarray,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> np.ndarray:
    """`class_probabilities` of a numpy batch ``(N, C, H, W)`` (one forward pass, no TTA),
    as a numpy array: what `thyroidseg.inference.Segmenter` and
    `thyroidseg.inference.refine.Refiner` run (`thyroidseg.inference.flips` adds the TTA)."""
    probabilities = class_probabilities(
        model, torch.from_numpy(batch), device=device, amp_dtype=amp_dtype
    )
    return probabilities.cpu().numpy()
