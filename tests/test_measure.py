"""Tests for thyroidseg.inference.measurements: measurements against brute-force definitions."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from thyroidseg.inference.measurements import (
    MEASUREMENT_COLUMNS,
    MM_COLUMNS,
    Nodule,
    measure,
    measure_many,
    write_measurements_csv,
)
from thyroidseg.inference.postprocess import postprocess_views

FEW = settings(max_examples=60, deadline=None)

small_masks = st.tuples(st.integers(1, 9), st.integers(1, 9)).flatmap(
    lambda shape: arrays(np.uint8, shape, elements=st.integers(0, 1))
)
spacings = st.tuples(st.floats(0.01, 2.0, allow_nan=False), st.floats(0.01, 2.0, allow_nan=False))


def components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components as lists of (row, col), by flood fill (independent of OpenCV)."""
    seen = np.zeros(mask.shape, bool)
    found = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        stack, pixels = [start], []
        while stack:
            r, c = stack.pop()
            pixels.append((int(r), int(c)))
            for dr, dc in itertools.product((-1, 0, 1), repeat=2):
                n = (r + dr, c + dc)
                inside = 0 <= n[0] < mask.shape[0] and 0 <= n[1] < mask.shape[1]
                if inside and mask[n] and not seen[n]:
                    seen[n] = True
                    stack.append(n)
        found.append(pixels)
    return found


def longest_pair(pixels: list[tuple[int, int]], spacing: tuple[float, float]) -> float:
    """Largest distance between two pixel centres, over every pair."""
    return max(
        math.hypot((a[0] - b[0]) * spacing[0], (a[1] - b[1]) * spacing[1])
        for a in pixels
        for b in pixels
    )


@FEW
@given(small_masks, spacings)
def test_every_field_matches_its_brute_force_definition(mask, spacing) -> None:
    expected = []
    for pixels in components(mask):
        rows = [r for r, _ in pixels]
        cols = [c for _, c in pixels]
        y, x = min(rows), min(cols)
        height, width = max(rows) - y + 1, max(cols) - x + 1
        expected.append((-len(pixels), y, x, pixels, width, height))
    expected.sort(key=lambda item: item[:3])
    nodules = measure(mask, pixel_spacing=spacing)
    assert len(nodules) == len(expected)
    for rank, (nodule, (neg_area, y, x, pixels, width, height)) in enumerate(
        zip(nodules, expected, strict=True), start=1
    ):
        assert (nodule.nodule, nodule.view, nodule.area_px) == (rank, 0, -neg_area)
        assert (nodule.x, nodule.y, nodule.width, nodule.height) == (x, y, width, height)
        assert (nodule.depth_px, nodule.transverse_px) == (height, width)
        assert nodule.taller_than_wide == (height > width)
        assert nodule.max_diameter_px == pytest.approx(longest_pair(pixels, (1.0, 1.0)))
        assert nodule.max_diameter_mm == pytest.approx(longest_pair(pixels, spacing))
        assert nodule.area_mm2 == pytest.approx(len(pixels) * spacing[0] * spacing[1])
        assert nodule.depth_mm == pytest.approx(height * spacing[0])
        assert nodule.transverse_mm == pytest.approx(width * spacing[1])
        assert nodule.mean_probability is None


@FEW
@given(small_masks)
def test_areas_add_up_to_the_mask_and_decrease_with_the_rank(mask) -> None:
    nodules = measure(mask)
    assert sum(n.area_px for n in nodules) == int(mask.sum())
    assert [n.nodule for n in nodules] == list(range(1, len(nodules) + 1))
    areas = [n.area_px for n in nodules]
    assert areas == sorted(areas, reverse=True)


@FEW
@given(small_masks, st.integers(0, 7), st.integers(0, 7))
def test_translation_moves_only_the_box(mask, dy, dx) -> None:
    frame = np.zeros((mask.shape[0] + 7, mask.shape[1] + 7), np.uint8)
    frame[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] = mask
    for here, moved in zip(measure(mask), measure(frame), strict=True):
        assert (moved.x, moved.y) == (here.x + dx, here.y + dy)
        same = {name: getattr(here, name) for name in Nodule.__dataclass_fields__}
        same.update(x=moved.x, y=moved.y)
        assert moved == Nodule(**same)


@given(st.integers(1, 12), st.integers(1, 12), spacings)
def test_a_rectangle_spans_its_diagonal_between_pixel_centres(height, width, spacing) -> None:
    mask = np.zeros((height + 2, width + 3), np.uint8)
    mask[1 : 1 + height, 2 : 2 + width] = 1
    (nodule,) = measure(mask, pixel_spacing=spacing)
    assert nodule.max_diameter_px == pytest.approx(math.hypot(height - 1, width - 1))
    expected_mm = math.hypot((height - 1) * spacing[0], (width - 1) * spacing[1])
    assert nodule.max_diameter_mm == pytest.approx(expected_mm)
    assert (nodule.x, nodule.y, nodule.width, nodule.height) == (2, 1, width, height)
    assert nodule.area_px == height * width
    assert nodule.taller_than_wide == (height > width)


