"""Left-right flip test-time augmentation of a network's softmax, in numpy.

Both stages of both segmenters (PyTorch and ONNX Runtime) average the class probabilities of
a batch and of its mirror image, mirrored back. The two maps are also kept apart
(`mirrored_pair`) because their disagreement tells how stable an outline is
(`thyroidseg.inference.quality`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["Softmax", "mirrored_pair", "tta_probabilities"]

Softmax = Callable[[np.ndarray], np.ndarray]
"""One forward pass: ``(N, C, H, W)`` float32 batch in, ``(N, K, H, W)`` softmax out."""


def mirrored_pair(softmax: Softmax, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The class probabilities of ``batch`` and of its left-right mirror image, mirrored back.

    Two forward passes; both maps are aligned with ``batch``.
    """
    plain = softmax(batch)
    mirrored = softmax(np.ascontiguousarray(batch[..., ::-1]))
    return plain, np.ascontiguousarray(mirrored[..., ::-1])


def tta_probabilities(
    softmax: Softmax,
    batch: np.ndarray,
    tta: bool,
    pair: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    r"""The class probabilities of ``batch``; with ``tta``, the mean of `mirrored_pair`.

    $\bar p = (p(x) + F(p(F(x)))) / 2$ with $F$ the left-right flip: twice the
    network cost. ``pair``: `mirrored_pair` of ``batch`` computed already (no pass is run).
    """
    if pair is None:
        if not tta:
            return softmax(batch)
        pair = mirrored_pair(softmax, batch)
    plain, mirrored = pair
    return (plain + mirrored) / np.float32(2) if tta else plain
