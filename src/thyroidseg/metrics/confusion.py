r"""Overlap metrics from confusion matrices: per class, pooled and per image.

Everything here starts from the **confusion matrix** $M$ of a label map, counted by
`thyroidseg.metrics.counting.confusion_matrices`: $M_{ij}$ is the number of pixels whose true class
is $i$ and whose predicted class is $j$ (rows truth, columns prediction). For a class $c$:

$$TP_c = M_{cc}, \quad FP_c = \sum_i M_{ic} - TP_c, \quad FN_c = \sum_j M_{cj} - TP_c,
\quad TN_c = \sum_{ij} M_{ij} - TP_c - FP_c - FN_c.$$

Every metric is a ratio of these counts. A ratio whose denominator is zero is undefined and
returned as NaN (never 0, never a warning): a class absent from both truth and prediction
has no IoU. Reductions over classes or images skip NaN values and say how many they skipped.

The module has three parts:

* pure functions on stacks of confusion matrices of shape ``(..., C, C)``, the *reduce*
  step after counting (`iou`, `dice`, `precision`, `recall`, `specificity`,
  `pixel_accuracy`, `mean_iou`, `mean_dice`, `frequency_weighted_iou`,
  `balanced_accuracy`);
* `summarize`: mean, std and a bootstrap confidence interval of one value per image;
* `ConfusionMatrix`, the accumulating object used during evaluation, which keeps one
  small matrix per image so that both aggregations are available: **pooled** (sum the
  matrices of all images, then take the ratio) and **per image** (one ratio per image, then
  `summarize`).

Boundary metrics are in `thyroidseg.metrics.boundary`; scoring folders of masks is
`thyroidseg.metrics.evaluation`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from thyroidseg.metrics.counting import LabelMap, _check_arguments, confusion_matrices
from thyroidseg.metrics.statistics import Summary, _json_number, summarize

__all__ = [
    "ConfusionMatrix",
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

# --------------------------------------------------------------------------------------
# Metrics: confusion matrices (..., C, C) -> per-class values (..., C) or scalars (...)
# --------------------------------------------------------------------------------------


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
        _check_arguments(num_classes, ignore_index)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._blocks: list[np.ndarray] = []
        self._pooled = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self._local: np.ndarray | None = None  # this process's images while synced

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
        _tp_fp_fn_tn(matrices)  # validates squareness, integer dtype, non-negative counts
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
        self._local = None

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

    def sync(
        self, process_group: Any | None = None, *, should_sync: bool = True
    ) -> ConfusionMatrix:
        """Gather the per-image matrices of every process of a ``torch.distributed`` group.

        After the call every process holds the images of all processes of ``process_group``
        (the default group when ``None``), in rank order, so pooled and per-image metrics
        are global; `unsync` gives back this process's own. As torchmetrics'
        ``Metric.sync``: nothing happens with ``should_sync=False`` (e.g. when every process
        counted every image already) or when no process group is initialised. Call it once,
        after the last `update`; a second call raises (it would count every image twice)
        until `unsync` or `reset`.
        """
        if not (should_sync and dist.is_available() and dist.is_initialized()):
            return self
        if self._local is not None:
            raise RuntimeError("ConfusionMatrix.sync() was already called; unsync() or reset()")
        device = torch.device("cpu")
        if dist.get_backend(process_group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        own = self.per_image_matrices
        local = torch.tensor(own, dtype=torch.int64, device=device)
        sizes = [
            torch.zeros(1, dtype=torch.int64, device=device)
            for _ in range(dist.get_world_size(process_group))
        ]
        dist.all_gather(sizes, torch.tensor([local.shape[0]], device=device), group=process_group)
        longest = int(max(size.item() for size in sizes))
        padded = torch.zeros((longest, *local.shape[1:]), dtype=torch.int64, device=device)
        padded[: local.shape[0]] = local
        gathered = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(gathered, padded, group=process_group)
        self.reset()
        for block, size in zip(gathered, sizes, strict=True):
            self._append(block[: int(size.item())].cpu().numpy())
        self._local = own
        return self

    def unsync(self) -> ConfusionMatrix:
        """Undo `sync`: this process's own images again (``RuntimeError`` if not synced)."""
        if self._local is None:
            raise RuntimeError("ConfusionMatrix.unsync(): sync() was not called (or reset())")
        own = self._local
        self.reset()
        self._append(own)
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
        tp, fp, fn, _ = _tp_fp_fn_tn(matrices)
        absent = (tp + fp + fn)[:, cls] == 0
        return np.where(absent & np.isnan(values), float(empty), values)

    def false_positive_images(self, cls: int = 1) -> np.ndarray:
        """Boolean per image: no true pixel of ``cls``, but at least one predicted."""
        self._check_class(cls)
        tp, fp, fn, _ = _tp_fp_fn_tn(self.per_image_matrices)
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
