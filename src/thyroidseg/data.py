"""Thyroid ultrasound datasets: layout readers, `ThyroidDataset`, leakage-safe splits.

One dataset class reads the folder layouts that public thyroid data sets ship in
(detected automatically, or chosen with ``layout=``):

``"folder"``
    ``images/`` + ``masks/`` paired by file stem (any extension of
    `thyroidseg._io.IMAGE_EXTENSIONS`), and optionally ``metadata.csv`` next to them
    with a ``stem`` column (the DDTI development folder has one, with ``leak_group``).
``"ddti-xml"``
    DDTI as originally distributed: ``<case>.xml`` + ``<case>_<k>.jpg``. Each XML holds the
    clinical fields and one ``<mark>`` per image whose ``<svg>`` text is a JSON list of
    polygons; the mask is the filled union of those polygons.
``"tn-scui"``
    TN-SCUI 2020: ``image/``, ``mask/`` and ``train.csv`` (columns ``ID``, ``CATE``).
``"tn3k"``
    TN3K: ``trainval-image/``, ``trainval-mask/``, ``test-image/``, ``test-mask/`` and
    ``tn3k-trainval-fold<k>.json`` (``{"train": [...], "val": [...]}``).

Mask rule (one place, `read_binary_mask`): a pixel is nodule iff its value is
non-zero in a lossless mask (PNG, BMP, TIFF), and iff its value is ``> 127`` in a JPEG mask,
whose compression leaves grey values around edges and in the background. A lossless mask
with more than two distinct values is an error (it is not a binary mask; pass
``mask_threshold`` to binarise it on purpose).

Splits (`group_kfold`, `train_val_test_split`) keep every *group* of images on
one side. Images of one patient, or pixel-identical copies under different case numbers,
are near-duplicates: putting one copy in training and another in testing lets a model be
scored on images it has memorised, which inflates every metric.
"""

from __future__ import annotations

import csv
import functools
import json
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from thyroidseg._io import PathLike, list_images, read_binary_mask, read_image
from thyroidseg._progress import Progress
from thyroidseg.preprocessing import _check_size, resize, resize_mask, to_gray_uint8
from thyroidseg.preprocessing import preprocess as preprocess_frame

__all__ = [
    "LAYOUTS",
    "ThyroidDataset",
    "detect_layout",
    "group_kfold",
    "read_binary_mask",
    "size_tertiles",
    "train_val_test_split",
]

Layout = Literal["folder", "ddti-xml", "tn-scui", "tn3k"]
LAYOUTS: tuple[str, ...] = ("folder", "ddti-xml", "tn-scui", "tn3k")
"""Layout names accepted by ``ThyroidDataset(layout=...)`` (plus ``"auto"``)."""

_MAX_LISTED = 20  # problems shown in one error message; the rest are counted


class PreprocessedLike(Protocol):
    """What a ``preprocess`` callable returns (see `thyroidseg.preprocessing.preprocess`)."""

    image: np.ndarray
    """``uint8`` ``(H, W)`` frame at network size."""

    def mask_to_network(self, mask: np.ndarray) -> np.ndarray:
        """Map an original-size ``{0, 1}`` mask to the network frame (nearest neighbour)."""
        ...


PreprocessFn = Callable[[np.ndarray], PreprocessedLike]
Transform = Callable[..., Mapping[str, Any]]
GroupBy = str | Callable[[str, Mapping[str, str]], Hashable]


# --------------------------------------------------------------------------- masks


