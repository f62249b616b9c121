"""Folders and files of frames through a `Segmenter`: what ``thyroidseg predict`` writes.

`predict_folder` (``thyroidseg predict``) and `predict_file` do this work, through the
Segmenter's public `Segmenter.prepare` and `Segmenter.measure_prepared`: the inputs listed and
split into frames (each frame of a DICOM cine loop is an image of its own, read as it is
segmented), the masks, overlays and probability maps written by the folder loop of
``thyroidseg.io.files`` (atomic writes, existing outputs refused, failed files listed), and the
nodules measured with `thyroidseg.inference.measurements`. `FolderPrediction` and
`FilePrediction` say what came out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from thyroidseg._checks import PathLike, check_flag
from thyroidseg.inference._frames import _prepare_read
from thyroidseg.inference.measurements import (
    ImageKey,
    Nodule,
    PixelSpacing,
    _measurement_cells,
    write_loops_csv,
)
from thyroidseg.inference.overlay import overlay
from thyroidseg.io.dicom import FrameRange, frame_outputs, is_dicom, read_frame, read_spacing
from thyroidseg.io.dicom_seg import SegmentationCollector, segmentation_paths
from thyroidseg.io.files import Inputs, csv_text, list_inputs, read_image, write_image
from thyroidseg.io.folder_loop import map_folder
from thyroidseg.io.outputs import LOCK_FILE, reserve_folder
from thyroidseg.io.provenance import command_line
from thyroidseg.io.report import REPORT_HTML, ReportBuilder, counted
from thyroidseg.io.spacing import FrameSpacing, check_spacing
from thyroidseg.preprocessing.pipeline import Preprocessed

if TYPE_CHECKING:  # the segmenters and the shards call these functions; they import this module
    from thyroidseg.inference.base import SegmenterBase
    from thyroidseg.inference.shards import _ShardRun

__all__ = [
    "LOOPS_CSV",
    "MEASUREMENTS_CSV",
    "OVERLAYS_DIR",
    "PROBABILITIES_DIR",
    "FilePrediction",
    "FolderPrediction",
    "predict_file",
    "predict_folder",
]

OVERLAYS_DIR = "overlays"
"""Sub-folder of `predict_folder`'s output for the overlay pictures."""
PROBABILITIES_DIR = "probabilities"
"""Sub-folder of `predict_folder`'s output for the probability maps."""
MEASUREMENTS_CSV = "measurements.csv"
"""File of `predict_folder`'s output with one row per nodule."""
LOOPS_CSV = "loops.csv"
"""File beside `MEASUREMENTS_CSV` with one row per cine loop (`write_loops_csv`)."""


