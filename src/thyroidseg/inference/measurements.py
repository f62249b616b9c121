"""Measure the nodules of a segmentation: area, bounding box, longest diameter, aspect.

A nodule is one connected component of the mask (8-connectivity, as
`thyroidseg.inference.postprocess.postprocess_views` uses). `measure` returns one `Nodule`
per component, numbered 1, 2, ... by decreasing area; `write_measurements_csv` writes them
as the CSV of ``thyroidseg predict --measure``. Every definition, with its formula and its
limits, is in ``docs/measure.md``.

Coordinates follow the image: ``x`` is the column (across the ultrasound beam), ``y`` the
row (down the image, along the beam). Pixel ``(y, x)`` is the unit square centred on
``(y, x)``; lengths are measured between pixel centres, so a one-pixel nodule has diameter 0.

Examples
--------
>>> import numpy as np
>>> mask = np.zeros((8, 10), np.uint8)
>>> mask[1:4, 1:3] = 1            # 3 rows x 2 columns
>>> mask[5:8, 4:9] = 1            # 3 rows x 5 columns
>>> big, small = measure(mask, pixel_spacing=0.1)
>>> big.nodule, big.area_px, (big.x, big.y, big.width, big.height), big.max_diameter_px
(1, 15, (4, 5, 5, 3), 4.47213595499958)
>>> small.taller_than_wide, small.depth_mm, small.transverse_mm
(True, 0.30000000000000004, 0.2)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.io.files import write_csv
from thyroidseg.io.spacing import FrameSpacing, SpacingSource

__all__ = [
    "MEASUREMENT_COLUMNS",
    "MM_COLUMNS",
    "QUALITY_COLUMNS",
    "ImageKey",
    "Nodule",
    "PixelSpacing",
    "ViewBox",
    "measure",
    "measure_many",
    "write_loops_csv",
    "write_measurements_csv",
]

PixelSpacing = float | tuple[float, float]
ViewBox = Sequence[int]
ImageKey = str | tuple[str, int]
"""A row key of `write_measurements_csv`: an image's file name, or ``(file name, frame)``."""


@dataclass(frozen=True)
class Nodule:
    """The measurements of one nodule (one 8-connected component of a mask).

    Lengths in pixels are in pixels of the mask that was measured; the ``_mm`` fields are
    ``None`` unless a pixel spacing was given. With ``(row, col)`` spacing ``(s_r, s_c)``
    millimetres per pixel:

    - ``area_mm2 = area_px * s_r * s_c``
    - ``depth_mm = depth_px * s_r`` and ``transverse_mm = transverse_px * s_c``
    - ``max_diameter_mm = max |((y_i - y_j) s_r, (x_i - x_j) s_c)|`` over pairs of pixel
      centres of the nodule (not ``max_diameter_px`` scaled: the longest pair can change
      when the spacing is anisotropic).

    Attributes
    ----------
    nodule
        Rank by decreasing area in the frame: 1 is the largest (ties: topmost, then leftmost
        bounding box first).
    view
        Index of the view box (in the order given) that holds the nodule; 0 when no views
        were given (the whole frame is one view).
    area_px
        Pixel count.
    x, y, width, height
        Bounding box in the frame: leftmost column, topmost row, and the number of columns
        and rows the nodule spans (OpenCV's ``connectedComponentsWithStats``).
    max_diameter_px
        ``max |p_i - p_j|`` over pairs of pixel centres ``p = (y, x)`` of the nodule
        (Euclidean), computed on the vertices of their convex hull, where the farthest pair
        always lies.
    depth_px
        ``height``: the extent along the beam (down the image).
    transverse_px
        ``width``: the extent across the beam.
    taller_than_wide
        ``depth_px > transverse_px`` (the TI-RADS feature, here on bounding-box extents).
    mean_probability
        Mean nodule probability over the nodule's pixels; ``None`` without probabilities.
    expected_iou
        The model's estimate of the IoU of this outline with an expert's
        (`thyroidseg.inference.quality.ExpectedIoU`); ``None`` when the model has no
        estimator.
    review
        Check this outline: ``expected_iou`` is under the estimator's review threshold, or
        the frame does not look like a thyroid B-mode scan (``scan_warning``); ``None``
        without an estimator or a scan check.
    scan_warning
        Why the nodule's frame does not look like a thyroid B-mode scan
        (`thyroidseg.preprocessing.scan_check.check_scan`: colour Doppler, a fan-shaped
        field of view, no echo), in plain words; ``None`` when it does or was not checked.
    area_mm2, max_diameter_mm, depth_mm, transverse_mm
        The same in millimetres (formulas above); ``None`` without a pixel spacing.
    spacing_source
        Where the spacing came from when `measure` was given a
        `thyroidseg.io.spacing.FrameSpacing` (``"ultrasound-region"``, ``"pixel-spacing"``,
        ``"user"``, ``"none"``); ``None`` otherwise.
    """

    nodule: int
    view: int
    area_px: int
    x: int
    y: int
    width: int
    height: int
    max_diameter_px: float
    depth_px: int
    transverse_px: int
    taller_than_wide: bool
    mean_probability: float | None = None
    area_mm2: float | None = None
    max_diameter_mm: float | None = None
    depth_mm: float | None = None
    transverse_mm: float | None = None
    spacing_source: SpacingSource | None = None
    expected_iou: float | None = None
    review: bool | None = None
    scan_warning: str | None = None


