"""Segment frames with a trained model, measure the nodules, write the results.

- `thyroidseg.inference.segmenter`: `Segmenter`, the network in PyTorch (re-exported here
  with the rest of its ``__all__``, loaded on first use: PEP 562);
- `thyroidseg.inference.onnx`: `OnnxSegmenter`, the exported networks in ONNX Runtime,
  without PyTorch (re-exported here with the rest of its ``__all__``);
- `thyroidseg.inference.base` and `thyroidseg.inference.refine_base`: what both do around
  their networks, in numpy;
- `thyroidseg.inference.folders`: `predict_folder` (``thyroidseg predict``) and
  `predict_file`, and what they return (`FolderPrediction`, `FilePrediction`; re-exported
  here with the rest of its ``__all__``);
- `thyroidseg.inference.refine`: `Refiner`, the second (crop-and-refine) stage;
- `thyroidseg.inference.postprocess`, `thyroidseg.inference.overlay`,
  `thyroidseg.inference.measurements`: clean masks, draw them, measure their nodules.

Imports `thyroidseg.preprocessing` and `thyroidseg.models`, never `thyroidseg.training`;
``from thyroidseg.inference import OnnxSegmenter`` imports no PyTorch.
"""

import importlib
from typing import TYPE_CHECKING, Any

from thyroidseg.inference.folders import (
    LOOPS_CSV,
    MEASUREMENTS_CSV,
    OVERLAYS_DIR,
    PROBABILITIES_DIR,
    FilePrediction,
    FolderPrediction,
    predict_file,
    predict_folder,
)
from thyroidseg.inference.onnx import (
    ONNX_DEVICES,
    OnnxDevice,
    OnnxRefiner,
    OnnxSegmenter,
    onnx_session,
)

if TYPE_CHECKING:  # loaded on first use, see __getattr__
    from thyroidseg.inference.segmenter import Frame, Prediction, Segmenter

__all__ = [
    "Frame",
    "Prediction",
    "Segmenter",
    "LOOPS_CSV",
    "MEASUREMENTS_CSV",
    "OVERLAYS_DIR",
    "PROBABILITIES_DIR",
    "FilePrediction",
    "FolderPrediction",
    "predict_file",
    "predict_folder",
    "ONNX_DEVICES",
    "OnnxDevice",
    "OnnxRefiner",
    "OnnxSegmenter",
    "onnx_session",
]

_LAZY = {"Frame": "segmenter", "Prediction": "segmenter", "Segmenter": "segmenter"}
"""Names of the PyTorch side, imported from their module on first use."""


def __getattr__(name: str) -> Any:
    """Load a PyTorch-side name on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"thyroidseg.inference.{_LAZY[name]}"), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module 'thyroidseg.inference' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
