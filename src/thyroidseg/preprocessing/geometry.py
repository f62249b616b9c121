"""Boxes, and resizing between a frame and the network frame.

Conventions (one for the whole library, see docs/preprocess.md):

- An image size or shape is ``(H, W)``, rows first, as numpy writes ``array.shape``; messages
  and docs write it the same way, e.g. a DDTI frame is ``(360, 560)``.
- A `Box` is ``(x0, y0, x1, y1)``, x first, as torchvision's ``boxes`` and OpenCV's
  rectangles are, and half-open like slices: ``image[box.slices]`` is the crop. Its fields
  carry their axis in their name, so the two orders cannot be confused in code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

import cv2
import numpy as np

__all__ = [
    "MAX_SIDE",
    "MIN_FRAME_SIDE",
    "RESIZE_MODES",
    "Box",
    "ResizeMode",
    "check_size",
    "fit_box",
    "resize",
    "resize_mask",
]

ResizeMode = Literal["letterbox", "stretch"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)


class Box(NamedTuple):
    """An axis-aligned box in pixel coordinates, half-open like Python slices.

    ``x0 <= x < x1`` and ``y0 <= y < y1``: ``image[box.slices]`` is the crop.

    >>> box = Box(10, 20, 110, 70)
    >>> box.width, box.height, box.area
    (100, 50, 5000)
    >>> box.slices
    (slice(20, 70, None), slice(10, 110, None))
    >>> box.grow(15, (80, 200))     # 15 px on each side, clipped to an (80, 200) frame
    Box(x0=0, y0=5, x1=125, y1=80)
    """

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        """``x1 - x0``."""
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        """``y1 - y0``."""
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        """``width * height``."""
        return self.width * self.height

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices that cut the box out of a numpy image."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def union(self, other: Box) -> Box:
        """The smallest box holding both boxes."""
        return Box(
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
        )

    def iou(self, other: Box) -> float:
        """Intersection over union of the two boxes' areas (0 for two empty boxes).

        >>> Box(0, 0, 4, 4).iou(Box(2, 0, 6, 4))
        0.3333333333333333
        """
        width = min(self.x1, other.x1) - max(self.x0, other.x0)
        height = min(self.y1, other.y1) - max(self.y0, other.y0)
        inter = max(width, 0) * max(height, 0)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def grow(self, margin: int, shape: tuple[int, int]) -> Box:
        """The box grown by ``margin`` pixels on every side, clipped to a frame of ``shape``.

        ``shape`` is the frame's ``(H, W)``: the result is
        ``(max(x0 - m, 0), max(y0 - m, 0), min(x1 + m, W), min(y1 + m, H))``.
        """
        height, width = shape
        return Box(
            max(self.x0 - margin, 0),
            max(self.y0 - margin, 0),
            min(self.x1 + margin, width),
            min(self.y1 + margin, height),
        )


def _union(boxes: Sequence[Box]) -> Box:
    """The smallest box holding every box of a non-empty sequence."""
    region = boxes[0]
    for box in boxes[1:]:
        region = region.union(box)
    return region


def fit_box(shape: tuple[int, int], size: tuple[int, int], mode: ResizeMode = "letterbox") -> Box:
    """Where an ``(h, w)`` image lands inside an ``(H, W)`` network frame.

    ``"stretch"`` fills the frame. ``"letterbox"`` keeps the aspect ratio: scale
    $s = \\min(H/h, W/w)$, content ``round(h s)`` rows by ``round(w s)`` columns (at
    least 1 px), centred, with the odd padding pixel at the bottom/right.

    >>> fit_box((300, 400), (256, 256))
    Box(x0=0, y0=32, x1=256, y1=224)
    >>> fit_box((300, 400), (256, 256), "stretch")
    Box(x0=0, y0=0, x1=256, y1=256)
    """
    height, width = check_size(size)
    h, w = shape
    if h < 1 or w < 1:
        raise ValueError(f"fit_box: empty source shape {shape}")
    if mode == "stretch":
        return Box(0, 0, width, height)
    if mode != "letterbox":
        raise ValueError(f"resize mode must be 'letterbox' or 'stretch', got {mode!r}")
    scale = min(height / h, width / w)
    ch = min(max(round(h * scale), 1), height)
    cw = min(max(round(w * scale), 1), width)
    top, left = (height - ch) // 2, (width - cw) // 2
    return Box(left, top, left + cw, top + ch)


def resize(image: np.ndarray, size: tuple[int, int], mode: ResizeMode = "letterbox") -> np.ndarray:
    """Resize an image to the network ``size = (H, W)``; letterbox padding is 0.

    Area averaging when shrinking (no aliasing of speckle), bilinear when enlarging. Masks
    must not go through here: use `resize_mask` or `thyroidseg.preprocessing.Preprocessed.
    mask_to_network` (nearest).

    >>> resize(np.ones((30, 40), np.uint8), (16, 16))[:, 0].tolist()   # 12 rows + padding
    [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError("resize: expected a non-empty (H, W) or (H, W, C) array")
    content = fit_box(image.shape[:2], size, mode)
    out = np.zeros(tuple(size) + image.shape[2:], image.dtype)
    out[content.slices] = _resize_to(image, content.height, content.width)
    return out


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a mask or label map to ``size = (H, W)`` by nearest neighbour (stretch).

    Output pixel ``i`` takes source pixel ``floor((i + 1/2) s)`` with ``s = source / target``
    along each axis, the source pixel under its centre, so no label is invented and the
    mask does not shift (OpenCV's ``INTER_NEAREST`` samples ``floor(i s)``, half a source
    pixel up and left). The dtype is kept.

    >>> resize_mask(np.array([[0, 0, 1, 1]] * 2, np.uint8), (1, 2)).tolist()
    [[0, 1]]
    """
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.size == 0:
        raise ValueError("resize_mask: expected a non-empty (H, W) array")
    height, width = check_size(size)
    return mask[np.ix_(_nearest(mask.shape[0], height), _nearest(mask.shape[1], width))]


def _resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` resized to ``(height, width)``: area averaging to shrink, bilinear to enlarge."""
    shrink = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


MIN_FRAME_SIDE = 32
"""Smallest scanner-frame side the scan-region search (and the phantom maker) handles."""

MAX_SIDE = 8192
"""Largest network frame side `preprocess` and the dataset accept (scanner frames are ~1000)."""


def check_size(size: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` as two positive ints (the one size check of the library).

    Raises
    ------
    ValueError
        Not two positive integers, or a side longer than `MAX_SIDE`.
    """
    if len(size) != 2 or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ValueError(f"size must be two positive integers (H, W), got {size!r}")
    if max(size) > MAX_SIDE:
        raise ValueError(
            f"size must be at most {MAX_SIDE} pixels a side, got {tuple(map(int, size))}: "
            f"a network frame of {int(size[0]) * int(size[1]):,} pixels"
        )
    return int(size[0]), int(size[1])


def _nearest(source: int, target: int) -> np.ndarray:
    """Source index sampled by each of ``target`` pixels (pixel centres aligned)."""
    index = ((np.arange(target) + 0.5) * (source / target)).astype(np.intp)
    return np.minimum(index, source - 1)
