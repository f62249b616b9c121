"""Crop and refine: a second network segments each found nodule again, at full resolution.

The whole-frame network (stage 1) sees a scan region shrunk to 128 x 128, where one network
pixel covers about four frame pixels, so the outline of a small nodule is coarse. The
refine network (stage 2) sees a square crop of the *full-resolution* frame around each
nodule that stage 1 found, resized to `CropRule.size`, and outlines it again; its
probabilities are pasted back into the frame. This is the cascade of the TN-SCUI 2020
winners.

Crops are cut from the frame as `thyroidseg.preprocessing.preprocess` cleans it (scan
region kept, everything outside the views zeroed, burned-in marks inpainted:
`thyroidseg.preprocessing.Preprocessed.cleaned_frame`), then resized and equalised/smoothed crop
by crop with the stage's own ``equalization``/``smoothing`` settings.

- `CropRule`: where a crop goes around a nodule's box, in training and at inference;
- `nodule_boxes`: the boxes of a mask's connected components, view by view;
- `CropDataset`: training crops around the annotated nodules of a
  `thyroidseg.data.ThyroidDataset` (random margin and centre jitter), for
  `thyroidseg.training.Trainer`;
- `Refiner`: stage 2 at inference, used by `thyroidseg.inference.Segmenter` (``refiner=``).

Examples
--------
>>> rule = CropRule(size=64, margin=0.5)
>>> rule.square(Box(100, 40, 140, 60))      # 40 px wide: 80 px square around its centre
Box(x0=80, y0=10, x1=160, y1=90)
>>> rule.square(Box(10, 10, 14, 12))        # a speck still gets min_side pixels of context
Box(x0=-4, y0=-5, x1=28, y1=27)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from thyroidseg._checks import check_int
from thyroidseg._io import PathLike
from thyroidseg.data import ThyroidDataset, Transform, describe_transform
from thyroidseg.ensemble import class_probabilities
from thyroidseg.geometry import Box, _resize_to, resize_mask
from thyroidseg.intensity import equalize, smooth
from thyroidseg.model_loading import load_network
from thyroidseg.preprocessing import Preprocessed, preprocess, to_unit_range
from thyroidseg.runtime import AmpMode, resolve_amp, resolve_device

__all__ = [
    "CLEANING_OPTIONS",
    "REFINE_RECIPE",
    "WHOLE_WEIGHT",
    "CropDataset",
    "CropRule",
    "Refiner",
    "cleaning_options",
    "cut_crop",
    "cut_mask",
    "nodule_boxes",
]

REFINE_RECIPE: dict[str, int] = {"epochs": 40, "base_channels": 16, "stem_stride": 2}
"""`thyroidseg.workflows.train_folder` settings of the refine stage that differ from the
whole-frame recipe (``thyroidseg train --stage refine``), chosen by grouped cross-validation
on DDTI (docs/model-card.md)."""

WHOLE_WEIGHT = 0.25
"""Default `Refiner.whole_weight`: a quarter of the whole-frame probability is kept inside the
crops (chosen by grouped cross-validation on DDTI, docs/model-card.md)."""

CLEANING_OPTIONS = ("crop", "margin", "inpaint_annotations")
"""`preprocess` options that decide the cleaned full-resolution frame; both stages must agree."""


@dataclass(frozen=True)
class CropRule:
    """Where the refine network's square crop goes around a nodule's bounding box.

    For a box of longest side ``L`` and centre ``c``, the crop is the square of side
    ``s = max(round(L (1 + 2 m)), min_side)`` centred on ``c`` (shifted by ``j s`` in
    training), resized to ``size x size``: ``m`` of the box's side is added on each side.
    Parts of the square outside the frame are zero, like the frame outside its views.

    Parameters
    ----------
    size
        Side of the network crop in pixels (default 128).
    margin
        ``m`` at inference and validation (default 0.5: the square is twice the box).
    train_margin
        Range of ``m`` in training, drawn uniformly (default (0.25, 0.8)).
    jitter
        Largest training shift of the centre, as a fraction of ``s`` on each axis, drawn
        uniformly in ``[-jitter, jitter]`` (default 0.12).
    min_side
        Smallest square side in frame pixels (default 32).
    """

    size: int = 128
    margin: float = 0.5
    train_margin: tuple[float, float] = (0.25, 0.8)
    jitter: float = 0.12
    min_side: int = 32

    def __post_init__(self) -> None:
        check_int("size", self.size, 16)
        check_int("min_side", self.min_side, 1)
        low, high = (float(v) for v in self.train_margin)
        object.__setattr__(self, "train_margin", (low, high))
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin!r}")
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
            raise ValueError(f"train_margin must be 0 <= low <= high, got {self.train_margin!r}")
        if not (math.isfinite(self.jitter) and 0 <= self.jitter < 0.5):
            raise ValueError(f"jitter must be in [0, 0.5), got {self.jitter!r}")

    def square(
        self, box: Box, margin: float | None = None, shift: tuple[float, float] = (0, 0)
    ) -> Box:
        """The crop around ``box`` with margin ``margin`` (default `margin`), in frame pixels.

        ``shift`` is ``(dx, dy)`` as fractions of the side. The square may reach past the
        frame's edges (negative or too large coordinates); `cut_crop` pads it with zeros.
        """
        m = self.margin if margin is None else margin
        side = max(round(max(box.width, box.height) * (1 + 2 * m)), self.min_side)
        cx = (box.x0 + box.x1) / 2 + shift[0] * side
        cy = (box.y0 + box.y1) / 2 + shift[1] * side
        x0, y0 = math.floor(cx - side / 2), math.floor(cy - side / 2)
        return Box(x0, y0, x0 + side, y0 + side)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings: ``CropRule(**rule.to_dict())`` is the same rule."""
        settings = asdict(self)
        settings["train_margin"] = list(self.train_margin)
        return settings

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> CropRule:
        """The rule stored by `to_dict` (unknown keys are an error)."""
        return cls(**{**settings, "train_margin": tuple(settings.get("train_margin", (0.25, 0.8)))})