MM_COLUMNS: tuple[str, ...] = ("area_mm2", "max_diameter_mm", "depth_mm", "transverse_mm")
"""The CSV columns written only when some nodule was measured with a pixel spacing."""

QUALITY_COLUMNS: tuple[str, ...] = ("expected_iou", "review")
"""The CSV columns written only when some nodule has an expected IoU."""

MEASUREMENT_COLUMNS: tuple[str, ...] = ("image",) + tuple(
    f.name
    for f in fields(Nodule)
    if f.name not in (*MM_COLUMNS, *QUALITY_COLUMNS, "spacing_source", "scan_warning")
)
"""The CSV columns always written, in order: ``image`` then the `Nodule` fields."""


def measure(
    mask: np.ndarray,
    pixel_spacing: PixelSpacing | FrameSpacing | None = None,
    probabilities: np.ndarray | None = None,
    views: Sequence[ViewBox] | None = None,
) -> list[Nodule]:
    """Measure every nodule (8-connected component) of one binary mask.

    Parameters
    ----------
    mask
        ``(H, W)`` binary mask: ``bool``, or numbers with at most one non-zero value
        (``{0, 1}``, ``{0, 255}``); non-zero is nodule.
    pixel_spacing
        Millimetres per pixel: one number for square pixels, or ``(row, col)`` spacing (down
        and across the image, the order of `thyroidseg.metrics` spacings). A
        `thyroidseg.io.spacing.FrameSpacing` (e.g. what a DICOM file states): each nodule is
        measured with the spacing at the centre of its bounding box (`FrameSpacing.at`: the
        ultrasound region that holds it) and records its ``spacing_source``. ``None``
        (default): no ``_mm`` fields.
    probabilities
        ``(H, W)`` nodule probabilities in ``[0, 1]`` (e.g. the softmax of the network's
        nodule class), for ``mean_probability``. ``None`` (default): no probability.
    views
        Boxes ``(x0, y0, x1, y1)`` (half-open, as ``Preprocessed.views``) of the views of a
        split-screen frame. Components are then found inside each view separately, exactly
        as `thyroidseg.inference.postprocess.postprocess_views` cleans them, and each nodule
        records its view's index. Views must lie inside the mask and not overlap, and every
        nodule pixel must lie in a view (post-processing guarantees it). ``None`` (default):
        the whole frame is view 0.

    Returns
    -------
    list of Nodule
        Sorted by decreasing area (``nodule`` 1, 2, ...); empty for an empty mask.

    Raises
    ------
    ValueError
        A mask that is not 2-D or not binary; probabilities of another shape, non-finite or
        outside ``[0, 1]``; a spacing that is not one or two finite positive numbers; views
        that are malformed, outside the mask or overlapping, or nodule pixels outside every
        view.

    Examples
    --------
    >>> mask = np.zeros((4, 8), np.uint8)
    >>> mask[1:4, 1:4] = 1; mask[0:4, 6] = 1
    >>> [(n.nodule, n.view, n.area_px, n.max_diameter_px) for n in measure(mask)]
    [(1, 0, 9, 2.8284271247461903), (2, 0, 4, 3.0)]
    >>> [n.view for n in measure(mask, views=[(0, 0, 4, 4), (4, 0, 8, 4)])]
    [0, 1]
    """
    binary = _binary_mask(mask)
    if isinstance(pixel_spacing, FrameSpacing):
        calibration, spacing = pixel_spacing, None
    else:
        calibration, spacing = None, _spacing(pixel_spacing)
    probability = _probabilities(probabilities, binary.shape)
    boxes = _views(views, binary)
    found: list[tuple[tuple[int, int, int], dict[str, Any]]] = []
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        part = binary[y0:y1, x0:x1]
        count, labels, stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
        for label in range(1, count):
            left, top, width, height, area = (int(v) for v in stats[label])
            inside = labels[top : top + height, left : left + width] == label
            x, y = x0 + left, y0 + top
            here: dict[str, Any] = {}
            if calibration is not None:
                spacing, here["spacing_source"] = calibration.at(
                    x + (width - 1) / 2, y + (height - 1) / 2
                )
            values = _component(inside, area, width, height, spacing) | here
            if probability is not None:
                crop = probability[y : y + height, x : x + width]
                values["mean_probability"] = float(crop[inside].mean())
            values.update(view=index, x=x, y=y)
            found.append(((-area, y, x), values))
    found.sort(key=lambda item: item[0])
    return [Nodule(nodule=rank, **values) for rank, (_, values) in enumerate(found, start=1)]


