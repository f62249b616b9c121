"""The integer, probability and flag checks of the library's argument validation, and its path
type."""

from __future__ import annotations

import os

import numpy as np

PathLike = str | os.PathLike[str]
"""A path as the library takes it: a string or any ``os.PathLike`` (``pathlib.Path``)."""


def check_int(name: str, value: object, minimum: int, *, hint: str = "") -> int:
    """``value`` as an int if it is an integer (not a bool) ``>= minimum``; else ``ValueError``.

    The message reads ``"<name> must be a positive integer, got <value>"`` for ``minimum=1``
    and ``"<name> must be an integer >= <minimum>, got <value>"`` otherwise, with ``hint``
    (e.g. why the minimum) in parentheses after the rule.

    >>> check_int("epochs", 3, 1)
    3
    >>> check_int("batch_size", True, 1)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive integer, got True
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        extra = f" ({hint})" if hint else ""
        raise ValueError(f"{name} must be {rule}{extra}, got {value!r}")
    return int(value)


def check_probability(name: str, value: object) -> float:
    """``value`` as a float if it is a number (not a bool) in ``[0, 1]``; else ``ValueError``.

    >>> check_probability("min_probability", 0.6)
    0.6
    >>> check_probability("whole_weight", True)
    Traceback (most recent call last):
    ...
    ValueError: whole_weight must be a number in [0, 1], got True
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:  # NaN fails too
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is a bool (a checkpoint's ``"false"`` string must not count as true).

    >>> check_flag("tta", "false")
    Traceback (most recent call last):
    ...
    ValueError: tta must be True or False, got 'false'
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value
