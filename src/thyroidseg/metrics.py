r"""Segmentation metrics with explicit definitions: confusion matrix, overlap, boundary.

Everything here starts from one object, the **confusion matrix** $M$ of a label map:
$M_{ij}$ is the number of pixels whose true class is $i$ and whose predicted class is
$j$ (rows truth, columns prediction). For a class $c$:

$$TP_c = M_{cc}, \quad FP_c = \sum_i M_{ic} - TP_c, \quad FN_c = \sum_j M_{cj} - TP_c,
\quad TN_c = \sum_{ij} M_{ij} - TP_c - FP_c - FN_c.$$

Every metric is a ratio of these counts. A ratio whose denominator is zero is undefined and
returned as NaN (never 0, never a warning): a class absent from both truth and prediction
has no IoU. Reductions over classes or images skip NaN values and say how many they skipped.

The module has three layers:

* pure functions on stacks of confusion matrices of shape ``(..., C, C)``
  (`iou`, `dice`, `precision`, `recall`, `specificity`,
  `pixel_accuracy`, `mean_iou`, `mean_dice`,
  `frequency_weighted_iou`, `balanced_accuracy`) and the counter
  `confusion_matrices` that builds one matrix per image;
* `ConfusionMatrix`, the accumulating object used during evaluation, which keeps one
  small matrix per image so that both aggregations are available: **pooled** (sum the
  matrices of all images, then take the ratio) and **per image** (one ratio per image, then
  mean, std and a bootstrap confidence interval, see `summarize`);
* boundary metrics for binary masks (`hausdorff_distance_95`,
  `normalized_surface_dice`) and `evaluate_folders`, which scores a folder of
  predicted masks against a folder of reference masks (the ``thyroidseg evaluate`` command).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from thyroidseg._io import PathLike, list_images, read_binary_mask
from thyroidseg._progress import Progress
from thyroidseg.preprocessing import resize_mask

__all__ = [
    "ConfusionMatrix",
    "FolderEvaluation",
    "Summary",
    "balanced_accuracy",
    "confusion_matrices",
    "dice",
    "evaluate_folders",
    "frequency_weighted_iou",
    "hausdorff_distance_95",
    "iou",
    "mean_dice",
    "mean_iou",
    "normalized_surface_dice",
    "pixel_accuracy",
    "precision",
    "recall",
    "specificity",
    "summarize",
]

LabelMap = np.ndarray | torch.Tensor
"""An integer label map: a numpy array or a torch tensor (any device)."""

Spacing = float | tuple[float, float] | None
"""Pixel size: one number (square pixels) or ``(row spacing, column spacing)``; ``None`` = 1."""


# --------------------------------------------------------------------------------------
# Counting: label maps -> one confusion matrix per image
# --------------------------------------------------------------------------------------


def confusion_matrices(
    pred: LabelMap,
    target: LabelMap,
    num_classes: int = 2,
    *,
    ignore_index: int | None = None,
) -> np.ndarray:
    """Count one confusion matrix per image.

    Parameters
    ----------
    pred, target
        Integer (or boolean) label maps, numpy arrays or torch tensors, of shape ``(H, W)``
        (one image), ``(N, H, W)`` or ``(N, 1, H, W)`` (a batch of ``N``). The two may use
        different ones of these layouts as long as they describe the same ``N, H, W``.
        Tensors on an accelerator are counted there (only the small result is copied to
        the CPU); CPU tensors are counted through zero-copy numpy views. A numpy array
        paired with a tensor is moved to the tensor's device.
    num_classes
        Number of classes ``C``; every label must lie in ``[0, C)``.
    ignore_index
        Pixels whose *target* equals this value are not counted (the prediction there is
        still checked to be a valid label). It may lie outside ``[0, C)`` (e.g. 255).

    Returns
    -------
    numpy.ndarray
        ``int64`` array of shape ``(N, C, C)``: ``out[n, i, j]`` = pixels of image ``n`` whose
        true class is ``i`` and predicted class is ``j``.

    Raises
    ------
    ValueError
        Shapes differ or are not one of the layouts above, an array is empty, a label map is
        floating point (threshold or argmax it first), or a label lies outside
        ``[0, num_classes)``; the message names the shapes or the offending values.

    Examples
    --------
    >>> import numpy as np
    >>> pred = np.array([[0, 1], [1, 1]])
    >>> target = np.array([[0, 1], [0, 1]])
    >>> confusion_matrices(pred, target)
    array([[[1, 1],
            [0, 2]]])
    """
    _check_num_classes(num_classes)
    if ignore_index is not None and not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}")
    pred, target = _as_same_kind(pred, target)
    if isinstance(pred, torch.Tensor) and pred.device.type == "cpu":
        pred, target = pred.numpy(), target.numpy()  # zero-copy views: numpy is faster on CPU
    return _validate_and_count(pred, target, num_classes, ignore_index)


def _validate_and_count(
    pred: LabelMap, target: LabelMap, num_classes: int, ignore_index: int | None
) -> np.ndarray:
    """Check and count two numpy arrays, or two tensors with torch ops on their device."""
    pred3, target3 = _as_batch(pred, "pred"), _as_batch(target, "target")
    if pred3.shape != target3.shape:
        raise ValueError(
            f"pred and target shapes differ: pred {tuple(pred.shape)} vs target "
            f"{tuple(target.shape)} (expected the same (H, W), (N, H, W) or (N, 1, H, W))"
        )
    _check_labels(pred3, "pred", num_classes, None)
    _check_labels(target3, "target", num_classes, ignore_index)
    if isinstance(pred3, torch.Tensor):
        return _count_torch(pred3, target3, num_classes, ignore_index)
    return _count_numpy(pred3, target3, num_classes, ignore_index)


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")


def _as_same_kind(pred: Any, target: Any) -> tuple[LabelMap, LabelMap]:
    """Make both numpy arrays or both tensors on one device."""
    pred_is_tensor, target_is_tensor = (
        isinstance(pred, torch.Tensor),
        isinstance(target, torch.Tensor),
    )
    if pred_is_tensor and target_is_tensor:
        if pred.device != target.device:
            raise ValueError(
                f"pred and target are on different devices: {pred.device} vs {target.device}"
            )
        return pred, target
    if pred_is_tensor:
        return pred, torch.as_tensor(np.asarray(target), device=pred.device)
    if target_is_tensor:
        return torch.as_tensor(np.asarray(pred), device=target.device), target
    return np.asarray(pred), np.asarray(target)


_TORCH_LIMITED_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def _as_batch(labels: LabelMap, name: str) -> LabelMap:
    """``(H, W)`` / ``(N, H, W)`` / ``(N, 1, H, W)`` -> ``(N, H, W)``, after dtype checks."""
    if isinstance(labels, torch.Tensor):
        floating = labels.is_floating_point() or labels.is_complex()
        integral = not floating
    else:
        floating = np.issubdtype(labels.dtype, np.inexact)
        integral = labels.dtype == np.bool_ or np.issubdtype(labels.dtype, np.integer)
    if floating:
        raise ValueError(
            f"{name} has floating-point dtype {labels.dtype}: label maps must be integers; "
            "threshold probabilities or take the argmax of logits first"
        )
    if not integral:
        raise ValueError(f"{name} has dtype {labels.dtype}: expected an integer or boolean array")
    if isinstance(labels, torch.Tensor) and labels.dtype in _TORCH_LIMITED_UNSIGNED:
        labels = labels.long()  # torch has no min/max/bincount for these
    shape = tuple(labels.shape)
    if 0 in shape:
        raise ValueError(f"{name} is empty (shape {shape})")
    if len(shape) == 2:
        return labels[None]
    if len(shape) == 3:
        return labels
    if len(shape) == 4 and shape[1] == 1:
        return labels[:, 0]
    if len(shape) == 4:
        raise ValueError(
            f"{name} has shape {shape}: with 4 dimensions the second must be 1 (N, 1, H, W); "
            "for one-hot or per-class scores take the argmax over the class axis first"
        )
    raise ValueError(f"{name} has shape {shape}: expected (H, W), (N, H, W) or (N, 1, H, W)")


def _check_labels(labels: LabelMap, name: str, num_classes: int, ignore_index: int | None) -> None:
    """Raise if a label lies outside ``[0, num_classes)`` (``ignore_index`` allowed)."""
    if labels.dtype in (np.bool_, torch.bool):
        return
    # Fast min/max passes first; the slower search for the offending values only on failure.
    if isinstance(labels, torch.Tensor):
        if labels.dtype == torch.uint8:
            low, high = 0, labels.max().item()
        else:
            low, high = (value.item() for value in torch.aminmax(labels))
    else:
        low = 0 if np.issubdtype(labels.dtype, np.unsignedinteger) else labels.min()
        high = labels.max()
    if 0 <= low and high < num_classes:
        return
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    values = labels[bad]
    if isinstance(values, torch.Tensor):
        values = values.cpu().numpy()
    if values.size == 0:
        return
    unique = np.unique(values)
    shown = ", ".join(str(v) for v in unique[:10]) + (", ..." if unique.size > 10 else "")
    allowed = f"[0, {num_classes})" + (f" or {ignore_index}" if ignore_index is not None else "")
    raise ValueError(f"{name} has labels outside {allowed}: {shown} ({values.size} pixels)")


def _count_numpy(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None
) -> np.ndarray:
    n_images = pred.shape[0]
    if num_classes == 2 and ignore_index is None:
        # Binary fast path: three np.count_nonzero per image on boolean views, no index array.
        p, t = _as_bool(pred), _as_bool(target)
        both = np.empty(p.shape[1:], dtype=np.bool_)
        counts = np.empty((n_images, 3), dtype=np.int64)
        for k in range(n_images):
            np.logical_and(p[k], t[k], out=both)
            counts[k] = (np.count_nonzero(both), np.count_nonzero(p[k]), np.count_nonzero(t[k]))
        return _binary_matrices(counts, pred[0].size)
    image = np.arange(n_images, dtype=np.int64)[:, None, None]
    flat = (image * num_classes + target.astype(np.int64)) * num_classes + pred.astype(np.int64)
    if ignore_index is not None:
        flat = flat[target != ignore_index]
    counts = np.bincount(flat.ravel(), minlength=n_images * num_classes**2)
    return counts.reshape(n_images, num_classes, num_classes).astype(np.int64, copy=False)


def _as_bool(labels: np.ndarray) -> np.ndarray:
    """A {0, 1} array as bool, without a copy for 1-byte dtypes."""
    if labels.dtype == np.bool_:
        return labels
    if labels.dtype.itemsize == 1:
        return np.ascontiguousarray(labels).view(np.bool_)
    return labels != 0


def _binary_matrices(counts: Any, pixels_per_image: int) -> np.ndarray:
    """Rows ``(TP, predicted positives, true positives)`` -> ``(N, 2, 2)`` matrices."""
    counts = np.asarray(counts, dtype=np.int64)
    tp, pred_pos, true_pos = counts[:, 0], counts[:, 1], counts[:, 2]
    out = np.empty((counts.shape[0], 2, 2), dtype=np.int64)
    out[:, 1, 1] = tp
    out[:, 0, 1] = pred_pos - tp
    out[:, 1, 0] = true_pos - tp
    out[:, 0, 0] = pixels_per_image - pred_pos - true_pos + tp
    return out


def _count_torch(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> np.ndarray:
    n_images = pred.shape[0]
    if num_classes == 2 and ignore_index is None:
        p, t = pred.bool(), target.bool()
        counts = torch.stack([(p & t).sum((1, 2)), p.sum((1, 2)), t.sum((1, 2))], dim=1)
        return _binary_matrices(counts.cpu().numpy(), pred[0].numel())
    image = torch.arange(n_images, device=pred.device)[:, None, None]
    flat = (image * num_classes + target.long()) * num_classes + pred.long()
    if ignore_index is not None:
        flat = flat[target != ignore_index]
    counts = torch.bincount(flat.reshape(-1), minlength=n_images * num_classes**2)
    return counts.reshape(n_images, num_classes, num_classes).cpu().numpy().astype(np.int64)


# --------------------------------------------------------------------------------------
# Metrics: confusion matrices (..., C, C) -> per-class values (..., C) or scalars (...)
# --------------------------------------------------------------------------------------


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` as float64, NaN where the denominator is 0 (no warning)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _nanmean(values: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Mean over ``axis`` ignoring NaN; NaN (not a warning) when every value is NaN."""
    defined = ~np.isnan(values)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    result = _safe_divide(total, defined.sum(axis=axis))
    return float(result) if result.ndim == 0 else result


