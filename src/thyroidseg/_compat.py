"""Old paths of names that moved between modules, kept for one release with a warning.

A module some of whose names moved sets ``__getattr__ = moved_names(__name__, {name: new
module}, until)`` (PEP 562): reading such a name from the old module warns
(``FutureWarning``, naming the new module and the release that drops the old path) and
returns the new module's object itself, so identity checks and pickles agree.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


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
