"""The training history: one row per epoch, as ``history.csv`` and as curves in ``history.png``.

`thyroidseg.training.Trainer` keeps ``history`` as a list of dicts (``epoch``, ``lr``,
``train_loss``, ``val_iou``, ``val_dice``, ``seconds``) and rewrites both files after every
epoch with `write_history`. The curves are drawn with OpenCV (`plot_history`), so no
plotting library is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.io.files import write_csv, write_image

__all__ = ["HISTORY_CSV", "HISTORY_PNG", "plot_history", "write_history"]

HISTORY_CSV = "history.csv"
"""File name of the history table in a run folder."""
HISTORY_PNG = "history.png"
"""File name of the training curves in a run folder."""


def write_history(out_dir: PathLike, history: Sequence[Mapping[str, float]]) -> list[Path]:
    """Write ``out_dir/history.csv`` and ``out_dir/history.png`` (`plot_history`), atomically.

    The table has a header of every key in first-seen order and one row per epoch; a key
    missing from a row (``val_iou`` without validation) is an empty cell. Each call
    replaces the files of the previous one.

    Returns
    -------
    list of pathlib.Path
        The two files.
    """
    out_dir = Path(out_dir)
    table = write_csv(out_dir / HISTORY_CSV, history)
    return [table, write_image(out_dir / HISTORY_PNG, plot_history(history))]


def plot_history(
    history: Sequence[Mapping[str, float]], *, size: tuple[int, int] = (360, 720)
) -> np.ndarray:
    """Draw training curves as a BGR ``uint8`` image (no matplotlib needed).

    Left panel: training loss per epoch. Right panel: validation nodule IoU and Dice
    (per-image means) on a fixed 0-1 axis, when the history has them.
    """
    height, width = size
    canvas = np.full((height, width, 3), 255, np.uint8)
    black = (0, 0, 0)
    panels = [
        ("train loss", ("train_loss",)),
        ("validation (per-image mean)", ("val_iou", "val_dice")),
    ]
    colours = {"train_loss": (180, 90, 30), "val_iou": (40, 40, 200), "val_dice": (40, 150, 40)}
    epochs = [row["epoch"] for row in history]
    half = width // 2
    for p, (title, keys) in enumerate(panels):
        x0, x1, y0, y1 = p * half + 50, (p + 1) * half - 15, 30, height - 40
        cv2.rectangle(canvas, (x0, y0), (x1, y1), black, 1)
        _text(canvas, title, (x0, 20), black, 0.45)
        series = {k: [row.get(k, math.nan) for row in history] for k in keys}
        finite = [v for vs in series.values() for v in vs if math.isfinite(v)]
        if not finite:
            continue
        low, high = (0.0, 1.0) if p == 1 else (min(0.0, min(finite)), max(finite))
        high = high if high > low else low + 1.0
        first, last = min(epochs), max(epochs)
        x_pixels = x0 + (np.asarray(epochs, float) - first) / max(last - first, 1) * (x1 - x0)
        y_scale = (y1 - y0) / (high - low)
        for value in (low, high):
            _text(
                canvas, f"{value:.3g}", (p * half + 2, int(y1 - (value - low) * y_scale) + 4), black
            )
        _text(canvas, f"epoch {first}..{last}", (x0, height - 15), black)
        for k, (name, values) in enumerate(series.items()):
            y_pixels = y1 - (np.asarray(values, float) - low) * y_scale
            keep = np.isfinite(y_pixels)
            points = np.stack([x_pixels[keep], y_pixels[keep]], axis=1).astype(np.int32)
            cv2.polylines(canvas, [points], False, colours[name], 2, cv2.LINE_AA)
            for x, y in points:
                cv2.circle(canvas, (int(x), int(y)), 3, colours[name], -1, cv2.LINE_AA)
            _text(canvas, name, (x1 - 90, y0 + 18 + 16 * k), colours[name])
    return canvas


def _text(
    canvas: np.ndarray,
    text: str,
    origin: tuple[int, int],
    colour: tuple[int, int, int],
    scale: float = 0.4,
) -> None:
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
