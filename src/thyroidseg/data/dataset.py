"""`ThyroidDataset`: thyroid ultrasound frames and nodule masks, ready for a training loop.

The dataset reads any layout of `thyroidseg.data.layouts` (detected automatically, or chosen
with ``layout=``), checks every image/mask pair, preprocesses the frames at network size
and, by default, caches them; ``ds.groups`` feeds the leakage-safe splits of
`thyroidseg.data.splits`.

Mask rule (one place, `read_binary_mask`): a pixel is nodule iff its value is
non-zero in a lossless mask (PNG, BMP, TIFF), and iff its value is ``> 127`` in a JPEG mask,
whose compression leaves grey values around edges and in the background. A lossless mask
with more than two distinct values is an error (it is not a binary mask; pass
``mask_threshold`` to binarise it on purpose).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset
from typing_extensions import Self

from thyroidseg._checks import PathLike
from thyroidseg._progress import Progress
from thyroidseg.data.layouts import LAYOUTS, Layout, _Item, _rasterise, _scan, detect_layout
from thyroidseg.io.files import check_mask_threshold, read_binary_mask, read_image
from thyroidseg.preprocessing.geometry import check_size, resize, resize_mask
from thyroidseg.preprocessing.intensity import to_gray_uint8
from thyroidseg.preprocessing.pipeline import DEFAULT_SIZE, to_unit_range
from thyroidseg.preprocessing.pipeline import preprocess as preprocess_frame

__all__ = [
    "GroupBy",
    "PreprocessFn",
    "PreprocessedLike",
    "ThyroidDataset",
    "Transform",
    "describe_transform",
    "read_binary_mask",
]

_MAX_LISTED = 20  # problems shown in one error message; the rest are counted


class PreprocessedLike(Protocol):
    """What a ``preprocess`` callable returns (see `thyroidseg.preprocessing.preprocess`)."""

    @property
    def image(self) -> np.ndarray:
        """``uint8`` ``(H, W)`` frame at network size."""
        ...

    def mask_to_network(self, mask: np.ndarray) -> np.ndarray:
        """Map an original-size ``{0, 1}`` mask to the network frame (nearest neighbour)."""
        ...


PreprocessFn = Callable[[np.ndarray], PreprocessedLike]
Transform = Callable[..., Mapping[str, Any]]
GroupBy = str | Callable[[str, Mapping[str, str]], Hashable]


def _listing(problems: Sequence[str]) -> str:
    """The first problems, one per line, and a count of the rest."""
    shown = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{shown}{more}"


def _handle_problems(problems: Sequence[str], on_invalid: str, root: Path) -> None:
    """Raise (``on_invalid="raise"``) or warn (``"skip"``) with the list of problems."""
    if not problems:
        return
    message = f"{root}: {len(problems)} invalid item(s):\n  {_listing(problems)}"
    if on_invalid == "raise":
        raise ValueError(message + "\n(pass on_invalid='skip' to leave them out with a warning)")
    warnings.warn(message + "\n(left out because on_invalid='skip')", stacklevel=3)


# --------------------------------------------------------------------------- preprocessing


class _Resized:
    """``preprocess=None``: the frame stretched to ``size`` (area / bilinear), masks nearest."""

    def __init__(self, image: np.ndarray, size: tuple[int, int]) -> None:
        self.size = size
        self.image = resize(to_gray_uint8(image), size, "stretch")

    def mask_to_network(self, mask: np.ndarray) -> np.ndarray:
        return resize_mask(mask, self.size)


def _describe_preprocess(function: PreprocessFn) -> dict[str, Any]:
    """JSON-ready description: the library's preprocess with its options, or a name."""
    if isinstance(function, functools.partial) and function.func is preprocess_frame:
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in function.keywords.items()}
        return {"preprocess": "default", "preprocess_options": options}
    if isinstance(function, functools.partial) and function.func is _Resized:
        return {"preprocess": "resize"}
    name = getattr(function, "__qualname__", type(function).__qualname__)
    return {"preprocess": f"custom: {name}"}


def describe_transform(transform: Transform) -> dict[str, Any] | str:
    """A transform as a checkpoint stores it: its ``config`` (an `Augment`'s settings), else
    its class name."""
    settings = getattr(transform, "config", None)
    return dict(settings) if isinstance(settings, Mapping) else type(transform).__name__


# --------------------------------------------------------------------------- dataset