@dataclass(frozen=True)
class FolderPrediction:
    """What `predict_folder` wrote, and how long it took.

    Attributes
    ----------
    out_dir
        The output folder.
    masks
        ``stem -> out_dir/<stem>.png`` for every frame segmented, in stem order.
    overlays, probabilities
        ``stem -> out_dir/overlays/<stem>.png`` (``.../probabilities/<stem>.png``); empty
        when not asked for.
    measurements
        ``out_dir/measurements.csv``, or ``None`` when not asked for.
    loops
        ``out_dir/loops.csv`` (the largest nodule of each cine loop and its frame), or
        ``None`` when no loop was measured.
    nodules
        Nodules (8-connected components, per view) in all the masks written.
    seconds
        Wall time of the whole folder: reading, preprocessing, the network, writing.
    empty_frames
        Frames segmented without any nodule.
    nodules_in_pixels
        With measurements, the nodules measured in pixels only (no pixel spacing known).
    report
        ``out_dir/report.html`` (`thyroidseg.io.report`), or ``None`` when not asked for.
    segmentations
        ``stem -> out_dir/<stem>.seg.dcm`` (`thyroidseg.io.dicom_seg`); empty when not
        asked for.
    review
        Nodules flagged for review (expected IoU under the estimator's threshold,
        `thyroidseg.inference.quality`, or on a frame that fails the scan check); ``None``
        when the segmenter has no estimator and no frame failed.
    not_thyroid_frames
        Frames with nodules that do not look like thyroid B-mode scans
        (`thyroidseg.preprocessing.scan_check.check_scan`; their nodules are flagged).
    """

    out_dir: Path
    masks: dict[str, Path]
    overlays: dict[str, Path]
    probabilities: dict[str, Path]
    measurements: Path | None
    nodules: int
    seconds: float
    loops: Path | None = None
    empty_frames: int = 0
    nodules_in_pixels: int = 0
    report: Path | None = None
    segmentations: dict[str, Path] = field(default_factory=dict)
    review: int | None = None
    not_thyroid_frames: int = 0

    @property
    def frames(self) -> int:
        """Frames segmented (``len(masks)``)."""
        return len(self.masks)

    def summary(self) -> str:
        """Frames, nodules, frames without one, time, frames per second, where the files went;
        a second line when nodules were measured in pixels only."""
        rate = self.frames / self.seconds if self.seconds > 0 else float("inf")
        places = [f"masks in {self.out_dir}"]
        if self.overlays:
            places.append(f"overlays in {self.out_dir / OVERLAYS_DIR}")
        if self.probabilities:
            places.append(f"probabilities in {self.out_dir / PROBABILITIES_DIR}")
        if self.measurements is not None:
            places.append(f"measurements in {self.measurements}")
        if self.loops is not None:
            places.append(f"loops in {self.loops}")
        if self.report is not None:
            places.append(f"report in {self.report}")
        if self.segmentations:
            places.append(f"{counted(len(self.segmentations), 'DICOM Segmentation')} in *.seg.dcm")
        flagged = f" ({self.review} to review)" if self.review is not None else ""
        line = (
            f"segmented {counted(self.frames, 'frame')}, {counted(self.nodules, 'nodule')}"
            f"{flagged} in "
            f"{self.seconds:.1f} s ({rate:.1f} frames/s; "
            f"{counted(self.empty_frames, 'frame')} without a nodule): " + ", ".join(places)
        )
        if self.not_thyroid_frames:
            line += (
                f"\n{counted(self.not_thyroid_frames, 'frame')} with nodules failed the scan "
                "check (colour, a fan-shaped field of view or no echo: not a thyroid B-mode "
                "scan); their nodules are flagged for review, the reason in the scan_warning "
                "column of measurements.csv"
            )
        if self.nodules_in_pixels:
            line += (
                f"\n{self.nodules_in_pixels} of {counted(self.nodules, 'nodule')} measured in "
                "pixels only: no pixel spacing is known for their frames (the _mm columns are "
                "empty); give the size of a pixel in mm with pixel_spacing (--pixel-spacing)"
            )
        return line


@dataclass(frozen=True)
class FilePrediction:
    """What `predict_file` found in one file (an image, or a DICOM cine loop).

    Attributes
    ----------
    path
        The file.
    frames
        Frame numbers (from 1) of the masks, in order; ``(1,)`` for a single image.
    masks
        One ``uint8`` ``{0, 1}`` ``(H, W)`` mask per frame, as `Segmenter.predict` returns.
    spacing
        The pixel size the file states (`thyroidseg.io.dicom.read_spacing`); source
        ``"none"`` for an image that is not DICOM. ``measure(mask, spacing)`` measures a
        mask in millimetres.
    """

    path: Path
    frames: tuple[int, ...]
    masks: list[np.ndarray]
    spacing: FrameSpacing


@dataclass(frozen=True)
class _Item:
    """One output of a folder: its file, its frame index (None: the only one), its spacing."""

    source: Path
    index: int | None
    spacing: FrameSpacing | None


@dataclass(frozen=True)
class _LoadedFrame:
    """One frame of a folder: its CSV key, pixels, preprocessing and pixel size."""

    key: ImageKey
    image: np.ndarray
    prepared: Preprocessed
    spacing: FrameSpacing | None