def _counts(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    tp, fp, fn, _ = _counts(matrix)
    return _safe_divide(tp, tp + fp + fn)


def dice(matrix: np.ndarray) -> np.ndarray:
    r"""Dice coefficient (= F1 score) per class: $2TP/(2TP+FP+FN) = 2\,IoU/(1+IoU)$.

    Same input and output as `iou`.

    Examples
    --------
    >>> dice(np.array([[6, 1], [1, 2]])).round(4)
    array([0.8571, 0.6667])
    """
    tp, fp, fn, _ = _counts(matrix)
    return _safe_divide(2 * tp, 2 * tp + fp + fn)


def precision(matrix: np.ndarray) -> np.ndarray:
    r"""Precision (positive predictive value) per class: $TP/(TP+FP)$; NaN if never predicted."""
    tp, fp, _, _ = _counts(matrix)
    return _safe_divide(tp, tp + fp)


def recall(matrix: np.ndarray) -> np.ndarray:
    r"""Recall (sensitivity) per class: $TP/(TP+FN)$; NaN if the class is absent from truth."""
    tp, _, fn, _ = _counts(matrix)
    return _safe_divide(tp, tp + fn)


def specificity(matrix: np.ndarray) -> np.ndarray:
    r"""Specificity per class: $TN/(TN+FP)$; NaN if every pixel truly is that class.

    $TN_c$ counts the pixels correctly predicted as *not* class $c$ (whatever else they are).
    """
    _, fp, _, tn = _counts(matrix)
    return _safe_divide(tn, tn + fp)


def pixel_accuracy(matrix: np.ndarray) -> np.ndarray | float:
    r"""Fraction of pixels predicted correctly: $\operatorname{tr}(M)/\sum_{ij} M_{ij}$.

    Dominated by the background when the object is small (see the Metrics docs page).
    Returns a float for one matrix, an array ``(...)`` for a stack; NaN for an empty matrix.

    Examples
    --------
    >>> pixel_accuracy(np.array([[6, 1], [1, 2]]))
    0.8
    """
    tp, _, _, _ = _counts(matrix)
    result = _safe_divide(tp.sum(axis=-1), np.asarray(matrix).sum(axis=(-2, -1)))
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
    return _nanmean(values if include_background else values[..., 1:])


def mean_dice(matrix: np.ndarray, include_background: bool = True) -> np.ndarray | float:
    r"""Mean of the per-class Dice over the classes where it is defined; see `mean_iou`.

    With ``include_background=True`` this is the macro-averaged F1 score.
    """
    values = dice(matrix)
    return _nanmean(values if include_background else values[..., 1:])


def frequency_weighted_iou(matrix: np.ndarray) -> np.ndarray | float:
    r"""IoU per class weighted by the class's share of the true pixels.

    $\mathrm{FWIoU} = \sum_c \frac{n_c}{n}\, IoU_c$ with $n_c = \sum_j M_{cj}$ the true pixels
    of class $c$ and $n$ all counted pixels; classes with $n_c = 0$ weigh nothing.
    Even more background-dominated than `mean_iou`.
    """
    tp, _, fn, _ = _counts(matrix)
    true_pixels = tp + fn
    weighted = true_pixels * np.nan_to_num(iou(matrix))  # IoU is only NaN where n_c = 0
    result = _safe_divide(weighted.sum(axis=-1), true_pixels.sum(axis=-1))
    return float(result) if result.ndim == 0 else result


def balanced_accuracy(matrix: np.ndarray) -> np.ndarray | float:
    r"""Mean recall over the classes present in the truth (the macro-averaged recall).

    $\mathrm{BA} = \frac{1}{|D|}\sum_{c\in D} TP_c/(TP_c+FN_c)$, $D$ the classes with $TP_c+FN_c>0$.

    Unlike `pixel_accuracy`, a model that predicts background everywhere scores
    $1/|D|$ (0.5 for a binary task), not the background's share of the pixels.
    """
    return _nanmean(recall(matrix))


_PER_CLASS_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "iou": iou,
    "dice": dice,
    "precision": precision,
    "recall": recall,
    "specificity": specificity,
}


