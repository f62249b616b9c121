"""Crops around nodules: the geometry both stages of crop-and-refine share.

The refine network (docs/refine.md) sees a square crop of the *full-resolution* frame around
each nodule, cut from the frame as `thyroidseg.preprocessing.preprocess` cleans it (scan
region kept, everything outside the views zeroed, burned-in marks inpainted:
`thyroidseg.preprocessing.Preprocessed.cleaned_frame`), then resized and equalised/smoothed
crop by crop with the stage's own ``equalization``/``smoothing`` settings.

- `CropRule`: where a crop goes around a nodule's box, in training and at inference;
- `nodule_boxes`: the boxes of a mask's connected components, view by view;
- `cut_crop`, `cut_mask`, `prepare_crop`: a square of a frame (or mask) at the network size;
  `overlap`: where it lies on the frame;
- `CLEANING_OPTIONS` / `cleaning_options`: the `preprocess` options both stages must share.

Training crops are `thyroidseg.data.crops.CropDataset`; the second stage at inference is
`thyroidseg.inference.refine.Refiner`.

Examples
--------
>>> rule = CropRule(size=64, margin=0.5)
>>> rule.square(Box(100, 40, 140, 60))      # 40 px wide: 80 px square around its centre
Box(x0=80, y0=10, x1=160, y1=90)
>>> rule.square(Box(10, 10, 14, 12))        # a speck still gets min_side pixels of context
Box(x0=-4, y0=-5, x1=28, y1=27)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from thyroidseg._checks import check_int
from thyroidseg.preprocessing.geometry import Box, _resize_to, resize_mask
from thyroidseg.preprocessing.intensity import equalize, smooth
from thyroidseg.preprocessing.pipeline import preprocess

__all__ = [
    "CLEANING_OPTIONS",
    "CropRule",
    "cleaning_options",
    "cut_crop",
    "cut_mask",
    "nodule_boxes",
    "overlap",
    "prepare_crop",
]

CLEANING_OPTIONS = ("crop", "margin", "inpaint_annotations")
"""`preprocess` options that decide the cleaned full-resolution frame; both stages must agree."""


@dataclass(frozen=True)
class CropRule:
    """Where the refine network's square crop goes around a nodule's bounding box.

    For a box of longest side ``L`` and centre ``c``, the crop is the square of side
    ``s = max(round(L (1 + 2 m)), min_side)`` centred on ``c`` (shifted by ``j s`` in
    training), resized to ``size x size``: ``m`` of the box's side is added on each side.
    Parts of the square outside the frame are zero, like the frame outside its views.

    Parameters
    ----------
    size
        Side of the network crop in pixels (default 128).
    margin
        ``m`` at inference and validation (default 0.5: the square is twice the box).
    train_margin
        Range of ``m`` in training, drawn uniformly (default (0.25, 0.8)).
    jitter
        Largest training shift of the centre, as a fraction of ``s`` on each axis, drawn
        uniformly in ``[-jitter, jitter]`` (default 0.12).
    min_side
        Smallest square side in frame pixels (default 32).
    """

    size: int = 128
    margin: float = 0.5
    train_margin: tuple[float, float] = (0.25, 0.8)
    jitter: float = 0.12
    min_side: int = 32

    def __post_init__(self) -> None:
        check_int("size", self.size, 16)
        check_int("min_side", self.min_side, 1)
        if len(self.train_margin) != 2:
            raise ValueError(f"train_margin must be (low, high), got {self.train_margin!r}")
        low, high = (float(v) for v in self.train_margin)
        object.__setattr__(self, "train_margin", (low, high))
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin!r}")
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
            raise ValueError(f"train_margin must be 0 <= low <= high, got {self.train_margin!r}")
        if not (math.isfinite(self.jitter) and 0 <= self.jitter < 0.5):
            raise ValueError(f"jitter must be in [0, 0.5), got {self.jitter!r}")

    def square(
        self, box: Box, margin: float | None = None, shift: tuple[float, float] = (0, 0)
    ) -> Box:
        """The crop around ``box`` with margin ``margin`` (default `margin`), in frame pixels.

        ``shift`` is ``(dx, dy)`` as fractions of the side. The square may reach past the
        frame's edges (negative or too large coordinates); `cut_crop` pads it with zeros.
        """
        m = self.margin if margin is None else margin
        side = max(round(max(box.width, box.height) * (1 + 2 * m)), self.min_side)
        cx = (box.x0 + box.x1) / 2 + shift[0] * side
        cy = (box.y0 + box.y1) / 2 + shift[1] * side
        x0, y0 = math.floor(cx - side / 2), math.floor(cy - side / 2)
        return Box(x0, y0, x0 + side, y0 + side)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings: ``CropRule(**rule.to_dict())`` is the same rule."""
        settings = asdict(self)
        settings["train_margin"] = list(self.train_margin)
        return settings

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> CropRule:
        """The rule stored by `to_dict` (unknown keys are an error)."""
        if not isinstance(settings, Mapping):
            raise TypeError(f"a crop rule is a mapping of settings, got {settings!r}")
        return cls(**settings)


