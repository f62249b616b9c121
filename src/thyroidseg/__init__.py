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

- **Top level** (``from thyroidseg import UNet``): the user's API, about twenty names: the
  pipeline's classes and functions that the README and the guides call (`UNet`,
  `ThyroidDataset`, `preprocess`, `Trainer`, `Segmenter`, `measure`, `ConfusionMatrix`,
  `evaluate_folders`, the losses users pick, `load_checkpoint` / `save_checkpoint`...), with
  the types they return and the errors they raise. The training side (`Trainer`,
  `train_folder`, the losses, `Augment`, the errors of a run) loads on first use (PEP 562),
  so ``from thyroidseg import Segmenter`` imports no training code.
- **A module's ``__all__``** (``from thyroidseg.measurements import measure_many``): the full
  public API of that module, including the building blocks, constants, choice tuples and
  type aliases that only someone extending the library needs. Every name in a module
  without a leading underscore is in its ``__all__``. Names that left the top level in 0.2
  still resolve there, with a ``FutureWarning`` naming their module, until 0.3.
- **A leading underscore** (``thyroidseg._io``, ``geometry._check_size``): private, shared
  between thyroidseg modules but free to change in any release.

Every list of choices has one source: a ``Literal`` type alias and, beside it, its tuple
``typing.get_args(Alias)`` (`thyroidseg.model.NORMS`, `thyroidseg.runtime.AMP_MODES`, ...),
which the checks and the command line use. ``tests/test_api.py`` tests these rules, and
``docs/architecture.md`` draws the modules and what each imports.
"""

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from thyroidseg._version import __version__
from thyroidseg.checkpoint import load_checkpoint, save_checkpoint
from thyroidseg.data import ThyroidDataset
from thyroidseg.evaluation import evaluate_folders
from thyroidseg.export import export_onnx
from thyroidseg.inference import Segmenter
from thyroidseg.measurements import Nodule, measure
from thyroidseg.metrics import ConfusionMatrix
from thyroidseg.model import UNet
from thyroidseg.preprocessing import Preprocessed, preprocess
from thyroidseg.splits import group_kfold

if TYPE_CHECKING:  # loaded on first use, see __getattr__
    from thyroidseg.augment import Augment
    from thyroidseg.divergence import NonFiniteLossError, NonFiniteOutputError
    from thyroidseg.losses import DiceCELoss, SoftDiceLoss, WeightedCrossEntropyLoss, make_loss
    from thyroidseg.training import Trainer
    from thyroidseg.workflows import train_folder

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
    "Augment": "augment",
    "DiceCELoss": "losses",
    "NonFiniteLossError": "divergence",
    "NonFiniteOutputError": "divergence",
    "SoftDiceLoss": "losses",
    "Trainer": "training",
    "WeightedCrossEntropyLoss": "losses",
    "make_loss": "losses",
    "train_folder": "workflows",
}
"""Top-level names of the training side, imported from their module on first use."""

_MOVED = {
    "Box": "geometry",
    "DemoResult": "workflows",
    "Ensemble": "ensemble",
    "FolderEvaluation": "evaluation",
    "FolderPrediction": "inference",
    "Summary": "statistics",
    "detect_layout": "layouts",
    "equalize": "intensity",
    "export_torchscript": "export",
    "find_annotations": "inpainting",
    "find_scan_region": "scan_region",
    "find_views": "scan_region",
    "fit_box": "geometry",
    "hausdorff_distance_95": "boundary",
    "inpaint_annotations": "inpainting",
    "measure_many": "measurements",
    "normalized_surface_dice": "boundary",
    "preprocess_folder": "preprocessing",
    "read_binary_mask": "data",
    "resize": "geometry",
    "resize_mask": "geometry",
    "run_demo": "workflows",
    "size_tertiles": "splits",
    "smooth": "intensity",
    "synthetic_phantoms": "synthetic",
    "system_info": "diagnostics",
    "to_gray_uint8": "intensity",
    "train_val_test_split": "splits",
    "unet_weight_map": "losses",
    "valid_output_size": "model",
    "write_measurements_csv": "measurements",
    "write_synthetic_dataset": "synthetic",
}
"""Top-level names of 0.1 that live in their module only since 0.2 (until 0.3: a warning)."""


def __getattr__(name: str) -> Any:
    """Load a training-side name on first use; resolve a 0.1 name with a FutureWarning."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"thyroidseg.{_LAZY[name]}"), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    if name in _MOVED:
        module = f"thyroidseg.{_MOVED[name]}"
        warnings.warn(
            f"thyroidseg.{name} is deprecated and goes in 0.3: import it from {module}",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'thyroidseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
