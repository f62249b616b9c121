"""DICOM Segmentation objects of ``thyroidseg predict --dicom-seg``: masks that a PACS stores.

`write_segmentation` writes the masks of one DICOM source file as a binary DICOM
Segmentation (SEG) made with highdicom (``pip install 'thyroidseg[dicom]'``): one segment,
"Nodule" (SNOMED CT 27925004, category 49755003 "Morphologically abnormal structure"),
segmented automatically by the algorithm ``thyroidseg`` (its version; the model's name and
weights SHA-256 as algorithm parameters); patient and study identity copied from the
source; every frame referencing the source instance and, for a cine loop, the frame it
segments. `SegmentationCollector` gathers a ``predict`` run's masks per source and writes
``OUT/<stem>.seg.dcm`` for each.

A source attribute that the SEG must copy is either required (`REQUIRED_ATTRIBUTES`: a
source without it is refused, naming the file and the attribute) or one the standard lets
be empty (`EMPTY_IF_ABSENT`, Type 2: written empty when the source lacks it; nothing is
invented). highdicom builds multi-frame SEGs only for sources with a Frame of Reference
(highdicom issue #284), which ultrasound cine loops lack: for them, it builds the SEG of one
frame and the other frames are added with the same functional groups, each referencing its
source frame (docs/dicom.md, "DICOM Segmentation").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from thyroidseg._checks import PathLike
from thyroidseg.io.dicom import INSTALL_HINT, is_dicom
from thyroidseg.io.provenance import ModelIdentity

if TYPE_CHECKING:  # io lies below inference
    from thyroidseg.inference.measurements import ImageKey

try:  # the optional extra thyroidseg[dicom]
    import highdicom
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.pixels import pack_bits
    from pydicom.sr.codedict import codes
    from pydicom.uid import SecondaryCaptureImageStorage
except ImportError:
    highdicom = None  # type: ignore[assignment]  # optional: the [dicom] extra

__all__ = [
    "EMPTY_IF_ABSENT",
    "NODULE_CATEGORY",
    "NODULE_TYPE",
    "REQUIRED_ATTRIBUTES",
    "SEG_SUFFIX",
    "SegmentationCollector",
    "segmentation_paths",
    "write_segmentation",
]

SEG_SUFFIX = ".seg.dcm"
"""``OUT/<stem>.seg.dcm``: the SEG of input ``<stem>``."""

NODULE_TYPE = ("27925004", "SCT", "Nodule")
"""Segmented property type: SNOMED CT code, scheme, meaning."""
NODULE_CATEGORY = ("49755003", "SCT", "Morphologically abnormal structure")
"""Segmented property category: SNOMED CT code, scheme, meaning."""

REQUIRED_ATTRIBUTES: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Rows",
    "Columns",
)
"""Source attributes a SEG cannot be made without (Type 1 where the SEG copies them)."""

EMPTY_IF_ABSENT: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
"""Type 2 attributes of the Patient and General Study modules: copied, or empty if absent."""


def segmentation_paths(out_dir: PathLike, inputs: Mapping[str, Path]) -> dict[str, Path]:
    """``stem -> out_dir/<stem>.seg.dcm`` for inputs that must all be DICOM files.

    Every input's header is checked here, before any frame is read, as `write_segmentation`
    checks it.

    Raises
    ------
    ValueError
        Some inputs are not DICOM files (they are named): ``--dicom-seg`` needs DICOM
        sources, whose identity the SEG copies; or one lacks a `REQUIRED_ATTRIBUTES`
        attribute (the file and the attribute are named).
    ImportError
        highdicom is not installed.
    """
    others = [str(path) for path in inputs.values() if not is_dicom(path)]
    if others:
        shown = ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
        raise ValueError(
            f"dicom_seg (--dicom-seg) needs DICOM inputs, whose patient and study it copies; "
            f"{len(others)} input(s) are not DICOM files ({shown})"
        )
    if highdicom is None:
        raise ImportError(f"writing DICOM Segmentations needs highdicom: {INSTALL_HINT}")
    for path in inputs.values():
        _source_header(Path(path))
    return {stem: Path(out_dir) / f"{stem}{SEG_SUFFIX}" for stem in inputs}


def write_segmentation(
    path: PathLike,
    source: PathLike,
    masks: Mapping[int | None, np.ndarray],
    identity: ModelIdentity,
) -> Path:
    """Write the binary DICOM Segmentation of ``source``'s masks to ``path``.

    Parameters
    ----------
    path
        The SEG file to write (written whole or not at all).
    source
        The DICOM file the masks were segmented from.
    masks
        Frame number (from 1) -> ``(Rows, Columns)`` mask (non-zero is nodule), in the
        order to store; ``None`` as the only key for a single-frame source.
    identity
        The model, for the algorithm identification.

    Raises
    ------
    ValueError
        ``source`` lacks a `REQUIRED_ATTRIBUTES` attribute, or a mask's shape is not the
        source's; the message names the file.
    """
    if highdicom is None:
        raise ImportError(f"writing DICOM Segmentations needs highdicom: {INSTALL_HINT}")
    source = Path(source)
    header = _source_header(source)
    numbers = list(masks)
    stack = np.stack([np.asarray(masks[n]) != 0 for n in numbers])
    if stack.shape[1:] != (header.Rows, header.Columns):
        raise ValueError(
            f"{source}: masks of {stack.shape[1:]} pixels for frames of "
            f"{(header.Rows, header.Columns)}"
        )
    multiframe = "NumberOfFrames" in header
    stand_in = _single_frame_stand_in(header) if multiframe else header
    seg = highdicom.seg.Segmentation(
        source_images=[stand_in],
        pixel_array=stack[:1],
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_nodule_segment(identity)],
        series_instance_uid=highdicom.UID(),
        series_number=1,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer="thyroidseg",
        manufacturer_model_name=identity.name,
        software_versions=identity.version,
        device_serial_number=identity.sha256[:16],
        series_description="thyroidseg nodule segmentation",
        omit_empty_frames=False,
    )
    # General Image, Type 2C: the source's orientation, else empty (highdicom leaves it out)
    seg.PatientOrientation = header.get("PatientOrientation", "")
    if multiframe:
        _reference_frames(seg, header, [int(n) for n in numbers if n is not None], stack)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    try:
        seg.save_as(temporary, enforce_file_format=True)
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


class SegmentationCollector:
    """The masks of a ``predict`` run, per DICOM source, and the SEG written for each.

    Masks are held bit-packed (one bit per pixel) until `write_all`.

    Parameters
    ----------
    targets
        Input stem -> SEG path (`segmentation_paths`).
    sources
        Input stem -> the DICOM file.
    identity
        The model (`thyroidseg.inference.identity.model_identity`).
    """

    def __init__(
        self, targets: Mapping[str, Path], sources: Mapping[str, Path], identity: ModelIdentity
    ) -> None:
        self.targets = dict(targets)
        self.identity = identity
        self._stems = {Path(sources[stem]).name: stem for stem in targets}
        self._sources = {stem: Path(sources[stem]) for stem in targets}
        self._masks: dict[str, dict[int | None, tuple[tuple[int, int], np.ndarray]]] = {}

    def add(self, key: ImageKey, mask: np.ndarray) -> None:
        """Keep the mask of one frame: ``key`` is the file name, or ``(file name, frame)``."""
        name, number = (key, None) if isinstance(key, str) else key
        stem = self._stems[name]
        shape = (int(mask.shape[0]), int(mask.shape[1]))
        self._masks.setdefault(stem, {})[number] = (shape, np.packbits(mask != 0))

    def write_all(self, overwrite: bool) -> dict[str, Path]:
        """Write the SEG of every source with masks; ``stem -> path``.

        With ``overwrite``, the SEG of a source without any mask (all its frames failed) is
        removed, so none is left from an earlier run.
        """
        written = {}
        for stem, target in self.targets.items():
            packed = self._masks.get(stem)
            if not packed:
                if overwrite:
                    target.unlink(missing_ok=True)
                continue
            masks = {
                number: np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape)
                for number, (shape, bits) in sorted(packed.items(), key=lambda i: i[0] or 0)
            }
            written[stem] = write_segmentation(target, self._sources[stem], masks, self.identity)
        return written


def _source_header(source: Path) -> Dataset:
    """The source's attributes (no pixels), checked; absent Type 2 ones empty."""
    try:
        header = pydicom.dcmread(source, stop_before_pixels=True, force=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"{source}: cannot be read as DICOM ({error})") from error
    for keyword in REQUIRED_ATTRIBUTES:
        if keyword not in header or header[keyword].value in (None, ""):
            tag = pydicom.tag.Tag(keyword)
            raise ValueError(
                f"{source}: lacks {keyword} ({tag.group:04X},{tag.element:04X}), which a "
                "DICOM Segmentation must copy from its source; no SEG can be made for it"
            )
    for keyword in EMPTY_IF_ABSENT:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def _single_frame_stand_in(header: Dataset) -> Dataset:
    """The header as a single-frame instance, for highdicom to build one frame's SEG from."""
    stand_in = copy.deepcopy(header)
    del stand_in.NumberOfFrames
    stand_in.SOPClassUID = SecondaryCaptureImageStorage
    return stand_in


