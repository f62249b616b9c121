r"""Boundary metrics of binary masks: HD95, normalised surface Dice, empty-mask rules.

Overlap metrics (`thyroidseg.metrics`) weigh every pixel alike; these measure how far the
outlines lie apart. The border $\partial A$ of a mask $A$ is the set of its pixels with a
4-neighbour outside it (outside the image counts as outside), and $d(a, \partial B)$ the
Euclidean distance from pixel centre $a$ to the nearest border pixel of $B$, scaled by the
pixel ``spacing``:

* `hausdorff_distance_95`: the 95th percentile of those distances, the larger of the two
  directions;
* `normalized_surface_dice`: the share of both borders within a tolerance of the other;
* `boundary_metrics`: both from one distance computation (what
  `thyroidseg.metrics.evaluation.evaluate_folders` uses), and the one place where the empty-mask
  rules are applied: NaN when both masks are empty, HD95 ``inf`` and NSD 0 when exactly one is.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from thyroidseg.metrics.counting import LabelMap

__all__ = ["Spacing", "boundary_metrics", "hausdorff_distance_95", "normalized_surface_dice"]

Spacing = float | tuple[float, float] | None
"""Pixel size: one number (square pixels) or ``(row spacing, column spacing)``; ``None`` = 1."""

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def hausdorff_distance_95(pred: LabelMap, target: LabelMap, *, spacing: Spacing = None) -> float:
    r"""95th-percentile symmetric Hausdorff distance between the borders of two binary masks.

    The border $\partial A$ of a mask $A$ is the set of its pixels with a 4-neighbour
    outside it (outside the image counts as outside). With $d(a, \partial B)$ the Euclidean
    distance from pixel centre $a$ to the nearest border pixel of $B$ (scaled by
    ``spacing``):

    $$HD_{95} = \max\big(P_{95}\{d(a, \partial T) : a \in \partial P\},\;
    P_{95}\{d(b, \partial P) : b \in \partial T\}\big)$$

    with $P_{95}$ the linearly interpolated 95th percentile. This is MONAI's
    ``compute_hausdorff_distance(..., percentile=95)`` (agreement to 1e-5 px in
    ``benchmarks/bench_metrics.py``). DeepMind surface-distance's
    ``compute_robust_hausdorff(..., 95)`` differs slightly: it weights the percentile by
    surface-element area and defines the boundary otherwise.

    Parameters
    ----------
    pred, target
        Binary masks ``(H, W)`` of the same shape: bool, or integers in ``{0, 1}``
        (numpy arrays or torch tensors).
    spacing
        Pixel size, one number or ``(rows, columns)``; default ``None`` measures in pixels.

    Returns
    -------
    float
        ``0.0`` for identical non-empty masks. Empty masks, as MONAI: NaN when both are
        empty (nothing to measure), ``inf`` when exactly one is empty.

    Examples
    --------
    >>> a = np.zeros((8, 8), np.uint8); a[2:5, 2:5] = 1
    >>> b = np.zeros((8, 8), np.uint8); b[2:5, 3:6] = 1  # shifted one column
    >>> hausdorff_distance_95(a, b), hausdorff_distance_95(a, b, spacing=0.5)
    (1.0, 0.5)
    """
    return boundary_metrics(pred, target, tolerance=0.0, spacing=spacing)[0]


def normalized_surface_dice(
    pred: LabelMap, target: LabelMap, *, tolerance: float, spacing: Spacing = None
) -> float:
    r"""Normalised surface Dice: share of both borders lying within ``tolerance`` of the other.

    $$NSD_\tau = \frac{|\{a \in \partial P : d(a, \partial T) \le \tau\}| +
    |\{b \in \partial T : d(b, \partial P) \le \tau\}|}{|\partial P| + |\partial T|}$$

    with borders and distances as in `hausdorff_distance_95`. This is MONAI's
    ``compute_surface_dice`` (without sub-voxel areas). It forgives disagreements smaller
    than $\tau$, e.g. the inter-observer spread of the outline.

    Parameters
    ----------
    pred, target
        Binary masks ``(H, W)``, as `hausdorff_distance_95`.
    tolerance
        $\tau$, in the unit of ``spacing`` (pixels by default); required, >= 0.
    spacing
        Pixel size, one number or ``(rows, columns)``; ``None`` = 1.

    Returns
    -------
    float
        In ``[0, 1]``. Empty masks, as MONAI: NaN when both are empty, 0 when exactly one is.

    Examples
    --------
    >>> a = np.zeros((8, 8), np.uint8); a[2:5, 2:5] = 1
    >>> b = np.zeros((8, 8), np.uint8); b[2:5, 3:6] = 1
    >>> normalized_surface_dice(a, b, tolerance=1.0), normalized_surface_dice(a, b, tolerance=0.0)
    (1.0, 0.5)
    """
    return boundary_metrics(pred, target, tolerance=tolerance, spacing=spacing)[1]


def boundary_metrics(
    pred: LabelMap, target: LabelMap, *, tolerance: float, spacing: Spacing = None
) -> tuple[float, float]:
    r"""`hausdorff_distance_95` and `normalized_surface_dice` at the cost of one.

    Both come from the same two sets of border distances, measured once; this is where the
    empty-mask rules of both are applied (as MONAI):

    | masks | HD95 | NSD |
    |---|---|---|
    | both empty | NaN | NaN |
    | exactly one empty | ``inf`` | 0 |

    Parameters
    ----------
    pred, target
        Binary masks ``(H, W)`` of the same shape, as `hausdorff_distance_95`.
    tolerance
        NSD tolerance $\tau$, in the unit of ``spacing``; >= 0.
    spacing
        Pixel size, one number or ``(rows, columns)``; ``None`` = 1.

    Returns
    -------
    tuple of float
        ``(hd95, nsd)``, equal to the two functions' results.

    Examples
    --------
    >>> a = np.zeros((8, 8), np.uint8); a[2:5, 2:5] = 1
    >>> b = np.zeros((8, 8), np.uint8); b[2:5, 3:6] = 1
    >>> boundary_metrics(a, b, tolerance=0.0)
    (1.0, 0.5)
    >>> boundary_metrics(a, np.zeros_like(a), tolerance=2.0)
    (inf, 0.0)
    """
    _check_tolerance(tolerance)
    pred_mask, target_mask, pixel = _boundary_inputs(pred, target, spacing)
    n_empty = int(not pred_mask.any()) + int(not target_mask.any())
    if n_empty:
        return _IF_EMPTY[n_empty]
    pred_to_target, target_to_pred = _surface_distances(pred_mask, target_mask, pixel)
    hd95 = max(np.percentile(pred_to_target, 95), np.percentile(target_to_pred, 95))
    within = np.count_nonzero(pred_to_target <= tolerance) + np.count_nonzero(
        target_to_pred <= tolerance
    )
    return float(hd95), float(within / (pred_to_target.size + target_to_pred.size))


_IF_EMPTY: dict[int, tuple[float, float]] = {1: (math.inf, 0.0), 2: (math.nan, math.nan)}
"""Number of empty masks -> ``(HD95, NSD)``: the empty-mask rules, in one place."""


def _check_tolerance(tolerance: float) -> None:
    if not isinstance(tolerance, (int, float, np.number)) or not (0 <= tolerance < math.inf):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")


def _boundary_inputs(
    pred: LabelMap, target: LabelMap, spacing: Spacing
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    pred_mask, target_mask = _binary_mask(pred, "pred"), _binary_mask(target, "target")
    if pred_mask.shape != target_mask.shape:
        raise ValueError(f"pred and target shapes differ: {pred_mask.shape} vs {target_mask.shape}")
    return pred_mask, target_mask, _spacing_pair(spacing)


def _binary_mask(mask: LabelMap, name: str) -> np.ndarray:
    """Validate one ``(H, W)`` binary mask and return it as a bool numpy array."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer)):
        raise ValueError(
            f"{name} has dtype {mask.dtype}: a binary mask must be bool or integer 0/1 "
            "(threshold probabilities first)"
        )
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"{name} must be a non-empty (H, W) mask, got shape {mask.shape}")
    if mask.dtype != np.bool_:
        if mask.min() < 0 or mask.max() > 1:
            shown = ", ".join(str(v) for v in np.unique(mask)[:10])
            raise ValueError(f"{name} is not binary: values {shown} (expected 0 and 1)")
        mask = mask.astype(np.bool_)
    return np.ascontiguousarray(mask)


