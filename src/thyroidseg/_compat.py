"""The flat module paths of 0.1, still importable until 0.3 with a ``FutureWarning``.

0.2 groups the modules into subpackages (``thyroidseg.model`` is `thyroidseg.models.unet`,
``thyroidseg.losses`` is `thyroidseg.training.losses`, ...). `install`, called by
``thyroidseg/__init__.py``, puts one `OldPath` module per old name into ``sys.modules``: no
import hook, and no new module is imported until a name is read from an old path. Reading
one (``from thyroidseg.model import UNet``) warns with the new path and returns the new
module's object itself, so ``thyroidseg.model.UNet is thyroidseg.models.unet.UNet`` and
isinstance checks and pickles agree. Old modules that became packages of the same name
(``thyroidseg.data``, ``thyroidseg.metrics``, ...) need no alias: the package re-exports the
old ``__all__``. Names that later left a module for another keep their old path the same
way, one release longer (`moved_names`).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

MOVED_MODULES: dict[str, str] = {
    f"thyroidseg.{old}": f"thyroidseg.{new}"
    for old, new in {
        "augment": "data.augment",
        "batching": "training.batching",
        "boundary": "metrics.boundary",
        "checkpoint": "models.checkpoint",
        "counting": "metrics.counting",
        "diagnostics": "cli.info",
        "dicom": "io.dicom",
        "distributed": "training.distributed",
        "divergence": "training.divergence",
        "ensemble": "models.ensemble",
        "evaluation": "metrics.evaluation",
        "export": "models.export",
        "geometry": "preprocessing.geometry",
        "history": "training.history",
        "inpainting": "preprocessing.inpainting",
        "intensity": "preprocessing.intensity",
        "layouts": "data.layouts",
        "losses": "training.losses",
        "measurements": "inference.measurements",
        "model": "models.unet",
        "model_loading": "models.loading",
        "overlay": "inference.overlay",
        "postprocess": "inference.postprocess",
        "refine": "inference.refine",
        "registry": "models.registry",
        "scan_region": "preprocessing.scan_region",
        "spacing": "io.spacing",
        "splits": "data.splits",
        "statistics": "metrics.statistics",
        "synthetic": "data.synthetic",
        "trainer_checks": "training.checks",
        "workflows": "training.workflows",
    }.items()
}
"""Old dotted module name -> the module that holds its code since 0.2."""


class OldPath(ModuleType):
    """A 0.1 module path: each name read from it warns and comes from `new`.

    Only public names are forwarded: tools that scan ``sys.modules`` for ``__file__``,
    ``__path__`` or a private marker (``inspect.getmodule``, pytest, torch) neither warn nor
    import anything.
    """

    def __init__(self, name: str, new: str) -> None:
        super().__init__(name, f"Deprecated 0.1 path of {new}; goes in 0.3.")
        self.new = new
        """The dotted name of the module that holds the code since 0.2."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        warnings.warn(
            f"{self.__name__} is deprecated and goes in 0.3: import {self.new} instead",
            FutureWarning,
            stacklevel=2,  # the import statement or attribute read (importlib's frames skipped)
        )
        return getattr(importlib.import_module(self.new), name)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.new))


def install() -> None:
    """Put an `OldPath` into ``sys.modules`` for each 0.1 name that is not there yet."""
    for old, new in MOVED_MODULES.items():
        sys.modules.setdefault(old, OldPath(old, new))


def moved_names(old: str, moved: Mapping[str, str], until: str) -> Callable[[str], Any]:
    """The ``__getattr__`` of module ``old`` for its names that moved (name -> new module).

    Reading one warns (``FutureWarning``: it goes in version ``until``) and returns the new
    module's object itself; any other name is an ``AttributeError``.
    """

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} is deprecated and goes in {until}: import it from {moved[name]}",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__
