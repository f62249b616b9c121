"""A picture of a frame with its predicted (and true) nodule outlines, for people to check."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["overlay"]


def overlay(
    image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None = None
) -> np.ndarray:
    """A BGR picture of ``image`` with the predicted outline in red and the true one in green.

    ``image`` is grey or BGR (8- or 16-bit), ``prediction`` and ``truth`` are ``(H, W)``
    masks of the image's size (non-zero = nodule). The predicted area is also tinted red.
    """
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    picture = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    for name, mask in (("prediction", prediction), ("truth", truth)):
        if mask is not None and mask.shape != picture.shape[:2]:
            raise ValueError(f"{name} is {mask.shape}, the image is {picture.shape[:2]}")
    predicted = prediction != 0
    picture[predicted] = (0.6 * picture[predicted] + (0, 0, 0.4 * 255)).astype(np.uint8)
    outlines = [(prediction, (0, 0, 255))] + ([(truth, (0, 200, 0))] if truth is not None else [])
    for mask, colour in outlines:
        contours, _ = cv2.findContours(
            (mask != 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(picture, contours, -1, colour, 1, cv2.LINE_AA)
    return picture
