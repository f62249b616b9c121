"""Augment: image and mask move together, masks stay binary, seeded streams per worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from thyroidseg.data.augment import Augment

OFF = dict(hflip=0.0, affine=0.0, intensity=0.0, speckle=0.0, blur=0.0)


def blob(shape=(48, 64)) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros(shape, np.uint8)
    mask[12:30, 20:44] = 1
    mask[30:36, 26:32] = 1  # not symmetric, so flips and rotations show
    return mask.astype(np.float32), mask


def test_all_off_is_the_identity():
    image, mask = blob()
    out = Augment(**OFF, seed=0)(image=image, mask=mask)
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["mask"], mask)


@pytest.mark.parametrize("flip, axis", [("hflip", 1), ("vflip", 0)])
def test_flips_are_exact_on_both(flip, axis):
    image, mask = blob()
    out = Augment(**{**OFF, flip: 1.0}, seed=0)(image=image, mask=mask)
    np.testing.assert_array_equal(out["image"], np.flip(image, axis))
    np.testing.assert_array_equal(out["mask"], np.flip(mask, axis))


def test_geometry_moves_image_and_mask_together():
    image, mask = blob()
    augment = Augment(
        **{**OFF, "affine": 1.0}, rotate=25, scale=(0.8, 1.2), translate=0.1, shear=10, seed=3
    )
    moved = 0
    for _ in range(20):
        out = augment(image=image, mask=mask)
        assert out["mask"].dtype == np.uint8 and set(np.unique(out["mask"])) <= {0, 1}
        assert out["image"].dtype == np.float32
        follows = out["image"] > 0.5  # bilinear image of the mask, thresholded
        iou = (follows & (out["mask"] == 1)).sum() / (follows | (out["mask"] == 1)).sum()
        assert iou > 0.9
        moved += not np.array_equal(out["mask"], mask)
    assert moved == 20


def test_intensity_changes_touch_the_image_only_and_stay_in_range():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (32, 32)).astype(np.float32)
    mask = (image > 0.5).astype(np.uint8)
    augment = Augment(**{**OFF, "intensity": 1.0, "speckle": 1.0, "blur": 1.0}, seed=0)
    out = augment(image=image, mask=mask)
    np.testing.assert_array_equal(out["mask"], mask)
    assert not np.allclose(out["image"], image)
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0


def test_same_seed_same_stream_other_seed_other_stream():
    image, mask = blob()

    def stream(seed):
        augment = Augment(seed=seed)
        return [augment(image=image, mask=mask)["image"] for _ in range(5)]

    first, again, other = stream(1), stream(1), stream(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert not all(np.array_equal(first[0], x) for x in first[1:])  # the stream moves on


def test_ddp_ranks_draw_different_streams(monkeypatch):
    import torch

    image, mask = blob()

    def stream(rank):
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda: rank)
        augment = Augment(seed=1)
        return [augment(image=image, mask=mask)["image"] for _ in range(3)]

    rank0, rank1, rank0_again = stream(0), stream(1), stream(0)
    assert all(np.array_equal(a, b) for a, b in zip(rank0, rank0_again, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(rank0, rank1, strict=True))


def test_set_epoch_replays_an_epoch_exactly():
    image, mask = blob()

    def epoch_stream(augment, epoch):
        augment.set_epoch(epoch)
        return [augment(image=image, mask=mask)["image"] for _ in range(3)]

    uninterrupted = Augment(seed=4)
    first = [epoch_stream(uninterrupted, epoch) for epoch in range(3)]
    resumed = epoch_stream(Augment(seed=4), 2)  # a fresh process resuming at epoch 2
    assert all(np.array_equal(a, b) for a, b in zip(first[2], resumed, strict=True))
    assert not np.array_equal(first[0][0], first[1][0])


class SameFrame(Dataset):
    """Eight copies of one frame: any difference comes from the augmentation."""

    def __init__(self, augment: Augment) -> None:
        self.augment = augment
        self.image, self.mask = blob()

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.augment(image=self.image, mask=self.mask)["image"])


def run_loader(seed: int) -> list[torch.Tensor]:
    loader = DataLoader(
        SameFrame(Augment(seed=0)),
        batch_size=1,
        num_workers=2,
        generator=torch.Generator().manual_seed(seed),
        multiprocessing_context="fork",
    )
    return [batch[0] for batch in loader]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_workers_get_different_streams_and_a_seeded_loader_reproduces():
    first = run_loader(0)
    # items 0, 2, 4, ... come from worker 0 and 1, 3, 5, ... from worker 1
    assert not torch.equal(first[0], first[1])
    assert len({x.numpy().tobytes() for x in first}) == 8
    again = run_loader(0)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other = run_loader(1)
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hflip=1.5), "hflip is a probability"),
        (dict(scale=(1.2, 0.8)), "scale must be"),
        (dict(rotate=-1), "rotate must be >= 0"),
    ],
)
def test_bad_parameters_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Augment(**kwargs)


def test_shape_mismatch_and_bad_labels_are_errors():
    with pytest.raises(ValueError, match="do not match"):
        Augment()(image=np.zeros((4, 4), np.float32), mask=np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="integer labels in 0..255"):
        Augment()(image=np.zeros((4, 4), np.float32), mask=np.full((4, 4), 300))
    with pytest.raises(ValueError, match="integer labels in 0..255"):
        Augment()(image=np.zeros((4, 4), np.float32), mask=np.zeros((4, 4), np.float32))
