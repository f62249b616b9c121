"""Reading a DICOM file's header for `thyroidseg.io.dicom`: the checks before any frame is decoded.

`read_header` parses a file's data set (the pixel data left on disk where pydicom allows)
and refuses, with a ``ValueError`` naming the file, what `thyroidseg.io.dicom.read_frame` could
not decode: a DICOMDIR, no pixel data, a truncated file, an unsupported transfer syntax or
photometric interpretation, a damaged header value, more frames claimed than the pixel data
holds. `naming` turns whatever a lazily converted header value raises into such an error.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

try:  # the optional extra thyroidseg[dicom]; reading a DICOM file says how to install it
    import pydicom
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import parse_basic_offsets, parse_fragments
    from pydicom.multival import MultiValue
    from pydicom.pixels import get_decoder
    from pydicom.tag import Tag
    from pydicom.uid import (
        UID,
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        MediaStorageDirectoryStorage,
    )
except ImportError:
    pydicom = None  # type: ignore[assignment]  # optional: the [dicom] extra

INSTALL_HINT = "pip install 'thyroidseg[dicom]'"
"""How to install what reading DICOM files needs."""

PHOTOMETRIC_INTERPRETATIONS: tuple[str, ...] = (
    "MONOCHROME1",
    "MONOCHROME2",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_RCT",
    "YBR_ICT",
    "PALETTE COLOR",
)
"""Photometric interpretations `read_frame` converts (YBR_RCT/ICT: JPEG 2000 colour)."""

_DEFER_BYTES = 1024  # elements larger than this (the pixel data) are read only when used


@dataclass(frozen=True)
class Header:
    """A file's data set (pixel data left on disk), transfer syntax and checked geometry."""

    path: Path
    dataset: Dataset
    syntax: UID
    frames: int
    rows: int
    columns: int
    photometric: str


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Turn any problem a file's header values cause into a ``ValueError`` naming the file.

    pydicom converts header values when they are first used, so a damaged one (an odd
    length, an unknown VR, a list where one number belongs) raises whatever its conversion
    raises, wherever it is read.
    """
    try:
        yield
    except (ImportError, OSError):
        raise
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: {error}") from error
    except Exception as error:  # pydicom's lazy conversions raise many kinds
        raise ValueError(
            f"{path}: damaged DICOM header ({type(error).__name__}: {error})"
        ) from error


def read_header(path: str | os.PathLike[str]) -> Header:
    """The file's data set and transfer syntax, checked so that `read_frame` can decode it.

    The last file's header is kept while the file is unchanged (same inode, size and
    modification and change times), so reading a loop frame by frame parses its header
    once: pydicom reads compressed pixel data with the header.
    """
    path = Path(path)
    if pydicom is None:
        raise ImportError(f"{path}: reading DICOM files needs pydicom: {INSTALL_HINT}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such DICOM file")
    stat = path.stat()
    return _parsed_header(path, (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))


@functools.lru_cache(maxsize=1)
def _parsed_header(path: Path, state: tuple[int, int, int, int]) -> Header:
    """`read_header` of the file in the ``state`` its inode, size and times say."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = pydicom.dcmread(path, force=True, defer_size=_DEFER_BYTES)
        except Exception as error:  # pydicom raises many kinds on files that are not DICOM
            raise ValueError(f"{path}: not a readable DICOM file ({error})") from error
    said = "; ".join(dict.fromkeys(str(w.message) for w in caught))
    with naming(path):
        meta = dataset.get("file_meta") or FileMetaDataset()
        if (
            meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage
            or "DirectoryRecordSequence" in dataset
        ):
            raise ValueError(
                f"{path}: a DICOMDIR, the index of a DICOM disc or folder, not an image: give "
                "the image files it lists (in the folders beside it)"
            )
        if "PixelData" not in dataset or "Rows" not in dataset or "Columns" not in dataset:
            raise ValueError(f"{path}: " + _why_no_image(dataset, said))
        header = Header(
            path=path,
            dataset=dataset,
            syntax=meta.get("TransferSyntaxUID") or _syntax_of_encoding(dataset),
            frames=_frames(dataset),
            rows=whole(dataset, "Rows"),
            columns=whole(dataset, "Columns"),
            photometric=str(dataset.get("PhotometricInterpretation", "")),
        )
        _check_decodable(header)
        if header.photometric == "PALETTE COLOR" and not header.syntax.is_little_endian:
            _palette_to_little_endian(dataset)
    return header


