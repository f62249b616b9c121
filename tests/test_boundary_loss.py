"""The boundary loss (Kervadec et al.) and its signed distance map; Dice + CE + boundary."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from thyroidseg.training import Trainer
from thyroidseg.training.boundary_loss import (
    EMPTY_MASK_DISTANCE,
    BoundaryLoss,
    distance_maps,
    signed_distance_map,
)
from thyroidseg.training.losses import DiceCELoss, make_loss
from tiny_models import Threshold, squares


def square_mask(shape: tuple[int, int], top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top : top + side, left : left + side] = 1
    return mask


def onehot_logits(target: torch.Tensor, num_classes: int = 2, scale: float = 30.0) -> torch.Tensor:
    """Logits whose softmax is the one-hot target (exactly, in float32, at scale 30)."""
    return scale * F.one_hot(target.clamp(min=0), num_classes).permute(0, 3, 1, 2).float()


# ------------------------------------------------------------------- signed distance map


def test_signed_distance_is_negative_inside_zero_on_the_outline_positive_outside() -> None:
    mask = square_mask((7, 7), 2, 2, 3)
    pixels = signed_distance_map(mask) * math.hypot(7, 7)
    assert pixels[3, 3] == pytest.approx(-1.0)  # the centre, 2 from the background
    ring = mask.astype(bool).copy()
    ring[3, 3] = False
    np.testing.assert_allclose(pixels[ring], 0.0, atol=1e-6)  # foreground on the outline
    assert pixels[1, 3] == pixels[3, 1] == pixels[5, 3] == pytest.approx(1.0)
    assert np.all(pixels[mask == 0] >= 1 - 1e-6)
    assert pixels[0, 3] == pytest.approx(2.0)


def test_signed_distance_is_in_pixels_over_the_image_diagonal() -> None:
    small = square_mask((7, 7), 2, 2, 3)
    large = square_mask((20, 30), 2, 2, 3)
    phi_small, phi_large = signed_distance_map(small), signed_distance_map(large)
    np.testing.assert_allclose(
        phi_small * math.hypot(7, 7), phi_large[:7, :7] * math.hypot(20, 30), atol=1e-4
    )
    assert phi_large.dtype == np.float32
    assert -1 <= phi_large.min() and phi_large.max() <= 1
    corner = np.zeros((40, 40), np.uint8)
    corner[0, 0] = 1  # the farthest pixel, (39, 39), is nearly a whole diagonal away
    assert signed_distance_map(corner)[39, 39] == pytest.approx(1.0, abs=0.05)


def test_a_mask_without_foreground_or_without_background_is_constant() -> None:
    empty = signed_distance_map(np.zeros((4, 5), bool))
    full = signed_distance_map(np.ones((4, 5), bool))
    np.testing.assert_array_equal(empty, np.full((4, 5), EMPTY_MASK_DISTANCE, np.float32))
    np.testing.assert_array_equal(full, np.full((4, 5), -1.0, np.float32))
    assert EMPTY_MASK_DISTANCE > 0  # foreground probability on a frame without nodule costs


@pytest.mark.parametrize("shape", [(3, 4, 4), (0, 4), (4,)])
def test_signed_distance_rejects_what_is_not_one_2d_mask(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="2-D"):
        signed_distance_map(np.zeros(shape, np.uint8))


def test_distance_maps_of_a_batch_are_the_maps_of_its_items() -> None:
    masks = np.stack([square_mask((6, 9), 1, 1, 3), np.zeros((6, 9), np.uint8)])
    batch = distance_maps(torch.from_numpy(masks).bool())
    assert batch.dtype == torch.float32 and batch.shape == (2, 6, 9)
    for got, mask in zip(batch, masks, strict=True):
        np.testing.assert_array_equal(got.numpy(), signed_distance_map(mask))


# ------------------------------------------------------------------------ the boundary loss


def test_boundary_loss_is_the_mean_of_foreground_probability_times_distance() -> None:
    target = torch.from_numpy(square_mask((8, 10), 2, 3, 4)).long()[None]
    logits = torch.randn(1, 3, 8, 10, generator=torch.Generator().manual_seed(0))
    target[0, 0, :2] = 2  # a second foreground class counts as foreground too
    foreground = 1 - logits.softmax(dim=1)[:, 0]
    phi = torch.from_numpy(signed_distance_map(target[0].numpy() > 0))
    expected = (foreground[0] * phi).mean()
    torch.testing.assert_close(BoundaryLoss()(logits, target), expected)


def test_boundary_loss_prefers_the_target_to_a_shifted_prediction() -> None:
    target = torch.from_numpy(square_mask((24, 24), 6, 6, 8)).long()[None]
    loss = BoundaryLoss()
    exact = loss(onehot_logits(target), target)
    near = loss(onehot_logits(torch.roll(target, 2, dims=2)), target)
    far = loss(onehot_logits(torch.roll(target, 8, dims=2)), target)
    assert exact < near < far


def test_gradients_reach_the_logits() -> None:
    target = torch.from_numpy(square_mask((16, 16), 4, 4, 6)).long()[None].repeat(2, 1, 1)
    logits = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    logits.requires_grad_()
    BoundaryLoss()(logits, target).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    # more foreground probability outside the nodule raises the loss, inside lowers it
    assert logits.grad[0, 1, 0, 0] > 0 and logits.grad[0, 1, 6, 6] < 0


def test_ignored_pixels_change_nothing() -> None:
    target = torch.from_numpy(square_mask((12, 12), 3, 3, 5)).long()[None]
    target[0, :, 10:] = 255
    logits = torch.randn(1, 2, 12, 12, generator=torch.Generator().manual_seed(2))
    changed = logits.clone()
    changed[..., 10:] = 50 * torch.randn(1, 2, 12, 2)
    loss = BoundaryLoss(ignore_index=255)
    assert loss(changed, target).item() == pytest.approx(loss(logits, target).item(), rel=1e-6)
    # the mean is over the counted pixels: 144 - 24 of them
    phi = torch.from_numpy(signed_distance_map(target[0].numpy() == 1))
    foreground = 1 - logits.softmax(dim=1)[0, 0]
    expected = (foreground * phi)[:, :10].sum() / 120
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


@settings(max_examples=30, deadline=None)
@given(mask=arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))), seed=st.integers())
def test_the_target_itself_gives_the_lowest_boundary_loss(mask: np.ndarray, seed: int) -> None:
    # L_B(target) = (1/|Omega|) sum over the foreground of phi <= 0, the least any s can give
    target = torch.from_numpy(mask).long()[None]
    phi = signed_distance_map(mask)
    best = BoundaryLoss()(onehot_logits(target), target).item()
    assert best == pytest.approx(float(phi[mask].sum()) / mask.size, abs=1e-6)
    assert best <= 0 or not mask.any()
    generator = torch.Generator().manual_seed(seed % 2**32)
    other = 3 * torch.randn(1, 2, *mask.shape, generator=generator)
    assert BoundaryLoss()(other, target).item() >= best - 1e-6


# ----------------------------------------------------------------- Dice + CE + boundary


def test_dice_ce_boundary_is_the_weighted_sum() -> None:
    target = torch.from_numpy(square_mask((9, 11), 2, 2, 5)).long()[None].repeat(2, 1, 1)
    logits = torch.randn(2, 2, 9, 11, generator=torch.Generator().manual_seed(3))
    loss = make_loss("dice_ce_boundary", boundary_weight=3.0, dice_weight=0.5)
    expected = DiceCELoss(dice_weight=0.5)(logits, target) + 3.0 * BoundaryLoss()(logits, target)
    torch.testing.assert_close(loss(logits, target), expected)
    assert "boundary_weight=3.0" in repr(loss) and "dice_weight=0.5" in repr(loss)


def test_a_two_epoch_run_trains_with_dice_ce_boundary() -> None:
    model = Threshold()
    trainer = Trainer(
        model, squares(8), squares(4, seed=1), loss=make_loss("dice_ce_boundary"), epochs=2,
        batch_size=4, progress=False, seed=0,
    )  # fmt: skip
    history = trainer.fit()
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(math.isfinite(row["train_loss"]) for row in history)
    assert model.scale.item() != 1.0