def predict_folder(
    segmenter: SegmenterBase,
    in_dir: Inputs,
    out_dir: PathLike,
    *,
    tta: bool | None = None,
    overlays: bool = False,
    probabilities: bool = False,
    measurements: bool = False,
    pixel_spacing: PixelSpacing | Literal["auto"] | None = None,
    frames: str | FrameRange = "all",
    overwrite: bool = False,
    progress: bool | None = None,
    report: bool = False,
    dicom_seg: bool = False,
    shard: _ShardRun | None = None,
) -> FolderPrediction:
    """Segment every image ``in_dir`` names and write the results into ``out_dir``.

    ``in_dir`` is a folder, an image file, a glob pattern or a sequence of these
    (`thyroidseg.io.files.list_inputs`; DICOM files count as images); outputs are named by
    the inputs' stems. Each selected frame of a DICOM cine loop is an image of its own,
    ``<stem>_f0001``, ``<stem>_f0002``..., segmented in batches as it is read from the
    file (the loop is never held in memory).

    Writes ``out_dir/<stem>.png``, the mask (``{0, 255}``, the frame's size), and on
    request:

    - ``overlays``: ``out_dir/overlays/<stem>.png``, the frame with the predicted
      outline (`overlay`);
    - ``probabilities``: ``out_dir/probabilities/<stem>.png``, the nodule probability of
      `Segmenter.predict` as 8-bit grey, ``round(255 p)``, at the frame's size;
    - ``measurements``: ``out_dir/measurements.csv``, one row per nodule of each
      written mask (`thyroidseg.inference.measurements.measure` with the frame's views and its
      probability map; columns of `thyroidseg.inference.measurements.write_measurements_csv`,
      ``image`` the frame's file name, ``frame`` its number in a cine loop), with
      millimetre columns and ``spacing_source`` when ``pixel_spacing`` is given;
    - ``report``: ``out_dir/report.html``, one offline page with every frame's outline
      and measurements, nodules flagged for review first (`thyroidseg.io.report`);
    - ``dicom_seg``: ``out_dir/<stem>.seg.dcm`` per DICOM input, a binary DICOM
      Segmentation referencing it (`thyroidseg.io.dicom_seg`; every input must be DICOM,
      checked before anything is read).

    The folder loop is `thyroidseg.io.folder_loop.map_folder`'s: every file is written atomically;
    existing outputs (masks, overlays, probability maps, the CSV) are an error unless
    ``overwrite``, all checked before anything is written; a frame that cannot be read or
    preprocessed does not stop the others: once every other frame and the CSV (with the
    rows of the frames done) are written, a ``ValueError`` lists each failed file.

    Parameters
    ----------
    segmenter
        The `Segmenter` that segments the frames (its ``batch_size`` frames per pass).
    in_dir, out_dir
        Folder of frames (not recursive) and output folder (created).
    tta
        As for `Segmenter.predict`.
    overlays, probabilities, measurements
        Write these outputs too (default: masks only).
    pixel_spacing
        Millimetres per pixel for the CSV's ``_mm`` columns (needs ``measurements``):
        one number or ``(row, col)``, for every frame (source ``user``); or ``"auto"``:
        the size each DICOM file states (`thyroidseg.io.dicom.read_spacing`: its ultrasound
        region, else Pixel Spacing), none for other images (empty ``_mm`` cells).
        Spacings outside 0.0001-10 mm are refused (`thyroidseg.io.spacing.check_spacing`),
        a file's as that file's failure.
    frames
        Frames of each cine loop: ``"all"`` (default), ``"first"``, ``"N-M"`` (numbers
        from 1, `thyroidseg.io.dicom.FrameRange`).
    overwrite
        Replace existing outputs. With ``report``/``dicom_seg``, a report or SEG that this
        run cannot make (no frame of it segmented) is removed.
    progress
        Progress bar: ``None`` on a terminal only, ``False`` never.
    report, dicom_seg
        Write the report, the DICOM Segmentations (default: neither). The report's
        sizes are in mm where ``pixel_spacing`` gives them (``"auto"``: what each DICOM
        file states), else in pixels.
    shard
        Set by `thyroidseg.inference.shards.predict_shard` (``predict --shard K/N``): that
        shard's part of the work (its inputs, its lock, its tables' and report's names).

    Returns
    -------
    FolderPrediction
        The files written, the nodule count and the wall time (`FolderPrediction.summary`
        is the one line ``thyroidseg predict`` prints).
    """
    spacing = _spacing_rule(pixel_spacing, measurements or report)
    selection = FrameRange.parse(frames)
    use_tta = segmenter.tta if tta is None else check_flag("tta", tta)  # before any file
    out_dir = Path(out_dir)
    wanted = ((OVERLAYS_DIR, overlays), (PROBABILITIES_DIR, probabilities))
    extras = {name: out_dir / name for name, on in wanted if on}
    named = (lambda name: name) if shard is None else shard.table
    csv_path = out_dir / named(MEASUREMENTS_CSV) if measurements else None
    loops_path = out_dir / named(LOOPS_CSV)
    sources = list_inputs(in_dir) if dicom_seg else {}
    if shard is not None:  # the SEG files of this shard's inputs only
        sources = shard.select(sources)
    seg_paths = segmentation_paths(out_dir, sources) if dicom_seg else {}  # refuses non-DICOM
    identity = segmenter.identity() if report or dicom_seg else None
    reporter = segmentations = None
    if report and identity is not None:
        settings = segmenter.describe() | {"tta": use_tta, "frames": str(frames)}
        settings["pixel_spacing"] = spacing if spacing in (None, "auto") else str(spacing)
        reporter = ReportBuilder(out_dir / named(REPORT_HTML), identity, settings, command_line())
    if dicom_seg and identity is not None:
        segmentations = SegmentationCollector(seg_paths, sources, identity)
    loops = None
    started = False  # the outputs passed their checks and the first frame was read
    lock = LOCK_FILE if shard is None else shard.lock
    with reserve_folder(out_dir, name=lock):  # held until the CSV is written too
        found: dict[ImageKey, list[Nodule]] = {} if shard is None else shard.found
        pictures: dict[str, dict[str, Path]] = {name: {} for name in extras}

        def split(stem: str, source: Path) -> dict[str, _Item]:
            outputs = frame_outputs(stem, source, selection)
            here = spacing
            if isinstance(here, str):  # "auto"
                here = read_spacing(source) if is_dicom(source) else FrameSpacing("none")
            return {name: _Item(source, index, here) for name, index in outputs.items()}

        def load(item: _Item) -> _LoadedFrame:
            nonlocal started
            started = True
            if item.index is None:
                image = read_image(item.source)
                prepared = _prepare_read(segmenter.prepare, image, item.source)
                return _LoadedFrame(item.source.name, image, prepared, item.spacing)
            number = item.index + 1
            image = read_frame(item.source, item.index)  # its errors name the file and frame
            prepared = _prepare_read(segmenter.prepare, image, f"{item.source}: frame {number}")
            return _LoadedFrame((item.source.name, number), image, prepared, item.spacing)

        def save(batch: dict[Path, _LoadedFrame]) -> None:
            frames = list(batch.values())
            segmented = segmenter.measure_prepared(
                [f.prepared for f in frames],
                [f.spacing for f in frames],
                tta=use_tta,
                frames=[f.image for f in frames],
            )
            for target, frame, (mask, probability, nodules) in zip(
                batch, frames, segmented, strict=True
            ):
                write_image(target, mask * np.uint8(255))
                found[frame.key] = nodules
                outlined = (
                    overlay(frame.image, mask, nodules=nodules) if overlays or report else None
                )
                if reporter is not None and outlined is not None:
                    reporter.add(frame.key, outlined, found[frame.key])
                if segmentations is not None:
                    segmentations.add(frame.key, mask)
                if OVERLAYS_DIR in extras and outlined is not None:
                    path = write_image(extras[OVERLAYS_DIR] / target.name, outlined)
                    pictures[OVERLAYS_DIR][target.stem] = path
                if PROBABILITIES_DIR in extras and probability is not None:  # it is asked
                    grey = np.round(probability * 255).astype(np.uint8)
                    path = write_image(extras[PROBABILITIES_DIR] / target.name, grey)
                    pictures[PROBABILITIES_DIR][target.stem] = path

        def tables(failures: dict[str, str]) -> bytes:
            """measurements.csv, with loops.csv beside it: map_folder writes them once its
            checks passed and every frame was tried, also when some (or all) failed."""
            nonlocal loops
            loops = write_loops_csv(loops_path, found)
            if loops is None:  # an earlier run's (the checks allowed replacing it): none now
                loops_path.unlink(missing_ok=True)
            return csv_text(*_measurement_cells(found)).encode()

        start = time.perf_counter()
        try:
            written = map_folder(
                in_dir,
                out_dir,
                load,
                save,
                verb="segmented",
                split=split,
                overwrite=overwrite,
                batch_size=segmenter.batch_size,
                summary=None if csv_path is None else (csv_path, tables),
                companions=list(extras.values()),
                also_writes=[
                    *([loops_path] if measurements else []),
                    *([reporter.path] if reporter is not None else []),
                    *seg_paths.values(),
                ],
                progress=progress,
                select=None if shard is None else shard.select,
                lock=lock,
            )
        except ValueError as error:  # failed frames: the report says so
            if reporter is not None:
                reporter.failures = str(error)
            raise
        finally:  # the report and the SEGs of every frame segmented, also when some failed
            written_report = _finish_report(reporter, started, overwrite)
            written_segs = segmentations.write_all(overwrite) if started and segmentations else {}
        nodules = [nodule for frame_nodules in found.values() for nodule in frame_nodules]
        return FolderPrediction(
            out_dir=out_dir,
            masks=written,
            overlays=pictures.get(OVERLAYS_DIR, {}),
            probabilities=pictures.get(PROBABILITIES_DIR, {}),
            measurements=csv_path,
            nodules=len(nodules),
            seconds=time.perf_counter() - start,
            loops=loops,
            empty_frames=sum(1 for frame_nodules in found.values() if not frame_nodules),
            nodules_in_pixels=sum(1 for n in nodules if n.area_mm2 is None) if measurements else 0,
            report=written_report,
            segmentations=written_segs,
            review=None
            if segmenter.quality is None and not any(n.review for n in nodules)
            else sum(bool(n.review) for n in nodules),
            not_thyroid_frames=sum(
                1 for rows in found.values() if any(n.scan_warning for n in rows)
            ),
        )


