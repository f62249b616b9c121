r"""`ConfusionMatrix`: the accumulating confusion matrix of an evaluation, pooled and per image.

It keeps one small matrix per counted image (`thyroidseg.metrics.counting.confusion_matrices`:
$M_{ij}$ pixels of true class $i$ predicted as $j$), so that both aggregations are available:
**pooled** (sum the matrices of all images, then take the ratio) and **per image** (one ratio
per image, then `summarize`: mean, std and a bootstrap confidence interval). The ratios
themselves (`iou`, `dice`, `precision`, `recall`, `specificity`, `pixel_accuracy`,
`mean_iou`, `mean_dice`, `frequency_weighted_iou`, `balanced_accuracy`, `nanmean`) are the
pure functions of `thyroidseg.metrics.ratios`, re-exported here: a ratio with nothing to
count is NaN, and reductions skip NaN values and say how many they skipped.

Boundary metrics are in `thyroidseg.metrics.boundary`; scoring folders of masks is
`thyroidseg.metrics.evaluation`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from thyroidseg.metrics.counting import LabelMap, _check_arguments, confusion_matrices
from thyroidseg.metrics.ratios import (
    _PER_CLASS_METRICS,
    _tp_fp_fn_tn,
    balanced_accuracy,
    dice,
    frequency_weighted_iou,
    iou,
    mean_dice,
    mean_iou,
    nanmean,
    pixel_accuracy,
    precision,
    recall,
    specificity,
)
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
