"""A picture of a frame with its predicted (and true) nodule outlines, for people to check."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from thyroidseg.inference.measurements import Nodule

__all__ = ["REVIEW_COLOUR", "overlay"]

REVIEW_COLOUR = (0, 215, 255)
"""BGR colour (amber) of the box around a nodule flagged for review."""


def overlay(
    image: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray | None = None,
    *,
    nodules: Sequence[Nodule] = (),
) -> np.ndarray:
    """A BGR picture of ``image`` with the predicted outline in red and the true one in green.

    ``image`` is grey or BGR (8- or 16-bit), ``prediction`` and ``truth`` are ``(H, W)``
    masks of the image's size (non-zero = nodule). The predicted area is also tinted red.
    Each of ``nodules`` (as `thyroidseg.inference.measurements.measure` found them in
    ``prediction``) that has an ``expected_iou`` is labelled with it above its bounding box;
    one flagged for ``review`` gets a thick amber (`REVIEW_COLOUR`) box and the label
    ``review 0.42``, so that it stands out.
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
    for nodule in nodules:
        if nodule.expected_iou is not None:
            _label(picture, nodule)
    return picture


def _label(picture: np.ndarray, nodule: Nodule) -> None:
    """Write a nodule's expected IoU above its box; box a nodule flagged for review."""
    flagged = bool(nodule.review)
    colour = REVIEW_COLOUR if flagged else (255, 255, 255)
    scale = max(0.35, min(picture.shape[:2]) / 900)
    gap = max(2, round(4 * scale))
    if flagged:
        corner = (nodule.x + nodule.width - 1 + gap, nodule.y + nodule.height - 1 + gap)
        start = (nodule.x - gap, nodule.y - gap)
        cv2.rectangle(picture, start, corner, colour, max(2, round(3 * scale)))
    text = f"{'review ' if flagged else ''}{nodule.expected_iou:.2f}"
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = max(0, nodule.x - gap), max(height + 2, nodule.y - 2 * gap)
    cv2.rectangle(picture, (x - 1, y - height - 2), (x + width + 1, y + base), (0, 0, 0), -1)
    cv2.putText(picture, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