def measure_many(
    masks: Sequence[np.ndarray],
    pixel_spacing: PixelSpacing | None = None,
    probabilities: Sequence[np.ndarray] | None = None,
    views: Sequence[Sequence[ViewBox] | None] | None = None,
) -> list[list[Nodule]]:
    """`measure` for a batch of frames: one list of nodules per mask, in order.

    Parameters
    ----------
    masks
        ``(H, W)`` masks (sizes may differ), or an ``(N, H, W)`` array.
    pixel_spacing
        One spacing for every frame, as in `measure`; frames with different spacings are
        measured one `measure` call each.
    probabilities
        One ``(H, W)`` map per mask, or ``None`` for none.
    views
        One list of view boxes (or ``None``) per mask, or ``None`` for none.

    Raises
    ------
    ValueError
        As `measure`, with the index of the frame at fault; ``probabilities`` or ``views``
        whose length differs from the number of masks.

    Examples
    --------
    >>> frames = np.zeros((2, 3, 3), np.uint8); frames[1, 1, 1] = 1
    >>> [len(nodules) for nodules in measure_many(frames)]
    [0, 1]
    """
    count = len(masks)
    for name, per_frame in (("probabilities", probabilities), ("views", views)):
        if per_frame is not None and len(per_frame) != count:
            raise ValueError(f"{name} has {len(per_frame)} entries for {count} masks")
    results = []
    for i in range(count):
        try:
            results.append(
                measure(
                    masks[i],
                    pixel_spacing,
                    None if probabilities is None else probabilities[i],
                    None if views is None else views[i],
                )
            )
        except ValueError as error:
            raise ValueError(f"frame {i}: {error}") from error
    return results