def test_a_single_pixel_has_diameter_zero_and_unit_box() -> None:
    mask = np.zeros((5, 5), bool)
    mask[3, 1] = True
    (nodule,) = measure(mask, pixel_spacing=0.5)
    assert nodule.max_diameter_px == 0.0 and nodule.max_diameter_mm == 0.0
    assert (nodule.x, nodule.y, nodule.width, nodule.height, nodule.area_px) == (1, 3, 1, 1, 1)
    assert nodule.area_mm2 == 0.25
    assert not nodule.taller_than_wide


def test_diagonal_neighbours_are_one_nodule() -> None:
    mask = np.eye(4, dtype=np.uint8)
    (nodule,) = measure(mask)
    assert nodule.area_px == 4
    assert nodule.max_diameter_px == pytest.approx(3 * math.sqrt(2))


def test_equal_areas_are_ranked_top_then_left() -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[4, 0] = mask[0, 4] = mask[0, 1] = 1
    assert [(n.y, n.x) for n in measure(mask)] == [(0, 1), (0, 4), (4, 0)]


def test_one_number_and_a_pair_of_equal_spacings_agree() -> None:
    mask = np.zeros((7, 9), np.uint8)
    mask[1:6, 2:5] = 1
    mask[6, 8] = 1
    assert measure(mask, pixel_spacing=0.3) == measure(mask, pixel_spacing=(0.3, 0.3))
    assert measure(mask, pixel_spacing=np.float32(0.25)) == measure(mask, pixel_spacing=0.25)


def test_an_anisotropic_spacing_can_change_the_longest_pair() -> None:
    # A T: row 0 spans columns 0..6, column 3 runs down to row 5. In pixels the longest pair
    # is the top bar (0, 0)-(0, 6), 6 long; with rows 2 mm and columns 1 mm it is the bar's
    # end to the foot, (0, 0)-(5, 3): hypot(10, 3) mm against 6 mm for the bar.
    mask = np.zeros((6, 7), np.uint8)
    mask[0, :] = 1
    mask[:, 3] = 1
    (nodule,) = measure(mask, pixel_spacing=(2.0, 1.0))
    assert nodule.max_diameter_px == pytest.approx(6.0)
    assert nodule.max_diameter_mm == pytest.approx(math.hypot(10.0, 3.0))


def test_mean_probability_is_the_mean_over_the_nodule_pixels() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.random((6, 8))
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:4] = 1
    mask[5, 6:8] = 1
    big, small = measure(mask, probabilities=probabilities)
    assert big.mean_probability == pytest.approx(probabilities[1:3, 1:4].mean())
    assert small.mean_probability == pytest.approx(probabilities[5, 6:8].mean())


def test_views_split_components_as_post_processing_does() -> None:
    mask = np.zeros((4, 10), np.uint8)
    mask[1:3, 3:7] = 1  # one component across the border between the two views
    mask[0, 9] = 1
    views = [(0, 0, 5, 4), (5, 0, 10, 4)]
    assert np.array_equal(postprocess_views(mask, views), mask)
    nodules = measure(mask, views=views)
    assert [(n.view, n.x, n.width, n.area_px) for n in nodules] == [
        (0, 3, 2, 4),
        (1, 5, 2, 4),
        (1, 9, 1, 1),
    ]
    assert [n.view for n in measure(mask)] == [0, 0]


