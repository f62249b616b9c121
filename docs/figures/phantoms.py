"""Draw docs/figures/phantoms.jpg: six synthetic phantoms with their mask outlines in green.

Run from the project root: ``python docs/figures/phantoms.py``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from thyroidseg.data.synthetic import synthetic_phantoms
from thyroidseg.io.files import write_image

images, masks = synthetic_phantoms(6, size=(128, 176), seed=3, split_screen=0.5)
tiles = []
for image, mask in zip(images, masks, strict=True):
    tile = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(tile, contours, -1, (0, 220, 0), 1)
    tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255))
grid = np.concatenate([np.concatenate(tiles[:3], 1), np.concatenate(tiles[3:], 1)], 0)
print(write_image(Path(__file__).with_suffix(".jpg"), grid))