def _spacing_pair(spacing: Spacing) -> tuple[float, float]:
    pair = np.ones(2) if spacing is None else np.asarray(spacing, dtype=np.float64).ravel()
    if pair.size == 1:
        pair = np.repeat(pair, 2)
    if pair.size != 2 or not all(math.isfinite(s) and s > 0 for s in pair):
        raise ValueError(
            f"spacing must be one or two positive finite numbers (rows, columns), got {spacing!r}"
        )
    return float(pair[0]), float(pair[1])


def _border(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the image outside is outside)."""
    eroded = cv2.erode(mask.view(np.uint8), _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & (eroded == 0)


def _surface_distances(
    pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances pred border -> target border and target border -> pred border.

    Both masks must be non-empty (`boundary_metrics` applies the empty-mask rules first).
    """
    # Work inside the bounding box of both masks: the pixels outside it belong to neither
    # mask, so borders (the erosion pads with background) and distances are unchanged.
    union = pred | target
    rows, columns = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))
    pred_border = _border(np.ascontiguousarray(pred[box]))
    target_border = _border(np.ascontiguousarray(target[box]))
    return (
        _distances_to(pred_border, target_border, spacing),
        _distances_to(target_border, pred_border, spacing),
    )


def _distances_to(
    source: np.ndarray, destination: np.ndarray, spacing: tuple[float, float]
) -> np.ndarray:
    """For each pixel of ``source``, the Euclidean distance to the nearest of ``destination``."""
    row_step, column_step = spacing
    if row_step == column_step:
        # Exact Euclidean distance transform (DIST_MASK_PRECISE) to the zeros of the input.
        distance = cv2.distanceTransform(
            (~destination).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
        )
        return distance[source].astype(np.float64) * row_step
    # Anisotropic pixels: OpenCV has no spacing argument, so compare point sets in chunks.
    scale = np.array(spacing)
    from_points, to_points = np.argwhere(source) * scale, np.argwhere(destination) * scale
    out = np.empty(len(from_points))
    chunk = max(1, 4_000_000 // len(to_points))
    for start in range(0, len(from_points), chunk):
        block = from_points[start : start + chunk]
        squared = ((block[:, None, :] - to_points[None, :, :]) ** 2).sum(axis=-1)
        out[start : start + chunk] = np.sqrt(squared.min(axis=1))
    return out
