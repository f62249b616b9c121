"""Make docs/img/preprocess_grid.png: DDTI frames before and after thyroidseg.preprocessing.

Each row is one frame. Left: the original scanner frame with the views found by
find_views (green), the crop with its margin (yellow, dashed by the margin) and the marks
filled by the annotation step (red). Right: the 256x256 network input of the default
preprocess(). The frames come from ../shared/data/ddti and are not stored in the repository;
only this generated picture is.

    python scripts/make_preprocess_figure.py [--ddti DIR] [--out docs/img/preprocess_grid.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from thyroidseg.io.files import read_image, write_image
from thyroidseg.preprocessing import preprocess
from thyroidseg.preprocessing.inpainting import find_annotations

ROOT = Path(__file__).resolve().parents[1]
STEMS = ("2_1", "80_2", "58_1", "95_1")
"""Single view with side label; typed note inside the image; split screen with caliper
letters; split screen whose views have different heights."""

GREEN, YELLOW, RED = (0, 200, 0), (0, 220, 255), (0, 0, 255)


def panel(gray: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(annotated original, network input), both at display size."""
    result = preprocess(gray)
    shown = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    marks = find_annotations(gray[result.box.slices])
    crop = shown[result.box.slices]
    crop[marks > 0] = RED
    x0, y0, x1, y1 = result.box
    cv2.rectangle(shown, (x0, y0), (x1 - 1, y1 - 1), YELLOW, 1)
    for view in result.views:
        cv2.rectangle(shown, (view.x0, view.y0), (view.x1 - 1, view.y1 - 1), GREEN, 2)
    height, width = gray.shape
    size = (round(width * scale), round(height * scale))
    original = cv2.resize(shown, size, interpolation=cv2.INTER_AREA)
    network = cv2.resize(result.image, (size[1], size[1]), interpolation=cv2.INTER_AREA)
    return original, cv2.cvtColor(network, cv2.COLOR_GRAY2BGR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ddti", type=Path, default=ROOT.parent / "shared" / "data" / "ddti")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "preprocess_grid.png")
    parser.add_argument("--scale", type=float, default=0.45, help="display scale of the originals")
    args = parser.parse_args()
    rows = []
    for stem in STEMS:
        gray = read_image(args.ddti / "images" / f"{stem}.png", grayscale=True)
        original, network = panel(gray, args.scale)
        gap = np.full((original.shape[0], 6, 3), 255, np.uint8)
        rows.append(np.hstack([original, gap, network]))
        rows.append(np.full((6, rows[-1].shape[1], 3), 255, np.uint8))
    write_image(args.out, np.vstack(rows[:-1]))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
