"""Synthetic ultrasound-like thyroid frames with exact nodule masks ("phantoms").

They are for unit tests, the demo and learnability checks, not for judging a model: a
network that segments phantoms has learnt nothing about real scans. Each frame has

- tissue layers with wavy boundaries (skin, fat, muscle, thyroid, deep tissue) whose
  brightness falls with depth (attenuation);
- one or two nodules of random lobulated shape inside the thyroid layer, hypo-echoic,
  hyper-echoic or anechoic (cyst-like), some with a dark halo;
- fully developed speckle: the echo map times the magnitude of a smoothed complex Gaussian
  field (Rayleigh statistics, grain of a few pixels);
- optionally (``decorations=True``) black borders, scanner text, a grey-scale bar and a
  side label burned in, as the preprocessing has to remove on real frames;
- with probability ``split_screen``, two views side by side, each with its own nodule(s).

The mask is the exact union of the nodule polygons (``cv2.fillPoly``); a halo lies outside
it. Frame ``i`` depends only on ``(seed, i)``, so a longer run starts with a shorter one.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.io.files import atomic_write_bytes, write_image
from thyroidseg.preprocessing.geometry import MIN_FRAME_SIDE

__all__ = ["synthetic_phantoms", "write_synthetic_dataset"]


# Tissue layers from the skin down: (mean depth of the lower boundary as a fraction of
# the view height, echo level in [0, 1]). The last layer extends to the bottom.
_LAYERS: tuple[tuple[float, float], ...] = (
    (0.05, 0.85),  # skin
    (0.17, 0.30),  # subcutaneous fat
    (0.30, 0.45),  # strap muscle
    (0.82, 0.62),  # thyroid
    (1.00, 0.25),  # deep tissue
)
_THYROID = 3  # index of the thyroid layer in _LAYERS
_GAIN = 0.75  # overall brightness: keeps most speckle peaks below white

# Nodule echo level relative to the thyroid: hypo-echoic, hyper-echoic, anechoic (cyst).
_NODULE_ECHO: dict[str, tuple[float, float]] = {
    "hypo": (0.35, 0.6),
    "hyper": (1.3, 1.6),
    "anechoic": (0.05, 0.15),
}

_SCANNER_WORDS = ("THY", "L12-5", "7.5MHz", "GEN", "FR 24", "G 62", "DR 66", "TIS0.4", "MI 1.1")


def synthetic_phantoms(
    n: int,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    *,
    split_screen: float = 0.25,
    decorations: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Make ``n`` ultrasound-like frames and their exact nodule masks.

    Parameters
    ----------
    n
        Number of frames (``>= 0``).
    size
        Frame ``(H, W)``, each side at least 32.
    seed
        Frame ``i`` is a function of ``(seed, i)`` only.
    split_screen
        Probability that a frame shows two views side by side.
    decorations
        Burn in borders, scanner text, a grey-scale bar and a side label.

    Returns
    -------
    images : numpy.ndarray
        ``uint8`` ``(n, H, W)``.
    masks : numpy.ndarray
        ``uint8`` ``(n, H, W)`` in ``{0, 1}``; every frame has at least one nodule.

    Examples
    --------
    >>> images, masks = synthetic_phantoms(3, size=(64, 96), seed=1)
    >>> images.shape, images.dtype, masks.shape, sorted(np.unique(masks).tolist())
    ((3, 64, 96), dtype('uint8'), (3, 64, 96), [0, 1])
    >>> bool((synthetic_phantoms(2, size=(64, 96), seed=1)[0] == images[:2]).all())
    True
    """
    if not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    height, width = (int(s) for s in size)
    if min(height, width) < MIN_FRAME_SIDE:
        raise ValueError(f"size must be at least {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE}, got {size!r}")
    if not 0.0 <= split_screen <= 1.0:
        raise ValueError(f"split_screen must be a probability, got {split_screen!r}")
    images = np.empty((n, height, width), np.uint8)
    masks = np.empty((n, height, width), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        images[i], masks[i] = _frame(rng, height, width, split_screen, decorations)
    return images, masks


def write_synthetic_dataset(
    folder: PathLike,
    n: int,
    *,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    split_screen: float = 0.25,
    decorations: bool = True,
) -> Path:
    """Write `synthetic_phantoms` as a plain ``images/`` + ``masks/`` folder.

    Files are ``images/phantom_0000.png`` (grey), ``masks/phantom_0000.png``
    (``{0, 255}``) and ``metadata.csv`` (``stem, leak_group``: each phantom is its own
    group, as each is drawn independently), readable by
    `thyroidseg.data.ThyroidDataset`. Writes are atomic; the folder is created.

    Raises
    ------
    FileExistsError
        ``images/`` or ``masks/`` already holds files: nothing is overwritten.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    folder = Path(folder)
    for sub in ("images", "masks"):
        if (folder / sub).is_dir() and any((folder / sub).iterdir()):
            raise FileExistsError(f"{folder / sub}: not empty; refusing to overwrite files")
    images, masks = synthetic_phantoms(
        n, size, seed, split_screen=split_screen, decorations=decorations
    )
    digits = max(4, len(str(n - 1)))
    stems = [f"phantom_{i:0{digits}d}" for i in range(n)]
    for stem, image, mask in zip(stems, images, masks, strict=True):
        write_image(folder / "images" / f"{stem}.png", image)
        write_image(folder / "masks" / f"{stem}.png", mask * np.uint8(255))
    rows = "".join(f"{stem},{stem}\n" for stem in stems)  # phantoms are drawn independently
    atomic_write_bytes(folder / "metadata.csv", f"stem,leak_group\n{rows}".encode())
    return folder


# --------------------------------------------------------------------------- drawing


def _frame(
    rng: np.random.Generator, height: int, width: int, split_screen: float, decorations: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One frame: view(s) inside optional borders, then burned-in text."""
    image = np.zeros((height, width), np.float32)
    mask = np.zeros((height, width), np.uint8)
    if decorations:
        top = int(height * rng.uniform(0.08, 0.14))
        left, right = (int(width * rng.uniform(0.03, 0.08)) for _ in range(2))
        bottom = int(height * rng.uniform(0.0, 0.05))
    else:
        top = left = right = bottom = 0
    y0, y1, x0, x1 = top, height - bottom, left, width - right
    if rng.random() < split_screen:
        gap = max(2, (x1 - x0) // 40)
        half = (x1 - x0 - gap) // 2
        views = [(x0, x0 + half), (x1 - half, x1)]
    else:
        views = [(x0, x1)]
    for a, b in views:
        image[y0:y1, a:b], mask[y0:y1, a:b] = _view(rng, y1 - y0, b - a)
    frame = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    if decorations:
        _decorate(frame, rng, (y0, y1, x0, x1), views)
    return frame, mask


def _view(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One B-mode view: layered, attenuated echo map with nodules, times speckle."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    echo = np.full((height, width), _LAYERS[-1][1], np.float32)
    upper = np.zeros((1, width), np.float32)
    boundaries = []
    for depth, level in _LAYERS[:-1]:
        wave = rng.uniform(0.01, 0.03) * np.sin(
            2 * np.pi * rng.uniform(0.5, 2) * xs + rng.uniform(0, 6.3)
        )
        lower = np.maximum(depth + wave + rng.uniform(-0.02, 0.02), upper + 0.02)
        boundaries.append((upper, lower))
        echo = np.where((ys >= upper) & (ys < lower), level * rng.uniform(0.9, 1.1), echo)
        upper = lower
    thyroid_top, thyroid_bottom = boundaries[_THYROID]
    thyroid_level = _LAYERS[_THYROID][1]

    mask = np.zeros((height, width), np.uint8)
    for _ in range(1 + int(rng.random() < 0.2)):  # one nodule, sometimes two
        top, bottom = float(thyroid_top.mean()), float(thyroid_bottom.mean())
        mask |= _nodule_mask(rng, height, width, top, bottom)
    if rng.random() < 0.3:  # dark halo just outside the nodules
        echo[(cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0) & (mask == 0)] *= 0.3
    kind = rng.choice(list(_NODULE_ECHO))  # one kind per view
    echo[mask > 0] = thyroid_level * rng.uniform(*_NODULE_ECHO[kind])

    echo = cv2.GaussianBlur(echo, (0, 0), sigmaX=1.0).astype(np.float32)  # soft boundaries
    echo *= np.exp(-rng.uniform(0.3, 0.9) * ys)  # depth attenuation
    return np.clip(_GAIN * echo * _speckle(rng, height, width), 0.0, 1.0), mask


def _nodule_mask(
    rng: np.random.Generator, height: int, width: int, top: float, bottom: float
) -> np.ndarray:
    """Filled lobulated polygon centred in the thyroid band ``[top, bottom]`` (fractions)."""
    band = max(bottom - top, 0.1)
    ry = rng.uniform(0.15, 0.4) * band * height
    rx = ry * rng.uniform(0.8, 1.8)
    cy = rng.uniform(top + 0.35 * band, bottom - 0.35 * band) * height
    cx = rng.uniform(0.25, 0.75) * width
    angles = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
    radius = np.ones_like(angles)
    for harmonic in range(2, 6):  # lobulation; small enough to keep the shape star-convex
        radius += rng.uniform(0, 0.12 / harmonic * 2) * np.cos(
            harmonic * angles + rng.uniform(0, 6.3)
        )
    points = np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], 1)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask


def _speckle(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Rayleigh speckle with mean 1: magnitude of a low-pass complex Gaussian field."""
    grain = rng.uniform(0.7, 1.3)
    real = cv2.GaussianBlur(rng.standard_normal((height, width), np.float32), (0, 0), grain)
    imag = cv2.GaussianBlur(rng.standard_normal((height, width), np.float32), (0, 0), grain)
    magnitude = np.sqrt(real * real + imag * imag)
    return magnitude / magnitude.mean()


def _decorate(
    frame: np.ndarray,
    rng: np.random.Generator,
    inner: tuple[int, int, int, int],
    views: list[tuple[int, int]],
) -> None:
    """Burn scanner text into the top border, a grey bar and depth ticks into the sides."""
    y0, y1, x0, x1 = inner
    height, width = frame.shape
    scale = max(0.25, height / 700)
    words = rng.choice(_SCANNER_WORDS, size=3, replace=False)
    if y0 >= 8:
        cv2.putText(
            frame,
            " ".join(words),
            (x0 + 2, max(y0 - 3, 8)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            230,
            1,
            cv2.LINE_AA,
        )
    if width - x1 >= 3:  # grey-scale bar in the right border
        bar = np.linspace(255, 0, y1 - y0, dtype=np.float32)[:, None]
        frame[y0:y1, x1 + 1 : width - 1] = bar.astype(np.uint8)
    if x0 >= 3:  # depth ticks in the left border
        frame[y0 : y1 : max(4, (y1 - y0) // 8), 1 : x0 - 1] = 200
    for a, _ in views:  # side label in the lower corner of each view
        label = "DER" if rng.random() < 0.5 else "IZQ"
        cv2.putText(
            frame, label, (a + 2, y1 - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA
        )
