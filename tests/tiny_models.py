"""Tiny models shared by the training and inference tests."""

from __future__ import annotations

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
