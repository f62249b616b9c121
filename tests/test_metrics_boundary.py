"""HD95 and normalised surface Dice against a brute-force definition written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from thyroidseg.metrics.boundary import (
    boundary_metrics,
    hausdorff_distance_95,
    normalized_surface_dice,
)


def border_by_definition(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (outside the image counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    inside = padded[1:-1, 1:-1]
    neighbours_inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return inside & ~neighbours_inside


def distances_by_definition(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """For each border pixel of ``a``, the distance to the nearest border pixel of ``b``."""
    scale = np.broadcast_to(np.asarray(spacing, float), (2,))
    pa = np.argwhere(border_by_definition(a)) * scale
    pb = np.argwhere(border_by_definition(b)) * scale
    return np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1)).min(axis=1)


@st.composite
def mask_pairs(draw):
    h, w = draw(st.integers(1, 14)), draw(st.integers(1, 14))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.floats(0.05, 0.95))
    pred, target = rng.random((2, h, w)) < density
    pred.flat[rng.integers(pred.size)] = True  # both non-empty
    target.flat[rng.integers(target.size)] = True
    return pred, target


spacings = st.one_of(
    st.none(),
    st.floats(0.1, 3.0),
    st.tuples(st.floats(0.1, 3.0), st.floats(0.1, 3.0)),
)


@settings(max_examples=60, deadline=None)
@given(mask_pairs(), spacings, st.floats(0.0, 4.0))
def test_boundary_metrics_match_the_definition(masks, spacing, tolerance):
    pred, target = masks
    forward = distances_by_definition(pred, target, 1.0 if spacing is None else spacing)
    backward = distances_by_definition(target, pred, 1.0 if spacing is None else spacing)
    expected_hd95 = max(np.percentile(forward, 95), np.percentile(backward, 95))
    assert hausdorff_distance_95(pred, target, spacing=spacing) == pytest.approx(
        expected_hd95, rel=1e-5, abs=1e-5
    )
    # keep the tolerance away from distances where float32 rounding could flip a comparison
    assume(np.abs(np.concatenate([forward, backward]) - tolerance).min() > 1e-4)
    expected_nsd = ((forward <= tolerance).sum() + (backward <= tolerance).sum()) / (
        forward.size + backward.size
    )
    assert normalized_surface_dice(
        pred, target, tolerance=tolerance, spacing=spacing
    ) == pytest.approx(expected_nsd)
    both = boundary_metrics(pred, target, tolerance=tolerance, spacing=spacing)
    assert both == (
        hausdorff_distance_95(pred, target, spacing=spacing),
        normalized_surface_dice(pred, target, tolerance=tolerance, spacing=spacing),
    )


@settings(max_examples=30, deadline=None)
@given(mask_pairs())
def test_boundary_metrics_are_symmetric_and_zero_for_identical_masks(masks):
    pred, target = masks
    assert hausdorff_distance_95(pred, target) == hausdorff_distance_95(target, pred)
    assert normalized_surface_dice(pred, target, tolerance=1.5) == normalized_surface_dice(
        target, pred, tolerance=1.5
    )
    assert hausdorff_distance_95(pred, pred) == 0.0
    assert normalized_surface_dice(pred, pred, tolerance=0.0) == 1.0


def test_square_shifted_by_three_columns():
    a = np.zeros((30, 30), np.uint8)
    a[5:15, 5:15] = 1
    b = np.roll(a, 3, axis=1)
    # every border pixel of one square lies within 3 columns of the other's border
    assert hausdorff_distance_95(a, b) == pytest.approx(3.0)
    assert hausdorff_distance_95(a, b, spacing=(1.0, 0.5)) == pytest.approx(1.5)
    assert normalized_surface_dice(a, b, tolerance=3.0) == 1.0
    assert normalized_surface_dice(a, b, tolerance=2.9) < 1.0


@pytest.mark.parametrize(
    ("pred_box", "target_box"),
    [
        ((slice(0, 5), slice(0, 4)), (slice(2, 7), slice(1, 6))),  # at the image corner
        ((slice(30, 40), slice(50, 60)), (slice(2, 4), slice(3, 5))),  # far apart, small
        ((slice(0, 40), slice(0, 64)), (slice(10, 20), slice(10, 30))),  # whole image
    ],
)
def test_masks_at_the_image_edge_and_far_apart(pred_box, target_box):
    pred, target = np.zeros((2, 40, 64), bool)
    pred[pred_box], target[target_box] = True, True
    forward = distances_by_definition(pred, target, 1.0)
    backward = distances_by_definition(target, pred, 1.0)
    expected = max(np.percentile(forward, 95), np.percentile(backward, 95))
    assert hausdorff_distance_95(pred, target) == pytest.approx(expected, rel=1e-6)
    within = (forward <= 2.5).sum() + (backward <= 2.5).sum()
    assert normalized_surface_dice(pred, target, tolerance=2.5) == pytest.approx(
        within / (forward.size + backward.size)
    )


def test_empty_masks_follow_monai():
    empty, blob = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    blob[2:4, 2:4] = True
    assert math.isnan(hausdorff_distance_95(empty, empty))
    assert math.isnan(normalized_surface_dice(empty, empty, tolerance=1.0))
    assert hausdorff_distance_95(blob, empty) == math.inf
    assert hausdorff_distance_95(empty, blob) == math.inf
    assert normalized_surface_dice(blob, empty, tolerance=1.0) == 0.0
    assert normalized_surface_dice(empty, blob, tolerance=1.0) == 0.0
    both_empty = boundary_metrics(empty, empty, tolerance=1.0)
    assert all(math.isnan(value) for value in both_empty)
    assert boundary_metrics(blob, empty, tolerance=1.0) == (math.inf, 0.0)
    assert boundary_metrics(empty, blob, tolerance=1.0) == (math.inf, 0.0)


def test_torch_and_integer_inputs():
    a = np.zeros((8, 8), np.int64)
    a[1:6, 2:7] = 1
    b = np.zeros_like(a)
    b[2:7, 2:7] = 1
    expected = hausdorff_distance_95(a.astype(bool), b.astype(bool))
    assert hausdorff_distance_95(torch.from_numpy(a), torch.from_numpy(b)) == expected
    assert hausdorff_distance_95(a.astype(np.uint8), b) == expected
    assert hausdorff_distance_95(a[:, ::-1], b[:, ::-1]) == expected  # a mirrored view


def test_bad_inputs_are_named():
    ok = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="pred is not binary: values 0, 255"):
        hausdorff_distance_95(ok * 255 + np.eye(4, dtype=np.uint8) * 255, ok)
    with pytest.raises(ValueError, match="target has dtype float64"):
        hausdorff_distance_95(ok, ok.astype(float))
    with pytest.raises(ValueError, match=r"shapes differ: \(4, 4\) vs \(4, 5\)"):
        hausdorff_distance_95(ok, np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"non-empty \(H, W\) mask, got shape \(1, 4, 4\)"):
        hausdorff_distance_95(ok[None], ok[None])
    for spacing in [(1.0, 0.0), (1.0, 2.0, 3.0), float("nan")]:
        with pytest.raises(ValueError, match="spacing must be one or two positive finite"):
            hausdorff_distance_95(ok, ok, spacing=spacing)
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
        normalized_surface_dice(ok, ok, tolerance=-1)
