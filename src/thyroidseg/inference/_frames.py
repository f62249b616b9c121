"""Frames in and maps out for `thyroidseg.inference.base.SegmenterBase`: the frames
``predict_many`` takes, and a network-frame probability map carried back onto its frame."""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.preprocessing.pipeline import Preprocessed


def _frame_sequence(
    images: Sequence[np.ndarray | PathLike] | np.ndarray,
) -> Sequence[np.ndarray | PathLike] | np.ndarray:
    """``images`` as a sequence of frames, refusing one frame given where many are expected."""
    if isinstance(images, str | os.PathLike):
        raise ValueError(
            f"predict_many takes a sequence of frames, got one path {images!r}; use predict"
        )
    if isinstance(images, np.ndarray) and images.ndim != 3:
        raise ValueError(
            f"predict_many takes an (N, H, W) array or a sequence of frames, got "
            f"an array of shape {images.shape}; use predict for one frame"
        )
    return images


def _probability_to_original(prepared: Preprocessed, probability: np.ndarray) -> np.ndarray:
    """The network-frame probability map on the original frame: bilinear, 0 outside the views.

    The ``content`` part of the map is resized onto ``box`` (``cv2.INTER_LINEAR``, which
    aligns pixel centres as `Preprocessed.mask_to_original` does); letterbox padding never
    enters the interpolation.
    """
    box, content = prepared.box, prepared.content
    resized = cv2.resize(
        np.ascontiguousarray(probability[content.slices]),
        (box.width, box.height),
        interpolation=cv2.INTER_LINEAR,
    )
    on_box = np.zeros(prepared.original_shape, np.float32)
    on_box[box.slices] = np.clip(resized, 0.0, 1.0)
    out = np.zeros_like(on_box)
    for view in prepared.views:
        out[view.slices] = on_box[view.slices]
    return out
