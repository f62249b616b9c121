"""Datasets: frames and masks ready for a training loop, splits, augmentation, phantoms.

- `thyroidseg.data.dataset`: `ThyroidDataset` (re-exported here with the rest of its
  ``__all__``) over the folder layouts of `thyroidseg.data.layouts`;
- `thyroidseg.data.splits`: splits that keep every leak group on one side;
- `thyroidseg.data.synthetic`: phantoms with exact masks;
- `thyroidseg.data.crops`: `CropDataset`, training crops of the refine stage;
- `thyroidseg.data.augment`: `Augment`, the training transform (not imported here, so that
  predicting imports no training-side code).

Imports `thyroidseg.preprocessing`.
"""

from thyroidseg.data.dataset import (
    GroupBy,
    PreprocessedLike,
    PreprocessFn,
    ThyroidDataset,
    Transform,
    describe_transform,
    read_binary_mask,
)

__all__ = [
    "GroupBy",
    "PreprocessFn",
    "PreprocessedLike",
    "ThyroidDataset",
    "Transform",
    "describe_transform",
    "read_binary_mask",
]
