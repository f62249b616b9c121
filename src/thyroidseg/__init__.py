"""thyroidseg: thyroid nodule segmentation in ultrasound, and metrics defined correctly.

Eight subpackages, one concept each, importing in one direction (``docs/architecture.md``
draws it; ``tests/test_api.py`` checks it):

- `thyroidseg.io`: files in and out, for every other subpackage: images and masks
  (``io.files``), ``io.dicom`` and its pixel sizes ``io.spacing``, and ``io.outputs``
  (existing outputs refused, one run per output folder).
- `thyroidseg.preprocessing`: `preprocess()` turns a scanner frame into network input and
  carries masks both ways, through its steps ``scan_region`` (crop the field of view),
  ``inpainting`` (burned-in marks), ``geometry`` (boxes, resizing) and ``intensity`` (grey
  levels, equalise, smooth); ``crops``: squares around nodules for the refine stage.
- `thyroidseg.data`: `ThyroidDataset` over the dataset layouts of ``data.layouts``;
  ``data.splits`` (every leak group on one side), ``data.augment``, ``data.synthetic``
  (phantoms with exact masks), ``data.crops`` (the refine stage's training crops).
- `thyroidseg.models`: the U-Net (``models.unet``), ``ensemble``, ``checkpoint``,
  ``registry``, ``loading`` (checkpoints, the shipped model) and ``export`` (TorchScript,
  ONNX).
- `thyroidseg.metrics`: ``counting``, ``confusion`` (`ConfusionMatrix`), ``boundary``
  (HD95 / NSD), ``statistics`` and ``evaluation`` (`evaluate_folders`).
- `thyroidseg.inference`: `Segmenter`, frames in, masks (and probabilities) at the frames'
  own size out (``segmenter``, ``folders``; ``base``, the part without a network), the
  second stage ``refine``, `OnnxSegmenter` (``onnx``: the export in ONNX Runtime), and
  ``postprocess``, ``overlay``, ``measurements`` (`measure()`, the size and shape of every
  nodule of a mask).
- `thyroidseg.training`: `Trainer` (``training.trainer``: built model, loss, optimizer;
  exact resume, DDP), ``workflows`` (`train_folder`), ``demo`` (`run_demo`), ``losses`` and the
  trainer's parts.
- `thyroidseg.cli`: the command line, and ``cli.info`` (`system_info()` for bug reports).

Beside them, at the top level: `thyroidseg.runtime` (device, AMP, CPU tuning). The flat
module paths of 0.1 (``thyroidseg.model``, ``thyroidseg.losses``, ``thyroidseg.dicom``,
...) are gone since 0.3; ``docs/architecture.md`` says where each went.

Three tiers of names, one rule:

- **Top level** (``from thyroidseg import UNet``): the user's API, about twenty names: the
  pipeline's classes and functions that the README and the guides call (`UNet`,
  `ThyroidDataset`, `preprocess`, `Trainer`, `Segmenter`, `measure`, `ConfusionMatrix`,
  `evaluate_folders`, the losses users pick, `load_checkpoint` / `save_checkpoint`...), with
  the types they return and the errors they raise. Each loads its module on first use
  (PEP 562): ``from thyroidseg import Segmenter`` imports no training code, and
  ``from thyroidseg.inference import OnnxSegmenter`` no PyTorch.
- **A module's ``__all__``** (``from thyroidseg.inference.measurements import
  measure_many``): the full public API of that module, including the building blocks,
  constants, choice tuples and type aliases that only someone extending the library needs.
  Every name in a module without a leading underscore is in its ``__all__``. A
  subpackage's ``__init__`` re-exports the ``__all__`` of its main module (the 0.1 module of
  that name: ``from thyroidseg.metrics import iou``). The names that left the top level in
  0.2 are gone from it since 0.3: reading one raises an ``AttributeError`` naming its module.
- **A leading underscore** (``thyroidseg._progress``, ``geometry._resize_to``): private,
  shared between the modules of one subpackage (or, for top-level private modules such as
  ``_progress``, of the whole library) but free to change in any release.

Every list of choices has one source: a ``Literal`` type alias and, beside it, its tuple
``typing.get_args(Alias)`` (`thyroidseg.models.unet.NORMS`, `thyroidseg.runtime.AMP_MODES`,
...), which the checks and the command line use. ``tests/test_api.py`` tests these rules.
"""

import importlib
from typing import TYPE_CHECKING, Any

from thyroidseg._version import __version__