def _why_no_image(dataset: Dataset, said: str) -> str:
    """Why a data set without pixel data or frame size is no image (truncated, or another kind)."""
    if "End of file" in said:
        return f"truncated: the file ends before its pixel data does (pydicom: {said})"
    what = dataset.get("SOPClassUID")
    named = "(or not a DICOM file)" if what is None else f"({getattr(what, 'name', what)})"
    return f"no pixel data (7FE0,0010) and frame size: not an image {named}"


def tag(keyword: str) -> str:
    """The element's tag as DICOM writes it, ``(0028,0010)`` for ``Rows``."""
    tag = tag_for_keyword(keyword)
    return keyword if tag is None else str(Tag(tag))


def whole(dataset: Dataset, keyword: str, default: int | None = None) -> int:
    """A header value that must be one whole number >= 1 (``default`` when it is absent)."""
    if keyword not in dataset and default is not None:
        return default
    value = dataset[keyword].value
    if value is None or value == "":
        raise ValueError(f"{keyword} {tag(keyword)} is empty")
    if isinstance(value, MultiValue | list):
        raise ValueError(f"{keyword} {tag(keyword)} holds {len(value)} values, not one")
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{keyword} {tag(keyword)} is {value}: not a whole number >= 1")
    return int(value)


def _frames(dataset: Dataset) -> int:
    """``NumberOfFrames`` (1 when absent or empty), checked."""
    value = dataset.get("NumberOfFrames")
    return 1 if value is None or value == "" else whole(dataset, "NumberOfFrames")


def one(item: Dataset, keyword: str, where: str, default: Any = None) -> Any:
    """The single value of ``keyword`` in ``item`` (``default`` when absent or empty)."""
    value = item.get(keyword)
    if isinstance(value, MultiValue | list):
        raise ValueError(f"{where}: {keyword} holds {len(value)} values ({value}), not one")
    return default if value is None or value == "" else value


def _syntax_of_encoding(dataset: Dataset) -> UID:
    """The uncompressed transfer syntax of a file read without a file meta header."""
    implicit, little = dataset.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def pixel_source(header: Header) -> Path | Dataset:
    """What pydicom decodes frames from: the file, which it reads frame by frame, or for a
    deflated file (whose pixel data lies in a compressed stream) the whole inflated data set."""
    if header.syntax.is_deflated:
        return pydicom.dcmread(header.path, force=True)
    return header.path


def syntax_option(header: Header) -> dict[str, Any]:
    """pydicom's ``transfer_syntax_uid=`` for a file without file meta header, else nothing."""
    meta = header.dataset.get("file_meta")
    if meta is not None and "TransferSyntaxUID" in meta:
        return {}
    return {"transfer_syntax_uid": header.syntax}


