"""preprocess on the real DDTI frames (skipped when ../shared/data/ddti is absent)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from thyroidseg.io.files import list_images, read_binary_mask, read_image
from thyroidseg.preprocessing import preprocess
from thyroidseg.preprocessing.geometry import Box
from thyroidseg.preprocessing.scan_region import find_views

pytestmark = pytest.mark.ddti


@pytest.fixture(scope="module")
def frames(ddti_dir):
    """(stem, grey frame, mask, metadata row) for every DDTI image."""
    with open(ddti_dir / "metadata.csv", newline="") as handle:
        meta = {row["stem"]: row for row in csv.DictReader(handle)}
    masks = list_images(ddti_dir / "masks")
    return [
        (stem, read_image(path, grayscale=True), read_binary_mask(masks[stem]), meta[stem])
        for stem, path in list_images(ddti_dir / "images").items()
    ]


def _touching_components(mask: np.ndarray, box: Box) -> np.ndarray:
    """The mask's connected components that have at least one pixel inside ``box``."""
    _, labels = cv2.connectedComponents(mask, connectivity=8)
    touching = np.unique(labels[box.slices][mask[box.slices] > 0])
    return np.isin(labels, touching) & (mask > 0)


def test_box_keeps_every_nodule_pixel_on_every_frame(frames) -> None:
    """The default crop keeps 100% of every mask component that reaches the image.

    One DDTI mask (338_2) also holds a stray polygon drawn over the "IZQ" side label,
    50 px below the field of view, with no pixel inside it: such components are the only
    mask pixels allowed outside the box.
    """
    lost = {}
    strays = []
    for stem, gray, mask, _ in frames:
        box = preprocess(gray, inpaint_annotations=False, equalization=None, smoothing=None).box
        nodules = _touching_components(mask, box)
        outside = np.count_nonzero(nodules) - np.count_nonzero(nodules[box.slices])
        if outside:
            lost[stem] = outside
        if np.count_nonzero(nodules) < np.count_nonzero(mask):
            strays.append(stem)
    assert lost == {}
    assert len(strays) <= 1  # 338_2 only; more would mean the box cuts masks in two


def test_views_split_the_split_screen_frames(frames) -> None:
    """Two views where the frame is split, and each nodule lies in one view.

    On a split screen every annotated nodule belongs to one view. One DDTI frame (233_1)
    shows a lobe continuing across the seam and its polygon crosses it; no other may.
    """
    n_two, crossing = 0, []
    for stem, gray, mask, _ in frames:
        views = find_views(gray)
        assert 1 <= len(views) <= 2, stem
        if len(views) == 1:
            continue
        n_two += 1
        left, right = views
        assert left.x1 <= right.x0 and min(left.width, right.width) > 100, stem
        count, labels = cv2.connectedComponents(mask, connectivity=8)
        for label in range(1, count):
            component = labels == label
            best = max(np.count_nonzero(component[view.slices]) for view in views)
            if best < 0.95 * np.count_nonzero(component):
                crossing.append(stem)
    assert len(crossing) <= 1, crossing
    polygons = [int(row["n_polygons"]) for *_, row in frames]
    # Most multi-polygon frames are split screens (one nodule per view) and most
    # single-polygon frames are not: the counts agree to within 10% of the frames.
    assert abs(n_two - sum(p > 1 for p in polygons)) <= 0.1 * len(frames)


def test_mask_round_trip_on_real_masks(frames) -> None:
    """Round trip through the default geometry changes only pixels near the mask edge."""
    for stem, gray, mask, _ in frames[::8]:
        result = preprocess(gray)
        back = result.mask_to_original(result.mask_to_network(mask))
        ry, rx = result.round_trip_radius
        kernel = np.ones((2 * ry + 1, 2 * rx + 1), np.uint8)
        cut = np.zeros_like(mask)
        cut[result.box.slices] = mask[result.box.slices]
        assert (back <= cv2.dilate(cut, kernel)).all(), stem
        assert (back >= cv2.erode(cut, kernel)).all(), stem