# --------------------------------------------------------------------------------------
# Summaries over images
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Mean, spread and bootstrap confidence interval of one value per image.

    Attributes
    ----------
    mean, std
        Mean and sample standard deviation (``ddof=1``) of the included values.
    ci_low, ci_high
        Percentile-bootstrap confidence interval of the mean (level ``confidence``).
    confidence
        Level of the interval, e.g. ``0.95``.
    n_images
        Number of values included.
    n_excluded
        Number of values left out because they were NaN or infinite (e.g. IoU of an image
        where truth and prediction both lack the class, HD95 when one mask is empty).

    ``std`` and the interval are NaN with fewer than 2 values; everything is NaN with none.
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float
    n_images: int
    n_excluded: int

    def __str__(self) -> str:
        level = f"{self.confidence:.0%}"
        return (
            f"{self.mean:.4f} +- {self.std:.4f} [{level} CI {self.ci_low:.4f}, "
            f"{self.ci_high:.4f}] (n={self.n_images}, excluded {self.n_excluded})"
        )

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready fields (NaN becomes ``None``)."""
        return {key: _json_number(value) for key, value in self.__dict__.items()}


def summarize(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> Summary:
    """Summarise one value per image: mean, std and a bootstrap CI of the mean.

    NaN and infinite values are excluded and counted in ``n_excluded``. The interval is the
    percentile bootstrap: resample the included images with replacement ``n_bootstrap``
    times and take the ``(1-confidence)/2`` and ``(1+confidence)/2`` quantiles of the
    resampled means. ``seed`` makes it reproducible.

    Examples
    --------
    >>> s = summarize([0.5, 0.7, float("nan"), 0.9])
    >>> round(s.mean, 4), round(s.std, 4), s.n_images, s.n_excluded
    (0.7, 0.2, 3, 1)
    >>> 0.5 <= s.ci_low <= s.mean <= s.ci_high <= 0.9
    True
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    array = np.asarray(values, dtype=np.float64).ravel()
    included = array[np.isfinite(array)]
    n = included.size
    nan = float("nan")
    mean = float(included.mean()) if n else nan
    std = float(included.std(ddof=1)) if n > 1 else nan
    low = high = nan
    if n > 1:
        rng = np.random.default_rng(seed)
        means = np.empty(n_bootstrap)
        chunk = max(1, 2_000_000 // n)  # bounded memory for many images
        for start in range(0, n_bootstrap, chunk):
            stop = min(start + chunk, n_bootstrap)
            means[start:stop] = included[rng.integers(0, n, (stop - start, n))].mean(axis=1)
        low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2]).tolist()
    return Summary(mean, std, low, high, confidence, n, int(array.size - n))