def test_a_mask_with_255_for_nodule_is_measured_like_ones() -> None:
    mask = np.zeros((5, 5), np.uint8)
    mask[1:4, 2] = 1
    assert measure(mask * np.uint8(255)) == measure(mask) == measure(mask.astype(bool))
    assert measure(np.zeros((3, 3))) == []


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (np.zeros((2, 3, 3), np.uint8), "2-D"),
        (np.array([[0, 1], [2, 0]], np.uint8), "not binary"),
        (np.array([[0.0, 0.5], [1.0, 0.0]]), "not binary"),
        (np.array([[0.0, np.nan], [0.0, 0.0]]), "not binary"),
        (np.array([["a", "b"]]), "numbers"),
    ],
)
def test_bad_masks_are_rejected(mask, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        measure(mask)


@pytest.mark.parametrize(
    ("probabilities", "match"),
    [
        (np.zeros((3, 4)), r"shape \(3, 4\)"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.full((4, 4), 255.0), r"\[0, 1\]"),
        (np.full((4, 4), -0.1), r"\[0, 1\]"),
    ],
)
def test_bad_probabilities_are_rejected(probabilities, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        measure(np.ones((4, 4), np.uint8), probabilities=probabilities)


@pytest.mark.parametrize(
    "spacing", [0, -0.1, float("nan"), float("inf"), (0.1, 0), (1, 2, 3), True, "0.1"]
)
def test_bad_spacings_are_rejected(spacing) -> None:
    with pytest.raises(ValueError, match="pixel_spacing"):
        measure(np.ones((2, 2), np.uint8), pixel_spacing=spacing)


@pytest.mark.parametrize(
    ("views", "match"),
    [
        ([(0, 0, 5)], "four integers"),
        ([(0.0, 0, 2, 2)], "four integers"),
        ([(0, 0, 7, 4)], "outside"),
        ([(2, 0, 2, 4)], "empty"),
        ([(0, 0, 3, 4), (2, 0, 6, 4)], "overlaps"),
        ([(0, 0, 2, 4)], "2 nodule pixels lie outside every view"),
    ],
)
def test_bad_views_are_rejected(views, match: str) -> None:
    mask = np.zeros((4, 6), np.uint8)
    mask[1, 1] = mask[1, 4] = mask[2, 5] = 1
    with pytest.raises(ValueError, match=match):
        measure(mask, views=views)


def test_measure_many_is_measure_per_frame() -> None:
    rng = np.random.default_rng(1)
    masks = [(rng.random(shape) > 0.6).astype(np.uint8) for shape in [(5, 7), (9, 4), (6, 6)]]
    probabilities = [rng.random(m.shape) for m in masks]
    views = [None, [(0, 0, 4, 9)], None]
    expected = [measure(m, 0.2, p, v) for m, p, v in zip(masks, probabilities, views, strict=True)]
    assert measure_many(masks, 0.2, probabilities, views) == expected
    stacked = np.stack([masks[2], masks[2]])
    assert measure_many(stacked) == [measure(masks[2])] * 2


def test_measure_many_names_the_frame_at_fault() -> None:
    masks = [np.ones((2, 2), np.uint8), np.array([[0, 1], [2, 0]])]
    with pytest.raises(ValueError, match="frame 1: mask is not binary"):
        measure_many(masks)
    with pytest.raises(ValueError, match="probabilities has 1 entries for 2 masks"):
        measure_many(masks, probabilities=[np.zeros((2, 2))])


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_csv_has_one_row_per_nodule_with_the_issue_columns(tmp_path: Path) -> None:
    mask = np.zeros((6, 8), np.uint8)
    mask[0:4, 1:3] = 1
    mask[5, 5:8] = 1
    probabilities = np.full(mask.shape, 0.75)
    rows = {
        "a, b.png": measure(mask, probabilities=probabilities),
        "empty.png": [],
        "c.png": measure(mask[:4]),
    }
    columns, table = read_rows(write_measurements_csv(tmp_path / "out" / "m.csv", rows))
    assert columns == [
        "image", "nodule", "view", "area_px", "x", "y", "width", "height", "max_diameter_px",
        "depth_px", "transverse_px", "taller_than_wide", "mean_probability",
    ]  # fmt: skip
    assert tuple(columns) == MEASUREMENT_COLUMNS
    images = [(r["image"], r["nodule"]) for r in table]
    assert images == [("a, b.png", "1"), ("a, b.png", "2"), ("c.png", "1")]
    first = rows["a, b.png"][0]
    assert table[0]["area_px"] == str(first.area_px) == "8"
    assert (table[0]["x"], table[0]["y"], table[0]["width"], table[0]["height"]) == (
        "1",
        "0",
        "2",
        "4",
    )
    assert float(table[0]["max_diameter_px"]) == pytest.approx(
        first.max_diameter_px, rel=1e-5
    )  # 6 significant digits
    assert [r["taller_than_wide"] for r in table] == ["true", "false", "true"]
    assert [r["mean_probability"] for r in table] == ["0.75", "0.75", ""]


def test_csv_adds_millimetre_columns_when_measured_with_a_spacing(tmp_path: Path) -> None:
    mask = np.zeros((5, 5), np.uint8)
    mask[1:4, 1:3] = 1
    (nodule,) = measure(mask, pixel_spacing=(0.1, 0.2))
    path = write_measurements_csv(tmp_path / "m.csv", {"x.png": [nodule], "y.png": measure(mask)})
    columns, (with_mm, without) = read_rows(path)
    assert tuple(columns) == MEASUREMENT_COLUMNS + MM_COLUMNS
    for column in MM_COLUMNS:
        assert float(with_mm[column]) == pytest.approx(
            getattr(nodule, column), rel=1e-5
        )  # 6 significant digits
        assert without[column] == ""


def test_csv_of_no_nodule_has_the_header_and_a_bad_row_keeps_the_old_file(tmp_path: Path) -> None:
    path = write_measurements_csv(tmp_path / "m.csv", {"a.png": []})
    assert path.read_text() == ",".join(MEASUREMENT_COLUMNS) + "\n"
    with pytest.raises(TypeError, match="b.png: expected Nodule objects, got dict"):
        write_measurements_csv(path, {"b.png": [{"nodule": 1}]})
    assert path.read_text() == ",".join(MEASUREMENT_COLUMNS) + "\n"


def test_an_empty_mask_array_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"non-empty 2-D \(H, W\) array, got shape \(0, 0\)"):
        measure(np.zeros((0, 0), np.uint8))
