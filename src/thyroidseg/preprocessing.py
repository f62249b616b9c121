"""From a raw ultrasound scanner frame to network input, and masks both ways.

A scanner frame holds much more than the ultrasound image: black borders, columns of
scanner settings, side labels (DER/IZQ), a grey-scale bar, a body-marker icon, depth ticks,
and, inside the image, caliper crosses and typed notes. `preprocess` turns such a
frame into a fixed-size network input in five switchable steps, each also public:

1. `find_views` / `find_scan_region`: the ultrasound field of view, one box per
   view on split-screen frames (`Box`, original pixel coordinates), and a crop to it.
2. `find_annotations` + `remove_annotations`: burned-in marks inside the field
   of view (thin, bright, high-contrast strokes; coloured pixels) are filled from their
   unmarked neighbours.
3. `resize`: to the network size, ``"letterbox"`` (aspect kept, zero padding) or
   ``"stretch"``.
4. `equalize`: ``"clahe"`` or ``"global"`` histogram equalisation.
5. `smooth`: ``"median"``, ``"gaussian"`` or ``"bilateral"`` speckle smoothing.

Equalisation and smoothing run on the resized content *before* the letterbox padding is
added, so the padding never enters the histogram and the work is done on the smaller image.

The `Preprocessed` result carries the geometry: `Preprocessed.mask_to_network`
and `Preprocessed.mask_to_original` move masks between the two frames by
nearest-neighbour sampling with pixel-centre alignment, so a round trip moves a mask
boundary by at most `Preprocessed.round_trip_radius` pixels (see there).

Examples
--------
>>> import numpy as np
>>> frame = np.zeros((360, 560), np.uint8)
>>> rng = np.random.default_rng(0)
>>> frame[20:320, 90:470] = rng.integers(20, 200, (300, 380))   # the field of view
>>> frame[30:40, 500:540] = 255                                  # a scanner text block
>>> result = preprocess(frame, size=(128, 128))
>>> result.views                       # the field of view
[Box(x0=90, y0=20, x1=470, y1=320)]
>>> result.box                         # the crop: plus a 6 px margin
Box(x0=84, y0=14, x1=476, y1=326)
>>> result.image.shape, result.image.dtype
((128, 128), dtype('uint8'))
>>> mask = np.zeros((360, 560), np.uint8)
>>> mask[100:200, 200:300] = 1
>>> back = result.mask_to_original(result.mask_to_network(mask))
>>> ry, rx = result.round_trip_radius   # no pixel moves further than this
>>> grown = cv2.dilate(mask, np.ones((2 * ry + 1, 2 * rx + 1), np.uint8))
>>> back.shape, bool((back <= grown).all())
((360, 560), True)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np

from thyroidseg._io import PathLike, atomic_write_bytes, list_images, read_image, write_image
from thyroidseg._progress import Progress

__all__ = [
    "Box",
    "Preprocessed",
    "equalize",
    "find_annotations",
    "find_scan_region",
    "find_views",
    "fit_box",
    "preprocess",
    "preprocess_folder",
    "remove_annotations",
    "resize",
    "smooth",
    "to_gray_uint8",
]

EqualizeMethod = Literal["clahe", "global"]
SmoothMethod = Literal["median", "gaussian", "bilateral"]
ResizeMode = Literal["letterbox", "stretch"]

# --- scan-region detection constants (chosen on the 365 DDTI frames, see docs/preprocess.md)
_COARSE = 4
"""Downsampling factor of the coarse field-of-view search (4x4-pixel blocks)."""
_MIN_BLOCK_FILL = 0.5
"""A coarse block belongs to the field of view if more than half of its pixels are > 0."""
_OPEN_BLOCKS = 5
"""Opening size in blocks (20 px): removes text lines, bars, ticks and icons thinner than that."""
_MIN_PART = 0.1
"""Coarse parts whose bounding box has at least this share of the largest one's are kept."""
_EDGE_FILL = 0.8
"""A full-resolution row/column belongs to a view if >= 80% of its pixels are > 0 (JPEG ringing
around the field of view stays below that)."""
_SEAM_BLUR = 41
"""Vertical averaging (px) before looking for the vertical seam between two views."""
_SEAM_BAND = (0.3, 0.7)
"""A seam is searched between these fractions of the box width."""
_SEAM_TRIM = 0.8
"""Share of rows (the smallest steps) averaged per column: text inside the image is ignored."""
_SEAM_RATIO = 4.5
"""A column is a seam when its mean step is >= this many times the median over columns (on DDTI:
single views reach at most 3.87, split screens at least 5.19)."""
_MIN_SIDE = 32
"""Smallest image side (px) on which a field of view is searched."""

# --- annotation constants (defaults of find_annotations / remove_annotations)
_MARK_CONTRAST = 80
_GLYPH_SIZE = (5, 24)
_GLYPH_PIXELS = 8
_MIN_CHROMA = 40
_FILL_WINDOW = 7


