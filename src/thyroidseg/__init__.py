"""thyroidseg: thyroid nodule segmentation in ultrasound, and metrics defined correctly.

The pipeline, one module per step:

- `thyroidseg.preprocessing`: `preprocess()` turns a scanner frame into network input
  and carries masks both ways, through its steps `thyroidseg.scan_region` (crop the field
  of view), `thyroidseg.inpainting` (burned-in marks), `thyroidseg.geometry` (boxes,
  resizing) and `thyroidseg.intensity` (grey levels, equalise, smooth).
- `thyroidseg.data`: `ThyroidDataset` over the dataset layouts of `thyroidseg.layouts`;
  `thyroidseg.splits`: splits that keep every leak group on one side;
  `thyroidseg.augment`; `thyroidseg.synthetic` (phantoms with exact masks).
- `thyroidseg.model` and `thyroidseg.losses`: the U-Net and its losses.
- `thyroidseg.training`: `Trainer` (built model, loss, optimizer; exact resume, DDP), with
  `thyroidseg.runtime` (device, AMP, CPU tuning), `thyroidseg.checkpoint`,
  `thyroidseg.history` and `thyroidseg.batching`; `thyroidseg.workflows`: `train_folder`
  and `run_demo`; `thyroidseg.diagnostics`: `system_info()` for bug reports.
- `thyroidseg.inference`: `Segmenter`, frames in, masks (and probabilities) at the frames'
  own size out, from `thyroidseg.model_loading` (checkpoints, the shipped model) and
  `thyroidseg.ensemble` (`Ensemble`, several networks as one).
- `thyroidseg.measurements`: `measure()`, the size and shape of every nodule of a mask.
- `thyroidseg.export`: the network to TorchScript or ONNX.
- `thyroidseg.counting`, `thyroidseg.metrics`, `thyroidseg.boundary` and
  `thyroidseg.evaluation`: confusion matrices, `ConfusionMatrix`, HD95 / NSD, and
  `evaluate_folders`.

Three tiers of names, one rule:

- **Top level** (``from thyroidseg import UNet``): the user's API, the classes and functions
  the README and the guides in ``docs/`` call (`UNet`, `ThyroidDataset`, `preprocess`,
  `Trainer`, `Segmenter`, `measure`, `ConfusionMatrix`, `export_onnx`, ...), with the types
  they return and the errors they raise. Each is also in its module's ``__all__``.
- **A module's ``__all__``** (``from thyroidseg.checkpoint import save_checkpoint``): the
  full public API of that module, including the building blocks, constants, choice tuples
  and type aliases that only someone extending the library needs. Every name in a module
  without a leading underscore is in its ``__all__``.
- **A leading underscore** (``thyroidseg._io``, ``geometry._check_size``): private, shared
  between thyroidseg modules but free to change in any release.

Every list of choices has one source: a ``Literal`` type alias and, beside it, its tuple
``typing.get_args(Alias)`` (`thyroidseg.model.NORMS`, `thyroidseg.runtime.AMP_MODES`, ...),
which the checks and the command line use. ``tests/test_api.py`` tests these rules, and
``docs/architecture.md`` draws the modules and what each imports.
"""

from thyroidseg._version import __version__
from thyroidseg.augment import Augment
from thyroidseg.boundary import hausdorff_distance_95, normalized_surface_dice
from thyroidseg.checkpoint import load_checkpoint
from thyroidseg.data import ThyroidDataset, read_binary_mask
from thyroidseg.diagnostics import system_info
from thyroidseg.divergence import NonFiniteLossError, NonFiniteOutputError
from thyroidseg.ensemble import Ensemble
from thyroidseg.evaluation import FolderEvaluation, evaluate_folders
from thyroidseg.export import export_onnx, export_torchscript
from thyroidseg.geometry import Box, fit_box, resize, resize_mask
from thyroidseg.inference import FolderPrediction, Segmenter
from thyroidseg.inpainting import find_annotations, inpaint_annotations
from thyroidseg.intensity import equalize, smooth, to_gray_uint8
from thyroidseg.layouts import detect_layout
from thyroidseg.losses import (
    DiceCELoss,
    SoftDiceLoss,
    WeightedCrossEntropyLoss,
    make_loss,
    unet_weight_map,
)
from thyroidseg.measurements import Nodule, measure, measure_many, write_measurements_csv
from thyroidseg.metrics import ConfusionMatrix, Summary
from thyroidseg.model import UNet, valid_output_size
from thyroidseg.preprocessing import Preprocessed, preprocess, preprocess_folder
from thyroidseg.scan_region import find_scan_region, find_views
from thyroidseg.splits import group_kfold, size_tertiles, train_val_test_split
from thyroidseg.synthetic import synthetic_phantoms, write_synthetic_dataset
from thyroidseg.training import Trainer
from thyroidseg.workflows import DemoResult, run_demo, train_folder

__all__ = [
    "Augment",
    "Box",
    "ConfusionMatrix",
    "DemoResult",
    "DiceCELoss",
    "Ensemble",
    "FolderEvaluation",
    "FolderPrediction",
    "Nodule",
    "NonFiniteLossError",
    "NonFiniteOutputError",
    "Preprocessed",
    "Segmenter",
    "SoftDiceLoss",
    "Summary",
    "ThyroidDataset",
    "Trainer",
    "UNet",
    "WeightedCrossEntropyLoss",
    "__version__",
    "detect_layout",
    "equalize",
    "evaluate_folders",
    "export_onnx",
    "export_torchscript",
    "find_annotations",
    "find_scan_region",
    "find_views",
    "fit_box",
    "group_kfold",
    "hausdorff_distance_95",
    "inpaint_annotations",
    "load_checkpoint",
    "make_loss",
    "measure",
    "measure_many",
    "normalized_surface_dice",
    "preprocess",
    "preprocess_folder",
    "read_binary_mask",
    "resize",
    "resize_mask",
    "run_demo",
    "size_tertiles",
    "smooth",
    "synthetic_phantoms",
    "system_info",
    "to_gray_uint8",
    "train_folder",
    "train_val_test_split",
    "unet_weight_map",
    "valid_output_size",
    "write_measurements_csv",
    "write_synthetic_dataset",
]
