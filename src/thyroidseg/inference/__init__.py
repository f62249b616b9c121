"""Segment frames with a trained model, measure the nodules, write the results.

- `thyroidseg.inference.segmenter`: `Segmenter` (re-exported here with the rest of its
  ``__all__``);
- `thyroidseg.inference.folders`: `predict_folder` (``thyroidseg predict``) and
  `predict_file`, and what they return (`FolderPrediction`, `FilePrediction`; re-exported
  here with the rest of its ``__all__``);
- `thyroidseg.inference.refine`: `Refiner`, the second (crop-and-refine) stage;
- `thyroidseg.inference.postprocess`, `thyroidseg.inference.overlay`,
  `thyroidseg.inference.measurements`: clean masks, draw them, measure their nodules.

Imports `thyroidseg.preprocessing` and `thyroidseg.models`, never `thyroidseg.training`.
"""

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
from thyroidseg.inference.segmenter import (
    Frame,
    Prediction,
    Segmenter,
)

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
]
