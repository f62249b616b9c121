"""Preprocessing: a raw scanner frame to network input, and masks carried both ways.

- `thyroidseg.preprocessing.pipeline`: `preprocess` / `Preprocessed` (re-exported here with
  the rest of its ``__all__``), `preprocess_folder`;
- its steps: `thyroidseg.preprocessing.scan_region` (the field of view),
  `thyroidseg.preprocessing.inpainting` (burned-in marks), `thyroidseg.preprocessing.geometry`
  (boxes, resizing) and `thyroidseg.preprocessing.intensity` (grey levels, equalise, smooth);
- `thyroidseg.preprocessing.crops`: square crops around nodules for the refine stage.

Imports no other subpackage of thyroidseg.
"""

from thyroidseg.preprocessing.pipeline import (
    DEFAULT_MARGIN,
    DEFAULT_SIZE,
    Preprocessed,
    preprocess,
    preprocess_folder,
    preprocess_settings,
    to_unit_range,
)

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_SIZE",
    "Preprocessed",
    "preprocess",
    "preprocess_folder",
    "preprocess_settings",
    "to_unit_range",
]
