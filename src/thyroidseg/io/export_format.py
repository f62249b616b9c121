"""The files of an exported segmenter and the version of its JSON description.

``thyroidseg export --onnx unet.onnx`` (`thyroidseg.models.export.export_cascade`) writes
the whole-frame network ``unet.onnx``, the refine network ``unet-refine.onnx`` (when the
segmenter has a second stage) and ``unet.json``, the segmenter's settings as data
(`thyroidseg.inference.Segmenter.describe`); `thyroidseg.inference.OnnxSegmenter` reads
them back without PyTorch. Both sides take the names and the version from here; the format
is documented in docs/deployment.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thyroidseg._checks import PathLike
from thyroidseg.io.files import read_format_json

__all__ = ["FORMAT", "VERSION", "cascade_paths", "read_description"]

FORMAT = "thyroidseg-segmenter"
"""``"format"`` of the JSON description."""

VERSION = 2
"""``"version"`` of the JSON description; a reader refuses any other (1: 0.2's drafts, whose
crop rule was a sentence)."""


def cascade_paths(path: PathLike) -> tuple[Path, Path]:
    """Where the refine network and the description go beside the network at ``path``.

    >>> tuple(p.as_posix() for p in cascade_paths("out/thyroid.onnx"))
    ('out/thyroid-refine.onnx', 'out/thyroid.json')
    """
    path = Path(path)
    return path.with_name(f"{path.stem}-refine{path.suffix}"), path.with_suffix(".json")


def read_description(path: PathLike) -> dict[str, Any]:
    """The JSON description at ``path``, checked to be this version's.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not JSON, not a segmenter description, or another version; the message names the
        file.
    """
    what = "thyroidseg segmenter description (written by `thyroidseg export --onnx`)"
    description = read_format_json(path, FORMAT, what)
    if description.get("version") != VERSION:
        raise ValueError(
            f"{path}: description version {description.get('version')!r}, this thyroidseg "
            f"reads version {VERSION}: export the model again with this version"
        )
    return description