if TYPE_CHECKING:  # each loaded on first use, see __getattr__
    from thyroidseg.data.augment import Augment
    from thyroidseg.data.dataset import ThyroidDataset
    from thyroidseg.data.splits import group_kfold
    from thyroidseg.inference.measurements import Nodule, measure
    from thyroidseg.inference.segmenter import Segmenter
    from thyroidseg.metrics.confusion import ConfusionMatrix
    from thyroidseg.metrics.evaluation import evaluate_folders
    from thyroidseg.models.checkpoint import load_checkpoint, save_checkpoint
    from thyroidseg.models.export import export_onnx
    from thyroidseg.models.unet import UNet
    from thyroidseg.preprocessing.pipeline import Preprocessed, preprocess
    from thyroidseg.training.divergence import NonFiniteLossError, NonFiniteOutputError
    from thyroidseg.training.losses import (
        DiceCELoss,
        SoftDiceLoss,
        WeightedCrossEntropyLoss,
        make_loss,
    )
    from thyroidseg.training.trainer import Trainer
    from thyroidseg.training.workflows import train_folder

__all__ = [
    "Augment",
    "ConfusionMatrix",
    "DiceCELoss",
    "Nodule",
    "NonFiniteLossError",
    "NonFiniteOutputError",
    "Preprocessed",
    "Segmenter",
    "SoftDiceLoss",
    "ThyroidDataset",
    "Trainer",
    "UNet",
    "WeightedCrossEntropyLoss",
    "__version__",
    "evaluate_folders",
    "export_onnx",
    "group_kfold",
    "load_checkpoint",
    "make_loss",
    "measure",
    "preprocess",
    "save_checkpoint",
    "train_folder",
]

_LAZY = {
    "Augment": "data.augment",
    "ConfusionMatrix": "metrics.confusion",
    "DiceCELoss": "training.losses",
    "NonFiniteLossError": "training.divergence",
    "NonFiniteOutputError": "training.divergence",
    "Nodule": "inference.measurements",
    "Preprocessed": "preprocessing.pipeline",
    "Segmenter": "inference.segmenter",
    "SoftDiceLoss": "training.losses",
    "ThyroidDataset": "data.dataset",
    "Trainer": "training.trainer",
    "UNet": "models.unet",
    "WeightedCrossEntropyLoss": "training.losses",
    "evaluate_folders": "metrics.evaluation",
    "export_onnx": "models.export",
    "group_kfold": "data.splits",
    "load_checkpoint": "models.checkpoint",
    "make_loss": "training.losses",
    "measure": "inference.measurements",
    "preprocess": "preprocessing.pipeline",
    "save_checkpoint": "models.checkpoint",
    "train_folder": "training.workflows",
}
"""Every top-level name but ``__version__``, imported from its module on first use."""

_REMOVED = {
    "Box": "preprocessing.geometry",
    "DemoResult": "training.demo",
    "Ensemble": "models.ensemble",
    "FolderEvaluation": "metrics.evaluation",
    "FolderPrediction": "inference",
    "Summary": "metrics.statistics",
    "detect_layout": "data.layouts",
    "equalize": "preprocessing.intensity",
    "export_torchscript": "models.export",
    "find_annotations": "preprocessing.inpainting",
    "find_scan_region": "preprocessing.scan_region",
    "find_views": "preprocessing.scan_region",
    "fit_box": "preprocessing.geometry",
    "hausdorff_distance_95": "metrics.boundary",
    "inpaint_annotations": "preprocessing.inpainting",
    "measure_many": "inference.measurements",
    "normalized_surface_dice": "metrics.boundary",
    "preprocess_folder": "preprocessing",
    "read_binary_mask": "io",
    "resize": "preprocessing.geometry",
    "resize_mask": "preprocessing.geometry",
    "run_demo": "training.demo",
    "size_tertiles": "data.splits",
    "smooth": "preprocessing.intensity",
    "synthetic_phantoms": "data.synthetic",
    "system_info": "cli.info",
    "to_gray_uint8": "preprocessing.intensity",
    "train_val_test_split": "data.splits",
    "unet_weight_map": "training.losses",
    "valid_output_size": "models.unet",
    "write_measurements_csv": "inference.measurements",
    "write_synthetic_dataset": "data.synthetic",
}
"""Top-level names of 0.1, removed in 0.3 -> the module that the ``AttributeError`` names."""


def __getattr__(name: str) -> Any:
    """Load a top-level name on first use; for a removed 0.1 name, say where it lives."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"thyroidseg.{_LAZY[name]}"), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    message = f"module 'thyroidseg' has no attribute {name!r}"
    if name in _REMOVED:
        message += f"; since 0.3 import it from thyroidseg.{_REMOVED[name]}"
    raise AttributeError(message)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
