"""Clean a predicted mask view by view: what the frame's geometry and the nodules allow.

`postprocess_views` is the last step of `thyroidseg.inference.Segmenter`: nothing outside the
scan region's views, then per view a minimum component area and mean probability, optionally
the largest component only, and hole filling.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from thyroidseg._checks import check_probability

__all__ = ["postprocess_views"]


def postprocess_views(
    mask: np.ndarray,
    views: Sequence[Sequence[int]],
    *,
    keep_largest: bool = False,
    min_area: int = 0,
    fill_holes: bool = False,
    probability: np.ndarray | None = None,
    min_probability: float = 0.0,
) -> np.ndarray:
    """Clean a binary mask view by view.

    Pixels outside every view (the margin around the scan region, the gap between the two
    halves of a split-screen frame) are set to 0. Then, inside each view separately:
    connected components (8-connectivity) smaller than ``min_area`` pixels are removed,
    and with ``keep_largest`` only the largest remaining one is kept. Working per view keeps
    one nodule in each half of a split-screen frame, where a frame-wide "largest component"
    rule would delete one of them.

    Parameters
    ----------
    mask
        ``(H, W)`` array; non-zero is nodule.
    views
        Boxes ``(x0, y0, x1, y1)`` in the mask's coordinates (``Preprocessed.views``).
    keep_largest
        Keep only the largest component in each view (default ``False``).
    min_area
        Remove components with fewer pixels (default 0: keep all).
    probability, min_probability
        Remove components whose mean nodule probability over their pixels is below
        ``min_probability`` (default 0: keep all); ``probability`` is the ``(H, W)`` map,
        needed when ``min_probability > 0``.
    fill_holes
        Fill the holes of each component (background regions that do not touch the
        view's border, 4-connectivity), after the component rules (default ``False``).

    Returns
    -------
    numpy.ndarray
        ``uint8`` ``{0, 1}`` mask of the same shape.

    Examples
    --------
    >>> mask = np.zeros((4, 8), np.uint8)
    >>> mask[1:3, 0:2] = 1; mask[1, 4] = 1; mask[0:2, 6:8] = 1
    >>> postprocess_views(mask, [(0, 0, 5, 4), (5, 0, 8, 4)], keep_largest=True)
    array([[0, 0, 0, 0, 0, 0, 1, 1],
           [1, 1, 0, 0, 0, 0, 1, 1],
           [1, 1, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0]], dtype=uint8)
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    check_probability("min_probability", min_probability)
    if min_probability > 0 and (probability is None or np.shape(probability) != mask.shape):
        raise ValueError(
            f"min_probability={min_probability} needs a probability map of shape {mask.shape}"
        )
    out = np.zeros(mask.shape, np.uint8)
    for x0, y0, x1, y1 in views:
        part = (mask[y0:y1, x0:x1] != 0).astype(np.uint8)
        if keep_largest or min_area > 0 or min_probability > 0:
            count, labels, stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
            areas = stats[1:, cv2.CC_STAT_AREA]
            keep = areas >= min_area
            if min_probability > 0 and probability is not None:  # checked above
                sums = np.bincount(labels.ravel(), probability[y0:y1, x0:x1].ravel(), count)
                keep &= sums[1:] / np.maximum(areas, 1) >= min_probability
            if keep_largest and keep.any():
                keep &= areas == areas[keep].max()
                keep &= np.cumsum(keep) == 1  # one component even when two tie
            part = np.isin(labels, 1 + np.flatnonzero(keep)).astype(np.uint8)
        if fill_holes and part.any():
            part = _fill_holes(part)
        out[y0:y1, x0:x1] |= part
    return out


def _fill_holes(part: np.ndarray) -> np.ndarray:
    """``part`` with every background region that does not touch its border set to 1."""
    padded = np.pad(part, 1)
    outside = padded.copy()
    cv2.floodFill(outside, None, (0, 0), 1, flags=4)  # background reachable from the border
    holes = outside[1:-1, 1:-1] == 0
    return part | holes.astype(np.uint8)
