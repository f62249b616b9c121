"""Training crops of the refine network: `CropDataset`, around the annotated nodules.

The second stage of crop-and-refine (docs/refine.md) trains on square crops of the
full-resolution frames around every annotated nodule, placed by a
`thyroidseg.preprocessing.crops.CropRule` (a random margin and centre jitter in training)
and prepared as `thyroidseg.preprocessing.crops.prepare_crop` prepares them at inference;
optionally also around boxes a whole-frame model found (`read_crop_boxes`), so that the
refine network trains on what it is shown at inference, wrong objects included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from thyroidseg._checks import PathLike
from thyroidseg.data.dataset import ThyroidDataset, Transform, describe_transform
from thyroidseg.io.files import read_format_json
from thyroidseg.preprocessing.crops import CropRule, cut_mask, nodule_boxes, prepare_crop
from thyroidseg.preprocessing.geometry import Box
from thyroidseg.preprocessing.pipeline import preprocess, to_unit_range

__all__ = ["CROP_BOXES_FORMAT", "CropBoxes", "CropDataset", "read_crop_boxes", "write_crop_boxes"]

CROP_BOXES_FORMAT = "thyroidseg-crop-boxes"
"""``"format"`` of a crop-box file (`write_crop_boxes`)."""

CropBoxes = Mapping[str, Sequence[Box]]
"""Frame name (stem) -> boxes ``(x0, y0, x1, y1)`` in that frame's full-resolution pixels."""


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
        ``transform(image=..., mask=...)`` (a `thyroidseg.data.augment.Augment`; default none).
    seed
        Seed of the margins and jitter (default 0).
    extra_boxes
        More boxes to crop around, per frame name, in the frame's pixels: the components a
        whole-frame model found on frames it never saw (`read_crop_boxes`). Each is one more
        item placed by the same rule, its target the annotation inside its square (empty
        around a wrong object). Names of frames outside ``dataset`` are unused, so one file
        serves every fold. Default: none.
    """

    def __init__(
        self,
        dataset: ThyroidDataset,
        rule: CropRule | None = None,
        *,
        train: bool = True,
        transform: Transform | None = None,
        seed: int = 0,
        extra_boxes: CropBoxes | None = None,
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
            found = (extra_boxes or {}).get(dataset.names[index], ())
            for box in [*nodule_boxes(mask, prepared.views), *found]:
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
        set_transform_epoch = getattr(self.transform, "set_epoch", None)
        if set_transform_epoch is not None:
            set_transform_epoch(epoch)

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
        image = prepare_crop(self.frames[frame_index], square, self.rule.size, self.options)
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


def write_crop_boxes(path: PathLike, boxes: CropBoxes, source: str) -> Path:
    """Write ``boxes`` as the JSON `read_crop_boxes` reads; ``source`` says what found them.

    ``{"format": "thyroidseg-crop-boxes", "source": ..., "boxes": {name: [[x0, y0, x1, y1],
    ...]}}``.
    """
    path = Path(path)
    data = {
        "format": CROP_BOXES_FORMAT,
        "source": source,
        "boxes": {name: [list(map(int, box)) for box in found] for name, found in boxes.items()},
    }
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def read_crop_boxes(path: PathLike) -> dict[str, list[Box]]:
    """The boxes of a crop-box file (`write_crop_boxes`), for ``CropDataset(extra_boxes=...)``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not such a file, or a box that is not four integers with ``x0 < x1`` and
        ``y0 < y1`` (the message names the file and the frame).
    """
    data = read_format_json(path, CROP_BOXES_FORMAT, "crop-box file")
    boxes: dict[str, list[Box]] = {}
    for name, found in dict(data.get("boxes", {})).items():
        boxes[name] = []
        for box in found:
            if not (len(box) == 4 and all(isinstance(v, int) for v in box)):
                raise ValueError(f"{path}: frame {name}: {box!r} is not four integers")
            if not (box[0] < box[2] and box[1] < box[3]):
                raise ValueError(f"{path}: frame {name}: {box!r} is empty (x0 < x1, y0 < y1)")
            boxes[name].append(Box(*box))
    return boxes