def _check_decodable(header: Header) -> None:
    """Refuse what `read_frame` could not decode or convert, before decoding anything."""
    path, dataset, syntax = header.path, header.dataset, header.syntax
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ValueError(
            f"{path}: its pixel data is in the transfer syntax {syntax.name} ({syntax}), "
            "which pydicom cannot decode; convert the file first (e.g. dcmtk's dcmdjpeg or "
            "gdcmconv --raw)"
        ) from None
    if not decoder.is_available:
        raise ValueError(
            f"{path}: decoding {syntax.name} needs a package that is not installed, one of: "
            + "; ".join(decoder.missing_dependencies)
            + f" ({INSTALL_HINT} installs them)"
        )
    if header.photometric not in PHOTOMETRIC_INTERPRETATIONS:
        raise ValueError(
            f"{path}: photometric interpretation {header.photometric or 'missing'} is not "
            f"supported (supported: {', '.join(PHOTOMETRIC_INTERPRETATIONS)})"
        )
    if whole(dataset, "BitsAllocated", 8) > 16:
        raise ValueError(f"{path}: {dataset.BitsAllocated}-bit pixels (at most 16 supported)")
    if header.photometric == "PALETTE COLOR":
        _check_palette(path, dataset)
    if decoder.is_native:
        _check_length(header)
    elif header.frames > 1:
        _check_fragments(header)


def _check_length(header: Header) -> None:
    """Uncompressed pixel data must hold every frame, and the file every declared byte."""
    dataset = header.dataset
    element = dataset.get_item(0x7FE00010, keep_deferred=True)
    declared = element.length if isinstance(element, RawDataElement) else len(element.value)
    samples = 2 if header.photometric == "YBR_FULL_422" else whole(dataset, "SamplesPerPixel", 1)
    needed = (
        header.frames * header.rows * header.columns * samples
        * whole(dataset, "BitsAllocated", 8) // 8
    )  # fmt: skip
    on_disk = declared
    if isinstance(element, RawDataElement) and element.value is None:  # left on disk
        if not header.syntax.is_deflated:  # a deflated file's offsets are inflated ones
            on_disk = min(declared, header.path.stat().st_size - element.value_tell)
    if on_disk < needed:
        raise ValueError(
            f"{header.path}: truncated or damaged: {header.frames} frames of "
            f"{header.rows} x {header.columns} need {needed} bytes of pixel data, the file "
            f"holds {max(on_disk, 0)}"
        )


def _check_fragments(header: Header) -> None:
    """Compressed pixel data holds one fragment or more per frame: a larger claim is refused.

    Checked before any frame is read, so that a damaged ``NumberOfFrames`` (millions of
    frames in a file of a few) is one error, not a frame loop that never ends.
    """
    buffer = BytesIO(header.dataset.PixelData)
    parse_basic_offsets(buffer)
    fragments, _ = parse_fragments(buffer)
    if fragments < header.frames:
        raise ValueError(
            f"{header.path}: NumberOfFrames (0028,0008) says {header.frames} frames, but the "
            f"compressed pixel data holds {fragments} fragments (at least one per frame): a "
            "damaged header or a truncated file"
        )


_COLOURS = ("Red", "Green", "Blue")


def _check_palette(path: Path, dataset: Dataset) -> None:
    """A PALETTE COLOR file must carry the three lookup tables, each a descriptor and data."""
    missing = [
        colour.lower()
        for colour in _COLOURS
        if f"{colour}PaletteColorLookupTableDescriptor" not in dataset
        or (
            f"{colour}PaletteColorLookupTableData" not in dataset
            and f"Segmented{colour}PaletteColorLookupTableData" not in dataset
        )
    ]
    if missing:
        raise ValueError(
            f"{path}: PALETTE COLOR without its {' and '.join(missing)} lookup table "
            "(descriptor and data, (0028,1101)-(0028,1203)): the colours cannot be read"
        )


def _palette_to_little_endian(dataset: Dataset) -> None:
    """Swap the bytes of 16-bit palette entries read from a big-endian file.

    pydicom's ``apply_color_lut`` reads the (unsegmented) lookup data in the machine's byte
    order, whatever the file's.
    """
    entries = int(dataset.RedPaletteColorLookupTableDescriptor[0]) or 1 << 16
    for colour in _COLOURS:
        element = dataset.get(f"{colour}PaletteColorLookupTableData")
        if element is not None and len(element) == 2 * entries:
            dataset[f"{colour}PaletteColorLookupTableData"].value = (
                np.frombuffer(element, ">u2").astype("<u2").tobytes()
            )