class Box(NamedTuple):
    """An axis-aligned box in pixel coordinates, half-open like Python slices.

    ``x0 <= x < x1`` and ``y0 <= y < y1``: ``image[box.slices]`` is the crop.

    >>> box = Box(10, 20, 110, 70)
    >>> box.width, box.height, box.area
    (100, 50, 5000)
    >>> box.slices
    (slice(20, 70, None), slice(10, 110, None))
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


# --------------------------------------------------------------------------- input


def to_gray_uint8(image: np.ndarray | PathLike) -> np.ndarray:
    """Validate an input frame and return it as 8-bit grey ``(H, W)``.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, 3)`` (BGR) array of ``uint8`` or ``uint16``, or a path to an
        image file. ``(H, W, 1)`` is accepted as grey.

    Returns
    -------
    numpy.ndarray
        ``uint8 (H, W)``. Colour is converted with OpenCV's luminance weights. 16-bit
        images are stretched linearly from their minimum to their maximum onto 0..255
        (scanners rarely use all 16 bits, so a fixed ``>> 8`` would leave them black).

    Raises
    ------
    ValueError
        Empty, constant, unreadable or wrongly shaped image, or an unsupported dtype. The
        message names the file when ``image`` is a path.

    >>> to_gray_uint8(np.array([[0, 1000], [2000, 4000]], np.uint16))
    array([[  0,  64],
           [128, 255]], dtype=uint8)
    """
    return _to_gray(*_load(image))


def _load(image: np.ndarray | PathLike) -> tuple[np.ndarray, str]:
    """The array and a name for error messages (the path, or "image")."""
    if isinstance(image, str) or hasattr(image, "__fspath__"):
        return read_image(image), str(image)  # type: ignore[arg-type]
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image: expected a numpy array or a path, got {type(image).__name__}")
    return image, "image"


def _to_gray(image: np.ndarray, name: str) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{name}: expected shape (H, W) or (H, W, 3), got {image.shape}")
    if image.size == 0:
        raise ValueError(f"{name}: empty image of shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{name}: expected dtype uint8 or uint16, got {image.dtype}")
    low, high = int(image.min()), int(image.max())
    if low == high:
        raise ValueError(f"{name}: constant image (every pixel is {low}); nothing to segment")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        low, high = int(image.min()), int(image.max())
    if image.dtype == np.uint16:
        scale = 255.0 / max(high - low, 1)
        image = cv2.convertScaleAbs(image, alpha=scale, beta=-low * scale)
    return np.ascontiguousarray(image)


def _color_marks(image: np.ndarray, min_chroma: int = _MIN_CHROMA) -> np.ndarray | None:
    """Pixels of a BGR frame whose channels differ by >= ``min_chroma`` (overlays); None if grey."""
    if image.ndim != 3 or image.shape[2] != 3:
        return None
    if image.dtype == np.uint16:
        min_chroma *= 257
    chroma = image.max(axis=2).astype(np.int32) - image.min(axis=2)
    return (chroma >= min_chroma).astype(np.uint8)


# --------------------------------------------------------------------------- scan region


def find_views(image: np.ndarray | PathLike) -> list[Box]:
    """The ultrasound field of view of each view in a scanner frame.

    Split-screen frames (two views side by side, each with its own nodule) give two boxes,
    left then right; other frames give one.

    Notes
    -----
    1. *Coarse field of view*: the frame is cut into 4x4-pixel blocks; a block is "image" when
       more than half of its pixels are non-zero (the scanner background is exactly 0, while
       even a black cyst carries some speckle). An opening of 5x5 blocks (20 px) removes text
       lines, the grey-scale bar, depth ticks and icons, which are thinner than that. Every
       connected part whose bounding box has at least 10% of the largest one's area is kept.
    2. *Seam*: the box content is averaged vertically over 41 rows (which removes speckle but
       keeps tissue layers), and for each column the mean absolute step to the next column is
       taken over the 80% of rows with the smallest steps (text inside the image does not
       count). A step >= 4.5 times the median over columns, in the central 30-70% of the
       width, is the seam between two views.
    3. *Exact edges*: each view's edges are moved, at full resolution, to the outermost
       row/column with at least 80% non-zero pixels, searching 8 px around the coarse edge.
       This drops JPEG ringing around the image and keeps each view's own top and bottom.

    Parameters
    ----------
    image
        A scanner frame (see `to_gray_uint8` for what is accepted).

    Returns
    -------
    list of Box
        Half-open boxes in original pixel coordinates, sorted left to right.

    Raises
    ------
    ValueError
        Bad input (see `to_gray_uint8`), an image smaller than 32 px on a side, or a
        frame with no field of view of at least 20x20 px.
    """
    array, name = _load(image)
    return _find_views(_to_gray(array, name), name)


def find_scan_region(image: np.ndarray | PathLike) -> Box:
    """The box around the ultrasound field of view, all views included.

    The union of `find_views`: text columns, side labels, the grey-scale bar and the
    body-marker icon are left out; every view of a split-screen frame is kept.

    >>> frame = np.zeros((100, 160), np.uint8)
    >>> frame[10:90, 30:130] = np.random.default_rng(0).integers(10, 250, (80, 100))
    >>> frame[5:15, 140:155] = 255      # a label in the corner
    >>> find_scan_region(frame)
    Box(x0=30, y0=10, x1=130, y1=90)
    """
    return _union(find_views(image))


def _union(boxes: list[Box]) -> Box:
    region = boxes[0]
    for box in boxes[1:]:
        region = region.union(box)
    return region


def _find_views(gray: np.ndarray, name: str) -> list[Box]:
    height, width = gray.shape
    if min(height, width) < _MIN_SIDE:
        raise ValueError(
            f"{name}: image of {width}x{height} px is too small to find a scan region "
            f"(needs >= {_MIN_SIDE} px a side); preprocess(..., crop=False) uses the whole frame"
        )
    nonzero = (gray > 0).view(np.uint8)
    coarse = _coarse_box(nonzero)
    if coarse is None:
        raise ValueError(
            f"{name}: no ultrasound field of view found (no textured area of at least "
            f"{_COARSE * _OPEN_BLOCKS}x{_COARSE * _OPEN_BLOCKS} px); preprocess(..., crop=False) "
            "uses the whole frame"
        )
    reach = 2 * _COARSE
    outer = Box(
        max(coarse.x0 - reach, 0),
        max(coarse.y0 - reach, 0),
        min(coarse.x1 + reach, width),
        min(coarse.y1 + reach, height),
    )
    region = _refine(nonzero, coarse, outer)
    seam = _find_seam(gray[region.slices])
    if seam is None:
        return [region]
    x_seam = region.x0 + seam
    return [
        _refine(nonzero, coarse._replace(x1=x_seam), outer._replace(x1=x_seam)),
        _refine(nonzero, coarse._replace(x0=x_seam), outer._replace(x0=x_seam)),
    ]


def _coarse_box(nonzero: np.ndarray) -> Box | None:
    rows, cols = nonzero.shape[0] // _COARSE, nonzero.shape[1] // _COARSE
    # Block means of the 0/255 image (an exact integer factor of the cut frame).
    blocks = cv2.resize(
        nonzero[: rows * _COARSE, : cols * _COARSE] * np.uint8(255),
        (cols, rows),
        interpolation=cv2.INTER_AREA,
    )
    blocks = (blocks > 255 * _MIN_BLOCK_FILL).view(np.uint8)
    kernel = np.ones((_OPEN_BLOCKS, _OPEN_BLOCKS), np.uint8)
    blocks = cv2.morphologyEx(blocks, cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(blocks, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    parts = np.array([cv2.boundingRect(contour) for contour in contours])  # x, y, w, h
    areas = parts[:, 2] * parts[:, 3]
    parts = parts[areas >= _MIN_PART * areas.max()]
    x0, y0 = parts[:, 0].min(), parts[:, 1].min()
    x1, y1 = (parts[:, 0] + parts[:, 2]).max(), (parts[:, 1] + parts[:, 3]).max()
    return Box(int(x0) * _COARSE, int(y0) * _COARSE, int(x1) * _COARSE, int(y1) * _COARSE)


def _find_seam(content: np.ndarray) -> int | None:
    """Column index (in ``content``) where a second view starts, or None."""
    column, ratio = _seam_strength(content)
    return column if ratio >= _SEAM_RATIO else None


def _seam_strength(content: np.ndarray) -> tuple[int, float]:
    """The likeliest seam column and its step ratio (see `find_views`); 0 if none."""
    width = content.shape[1]
    lo, hi = int(_SEAM_BAND[0] * width), int(_SEAM_BAND[1] * width)
    if hi - lo < 2:
        return 0, 0.0
    # Every 4th row of the vertical average is enough: neighbouring rows share 37 of 41 rows.
    columns = cv2.blur(content, (1, _SEAM_BLUR), borderType=cv2.BORDER_REFLECT)[::4]
    steps = np.abs(np.diff(columns.astype(np.int16), axis=1))  # steps[:, i]: column i -> i + 1
    kept = max(int(_SEAM_TRIM * len(steps)), 1)
    profile = np.partition(steps, kept - 1, axis=0)[:kept].mean(axis=0)
    best = lo + int(np.argmax(profile[lo:hi]))
    typical = float(np.median(profile))
    return best + 1, (float(profile[best]) / typical if typical > 0 else 0.0)


def _refine(nonzero: np.ndarray, coarse: Box, limit: Box) -> Box:
    """Move each edge of ``coarse`` to the exact field-of-view edge, staying inside ``limit``.

    Columns are measured over the box's rows and rows over its columns, so the columns are
    measured again once the rows are known (a view shorter than its neighbour).
    """
    reach = 2 * _COARSE
    x0, y0, x1, y1 = coarse
    for _ in range(2):
        columns = _line_sums(nonzero[y0:y1], axis=0) >= _EDGE_FILL * (y1 - y0)
        x0, x1 = _edges(columns, coarse.x0, coarse.x1, limit.x0, limit.x1, reach)
        rows = _line_sums(nonzero[:, x0:x1], axis=1) >= _EDGE_FILL * (x1 - x0)
        y0, y1 = _edges(rows, coarse.y0, coarse.y1, limit.y0, limit.y1, reach)
    return Box(x0, y0, x1, y1)


def _line_sums(image: np.ndarray, axis: int) -> np.ndarray:
    """Sums of a uint8 image over ``axis`` (OpenCV's reduce: ~10x faster than numpy's)."""
    return cv2.reduce(image, axis, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()


def _edges(
    filled: np.ndarray, lo: int, hi: int, floor: int, ceiling: int, reach: int
) -> tuple[int, int]:
    """The run ``[lo', hi')`` of filled lines around the coarse edges ``lo``, ``hi``.

    Starts from the first and last filled lines at least ``reach`` inside the coarse edges
    and grows outward while the next line is filled, never past ``floor`` / ``ceiling``.
    Returns the coarse edges unchanged when nothing inside them is filled.
    """
    inner_lo, inner_hi = min(lo + reach, hi - 1), max(hi - reach, lo + 1)
    inside = np.flatnonzero(filled[inner_lo:inner_hi])
    if inside.size == 0:
        return lo, hi
    new_lo, new_hi = inner_lo + int(inside[0]), inner_lo + int(inside[-1]) + 1
    while new_lo > floor and filled[new_lo - 1]:
        new_lo -= 1
    while new_hi < ceiling and filled[new_hi]:
        new_hi += 1
    return new_lo, new_hi


# --------------------------------------------------------------------------- annotations


def find_annotations(
    image: np.ndarray | PathLike,
    *,
    min_contrast: int = _MARK_CONTRAST,
    glyph_size: tuple[int, int] = _GLYPH_SIZE,
    min_pixels: int = _GLYPH_PIXELS,
) -> np.ndarray:
    """Mask of burned-in marks: caliper crosses, letters, typed notes, coloured overlays.

    A mark is a *glyph*: a connected group of thin bright pixels. A pixel is thin and
    bright when it exceeds the grey-level opening of its 3x3 neighbourhood (a white
    top-hat) by ``min_contrast``: strokes 1-2 px wide do, tissue echoes 3 px or thicker do
    not. A group counts as a glyph when the longer side of its bounding box is within
    ``glyph_size``, the shorter side is at least 3 px, and it has at least ``min_pixels``
    thin pixels. Isolated speckle peaks and microcalcification-sized dots are smaller,
    specular echoes are longer or are straight segments 1-2 px tall, and are kept. Kept
    glyphs are filled and grown by one pixel (the JPEG halo around them). On a colour
    frame, every pixel whose channels differ by 40 or more is a mark too (ultrasound is
    grey; overlays are not).

    Parameters
    ----------
    image
        A frame or a crop of one (see `to_gray_uint8`).
    min_contrast
        Top-hat threshold in grey levels. On DDTI, white text and the (grey-converted)
        caliper marks exceed 80 while tissue speckle rarely does.
    glyph_size
        ``(low, high)``: allowed length in pixels of the longer side of a glyph's bounding
        box (DDTI letters and caliper crosses are 7-12 px).
    min_pixels
        Fewest thin pixels in a glyph.

    Returns
    -------
    numpy.ndarray
        ``uint8 (H, W)`` in ``{0, 1}``; 1 marks an annotation pixel.

    >>> crop = np.full((40, 40), 90, np.uint8)
    >>> crop[20, 10:17] = 250; crop[17:24, 13] = 250      # a caliper cross "+"
    >>> crop[5:9, 30:34] = 250                            # a 4x4 bright echo: tissue
    >>> marks = find_annotations(crop)
    >>> bool(marks[20, 13]), bool(marks[6, 31])
    (True, False)
    """
    array, name = _load(image)
    gray = _to_gray(array, name)
    marks = _glyph_marks(gray, min_contrast, glyph_size, min_pixels)
    color = _color_marks(array)
    if color is not None:
        marks |= color
    return marks


def _glyph_marks(
    gray: np.ndarray, min_contrast: int, glyph_size: tuple[int, int], min_pixels: int
) -> np.ndarray:
    square = np.ones((3, 3), np.uint8)
    thin = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, square) >= min_contrast
    thin = thin.view(np.uint8)
    marks = np.zeros_like(thin)
    if not thin.any():
        return marks
    contours, _ = cv2.findContours(thin, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    low, high = glyph_size
    glyphs = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if (
            min(w, h) >= 3
            and low <= max(w, h) <= high
            and (np.count_nonzero(thin[y : y + h, x : x + w]) >= min_pixels)
        ):
            glyphs.append(contour)
    if glyphs:
        cv2.drawContours(marks, glyphs, -1, 1, thickness=cv2.FILLED)
        marks = cv2.dilate(marks, square)
    return marks


def remove_annotations(
    image: np.ndarray | PathLike,
    annotations: np.ndarray | None = None,
    *,
    window: int = _FILL_WINDOW,
) -> np.ndarray:
    """Fill annotation pixels with the mean of their unmarked neighbours.

    Each marked pixel gets the mean of the unmarked pixels in the ``window x window``
    square around it (normalised convolution); pixels with no unmarked neighbour are
    filled in further passes with a window twice as large. Unmarked pixels are returned
    unchanged, so tissue outside the marks is never touched. Marks are a few pixels wide, so
    this local mean does what ``cv2.inpaint`` would, at a fraction of its cost (two box
    filters over a small window per mark).

    Parameters
    ----------
    image
        A frame or crop (see `to_gray_uint8`); returned as 8-bit grey.
    annotations
        ``(H, W)`` mask, non-zero where to fill; `find_annotations` when None.
    window
        Odd side of the first averaging window, in pixels.

    Returns
    -------
    numpy.ndarray
        ``uint8 (H, W)``, a new array.

    >>> crop = np.full((20, 20), 100, np.uint8)
    >>> crop[10, 5:15] = 255
    >>> marks = np.zeros_like(crop); marks[10, 5:15] = 1
    >>> int(remove_annotations(crop, marks)[10, 9])
    100
    """
    array, name = _load(image)
    gray = _to_gray(array, name)
    if annotations is None:
        annotations = find_annotations(array)
    elif np.shape(annotations) != gray.shape:
        raise ValueError(
            f"{name}: annotation mask of shape {annotations.shape} does not match the "
            f"image's {gray.shape}"
        )
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    return _fill(gray, np.asarray(annotations) != 0, window)


def _fill(gray: np.ndarray, marked: np.ndarray, window: int) -> np.ndarray:
    """`remove_annotations` on a uint8 image and a boolean mask."""
    out = gray.copy()
    if not marked.any():
        return out
    height, width = gray.shape
    marked_u8 = marked.view(np.uint8)
    contours, _ = cv2.findContours(marked_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:  # one small window per mark: the rest of the image is untouched
        x, y, w, h = cv2.boundingRect(contour)
        size = window
        while True:
            half = size // 2
            y0, y1 = max(y - half, 0), min(y + h + half, height)
            x0, x1 = max(x - half, 0), min(x + w + half, width)
            todo = marked_u8[y0:y1, x0:x1] != 0
            known = (~todo).astype(np.float32)
            total = cv2.boxFilter(gray[y0:y1, x0:x1] * known, -1, (size, size), normalize=False)
            count = cv2.boxFilter(known, -1, (size, size), normalize=False)
            done = todo & (count > 0.5)
            out[y0:y1, x0:x1][done] = np.rint(total[done] / count[done]).astype(np.uint8)
            if done.sum() == todo.sum() or size > max(height, width):
                break
            size = 2 * size + 1  # some pixel had no unmarked neighbour: widen the window
    return out


# --------------------------------------------------------------------------- intensity


def equalize(
    image: np.ndarray,
    method: EqualizeMethod = "clahe",
    *,
    clip_limit: float = 2.0,
    tile_grid: tuple[int, int] = (8, 8),
) -> np.ndarray:
    """Histogram equalisation of an 8-bit grey image.

    Parameters
    ----------
    image
        ``uint8 (H, W)``.
    method
        ``"global"``: ``cv2.equalizeHist``, the grey levels mapped through the cumulative
        histogram, :math:`v' = \\mathrm{round}(255 \\, (\\mathrm{cdf}(v) -
        \\mathrm{cdf}_{\\min}) / (N - \\mathrm{cdf}_{\\min}))`. ``"clahe"``: contrast-limited
        adaptive equalisation on a ``tile_grid`` of tiles, each tile's histogram clipped at
        ``clip_limit`` times its mean count before equalising, tiles blended bilinearly.
    clip_limit, tile_grid
        CLAHE settings (OpenCV's meaning); ignored by ``"global"``.

    Returns
    -------
    numpy.ndarray
        ``uint8 (H, W)``.
    """
    _check_gray8(image, "equalize")
    if method == "global":
        return cv2.equalizeHist(image)
    if method == "clahe":
        return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tile_grid).apply(image)
    raise ValueError(f"equalize: method must be 'clahe' or 'global', got {method!r}")


def smooth(image: np.ndarray, method: SmoothMethod = "median", *, size: int = 3) -> np.ndarray:
    """Speckle smoothing of an 8-bit grey image.

    Parameters
    ----------
    image
        ``uint8 (H, W)``.
    method
        ``"median"``: median of the ``size x size`` window. ``"gaussian"``: Gaussian of
        ``size x size`` with OpenCV's default :math:`\\sigma = 0.3((size-1)/2 - 1) + 0.8`.
        ``"bilateral"``: edge-preserving bilateral filter of diameter ``size``, colour sigma
        25 grey levels, space sigma ``size`` px.
    size
        Odd window size in pixels (>= 3).

    Returns
    -------
    numpy.ndarray
        ``uint8 (H, W)``.
    """
    _check_gray8(image, "smooth")
    if size < 3 or size % 2 == 0:
        raise ValueError(f"smooth: size must be an odd number >= 3, got {size}")
    if method == "median":
        return cv2.medianBlur(image, size)
    if method == "gaussian":
        return cv2.GaussianBlur(image, (size, size), 0)
    if method == "bilateral":
        return cv2.bilateralFilter(image, size, 25, size)
    raise ValueError(f"smooth: method must be 'median', 'gaussian' or 'bilateral', got {method!r}")


def _check_gray8(image: np.ndarray, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"{what}: expected a uint8 (H, W) image, got {dtype} of shape {shape}")
    if image.size == 0:
        raise ValueError(f"{what}: empty image")


# --------------------------------------------------------------------------- geometry


def fit_box(shape: tuple[int, int], size: tuple[int, int], mode: ResizeMode = "letterbox") -> Box:
    """Where an ``(h, w)`` image lands inside an ``(H, W)`` network frame.

    ``"stretch"`` fills the frame. ``"letterbox"`` keeps the aspect ratio: scale
    :math:`s = \\min(H/h, W/w)`, content ``round(h s) x round(w s)`` (at least 1 px),
    centred, with the odd padding pixel at the bottom/right.

    >>> fit_box((300, 400), (256, 256))
    Box(x0=0, y0=32, x1=256, y1=224)
    >>> fit_box((300, 400), (256, 256), "stretch")
    Box(x0=0, y0=0, x1=256, y1=256)
    """
    height, width = _check_size(size)
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
    must not go through here: use `Preprocessed.mask_to_network` (nearest).

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

    Each output pixel takes the source pixel under its centre, so no label is invented
    and the mask does not shift (OpenCV's ``INTER_NEAREST`` samples ``floor(i * s)``,
    half a source pixel up and left). The dtype is kept.

    >>> resize_mask(np.array([[0, 0, 1, 1]] * 2, np.uint8), (1, 2)).tolist()
    [[0, 1]]
    """
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.size == 0:
        raise ValueError("resize_mask: expected a non-empty (H, W) array")
    height, width = _check_size(size)
    return mask[np.ix_(_nearest(mask.shape[0], height), _nearest(mask.shape[1], width))]


def _resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    shrink = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def _check_choice(name: str, value: object, allowed: tuple[object, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` as two positive ints (the one size check of the library)."""
    if len(size) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
        raise ValueError(f"size must be two positive integers (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def _nearest(source: int, target: int) -> np.ndarray:
    """Source index sampled by each of ``target`` pixels (pixel centres aligned)."""
    index = ((np.arange(target) + 0.5) * (source / target)).astype(np.intp)
    return np.minimum(index, source - 1)


def _round_trip_radius(source: int, target: int) -> int:
    """Largest shift of a pixel in a source -> target -> source nearest round trip."""
    return 0 if source <= target else int(np.floor(source / (2 * target) + 0.5))


# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """A preprocessed frame and the geometry that links it to the original frame.

    Attributes
    ----------
    image
        ``uint8 (H, W)`` network input (divide by 255 for ``[0, 1]``).
    box
        The crop in original coordinates: the scan region plus ``margin``, clipped to the
        frame (the whole frame with ``crop=False``). Crop pixels outside every view (the
        margin, a gap between views) are set to 0.
    views
        Field of view of each view in original coordinates (two on split-screen frames).
    content
        Where ``box`` lands in the network frame; outside it is letterbox padding (zeros).
    original_shape
        ``(height, width)`` of the original frame.
    settings
        The keyword arguments `preprocess` ran with.
    """

    image: np.ndarray
    box: Box
    views: list[Box]
    content: Box
    original_shape: tuple[int, int]
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """Network ``(height, width)``."""
        return self.image.shape[0], self.image.shape[1]

    @property
    def scale(self) -> tuple[float, float]:
        """``(sy, sx)``: network pixels per original pixel along each axis."""
        return self.content.height / self.box.height, self.content.width / self.box.width

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """Letterbox padding ``(top, bottom, left, right)`` in network pixels."""
        height, width = self.size
        return (
            self.content.y0,
            height - self.content.y1,
            self.content.x0,
            width - self.content.x1,
        )

    @property
    def round_trip_radius(self) -> tuple[int, int]:
        """``(ry, rx)``: how far a mask round trip can move a pixel, in original pixels.

        `mask_to_original` of `mask_to_network` gives each pixel of ``box`` the
        value of an original pixel at most ``ry`` rows and ``rx`` columns away, with
        :math:`r = \\lfloor b / (2c) + 1/2 \\rfloor` when the box side ``b`` is shrunk to
        the content side ``c``, and 0 when it is enlarged (the round trip is then exact).
        So for a mask ``M`` inside ``box``: ``erode(M) <= round_trip(M) <= dilate(M)``
        with a ``(2 ry + 1) x (2 rx + 1)`` rectangle; only pixels within that distance of
        the mask boundary can change, and
        :math:`\\mathrm{IoU} \\ge |\\mathrm{erode}(M)| / |\\mathrm{dilate}(M)|`.
        A 385x300 DDTI scan region at 256x256 letterbox gives ``(1, 1)``.
        """
        return (
            _round_trip_radius(self.box.height, self.content.height),
            _round_trip_radius(self.box.width, self.content.width),
        )

    def mask_to_network(self, mask: np.ndarray) -> np.ndarray:
        """Carry a mask (or label map) from the original frame to the network frame.

        Crop to ``box``, nearest-neighbour resize into ``content``, zero padding. The dtype
        is kept; pixels outside ``box`` are dropped.
        """
        mask = self._check_mask(mask, self.original_shape, "original frame")
        out = np.zeros(self.size, mask.dtype)
        rows = self.box.y0 + _nearest(self.box.height, self.content.height)
        cols = self.box.x0 + _nearest(self.box.width, self.content.width)
        out[self.content.slices] = mask[np.ix_(rows, cols)]
        return out

    def mask_to_original(self, mask: np.ndarray) -> np.ndarray:
        """Carry a mask predicted on the network frame back to the original frame and size.

        The ``content`` part is nearest-neighbour resized onto ``box``; everything outside
        ``box`` is 0. The dtype is kept (probabilities work too).
        """
        mask = self._check_mask(mask, self.size, "network frame")
        out = np.zeros(self.original_shape, mask.dtype)
        rows = self.content.y0 + _nearest(self.content.height, self.box.height)
        cols = self.content.x0 + _nearest(self.content.width, self.box.width)
        out[self.box.slices] = mask[np.ix_(rows, cols)]
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-ready geometry and settings (no pixels)."""
        top, bottom, left, right = self.padding
        return {
            "original_shape": list(self.original_shape),
            "size": list(self.size),
            "box": list(self.box),
            "views": [list(view) for view in self.views],
            "content": list(self.content),
            "scale": list(self.scale),
            "padding": {"top": top, "bottom": bottom, "left": left, "right": right},
            "round_trip_radius": list(self.round_trip_radius),
            "settings": dict(self.settings),
        }

    @staticmethod
    def _check_mask(mask: np.ndarray, shape: tuple[int, int], frame: str) -> np.ndarray:
        if not isinstance(mask, np.ndarray):
            raise ValueError(f"mask: expected a numpy array, got {type(mask).__name__}")
        if mask.shape != tuple(shape):
            raise ValueError(
                f"mask of shape {mask.shape} does not match the {frame} {tuple(shape)}"
            )
        return mask


DEFAULT_MARGIN = 6
"""Pixels added around the scan region by `preprocess`: DDTI masks spill at most 6 px
past the field of view (onto black), so this keeps every labelled pixel (docs/preprocess.md)."""


def preprocess(
    image: np.ndarray | PathLike,
    *,
    size: tuple[int, int] = (256, 256),
    crop: bool = True,
    margin: int = DEFAULT_MARGIN,
    inpaint_annotations: bool = True,
    equalization: EqualizeMethod | None = "clahe",
    smoothing: SmoothMethod | None = "median",
    resize_mode: ResizeMode = "letterbox",
) -> Preprocessed:
    """Turn a scanner frame into network input; every step can be switched off.

    Steps: 8-bit grey (`to_gray_uint8`) -> crop to the scan region plus ``margin``
    (`find_scan_region`) -> fill burned-in marks (`find_annotations`,
    `remove_annotations`) -> resize the crop into its place in ``size``
    (`fit_box`) -> `equalize` -> `smooth` -> zero letterbox padding.
    Equalisation and smoothing see only the resized content, never the padding.

    Parameters
    ----------
    image
        ``uint8``/``uint16`` ``(H, W)`` or BGR ``(H, W, 3)`` array, or an image path.
    size
        Network ``(height, width)``.
    crop
        Crop to the scan region. With False, ``box`` and the single view are the whole
        frame (for images that are already cropped).
    margin
        Pixels added on each side of the scan region (clipped to the frame), so that mask
        pixels drawn just past the field of view survive `Preprocessed.mask_to_network`.
        Image pixels outside the views are set to 0 (no ticks or markers come in with it).
    inpaint_annotations
        Fill text, caliper marks and colour overlays inside the crop.
    equalization
        ``"clahe"``, ``"global"`` or None.
    smoothing
        ``"median"``, ``"gaussian"``, ``"bilateral"`` (3x3) or None.
    resize_mode
        ``"letterbox"`` (aspect kept, zero padding) or ``"stretch"``.

    Returns
    -------
    Preprocessed

    Raises
    ------
    ValueError
        Bad image (see `to_gray_uint8`), no field of view found (use
        ``crop=False``), or a bad setting.
    """
    network_size = _check_size(size)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    _check_choice("equalization", equalization, ("clahe", "global", None))
    _check_choice("smoothing", smoothing, ("median", "gaussian", "bilateral", None))
    _check_choice("resize_mode", resize_mode, ("letterbox", "stretch"))
    settings: dict[str, object] = {
        "size": list(network_size),
        "crop": crop,
        "margin": margin,
        "inpaint_annotations": inpaint_annotations,
        "equalization": equalization,
        "smoothing": smoothing,
        "resize_mode": resize_mode,
    }
    array, name = _load(image)
    gray = _to_gray(array, name)
    height, width = gray.shape
    if crop:
        views = _find_views(gray, name)
        region = _union(views)
        box = Box(
            max(region.x0 - margin, 0),
            max(region.y0 - margin, 0),
            min(region.x1 + margin, width),
            min(region.y1 + margin, height),
        )
    else:
        box = Box(0, 0, width, height)
        views = [box]
    content = fit_box((box.height, box.width), size, resize_mode)
    patch = gray[box.slices]
    if crop and (margin > 0 or len(views) > 1):
        # Only the views are image: the margin and any gap between views become 0, so
        # ticks and markers just outside the field of view do not come in with the margin.
        patch = np.zeros_like(patch)
        for view in views:
            inner = Box(view.x0 - box.x0, view.y0 - box.y0, view.x1 - box.x0, view.y1 - box.y0)
            patch[inner.slices] = gray[view.slices]
    if inpaint_annotations:
        marks = _glyph_marks(patch, _MARK_CONTRAST, _GLYPH_SIZE, _GLYPH_PIXELS)
        color = _color_marks(array[box.slices])
        if color is not None:
            marks |= color
        patch = _fill(patch, marks != 0, _FILL_WINDOW)
    patch = _resize_to(patch, content.height, content.width)
    if equalization is not None:
        patch = equalize(patch, equalization)
    if smoothing is not None:
        patch = smooth(patch, smoothing)
    out = np.zeros(network_size, np.uint8)
    out[content.slices] = patch
    return Preprocessed(out, box, views, content, (height, width), settings)


def preprocess_folder(
    in_dir: PathLike,
    out_dir: PathLike,
    *,
    json_path: PathLike | None = None,
    progress: bool | None = None,
    **options: object,
) -> dict[str, object]:
    """Preprocess every image of ``in_dir`` into ``out_dir`` (``<stem>.png``) plus a JSON.

    The JSON (``out_dir/preprocess.json`` unless ``json_path`` is given) holds the
    settings and, per stem, the source file and `Preprocessed.to_dict`; it is
    written once all images are done. Every file is written atomically. An image that
    cannot be read or preprocessed does not stop the others: each failure is recorded
    under ``"errors"`` in the JSON, and once everything else is written a
    ``ValueError`` lists every failed file.

    Parameters
    ----------
    in_dir, out_dir
        Input folder (not recursive; see `thyroidseg._io.list_images`) and output
        folder (created; must differ from ``in_dir``).
    json_path
        Where to write the JSON.
    progress
        Progress bar on standard error (`thyroidseg._progress.Progress`): None draws
        it on a terminal and prints one summary line otherwise, False prints nothing.
    **options
        Keyword arguments of `preprocess`.

    Returns
    -------
    dict
        What was written to the JSON.

    Raises
    ------
    ValueError, FileNotFoundError
        Empty or missing ``in_dir``, ``out_dir`` equal to it, or images that could not
        be preprocessed (the message names each file; all other images and the JSON are
        written first).
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    images = list_images(in_dir)
    if out_dir.resolve() == in_dir.resolve():
        raise ValueError(f"{out_dir}: output folder is the input folder; pick another one")
    json_path = out_dir / "preprocess.json" if json_path is None else Path(json_path)
    records: dict[str, object] = {}
    errors: dict[str, str] = {}
    settings: dict[str, object] = {}
    for stem, path in Progress(images.items(), desc="preprocess", enabled=progress):
        try:
            result = preprocess(path, **options)  # type: ignore[arg-type]
        except ValueError as error:  # unreadable or unusable image: report, go on
            errors[stem] = str(error)
            continue
        write_image(out_dir / f"{stem}.png", result.image)
        record = result.to_dict()
        settings = record.pop("settings")  # type: ignore[assignment]
        records[stem] = {"source": str(path), **record}
    summary = {"settings": settings, "images": records, "errors": errors}
    atomic_write_bytes(json_path, (json.dumps(summary, indent=1) + "\n").encode())
    if errors:
        raise ValueError(
            f"{len(errors)} of {len(images)} images could not be preprocessed "
            f"(the other {len(records)} and {json_path} were written):\n  "
            + "\n  ".join(errors.values())
        )
    return summary
