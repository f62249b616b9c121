"""The one integer check of the library's argument validation."""

from __future__ import annotations

import numpy as np


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