def write_measurements_csv(path: PathLike, rows: Mapping[ImageKey, Iterable[Nodule]]) -> Path:
    """Write one CSV row per nodule, atomically (an existing file survives a failure).

    Columns: `MEASUREMENT_COLUMNS` (``image, nodule, view, area_px, x, y, width, height,
    max_diameter_px, depth_px, transverse_px, taller_than_wide, mean_probability``), then
    `QUALITY_COLUMNS` (``expected_iou, review``) when any nodule has an expected IoU or a
    review flag, then ``scan_warning`` when any nodule's frame failed the scan check, then
    `MM_COLUMNS` (``area_mm2, max_diameter_mm, depth_mm, transverse_mm``) when any nodule
    has them or a spacing source, then ``spacing_source`` when any nodule has one. With
    frames of cine loops among the keys, ``frame`` (numbered from 1; empty for a
    single-frame image) follows ``image``. ``taller_than_wide`` and ``review`` are
    ``true``/``false``; a
    missing value (no probability, or no spacing for that frame) is an empty cell; lengths
    and probabilities have 6 significant digits. A frame without nodules has no row.

    Parameters
    ----------
    path
        Destination file (the folder is created).
    rows
        Image file name, or ``(file name, frame number)`` for a frame of a cine loop -> its
        nodules (as `measure` returns them), in the order to write.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> mask = np.zeros((3, 4), np.uint8); mask[0, 1:4] = 1
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "measurements.csv"
    >>> print(write_measurements_csv(out, {"a.png": measure(mask)}).read_text(), end="")
    image,nodule,view,area_px,x,y,width,height,max_diameter_px,depth_px,transverse_px,taller_than_wide,mean_probability
    a.png,1,0,3,1,0,3,1,2,1,3,false,
    >>> loop = {("b.dcm", 2): measure(mask, FrameSpacing("user", (0.1, 0.1)))}
    >>> print(write_measurements_csv(out, loop).read_text(), end="")
    image,frame,nodule,view,area_px,x,y,width,height,max_diameter_px,depth_px,transverse_px,taller_than_wide,mean_probability,area_mm2,max_diameter_mm,depth_mm,transverse_mm,spacing_source
    b.dcm,2,1,0,3,1,0,3,1,2,1,3,false,,0.03,0.2,0.1,0.3,user
    """  # noqa: E501
    return write_csv(path, *_measurement_cells(rows))


def _measurement_cells(
    rows: Mapping[ImageKey, Iterable[Nodule]],
) -> tuple[list[dict[str, object]], tuple[str, ...]]:
    """The cells and columns of `write_measurements_csv`."""
    table = [(key, nodule) for key, nodules in rows.items() for nodule in nodules]
    for key, nodule in table:
        if not isinstance(nodule, Nodule):
            raise TypeError(f"{key}: expected Nodule objects, got {type(nodule).__name__}")
    sourced = any(nodule.spacing_source is not None for _, nodule in table)
    with_mm = sourced or any(getattr(nodule, MM_COLUMNS[0]) is not None for _, nodule in table)
    framed = any(isinstance(key, tuple) for key in rows)
    rated = any(n.expected_iou is not None or n.review is not None for _, n in table)
    warned = any(nodule.scan_warning is not None for _, nodule in table)
    columns = (
        ("image",)
        + (("frame",) if framed else ())
        + MEASUREMENT_COLUMNS[1:]
        + (QUALITY_COLUMNS if rated else ())
        + (("scan_warning",) if warned else ())
        + (MM_COLUMNS if with_mm else ())
        + (("spacing_source",) if sourced else ())
    )
    cells = [
        {
            "image": key[0] if isinstance(key, tuple) else str(key),
            **({"frame": key[1] if isinstance(key, tuple) else None} if framed else {}),
            **{column: _rounded(getattr(nodule, column)) for column in columns[1 + framed :]},
        }
        for key, nodule in table
    ]
    return cells, columns


