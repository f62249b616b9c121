"""Ultrasound DICOM files: their frames as the arrays `preprocess` takes, and their pixel size.

Needs the optional extra ``pip install 'thyroidseg[dicom]'`` (pydicom 3, Pillow for JPEG
baseline, pylibjpeg for JPEG Lossless, JPEG-LS and JPEG 2000); without it, reading a DICOM
file raises one ``ImportError`` that says so, and the rest of thyroidseg works as before.

- `read_frame` reads one frame, decoded by pydicom (uncompressed, RLE and deflated
  natively; the JPEG family through Pillow and pylibjpeg) and converted to what
  `thyroidseg.preprocessing.preprocess` takes: ``uint8``/``uint16`` grey ``(H, W)``
  (MONOCHROME2 as stored, MONOCHROME1 inverted, signed values shifted to unsigned) or
  ``uint8`` BGR ``(H, W, 3)`` (RGB, YBR_FULL, YBR_FULL_422 and PALETTE COLOR). Only the
  frame asked for is read from the file, so a long cine loop never sits in memory;
  `iter_frames` streams a loop.
- `read_dicom_info` checks a file without decoding it (a DICOMDIR, missing pixel data, a
  truncated file, an unsupported transfer syntax or photometric interpretation, a damaged
  header value, more frames claimed than the pixel data holds are each a ``ValueError``
  naming the file) and says how many frames it holds.
- `read_spacing` finds the pixel size, a `thyroidseg.io.spacing.FrameSpacing`: the 2-D
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thyroidseg.io._dicom_header import (
    INSTALL_HINT,
    PHOTOMETRIC_INTERPRETATIONS,
    Header,
    naming,
    one,
    pixel_source,
    read_header,
    syntax_option,
    tag,
    whole,
)
from thyroidseg.io.spacing import FrameSpacing, RegionSpacing, check_spacing

try:  # the optional extra thyroidseg[dicom]; reading a DICOM file says how to install it
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.multival import MultiValue
    from pydicom.pixels import apply_color_lut, iter_pixels, pixel_array
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        UltrasoundImageStorage,
        UltrasoundMultiFrameImageStorage,
        generate_uid,
    )
except ImportError:
    pydicom = None  # type: ignore[assignment]  # optional: the [dicom] extra

__all__ = [
    "DICOM_EXTENSIONS",
    "INSTALL_HINT",
    "PHOTOMETRIC_INTERPRETATIONS",
    "DicomInfo",
    "FrameRange",
    "frame_outputs",
    "is_dicom",
    "is_frame_output",
    "iter_frames",
    "read_dicom_info",
    "read_frame",
    "read_spacing",
    "write_dicom",
]

DICOM_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom")
"""File extensions (lower case) of DICOM files; other names are recognised by content."""

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
    header = read_header(path)
    return DicomInfo(
        path=header.path,
        frames=header.frames,
        rows=header.rows,
        columns=header.columns,
        photometric=header.photometric,
        transfer_syntax=header.syntax.name,
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
    header = read_header(path)
    path, count = header.path, header.frames
    if index is None:
        if count > 1:
            raise ValueError(
                f"{path}: a cine loop of {count} frames, not one image: segment it with "
                "thyroidseg predict or thyroidseg.inference.predict_file, or read a frame by its "
                "index"
            )
        index = 0
    if not 0 <= index < count:
        raise ValueError(f"{path}: no frame index {index} (the file has {count} frames)")
    with naming(path):
        try:
            array = pixel_array(pixel_source(header), index=index, **syntax_option(header))
        except Exception as error:  # pydicom's decoders raise many kinds on damaged data
            raise ValueError(f"{path}: frame {index + 1} cannot be decoded ({error})") from error
        return _converted(array, header)


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
    header = read_header(path)
    path = header.path
    indices = FrameRange.parse(frames).indices(header.frames)
    stream = iter_pixels(pixel_source(header), indices=indices, **syntax_option(header))
    for index in indices:
        with naming(path):
            try:
                array = next(stream)
            except Exception as error:  # pydicom's decoders raise many kinds on damaged data
                raise ValueError(
                    f"{path}: frame {index + 1} cannot be decoded ({error})"
                ) from error
            converted = _converted(array, header)
        yield converted


def read_spacing(path: str | os.PathLike[str]) -> FrameSpacing:
    """The pixel size a DICOM file states, with its source (see the module docstring).

    Ultrasound regions are used when some 2-D tissue region (``RegionDataType`` 1) gives
    its deltas in centimetres; Doppler, M-mode and other regions are ignored. Pixel Spacing
    and Imager Pixel Spacing are ``(row, col)`` millimetres.

    Raises
    ------
    ImportError, FileNotFoundError, ValueError
        As `read_dicom_info`; tissue regions that all give other units than centimetres
        (or no deltas), and any spacing outside 0.0001-10 mm
        (`thyroidseg.io.spacing.check_spacing`).
    """
    header = read_header(path)
    path, dataset = header.path, header.dataset
    with naming(path):
        return _spacing(path, dataset)


def _spacing(path: Path, dataset: Dataset) -> FrameSpacing:
    """`read_spacing` of a data set read from ``path``."""
    regions = dataset.get("SequenceOfUltrasoundRegions") or []
    usable, wrong = [], []
    for number, region in enumerate(regions, start=1):
        where = f"{path}: ultrasound region {number}"
        if (
            one(region, "RegionDataType", where) != _TISSUE
            or one(region, "RegionSpatialFormat", where, _SPATIAL_2D) != _SPATIAL_2D
        ):
            continue
        units = tuple(one(region, f"PhysicalUnits{axis}Direction", where) for axis in "XY")
        deltas = tuple(one(region, f"PhysicalDelta{axis}", where) for axis in "YX")
        if units != (_CM, _CM) or None in deltas:
            shown = "/".join(_UNITS.get(unit, str(unit)) for unit in units)
            wrong.append(f"region {number}: units {shown}" + (", no deltas" * (None in deltas)))
            continue
        spacing = check_spacing(tuple(10.0 * float(d) for d in deltas), where)
        box = tuple(
            int(one(region, k, where, 0)) + (k.startswith("RegionLocationMax"))
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
        values = list(value) if isinstance(value, MultiValue | list) else [value]
        if values in ([], [None], [""]):
            continue
        if len(values) != 2:
            raise ValueError(
                f"{path}: {keyword} {tag(keyword)} holds {len(values)} value(s) "
                f"({', '.join(map(str, values))}), not the two (row, col) it must; give the "
                "size by hand with pixel_spacing (--pixel-spacing MM)"
            )
        spacing = check_spacing(tuple(float(v) for v in values), f"{path}: {keyword}")
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


def _converted(array: np.ndarray, header: Header) -> np.ndarray:
    """A decoded frame as grey ``uint8``/``uint16`` or BGR, by its photometric interpretation."""
    dataset = header.dataset
    if header.photometric == "PALETTE COLOR":
        array = _palette_colours(array, dataset)
    if array.ndim == 3:  # RGB (YBR and JPEG colour are converted to RGB by pydicom)
        return np.ascontiguousarray(array[..., ::-1])
    bits = whole(dataset, "BitsStored", array.dtype.itemsize * 8)
    if np.issubdtype(array.dtype, np.signedinteger):  # shift to unsigned, order kept
        unsigned = np.uint8 if array.dtype.itemsize == 1 else np.uint16
        array = (array.astype(np.int32) + (1 << (bits - 1))).astype(unsigned)
    if header.photometric == "MONOCHROME1":  # 0 is white
        array = ((1 << bits) - 1 - array.astype(np.int32)).astype(array.dtype)
    return np.ascontiguousarray(array)


def _palette_colours(array: np.ndarray, dataset: Dataset) -> np.ndarray:
    """``uint8`` RGB of a PALETTE COLOR frame: each entry scaled by the table's bit depth.

    The depth is the descriptor's third value (8 or 16): an 8-bit table stored in 16-bit
    words keeps its values, a 16-bit table is divided by 257 (65535 -> 255).
    """
    depth = int(dataset.RedPaletteColorLookupTableDescriptor[2])
    if depth not in (8, 16):
        raise ValueError(f"PALETTE COLOR lookup tables of {depth} bits (8 or 16 supported)")
    colours = apply_color_lut(array, dataset).astype(np.float64)
    scaled = np.round(colours * (255.0 / ((1 << depth) - 1)))
    return np.clip(scaled, 0, 255).astype(np.uint8)[..., :3]


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
    count = read_dicom_info(path).frames  # checked: a whole number >= 1
    if count == 1:
        return {stem: None}
    try:
        indices = selection.indices(count)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return {f"{stem}_f{index + 1:04d}": index for index in indices}


def is_frame_output(name: str, stem: str) -> bool:
    """Whether ``name`` is an output name `frame_outputs` gives a frame of the loop ``stem``.

    >>> is_frame_output("scan_f0012", "scan"), is_frame_output("scan_final", "scan")
    (True, False)
    """
    return re.fullmatch(re.escape(stem) + r"_f\d{4,}", name) is not None
