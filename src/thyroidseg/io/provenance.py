"""What made a result: the model (name, version, weights SHA-256) and the command line.

The HTML report (`thyroidseg.io.report`) prints this identity at its top and the DICOM
Segmentation (`thyroidseg.io.dicom_seg`) stores it as its algorithm identification, so a
result can always be traced to the exact weights that produced it
(`thyroidseg.inference.identity.model_identity` finds a segmenter's).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelIdentity", "command_line"]


@dataclass(frozen=True)
class ModelIdentity:
    """The model that segmented the frames.

    Attributes
    ----------
    name
        ``thyroidseg-unet-ddti`` for the shipped model; else the networks' class names
        (``UNet``, ``Ensemble``), with ``+ refine`` for a second stage.
    version
        The thyroidseg version that ran it.
    sha256
        `thyroidseg.models.checkpoint.weights_sha256` of the whole-frame network's weights
        (hex): the ``model_sha256`` its checkpoint stores.
    refine_sha256
        The same for the refine stage; ``None`` without one.
    """

    name: str
    version: str
    sha256: str
    refine_sha256: str | None = None


def command_line() -> str:
    """This process's command, shell-quoted, the program by its file name (``thyroidseg``)."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""
