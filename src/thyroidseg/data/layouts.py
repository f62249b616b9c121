"""Dataset layouts: find the image/mask pairs of the folders public thyroid data sets ship in.

`detect_layout` names the layout of a folder and each reader lists its items (an image and
where its mask comes from) and every problem it finds, without decoding masks;
`thyroidseg.data.ThyroidDataset` turns the items into training samples.

``"folder"``
    ``images/`` + ``masks/`` paired by file stem (any extension of
    `thyroidseg.io.files.IMAGE_EXTENSIONS`), and optionally ``metadata.csv`` next to them
    with a ``stem`` column (the DDTI development folder has one, with ``leak_group``).
``"ddti-xml"``
    DDTI as originally distributed: ``<case>.xml`` + ``<case>_<k>.jpg``. Each XML holds the
    clinical fields and one ``<mark>`` per image whose ``<svg>`` text is a JSON list of
    polygons; the mask is the filled union of those polygons. A "polygon" of fewer than 3
    points (an annotation slip found in DDTI) is dropped with a warning; the frame is kept.
    Frames with pixel-identical content under different case numbers are found by a hash
    of their decoded pixels, and their cases are joined into one leak group.
``"tn-scui"``
    TN-SCUI 2020: ``image/``, ``mask/`` and ``train.csv`` (columns ``ID``, ``CATE``).
``"tn3k"``
    TN3K: ``trainval-image/``, ``trainval-mask/``, ``test-image/``, ``test-mask/`` and
    ``tn3k-trainval-fold<k>.json`` (``{"train": [...], "val": [...]}``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.io.files import list_images, read_image

__all__ = ["LAYOUTS", "Layout", "detect_layout"]

Layout = Literal["folder", "ddti-xml", "tn-scui", "tn3k"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
"""Layout names accepted by ``ThyroidDataset(layout=...)`` (plus ``"auto"``)."""


def _rasterise(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Filled union of ``polygons`` (each ``(K, 2)`` int32 x, y) as a ``{0, 1}`` mask."""
    mask = np.zeros(shape, np.uint8)
    for polygon in polygons:  # one call each: a single call would XOR overlapping polygons
        cv2.fillPoly(mask, [polygon], 1)
    return mask


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
    notes: list[str] = field(default_factory=list)  # repaired slips and merges, for a warning


