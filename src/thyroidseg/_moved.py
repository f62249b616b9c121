"""The flat modules of 0.1, still importable until 0.3 with a ``FutureWarning``.

0.2 groups the modules into subpackages (``thyroidseg.model`` is `thyroidseg.models.unet`,
``thyroidseg.losses`` is `thyroidseg.training.losses`, ...). `MovedModuleFinder`, put on
``sys.meta_path`` by ``thyroidseg/__init__.py``, answers an import of an old name with the
new module itself, so ``thyroidseg.model.UNet is thyroidseg.models.unet.UNet`` and
isinstance checks, pickles and monkeypatches agree; each first import warns with the new
name. Old modules that became packages of the same name (``thyroidseg.data``,
``thyroidseg.metrics``, ...) need no alias: the package re-exports the old ``__all__``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

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


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import an old module name as its new module, with a ``FutureWarning``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        new = MOVED_MODULES[spec.name]
        warnings.warn(
            f"{spec.name} is deprecated and goes in 0.3: import {new} instead",
            FutureWarning,
            stacklevel=2,  # importlib's own frames are skipped: the import statement
        )
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # importlib sets __spec__ to the alias's spec
        return module

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        if spec is not None and spec.loader is self:  # the real module's own spec back
            module.__spec__ = spec.loader_state


def install() -> None:
    """Put one `MovedModuleFinder` on ``sys.meta_path`` (again: no second one)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
