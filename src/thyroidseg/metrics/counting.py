r"""Counting: label maps -> one confusion matrix per image.

The confusion matrix $M$ of a label map counts pixels by class pair: $M_{ij}$ is the number of
pixels whose true class is $i$ and whose predicted class is $j$ (rows truth, columns
prediction). Every metric of `thyroidseg.metrics` is a ratio of its entries.

`confusion_matrices` runs the steps of torchmetrics' functional metrics, each a small pure
function here:

1. **validate** the arguments (`num_classes`, `ignore_index`);
2. **format** both label maps to one backend and to ``(N, H, W)``, checking dtype and shape;
3. **validate** the labels (every value in ``[0, C)`` or ``ignore_index``);
4. **update**: count one ``(C, C)`` matrix per image, with numpy on the CPU and torch on an
   accelerator.

The **reduce** step, counts -> metric values, is `thyroidseg.metrics` (`iou`, `dice`, ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["MAX_CLASSES", "LabelMap", "confusion_matrices"]

LabelMap = np.ndarray | torch.Tensor
"""An integer label map: a numpy array or a torch tensor (any device)."""


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
    _check_arguments(num_classes, ignore_index)
    pred, target = _on_one_backend(pred, target)
    return _validate_and_count(pred, target, num_classes, ignore_index)


# -- 1. validate the arguments --------------------------------------------------------------


MAX_CLASSES = 1024
"""Most classes a confusion matrix counts: 8 MiB per image's matrix at 1024."""


def _check_arguments(num_classes: int, ignore_index: int | None) -> None:
    """Raise unless ``num_classes`` is an integer >= 2 and ``ignore_index`` an integer or None.

    Also the check of `thyroidseg.metrics.ConfusionMatrix`'s settings.
    """
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_classes > MAX_CLASSES:
        raise ValueError(
            f"num_classes must be at most {MAX_CLASSES}, got {num_classes}: one image's "
            f"matrix alone would take {8 * int(num_classes) ** 2 / 2**30:.3g} GiB"
        )
    if ignore_index is not None and not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}")


# -- 2. format: one backend, (N, H, W) --------------------------------------------------------


def _on_one_backend(pred: Any, target: Any) -> tuple[LabelMap, LabelMap]:
    """Both numpy arrays, or both tensors on one accelerator.

    CPU tensors become zero-copy numpy views (numpy counts faster on the CPU); a numpy array
    paired with a tensor moves to the tensor's device.
    """
    pred_is_tensor, target_is_tensor = (
        isinstance(pred, torch.Tensor),
        isinstance(target, torch.Tensor),
    )
    if pred_is_tensor and target_is_tensor and pred.device != target.device:
        raise ValueError(
            f"pred and target are on different devices: {pred.device} vs {target.device}"
        )
    if pred_is_tensor and not target_is_tensor:
        target = torch.as_tensor(np.asarray(target), device=pred.device)
    elif target_is_tensor and not pred_is_tensor:
        pred = torch.as_tensor(np.asarray(pred), device=target.device)
    elif not pred_is_tensor:
        return np.asarray(pred), np.asarray(target)
    if pred.device.type == "cpu":
        return pred.numpy(), target.numpy()
    return pred, target


def _validate_and_count(
    pred: LabelMap, target: LabelMap, num_classes: int, ignore_index: int | None
) -> np.ndarray:
    """Steps 2 to 4 on two numpy arrays, or on two tensors with torch ops on their device."""
    pred3, target3 = _as_batch(pred, "pred"), _as_batch(target, "target")
    if pred3.shape != target3.shape:
        raise ValueError(
            f"pred and target shapes differ: pred {tuple(pred.shape)} vs target "
            f"{tuple(target.shape)} (expected the same (H, W), (N, H, W) or (N, 1, H, W))"
        )
    _check_labels(pred3, "pred", num_classes, None)
    _check_labels(target3, "target", num_classes, ignore_index)
    if isinstance(pred3, torch.Tensor):
        return _count_torch(pred3, torch.as_tensor(target3), num_classes, ignore_index)
    return _count_numpy(pred3, np.asarray(target3), num_classes, ignore_index)


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


# -- 3. validate the labels ---------------------------------------------------------------


def _check_labels(labels: LabelMap, name: str, num_classes: int, ignore_index: int | None) -> None:
    """Raise if a label lies outside ``[0, num_classes)`` (``ignore_index`` allowed)."""
    if labels.dtype in (np.bool_, torch.bool):
        return
    # Fast min/max passes first; the slower search for the offending values only on failure.
    if isinstance(labels, torch.Tensor):
        if labels.dtype == torch.uint8:
            low, high = 0.0, float(labels.max().item())
        else:
            low, high = (float(value.item()) for value in torch.aminmax(labels))
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


# -- 4. update: count one matrix per image -------------------------------------------------


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