def _reference_frames(seg: Dataset, header: Dataset, numbers: list[int], stack: np.ndarray) -> None:
    """Make the one-frame SEG of a stand-in that of ``header``'s ``numbers`` frames."""
    for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence:
        item.ReferencedSOPClassUID = header.SOPClassUID
    for item in seg.SourceImageSequence:
        item.ReferencedSOPClassUID = header.SOPClassUID
    template = seg.PerFrameFunctionalGroupsSequence[0]
    frames = []
    for position, number in enumerate(numbers, start=1):
        group = copy.deepcopy(template)
        referenced = group.DerivationImageSequence[0].SourceImageSequence[0]
        referenced.ReferencedSOPClassUID = header.SOPClassUID
        referenced.ReferencedFrameNumber = number
        content = group.FrameContentSequence[0]
        content.DimensionIndexValues = [1, position]
        content.TemporalPositionIndex = position
        frames.append(group)
    seg.PerFrameFunctionalGroupsSequence = frames
    time_index = Dataset()
    time_index.DimensionOrganizationUID = seg.DimensionOrganizationSequence[0][
        "DimensionOrganizationUID"
    ].value
    time_index.DimensionIndexPointer = pydicom.datadict.tag_for_keyword("TemporalPositionIndex")
    time_index.FunctionalGroupPointer = pydicom.datadict.tag_for_keyword("FrameContentSequence")
    time_index.DimensionDescriptionLabel = "Temporal Position Index"
    seg.DimensionIndexSequence.append(time_index)
    seg.NumberOfFrames = len(numbers)
    seg.PixelData = pack_bits(stack.astype(np.uint8))


def _nodule_segment(identity: ModelIdentity) -> highdicom.seg.SegmentDescription:
    parameters = {"model": identity.name, "model_sha256": identity.sha256}
    if identity.refine_sha256 is not None:
        parameters["refine_sha256"] = identity.refine_sha256
    algorithm = highdicom.AlgorithmIdentificationSequence(
        name="thyroidseg",
        family=codes.cid7162.ArtificialIntelligence,
        version=identity.version,
        parameters=parameters,
    )
    return highdicom.seg.SegmentDescription(
        segment_number=1,
        segment_label="Nodule",
        segmented_property_category=highdicom.sr.CodedConcept(*NODULE_CATEGORY),
        segmented_property_type=highdicom.sr.CodedConcept(*NODULE_TYPE),
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
