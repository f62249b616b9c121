"""Segmentation metrics defined correctly: confusion matrices, ratios, boundaries, folders.

- `thyroidseg.metrics.counting`: label maps to one confusion matrix per image;
- `thyroidseg.metrics.ratios`: the ratios of the counts (`iou`, `dice`, ...), pure functions;
- `thyroidseg.metrics.confusion`: `ConfusionMatrix`, which accumulates them over images
  (re-exported here with the rest of its ``__all__``, the ratios included);
- `thyroidseg.metrics.statistics`: mean, std and bootstrap CI of one value per image;
- `thyroidseg.metrics.boundary`: HD95 and NSD;
- `thyroidseg.metrics.evaluation`: `evaluate_folders` (``thyroidseg evaluate``).

Imports `thyroidseg.preprocessing`.
"""

from thyroidseg.metrics.confusion import (
    ConfusionMatrix,
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
