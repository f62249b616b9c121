"""Make the "Measure nodules" tutorial's picture and table from real DDTI frames.

Segments the fixed frames `STEMS` exactly as ``thyroidseg predict FRAMES OUT --overlay
--measure --pixel-spacing MM`` does (`predict_folder` on a temporary folder holding
links to them), then

* writes ``docs/img/measure_overlays.png``: each frame with the predicted outline (red, area
  tinted), DDTI's own annotation (green), each nodule's number (the CSV's ``nodule``) and its
  longest diameter (``max_diameter_px``, yellow, between the two pixel centres that define it);
* prints the rows of ``measurements.csv`` for those frames as a Markdown table, to paste
  into ``docs/measure.md``.

The frames come from ``../shared/data/ddti`` and are not stored in the repository; only the
generated picture is. Without ``--model`` the model shipped in the package is used, with its
recommended inference settings::

    python scripts/make_measure_tutorial.py
    python scripts/make_measure_tutorial.py --model runs/fold0/last.pt --out /tmp/overlays.png
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from thyroidseg import Nodule, Segmenter, measure, preprocess
from thyroidseg.inference.folders import MEASUREMENTS_CSV, predict_folder
from thyroidseg.inference.measurements import _hull_vertices
from thyroidseg.inference.segmenter import overlay
from thyroidseg.io.files import read_binary_mask, read_image, write_image
from thyroidseg.preprocessing.geometry import Box

ROOT = Path(__file__).resolve().parents[1]

STEMS = ("80_1", "19_1", "3_1", "22_1")
"""The tutorial's frames: a split-screen frame with the nodule in both views (taller than
wide in one, wider than tall in the other by DDTI's annotation), a taller-than-wide nodule,
a wider one and a small one (DDTI's masks cover 12.8%, 3.3%, 3.6% and 1.1% of them)."""

DIAMETER_COLOUR = (0, 230, 255)
"""BGR yellow of the longest-diameter segment and the nodule numbers."""
WIDTH = 448
"""Width of one frame in the picture (pixels; DDTI frames are 560 wide)."""
MARKED_DIAMETER = 10
"""Longest diameters of at least this many pixels get a dot at each end."""


def diameter_ends(
    mask: np.ndarray, nodule: Nodule, views: Sequence[Box]
) -> tuple[tuple[int, int], ...]:
    """The two pixel centres ``(x, y)`` of ``nodule`` whose distance is ``max_diameter_px``.

    The nodule is found again as the 8-connected component of its view with its bounding box
    and area; the farthest pair is searched, as `measure` does, among the vertices of the
    convex hull of its pixel centres, and its length is checked against the measured one.
    """
    x0, y0, x1, y1 = views[nodule.view]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (mask[y0:y1, x0:x1] != 0).astype(np.uint8), connectivity=8
    )
    wanted = (nodule.x - x0, nodule.y - y0, nodule.width, nodule.height, nodule.area_px)
    found = [i for i in range(1, count) if tuple(int(v) for v in stats[i]) == wanted]
    if len(found) != 1:
        raise RuntimeError(f"nodule {nodule.nodule}: {len(found)} components match its box")
    label = found[0]
    hull = _hull_vertices(labels == label).astype(np.float64)  # (row, col) in the view
    gaps = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    first, second = np.unravel_index(int(gaps.argmax()), gaps.shape)
    if not np.isclose(gaps[first, second], nodule.max_diameter_px):
        raise RuntimeError(
            f"nodule {nodule.nodule}: the farthest hull pair is {gaps[first, second]} px apart, "
            f"measure() says {nodule.max_diameter_px} px"
        )
    return tuple((int(hull[i, 1]) + x0, int(hull[i, 0]) + y0) for i in (first, second))


