r"""The ratios of a confusion matrix's counts: pure functions on stacks of matrices.

The *reduce* step after counting (`thyroidseg.metrics.counting.confusion_matrices`), as
torchmetrics' functional metrics beside its stateful classes: each function maps confusion
matrices $M$ of shape ``(..., C, C)`` (rows truth, columns prediction) to per-class values
``(..., C)`` or to scalars ``(...)``. For a class $c$:

$$TP_c = M_{cc}, \quad FP_c = \sum_i M_{ic} - TP_c, \quad FN_c = \sum_j M_{cj} - TP_c,
\quad TN_c = \sum_{ij} M_{ij} - TP_c - FP_c - FN_c.$$

A ratio whose denominator is zero is undefined and returned as NaN (never 0, never a
warning). `thyroidseg.metrics.confusion.ConfusionMatrix` accumulates the matrices of many
images and applies these functions pooled or per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "balanced_accuracy",
    "dice",
    "frequency_weighted_iou",
    "iou",
    "mean_dice",
    "mean_iou",
    "nanmean",
    "pixel_accuracy",
    "precision",
    "recall",
    "specificity",
]


def _divide_or_nan(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` as float64, NaN where the denominator is 0 (no warning).

    The metrics' convention: a ratio with nothing to count is undefined, not 0 (the losses'
    ``_divide_or_zero`` returns 0 instead, so that a gradient exists).
    """
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def nanmean(values: np.ndarray | Sequence[float], axis: int = -1) -> np.ndarray | float:
    r"""Mean over ``axis`` of the defined (non-NaN) values: $\frac{1}{|D|}\sum_{v \in D} v$.

    NaN, without a warning, when no value is defined (all NaN, or none at all). A float
    for a 1-D input, else an array. The one NaN-aware mean of the library (also the
    Trainer's validation mean).

    >>> nanmean([0.5, float("nan"), 1.0])
    0.75
    """
    values = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(values)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    result = _divide_or_nan(total, defined.sum(axis=axis))
    return float(result) if result.ndim == 0 else result