def _finish_report(reporter: ReportBuilder | None, started: bool, overwrite: bool) -> Path | None:
    """Write the report of the frames done; with none done, remove an earlier run's."""
    if reporter is None or not started:
        return None
    if reporter.frames:
        return reporter.write()
    if overwrite:
        reporter.path.unlink(missing_ok=True)
    return None


def predict_file(
    segmenter: SegmenterBase,
    path: PathLike,
    *,
    frames: str | FrameRange = "all",
    tta: bool | None = None,
) -> FilePrediction:
    """Segment one file: an image, or the ``frames`` of a DICOM cine loop.

    Frames are read from the file ``batch_size`` at a time and segmented as they come,
    so a loop is never held in memory, only its masks.

    Parameters
    ----------
    segmenter
        The `Segmenter` that segments the frames.
    path
        An image or DICOM file.
    frames
        As for `predict_folder` (``"all"``, ``"first"``, ``"N-M"``).
    tta
        As for `Segmenter.predict`.

    Returns
    -------
    FilePrediction
        The masks, their frame numbers and the pixel size the file states.

    Raises
    ------
    FileNotFoundError, ValueError, ImportError
        As `thyroidseg.io.dicom.read_frame` and `thyroidseg.io.dicom.read_spacing` (an
        implausible pixel size included); a frame that cannot be preprocessed.
    """
    path = Path(path)
    indices = list(frame_outputs(path.stem, path, frames).values())
    spacing = read_spacing(path) if is_dicom(path) else FrameSpacing("none")
    masks: list[np.ndarray] = []
    for start in range(0, len(indices), segmenter.batch_size):
        chunk = indices[start : start + segmenter.batch_size]
        images = [read_image(path) if i is None else read_frame(path, i) for i in chunk]
        masks += segmenter.predict_many(images, tta=tta)
    numbers = tuple(1 if i is None else i + 1 for i in indices)
    return FilePrediction(path=path, frames=numbers, masks=masks, spacing=spacing)


def _spacing_rule(
    pixel_spacing: object, measurements: bool
) -> FrameSpacing | Literal["auto"] | None:
    """`predict_folder`'s ``pixel_spacing``, checked: ``"auto"``, a user spacing, or none."""
    if pixel_spacing is None:
        return None
    if not measurements:
        raise ValueError(
            "pixel_spacing (--pixel-spacing) needs measurements (--measure) or report (--report)"
        )
    if isinstance(pixel_spacing, str) and pixel_spacing == "auto":
        return "auto"
    return FrameSpacing("user", check_spacing(pixel_spacing, "pixel_spacing (--pixel-spacing)"))