def cleaning_options(preprocess_options: Mapping[str, Any]) -> dict[str, Any]:
    """The `CLEANING_OPTIONS` among `preprocess` keyword arguments, its defaults filled in."""
    defaults = inspect.signature(preprocess).parameters
    return {k: preprocess_options.get(k, defaults[k].default) for k in CLEANING_OPTIONS}


def nodule_boxes(mask: np.ndarray, views: Sequence[Box]) -> list[Box]:
    """Bounding boxes of the connected components (8-connectivity) of ``mask``, per view.

    Components are taken inside each view separately, so one nodule in each half of a
    split-screen frame gives two boxes; pixels outside every view are ignored.

    >>> mask = np.zeros((20, 40), np.uint8); mask[2:5, 3:9] = 1; mask[10:12, 30:31] = 1
    >>> nodule_boxes(mask, [Box(0, 0, 40, 20)])
    [Box(x0=3, y0=2, x1=9, y1=5), Box(x0=30, y0=10, x1=31, y1=12)]
    """
    boxes = []
    for view in views:
        part = (mask[view.slices] != 0).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
        for x, y, w, h, _area in stats[1:count]:
            x0, y0 = view.x0 + int(x), view.y0 + int(y)
            boxes.append(Box(x0, y0, x0 + int(w), y0 + int(h)))
    return boxes


def cut_crop(frame: np.ndarray, square: Box, size: int) -> np.ndarray:
    """``frame[square]``, zero where the square leaves the frame, resized to ``size x size``.

    Shrunk by area averaging, enlarged bilinearly (masks: `cut_mask`).
    """
    return _resize_to(_pad_cut(frame, square), size, size)


def cut_mask(mask: np.ndarray, square: Box, size: int) -> np.ndarray:
    """`cut_crop` for a mask: nearest-neighbour resizing, so it stays binary."""
    return resize_mask(_pad_cut(mask, square), (size, size))


def _pad_cut(frame: np.ndarray, square: Box) -> np.ndarray:
    out = np.zeros((square.height, square.width), frame.dtype)
    on_frame, on_square = _overlap(square, frame.shape[:2])
    out[on_square.slices] = frame[on_frame.slices]
    return out


def _overlap(square: Box, shape: tuple[int, int]) -> tuple[Box, Box]:
    """The part of ``square`` inside a frame of ``shape``: in frame and in square coordinates."""
    height, width = shape
    x0, y0 = min(max(square.x0, 0), width), min(max(square.y0, 0), height)
    x1, y1 = max(min(square.x1, width), x0), max(min(square.y1, height), y0)
    return Box(x0, y0, x1, y1), Box(x0 - square.x0, y0 - square.y0, x1 - square.x0, y1 - square.y0)


