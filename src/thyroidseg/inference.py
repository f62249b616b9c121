"""Segment scanner frames with a trained model: preprocess -> model -> original size.

A `Segmenter` holds a model and the preprocessing it was trained with. For each frame
it runs `thyroidseg.preprocessing.preprocess` (crop to the scan region, clean, equalise,
resize), predicts the class of every network pixel (argmax of the logits), carries the mask
back to the original frame with `mask_to_original`
(nearest neighbour, zeros outside the scan region) and applies the per-view post-processing
of `postprocess_views`. Masks therefore always have the size of the input frame and are
measured against the original labels, never against resized ones.

``Segmenter.from_checkpoint("run/best.pt")`` rebuilds everything from a checkpoint written by
`thyroidseg.training.Trainer` (model architecture and preprocessing settings are
stored in it), loading it with `thyroidseg.checkpoint.load_checkpoint`
(``torch.load(weights_only=True)``). Device and autocast follow `thyroidseg.runtime`, as in
training; nothing here imports the training code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from thyroidseg._io import PathLike, map_folder, write_image
from thyroidseg.checkpoint import load_checkpoint
from thyroidseg.model import UNet
from thyroidseg.preprocessing import Preprocessed, preprocess
from thyroidseg.runtime import AmpMode, autocast, resolve_amp, resolve_device

__all__ = ["Segmenter", "overlay", "postprocess_views"]

_SUPPORTED_MODEL = "thyroidseg.model.UNet"


def postprocess_views(
    mask: np.ndarray,
    views: Sequence[Sequence[int]],
    *,
    keep_largest: bool = False,
    min_area: int = 0,
    fill_holes: bool = False,
) -> np.ndarray:
    """Clean a binary mask view by view.

    Pixels outside every view (the margin around the scan region, the gap between the two
    halves of a split-screen frame) are set to 0. Then, inside each view separately:
    connected components (8-connectivity) smaller than ``min_area`` pixels are removed,
    and with ``keep_largest`` only the largest remaining one is kept. Working per view keeps
    one nodule in each half of a split-screen frame, where a frame-wide "largest component"
    rule would delete one of them.

    Parameters
    ----------
    mask
        ``(H, W)`` array; non-zero is nodule.
    views
        Boxes ``(x0, y0, x1, y1)`` in the mask's coordinates (``Preprocessed.views``).
    keep_largest
        Keep only the largest component in each view (default ``False``).
    min_area
        Remove components with fewer pixels (default 0: keep all).
    fill_holes
        Fill the holes of each component (background regions that do not touch the
        view's border, 4-connectivity), after the component rules (default ``False``).

    Returns
    -------
    numpy.ndarray
        ``uint8`` ``{0, 1}`` mask of the same shape.

    Examples
    --------
    >>> mask = np.zeros((4, 8), np.uint8)
    >>> mask[1:3, 0:2] = 1; mask[1, 4] = 1; mask[0:2, 6:8] = 1
    >>> postprocess_views(mask, [(0, 0, 5, 4), (5, 0, 8, 4)], keep_largest=True)
    array([[0, 0, 0, 0, 0, 0, 1, 1],
           [1, 1, 0, 0, 0, 0, 1, 1],
           [1, 1, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0]], dtype=uint8)
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    out = np.zeros(mask.shape, np.uint8)
    for x0, y0, x1, y1 in views:
        part = (mask[y0:y1, x0:x1] != 0).astype(np.uint8)
        if keep_largest or min_area > 0:
            count, labels, stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
            areas = stats[1:, cv2.CC_STAT_AREA]
            keep = areas >= min_area
            if keep_largest and keep.any():
                keep &= areas == areas[keep].max()
                keep &= np.cumsum(keep) == 1  # one component even when two tie
            part = np.isin(labels, 1 + np.flatnonzero(keep)).astype(np.uint8)
        if fill_holes and part.any():
            part = _fill_holes(part)
        out[y0:y1, x0:x1] |= part
    return out


def _fill_holes(part: np.ndarray) -> np.ndarray:
    """``part`` with every background region that does not touch its border set to 1."""
    padded = np.pad(part, 1)
    outside = padded.copy()
    cv2.floodFill(outside, None, (0, 0), 1, flags=4)  # background reachable from the border
    holes = outside[1:-1, 1:-1] == 0
    return part | holes.astype(np.uint8)


def overlay(
    image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None = None
) -> np.ndarray:
    """A BGR picture of ``image`` with the predicted outline in red and the true one in green.

    ``image`` is grey or BGR (8- or 16-bit), ``prediction`` and ``truth`` are ``(H, W)``
    masks of the image's size (non-zero = nodule). The predicted area is also tinted red.
    """
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    picture = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    for name, mask in (("prediction", prediction), ("truth", truth)):
        if mask is not None and mask.shape != picture.shape[:2]:
            raise ValueError(f"{name} is {mask.shape}, the image is {picture.shape[:2]}")
    predicted = prediction != 0
    picture[predicted] = (0.6 * picture[predicted] + (0, 0, 0.4 * 255)).astype(np.uint8)
    outlines = [(prediction, (0, 0, 255))] + ([(truth, (0, 200, 0))] if truth is not None else [])
    for mask, colour in outlines:
        contours, _ = cv2.findContours(
            (mask != 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(picture, contours, -1, colour, 1, cv2.LINE_AA)
    return picture


class Segmenter:
    """Segment whole scanner frames with a model, at the frames' own size.

    Parameters
    ----------
    model
        Maps ``(N, 1, H, W)`` images in ``[0, 1]`` to logits ``(N, K, H, W)``.
    preprocess_options
        Keyword arguments of `thyroidseg.preprocessing.preprocess` (including ``size``),
        exactly as in training. Default: ``preprocess``'s defaults.
    device, amp
        As for `thyroidseg.training.Trainer` (``"auto"`` for both by default): see
        `thyroidseg.runtime.resolve_device` and `thyroidseg.runtime.resolve_amp`.
    keep_largest, min_area, fill_holes
        Per-view post-processing, see `postprocess_views` (default: off).
    tta
        Test-time augmentation: average the nodule probability of the frame and of its
        left-right mirror image (mirrored back) before thresholding at 0.5. Twice the model
        cost (default ``False``).
    batch_size
        Frames per forward pass in `predict_many` (default 8).

    Examples
    --------
    >>> from thyroidseg.model import UNet
    >>> from thyroidseg.synthetic import synthetic_phantoms
    >>> images, _ = synthetic_phantoms(2, size=(90, 140), seed=0)
    >>> segmenter = Segmenter(UNet(seed=0), {"size": (64, 64)}, device="cpu")
    >>> [mask.shape for mask in segmenter.predict_many(images)]
    [(90, 140), (90, 140)]
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess_options: Mapping[str, Any] | None = None,
        *,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        keep_largest: bool = False,
        min_area: int = 0,
        fill_holes: bool = False,
        tta: bool = False,
        batch_size: int = 8,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(min_area, int) or min_area < 0:
            raise ValueError(f"min_area must be an integer >= 0, got {min_area!r}")
        self.device = resolve_device(device)
        self.amp_dtype = resolve_amp(amp, self.device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.preprocess_options = dict(preprocess_options or {})
        self.keep_largest, self.min_area, self.batch_size = keep_largest, min_area, batch_size
        self.fill_holes, self.tta = bool(fill_holes), bool(tta)

    @classmethod
    def from_checkpoint(
        cls,
        path: PathLike,
        *,
        model: nn.Module | None = None,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        keep_largest: bool = False,
        min_area: int = 0,
        fill_holes: bool = False,
        tta: bool = False,
        batch_size: int = 8,
    ) -> Segmenter:
        """Rebuild the model and preprocessing stored in a `Trainer` checkpoint.

        A `thyroidseg.model.UNet` is rebuilt from the stored ``config``; for any
        other architecture pass an instance as ``model`` (its weights are replaced). Frames
        are prepared as in training, from the checkpoint's ``config["data"]`` (the training
        dataset's `thyroidseg.data.ThyroidDataset.config`): `preprocess` with the stored
        ``"preprocess_options"``; with `preprocess`'s defaults when the training data
        described no preprocessing at all (a dataset without ``config``).

        Raises
        ------
        FileNotFoundError, ValueError
            As `thyroidseg.checkpoint.load_checkpoint`; also when the checkpoint holds a
            model that cannot be rebuilt or whose weights do not fit ``model``, or when its
            frames were prepared otherwise than by `preprocess` (``preprocess=None`` or a
            custom callable): build ``Segmenter(model, preprocess_options)`` yourself then.
        """
        checkpoint = load_checkpoint(path)
        config = checkpoint["config"]
        if model is None:
            if config.get("model_class") != _SUPPORTED_MODEL or not config.get("model"):
                raise ValueError(
                    f"{path}: holds a {config.get('model_class')!r} model; only "
                    f"{_SUPPORTED_MODEL} is rebuilt automatically, pass model=... for others"
                )
            model = UNet(**config["model"])
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as error:
            raise ValueError(f"{path}: weights do not fit the model: {error}") from error
        options = _training_preprocess_options(config.get("data", {}), path)
        return cls(
            model,
            options,
            device=device,
            amp=amp,
            keep_largest=keep_largest,
            min_area=min_area,
            fill_holes=fill_holes,
            tta=tta,
            batch_size=batch_size,
        )

    def predict(self, image: np.ndarray | PathLike) -> np.ndarray:
        """The ``uint8`` ``{0, 1}`` nodule mask of one frame (array or path), at its size."""
        return self.predict_many([image])[0]

    def predict_many(self, images: Sequence[np.ndarray | PathLike]) -> list[np.ndarray]:
        """Masks of several frames (any sizes), computed ``batch_size`` frames at a time."""
        masks: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            masks += self._segment([self._prepare(image) for image in chunk])
        return masks

    def predict_folder(
        self,
        in_dir: PathLike,
        out_dir: PathLike,
        *,
        overwrite: bool = False,
        progress: bool | None = None,
    ) -> list[Path]:
        """Write ``out_dir/<stem>.png`` (``{0, 255}``, original size) for every image of ``in_dir``.

        The folder loop is `thyroidseg._io.map_folder`'s: every file is written atomically;
        existing outputs are an error unless ``overwrite`` (checked for all files before
        anything is written); a frame that cannot be read or preprocessed does not stop the
        others: once every other mask is written, a ``ValueError`` lists each failed file.

        Returns
        -------
        list of pathlib.Path
            The masks written, in stem order.
        """

        def save(batch: dict[Path, Preprocessed]) -> None:
            masks = self._segment(list(batch.values()))
            for target, mask in zip(batch, masks, strict=True):
                write_image(target, mask * np.uint8(255))

        written = map_folder(
            in_dir,
            out_dir,
            self._prepare,
            save,
            verb="segmented",
            overwrite=overwrite,
            batch_size=self.batch_size,
            progress=progress,
        )
        return list(written.values())

    # -- steps --------------------------------------------------------------------------

    def _prepare(self, image: np.ndarray | PathLike) -> Preprocessed:
        return preprocess(image, **self.preprocess_options)  # errors name the file

    def _segment(self, prepared: Sequence[Preprocessed]) -> list[np.ndarray]:
        """One forward pass over preprocessed frames; masks back at each frame's size."""
        batch = np.stack([p.image for p in prepared]).astype(np.float32) / 255.0
        labels = self._labels(torch.from_numpy(batch[:, None]))
        return [
            postprocess_views(
                p.mask_to_original((label == 1).astype(np.uint8)),
                p.views,
                keep_largest=self.keep_largest,
                min_area=self.min_area,
                fill_holes=self.fill_holes,
            )
            for p, label in zip(prepared, labels, strict=True)
        ]

    def _labels(self, images: torch.Tensor) -> np.ndarray:
        images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.amp_dtype):
            probabilities = self.model(images).float().softmax(dim=1)
            if self.tta:
                mirrored = self.model(images.flip(-1)).float().softmax(dim=1).flip(-1)
                probabilities = (probabilities + mirrored) / 2
        return probabilities.argmax(dim=1).to(torch.uint8).cpu().numpy()


def _training_preprocess_options(data: Mapping[str, Any], path: PathLike) -> dict[str, Any]:
    """The `preprocess` keyword arguments a checkpoint's training data was prepared with."""
    method = data.get("preprocess")
    if method is None:
        return {}
    if method == "default":
        return dict(data.get("preprocess_options", {}))
    raise ValueError(
        f"{path}: the model was trained on frames prepared by {method!r}, not by "
        "thyroidseg's preprocess(); rebuild the model and pass matching options: "
        "Segmenter(model, preprocess_options)"
    )