@dataclass
class _Store:
    """What views of one dataset share: the items and the cached network-size frames."""

    root: Path
    layout: str
    items: list[_Item]
    groups: list[str]
    size: tuple[int, int]
    preprocess: PreprocessFn
    config: dict[str, Any]
    images: np.ndarray | None = None  # (N, H, W) uint8 when cached
    masks: np.ndarray | None = None  # (N, H, W) uint8 {0, 1} when cached

    def load_original(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        item = self.items[i]
        image = read_image(item.image)
        if item.mask is None:
            mask = _rasterise(item.polygons, image.shape[:2])
            if not mask.any():
                raise ValueError(f"{item.image}: its polygons lie outside the image")
            return image, mask
        mask = read_binary_mask(item.mask, threshold=self.config["mask_threshold"])
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"{item.mask}: mask of shape (H, W) = {mask.shape} but its image "
                f"{item.image.name} is {image.shape[:2]}"
            )
        return image, mask

    def load_preprocessed(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.images is not None and self.masks is not None:
            return self.images[i], self.masks[i]
        image, mask = self.load_original(i)
        try:
            result = self.preprocess(image)
        except ValueError as error:
            raise ValueError(f"{self.items[i].image}: preprocessing failed: {error}") from error
        net_image, net_mask = result.image, result.mask_to_network(mask)
        if net_image.shape != self.size or net_image.dtype != np.uint8:
            raise ValueError(
                f"{self.items[i].image}: preprocess returned {net_image.dtype} "
                f"{net_image.shape}, expected uint8 {self.size}"
            )
        if net_mask.shape != self.size:
            raise ValueError(f"{self.items[i].image}: preprocessed mask is {net_mask.shape}")
        return net_image, (net_mask != 0).astype(np.uint8)


class ThyroidDataset(Dataset):
    """Thyroid ultrasound frames with nodule masks, read from any supported layout.

    ``ds[i]`` is a dict:

    - ``"image"``: ``float32`` tensor ``(1, H, W)``, the preprocessed frame divided by 255,
      so in ``[0, 1]`` (augmentations keep it there);
    - ``"mask"``: ``int64`` tensor ``(H, W)`` with values ``{0, 1}`` (1 = nodule);
    - ``"name"``: file stem; ``"group"``: the leak group (see ``group_by``);
    - ``"meta"``: ``dict[str, str]`` of what the layout knows (DDTI: ``leak_group``,
      ``tirads``, ``composition``...; TN-SCUI: ``cate``); empty when nothing is known.

    Parameters
    ----------
    root
        Dataset folder.
    layout
        ``"auto"`` (default) detects it with `detect_layout`; else one of
        `LAYOUTS`.
    split
        TN3K only: ``"trainval"`` (default), ``"test"``, ``"train:<k>"`` or ``"val:<k>"``
        (fold ``k`` of ``tn3k-trainval-fold<k>.json``; ``"train"`` means fold 0).
    size
        Network frame ``(H, W)``, default `thyroidseg.preprocessing.DEFAULT_SIZE` (128 x 128).
    preprocess
        ``"default"``: `thyroidseg.preprocessing.preprocess` at ``size`` with its default
        settings (crop to the scan region, remove burned-in marks, letterbox, CLAHE,
        median filter). ``None``: only convert to 8-bit grey
        (`thyroidseg.preprocessing.to_gray_uint8`) and resize (bilinear image, nearest
        mask). Or any callable ``image -> obj`` where ``obj.image`` is the ``uint8``
        ``size`` frame and ``obj.mask_to_network(mask)`` maps the original mask onto it,
        e.g. ``functools.partial(preprocess, size=size, equalization="global")``. It gets
        the image as stored (see `load_original`).
    transform
        Called as ``transform(image=image, mask=mask)`` with the ``float32`` ``(H, W)``
        image in ``[0, 1]`` and the ``uint8`` ``{0, 1}`` mask, returning a mapping with
        ``"image"`` and ``"mask"`` (the albumentations convention, so
        `thyroidseg.data.augment.Augment` or an ``albumentations.Compose`` fit).
    cache
        ``True`` (default): decode and preprocess every frame once, now, and keep them as
        ``uint8`` arrays (``2 * N * H * W`` bytes; 48 MB for 365 frames at 256x256). All
        unreadable files and size mismatches are found at once, and DataLoader workers
        use the cache instead of filling one each (forked workers, the Linux default,
        share its memory). ``False``: the same checks run now, over every frame, but
        nothing is kept; each frame is read and preprocessed again on every access (for
        data sets larger than memory). Either way, ``on_invalid="skip"`` leaves out the
        same items, before training starts.
    mask_threshold
        ``None`` (default): the mask rule of `read_binary_mask`. A number: pixel is
        nodule iff ``value > mask_threshold``.
    group_by
        Leak group of each item. ``None`` (default): metadata ``leak_group``, else
        ``case_id``, else the file stem (with a warning when no two items share a group:
        the splits then cannot keep related images together). A string: that metadata
        column. A callable ``(name, meta) -> key``.
    on_invalid
        ``"raise"`` (default): any unpaired file, empty or truncated annotation,
        unreadable file or size mismatch raises one ``ValueError`` that lists them all.
        ``"skip"``: leave those items out and warn with the same list.
    progress
        Progress bar while caching or checking: ``None`` draws it on a terminal only,
        ``False`` never.

    Examples
    --------
    >>> import tempfile
    >>> from thyroidseg.data.synthetic import write_synthetic_dataset
    >>> root = write_synthetic_dataset(tempfile.mkdtemp(), 4, size=(64, 64))
    >>> ds = ThyroidDataset(root, size=(32, 32), preprocess=None, progress=False)
    >>> len(ds), ds.layout
    (4, 'folder')
    >>> item = ds[0]
    >>> item["image"].shape, item["image"].dtype, item["mask"].shape, item["mask"].dtype
    (torch.Size([1, 32, 32]), torch.float32, torch.Size([32, 32]), torch.int64)
    """

    def __init__(
        self,
        root: PathLike,
        *,
        layout: Layout | Literal["auto"] = "auto",
        split: str | None = None,
        size: tuple[int, int] = DEFAULT_SIZE,
        preprocess: PreprocessFn | Literal["default"] | None = "default",
        transform: Transform | None = None,
        cache: bool = True,
        mask_threshold: float | None = None,
        group_by: GroupBy | None = None,
        on_invalid: Literal["raise", "skip"] = "raise",
        progress: bool | None = None,
    ) -> None:
        root = Path(root)
        if layout == "auto":
            layout = detect_layout(root)
        elif layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose 'auto' or one of {LAYOUTS}")
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        size = check_size(size)
        mask_threshold = check_mask_threshold(mask_threshold)
        frame_preprocess: Callable[[np.ndarray], PreprocessedLike]
        if preprocess == "default":
            frame_preprocess = functools.partial(preprocess_frame, size=size)
        elif preprocess is None:
            frame_preprocess = functools.partial(_Resized, size=size)
        elif callable(preprocess):
            frame_preprocess = preprocess
        else:
            raise TypeError(f"preprocess must be 'default', None or a callable, got {preprocess!r}")

        scan = _scan(root, layout, split)
        if scan.notes:
            warnings.warn(f"{root}:\n  {_listing(scan.notes)}", stacklevel=2)
        _handle_problems(scan.problems, on_invalid, root)
        if not scan.items:
            raise ValueError(f"{root}: no usable image/mask pairs (layout {layout!r})")
        groups = [_group_of(it, group_by) for it in scan.items]
        grouped = any(it.meta.get("leak_group") or it.meta.get("case_id") for it in scan.items)
        if group_by is None and not grouped and len(groups) > 1:
            warnings.warn(
                f"{root}: no leak groups found (no 'leak_group' or case id in the metadata), "
                "so every image is its own group and group_kfold cannot keep near-duplicates "
                "(augmented copies, frames of one patient) on one side. Pass group_by=... "
                "or add a leak_group column to metadata.csv if such images exist.",
                stacklevel=2,
            )
        config = {
            "layout": layout,
            "size": list(size),
            **_describe_preprocess(frame_preprocess),
            "mask_threshold": mask_threshold,
        }
        store = _Store(root, layout, scan.items, groups, size, frame_preprocess, config)
        _check_items(store, on_invalid, progress, keep=cache)
        self._init_view(store, np.arange(len(store.items)), transform)

    def _init_view(self, store: _Store, indices: np.ndarray, transform: Transform | None) -> None:
        self._store = store
        self._indices = indices
        self.transform = transform

    def _view(self, indices: np.ndarray, transform: Transform | None) -> Self:
        view = object.__new__(type(self))
        view._init_view(self._store, indices, transform)
        return view

    # -- public API -----------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The dataset folder."""
        return self._store.root

    @property
    def layout(self) -> str:
        """The layout that was read (one of `LAYOUTS`)."""
        return self._store.layout

    @property
    def size(self) -> tuple[int, int]:
        """Network frame ``(H, W)``."""
        return self._store.size

    @property
    def names(self) -> list[str]:
        """File stem of each item, in index order."""
        return [self._store.items[i].name for i in self._indices]

    @property
    def groups(self) -> list[str]:
        """Leak group of each item (pass to `group_kfold`)."""
        return [self._store.groups[i] for i in self._indices]

    @property
    def meta(self) -> list[dict[str, str]]:
        """Metadata of each item (copies)."""
        return [dict(self._store.items[i].meta) for i in self._indices]

    @property
    def config(self) -> dict[str, Any]:
        """How frames are prepared, JSON-ready (stored in checkpoints by the Trainer).

        ``{"layout", "size": [H, W], "preprocess": "default" | "resize" | "custom: <name>",
        "mask_threshold"}``, plus ``"preprocess_options"`` (the keyword arguments of
        `thyroidseg.preprocessing.preprocess`) when the library's preprocessing is used,
        also through ``functools.partial(preprocess, size=..., ...)``, and, for a view with a
        transform, ``"transform"``: its ``config`` (an `Augment`'s settings) or its class name.
        """
        config = dict(self._store.config)
        if self.transform is not None:
            config["transform"] = describe_transform(self.transform)
        return config

    @property
    def cached(self) -> bool:
        """Whether frames are held in memory."""
        return self._store.images is not None

    def subset(self, indices: Sequence[int] | np.ndarray) -> Self:
        """A view of the items at ``indices`` (sharing the cache and the transform).

        The view has the type of ``self``: a subclass of `ThyroidDataset` gets its own class.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"subset indices out of range for a dataset of {len(self)} items")
        return self._view(self._indices[indices], self.transform)

    def with_transform(self, transform: Transform | None) -> Self:
        """The same items with another transform, sharing the cache (train vs. val)."""
        return self._view(self._indices, transform)

    def set_epoch(self, epoch: int) -> None:
        """Pass the starting epoch on to the transform, if it has ``set_epoch``.

        `Augment` has: an interrupted and resumed run then draws
        the same augmentations. `thyroidseg.training.Trainer` calls this.
        """
        set_transform_epoch = getattr(self.transform, "set_epoch", None)
        if set_transform_epoch is not None:
            set_transform_epoch(epoch)

    def load_preprocessed(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed ``uint8`` image and ``{0, 1}`` mask at network size, no transform.

        The counterpart of `load_original`: what ``preprocess`` made of it (from the cache
        when there is one).
        """
        return self._store.load_preprocessed(int(self._indices[index]))

    def load_original(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image as stored (what ``preprocess`` receives) and its checked ``{0, 1}`` mask.

        The image is ``(H, W)`` grey or ``(H, W, 3)`` BGR, 8- or 16-bit (colour overlays
        are kept for the preprocessing to find); the mask is ``uint8`` ``(H, W)``.
        """
        return self._store.load_original(int(self._indices[index]))

    def foreground_fractions(self) -> np.ndarray:
        """Nodule area / frame area of each item at network size (for `size_tertiles`)."""
        return np.array(
            [self.load_preprocessed(i)[1].mean() for i in range(len(self))], dtype=np.float64
        )

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        store_index = int(self._indices[index])
        image, mask = self._store.load_preprocessed(store_index)
        image = to_unit_range(image)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
        mask_t = torch.as_tensor(np.ascontiguousarray(mask)).to(torch.int64)
        if image_t.ndim == 2:
            image_t = image_t.unsqueeze(0)
        if image_t.shape[1:] != mask_t.shape:
            raise ValueError(
                f"transform returned image {tuple(image_t.shape)} and mask {tuple(mask_t.shape)}"
            )
        item = self._store.items[store_index]
        return {
            "image": image_t,
            "mask": mask_t,
            "name": item.name,
            "group": self._store.groups[store_index],
            "meta": dict(item.meta),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, layout={self.layout!r}, "
            f"n={len(self)}, size={self.size}, cached={self.cached})"
        )


def _group_of(item: _Item, group_by: GroupBy | None) -> str:
    if group_by is None:
        return item.meta.get("leak_group") or item.meta.get("case_id") or item.name
    if isinstance(group_by, str):
        if not item.meta.get(group_by):
            raise ValueError(f"{item.image}: no metadata value {group_by!r} to group by")
        return item.meta[group_by]
    return str(group_by(item.name, dict(item.meta)))


def _check_items(store: _Store, on_invalid: str, progress: bool | None, *, keep: bool) -> None:
    """Decode and preprocess every item once: drop (or raise for) the bad ones.

    With ``keep``, the frames fill ``store.images``/``store.masks`` (the cache); without,
    they are checked and let go, so that ``cache=False`` leaves out exactly the items
    ``cache=True`` would, before training starts.
    """
    n, (height, width) = len(store.items), store.size
    images = np.empty((n if keep else 0, height, width), np.uint8)
    masks = np.empty((n if keep else 0, height, width), np.uint8)
    ok = np.ones(n, bool)
    problems = []
    desc = f"{'caching' if keep else 'checking'} {store.root.name}"
    for i in Progress(range(n), desc=desc, enabled=progress):
        try:
            image, mask = store.load_preprocessed(i)
        except (OSError, ValueError) as error:
            problems.append(str(error))
            ok[i] = False
            continue
        if keep:
            images[i], masks[i] = image, mask
    _handle_problems(problems, on_invalid, store.root)
    if not ok.any():
        raise ValueError(f"{store.root}: no readable image/mask pairs")
    kept = np.flatnonzero(ok)
    store.items = [store.items[i] for i in kept]
    store.groups = [store.groups[i] for i in kept]
    if keep:
        store.images, store.masks = images[kept], masks[kept]