def cleaning_options(preprocess_options: Mapping[str, Any]) -> dict[str, Any]:
    """The `CLEANING_OPTIONS` among `preprocess` keyword arguments, its defaults filled in."""
    return _with_defaults(preprocess_options, CLEANING_OPTIONS)


def _with_defaults(options: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """``options[name]`` for each of ``names``, else `preprocess`'s default for it."""
    defaults = inspect.signature(preprocess).parameters
    return {name: options.get(name, defaults[name].default) for name in names}


def nodule_boxes(mask: np.ndarray, views: Sequence[Box]) -> list[Box]:
    """Bounding boxes of the connected components (8-connectivity) of ``mask``, per view.

    Components are taken inside each view separately, so one nodule in each half of a
    split-screen frame gives two boxes; pixels outside every view are ignored.

    >>> mask = np.zeros((20, 40), np.uint8); mask[2:5, 3:9] = 1; mask[10:12, 30:31] = 1
    >>> nodule_boxes(mask, [Box(0, 0, 40, 20)])
    [Box(x0=3, y0=2, x1=9, y1=5), Box(x0=30, y0=10, x1=31, y1=12)]
    """
    boxes = []
    for view in views:
        part = (mask[view.slices] != 0).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
        for x, y, w, h, _area in stats[1:count]:
            x0, y0 = view.x0 + int(x), view.y0 + int(y)
            boxes.append(Box(x0, y0, x0 + int(w), y0 + int(h)))
    return boxes


def cut_crop(frame: np.ndarray, square: Box, size: int) -> np.ndarray:
    """``frame[square]``, zero where the square leaves the frame, resized to ``size x size``.

    Shrunk by area averaging, enlarged bilinearly (masks: `cut_mask`).
    """
    return _resize_to(_pad_cut(frame, square), size, size)


def cut_mask(mask: np.ndarray, square: Box, size: int) -> np.ndarray:
    """`cut_crop` for a mask: nearest-neighbour resizing, so it stays binary."""
    return resize_mask(_pad_cut(mask, square), (size, size))


def prepare_crop(
    frame: np.ndarray, square: Box, size: int, options: Mapping[str, Any]
) -> np.ndarray:
    """`cut_crop`, then the stage's equalisation and smoothing as `preprocess` applies them.

    ``options`` are the stage's `preprocess` keyword arguments (``equalization``,
    ``smoothing``; defaults as `preprocess`'s): how both the training crops
    (`thyroidseg.data.crops.CropDataset`) and the crops at inference
    (`thyroidseg.inference.refine.Refiner`) are prepared.
    """
    return _intensity(cut_crop(frame, square, size), options)


def _pad_cut(frame: np.ndarray, square: Box) -> np.ndarray:
    out = np.zeros((square.height, square.width), frame.dtype)
    height, width = frame.shape[:2]
    on_frame, on_square = overlap(square, Box(0, 0, width, height))
    out[on_square.slices] = frame[on_frame.slices]
    return out


def overlap(square: Box, region: Box) -> tuple[Box, Box]:
    """The part of ``square`` inside ``region``: in frame and in square coordinates.

    ``region`` is the whole frame (``Box(0, 0, W, H)``) where a crop is cut, or the view
    that holds a nodule where its result is pasted back
    (`thyroidseg.inference.refine.Refiner`).

    >>> overlap(Box(-4, 2, 6, 12), Box(0, 0, 20, 8))
    (Box(x0=0, y0=2, x1=6, y1=8), Box(x0=4, y0=0, x1=10, y1=6))
    """
    x0, y0 = min(max(square.x0, region.x0), region.x1), min(max(square.y0, region.y0), region.y1)
    x1, y1 = max(min(square.x1, region.x1), x0), max(min(square.y1, region.y1), y0)
    return Box(x0, y0, x1, y1), Box(x0 - square.x0, y0 - square.y0, x1 - square.x0, y1 - square.y0)


def _intensity(crop: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
    """The stage's equalisation and smoothing, as `preprocess` applies them."""
    equalization, smoothing = _with_defaults(options, ("equalization", "smoothing")).values()
    if equalization is not None:
        crop = equalize(crop, equalization)
    if smoothing is not None:
        crop = smooth(crop, smoothing)
    return crop