def _scan(root: Path, layout: str, split: str | None) -> _Scan:
    """The items and problems of ``root`` read as ``layout`` (one of `LAYOUTS`)."""
    return _SCANNERS[layout](root, split)


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
    """Rows of a CSV file keyed by column ``key`` (all values as stripped strings).

    A file that is not UTF-8 text, not CSV, lacks the ``key`` column, gives a row no key
    or gives two rows the same key is a ``ValueError`` naming the file and the line.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, strict=True)
            fields = [name.strip() for name in reader.fieldnames or []]
            if key not in fields:
                raise ValueError(f"{path}: needs a {key!r} column, found {fields}")
            rows: dict[str, dict[str, str]] = {}
            for row in reader:
                values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                line = reader.line_num
                if not values.get(key):
                    raise ValueError(f"{path}, line {line}: no {key!r} value")
                if values[key] in rows:
                    raise ValueError(f"{path}, line {line}: {key} {values[key]!r} appears twice")
                rows[values[key]] = values
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise ValueError(f"{path}: not a readable CSV file ({error})") from None
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
    notes: list[str] = []
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
                shapes, dropped = _parse_svg(mark.findtext("svg"))
            except ValueError as error:
                problems.append(f"{xml_path}: image {stem}: {error}")
                invalid.add(stem)
                continue
            polygons.setdefault(stem, []).extend(shapes)
            notes += [f"{xml_path}: image {stem}: {slip}; dropped" for slip in dropped]
        claimed.update(polygons)
        claimed.update(invalid)
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
    items, unreadable, merges = _join_duplicate_cases(sorted(items, key=lambda it: it.name))
    return _Scan(items, problems + unreadable, notes + merges)


def _parse_svg(text: str | None) -> tuple[list[np.ndarray], list[str]]:
    """Polygons of one DDTI ``<svg>`` text, and what was dropped from it.

    A "polygon" of fewer than 3 points encloses nothing: it is dropped and described in
    the second list. ValueError for empty, truncated or bad JSON, non-finite coordinates,
    or no polygon of 3 or more points.
    """
    if text is None or not text.strip():
        raise ValueError("empty <svg> annotation")
    try:
        shapes = json.loads(text)
    except json.JSONDecodeError as error:
        message = f"truncated or malformed <svg> JSON ({error.msg} at char {error.pos})"
        raise ValueError(message) from None
    if not isinstance(shapes, list) or not shapes:
        raise ValueError("<svg> JSON is not a non-empty list of polygons")
    polygons, dropped = [], []
    for k, shape in enumerate(shapes):
        try:
            points = np.array([[p["x"], p["y"]] for p in shape["points"]], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"polygon {k} has no valid 'points' list ({error!r})") from error
        if not np.isfinite(points).all():
            raise ValueError(f"polygon {k} has non-finite coordinates")
        if len(points) < 3:
            dropped.append(f"polygon {k} has {len(points)} point(s), fewer than 3")
            continue
        polygons.append(np.round(points).astype(np.int32))
    if not polygons:
        raise ValueError(f"no polygon of 3 or more points ({'; '.join(dropped)})")
    return polygons, dropped


def _join_duplicate_cases(items: list[_Item]) -> tuple[list[_Item], list[str], list[str]]:
    """Join the cases of pixel-identical frames into one leak group.

    Each frame is decoded and hashed (SHA-256 of its shape, dtype and pixels). A frame whose
    hash was seen before gets ``meta["exact_duplicate_of"]`` (the first frame's name); when
    the two belong to different cases, the cases are joined (union-find), and every item of
    a joined case gets ``meta["leak_group"]``: the smallest case id of its joined set.

    Returns
    -------
    (items, problems, notes)
        The readable items (new metadata where changed); one problem per unreadable image;
        one note per merge of two case groups, plus one summary note when any were made.
    """
    readable, problems = [], []
    first_of: dict[str, _Item] = {}
    parent: dict[str, str] = {}
    merges: list[str] = []

    def root_of(case: str) -> str:
        while parent.get(case, case) != case:
            case = parent[case]
        return case

    for item in items:
        try:
            image = read_image(item.image)
        except (OSError, ValueError) as error:
            problems.append(str(error))
            continue
        digest = hashlib.sha256(f"{image.shape} {image.dtype}".encode() + image.tobytes())
        key = digest.hexdigest()
        original = first_of.setdefault(key, item)
        if original is not item:
            item = _Item(
                item.name,
                item.image,
                item.mask,
                item.polygons,
                {**item.meta, "exact_duplicate_of": original.name},
            )
            cases = {root_of(original.meta["case_id"]), root_of(item.meta["case_id"])}
            if len(cases) == 2:
                low, high = sorted(cases, key=_case_order)
                parent[high] = low
                merges.append(f"{item.name} = {original.name}: cases {low} and {high} joined")
        readable.append(item)
    if not merges:
        return readable, problems, []
    in_joined_set = set(parent) | set(parent.values())
    joined = [
        _Item(
            it.name,
            it.image,
            it.mask,
            it.polygons,
            {**it.meta, "leak_group": root_of(it.meta["case_id"])},
        )
        if it.meta["case_id"] in in_joined_set
        else it
        for it in readable
    ]
    summary = (
        f"{len(merges)} merge(s) of case groups: pixel-identical frames under different case "
        "numbers now share a leak group (meta 'leak_group'; 'exact_duplicate_of' names the copy)"
    )
    return joined, problems, [summary, *merges]


def _case_order(case: str) -> tuple[int, int | str]:
    """Case ids in numeric order when they are numbers (``"9"`` before ``"10"``)."""
    return (0, int(case)) if case.isdigit() else (1, case)


def _no_split(split: str | None, layout: str) -> None:
    if split is not None:
        raise ValueError(f"layout {layout!r} has no predefined splits; got split={split!r}")


_SCANNERS: dict[str, Callable[[Path, str | None], _Scan]] = {
    "folder": _scan_folder,
    "ddti-xml": _scan_ddti_xml,
    "tn-scui": _scan_tn_scui,
    "tn3k": _scan_tn3k,
}
