"""Random augmentation applied identically to an ultrasound frame and its mask.

`Augment` follows the albumentations calling convention,
``augment(image=image, mask=mask) -> {"image": ..., "mask": ...}``, which is how
`thyroidseg.data.ThyroidDataset` calls its ``transform``. Geometry is one affine
warp (flip, rotation, scale, translation, shear) applied to the image with bilinear
interpolation and to the mask with nearest neighbour, so the mask stays binary and aligned.
Intensity changes (brightness, contrast, gamma, speckle noise, blur) touch the image only.

Random numbers come from a `numpy.random.Generator` that is seeded again whenever
the object finds itself in a new DataLoader worker process:

- in the main process, from ``seed`` (or ``torch.initial_seed()`` when ``seed=None``);
- in a worker, from ``seed`` and ``torch.utils.data.get_worker_info().seed``, which PyTorch
  makes different for each worker and each epoch, and reproducible when the loader's
  seed is fixed (``torch.manual_seed`` or ``DataLoader(generator=...)``);
- both also from the epoch given to `Augment.set_epoch` (0 until it is called), so a
  training run resumed at epoch ``k`` draws what an uninterrupted run draws.

So two workers never replay the same stream, and a run can be repeated exactly.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

__all__ = ["Augment", "Range"]

Range = tuple[float, float]


class Augment:
    """Paired random augmentation of a ``float32`` image in ``[0, 1]`` and its mask.

    Each transform fires with its own probability; defaults stay within what a probe
    position or gain setting changes in a real thyroid scan. Vertical flips are off by
    default: skin is always at the top of a B-mode frame.

    Parameters
    ----------
    hflip
        Probability of a left-right flip (0.5).
    vflip
        Probability of an up-down flip (0.0).
    affine
        Probability of the affine warp below (0.7).
    rotate
        Largest rotation in degrees, drawn uniformly in ``[-rotate, rotate]`` (10).
    scale
        Zoom range, drawn log-uniformly ((0.9, 1.1)).
    translate
        Largest shift as a fraction of each side, uniform in ``[-t, t]`` (0.05).
    shear
        Largest horizontal shear in degrees, uniform in ``[-shear, shear]`` (5).
    intensity
        Probability of the brightness/contrast/gamma change (0.8):
        ``out = clip(c * (x - mean(x)) + mean(x) + b, 0, 1) ** g``.
    brightness
        Largest additive shift ``b``, uniform in ``[-brightness, brightness]`` (0.1).
    contrast
        Range of the factor ``c``, log-uniform ((0.8, 1.25)).
    gamma
        Range of the exponent ``g``, log-uniform ((0.8, 1.25)).
    speckle
        Probability of multiplicative noise ``x * (1 + s * n)``, ``n ~ N(0, 1)`` per pixel
        (0.3).
    speckle_sigma
        Largest noise level ``s``, uniform in ``[0, speckle_sigma]`` (0.1).
    blur
        Probability of a Gaussian blur (0.2).
    blur_sigma
        Range of the blur's standard deviation in pixels ((0.5, 1.0)).
    seed
        Seed of the random stream (see the module docstring); ``None`` follows PyTorch's.

    Examples
    --------
    >>> image = np.zeros((32, 32), np.float32); image[8:16, 4:12] = 1.0
    >>> flip = Augment(hflip=1.0, affine=0.0, intensity=0.0, speckle=0.0, blur=0.0, seed=0)
    >>> out = flip(image=image, mask=(image > 0).astype(np.uint8))
    >>> bool((out["image"] == image[:, ::-1]).all()), bool((out["mask"] == out["image"]).all())
    (True, True)
    """

    def __init__(
        self,
        *,
        hflip: float = 0.5,
        vflip: float = 0.0,
        affine: float = 0.7,
        rotate: float = 10.0,
        scale: Range = (0.9, 1.1),
        translate: float = 0.05,
        shear: float = 5.0,
        intensity: float = 0.8,
        brightness: float = 0.1,
        contrast: Range = (0.8, 1.25),
        gamma: Range = (0.8, 1.25),
        speckle: float = 0.3,
        speckle_sigma: float = 0.1,
        blur: float = 0.2,
        blur_sigma: Range = (0.5, 1.0),
        seed: int | None = None,
    ) -> None:
        for name, p in [
            ("hflip", hflip),
            ("vflip", vflip),
            ("affine", affine),
            ("intensity", intensity),
            ("speckle", speckle),
            ("blur", blur),
        ]:
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {p!r}")
        for name, low_high in [
            ("scale", scale),
            ("contrast", contrast),
            ("gamma", gamma),
            ("blur_sigma", blur_sigma),
        ]:
            if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {low_high}")
        for name, bound in [
            ("rotate", rotate),
            ("translate", translate),
            ("shear", shear),
            ("brightness", brightness),
            ("speckle_sigma", speckle_sigma),
        ]:
            if not bound >= 0:
                raise ValueError(f"{name} must be >= 0, got {bound!r}")
        self.hflip, self.vflip, self.affine = hflip, vflip, affine
        self.rotate, self.scale, self.translate, self.shear = rotate, scale, translate, shear
        self.intensity, self.brightness = intensity, brightness
        self.contrast, self.gamma = contrast, gamma
        self.speckle, self.speckle_sigma = speckle, speckle_sigma
        self.blur, self.blur_sigma = blur, blur_sigma
        self.seed = seed
        self.epoch = 0
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple[int | None, ...] | None = None  # (worker seed, epoch) of _rng

    @property
    def config(self) -> dict[str, Any]:
        """Every setting, JSON-ready: ``Augment(**augment.config)`` draws the same transforms.

        Stored in checkpoints (through the dataset's ``config``), so that a resume with other
        augmentation is refused, naming the setting.
        """
        return {
            "hflip": self.hflip, "vflip": self.vflip, "affine": self.affine,
            "rotate": self.rotate, "scale": list(self.scale), "translate": self.translate,
            "shear": self.shear, "intensity": self.intensity, "brightness": self.brightness,
            "contrast": list(self.contrast), "gamma": list(self.gamma), "speckle": self.speckle,
            "speckle_sigma": self.speckle_sigma, "blur": self.blur,
            "blur_sigma": list(self.blur_sigma), "seed": self.seed,
        }  # fmt: skip

    def __call__(self, *, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        """Augment one sample.

        Parameters
        ----------
        image
            ``float32`` ``(H, W)`` or ``(H, W, C)`` in ``[0, 1]``.
        mask
            Integer ``(H, W)`` label map with labels in ``0..255`` (``{0, 1}`` for nodules).

        Returns
        -------
        dict
            ``{"image": float32 array in [0, 1], "mask": array of mask's dtype}``.
        """
        image = np.asarray(image, dtype=np.float32)
        mask = np.asarray(mask)
        if image.ndim not in (2, 3) or mask.shape != image.shape[:2]:
            raise ValueError(f"image {image.shape} and mask {mask.shape} do not match")
        if mask.dtype.kind not in "biu" or (mask.size and (mask.min() < 0 or mask.max() > 255)):
            raise ValueError(f"mask must hold integer labels in 0..255, got {mask.dtype}")
        rng = self._generator()
        height, width = mask.shape
        matrix = np.eye(3)
        if rng.random() < self.hflip:
            matrix = _flip_matrix(width, horizontal=True) @ matrix
        if rng.random() < self.vflip:
            matrix = _flip_matrix(height, horizontal=False) @ matrix
        if rng.random() < self.affine:
            matrix = self._random_affine(rng, height, width) @ matrix
        if not np.array_equal(matrix, np.eye(3)):
            image, mask = _warp(image, mask, matrix)
        if rng.random() < self.intensity:
            image = self._random_intensity(rng, image)
        if rng.random() < self.speckle:
            sigma = rng.uniform(0.0, self.speckle_sigma)
            image = image * (1.0 + sigma * rng.standard_normal(image.shape, np.float32))
        if rng.random() < self.blur:
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=rng.uniform(*self.blur_sigma))
        return {"image": np.clip(image, 0.0, 1.0, dtype=np.float32), "mask": mask}

    def _random_affine(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Rotation, log-uniform zoom, shear and shift about the image centre (3x3)."""
        angle = np.deg2rad(rng.uniform(-self.rotate, self.rotate))
        zoom = np.exp(rng.uniform(*np.log(self.scale)))
        shear = np.tan(np.deg2rad(rng.uniform(-self.shear, self.shear)))
        shift = rng.uniform(-self.translate, self.translate, size=2) * (width, height)
        cos, sin = np.cos(angle) * zoom, np.sin(angle) * zoom
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        linear = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
        matrix = np.eye(3)
        matrix[:2, :2] = linear
        matrix[:2, 2] = centre + shift - linear @ centre
        return matrix

    def _random_intensity(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        contrast = np.exp(rng.uniform(*np.log(self.contrast)))
        gamma = np.exp(rng.uniform(*np.log(self.gamma)))
        shift = rng.uniform(-self.brightness, self.brightness)
        mean = float(image.mean())
        image = np.clip(contrast * (image - mean) + mean + shift, 0.0, 1.0)
        return np.power(image, gamma, dtype=np.float32)

    def set_epoch(self, epoch: int) -> None:
        """Start the stream of ``epoch``: the same epoch always draws the same numbers.

        Without it the main-process stream simply continues from epoch to epoch; with it
        (the Trainer calls it through `ThyroidDataset.set_epoch`) a resumed run
        replays exactly.
        """
        self.epoch = int(epoch)

    def _generator(self) -> np.random.Generator:
        """The random stream for this process and epoch; re-seeded in each new worker.

        Under `torch.distributed` the rank joins the seed, so that the processes of a DDP
        run, which see different images, do not draw the same transforms in lockstep.
        """
        info = torch.utils.data.get_worker_info()
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = [torch.distributed.get_rank()] if distributed else []
        owner = (None if info is None else int(info.seed), self.epoch, *rank)
        if self._rng is None or owner != self._rng_owner:
            if info is None:
                base = [self.seed if self.seed is not None else torch.initial_seed()]
            else:
                base = [int(info.seed)] + ([self.seed] if self.seed is not None else [])
            self._rng = np.random.default_rng([*base, self.epoch, *rank])
            self._rng_owner = owner
        return self._rng

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _flip_matrix(length: int, *, horizontal: bool) -> np.ndarray:
    """Mirror x (horizontal) or y about the centre of a side of ``length`` pixels."""
    matrix = np.eye(3)
    axis = 0 if horizontal else 1
    matrix[axis, axis] = -1.0
    matrix[axis, 2] = length - 1
    return matrix


def _warp(image: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``matrix`` (output <- input) to the image (bilinear) and mask (nearest).

    Pixels that come from outside the frame are 0 (black image, background mask).
    """
    height, width = mask.shape
    forward = matrix[:2].astype(np.float64)
    image = cv2.warpAffine(
        image,
        forward,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    warped = cv2.warpAffine(
        mask.astype(np.uint8),
        forward,
        (width, height),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return image, warped.astype(mask.dtype, copy=False)
