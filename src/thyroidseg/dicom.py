"""Ultrasound DICOM files: their frames as the arrays `preprocess` takes, and their pixel size.

Needs the optional extra ``pip install 'thyroidseg[dicom]'`` (pydicom 3, and Pillow for
JPEG baseline); without it, reading a DICOM file raises one ``ImportError`` that says so,
and the rest of thyroidseg works as before.

- `read_frame` reads one frame, decoded by pydicom (uncompressed, RLE and deflated
  natively; JPEG baseline and JPEG 2000 through Pillow) and converted to what
  `thyroidseg.preprocessing.preprocess` takes: ``uint8``/``uint16`` grey ``(H, W)``
  (MONOCHROME2 as stored, MONOCHROME1 inverted, signed values shifted to unsigned) or
  ``uint8`` BGR ``(H, W, 3)`` (RGB, YBR_FULL, YBR_FULL_422 and PALETTE COLOR). Only the
  frame asked for is read from the file, so a long cine loop never sits in memory;
  `iter_frames` streams a loop.
- `read_dicom_info` checks a file without decoding it (a DICOMDIR, missing pixel data, a
  truncated file, an unsupported transfer syntax or photometric interpretation are each a
  ``ValueError`` naming the file) and says how many frames it holds.
- `read_spacing` finds the pixel size, a `thyroidseg.spacing.FrameSpacing`: the 2-D
  tissue regions of the Sequence of Ultrasound Regions (0018,6011), whose
  ``PhysicalDeltaX``/``PhysicalDeltaY`` are centimetres per pixel when
  ``PhysicalUnitsX/YDirection`` is 3; else Pixel Spacing (0028,0030); else Imager Pixel
  Spacing (0018,1164); else none. A nodule takes the spacing
  of the region that holds its centre (`FrameSpacing.at`).

Files are recognised by the extension ``.dcm`` or ``.dicom`` (any case), or, for names
without an image extension (``IM_0001``, the UID names ``1.2.840.113619.2.55`` of scanner
exports), by the ``DICM`` marker after the 128-byte preamble (`is_dicom`). Files without a
file meta header are read too (``force=True``; their transfer syntax is the uncompressed one
their encoding shows).

Examples
--------
A synthetic 2-frame loop, 0.2 mm pixels in its ultrasound region:

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "loop.dcm"
>>> frames = np.arange(2 * 4 * 6, dtype=np.uint8).reshape(2, 4, 6)
>>> _ = write_dicom(path, frames, region_spacing_mm=0.2)
>>> read_dicom_info(path).frames
2
>>> read_frame(path, 1)[0]
array([24, 25, 26, 27, 28, 29], dtype=uint8)
>>> read_spacing(path).at(2.0, 1.0)
((0.2, 0.2), 'ultrasound-region')
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thyroidseg.spacing import FrameSpacing, RegionSpacing, check_spacing

try:  # the optional extra thyroidseg[dicom]; reading a DICOM file says how to install it
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import apply_color_lut, get_decoder, iter_pixels, pixel_array
    from pydicom.uid import (
        UID,
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        MediaStorageDirectoryStorage,
        UltrasoundImageStorage,
        UltrasoundMultiFrameImageStorage,
        generate_uid,
    )
except ImportError:
    pydicom = None

__all__ = [
    "DICOM_EXTENSIONS",
    "INSTALL_HINT",
    "PHOTOMETRIC_INTERPRETATIONS",
    "DicomInfo",
    "FrameRange",
    "frame_outputs",
    "is_dicom",
    "iter_frames",
    "read_dicom_info",
    "read_frame",
    "read_spacing",
    "write_dicom",
]

DICOM_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom")
"""File extensions (lower case) of DICOM files; other names are recognised by content."""

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
_CM = 3  # PhysicalUnitsX/YDirection: centimetres
_TISSUE = 1  # RegionDataType: tissue (Doppler, M-mode and the rest have other codes)
_SPATIAL_2D = 1  # RegionSpatialFormat: 2-D
_UNITS = {0: "none", 1: "percent", 2: "dB", 3: "cm", 4: "seconds", 5: "hertz",
          6: "dB/seconds", 7: "cm/s", 8: "cm2", 9: "cm2/s", 10: "cm3", 11: "cm3/s",
          12: "degrees"}  # fmt: skip


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is read as a DICOM file.

    True for the extensions of `DICOM_EXTENSIONS` (any case); for a name without an
    extension, or with a numeric one (UID names such as ``1.2.840.113619.2.55``), true when
    the file holds ``DICM`` at byte 128 (the DICOM preamble). Other names are never opened.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DICOM_EXTENSIONS:
        return True
    if suffix and not suffix[1:].isdigit():
        return False
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


@dataclass(frozen=True)
class DicomInfo:
    """What `read_dicom_info` found in a DICOM image file, before decoding any pixel.

    Attributes
    ----------
    path
        The file.
    frames
        Number of frames (``NumberOfFrames``; 1 for a single-frame image).
    rows, columns
        Frame height and width in pixels.
    photometric
        Photometric interpretation as stored (``MONOCHROME2``, ``YBR_FULL_422``...).
    transfer_syntax
        Name of the transfer syntax (``"RLE Lossless"``, ``"JPEG Baseline (Process 1)"``...).
    """

    path: Path
    frames: int
    rows: int
    columns: int
    photometric: str
    transfer_syntax: str


@dataclass(frozen=True)
class FrameRange:
    """Frames of a cine loop to segment: numbers from 1, both ends included.

    Attributes
    ----------
    first
        First frame number (>= 1).
    last
        Last frame number, or ``None`` for the loop's end.

    Examples
    --------
    >>> FrameRange.parse("first"), FrameRange.parse("3-5").indices(10)
    (FrameRange(first=1, last=1), range(2, 5))
    """

    first: int = 1
    last: int | None = None

    @classmethod
    def parse(cls, frames: str | FrameRange) -> FrameRange:
        """``"all"``, ``"first"``, ``"N"`` or ``"N-M"`` (or a `FrameRange`, returned as is).

        Raises
        ------
        ValueError
            Any other text, a number below 1, or ``N > M``.
        """
        if isinstance(frames, FrameRange):
            return frames
        text = str(frames).strip().lower()
        if text in ("all", "first"):
            return cls(1, None if text == "all" else 1)
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
        if match and 1 <= int(match[1]) <= int(match[2] or match[1]):
            return cls(int(match[1]), int(match[2] or match[1]))
        raise ValueError(
            f"frames={frames} (--frames) must be all, first, N or N-M (frame numbers from 1, "
            "N <= M)"
        )

    def indices(self, count: int) -> range:
        """The 0-based indices of the selected frames in a loop of ``count`` frames.

        Raises
        ------
        ValueError
            The range reaches past the loop's last frame.
        """
        last = count if self.last is None else self.last
        if last > count:
            raise ValueError(
                f"the loop has {count} frames, fewer than the {last} that "
                f"frames={self.first}-{last} (--frames) asks for"
            )
        return range(self.first - 1, last)


def read_dicom_info(path: str | os.PathLike[str]) -> DicomInfo:
    """Check that ``path`` is a DICOM image that can be decoded, without decoding it.

    Raises
    ------
    ImportError
        pydicom is not installed (`INSTALL_HINT`).
    FileNotFoundError
        No such file.
    ValueError
        Not a readable DICOM file; a DICOMDIR (an index of files, not an image); no pixel
        data; a truncated file; a transfer syntax no installed decoder reads; a photometric
        interpretation outside `PHOTOMETRIC_INTERPRETATIONS`; more than 16 bits per sample.
        Each message names the file.
    """
    path, dataset, syntax = _read_header(path)
    return DicomInfo(
        path=path,
        frames=_frame_count(dataset),
        rows=int(dataset.Rows),
        columns=int(dataset.Columns),
        photometric=str(dataset.PhotometricInterpretation),
        transfer_syntax=syntax.name,
    )


def read_frame(path: str | os.PathLike[str], index: int | None = None) -> np.ndarray:
    """Read one frame of a DICOM file as grey ``(H, W)`` or BGR ``(H, W, 3)``.

    Parameters
    ----------
    path
        The file.
    index
        0-based frame index. ``None`` (default): the file's only frame; a multi-frame file
        is then an error (read its frames by index, or with `iter_frames`).

    Returns
    -------
    numpy.ndarray
        ``uint8`` or ``uint16`` grey, or ``uint8`` (``uint16`` for 16-bit colour) BGR; see
        the module docstring for each photometric interpretation.

    Raises
    ------
    ImportError, FileNotFoundError, ValueError
        As `read_dicom_info`; an index outside the file, or pixel data that cannot be
        decoded (the message names the file and the frame).
    """
    path, dataset, syntax = _read_header(path)
    count = _frame_count(dataset)
    if index is None:
        if count > 1:
            raise ValueError(
                f"{path}: a cine loop of {count} frames, not one image: segment it with "
                "thyroidseg predict or Segmenter.predict_file, or read a frame by its index"
            )
        index = 0
    if not 0 <= index < count:
        raise ValueError(f"{path}: no frame index {index} (the file has {count} frames)")
    try:
        array = pixel_array(path, index=index, **_syntax_option(dataset, syntax))
    except Exception as error:  # pydicom's decoders raise many kinds on damaged data
        raise ValueError(f"{path}: frame {index + 1} cannot be decoded ({error})") from error
    return _converted(array, dataset)


def iter_frames(
    path: str | os.PathLike[str], frames: str | FrameRange = "all"
) -> Iterator[np.ndarray]:
    """Stream the frames of a DICOM file (one decoded at a time), converted as `read_frame`.

    Parameters
    ----------
    path
        The file.
    frames
        Which frames (`FrameRange.parse`): ``"all"`` (default), ``"first"``, ``"N-M"``.

    Raises
    ------
    ImportError, FileNotFoundError, ValueError
        As `read_frame`.
    """
    path, dataset, syntax = _read_header(path)
    indices = FrameRange.parse(frames).indices(_frame_count(dataset))
    stream = iter_pixels(path, indices=indices, **_syntax_option(dataset, syntax))
    for index in indices:
        try:
            array = next(stream)
        except Exception as error:  # pydicom's decoders raise many kinds on damaged data
            raise ValueError(f"{path}: frame {index + 1} cannot be decoded ({error})") from error
        yield _converted(array, dataset)


def read_spacing(path: str | os.PathLike[str]) -> FrameSpacing:
    """The pixel size a DICOM file states, with its source (see the module docstring).

    Ultrasound regions are used when some 2-D tissue region (``RegionDataType`` 1) gives
    its deltas in centimetres; Doppler, M-mode and other regions are ignored. Pixel Spacing
    and Imager Pixel Spacing are ``(row, col)`` millimetres.

    Raises
    ------
    ImportError, FileNotFoundError, ValueError
        As `read_dicom_info`; tissue regions that all give other units than centimetres
        (or no deltas), and any spacing outside 0.0001-10 mm (`thyroidseg.spacing.check_spacing`).
    """
    path, dataset, _ = _read_header(path)
    regions = dataset.get("SequenceOfUltrasoundRegions") or []
    usable, wrong = [], []
    for number, region in enumerate(regions, start=1):
        if (
            region.get("RegionDataType") != _TISSUE
            or region.get("RegionSpatialFormat", _SPATIAL_2D) != _SPATIAL_2D
        ):
            continue
        units = (region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection"))
        deltas = (region.get("PhysicalDeltaY"), region.get("PhysicalDeltaX"))
        if units != (_CM, _CM) or None in deltas:
            shown = "/".join(_UNITS.get(unit, str(unit)) for unit in units)
            wrong.append(f"region {number}: units {shown}" + (", no deltas" * (None in deltas)))
            continue
        where = f"{path}: ultrasound region {number}"
        spacing = check_spacing(tuple(10.0 * float(d) for d in deltas), where)
        box = tuple(
            int(region.get(k, 0)) + (k.startswith("RegionLocationMax"))
            for k in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1",
                      "RegionLocationMaxY1")
        )  # fmt: skip
        usable.append(RegionSpacing(box, spacing))  # type: ignore[arg-type]
    if usable:
        return FrameSpacing("ultrasound-region", regions=tuple(usable))
    if wrong:
        raise ValueError(
            f"{path}: no tissue region of the Sequence of Ultrasound Regions (0018,6011) gives "
            f"its pixel size in cm (PhysicalUnitsX/YDirection = 3): {'; '.join(wrong)}; give "
            "the size by hand with pixel_spacing (--pixel-spacing MM)"
        )
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = dataset.get(keyword)
        if value:
            spacing = check_spacing(tuple(float(v) for v in value), f"{path}: {keyword}")
            return FrameSpacing("pixel-spacing", spacing)
    return FrameSpacing("none")


def write_dicom(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    *,
    photometric: str | None = None,
    region_spacing_mm: float | tuple[float, float] | None = None,
    pixel_spacing_mm: float | tuple[float, float] | None = None,
) -> Path:
    """Write an ultrasound DICOM file from arrays (for tests, examples and benchmarks).

    Parameters
    ----------
    path
        Destination.
    frames
        ``(H, W)`` or ``(H, W, 3)`` RGB for one frame; ``(N, H, W)`` or ``(N, H, W, 3)``
        for a cine loop (Ultrasound Multi-frame Image Storage); ``uint8`` or ``uint16``.
    photometric
        Default ``MONOCHROME2`` for grey, ``RGB`` for colour.
    region_spacing_mm
        Writes one 2-D tissue ultrasound region covering the frame, with this ``(row, col)``
        spacing (as centimetres, units code 3).
    pixel_spacing_mm
        Writes Pixel Spacing (0028,0030), ``(row, col)``.

    Returns
    -------
    pathlib.Path
        ``path``, uncompressed (Explicit VR Little Endian) with a file meta header.
    """
    if pydicom is None:
        raise ImportError(f"writing DICOM files needs pydicom: {INSTALL_HINT}")
    array = np.ascontiguousarray(frames)
    colour = array.shape[-1] == 3 and array.ndim in (3, 4)
    many = array.ndim == (4 if colour else 3)
    stack = array if many else array[None]
    count, rows, columns = stack.shape[:3]
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = (
        UltrasoundMultiFrameImageStorage if many else (UltrasoundImageStorage)
    )
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    dataset.Modality = "US"
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel = 3 if colour else 1
    dataset.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
    if colour:
        dataset.PlanarConfiguration = 0
    bits = array.dtype.itemsize * 8
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = bits, bits, bits - 1
    dataset.PixelRepresentation = 0
    if many:
        dataset.NumberOfFrames = count
    if region_spacing_mm is not None:
        row, col = check_spacing(region_spacing_mm, "region_spacing_mm")
        region = Dataset()
        region.RegionSpatialFormat, region.RegionDataType = _SPATIAL_2D, _TISSUE
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = columns - 1, rows - 1
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = _CM
        region.PhysicalDeltaX, region.PhysicalDeltaY = col / 10.0, row / 10.0
        dataset.SequenceOfUltrasoundRegions = [region]
    if pixel_spacing_mm is not None:
        dataset.PixelSpacing = list(check_spacing(pixel_spacing_mm, "pixel_spacing_mm"))
    dataset.PixelData = stack.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


# -- reading -------------------------------------------------------------------------


def _read_header(path: str | os.PathLike[str]) -> tuple[Path, Dataset, UID]:
    """The file's data set (pixel data left on disk) and its transfer syntax, checked."""
    path = Path(path)
    if pydicom is None:
        raise ImportError(f"{path}: reading DICOM files needs pydicom: {INSTALL_HINT}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such DICOM file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = pydicom.dcmread(path, force=True, defer_size=_DEFER_BYTES)
        except Exception as error:  # pydicom raises many kinds on files that are not DICOM
            raise ValueError(f"{path}: not a readable DICOM file ({error})") from error
    said = "; ".join(dict.fromkeys(str(w.message) for w in caught))
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
        what = dataset.get("SOPClassUID")
        raise ValueError(
            f"{path}: "
            + (
                f"truncated: the file ends before its pixel data does (pydicom: {said})"
                if "End of file" in said
                else "no pixel data (7FE0,0010) and frame size: not an image"
                + (f" ({what.name})" if what is not None else " (or not a DICOM file)")
            )
        )
    syntax = meta.get("TransferSyntaxUID") or _syntax_of_encoding(dataset)
    _check_decodable(path, dataset, syntax)
    return path, dataset, syntax


def _syntax_of_encoding(dataset: Dataset) -> UID:
    """The uncompressed transfer syntax of a file read without a file meta header."""
    implicit, little = dataset.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _syntax_option(dataset: Dataset, syntax: UID) -> dict[str, Any]:
    """pydicom's ``transfer_syntax_uid=`` for a file without file meta header, else nothing."""
    meta = dataset.get("file_meta")
    return (
        {} if meta is not None and "TransferSyntaxUID" in meta else {"transfer_syntax_uid": syntax}
    )


def _check_decodable(path: Path, dataset: Dataset, syntax: UID) -> None:
    """Refuse what `read_frame` could not decode or convert, before decoding anything."""
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
        )
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric not in PHOTOMETRIC_INTERPRETATIONS:
        raise ValueError(
            f"{path}: photometric interpretation {photometric or 'missing'} is not supported "
            f"(supported: {', '.join(PHOTOMETRIC_INTERPRETATIONS)})"
        )
    if int(dataset.get("BitsAllocated", 8)) > 16:
        raise ValueError(f"{path}: {dataset.BitsAllocated}-bit pixels (at most 16 supported)")
    if decoder.is_native:
        _check_length(path, dataset)


