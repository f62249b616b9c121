"""How many CPU threads a run uses: ``auto`` (the cores other jobs leave free) or a count.

Torch-free, so that both backends (`thyroidseg.inference.Segmenter`, PyTorch, and
`thyroidseg.inference.OnnxSegmenter`, ONNX Runtime) and the command line's ``--threads``
resolve a thread count by one rule; docs/deployment.md says why ``auto`` is the default.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

import cv2

__all__ = ["Threads", "cpu_cores", "free_cores", "opencv_threads", "resolve_threads"]

Threads = int | Literal["auto"] | None
"""A thread count, ``"auto"`` (`free_cores`) or ``None`` (leave the process's setting alone)."""


def cpu_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores that other jobs leave free: ``round(cores - load)``, between 1 and ``cores``.

    ``cores`` defaults to `cpu_cores` and ``load`` to the 1-minute load average (0 where the
    system has none). ``--threads auto`` uses this, since on a busy machine two threads per
    process run several times slower than one.

    >>> free_cores(2, 0.1), free_cores(2, 1.2), free_cores(2, 3.6), free_cores(16, 4.0)
    (2, 1, 1, 12)
    """
    cores = cpu_cores() if cores is None else cores
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - load)))


def resolve_threads(threads: Threads | str, name: str = "threads") -> int | None:
    """``threads`` as a count: ``"auto"`` is `free_cores` now, ``None`` stays ``None``.

    A string of digits (the command line's ``--threads 2``) counts as its number.

    Raises
    ------
    ValueError
        Not ``"auto"``, ``None`` or a positive integer; the message names ``name``.
    """
    if threads is None:
        return None
    if threads == "auto":
        return free_cores()
    if isinstance(threads, str) and threads.isdigit():
        threads = int(threads)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{name} must be a positive integer or auto, got {threads!r}")
    return threads


@contextlib.contextmanager
def opencv_threads(count: int | None) -> Iterator[None]:
    """OpenCV's thread count set to ``count`` inside the block, and restored after it.

    ``None``: left as it is.
    """
    if count is None:
        yield
        return
    previous = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
