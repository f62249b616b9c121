"""Statistics of one value per image: mean, spread and a bootstrap confidence interval.

`summarize` is how every per-image number of the library is reported (`Summary`): the
mean per-image nodule IoU of `thyroidseg.metrics.ConfusionMatrix.summary`, the boundary
metrics of `thyroidseg.metrics.evaluation`, the paired differences of the benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Summary", "summarize"]


@dataclass(frozen=True)
class Summary:
    """Mean, spread and bootstrap confidence interval of one value per image.

    Attributes
    ----------
    mean, std
        Mean and sample standard deviation (``ddof=1``) of the included values.
    ci_low, ci_high
        Percentile-bootstrap confidence interval of the mean (level ``confidence``).
    confidence
        Level of the interval, e.g. ``0.95``.
    n_images
        Number of values included.
    n_excluded
        Number of values left out because they were NaN or infinite (e.g. IoU of an image
        where truth and prediction both lack the class, HD95 when one mask is empty).

    ``std`` and the interval are NaN with fewer than 2 values; everything is NaN with none.
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float
    n_images: int
    n_excluded: int

    def __str__(self) -> str:
        level = f"{self.confidence:.0%}"
        return (
            f"{self.mean:.4f} +- {self.std:.4f} [{level} CI {self.ci_low:.4f}, "
            f"{self.ci_high:.4f}] (n={self.n_images}, excluded {self.n_excluded})"
        )

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready fields (NaN becomes ``None``, an infinity ``"inf"``/``"-inf"``)."""
        return {key: _json_number(value) for key, value in self.__dict__.items()}


def summarize(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> Summary:
    """Summarise one value per image: mean, std and a bootstrap CI of the mean.

    NaN and infinite values are excluded and counted in ``n_excluded``. The interval is the
    percentile bootstrap: resample the included images with replacement ``n_bootstrap``
    times and take the ``(1-confidence)/2`` and ``(1+confidence)/2`` quantiles of the
    resampled means. ``seed`` makes it reproducible.

    Examples
    --------
    >>> s = summarize([0.5, 0.7, float("nan"), 0.9])
    >>> round(s.mean, 4), round(s.std, 4), s.n_images, s.n_excluded
    (0.7, 0.2, 3, 1)
    >>> 0.5 <= s.ci_low <= s.mean <= s.ci_high <= 0.9
    True
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    array = np.asarray(values, dtype=np.float64).ravel()
    included = array[np.isfinite(array)]
    n = included.size
    nan = float("nan")
    mean = float(included.mean()) if n else nan
    std = float(included.std(ddof=1)) if n > 1 else nan
    low = high = nan
    if n > 1:
        rng = np.random.default_rng(seed)
        means = np.empty(n_bootstrap)
        chunk = max(1, 2_000_000 // n)  # bounded memory for many images
        for start in range(0, n_bootstrap, chunk):
            stop = min(start + chunk, n_bootstrap)
            means[start:stop] = included[rng.integers(0, n, (stop - start, n))].mean(axis=1)
        low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2]).tolist()
    return Summary(mean, std, low, high, confidence, n, int(array.size - n))


def _json_number(value: Any) -> Any:
    """``value`` as JSON takes it: NaN (undefined) is ``None`` (``null``), an infinity the
    string ``"inf"`` or ``"-inf"`` (``float()`` reads it back), NumPy numbers Python ones."""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return float(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, np.integer):
        return int(value)
    return value
