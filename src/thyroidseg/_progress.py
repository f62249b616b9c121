"""A dependency-free progress bar on standard error, with the time left.

On a terminal it redraws one line; elsewhere (CI logs, pipes) it prints one line when
done, so logs stay short. A loop of known length shows its estimated time left:
``(total - done) * elapsed / done``, the mean time per item so far times the items to go.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Progress(Generic[T]):
    """Wrap an iterable and report ``desc: done/total [elapsed, ~left left, rate] postfix``.

    Parameters
    ----------
    iterable
        What to iterate over.
    total
        Number of items; taken from ``len(iterable)`` when it has one. With a total (and
        at least one item done) the line shows the estimated time left.
    initial
        Items done before this loop (a resumed run): counted in ``done/total``, not in the
        rate or the time left. Default 0.
    desc
        Label printed before the counts.
    unit
        What one item is, for the rate (``"it"`` by default; ``"epoch"``...). The rate is
        shown as items per second, or seconds per item when an item takes over a second.
    enabled
        ``None`` (default): draw only when standard error is a terminal, else print one
        summary line at the end. ``True``: draw as on a terminal. ``False``: print nothing.
    every_item
        Print a line that stays after every item (default ``False``), for slow loops whose
        every step is worth a log line (epochs).
    transient
        Erase the line at the end instead of keeping it (default ``False``), for an inner
        loop whose outer loop prints a line of its own; prints nothing off a terminal.
    """

    def __init__(
        self,
        iterable: Iterable[T],
        *,
        total: int | None = None,
        initial: int = 0,
        desc: str = "",
        unit: str = "it",
        enabled: bool | None = None,
        every_item: bool = False,
        transient: bool = False,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else _maybe_len(iterable)
        self.desc, self.unit = desc, unit
        self.live = enabled is True or (enabled is None and sys.stderr.isatty())
        self.quiet = enabled is False or (transient and not self.live)
        self.every_item, self.transient = every_item, transient
        self.postfix = ""
        self.initial = self.done = initial
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
            if self.quiet:
                continue
            if self.every_item:
                self._draw(end="\n")
            elif self.live and time.perf_counter() - self._last_draw > 0.1:
                self._draw(end="\r")
        if self.quiet:
            return
        if self.transient:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        elif not self.every_item:
            self._draw(end="\n")

    def line(self) -> str:
        """The current report, e.g. ``epochs: 3/50 [1m30s, ~23m30s left, 30.0s/epoch] loss=0.4``."""
        elapsed = time.perf_counter() - self._start
        parts = [format_duration(elapsed)]
        here = self.done - self.initial  # items done by this loop
        if here > 0 and elapsed > 0:
            per_item = elapsed / here
            if self.total is not None and self.done < self.total:
                parts.append(f"~{format_duration(per_item * (self.total - self.done))} left")
            fast = per_item <= 1
            parts.append(
                f"{1 / per_item:.1f} {self.unit}/s" if fast else f"{per_item:.1f}s/{self.unit}"
            )
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        label = f"{self.desc}: " if self.desc else ""
        return f"{label}{count} [{', '.join(parts)}] {self.postfix}".rstrip()

    def _draw(self, end: str) -> None:
        self._last_draw = time.perf_counter()
        line = self.line()
        sys.stderr.write(f"\r{line}\x1b[K{end}" if self.live else f"{line}{end}")
        sys.stderr.flush()


def format_duration(seconds: float) -> str:
    """``seconds`` as ``"4.2s"``, ``"3m05s"`` or ``"1h02m"``.

    Examples
    --------
    >>> format_duration(4.24), format_duration(185), format_duration(3725)
    ('4.2s', '3m05s', '1h02m')
    """
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _maybe_len(iterable: Iterable[object]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
