"""A dependency-free progress bar on standard error.

On a terminal it redraws one line; elsewhere (CI logs, pipes) it prints one line when
done, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Progress(Generic[T]):
    """Wrap an iterable and report ``desc: done/total [elapsed, rate] postfix``.

    Parameters
    ----------
    iterable
        What to iterate over.
    total
        Number of items; taken from ``len(iterable)`` when it has one.
    desc
        Label printed before the counts.
    enabled
        ``None`` (default): draw only when standard error is a terminal, else print one
        summary line at the end. ``False``: print nothing.
    """

    def __init__(
        self,
        iterable: Iterable[T],
        *,
        total: int | None = None,
        desc: str = "",
        enabled: bool | None = None,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else _maybe_len(iterable)
        self.desc = desc
        self.quiet = enabled is False
        self.live = enabled is True or (enabled is None and sys.stderr.isatty())
        self.postfix = ""
        self.done = 0
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def set_postfix(self, **values: float | str) -> None:
        """Show ``key=value`` pairs after the counts (floats with 4 significant digits)."""
        self.postfix = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
        )

    def __iter__(self) -> Iterator[T]:
        self._start = time.perf_counter()
        for item in self.iterable:
            yield item
            self.done += 1
            if self.live and time.perf_counter() - self._last_draw > 0.1:
                self._draw(end="\r")
        if not self.quiet:
            self._draw(end="\n")

    def _draw(self, end: str) -> None:
        self._last_draw = time.perf_counter()
        elapsed = self._last_draw - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        label = f"{self.desc}: " if self.desc else ""
        line = f"{label}{count} [{elapsed:.1f}s, {rate:.1f}/s] {self.postfix}".rstrip()
        sys.stderr.write(f"\r{line}\x1b[K{end}" if self.live else f"{line}{end}")
        sys.stderr.flush()


def _maybe_len(iterable: Iterable[object]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
