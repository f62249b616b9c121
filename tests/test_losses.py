"""Tests for thyroidseg.training.losses: the U-Net weight map on hand-made masks, and every loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from thyroidseg.training.losses import (
    LOSS_NAMES,
    DiceCEBoundaryLoss,
    DiceCELoss,
    SoftDiceLoss,
    WeightedCrossEntropyLoss,
    make_loss,
    unet_weight_map,
)


def border(distance_sum: float, w0: float = 10.0, sigma: float = 5.0) -> float:
    return w0 * math.exp(-(distance_sum**2) / (2 * sigma**2))


# ---------------------------------------------------------------- weight map, hand-made masks


def test_weight_map_single_object_uses_d2_equal_d1() -> None:
    mask = np.zeros((6, 12), dtype=np.uint8)
    mask[:, :3] = 1  # one object, 18 of 72 pixels; distances along a row are exact
    w = unet_weight_map(mask, class_weights=None)
    assert np.allclose(w[:, :3], 1.0)  # foreground: w_c only
    for column in range(3, 12):
        d1 = column - 2
        assert w[2, column] == pytest.approx(1.0 + border(2 * d1), rel=1e-5)


def test_weight_map_two_objects_uses_the_second_nearest() -> None:
    mask = np.zeros((5, 11), dtype=np.uint8)
    mask[:, 2] = 1
    mask[:, 8] = 1
    w = unet_weight_map(mask, class_weights=None, w0=10, sigma=5)
    assert w[0, 5] == pytest.approx(1 + border(3 + 3), rel=1e-5)  # halfway: d1 = d2 = 3
    assert w[0, 4] == pytest.approx(1 + border(2 + 4), rel=1e-5)
    assert w[0, 0] == pytest.approx(1 + border(2 + 8), rel=1e-5)  # outside: d2 across
    assert w[0, 10] == pytest.approx(1 + border(2 + 8), rel=1e-5)
    assert np.allclose(w[:, [2, 8]], 1.0)


def test_weight_map_diagonal_distance_is_euclidean() -> None:
    mask = np.zeros((9, 9), dtype=np.uint8)
    mask[0, 0] = 1
    w = unet_weight_map(mask, class_weights=None)
    assert w[3, 4] == pytest.approx(1 + border(2 * 5.0), rel=1e-3)  # 3-4-5 triangle


def test_weight_map_components_are_8_connected() -> None:
    """Diagonal neighbours are one object: d2 falls back to d1 instead of the other pixel."""
    mask = np.zeros((7, 7), dtype=np.uint8)
    mask[3, 3] = mask[4, 4] = 1
    w = unet_weight_map(mask, class_weights=None)
    d1 = math.hypot(1, 2)  # (3, 6) to (4, 4); (3, 3) is 3 away
    assert w[3, 6] == pytest.approx(1 + border(2 * d1), rel=1e-3)


def test_weight_map_balanced_classes() -> None:
    mask = np.zeros((4, 10), dtype=np.uint8)
    mask[:, :2] = 1  # 8 foreground, 32 background pixels
    w = unet_weight_map(mask, w0=0)
    assert np.allclose(w[mask == 1], 40 / (2 * 8))
    assert np.allclose(w[mask == 0], 40 / (2 * 32))


def test_weight_map_of_an_empty_mask_is_uniform() -> None:
    w = unet_weight_map(np.zeros((8, 9), dtype=np.uint8))
    assert w.dtype == np.float32
    assert np.array_equal(w, np.ones((8, 9), dtype=np.float32))


def test_weight_map_fixed_class_weights_and_ignore_index() -> None:
    mask = np.zeros((5, 6), dtype=np.int64)
    mask[:, 0] = 1
    mask[:, 5] = 255  # ignored: weight 0, not an object
    w = unet_weight_map(mask, class_weights=[0.5, 3.0], w0=0, ignore_index=255)
    assert np.allclose(w[:, 0], 3.0)
    assert np.allclose(w[:, 1:5], 0.5)
    assert np.allclose(w[:, 5], 0.0)
    balanced = unet_weight_map(mask, w0=0, ignore_index=255)
    assert np.allclose(balanced[:, 0], 25 / (2 * 5))  # 25 counted pixels, 5 foreground


@pytest.mark.parametrize(
    ("mask", "kwargs", "message"),
    [
        (np.zeros((2, 3, 4), dtype=np.uint8), {}, "2-D"),
        (np.zeros((4, 4), dtype=np.float32), {}, "integer"),
        (np.full((4, 4), 2, dtype=np.uint8), {}, r"\[0, 2\)"),
        (np.zeros((4, 4), dtype=np.uint8), {"sigma": 0}, "sigma"),
        (np.zeros((4, 4), dtype=np.uint8), {"class_weights": [1.0]}, "class_weights"),
        (np.zeros((4, 4), dtype=np.uint8), {"class_weights": "inverse"}, "class_weights"),
    ],
)
def test_weight_map_rejects_bad_input(mask: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unet_weight_map(mask, **kwargs)


@settings(max_examples=30, deadline=None)
@given(
    mask=hnp.arrays(
        np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 1)
    )
)
def test_weight_map_bounds_and_class_balance(mask: np.ndarray) -> None:
    w = unet_weight_map(mask, w0=10, sigma=5)
    plain = unet_weight_map(mask, w0=0)
    assert np.all(np.isfinite(w))
    extra = w - plain
    assert np.all(extra >= -1e-6) and np.all(extra <= 10 + 1e-5)
    assert np.all(extra[mask == 1] == 0)  # the border term is for background pixels
    present = [c for c in (0, 1) if (mask == c).any()]
    for c in present:  # "balanced": every present class weighs n / k in total
        assert plain[mask == c].sum() == pytest.approx(mask.size / len(present), rel=1e-5)


# ------------------------------------------------------------------------------- the losses


def perfect_logits(target: torch.Tensor, num_classes: int = 2, scale: float = 30.0) -> torch.Tensor:
    return scale * F.one_hot(target.clamp(min=0), num_classes).permute(0, 3, 1, 2).float()


def random_target(seed: int, shape=(2, 9, 11), fraction: float = 0.3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) < fraction).long()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(LOSS_NAMES))
def test_each_loss_is_minimal_at_the_perfect_prediction(seed: int, name: str) -> None:
    loss = make_loss(name)
    target = random_target(seed)
    best = loss(perfect_logits(target), target).item()
    assert best < 1e-3
    generator = torch.Generator().manual_seed(seed + 1)
    for scale in (0.1, 1.0, 10.0):
        other = scale * torch.randn(2, 2, 9, 11, generator=generator)
        assert loss(other, target).item() > best
    wrong = perfect_logits(1 - target)  # the complement: every pixel wrong
    assert loss(wrong, target).item() > best


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("logits_kind", ["zeros", "random", "confident"])
def test_gradients_are_finite_on_empty_masks(name: str, logits_kind: str) -> None:
    target = torch.zeros(2, 8, 8, dtype=torch.int64)
    logits = {
        "zeros": torch.zeros(2, 2, 8, 8),
        "random": torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0)),
        "confident": perfect_logits(target, scale=100.0),
    }[logits_kind].requires_grad_()
    value = make_loss(name)(logits, target)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_ignored_pixels_count_for_nothing(name: str) -> None:
    loss = make_loss(name, ignore_index=255)
    target = random_target(3)
    target[:, :3] = 255
    logits = torch.randn(2, 2, 9, 11, generator=torch.Generator().manual_seed(1))
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 2, 3, 11)
    changed.requires_grad_()
    assert loss(changed, target).item() == pytest.approx(loss(logits, target).item(), rel=1e-5)
    loss(changed, target).backward()
    assert torch.all(changed.grad[:, :, :3] == 0)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_all_pixels_ignored_gives_a_finite_loss(name: str) -> None:
    target = torch.full((1, 4, 4), -100, dtype=torch.int64)
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    value = make_loss(name)(logits, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_plain_ce_matches_pytorch() -> None:
    target = random_target(5)
    target[0, 0] = -100
    logits = torch.randn(2, 2, 9, 11)
    expected = F.cross_entropy(logits, target)
    torch.testing.assert_close(make_loss("ce")(logits, target), expected)


def test_weighted_ce_is_the_weighted_mean_of_pixel_losses() -> None:
    target = random_target(6)
    logits = torch.randn(2, 2, 9, 11)
    loss = WeightedCrossEntropyLoss()
    maps = np.stack([unet_weight_map(m) for m in target.numpy()])
    pixel = F.cross_entropy(logits, target, reduction="none").numpy()
    expected = (maps * pixel).sum() / maps.sum()
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    passed = loss(logits, target, weight_map=torch.from_numpy(maps))
    assert passed.item() == pytest.approx(expected, rel=1e-5)
    ones = loss(logits, target, weight_map=torch.ones(2, 9, 11))
    torch.testing.assert_close(ones, F.cross_entropy(logits, target))


def test_weighted_ce_rejects_bad_weight_maps() -> None:
    target = random_target(7)
    logits = torch.randn(2, 2, 9, 11)
    with pytest.raises(ValueError, match="weight_map shape"):
        WeightedCrossEntropyLoss()(logits, target, weight_map=torch.ones(2, 9, 10))
    with pytest.raises(ValueError, match="non-negative"):
        WeightedCrossEntropyLoss()(logits, target, weight_map=-torch.ones(2, 9, 11))


def test_soft_dice_by_hand() -> None:
    # image 0: 2 foreground pixels; image 1: none. Probabilities p = sigmoid(l1 - l0).
    target = torch.zeros(2, 1, 4, dtype=torch.int64)
    target[0, 0, :2] = 1
    logits = torch.zeros(2, 2, 1, 4)
    logits[:, 1] = torch.tensor([2.0, 0.0, -1.0, 0.0])
    p = torch.sigmoid(torch.tensor([2.0, 0.0, -1.0, 0.0]))
    s = 1e-5
    inter0, total0 = p[:2].sum(), p.sum() + 2
    batch = 1 - (2 * inter0 + s) / (total0 + p.sum() + s)
    per_image = 1 - ((2 * inter0 + s) / (total0 + s) + s / (p.sum() + s)) / 2
    assert SoftDiceLoss()(logits, target).item() == pytest.approx(batch.item(), rel=1e-5)
    value = SoftDiceLoss(batch_dice=False)(logits, target).item()
    assert value == pytest.approx(per_image.item(), rel=1e-5)
    background = SoftDiceLoss(include_background=True)(logits, target)
    assert background.item() < batch.item()  # the easy background class dilutes the loss


def test_dice_ce_is_the_weighted_sum() -> None:
    target = random_target(8)
    logits = torch.randn(2, 2, 9, 11)
    expected = 0.5 * SoftDiceLoss()(logits, target) + 2.0 * F.cross_entropy(logits, target)
    torch.testing.assert_close(DiceCELoss(dice_weight=0.5, ce_weight=2.0)(logits, target), expected)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bfloat16_logits_are_scored_in_float32(name: str) -> None:
    target = random_target(9)
    logits = torch.randn(2, 2, 9, 11)
    value = make_loss(name)(logits.bfloat16(), target)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(make_loss(name)(logits, target).item(), rel=2e-2)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize(
    ("logits", "target", "message"),
    [
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4), "int64"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.int64), "does not match"),
        (torch.zeros(2, 4, 4), torch.zeros(2, 4, dtype=torch.int64), r"\(N, C, H, W\)"),
        (torch.zeros(1, 2, 4, 4), torch.full((1, 4, 4), 2, dtype=torch.int64), "outside"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64), "2 classes"),
    ],
)
def test_losses_reject_bad_input(name: str, logits, target, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_loss(name)(logits, target)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_non_finite_logits_give_a_non_finite_loss(name: str) -> None:
    # No error here: the Trainer checks the loss value and stops with NonFiniteLossError
    # (naming epoch and step), on every DDP process at once.
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1, 2, 2] = math.nan
    assert not torch.isfinite(make_loss(name)(logits, torch.ones(1, 4, 4, dtype=torch.int64)))


def test_make_loss_names() -> None:
    assert isinstance(make_loss("weighted_ce"), WeightedCrossEntropyLoss)
    assert isinstance(make_loss("dice"), SoftDiceLoss)
    assert isinstance(make_loss("dice_ce"), DiceCELoss)
    assert isinstance(make_loss("dice_ce_boundary"), DiceCEBoundaryLoss)
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        make_loss("focal")
