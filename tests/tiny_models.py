"""Tiny models and the squares data shared by the training and inference tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Threshold(nn.Module):
    """Predicts nodule iff the image is > 0.5, whatever its one weight (if positive).

    The weight makes it trainable and savable; its logits are ``scale * (0.5 - x, x - 0.5)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.cat([0.5 - x, x - 0.5], dim=1)


class Loose(nn.Module):
    """A stage 1 that marks a box 3 pixels wider than the bright (> 0.5) part of the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grown = nn.functional.max_pool2d((x > 0.5).float(), 7, 1, 3)
        return torch.cat([torch.zeros_like(x), 2 * grown - 1], dim=1)


def squares(
    n: int,
    seed: int = 0,
    size: int = 16,
    *,
    background: float = 0.3,
    square: float = 0.7,
    noise: float = 0.1,
) -> list[dict[str, object]]:
    """Noisy images with one bright square each; the mask is the square; named ``square<k>``.

    Pixels are ``background`` (``square`` inside the square) plus Gaussian noise of standard
    deviation ``noise``; the square's corner and side are drawn from ``seed``.
    """
    rng = np.random.default_rng(seed)
    items: list[dict[str, object]] = []
    for k in range(n):
        mask = np.zeros((size, size), np.int64)
        y, x = rng.integers(0, size // 2, 2)
        side = int(rng.integers(3, size // 2))
        mask[y : y + side, x : x + side] = 1
        image = (
            background + (square - background) * mask + noise * rng.standard_normal((size, size))
        )
        items.append(
            {
                "image": torch.tensor(image[None], dtype=torch.float32),
                "mask": torch.tensor(mask),
                "name": f"square{k}",
            }
        )
    return items