def tile(
    image: np.ndarray, mask: np.ndarray, truth: np.ndarray, views: Sequence[Box], stem: str
) -> np.ndarray:
    """One frame at `WIDTH`: outlines, each nodule's longest diameter and number, a caption.

    The outlines are drawn at the frame's size and the picture is then shrunk; the diameters
    and numbers are drawn after shrinking, so that they stay sharp.
    """
    scale = WIDTH / image.shape[1]
    picture = overlay(image, mask, truth)
    picture = cv2.resize(
        picture, (WIDTH, round(picture.shape[0] * scale)), interpolation=cv2.INTER_AREA
    )

    def shrunk(x: float, y: float) -> tuple[int, int]:
        return round(x * scale), round(y * scale)

    nodules = measure(mask, views=views)
    for nodule in nodules:
        start, end = (shrunk(*point) for point in diameter_ends(mask, nodule, views))
        cv2.line(picture, start, end, DIAMETER_COLOUR, 1, cv2.LINE_AA)
        if nodule.max_diameter_px >= MARKED_DIAMETER:
            for point in (start, end):
                cv2.circle(picture, point, 2, DIAMETER_COLOUR, -1, cv2.LINE_AA)
        text_y = nodule.y - 4 if nodule.y * scale >= 14 else nodule.y + nodule.height + 14
        for colour, thickness in (((0, 0, 0), 3), (DIAMETER_COLOUR, 1)):  # outlined digits
            cv2.putText(
                picture,
                str(nodule.nodule),
                shrunk(nodule.x, text_y),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                colour,
                thickness,
                cv2.LINE_AA,
            )
    caption = np.full((22, WIDTH, 3), 255, np.uint8)
    text = f"{stem}.png: {len(nodules)} nodule{'s' if len(nodules) != 1 else ''}"
    cv2.putText(caption, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([picture, caption])


def grid(tiles: list[np.ndarray], columns: int = 2) -> np.ndarray:
    """Tiles in rows of ``columns``, padded white to a common size, 4 px apart."""
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    padded = [
        np.pad(
            t,
            ((2, 2 + height - t.shape[0]), (2, 2 + width - t.shape[1]), (0, 0)),
            constant_values=255,
        )
        for t in tiles
    ]
    padded += [np.full_like(padded[0], 255)] * (-len(padded) % columns)
    return np.vstack([np.hstack(padded[i : i + columns]) for i in range(0, len(padded), columns)])


def markdown_table(csv_text: str) -> str:
    """The CSV as a Markdown table (header row, alignment row, one row per nodule)."""
    rows = list(csv.reader(csv_text.splitlines()))
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        metavar="CHECKPOINT",
        help="checkpoint(s) instead of the shipped model (several: an ensemble)",
    )
    parser.add_argument(
        "--ddti",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "ddti",
        help="DDTI folder with images/ and masks/ (default: ../shared/data/ddti)",
    )
    parser.add_argument(
        "--pixel-spacing",
        type=float,
        default=0.1,
        metavar="MM",
        help="millimetres per pixel for the _mm columns (default: 0.1, the tutorial's)",
    )
    parser.add_argument(
        "--min-area",
        type=int,
        default=None,
        metavar="PX",
        help="remove predicted components smaller than this (default: the model's "
        "recommendation, as thyroidseg predict)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "img" / "measure_overlays.png",
        help="the picture to write (default: docs/img/measure_overlays.png)",
    )
    args = parser.parse_args()
    sources = {stem: args.ddti / "images" / f"{stem}.png" for stem in STEMS}
    truths = {stem: args.ddti / "masks" / f"{stem}.png" for stem in STEMS}
    missing = [str(p) for p in (*sources.values(), *truths.values()) if not p.is_file()]
    if missing:
        sys.exit(f"missing DDTI files (pass --ddti): {', '.join(missing)}")

    options = {"device": "cpu", "min_area": args.min_area}
    if args.model:
        segmenter = Segmenter.from_checkpoint(args.model, **options)
    else:
        segmenter = Segmenter.pretrained(**options)
    with tempfile.TemporaryDirectory(prefix="measure_tutorial_") as temporary:
        frames, out = Path(temporary) / "frames", Path(temporary) / "out"
        frames.mkdir()
        for source in sources.values():
            (frames / source.name).symlink_to(source.resolve())
        result = predict_folder(
            segmenter,
            frames,
            out,
            overlays=True,
            measurements=True,
            pixel_spacing=args.pixel_spacing,
            progress=False,
        )
        csv_text = (out / MEASUREMENTS_CSV).read_text()
        tiles = []
        for stem, source in sources.items():
            image = read_image(source)  # as predict_folder reads it
            mask = read_binary_mask(result.masks[stem])
            views = preprocess(image, **segmenter.preprocess_options).views
            tiles.append(tile(image, mask, read_binary_mask(truths[stem]), views, stem))
    write_image(args.out, grid(tiles))
    model = ", ".join(map(str, args.model)) if args.model else "the shipped model"
    print(f"written {args.out} ({model})")
    print(
        f"settings: tta={segmenter.tta}, fill_holes={segmenter.fill_holes}, "
        f"min_area={segmenter.min_area}, keep_largest={segmenter.keep_largest}; "
        f"{result.frames} frames, {result.nodules} nodules"
    )
    print(f"\nmeasurements.csv rows (--pixel-spacing {args.pixel_spacing:g}):\n")
    print(markdown_table(csv_text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