def write_loops_csv(path: PathLike, rows: Mapping[ImageKey, Iterable[Nodule]]) -> Path | None:
    """Write one row per cine loop: its largest nodule over all its frames, and where.

    Columns ``image, frames, frames_with_nodules, max_diameter_px, max_diameter_mm,
    spacing_source, frame_of_max``. The largest nodule is the one of greatest
    ``max_diameter_mm`` when the loop states a spacing, else of greatest
    ``max_diameter_px``; ``frame_of_max`` is its frame (the first, on a tie). ``frames``
    counts the loop's frames among ``rows`` (with or without nodules). Single-frame images
    (plain keys) have no row; without any loop nothing is written.

    Parameters
    ----------
    path
        Destination file (the folder is created).
    rows
        As for `write_measurements_csv`: ``(file name, frame)`` -> that frame's nodules.

    Returns
    -------
    pathlib.Path or None
        ``path``, or ``None`` when ``rows`` holds no frame of a loop.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> small = np.zeros((9, 9), np.uint8); small[2:4, 2:4] = 1
    >>> large = np.zeros((9, 9), np.uint8); large[1:8, 1:6] = 1
    >>> loop = {("b.dcm", 1): measure(small), ("b.dcm", 2): measure(large), ("b.dcm", 3): []}
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "loops.csv"
    >>> print(write_loops_csv(out, loop).read_text(), end="")
    image,frames,frames_with_nodules,max_diameter_px,max_diameter_mm,spacing_source,frame_of_max
    b.dcm,3,2,7.2111,,,2
    """  # noqa: E501
    loops: dict[str, list[tuple[int, list[Nodule]]]] = {}
    for key, nodules in rows.items():
        if isinstance(key, tuple):
            loops.setdefault(key[0], []).append((key[1], list(nodules)))
    if not loops:
        return None
    cells = []
    for name, frames in loops.items():
        found = [(number, n) for number, nodules in sorted(frames) for n in nodules]
        in_mm = any(n.max_diameter_mm is not None for _, n in found)
        size = (lambda n: n.max_diameter_mm or 0.0) if in_mm else (lambda n: n.max_diameter_px)
        number, largest = max(found, key=lambda item: size(item[1]), default=(None, None))
        cells.append(
            {
                "image": name,
                "frames": len(frames),
                "frames_with_nodules": sum(1 for _, nodules in frames if nodules),
                "max_diameter_px": _rounded(largest.max_diameter_px) if largest else None,
                "max_diameter_mm": _rounded(largest.max_diameter_mm) if largest else None,
                "spacing_source": largest.spacing_source if largest else None,
                "frame_of_max": number,
            }
        )
    return write_csv(path, cells, tuple(cells[0]))


def _rounded(value: object) -> object:
    """Floats to 6 significant digits; `thyroidseg.io.files.csv_text` writes the rest."""
    return format(value, ".6g") if isinstance(value, float) else value


def _component(
    inside: np.ndarray, area: int, width: int, height: int, spacing: tuple[float, float] | None
) -> dict[str, Any]:
    """The fields of one component that depend on its pixels, given its bounding-box crop."""
    hull = _hull_vertices(inside)
    values: dict[str, object] = {
        "area_px": area,
        "width": width,
        "height": height,
        "max_diameter_px": _max_distance(hull, (1.0, 1.0)),
        "depth_px": height,
        "transverse_px": width,
        "taller_than_wide": height > width,
    }
    if spacing is not None:
        row, col = spacing
        values.update(
            area_mm2=area * row * col,
            max_diameter_mm=_max_distance(hull, spacing),
            depth_mm=height * row,
            transverse_mm=width * col,
        )
    return values


def _hull_vertices(inside: np.ndarray) -> np.ndarray:
    """``(K, 2)`` ``(row, col)`` vertices of the convex hull of the ``True`` pixel centres."""
    points = np.argwhere(inside).astype(np.int32)
    if len(points) < 3:
        return points
    return cv2.convexHull(points).reshape(-1, 2)


