"""Frames in and maps out for `thyroidseg.inference.base.SegmenterBase`: the frames
``predict_many`` takes, a frame read from a file prepared with errors that name the file, and
network-frame probability maps carried back onto their frame (the quality evidence too)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.inference.quality import Evidence
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


def _prepare_read(
    prepare: Callable[[np.ndarray], Preprocessed], frame: np.ndarray, source: object
) -> Preprocessed:
    """``prepare(frame)`` for a frame already read from ``source`` (a file, or ``"FILE: frame
    N"``), its errors naming the source: `thyroidseg.preprocessing.preprocess` can only call
    an array ``image``, and reading the file again to have it named would read it twice."""
    try:
        return prepare(frame)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error


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


def _evidence(
    prepared: Sequence[Preprocessed],
    first: Sequence[np.ndarray | None],
    pair: tuple[np.ndarray, np.ndarray],
) -> list[Evidence]:
    """Each frame's `thyroidseg.inference.quality.Evidence`: its whole-frame mask before the
    refine stage (``first``, ``None`` without one) and its nodule probability maps of the
    frame and of the mirror image (``pair``, softmax ``(N, K, H, W)`` each) on the frame."""
    plain, mirrored = pair
    return [
        Evidence(
            stage1,
            (
                _probability_to_original(p, plain[k, 1]),
                _probability_to_original(p, mirrored[k, 1]),
            ),
        )
        for k, (p, stage1) in enumerate(zip(prepared, first, strict=True))
    ]
