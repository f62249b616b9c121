"""The pixel size of a frame: millimetres per pixel, where they came from, and their checks.

`FrameSpacing` is what `thyroidseg.inference.measurements.measure` takes to measure in millimetres
when the size may differ from region to region (the tissue regions of an ultrasound DICOM
file, `thyroidseg.io.dicom.read_spacing`) or was typed by the user; `check_spacing` refuses
sizes no ultrasound frame has. Spacings are ``(row, col)``: down and across the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

__all__ = [
    "SPACING_RANGE_MM",
    "SPACING_SOURCES",
    "FrameSpacing",
    "RegionSpacing",
    "SpacingSource",
    "check_spacing",
]

SpacingSource = Literal["ultrasound-region", "pixel-spacing", "user", "none"]
SPACING_SOURCES: tuple[str, ...] = get_args(SpacingSource)

SPACING_RANGE_MM: tuple[float, float] = (1e-4, 10.0)
"""Plausible millimetres per pixel of an ultrasound frame; `check_spacing` refuses others."""
_PixelPair = tuple[float, float]
_Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class RegionSpacing:
    """One 2-D tissue region of the Sequence of Ultrasound Regions and its pixel size.

    Attributes
    ----------
    box
        ``(x0, y0, x1, y1)``, half-open: ``RegionLocationMinX0``, ``MinY0``, ``MaxX1 + 1``,
        ``MaxY1 + 1``.
    spacing
        ``(row, col)`` millimetres per pixel: ``10 * PhysicalDeltaY``, ``10 *
        PhysicalDeltaX`` (the deltas are centimetres per pixel).
    """

    box: _Box
    spacing: _PixelPair

    def contains(self, x: float, y: float) -> bool:
        """Whether the point ``(x, y)`` (column, row) lies in the box."""
        x0, y0, x1, y1 = self.box
        return x0 <= x < x1 and y0 <= y < y1


@dataclass(frozen=True)
class FrameSpacing:
    """The pixel size of a frame, in millimetres, and where it came from.

    Attributes
    ----------
    source
        ``"ultrasound-region"`` (per region, `regions`), ``"pixel-spacing"`` (the file's
        Pixel Spacing or Imager Pixel Spacing), ``"user"`` (given by hand) or ``"none"``.
    spacing
        ``(row, col)`` millimetres per pixel for the whole frame; ``None`` for
        ``"ultrasound-region"`` and ``"none"``.
    regions
        The tissue regions with their spacing, for ``"ultrasound-region"``.

    Examples
    --------
    >>> FrameSpacing("user", (0.1, 0.1)).at(5, 5)
    ((0.1, 0.1), 'user')
    >>> two = FrameSpacing("ultrasound-region", regions=(
    ...     RegionSpacing((0, 0, 10, 10), (0.1, 0.1)), RegionSpacing((10, 0, 20, 10), (0.2, 0.2))))
    >>> two.at(15, 3), two.at(25, 3)
    (((0.2, 0.2), 'ultrasound-region'), (None, 'none'))
    """

    source: SpacingSource
    spacing: _PixelPair | None = None
    regions: tuple[RegionSpacing, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in SPACING_SOURCES:
            raise ValueError(f"source must be one of {SPACING_SOURCES}, got {self.source!r}")
        whole = self.source in ("pixel-spacing", "user")
        by_region = self.source == "ultrasound-region"
        if whole != (self.spacing is not None) or by_region != bool(self.regions):
            raise ValueError(
                "a FrameSpacing has a spacing iff its source is pixel-spacing or user, and "
                f"regions iff it is ultrasound-region; got source {self.source!r}, spacing "
                f"{self.spacing!r} and {len(self.regions)} regions"
            )

    def at(self, x: float, y: float) -> tuple[_PixelPair | None, SpacingSource]:
        """Spacing and source for a point ``(x, y)`` (column, row), e.g. a nodule's centre.

        For ``"ultrasound-region"``: the spacing of the smallest region that contains the
        point; ``(None, "none")`` outside every region. Otherwise the frame's one spacing.
        """
        if self.source != "ultrasound-region":
            return self.spacing, self.source
        inside = [r for r in self.regions if r.contains(x, y)]
        if not inside:
            return None, "none"
        smallest = min(inside, key=lambda r: (r.box[2] - r.box[0]) * (r.box[3] - r.box[1]))
        return smallest.spacing, "ultrasound-region"


def check_spacing(spacing: object, where: str) -> _PixelPair:
    """``spacing`` (one number or ``(row, col)``) as a pair, if plausible for ultrasound.

    Each value must lie in `SPACING_RANGE_MM` (0.0001 to 10 mm per pixel): zero, negative,
    NaN and absurd sizes (a spacing in metres, or in centimetres taken as millimetres, is
    usually off by 10-1000x) are refused.

    Raises
    ------
    ValueError
        Not one or two numbers, or out of range; the message starts with ``where`` (the
        file, or the option that gave it).

    >>> check_spacing(0.1, "here")
    (0.1, 0.1)
    >>> check_spacing((0.0, 0.1), "scan.dcm")
    Traceback (most recent call last):
    ...
    ValueError: scan.dcm: pixel spacing (0.0, 0.1) mm is not plausible for ultrasound: each value must lie between 0.0001 and 10 mm per pixel
    """  # noqa: E501
    values = list(spacing) if isinstance(spacing, list | tuple | np.ndarray) else [spacing]
    low, high = SPACING_RANGE_MM
    numbers = [
        float(v)
        for v in values
        if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
    ]
    if not (
        len(values) in (1, 2)
        and len(numbers) == len(values)
        and all(math.isfinite(v) and low <= v <= high for v in numbers)
    ):
        raise ValueError(
            f"{where}: pixel spacing {spacing!r} mm is not plausible for ultrasound: each "
            f"value must lie between {low:g} and {high:g} mm per pixel"
        )
    return numbers[0], numbers[-1]