def _check_length(path: Path, dataset: Dataset) -> None:
    """Uncompressed pixel data must hold every frame, and the file every declared byte."""
    element = dataset.get_item(0x7FE00010, keep_deferred=True)
    declared = element.length if isinstance(element, RawDataElement) else len(element.value)
    samples = (
        2
        if dataset.PhotometricInterpretation == "YBR_FULL_422"
        else dataset.get("SamplesPerPixel", 1)
    )
    needed = (
        _frame_count(dataset) * dataset.Rows * dataset.Columns * samples
        * int(dataset.get("BitsAllocated", 8)) // 8
    )  # fmt: skip
    on_disk = declared
    if isinstance(element, RawDataElement) and element.value is None:
        on_disk = min(declared, path.stat().st_size - element.value_tell)
    if on_disk < needed:
        raise ValueError(
            f"{path}: truncated or damaged: {_frame_count(dataset)} frames of "
            f"{dataset.Rows} x {dataset.Columns} need {needed} bytes of pixel data, the file "
            f"holds {max(on_disk, 0)}"
        )


def _frame_count(dataset: Dataset) -> int:
    return int(dataset.get("NumberOfFrames") or 1)


def _converted(array: np.ndarray, dataset: Dataset) -> np.ndarray:
    """A decoded frame as grey ``uint8``/``uint16`` or BGR, by its photometric interpretation."""
    photometric = dataset.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, dataset)
        if array.dtype == np.uint16:  # 16-bit palette entries
            array = np.round(array / 257.0).astype(np.uint8)
    if array.ndim == 3:  # RGB (YBR and JPEG colour are converted to RGB by pydicom)
        return np.ascontiguousarray(array[..., ::-1])
    bits = int(dataset.get("BitsStored", array.dtype.itemsize * 8))
    if np.issubdtype(array.dtype, np.signedinteger):  # shift to unsigned, order kept
        unsigned = np.uint8 if array.dtype.itemsize == 1 else np.uint16
        array = (array.astype(np.int32) + (1 << (bits - 1))).astype(unsigned)
    if photometric == "MONOCHROME1":  # 0 is white
        array = ((1 << bits) - 1 - array.astype(np.int32)).astype(array.dtype)
    return np.ascontiguousarray(array)


def frame_outputs(
    stem: str, path: str | os.PathLike[str], frames: str | FrameRange = "all"
) -> dict[str, int | None]:
    """Output names and frame indices of one input file: each selected frame its own name.

    ``{stem: None}`` for an image that is not DICOM or a single-frame DICOM file;
    ``{f"{stem}_f0001": 0, f"{stem}_f0002": 1, ...}`` (frame numbers from 1, four digits or
    more) for the ``frames`` of a cine loop.

    Raises
    ------
    ImportError, FileNotFoundError, ValueError
        As `read_dicom_info`; ``frames`` outside the loop.
    """
    selection = FrameRange.parse(frames)
    if not is_dicom(path):
        return {stem: None}
    count = read_dicom_info(path).frames
    if count == 1:
        return {stem: None}
    try:
        indices = selection.indices(count)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return {f"{stem}_f{index + 1:04d}": index for index in indices}
