"""Step 1 of preprocessing: the ultrasound field of view of a scanner frame, one box per view.

A scanner frame holds much more than the ultrasound image: black borders, columns of
scanner settings, side labels (DER/IZQ), a grey-scale bar, a body-marker icon and depth
ticks. `find_views` finds the field of view of each view (two on split-screen frames) and
`find_scan_region` their union; `thyroidseg.preprocessing.preprocess` crops to it. The
constants were chosen on the 365 DDTI frames (docs/preprocess.md shows the measurements).
"""

from __future__ import annotations

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.preprocessing.geometry import MIN_FRAME_SIDE, Box, _union
from thyroidseg.preprocessing.intensity import _load_frame, _to_gray

__all__ = ["find_scan_region", "find_views"]

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
_REACH = 2 * _COARSE
"""Exact edges are searched this far (8 px) around the coarse ones."""
"""Smallest image side (px) on which a field of view is searched."""


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
    array, name = _load_frame(image)
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


_WHOLE_FRAME = (
    "preprocessing with crop=False uses the whole frame (thyroidseg preprocess --no-crop; "
    "for predict, a model trained on whole frames)"
)


def _find_views(gray: np.ndarray, name: str) -> list[Box]:
    if min(gray.shape) < MIN_FRAME_SIDE:
        raise ValueError(
            f"{name}: image of shape (H, W) = {gray.shape} is too small to find a scan region "
            f"(needs >= {MIN_FRAME_SIDE} px a side); {_WHOLE_FRAME}"
        )
    nonzero = (gray > 0).view(np.uint8)
    coarse = _coarse_box(nonzero)
    if coarse is None:
        raise ValueError(
            f"{name}: no ultrasound field of view found (no textured area of at least "
            f"{_COARSE * _OPEN_BLOCKS}x{_COARSE * _OPEN_BLOCKS} px); {_WHOLE_FRAME}"
        )
    outer = coarse.grow(_REACH, gray.shape)
    region = _refine(nonzero, coarse, outer)
    seam = _find_seam(gray[region.slices])
    if seam is None:
        return [region]
    x_seam = region.x0 + seam
    return [
        _refine(nonzero, coarse._replace(x1=x_seam), outer._replace(x1=x_seam)),
        _refine(nonzero, coarse._replace(x0=x_seam), outer._replace(x0=x_seam)),
    ]


def _image_blocks(nonzero: np.ndarray) -> np.ndarray:
    """Step 1 of `find_views` on a 0/1 ``uint8`` image: its 4x4-pixel blocks (block ``(i, j)``
    covers rows ``4i..4i+3``, columns ``4j..4j+3``) that are image, opened by 5x5 blocks."""
    rows, cols = nonzero.shape[0] // _COARSE, nonzero.shape[1] // _COARSE
    # Block means of the 0/255 image (an exact integer factor of the cut frame).
    blocks = cv2.resize(
        nonzero[: rows * _COARSE, : cols * _COARSE] * np.uint8(255),
        (cols, rows),
        interpolation=cv2.INTER_AREA,
    )
    blocks = (blocks > 255 * _MIN_BLOCK_FILL).view(np.uint8)
    kernel = np.ones((_OPEN_BLOCKS, _OPEN_BLOCKS), np.uint8)
    return cv2.morphologyEx(blocks, cv2.MORPH_OPEN, kernel)


def _coarse_box(nonzero: np.ndarray) -> Box | None:
    blocks = _image_blocks(nonzero)
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
    x0, y0, x1, y1 = coarse
    for _ in range(2):
        columns = _line_sums(nonzero[y0:y1], axis=0) >= _EDGE_FILL * (y1 - y0)
        x0, x1 = _edges(columns, coarse.x0, coarse.x1, limit.x0, limit.x1, _REACH)
        rows = _line_sums(nonzero[:, x0:x1], axis=1) >= _EDGE_FILL * (x1 - x0)
        y0, y1 = _edges(rows, coarse.y0, coarse.y1, limit.y0, limit.y1, _REACH)
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