def _rasterise(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Filled union of ``polygons`` (each ``(K, 2)`` int32 x, y) as a ``{0, 1}`` mask."""
    mask = np.zeros(shape, np.uint8)
    for polygon in polygons:  # one call each: a single call would XOR overlapping polygons
        cv2.fillPoly(mask, [polygon], 1)
    return mask


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True, eq=False)
class _Item:
    """One image and where its mask comes from (a file, or DDTI polygons)."""

    name: str
    image: Path
    mask: Path | None = None
    polygons: tuple[np.ndarray, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class _Scan:
    items: list[_Item]
    problems: list[str]  # "path: what is wrong", one per broken item or file


def detect_layout(root: PathLike) -> Layout:
    """Name the layout of ``root`` (see the module docstring for the four layouts).

    Raises
    ------
    FileNotFoundError
        ``root`` is not a directory.
    ValueError
        ``root`` matches none of the layouts; the message says what each needs.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folder"
    if (root / "trainval-image").is_dir() or (root / "test-image").is_dir():
        return "tn3k"
    if (root / "image").is_dir() and (root / "mask").is_dir():
        return "tn-scui"
    if any(root.glob("*.xml")):
        return "ddti-xml"
    raise ValueError(
        f"{root}: unknown dataset layout; expected images/ + masks/ (folder), "
        "<case>.xml + <case>_<k>.jpg (ddti-xml), image/ + mask/ + train.csv (tn-scui), "
        "or trainval-image/, trainval-mask/, test-image/, test-mask/ (tn3k)"
    )


def _pair_by_stem(
    images: Path, masks: Path, meta: Mapping[str, dict[str, str]] | None = None
) -> _Scan:
    """Pair ``images/<stem>.*`` with ``masks/<stem>.*``; unpaired files are problems."""
    image_files, mask_files = list_images(images), list_images(masks)
    problems = [f"{image_files[s]}: no mask in {masks}" for s in image_files.keys() - mask_files]
    problems += [f"{mask_files[s]}: no image in {images}" for s in mask_files.keys() - image_files]
    items = [
        _Item(stem, path, mask_files[stem], meta=dict(meta.get(stem, {})) if meta else {})
        for stem, path in image_files.items()
        if stem in mask_files
    ]
    return _Scan(items, sorted(problems))


def _read_csv(path: Path, key: str) -> dict[str, dict[str, str]]:
    """Rows of a CSV file keyed by column ``key`` (all values as stripped strings)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or key not in reader.fieldnames:
            raise ValueError(f"{path}: needs a {key!r} column, found {reader.fieldnames}")
        rows: dict[str, dict[str, str]] = {}
        for row in reader:
            values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            rows[values[key]] = values
    return rows


def _scan_folder(root: Path, split: str | None) -> _Scan:
    _no_split(split, "folder")
    meta_path = root / "metadata.csv"
    meta = _read_csv(meta_path, "stem") if meta_path.is_file() else None
    scan = _pair_by_stem(root / "images", root / "masks", meta)
    if meta is not None:
        scan.problems += [f"{it.image}: no row in {meta_path}" for it in scan.items if not it.meta]
    return scan


def _scan_tn_scui(root: Path, split: str | None) -> _Scan:
    _no_split(split, "tn-scui")
    labels_path = root / "train.csv"
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path}: TN-SCUI layout needs train.csv (ID, CATE)")
    labels = {
        Path(k).stem: {"cate": row.get("CATE", "")}
        for k, row in _read_csv(labels_path, "ID").items()
    }
    scan = _pair_by_stem(root / "image", root / "mask", labels)
    scan.problems += [f"{it.image}: no row in {labels_path}" for it in scan.items if not it.meta]
    return scan


def _scan_tn3k(root: Path, split: str | None) -> _Scan:
    """``split``: ``"trainval"`` (default), ``"test"``, or ``"train"``/``"val"`` of a fold.

    The fold is chosen as ``"train:<k>"``/``"val:<k>"`` (``k`` defaults to 0) and read from
    ``tn3k-trainval-fold<k>.json``, whose entries are image numbers (``12`` is ``0012.jpg``)
    or stems.
    """
    part, _, fold = (split or "trainval").partition(":")
    if part not in ("trainval", "test", "train", "val") or (fold and part in ("trainval", "test")):
        raise ValueError(
            f"TN3K split must be 'trainval', 'test', 'train[:k]' or 'val[:k]', got {split!r}"
        )
    folder = "test" if part == "test" else "trainval"
    scan = _pair_by_stem(root / f"{folder}-image", root / f"{folder}-mask")
    if part in ("train", "val"):
        fold_path = root / f"tn3k-trainval-fold{fold or 0}.json"
        try:
            wanted = json.loads(fold_path.read_text(encoding="utf-8"))[part]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{fold_path}: cannot read its {part!r} list ({error})") from error
        keys = {_tn3k_key(str(w)) for w in wanted}
        scan.items = [it for it in scan.items if _tn3k_key(it.name) in keys]
        missing = keys - {_tn3k_key(it.name) for it in scan.items}
        scan.problems += [f"{fold_path}: lists {m!r}, which has no image" for m in sorted(missing)]
    return scan


def _tn3k_key(stem: str) -> str:
    """``"0012"`` and ``12`` name the same TN3K image."""
    return str(int(stem)) if stem.isdigit() else stem


def _scan_ddti_xml(root: Path, split: str | None) -> _Scan:
    _no_split(split, "ddti-xml")
    image_files = list_images(root)
    items: list[_Item] = []
    problems: list[str] = []
    claimed: set[str] = set()
    for xml_path in sorted(root.glob("*.xml")):
        try:
            case = ElementTree.parse(xml_path).getroot()
        except ElementTree.ParseError as error:
            problems.append(f"{xml_path}: not readable XML ({error})")
            continue
        case_id = (case.findtext("number") or xml_path.stem).strip()
        clinical = {
            child.tag: (child.text or "").strip()
            for child in case
            if child.tag not in ("number", "mark")
        }
        polygons: dict[str, list[np.ndarray]] = {}
        invalid: set[str] = set()
        for mark in case.iter("mark"):
            stem = f"{case_id}_{(mark.findtext('image') or '').strip()}"
            try:
                polygons.setdefault(stem, []).extend(_parse_svg(mark.findtext("svg")))
            except ValueError as error:
                problems.append(f"{xml_path}: image {stem}: {error}")
                invalid.add(stem)
        claimed.update(polygons)
        for stem, shapes in sorted(polygons.items()):
            if stem in invalid:
                continue
            if stem not in image_files:
                problems.append(f"{xml_path}: annotates {stem}, which has no image in {root}")
                continue
            meta = {"case_id": case_id, "image_index": stem.rpartition("_")[2], **clinical}
            items.append(_Item(stem, image_files[stem], polygons=tuple(shapes), meta=meta))
    problems += [
        f"{path}: no <mark> in any XML file" for s, path in image_files.items() if s not in claimed
    ]
    return _Scan(sorted(items, key=lambda it: it.name), problems)


def _parse_svg(text: str | None) -> list[np.ndarray]:
    """Polygons of one DDTI ``<svg>`` text; ValueError for empty, truncated or bad JSON."""
    if text is None or not text.strip():
        raise ValueError("empty <svg> annotation")
    try:
        shapes = json.loads(text)
    except json.JSONDecodeError as error:
        message = f"truncated or malformed <svg> JSON ({error.msg} at char {error.pos})"
        raise ValueError(message) from None
    if not isinstance(shapes, list) or not shapes:
        raise ValueError("<svg> JSON is not a non-empty list of polygons")
    polygons = []
    for k, shape in enumerate(shapes):
        try:
            points = np.array([[p["x"], p["y"]] for p in shape["points"]], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"polygon {k} has no valid 'points' list ({error!r})") from error
        if len(points) < 3 or not np.isfinite(points).all():
            raise ValueError(f"polygon {k} has {len(points)} points or non-finite coordinates")
        polygons.append(np.round(points).astype(np.int32))
    return polygons


def _no_split(split: str | None, layout: str) -> None:
    if split is not None:
        raise ValueError(f"layout {layout!r} has no predefined splits; got split={split!r}")


_SCANNERS: dict[str, Callable[[Path, str | None], _Scan]] = {
    "folder": _scan_folder,
    "ddti-xml": _scan_ddti_xml,
    "tn-scui": _scan_tn_scui,
    "tn3k": _scan_tn3k,
}


def _handle_problems(problems: Sequence[str], on_invalid: str, root: Path) -> None:
    """Raise (``on_invalid="raise"``) or warn (``"skip"``) with the list of problems."""
    if not problems:
        return
    shown = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    message = f"{root}: {len(problems)} invalid item(s):\n  {shown}{more}"
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
                f"{item.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{item.image.name} is {image.shape[1]}x{image.shape[0]} (width x height)"
            )
        return image, mask

    def load_network(self, i: int) -> tuple[np.ndarray, np.ndarray]:
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
        Network frame ``(H, W)``, default ``(256, 256)``.
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
        `thyroidseg.augment.Augment` or an ``albumentations.Compose`` fit).
    cache
        ``True`` (default): decode and preprocess every frame once, now, and keep them as
        ``uint8`` arrays (``2 * N * H * W`` bytes; 48 MB for 365 frames at 256x256). All
        unreadable files and size mismatches are found at once, and DataLoader workers
        use the cache instead of filling one each (forked workers, the Linux default,
        share its memory). ``False``: read and preprocess each frame on every access.
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
        Progress bar while caching: ``None`` draws it on a terminal only, ``False`` never.

    Examples
    --------
    >>> import tempfile
    >>> from thyroidseg.synthetic import write_synthetic_dataset
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
        layout: Literal["auto", "folder", "ddti-xml", "tn-scui", "tn3k"] = "auto",
        split: str | None = None,
        size: tuple[int, int] = (256, 256),
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
        elif layout not in _SCANNERS:
            raise ValueError(f"unknown layout {layout!r}; choose 'auto' or one of {LAYOUTS}")
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        size = _check_size(size)
        if preprocess == "default":
            preprocess = functools.partial(preprocess_frame, size=size)
        elif preprocess is None:
            preprocess = functools.partial(_Resized, size=size)
        elif not callable(preprocess):
            raise TypeError(f"preprocess must be 'default', None or a callable, got {preprocess!r}")

        scan = _SCANNERS[layout](root, split)
        _handle_problems(scan.problems, on_invalid, root)
        if not scan.items:
            raise ValueError(f"{root}: no usable image/mask pairs (layout {layout!r})")
        groups = [_group_of(it, group_by) for it in scan.items]
        if group_by is None and len(set(groups)) == len(groups) > 1:
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
            **_describe_preprocess(preprocess),
            "mask_threshold": mask_threshold,
        }
        store = _Store(root, layout, scan.items, groups, size, preprocess, config)
        if cache:
            store = _fill_cache(store, on_invalid, progress)
        self._init_view(store, np.arange(len(store.items)), transform)

    def _init_view(self, store: _Store, indices: np.ndarray, transform: Transform | None) -> None:
        self._store = store
        self._indices = indices
        self.transform = transform

    def _view(self, indices: np.ndarray, transform: Transform | None) -> ThyroidDataset:
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
        also through ``functools.partial(preprocess, size=..., ...)``.
        """
        return dict(self._store.config)

    @property
    def cached(self) -> bool:
        """Whether frames are held in memory."""
        return self._store.images is not None

    def subset(self, indices: Sequence[int] | np.ndarray) -> ThyroidDataset:
        """A view of the items at ``indices`` (sharing the cache and the transform)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"subset indices out of range for a dataset of {len(self)} items")
        return self._view(self._indices[indices], self.transform)

    def with_transform(self, transform: Transform | None) -> ThyroidDataset:
        """The same items with another transform, sharing the cache (train vs. val)."""
        return self._view(self._indices, transform)

    def set_epoch(self, epoch: int) -> None:
        """Pass the starting epoch on to the transform, if it has ``set_epoch``.

        `Augment` has: an interrupted and resumed run then draws
        the same augmentations. `thyroidseg.training.Trainer` calls this.
        """
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed ``uint8`` image and ``{0, 1}`` mask at network size, no transform."""
        return self._store.load_network(int(self._indices[index]))

    def load_original(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image as stored (what ``preprocess`` receives) and its checked ``{0, 1}`` mask.

        The image is ``(H, W)`` grey or ``(H, W, 3)`` BGR, 8- or 16-bit (colour overlays
        are kept for the preprocessing to find); the mask is ``uint8`` ``(H, W)``.
        """
        return self._store.load_original(int(self._indices[index]))

    def foreground_fractions(self) -> np.ndarray:
        """Nodule area / frame area of each item at network size (for `size_tertiles`)."""
        return np.array([self.frame(i)[1].mean() for i in range(len(self))], dtype=np.float64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        store_index = int(self._indices[index])
        image, mask = self._store.load_network(store_index)
        image = image.astype(np.float32) / 255.0
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


def _fill_cache(store: _Store, on_invalid: str, progress: bool | None) -> _Store:
    """Decode and preprocess every item into ``store.images``/``masks``; drop or raise."""
    n, (height, width) = len(store.items), store.size
    images = np.empty((n, height, width), np.uint8)
    masks = np.empty((n, height, width), np.uint8)
    ok = np.ones(n, bool)
    problems = []
    for i in Progress(range(n), desc=f"caching {store.root.name}", enabled=progress):
        try:
            images[i], masks[i] = store.load_network(i)
        except (OSError, ValueError) as error:
            problems.append(str(error))
            ok[i] = False
    _handle_problems(problems, on_invalid, store.root)
    if not ok.any():
        raise ValueError(f"{store.root}: no readable image/mask pairs")
    keep = np.flatnonzero(ok)
    store.items = [store.items[i] for i in keep]
    store.groups = [store.groups[i] for i in keep]
    store.images, store.masks = images[keep], masks[keep]
    return store


# --------------------------------------------------------------------------- splits


def size_tertiles(fractions: Sequence[float] | np.ndarray) -> np.ndarray:
    """Label each nodule small (0), medium (1) or large (2) by the tertiles of its area.

    The TN-SCUI 2020 winners stratified their folds this way so that every fold sees
    small and large nodules alike. Ties at a cut go to the lower class.

    Parameters
    ----------
    fractions
        Nodule area per item (pixels or fraction of the frame), finite.

    Examples
    --------
    >>> size_tertiles([0.01, 0.30, 0.05, 0.20, 0.02, 0.10]).tolist()
    [0, 2, 1, 2, 0, 1]
    """
    values = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("size_tertiles needs a non-empty list of finite areas")
    cuts = np.quantile(values, [1 / 3, 2 / 3])
    return np.searchsorted(cuts, values, side="left").astype(np.int64)


def group_kfold(
    groups: Sequence[Hashable],
    n_splits: int = 5,
    *,
    stratify: Sequence[Hashable] | None = None,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K-fold cross-validation where each group falls in exactly one validation fold.

    Parameters
    ----------
    groups
        Group key per item (e.g. `ThyroidDataset.groups`): items sharing a key are
        never split between training and validation.
    n_splits
        Number of folds, at least 2 and at most the number of groups.
    stratify
        Optional label per item (e.g. `size_tertiles`); each group takes its most
        common label and the folds get each label in proportion.
    seed
        Same seed, same folds.

    Returns
    -------
    list of (train_indices, val_indices)
        Sorted ``int64`` arrays; the validation parts partition ``range(len(groups))``.

    Examples
    --------
    >>> folds = group_kfold(["a", "a", "b", "c", "c", "d"], n_splits=2, seed=0)
    >>> [sorted(set(val)) == sorted(val) for _, val in folds]
    [True, True]
    >>> sorted(np.concatenate([val for _, val in folds]).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    if not isinstance(n_splits, int) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    part = _assign_groups(groups, np.full(n_splits, 1.0 / n_splits), stratify, seed)
    everything = np.arange(len(part))
    return [(everything[part != k], everything[part == k]) for k in range(n_splits)]


def train_val_test_split(
    groups: Sequence[Hashable],
    fractions: Sequence[float] = (0.7, 0.2, 0.1),
    *,
    stratify: Sequence[Hashable] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split items into train/validation/test with no group on two sides.

    Parameters
    ----------
    groups, stratify, seed
        As in `group_kfold`.
    fractions
        Target share of *items* for train, validation and test (non-negative, sum 1; a
        zero gives an empty part). Groups are indivisible, so shares are approximate.

    Returns
    -------
    (train_indices, val_indices, test_indices)
        Sorted ``int64`` arrays that partition ``range(len(groups))``.

    Examples
    --------
    >>> train, val, test = train_val_test_split([f"g{i // 2}" for i in range(20)])
    >>> len(train), len(val), len(test)
    (14, 4, 2)
    """
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.shape != (3,) or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    part = _assign_groups(groups, shares, stratify, seed)
    everything = np.arange(len(part))
    train, val, test = (everything[part == k] for k in range(3))
    return train, val, test


def _assign_groups(
    groups: Sequence[Hashable],
    shares: np.ndarray,
    stratify: Sequence[Hashable] | None,
    seed: int,
) -> np.ndarray:
    """Part index per item: whole groups, greedily, so each stratum follows ``shares``.

    Groups are visited stratum by stratum, in a seeded random order with larger groups
    first, and each joins the part furthest below its target share:
    ``argmin_k (count_k[stratum] + group_size) / share_k`` (ties: fewer items overall,
    then lower ``k``). Parts with a zero share get nothing; when only as many groups are
    left as parts are still empty, those groups go to the empty parts.
    """
    keys = list(groups)
    if not keys:
        raise ValueError("cannot split an empty list of groups")
    group_ids, group_of_item = np.unique(np.array([str(k) for k in keys]), return_inverse=True)
    n_groups = len(group_ids)
    wanted = int((shares > 0).sum())
    if n_groups < wanted:
        raise ValueError(f"{n_groups} group(s) cannot fill {wanted} non-empty parts")
    sizes = np.bincount(group_of_item, minlength=n_groups)
    if stratify is None:
        strata = np.zeros(n_groups, np.int64)
    else:
        labels = list(stratify)
        if len(labels) != len(keys):
            raise ValueError(f"stratify has {len(labels)} labels for {len(keys)} items")
        strata = _group_labels(group_of_item, labels, n_groups)

    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]  # big groups first, random ties
    order = np.concatenate([order[strata[order] == s] for s in np.unique(strata)])
    positive = shares > 0
    share_or_one = np.where(positive, shares, 1.0)
    counts = np.zeros((int(strata.max()) + 1, len(shares)))
    totals = np.zeros(len(shares))
    part_of_group = np.empty(n_groups, np.int64)
    for visited, g in enumerate(order):
        fill = np.where(positive, (counts[strata[g]] + sizes[g]) / share_or_one, np.inf)
        empty = positive & (totals == 0)
        if n_groups - visited <= empty.sum():  # just enough groups left for the empty parts
            fill = np.where(empty, fill, np.inf)
        best = np.lexsort((np.arange(len(shares)), totals / share_or_one, fill))[0]
        part_of_group[g] = best
        counts[strata[g], best] += sizes[g]
        totals[best] += sizes[g]
    return part_of_group[group_of_item]


def _group_labels(group_of_item: np.ndarray, labels: list[Hashable], n_groups: int) -> np.ndarray:
    """Most common label of each group (ties: the label that sorts first), as integers."""
    label_ids, label_of_item = np.unique(np.array([str(v) for v in labels]), return_inverse=True)
    per_group = np.zeros((n_groups, len(label_ids)), np.int64)
    np.add.at(per_group, (group_of_item, label_of_item), 1)
    return per_group.argmax(axis=1)
