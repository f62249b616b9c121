"""thyroidseg: thyroid nodule segmentation in ultrasound, and metrics defined correctly.

The pipeline, one module per step:

- `thyroidseg.preprocessing`: `preprocess()` turns a scanner frame into network input
  (crop the field of view, fill burned-in marks, equalise, smooth, resize) and carries
  masks both ways.
- `thyroidseg.data`: `ThyroidDataset` over the public dataset layouts, and splits that keep
  every leak group on one side; `thyroidseg.augment`; `thyroidseg.synthetic` (phantoms
  with exact masks).
- `thyroidseg.model` and `thyroidseg.losses`: the U-Net and its losses.
- `thyroidseg.training`: `Trainer` (checkpoints, exact resume, AMP, DDP).
- `thyroidseg.inference`: `Segmenter`, frames in, masks at the frames' own size out.
- `thyroidseg.counting`, `thyroidseg.metrics`, `thyroidseg.boundary` and
  `thyroidseg.evaluation`: confusion matrices, `ConfusionMatrix`, HD95 / NSD, and
  `evaluate_folders`.

Every name above is importable from the top level: ``from thyroidseg import UNet``.
"""

from thyroidseg._version import __version__
from thyroidseg.augment import Augment
from thyroidseg.boundary import hausdorff_distance_95, normalized_surface_dice
from thyroidseg.data import (
    ThyroidDataset,
    group_kfold,
    read_binary_mask,
    size_tertiles,
    train_val_test_split,
)
from thyroidseg.evaluation import FolderEvaluation, evaluate_folders
from thyroidseg.inference import Segmenter, run_demo
from thyroidseg.losses import (
    DiceCELoss,
    SoftDiceLoss,
    WeightedCrossEntropyLoss,
    make_loss,
    unet_weight_map,
)
from thyroidseg.metrics import ConfusionMatrix, Summary
from thyroidseg.model import UNet, export_onnx, export_torchscript, valid_output_size
from thyroidseg.preprocessing import Box, Preprocessed, preprocess
from thyroidseg.synthetic import synthetic_phantoms, write_synthetic_dataset
from thyroidseg.training import NonFiniteLossError, Trainer, load_checkpoint

__all__ = [
    "Augment",
    "Box",
    "ConfusionMatrix",
    "FolderEvaluation",
    "DiceCELoss",
    "NonFiniteLossError",
    "Preprocessed",
    "Segmenter",
    "SoftDiceLoss",
    "Summary",
    "ThyroidDataset",
    "Trainer",
    "UNet",
    "WeightedCrossEntropyLoss",
    "__version__",
    "evaluate_folders",
    "export_onnx",
    "export_torchscript",
    "group_kfold",
    "hausdorff_distance_95",
    "load_checkpoint",
    "make_loss",
    "normalized_surface_dice",
    "preprocess",
    "read_binary_mask",
    "run_demo",
    "size_tertiles",
    "synthetic_phantoms",
    "train_val_test_split",
    "unet_weight_map",
    "valid_output_size",
    "write_synthetic_dataset",
]
