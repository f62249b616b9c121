"""Step 2 of preprocessing: find burned-in annotations and inpaint them.

Inside the field of view, scanners burn in caliper crosses, typed notes and, on colour
frames, overlays. `find_annotations` marks them (thin, bright, high-contrast strokes and
coloured pixels) and `inpaint_annotations` fills each marked pixel from its unmarked
neighbours; `thyroidseg.preprocessing.preprocess(inpaint_annotations=True)` runs both.
The constants were chosen on the DDTI frames (docs/preprocess.md).
"""

from __future__ import annotations

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.preprocessing.intensity import _load_frame, _to_gray

__all__ = ["find_annotations", "inpaint_annotations"]

# --- annotation constants (defaults of find_annotations / inpaint_annotations)
_MARK_CONTRAST = 80
_GLYPH_SIZE = (5, 24)
_GLYPH_PIXELS = 8
_MIN_CHROMA = 40
_FILL_WINDOW = 7


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
    array, name = _load_frame(image)
    return _find_marks(_to_gray(array, name), array, min_contrast, glyph_size, min_pixels)


def _find_marks(
    gray: np.ndarray,
    original: np.ndarray,
    min_contrast: int = _MARK_CONTRAST,
    glyph_size: tuple[int, int] = _GLYPH_SIZE,
    min_pixels: int = _GLYPH_PIXELS,
) -> np.ndarray:
    """`find_annotations` of a checked frame: glyphs of ``gray``, colour marks of ``original``."""
    marks = _glyph_marks(gray, min_contrast, glyph_size, min_pixels)
    color = _color_marks(original)
    if color is not None:
        marks |= color
    return marks


def _inpaint_marks(gray: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Both steps with the defaults on a checked frame (``original``: the same pixels as stored,
    colour kept, for the colour marks)."""
    return _inpaint(gray, _find_marks(gray, original) != 0, _FILL_WINDOW)


def _glyph_marks(
    gray: np.ndarray, min_contrast: int, glyph_size: tuple[int, int], min_pixels: int
) -> np.ndarray:
    square = np.ones((3, 3), np.uint8)
    thin = (cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, square) >= min_contrast).astype(np.uint8)
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
        marks = np.asarray(cv2.dilate(marks, square), np.uint8)
    return marks


def inpaint_annotations(
    image: np.ndarray | PathLike,
    annotations: np.ndarray | None = None,
    *,
    window: int = _FILL_WINDOW,
) -> np.ndarray:
    """Inpaint annotation pixels: each gets the mean of its unmarked neighbours.

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
    >>> int(inpaint_annotations(crop, marks)[10, 9])
    100
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    array, name = _load_frame(image)
    gray = _to_gray(array, name)
    if annotations is None:
        annotations = _find_marks(gray, array)
    elif np.shape(annotations) != gray.shape:
        raise ValueError(
            f"{name}: annotation mask of shape {annotations.shape} does not match the "
            f"image's {gray.shape}"
        )
    return _inpaint(gray, np.asarray(annotations) != 0, window)


def _inpaint(gray: np.ndarray, marked: np.ndarray, window: int) -> np.ndarray:
    """`inpaint_annotations` on a uint8 image and a boolean mask."""
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


def _color_marks(image: np.ndarray, min_chroma: int = _MIN_CHROMA) -> np.ndarray | None:
    """Pixels of a BGR frame whose channels differ by >= ``min_chroma`` (overlays); None if grey."""
    if image.ndim != 3 or image.shape[2] != 3:
        return None
    if image.dtype == np.uint16:
        min_chroma *= 257
    # OpenCV's per-channel max/min: ~20x faster than numpy's reductions over the last axis.
    blue, green, red = cv2.split(image)
    chroma = cv2.subtract(cv2.max(cv2.max(blue, green), red), cv2.min(cv2.min(blue, green), red))
    return (chroma >= min_chroma).view(np.uint8)
