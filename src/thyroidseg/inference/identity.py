"""Which model a `Segmenter` runs: its name, the thyroidseg version and its weights' SHA-256.

`model_identity` hashes the networks' weights as `thyroidseg.models.checkpoint.save_checkpoint`
does, so the SHA-256 it gives is the ``model_sha256`` stored in the checkpoint the weights
came from; the shipped model is recognised by it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, cast

from thyroidseg._version import __version__
from thyroidseg.io.provenance import ModelIdentity
from thyroidseg.models.checkpoint import WEIGHTS_CHECKSUM, load_checkpoint, weights_sha256
from thyroidseg.models.loading import SHIPPED_WEIGHTS, shipped_weights

if TYPE_CHECKING:  # the Segmenter's module imports the module that calls this one
    from thyroidseg.inference.refine import Refiner
    from thyroidseg.inference.segmenter import Segmenter

__all__ = ["model_identity"]


def model_identity(segmenter: Segmenter) -> ModelIdentity:
    """The `thyroidseg.io.provenance.ModelIdentity` of a segmenter's networks.

    The name is ``thyroidseg-unet-ddti`` when the whole-frame weights are the shipped
    model's, else the networks' class names (``UNet``, ``Ensemble``, ``+ refine UNet``).
    """
    sha = weights_sha256(segmenter.model.state_dict())
    refiner = cast("Refiner | None", segmenter.refiner)  # a Segmenter takes only a Refiner
    refine_sha = None if refiner is None else weights_sha256(refiner.model.state_dict())
    shipped = sha == _shipped_sha256()
    name = Path(SHIPPED_WEIGHTS).stem if shipped else type(segmenter.model).__name__
    if refiner is not None and not shipped:
        name += f" + refine {type(refiner.model).__name__}"
    return ModelIdentity(name, __version__, sha, refine_sha)


@cache
def _shipped_sha256() -> str | None:
    """The ``model_sha256`` the shipped checkpoint stores; ``None`` when none is installed."""
    weights = shipped_weights()
    if not weights.is_file():
        return None
    with resources.as_file(weights) as path:
        stored = load_checkpoint(path).get(WEIGHTS_CHECKSUM)
    return stored if isinstance(stored, str) else None