def _tp_fp_fn_tn(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN, TN per class of a stack of confusion matrices, each ``(..., C)``."""
    matrix = np.asarray(matrix)
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2] or matrix.shape[-1] < 2:
        raise ValueError(
            f"expected confusion matrices of shape (..., C, C) with C >= 2, got {matrix.shape}"
        )
    if not np.issubdtype(matrix.dtype, np.integer) or (matrix.size and matrix.min() < 0):
        raise ValueError("a confusion matrix holds non-negative integer counts")
    tp = np.diagonal(matrix, axis1=-2, axis2=-1)
    fp = matrix.sum(axis=-2) - tp
    fn = matrix.sum(axis=-1) - tp
    tn = matrix.sum(axis=(-2, -1))[..., None] - tp - fp - fn
    return tp, fp, fn, tn


def iou(matrix: np.ndarray) -> np.ndarray:
    r"""Intersection over union (Jaccard index) per class: $TP/(TP+FP+FN)$.

    Parameters
    ----------
    matrix
        Confusion matrices ``(..., C, C)``, rows truth, columns prediction.

    Returns
    -------
    numpy.ndarray
        ``(..., C)``; NaN for a class absent from both truth and prediction.

    Examples
    --------
    >>> iou(np.array([[6, 1], [1, 2]]))
    array([0.75, 0.5 ])
    """
    tp, fp, fn, _ = _tp_fp_fn_tn(matrix)
    return _divide_or_nan(tp, tp + fp + fn)


def dice(matrix: np.ndarray) -> np.ndarray:
    r"""Dice coefficient (= F1 score) per class: $2TP/(2TP+FP+FN) = 2\,IoU/(1+IoU)$.

    Same input and output as `iou`.

    Examples
    --------
    >>> dice(np.array([[6, 1], [1, 2]])).round(4)
    array([0.8571, 0.6667])
    """
    tp, fp, fn, _ = _tp_fp_fn_tn(matrix)
    return _divide_or_nan(2 * tp, 2 * tp + fp + fn)


def precision(matrix: np.ndarray) -> np.ndarray:
    r"""Precision (positive predictive value) per class: $TP/(TP+FP)$; NaN if never predicted."""
    tp, fp, _, _ = _tp_fp_fn_tn(matrix)
    return _divide_or_nan(tp, tp + fp)


def recall(matrix: np.ndarray) -> np.ndarray:
    r"""Recall (sensitivity) per class: $TP/(TP+FN)$; NaN if the class is absent from truth."""
    tp, _, fn, _ = _tp_fp_fn_tn(matrix)
    return _divide_or_nan(tp, tp + fn)


def specificity(matrix: np.ndarray) -> np.ndarray:
    r"""Specificity per class: $TN/(TN+FP)$; NaN if every pixel truly is that class.

    $TN_c$ counts the pixels correctly predicted as *not* class $c$ (whatever else they are).
    """
    _, fp, _, tn = _tp_fp_fn_tn(matrix)
    return _divide_or_nan(tn, tn + fp)


def pixel_accuracy(matrix: np.ndarray) -> np.ndarray | float:
    r"""Fraction of pixels predicted correctly: $\operatorname{tr}(M)/\sum_{ij} M_{ij}$.

    Dominated by the background when the object is small (see the Metrics docs page).
    Returns a float for one matrix, an array ``(...)`` for a stack; NaN for an empty matrix.

    Examples
    --------
    >>> pixel_accuracy(np.array([[6, 1], [1, 2]]))
    0.8
    """
    tp, _, _, _ = _tp_fp_fn_tn(matrix)
    result = _divide_or_nan(tp.sum(axis=-1), np.asarray(matrix).sum(axis=(-2, -1)))
    return float(result) if result.ndim == 0 else result


def mean_iou(matrix: np.ndarray, include_background: bool = True) -> np.ndarray | float:
    r"""Mean of the per-class IoU over the classes where it is defined (not NaN).

    $\mathrm{mIoU} = \frac{1}{|D|}\sum_{c \in D} IoU_c$, with $D$ the classes whose IoU is
    defined; class 0 is left out when ``include_background=False``. With a large background
    class, the default (``True``, the convention of the paper and of most natural-image
    benchmarks) is inflated by the background IoU; report ``include_background=False``
    (= nodule IoU for a binary task) as well.

    Examples
    --------
    >>> mean_iou(np.array([[6, 1], [1, 2]]))
    0.625
    >>> mean_iou(np.array([[6, 1], [1, 2]]), include_background=False)
    0.5
    """
    values = iou(matrix)
    return nanmean(values if include_background else values[..., 1:])


def mean_dice(matrix: np.ndarray, include_background: bool = True) -> np.ndarray | float:
    r"""Mean of the per-class Dice over the classes where it is defined; see `mean_iou`.

    With ``include_background=True`` this is the macro-averaged F1 score.
    """
    values = dice(matrix)
    return nanmean(values if include_background else values[..., 1:])


def frequency_weighted_iou(matrix: np.ndarray) -> np.ndarray | float:
    r"""IoU per class weighted by the class's share of the true pixels.

    $\mathrm{FWIoU} = \sum_c \frac{n_c}{n}\, IoU_c$ with $n_c = \sum_j M_{cj}$ the true pixels
    of class $c$ and $n$ all counted pixels; classes with $n_c = 0$ weigh nothing.
    Even more background-dominated than `mean_iou`.
    """
    tp, _, fn, _ = _tp_fp_fn_tn(matrix)
    true_pixels = tp + fn
    weighted = true_pixels * np.nan_to_num(iou(matrix))  # IoU is only NaN where n_c = 0
    result = _divide_or_nan(weighted.sum(axis=-1), true_pixels.sum(axis=-1))
    return float(result) if result.ndim == 0 else result


def balanced_accuracy(matrix: np.ndarray) -> np.ndarray | float:
    r"""Mean recall over the classes present in the truth (the macro-averaged recall).

    $\mathrm{BA} = \frac{1}{|D|}\sum_{c\in D} TP_c/(TP_c+FN_c)$, $D$ the classes with $TP_c+FN_c>0$.

    Unlike `pixel_accuracy`, a model that predicts background everywhere scores
    $1/|D|$ (0.5 for a binary task), not the background's share of the pixels.
    """
    return nanmean(recall(matrix))


_PER_CLASS_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "iou": iou,
    "dice": dice,
    "precision": precision,
    "recall": recall,
    "specificity": specificity,
}
