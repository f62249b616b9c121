"""Grey levels: a scanner frame as 8-bit grey, histogram equalisation, speckle smoothing.

`to_gray_uint8` is the one entry point for frames: it accepts grey, BGR, 16-bit and paths,
and rejects empty, constant and wrongly shaped images with a message that names the file.
`equalize` and `smooth` are steps 4 and 5 of `thyroidseg.preprocessing.preprocess`.
"""

from __future__ import annotations

from typing import Literal, get_args

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.io.files import read_image

__all__ = [
    "EQUALIZE_METHODS",
    "SMOOTH_METHODS",
    "EqualizeMethod",
    "SmoothMethod",
    "equalize",
    "smooth",
    "to_gray_uint8",
]

EqualizeMethod = Literal["clahe", "global"]
SmoothMethod = Literal["median", "gaussian", "bilateral"]
EQUALIZE_METHODS: tuple[str, ...] = get_args(EqualizeMethod)
SMOOTH_METHODS: tuple[str, ...] = get_args(SmoothMethod)


def to_gray_uint8(image: np.ndarray | PathLike) -> np.ndarray:
    """Validate an input frame and return it as 8-bit grey ``(H, W)``.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, 3)`` (BGR) array of ``uint8`` or ``uint16``, or a path to an
        image file. ``(H, W, 1)`` is accepted as grey.

    Returns
    -------
    numpy.ndarray
        ``uint8 (H, W)``. Colour is converted with OpenCV's luminance weights. 16-bit
        images are stretched linearly from their minimum to their maximum onto 0..255
        (scanners rarely use all 16 bits, so a fixed ``>> 8`` would leave them black).

    Raises
    ------
    ValueError
        Empty, constant, unreadable or wrongly shaped image, or an unsupported dtype. The
        message names the file when ``image`` is a path.

    >>> to_gray_uint8(np.array([[0, 1000], [2000, 4000]], np.uint16))
    array([[  0,  64],
           [128, 255]], dtype=uint8)
    """
    return _to_gray(*_load_frame(image))


def _load_frame(image: np.ndarray | PathLike) -> tuple[np.ndarray, str]:
    """The array and a name for error messages (the path, or "image")."""
    if isinstance(image, str) or hasattr(image, "__fspath__"):
        return read_image(image), str(image)  # type: ignore[arg-type]
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image: expected a numpy array or a path, got {type(image).__name__}")
    return image, "image"


def _to_gray(image: np.ndarray, name: str) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{name}: expected shape (H, W) or (H, W, 3), got {image.shape}")
    if image.size == 0:
        raise ValueError(f"{name}: empty image of shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{name}: expected dtype uint8 or uint16, got {image.dtype}")
    low, high = int(image.min()), int(image.max())
    if low == high:
        raise ValueError(f"{name}: constant image (every pixel is {low}); nothing to segment")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        low, high = int(image.min()), int(image.max())
    if image.dtype == np.uint16:
        scale = 255.0 / max(high - low, 1)
        image = cv2.convertScaleAbs(image, alpha=scale, beta=-low * scale)
    return np.ascontiguousarray(image)


def equalize(
    image: np.ndarray,
    method: EqualizeMethod = "clahe",
    *,
    clip_limit: float = 2.0,
    tile_grid: tuple[int, int] = (8, 8),
) -> np.ndarray:
    """Histogram equalisation of an 8-bit grey image.

    Parameters
    ----------
    image
        ``uint8 (H, W)``.
    method
        ``"global"``: ``cv2.equalizeHist``, the grey levels mapped through the cumulative
        histogram, $v' = \\mathrm{round}(255 \\, (\\mathrm{cdf}(v) -
        \\mathrm{cdf}_{\\min}) / (N - \\mathrm{cdf}_{\\min}))$. ``"clahe"``: contrast-limited
        adaptive equalisation on a ``tile_grid`` of tiles, each tile's histogram clipped at
        ``clip_limit`` times its mean count before equalising, tiles blended bilinearly.
    clip_limit, tile_grid
        CLAHE settings (OpenCV's meaning); ignored by ``"global"``.

    Returns
    -------
    numpy.ndarray
        ``uint8 (H, W)``.
    """
    _check_gray8(image, "equalize")
    if method == "global":
        return cv2.equalizeHist(image)
    if method == "clahe":
        return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tile_grid).apply(image)
    raise ValueError(f"equalize: method must be 'clahe' or 'global', got {method!r}")


def smooth(image: np.ndarray, method: SmoothMethod = "median", *, size: int = 3) -> np.ndarray:
    """Speckle smoothing of an 8-bit grey image.

    Parameters
    ----------
    image
        ``uint8 (H, W)``.
    method
        ``"median"``: median of the ``size x size`` window. ``"gaussian"``: Gaussian of
        ``size x size`` with OpenCV's default $\\sigma = 0.3((size-1)/2 - 1) + 0.8$.
        ``"bilateral"``: edge-preserving bilateral filter of diameter ``size``, colour sigma
        25 grey levels, space sigma ``size`` px.
    size
        Odd window size in pixels (>= 3).

    Returns
    -------
    numpy.ndarray
        ``uint8 (H, W)``.
    """
    _check_gray8(image, "smooth")
    if size < 3 or size % 2 == 0:
        raise ValueError(f"smooth: size must be an odd number >= 3, got {size}")
    if method == "median":
        return cv2.medianBlur(image, size)
    if method == "gaussian":
        return cv2.GaussianBlur(image, (size, size), 0)
    if method == "bilateral":
        return cv2.bilateralFilter(image, size, 25, size)
    raise ValueError(f"smooth: method must be 'median', 'gaussian' or 'bilateral', got {method!r}")


def _check_gray8(image: np.ndarray, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"{what}: expected a uint8 (H, W) image, got {dtype} of shape {shape}")
    if image.size == 0:
        raise ValueError(f"{what}: empty image")