def _max_distance(points: np.ndarray, spacing: tuple[float, float]) -> float:
    """``max |(dr * s_r, dc * s_c)|`` over pairs of ``(row, col)`` points (0 for one point)."""
    scaled = points * np.asarray(spacing, dtype=np.float64)
    gaps = scaled[:, None, :] - scaled[None, :, :]
    return float(np.sqrt((gaps**2).sum(axis=-1).max()))


def _binary_mask(mask: np.ndarray) -> np.ndarray:
    """``uint8 {0, 1}`` copy of a bool mask or a numeric one with one non-zero value."""
    array = np.asarray(mask)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"mask must be a non-empty 2-D (H, W) array, got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"mask must hold numbers or booleans, got dtype {array.dtype}")
    nonzero = np.unique(array[array != 0])
    if nonzero.size > 1 or (nonzero.size == 1 and not np.isfinite(nonzero[0])):
        shown = ", ".join(str(v) for v in nonzero[:8]) + (", ..." if nonzero.size > 8 else "")
        raise ValueError(
            f"mask is not binary: besides 0 it holds {nonzero.size} values ({shown}); "
            "threshold it first (e.g. mask > 0.5)"
        )
    return (array != 0).astype(np.uint8)


def _spacing(pixel_spacing: PixelSpacing | None) -> tuple[float, float] | None:
    """``(row, col)`` millimetres per pixel, validated; ``None`` stays ``None``."""
    if pixel_spacing is None:
        return None
    values = np.atleast_1d(np.asarray(pixel_spacing, dtype=object)).ravel().tolist()
    numeric = all(
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
        for v in values
    )
    if not (len(values) in (1, 2) and numeric and all(math.isfinite(v) and v > 0 for v in values)):
        raise ValueError(
            "pixel_spacing must be one positive finite number of millimetres per pixel or a "
            f"(row, col) pair of them, got {pixel_spacing!r}"
        )
    return (float(values[0]), float(values[-1]))


def _probabilities(probabilities: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The probability map as float64, checked against the mask's shape and ``[0, 1]``."""
    if probabilities is None:
        return None
    array = np.asarray(probabilities)
    if array.shape != shape:
        raise ValueError(f"probabilities have shape {array.shape}, the mask {shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"probabilities must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"probabilities hold {int((~np.isfinite(array)).sum())} NaN/inf values")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(
            f"probabilities must lie in [0, 1], got {array.min():g}..{array.max():g} "
            "(an 8-bit probability PNG needs dividing by 255)"
        )
    return array


def _views(views: Sequence[ViewBox] | None, binary: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Validated view boxes; the whole frame when ``None``."""
    height, width = binary.shape
    if views is None:
        return [(0, 0, width, height)]
    boxes: list[tuple[int, int, int, int]] = []
    covered = np.zeros(binary.shape, bool)
    for index, view in enumerate(views):
        box = tuple(view)
        if len(box) != 4 or not all(isinstance(v, int | np.integer) for v in box):
            raise ValueError(f"view {index} must be four integers (x0, y0, x1, y1), got {view!r}")
        x0, y0, x1, y1 = (int(v) for v in box)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(
                f"view {index} {(x0, y0, x1, y1)} is empty or outside the {width} x {height} "
                "mask (need 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H)"
            )
        if covered[y0:y1, x0:x1].any():
            raise ValueError(f"view {index} {(x0, y0, x1, y1)} overlaps an earlier view")
        covered[y0:y1, x0:x1] = True
        boxes.append((x0, y0, x1, y1))
    outside = int((binary.astype(bool) & ~covered).sum())
    if outside:
        raise ValueError(
            f"{outside} nodule pixels lie outside every view; clean the mask with "
            "postprocess_views first, or measure without views"
        )
    return boxes
