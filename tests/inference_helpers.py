"""Frames, preprocessing and checkpoints shared by the inference and predict-command tests."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from torch import nn

from thyroidseg.data import ThyroidDataset
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.models.checkpoint import LAST_CHECKPOINT, load_checkpoint, save_checkpoint
from thyroidseg.models.unet import UNet
from thyroidseg.preprocessing import preprocess as preprocess_frame
from thyroidseg.training import Trainer

PLAIN = {  # preprocessing that only resizes, so the expected mask is known exactly
    "size": (64, 64),
    "crop": False,
    "inpaint_annotations": False,
    "equalization": None,
    "smoothing": None,
    "resize_mode": "stretch",
}


def frame_with_square(height: int = 90, width: int = 140) -> tuple[np.ndarray, np.ndarray]:
    """A dark frame with a bright 40 x 70 rectangle at rows 20-59, columns 30-99, and its mask."""
    image = np.full((height, width), 40, np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[20:60, 30:100] = 1
    image[mask == 1] = 220
    return image, mask


def scan_frame(height: int = 90, width: int = 140) -> tuple[np.ndarray, np.ndarray]:
    """`frame_with_square` on speckle-like tissue (60-119), which passes the scan check
    (`thyroidseg.preprocessing.scan_check`: a flat dark frame "shows no echo")."""
    image, mask = frame_with_square(height, width)
    tissue = np.random.default_rng(0).integers(60, 120, image.shape)
    return np.where(mask == 1, 220, tissue).astype(np.uint8), mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a > 0) & (b > 0)).sum() / ((a > 0) | (b > 0)).sum())


def trained_checkpoint(tmp_path: Path, preprocess: object = "plain") -> Path:
    """``last.pt`` of a one-epoch run of a tiny UNet on a ThyroidDataset of phantoms.

    Nothing but the dataset tells the Trainer how frames were prepared (as for a user).
    """
    write_synthetic_dataset(tmp_path / "data", 4, size=(48, 64), seed=0)
    if preprocess == "plain":
        preprocess = functools.partial(preprocess_frame, **PLAIN)
    data = ThyroidDataset(tmp_path / "data", size=PLAIN["size"], preprocess=preprocess)
    trainer = Trainer(
        UNet(base_channels=4, depth=2, seed=0), data, loss=nn.CrossEntropyLoss(), epochs=1,
        out_dir=tmp_path / "run", progress=False,
    )  # fmt: skip
    trainer.fit()
    return tmp_path / "run" / LAST_CHECKPOINT


def with_config(source: Path, target: Path, **changes: object) -> Path:
    """A copy of checkpoint ``source`` at ``target`` with ``config`` keys replaced."""
    checkpoint = load_checkpoint(source)
    checkpoint["config"] = {**checkpoint["config"], **changes}
    return save_checkpoint(target, checkpoint)