def _intensity(crop: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
    """The stage's equalisation and smoothing, as `preprocess` applies them."""
    equalization = options.get("equalization", "clahe")
    smoothing = options.get("smoothing", "median")
    if equalization is not None:
        crop = equalize(crop, equalization)
    if smoothing is not None:
        crop = smooth(crop, smoothing)
    return crop


class CropDataset(Dataset):
    """Training crops of the refine network around the annotated nodules of a dataset.

    Every connected component of every mask (`nodule_boxes`, view by view) is one item:
    the crop of `CropRule.square` around it, cut from the cleaned full-resolution frame,
    resized to `CropRule.size` and equalised/smoothed like the dataset's frames, with the
    mask cut alike (other nodules inside the square count as nodule too). With ``train``,
    the margin is drawn from `CropRule.train_margin` and the centre jittered by
    `CropRule.jitter`, from a generator seeded by ``(seed, epoch, item)``, so a resumed run
    draws the same crops; then ``transform`` (an `Augment`) runs on the crop.

    Frames are read and cleaned once, when the object is made (about 0.2 MB a frame).

    Parameters
    ----------
    dataset
        Frames and masks (`ThyroidDataset.load_original`); its ``preprocess_options``
        clean the frames and set the crops' intensity steps.
    rule
        The crop geometry (default `CropRule()`).
    train
        Random margins and jitter (default ``True``); ``False``: `CropRule.margin`, centred.
    transform
        Paired augmentation of crop and mask, called as
        ``transform(image=..., mask=...)`` (a `thyroidseg.augment.Augment`; default none).
    seed
        Seed of the margins and jitter (default 0).
    """

    def __init__(
        self,
        dataset: ThyroidDataset,
        rule: CropRule | None = None,
        *,
        train: bool = True,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        config = dataset.config
        if config.get("preprocess") != "default":
            raise ValueError(
                "CropDataset cuts crops from frames cleaned by thyroidseg's preprocess(); "
                f"this dataset prepares them by {config.get('preprocess')!r}"
            )
        self.dataset = dataset
        """The frames the crops are cut from."""
        self.rule = rule or CropRule()
        self.train, self.transform, self.seed, self.epoch = train, transform, seed, 0
        self.options = dict(config["preprocess_options"])
        self._config = {key: value for key, value in config.items() if key != "transform"}
        self.frames: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.items: list[tuple[int, Box]] = []
        self.names: list[str] = []
        for index in range(len(dataset)):
            image, mask = dataset.load_original(index)
            prepared = preprocess(image, **self.options)
            self.frames.append(prepared.cleaned_frame())
            self.masks.append(mask)
            for box in nodule_boxes(mask, prepared.views):
                self.items.append((index, box))
                self.names.append(dataset.names[index])

    @property
    def config(self) -> dict[str, Any]:
        """The dataset's config plus ``"crops"`` (the rule) and the transform's settings."""
        config = {**self._config, "crops": self.rule.to_dict()}
        if self.transform is not None:
            config["transform"] = describe_transform(self.transform)
        return config

    def set_epoch(self, epoch: int) -> None:
        """Draw the crops (and the transform's changes) of epoch ``epoch``."""
        self.epoch = epoch
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        frame_index, box = self.items[index]
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            margin = rng.uniform(*self.rule.train_margin)
            shift = tuple(rng.uniform(-self.rule.jitter, self.rule.jitter, 2))
            square = self.rule.square(box, margin, shift)
        else:
            square = self.rule.square(box)
        image = _intensity(cut_crop(self.frames[frame_index], square, self.rule.size), self.options)
        mask = cut_mask(self.masks[frame_index], square, self.rule.size)
        image = to_unit_range(image)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)[None],
            "mask": torch.as_tensor(np.ascontiguousarray(mask)).to(torch.int64),
            "name": self.names[index],
        }


