r"""The boundary loss of Kervadec et al. (2019, 2021) and the signed distance map it weighs.

$$
L_B = \frac{1}{|\Omega|} \sum_{x \in \Omega} s(x)\, \phi(x)
$$

over the counted pixels $\Omega$ (target not ``ignore_index``), with $s$ the softmax
probability of the foreground (the sum over the classes ``1..C-1``: the nodule class for
thyroidseg's two classes) and $\phi$ the signed distance of $x$ to the outline of the
ground-truth foreground (`signed_distance_map`): negative inside, positive outside, in pixels
divided by the image diagonal $\sqrt{H^2 + W^2}$, so in $[-1, 1]$. Foreground probability
outside the nodule costs in proportion to its distance from the outline, and probability
inside gains; the loss is lowest (``mean`` of $\phi$ over the foreground, $\le 0$) when $s$
is the target. It is used beside a regional loss (`thyroidseg.training.losses.DiceCEBoundaryLoss`),
never alone: alone it is minimised by any $s$ that covers the interior.

Distances are computed from the target on the CPU with OpenCV for every batch (no gradient
flows through them). docs/model.md gives the choices (empty masks, ignored pixels) and the
cost per batch.

Reference: H. Kervadec, J. Bouchtiba, C. Desrosiers, E. Granger, J. Dolz, I. Ben Ayed,
"Boundary loss for highly unbalanced segmentation", MIDL 2019; Medical Image Analysis 67
(2021) 101851.

Examples
--------
>>> mask = np.zeros((3, 4), dtype=np.uint8)
>>> mask[:, :2] = 1
>>> (signed_distance_map(mask) * 5).round(3)  # diagonal sqrt(9 + 16) = 5
array([[-1.,  0.,  1.,  2.],
       [-1.,  0.,  1.,  2.],
       [-1.,  0.,  1.,  2.]], dtype=float32)
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from thyroidseg.training._loss_parts import _check_inputs, _divide_or_zero

__all__ = ["EMPTY_MASK_DISTANCE", "BoundaryLoss", "distance_maps", "signed_distance_map"]

EMPTY_MASK_DISTANCE = 1.0
r"""$\phi$ everywhere in a mask without foreground: the largest distance a mask with a nodule
can give, so any foreground probability on a frame without a nodule costs its full value."""


def signed_distance_map(foreground: np.ndarray) -> np.ndarray:
    r"""Signed distance of every pixel to the outline of ``foreground``, over the diagonal.

    $$
    \phi(x) = \frac{1}{\sqrt{H^2 + W^2}}
    \begin{cases}
    d(x, F) & x \notin F \\
    -\bigl(d(x, \bar F) - 1\bigr) & x \in F
    \end{cases}
    $$

    with $F$ the foreground pixels, $\bar F$ the others and $d$ the Euclidean distance between
    pixel centres (OpenCV ``distanceTransform``, ``DIST_L2`` with the 5 x 5 mask: within 2% of
    the exact distance, several times faster; docs/model.md).
    As in the authors' code, the foreground pixels on the outline (next to a background pixel)
    get 0 and the background pixels next to them $1/\sqrt{H^2+W^2}$. Without foreground
    $\phi$ is `EMPTY_MASK_DISTANCE` (1) everywhere; without background it is -1 everywhere
    (no outline lies in the image).

    Parameters
    ----------
    foreground
        ``(H, W)`` boolean or integer array; non-zero marks the foreground.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the mask's shape, values in ``[-1, 1]``.
    """
    foreground = np.asarray(foreground)
    if foreground.ndim != 2 or foreground.size == 0:
        raise ValueError(f"foreground must be a non-empty 2-D (H, W) array, got {foreground.shape}")
    inside = (foreground != 0).astype(np.uint8)
    if not inside.any():
        return np.full(inside.shape, EMPTY_MASK_DISTANCE, dtype=np.float32)
    if inside.all():
        return np.full(inside.shape, -1.0, dtype=np.float32)
    outside_distance = cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_5)
    inside_distance = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_5)
    phi = np.where(inside == 1, 1.0 - inside_distance, outside_distance)
    return (phi / np.hypot(*inside.shape)).astype(np.float32)


class BoundaryLoss(nn.Module):
    r"""Kervadec et al.'s boundary loss $L_B$ (module docstring) on logits.

    $L_B = \frac{1}{|\Omega|}\sum_{x\in\Omega} s(x)\,\phi(x)$, with $s = 1 - p_0$ the
    softmax probability of the foreground and $\phi$ = `signed_distance_map` of the target's
    foreground (``target >= 1``); 0 when every pixel is ignored. Ignored pixels count as
    not-foreground for the distances and are left out of the mean.

    Parameters
    ----------
    ignore_index
        Target value that contributes nothing (default -100).
    """

    def __init__(self, *, ignore_index: int = -100) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def extra_repr(self) -> str:
        """Every setting, so two differently set-up losses never read alike (resume checks)."""
        return f"ignore_index={self.ignore_index!r}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self._loss(logits, target, _check_inputs(logits, target, self.ignore_index))

    def _loss(self, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        """The loss for inputs already validated; ``valid`` marks the pixels that count."""
        weights = valid.to(torch.float32)
        phi = distance_maps((target > 0) & valid).to(logits.device) * weights  # 0 where ignored
        foreground = 1 - logits.float().softmax(dim=1)[:, 0]
        return _divide_or_zero((foreground * phi).sum(), weights.sum())


@torch.no_grad()
def distance_maps(foreground: Tensor) -> Tensor:
    """`signed_distance_map` of each ``(H, W)`` mask of a boolean ``(N, H, W)`` tensor.

    Computed on the CPU; returns a float32 ``(N, H, W)`` CPU tensor.
    """
    masks = foreground.cpu().numpy()
    phi = np.empty(masks.shape, dtype=np.float32)
    for index, mask in enumerate(masks):
        phi[index] = signed_distance_map(mask)
    return torch.from_numpy(phi)