def _json_number(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# --------------------------------------------------------------------------------------
# The accumulating confusion matrix
# --------------------------------------------------------------------------------------


class ConfusionMatrix:
    r"""Accumulate a confusion matrix over images, keeping one small matrix per image.

    ``matrix[i, j]`` is the number of pixels of true class ``i`` predicted as class ``j``
    (rows truth, columns prediction). Two aggregations come from the same object:

    * **pooled** (`matrix`, `iou`, `dice`, ...): sum the counts of all
      images, then take each ratio once. Large images and large objects weigh more. This is
      what the paper computes, and what torchmetrics' stateful metrics (e.g.
      ``MulticlassJaccardIndex(average=None)``) give when updated over a whole dataset.
    * **per image** (`per_image`, `summary`): take the ratio in every image, then
      average over images, as the TN-SCUI challenge and nnU-Net report. Every image weighs
      the same, so small nodules that the model misses pull the mean down.

    Empty-mask policy of the per-image values: an image where truth and prediction both lack
    the class has no defined IoU/Dice/precision/recall: NaN by default (excluded from
    summaries, and counted), or the value passed as ``empty`` (e.g. ``1.0``). An image with
    no true pixel of the class but some predicted ones scores 0 (and recall NaN); such
    images are counted by `false_positive_images`.

    Parameters
    ----------
    num_classes
        Number of classes ``C`` (default 2: background 0 and nodule 1).
    ignore_index
        Target value whose pixels are not counted (e.g. 255 for "unlabelled"); ``None``
        (default) counts every pixel.

    Examples
    --------
    >>> import numpy as np
    >>> target = np.array([[[0, 0, 1, 1]], [[0, 0, 0, 0]]])  # 2 images of 1 x 4 pixels
    >>> pred = np.array([[[0, 1, 1, 1]], [[0, 0, 0, 1]]])
    >>> cm = ConfusionMatrix(num_classes=2).update(pred, target)
    >>> cm.matrix
    array([[4, 2],
           [0, 2]])
    >>> cm.iou()  # pooled over both images
    array([0.66666667, 0.5       ])
    >>> cm.per_image("iou", cls=1)  # image 2 has no true nodule but a predicted one
    array([0.66666667, 0.        ])
    >>> int(cm.false_positive_images(cls=1).sum())
    1
    """

    def __init__(self, num_classes: int = 2, *, ignore_index: int | None = None) -> None:
        _check_num_classes(num_classes)
        if ignore_index is not None and not isinstance(ignore_index, (int, np.integer)):
            raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._blocks: list[np.ndarray] = []
        self._pooled = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self._synced = False

    @classmethod
    def from_matrices(
        cls, per_image_matrices: np.ndarray, *, ignore_index: int | None = None
    ) -> ConfusionMatrix:
        """Build from per-image matrices ``(N, C, C)`` counted before (e.g. read from disk)."""
        matrices = np.asarray(per_image_matrices)
        if matrices.ndim != 3:
            raise ValueError(
                f"expected per-image matrices of shape (N, C, C), got {matrices.shape}"
            )
        _counts(matrices)  # validates squareness, integer dtype, non-negative counts
        new = cls(matrices.shape[-1], ignore_index=ignore_index)
        new._append(matrices.astype(np.int64))
        return new

    def _append(self, matrices: np.ndarray) -> None:
        self._blocks.append(matrices)
        self._pooled += matrices.sum(axis=0)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"n_images={self.n_images})"
        )

    # -- accumulation ---------------------------------------------------------------------

    def update(self, pred: LabelMap, target: LabelMap) -> ConfusionMatrix:
        """Count a prediction against its target; see `confusion_matrices` for inputs.

        Returns ``self``, so ``ConfusionMatrix().update(p, t).iou()`` works.
        """
        self._append(
            confusion_matrices(pred, target, self.num_classes, ignore_index=self.ignore_index)
        )
        return self

    def reset(self) -> None:
        """Forget every counted image."""
        self._blocks = []
        self._pooled[...] = 0
        self._synced = False

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """A new matrix holding the images of both (``self``'s first)."""
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                "cannot add confusion matrices with different settings: "
                f"num_classes {self.num_classes} vs {other.num_classes}, "
                f"ignore_index {self.ignore_index} vs {other.ignore_index}"
            )
        merged = ConfusionMatrix(self.num_classes, ignore_index=self.ignore_index)
        merged._append(self.per_image_matrices)
        merged._append(other.per_image_matrices)
        return merged

    def sync(self) -> ConfusionMatrix:
        """Gather the per-image matrices of every ``torch.distributed`` process.

        After the call every process holds the images of all processes (in rank order), so
        pooled and per-image metrics are global. A no-op when no process group is
        initialised. Call it once, after the last `update`; a second call raises
        (it would count every image twice) until `reset`.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        if self._synced:
            raise RuntimeError("ConfusionMatrix.sync() was already called; reset() first")
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        local = torch.tensor(self.per_image_matrices, dtype=torch.int64, device=device)
        sizes = [
            torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())
        ]
        dist.all_gather(sizes, torch.tensor([local.shape[0]], device=device))
        longest = int(max(size.item() for size in sizes))
        padded = torch.zeros((longest, *local.shape[1:]), dtype=torch.int64, device=device)
        padded[: local.shape[0]] = local
        gathered = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(gathered, padded)
        self.reset()
        for block, size in zip(gathered, sizes, strict=True):
            self._append(block[: int(size.item())].cpu().numpy())
        self._synced = True
        return self

    # -- state --------------------------------------------------------------------------

    @property
    def per_image_matrices(self) -> np.ndarray:
        """``int64`` array ``(n_images, C, C)``: one confusion matrix per counted image."""
        if len(self._blocks) != 1:
            shape = (0, self.num_classes, self.num_classes)
            merged = np.concatenate(self._blocks) if self._blocks else np.zeros(shape, np.int64)
            merged.flags.writeable = False  # a view of the state: not to be edited in place
            self._blocks = [merged]
        return self._blocks[0]

    @property
    def matrix(self) -> np.ndarray:
        """Pooled ``int64`` matrix ``(C, C)``: the sum over images (rows truth, cols prediction)."""
        return self._pooled.copy()

    @property
    def n_images(self) -> int:
        """Number of images counted so far."""
        return sum(block.shape[0] for block in self._blocks)

    # -- pooled metrics -------------------------------------------------------------------

    def iou(self) -> np.ndarray:
        """Pooled IoU per class, see `iou`."""
        return iou(self.matrix)

    def dice(self) -> np.ndarray:
        """Pooled Dice (F1) per class, see `dice`."""
        return dice(self.matrix)

    def precision(self) -> np.ndarray:
        """Pooled precision per class, see `precision`."""
        return precision(self.matrix)

    def recall(self) -> np.ndarray:
        """Pooled recall (sensitivity) per class, see `recall`."""
        return recall(self.matrix)

    def specificity(self) -> np.ndarray:
        """Pooled specificity per class, see `specificity`."""
        return specificity(self.matrix)

    def pixel_accuracy(self) -> float:
        """Pooled pixel accuracy, see `pixel_accuracy`."""
        return float(pixel_accuracy(self.matrix))

    def mean_iou(self, include_background: bool = True) -> float:
        """Mean of the pooled per-class IoU, see `mean_iou`."""
        return float(mean_iou(self.matrix, include_background))

    def mean_dice(self, include_background: bool = True) -> float:
        """Mean of the pooled per-class Dice, see `mean_dice`."""
        return float(mean_dice(self.matrix, include_background))

    def frequency_weighted_iou(self) -> float:
        """Pooled frequency-weighted IoU, see `frequency_weighted_iou`."""
        return float(frequency_weighted_iou(self.matrix))

    def balanced_accuracy(self) -> float:
        """Pooled balanced accuracy (mean recall), see `balanced_accuracy`."""
        return float(balanced_accuracy(self.matrix))

    # -- per-image metrics ----------------------------------------------------------------

    def per_image(self, metric: str, cls: int = 1, empty: float = float("nan")) -> np.ndarray:
        """One value of a per-class metric per image, in the order the images were counted.

        Parameters
        ----------
        metric
            ``"iou"``, ``"dice"``, ``"precision"``, ``"recall"`` or ``"specificity"``.
        cls
            The class (default 1, the nodule).
        empty
            Value for images where truth and prediction both lack ``cls`` and the metric is
            therefore 0/0 (default NaN: undefined, excluded from summaries; ``1.0`` treats
            "nothing to find, nothing found" as perfect). Other undefined values stay NaN.
        """
        function = _PER_CLASS_METRICS.get(metric)
        if function is None:
            raise ValueError(
                f"unknown metric {metric!r}; choose from {', '.join(_PER_CLASS_METRICS)}"
            )
        self._check_class(cls)
        matrices = self.per_image_matrices
        values = function(matrices)[:, cls]
        tp, fp, fn, _ = _counts(matrices)
        absent = (tp + fp + fn)[:, cls] == 0
        return np.where(absent & np.isnan(values), float(empty), values)

    def false_positive_images(self, cls: int = 1) -> np.ndarray:
        """Boolean per image: no true pixel of ``cls``, but at least one predicted."""
        self._check_class(cls)
        tp, fp, fn, _ = _counts(self.per_image_matrices)
        return ((tp + fn)[:, cls] == 0) & (fp[:, cls] > 0)

    def summary(
        self,
        metric: str,
        cls: int = 1,
        *,
        empty: float = float("nan"),
        confidence: float = 0.95,
        n_bootstrap: int = 2000,
        seed: int = 0,
    ) -> Summary:
        """Mean, std and bootstrap CI over images of `per_image`; see `summarize`."""
        return summarize(
            self.per_image(metric, cls, empty),
            confidence=confidence,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )

    def _check_class(self, cls: int) -> None:
        if not isinstance(cls, (int, np.integer)) or not 0 <= cls < self.num_classes:
            raise ValueError(f"cls must be a class index in [0, {self.num_classes}), got {cls!r}")

    # -- output ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Settings, counts, pooled metrics and per-image summaries as JSON-ready values.

        NaN (undefined) becomes ``None``. Per-image summaries (default empty policy: NaN,
        excluded) are given for every class except the background (class 0).
        ``ConfusionMatrix.from_matrices(np.array(d["per_image_matrices"]))`` rebuilds the
        object.
        """
        pooled: dict[str, Any] = {
            name: [_json_number(v) for v in function(self.matrix)]
            for name, function in _PER_CLASS_METRICS.items()
        }
        pooled.update(
            pixel_accuracy=_json_number(self.pixel_accuracy()),
            mean_iou=_json_number(self.mean_iou()),
            mean_iou_foreground=_json_number(self.mean_iou(include_background=False)),
            mean_dice=_json_number(self.mean_dice()),
            mean_dice_foreground=_json_number(self.mean_dice(include_background=False)),
            frequency_weighted_iou=_json_number(self.frequency_weighted_iou()),
            balanced_accuracy=_json_number(self.balanced_accuracy()),
        )
        per_image = {
            str(cls): {
                **{name: self.summary(name, cls).to_dict() for name in _PER_CLASS_METRICS},
                "false_positive_images": int(self.false_positive_images(cls).sum()),
            }
            for cls in range(1, self.num_classes)
        }
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "n_images": self.n_images,
            "matrix": self.matrix.tolist(),
            "per_image_matrices": self.per_image_matrices.tolist(),
            "pooled": pooled,
            "per_image": per_image,
        }

    def report(self) -> str:
        """Plain text: the matrix, pooled metrics per class, scalars, per-image summaries."""
        matrix = self.matrix
        width = max(9, len(f"{matrix.max():,}") + 2)
        lines = [
            f"Confusion matrix over {self.n_images} images, {matrix.sum():,} pixels "
            "(rows: truth, columns: prediction)",
            " " * 8 + "".join(f"{f'pred {j}':>{width}}" for j in range(self.num_classes)),
        ]
        lines += [
            f"{f'true {i}':<8}" + "".join(f"{v:>{width},}" for v in row)
            for i, row in enumerate(matrix)
        ]
        lines += [
            "",
            "Pooled over all pixels",
            f"{'class':<8}" + "".join(f"{n:>13}" for n in _PER_CLASS_METRICS),
        ]
        table = np.stack([function(matrix) for function in _PER_CLASS_METRICS.values()], axis=1)
        lines += [
            f"{cls:<8}" + "".join(f"{v:>13.4f}" for v in row) for cls, row in enumerate(table)
        ]
        lines += [
            "",
            f"pixel accuracy          {self.pixel_accuracy():.4f}  (dominated by background)",
            f"mean IoU                {self.mean_iou():.4f}  (with background; "
            f"{self.mean_iou(include_background=False):.4f} without)",
            f"mean Dice (macro F1)    {self.mean_dice():.4f}  (with background; "
            f"{self.mean_dice(include_background=False):.4f} without)",
            f"frequency-weighted IoU  {self.frequency_weighted_iou():.4f}",
            f"balanced accuracy       {self.balanced_accuracy():.4f}",
        ]
        for cls in range(1, self.num_classes):
            lines += ["", f"Per image, class {cls}: mean +- std [bootstrap CI] (n used, excluded)"]
            lines += [f"  {name:<12}{self.summary(name, cls)}" for name in _PER_CLASS_METRICS]
            lines.append(
                f"  images with class {cls} predicted but absent from truth: "
                f"{int(self.false_positive_images(cls).sum())}"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Boundary metrics for binary masks
# --------------------------------------------------------------------------------------

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
    pred_mask, target_mask, pixel = _boundary_inputs(pred, target, spacing)
    empty = _empty_case(pred_mask, target_mask, both=float("nan"), one=float("inf"))
    if empty is not None:
        return empty
    pred_to_target, target_to_pred = _surface_distances(pred_mask, target_mask, pixel)
    return _hd95(pred_to_target, target_to_pred)


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
    _check_tolerance(tolerance)
    pred_mask, target_mask, pixel = _boundary_inputs(pred, target, spacing)
    empty = _empty_case(pred_mask, target_mask, both=float("nan"), one=0.0)
    if empty is not None:
        return empty
    return _nsd(*_surface_distances(pred_mask, target_mask, pixel), tolerance)


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


def _empty_case(pred: np.ndarray, target: np.ndarray, *, both: float, one: float) -> float | None:
    """The defined value when a mask is empty, else ``None`` (measure normally)."""
    pred_any, target_any = bool(pred.any()), bool(target.any())
    if not pred_any and not target_any:
        return both
    if not pred_any or not target_any:
        return one
    return None


def _border(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the image outside is outside)."""
    eroded = cv2.erode(mask.view(np.uint8), _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & (eroded == 0)


def _surface_distances(
    pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances pred border -> target border and target border -> pred border (non-empty)."""
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


def _hd95(pred_to_target: np.ndarray, target_to_pred: np.ndarray) -> float:
    return float(max(np.percentile(pred_to_target, 95), np.percentile(target_to_pred, 95)))


def _nsd(pred_to_target: np.ndarray, target_to_pred: np.ndarray, tolerance: float) -> float:
    within = np.count_nonzero(pred_to_target <= tolerance) + np.count_nonzero(
        target_to_pred <= tolerance
    )
    return float(within / (pred_to_target.size + target_to_pred.size))


# --------------------------------------------------------------------------------------
# Evaluating a folder of predictions against a folder of labels
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderEvaluation:
    """Result of `evaluate_folders`: counts per image plus boundary metrics.

    Attributes
    ----------
    stems
        File stems of the evaluated pairs, in the order they were counted.
    confusion
        The `ConfusionMatrix` (2 classes, one matrix per image, same order).
    hd95, nsd
        Per image `hausdorff_distance_95` and `normalized_surface_dice` of the
        nodule (NaN/inf for empty masks as documented there).
    tolerance
        NSD tolerance, in the unit of ``spacing``.
    spacing
        Pixel size used for the boundary metrics (``None``: pixels).
    """

    stems: tuple[str, ...]
    confusion: ConfusionMatrix
    hd95: np.ndarray
    nsd: np.ndarray
    tolerance: float
    spacing: Spacing = None

    def per_image_rows(self) -> list[dict[str, Any]]:
        """One dict per image: stem, pixel counts and every per-image nodule metric."""
        matrices = self.confusion.per_image_matrices
        columns = {name: self.confusion.per_image(name, 1) for name in _PER_CLASS_METRICS}
        return [
            {
                "stem": stem,
                "true_pixels": int(matrices[k, 1].sum()),
                "predicted_pixels": int(matrices[k, :, 1].sum()),
                **{name: float(values[k]) for name, values in columns.items()},
                "hd95": float(self.hd95[k]),
                "nsd": float(self.nsd[k]),
            }
            for k, stem in enumerate(self.stems)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, the confusion-matrix summary, boundary summaries, per image."""
        return {
            "n_pairs": len(self.stems),
            "tolerance": self.tolerance,
            "spacing": None if self.spacing is None else np.asarray(self.spacing, float).tolist(),
            "confusion": self.confusion.to_dict(),
            "hd95": summarize(self.hd95).to_dict(),
            "nsd": summarize(self.nsd).to_dict(),
            "images": [
                {key: _json_number(value) for key, value in row.items()}
                for row in self.per_image_rows()
            ],
        }

    def to_csv(self) -> str:
        """The per-image rows as CSV text (``nan``: undefined, ``inf``: one mask empty)."""
        rows = self.per_image_rows()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def report(self) -> str:
        """Readable text: the confusion-matrix report followed by the boundary metrics."""
        unit = "pixels" if self.spacing is None else "spacing units"
        empty = "one mask empty: HD95 inf, NSD 0; both empty: NaN; inf and NaN are excluded"
        pooled = {"IoU": self.confusion.iou()[1], "Dice": self.confusion.dice()[1]}
        return "\n".join(
            [
                f"{len(self.stems)} prediction/label pairs; class 1 = nodule",
                *(
                    f"nodule {name:<5} pooled {value:.4f}   per image "
                    f"{self.confusion.summary(name.lower())}"
                    for name, value in pooled.items()
                ),
                "",
                self.confusion.report(),
                "",
                f"Boundary metrics of the nodule per image ({empty})",
                f"  {'HD95':<12}{summarize(self.hd95)}  ({unit})",
                f"  {'NSD':<12}{summarize(self.nsd)}  (tolerance {self.tolerance:g} {unit})",
            ]
        )


def evaluate_folders(
    pred_dir: PathLike,
    label_dir: PathLike,
    *,
    threshold: float | None = None,
    resize_labels: bool = False,
    tolerance: float = 2.0,
    spacing: Spacing = None,
    progress: bool | None = None,
) -> FolderEvaluation:
    """Score every predicted mask in ``pred_dir`` against the label of the same stem.

    Files are paired by stem, whatever their image extension (``a.png`` with ``a.jpg``).
    Both are read as one channel and binarised by the library's one mask rule
    (`thyroidseg._io.read_binary_mask`): a lossless mask must be binary and any
    non-zero value is nodule; a JPEG mask is nodule where ``> 127``; with ``threshold``
    given, nodule iff ``value > threshold`` for every file (e.g. probability maps).

    Parameters
    ----------
    pred_dir, label_dir
        Folders of predicted and reference masks.
    threshold
        ``None`` (default): the mask rule above; else foreground iff ``value > threshold``.
    resize_labels
        ``False`` (default): a label whose size differs from its prediction is an error.
        ``True``: resize such labels to the prediction's size with nearest-neighbour
        interpolation (never bilinear, which would invent intermediate labels). Note that
        this changes the reference; resizing predictions back to the label size is better.
    tolerance
        Tolerance of `normalized_surface_dice` (default 2, in the unit of ``spacing``).
    spacing
        Pixel size for the boundary metrics; ``None`` (default) measures in pixels.
    progress
        Progress bar on standard error: ``None`` (default) draws on a terminal only,
        ``False`` never.

    Raises
    ------
    FileNotFoundError, ValueError
        A folder is missing or holds no images; a stem has no counterpart (all are listed);
        an image cannot be read; sizes differ without ``resize_labels`` (all mismatches are
        listed). Nothing is skipped silently.
    """
    _check_tolerance(tolerance)
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
    pixel = _spacing_pair(spacing)
    preds, labels = list_images(pred_dir), list_images(label_dir)
    only_pred, only_label = (
        sorted(preds.keys() - labels.keys()),
        sorted(labels.keys() - preds.keys()),
    )
    if only_pred or only_label:
        parts = []
        if only_pred:
            parts.append(f"predictions without a label in {label_dir}: {_some(only_pred)}")
        if only_label:
            parts.append(f"labels without a prediction in {pred_dir}: {_some(only_label)}")
        raise ValueError("; ".join(parts))
    stems = sorted(preds)
    matrices, hd95, nsd, mismatches = [], [], [], []
    running = np.zeros((2, 2), dtype=np.int64)
    bar = Progress(stems, desc="evaluate", enabled=progress)
    for stem in bar:
        pred = read_binary_mask(preds[stem], threshold=threshold)
        label = read_binary_mask(labels[stem], threshold=threshold)
        if pred.shape != label.shape:
            if not resize_labels:
                mismatches.append(
                    f"{preds[stem].name} {pred.shape[1]}x{pred.shape[0]} vs "
                    f"{labels[stem].name} {label.shape[1]}x{label.shape[0]}"
                )
                continue
            label = resize_mask(label, pred.shape)
        if mismatches:
            continue  # already failing: only collect the remaining mismatches
        matrices.append(confusion_matrices(pred, label)[0])
        running += matrices[-1]
        bar.set_postfix(nodule_iou=float(iou(running)[1]))
        pred_mask, label_mask = pred.view(np.bool_), label.view(np.bool_)
        boundary = _empty_case(pred_mask, label_mask, both=float("nan"), one=float("inf"))
        if boundary is None:
            distances = _surface_distances(pred_mask, label_mask, pixel)
            hd95.append(_hd95(*distances))
            nsd.append(_nsd(*distances, tolerance))
        else:
            hd95.append(boundary)
            nsd.append(0.0 if math.isinf(boundary) else float("nan"))
    if mismatches:
        raise ValueError(
            f"{len(mismatches)} prediction/label pairs differ in size (width x height): "
            f"{_some(mismatches)}; pass resize_labels=True (--resize-labels) to resize the "
            "labels with nearest-neighbour interpolation"
        )
    confusion = ConfusionMatrix.from_matrices(np.stack(matrices))
    return FolderEvaluation(
        tuple(stems), confusion, np.array(hd95), np.array(nsd), float(tolerance), spacing
    )


def _some(items: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