class Refiner:
    r"""Stage 2 at inference: segment each stage-1 nodule again from a full-resolution crop.

    For each connected component of the stage-1 mask (`nodule_boxes`, per view), the
    `CropRule.square` crop with `CropRule.margin` is cut from the cleaned frame, prepared as
    in training and segmented (with flip TTA when on). Each crop's nodule probability is
    resized back onto its square (bilinear) and averaged where squares overlap; inside the
    squares the mask becomes ``probability > 0.5``, outside them the stage-1 mask is kept.

    Parameters
    ----------
    model
        The refine network (a `thyroidseg.model.UNet` or an `thyroidseg.ensemble.Ensemble`
        of fold models): ``(N, 1, S, S)`` in ``[0, 1]`` to class scores ``(N, 2, S, S)``.
    rule
        The crop rule it was trained with.
    preprocess_options
        The `preprocess` options of its training data: the cleaning options must match
        stage 1's (`Segmenter` checks), ``equalization``/``smoothing`` prepare the crops.
    device, amp
        As for `thyroidseg.inference.Segmenter`.
    whole_weight
        ``w`` in the probability inside the squares,
        :math:`p = w\,p_{\mathrm{whole}} + (1 - w)\,p_{\mathrm{refine}}`: how much of the
        whole-frame network's probability (resampled to the frame) is kept, an ensemble of
        the two stages (default `WHOLE_WEIGHT`, chosen by cross-validation).
    """

    def __init__(
        self,
        model: nn.Module,
        rule: CropRule,
        preprocess_options: Mapping[str, Any] | None = None,
        *,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        whole_weight: float = WHOLE_WEIGHT,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(rule, CropRule):
            raise ValueError(f"rule must be a CropRule, got {type(rule).__name__}")
        self.device = resolve_device(device)
        self.amp_dtype = resolve_amp(amp, self.device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        if not (isinstance(whole_weight, int | float) and 0.0 <= whole_weight <= 1.0):
            raise ValueError(f"whole_weight must be a number in [0, 1], got {whole_weight!r}")
        self.rule = rule
        self.preprocess_options = dict(preprocess_options or {})
        self.whole_weight = float(whole_weight)

    @classmethod
    def from_checkpoint(
        cls,
        path: PathLike | Sequence[PathLike],
        *,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        whole_weight: float = WHOLE_WEIGHT,
    ) -> Refiner:
        """The refine network(s) of checkpoint(s) written by a crop run of ``thyroidseg train``.

        Several checkpoints (the fold models) become one `thyroidseg.ensemble.Ensemble`;
        they must share one crop rule and preprocessing.

        Raises
        ------
        FileNotFoundError, ValueError
            As `thyroidseg.model_loading.load_network`, or a whole-frame checkpoint (no crop
            rule stored). Each message names the file.
        """
        stored = load_network(path)
        if stored.crops is None:
            raise ValueError(
                f"{path}: a whole-frame (stage 1) model, not a refine model: it stores no crop "
                "rule (train one with `thyroidseg train DATA RUN_DIR --stage refine`)"
            )
        return cls(
            stored.network,
            CropRule.from_dict(stored.crops),
            stored.preprocess_options,
            device=device,
            amp=amp,
            whole_weight=whole_weight,
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the crop rule, the preprocessing and how crops become the mask."""
        return {
            "crops": self.rule.to_dict(),
            "preprocess_options": dict(self.preprocess_options),
            "whole_weight": self.whole_weight,
            "rule": "for each connected component of the whole-frame mask (per view), the "
            "square of side max(round(L (1 + 2 margin)), min_side) around its box centre (L: "
            "the box's longer side), cut from the cleaned frame (zero outside it), resized to "
            "size x size, equalised and smoothed; nodule probabilities resized back and "
            "averaged where squares overlap, then whole_weight * (the whole-frame probability) + "
            "(1 - whole_weight) * that; mask = probability > 0.5 inside the squares",
        }

    def cleaning(self) -> dict[str, Any]:
        """The `CLEANING_OPTIONS` it was trained with (`cleaning_options`)."""
        return cleaning_options(self.preprocess_options)

    def refine(
        self,
        prepared: Preprocessed,
        mask: np.ndarray,
        whole_probability: np.ndarray | None = None,
        *,
        tta: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Refine the whole-frame ``mask`` of one frame.

        Parameters
        ----------
        prepared
            The frame as `preprocess` prepared it for the whole-frame network.
        mask
            The whole-frame network's ``{0, 1}`` mask at the frame's size, post-processed.
        whole_probability
            Its nodule probability at the frame's size; needed when ``whole_weight > 0``.
        tta
            Flip test-time augmentation of the crops.

        Returns
        -------
        (mask, probability, covered)
            The ``uint8`` {0, 1} mask, the nodule probability inside the squares (``float32``,
            0 outside them) and the ``bool`` map of the pixels some square covered, all of
            the frame's size.
        """
        if self.whole_weight > 0 and whole_probability is None:
            raise ValueError(
                f"whole_weight={self.whole_weight} blends in the whole-frame probability: "
                "pass whole_probability"
            )
        shape = prepared.original_shape
        squares = [self.rule.square(box) for box in nodule_boxes(mask, prepared.views)]
        total = np.zeros(shape, np.float32)
        count = np.zeros(shape, np.float32)
        if not squares:
            return mask, total, count > 0
        frame = prepared.cleaned_frame()
        crops = np.stack(
            [
                _intensity(cut_crop(frame, s, self.rule.size), self.preprocess_options)
                for s in squares
            ]
        )
        batch = torch.from_numpy(to_unit_range(crops)[:, None])
        probability = (
            class_probabilities(
                self.model, batch, device=self.device, amp_dtype=self.amp_dtype, tta=tta
            )[:, 1]
            .cpu()
            .numpy()
        )
        for square, crop in zip(squares, probability, strict=True):
            back = cv2.resize(crop, (square.width, square.height), interpolation=cv2.INTER_LINEAR)
            on_frame, on_square = _overlap(square, shape)
            total[on_frame.slices] += back[on_square.slices]
            count[on_frame.slices] += 1
        covered = count > 0
        total[covered] /= count[covered]
        if self.whole_weight > 0:
            blended = self.whole_weight * whole_probability + (1 - self.whole_weight) * total
            total[covered] = blended[covered]
        refined = mask.copy()
        refined[covered] = total[covered] > 0.5
        return refined, total, covered
