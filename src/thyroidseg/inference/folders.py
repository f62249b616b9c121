"""Folders and files of frames through a `Segmenter`: what ``thyroidseg predict`` writes.

`thyroidseg.inference.Segmenter.predict_folder` (``thyroidseg predict``) and
`thyroidseg.inference.Segmenter.predict_file` do their work here: the inputs listed and
split into frames (each frame of a DICOM cine loop is an image of its own, read as it is
segmented), the masks, overlays and probability maps written by the folder loop of
``thyroidseg._io`` (atomic writes, existing outputs refused, failed files listed), and the
nodules measured with `thyroidseg.inference.measurements`. `FolderPrediction` and
`FilePrediction` say what came out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from thyroidseg._io import Inputs, PathLike, map_folder, read_image, write_image
from thyroidseg._outputs import reserve_folder
from thyroidseg.dicom import FrameRange, frame_outputs, is_dicom, read_frame, read_spacing
from thyroidseg.inference.measurements import (
    ImageKey,
    Nodule,
    PixelSpacing,
    measure,
    write_loops_csv,
    write_measurements_csv,
)
from thyroidseg.inference.overlay import overlay
from thyroidseg.preprocessing.pipeline import Preprocessed
from thyroidseg.spacing import FrameSpacing, check_spacing

if TYPE_CHECKING:  # the Segmenter calls these functions; it imports this module
    from thyroidseg.inference.segmenter import Segmenter

__all__ = [
    "LOOPS_CSV",
    "MEASUREMENTS_CSV",
    "OVERLAYS_DIR",
    "PROBABILITIES_DIR",
    "FilePrediction",
    "FolderPrediction",
]

OVERLAYS_DIR = "overlays"
"""Sub-folder of `Segmenter.predict_folder`'s output for the overlay pictures."""
PROBABILITIES_DIR = "probabilities"
"""Sub-folder of `Segmenter.predict_folder`'s output for the probability maps."""
MEASUREMENTS_CSV = "measurements.csv"
"""File of `Segmenter.predict_folder`'s output with one row per nodule."""
LOOPS_CSV = "loops.csv"
"""File beside `MEASUREMENTS_CSV` with one row per cine loop (`write_loops_csv`)."""


@dataclass(frozen=True)
class FolderPrediction:
    """What `Segmenter.predict_folder` wrote, and how long it took.

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
    """

    out_dir: Path
    masks: dict[str, Path]
    overlays: dict[str, Path]
    probabilities: dict[str, Path]
    measurements: Path | None
    nodules: int
    seconds: float
    loops: Path | None = None

    @property
    def frames(self) -> int:
        """Frames segmented (``len(masks)``)."""
        return len(self.masks)

    def summary(self) -> str:
        """One line: frames, nodules, time, frames per second, and where the files went."""
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
        return (
            f"segmented {self.frames} frames, {self.nodules} nodules in {self.seconds:.1f} s "
            f"({rate:.1f} frames/s): " + ", ".join(places)
        )


@dataclass(frozen=True)
class FilePrediction:
    """What `Segmenter.predict_file` found in one file (an image, or a DICOM cine loop).

    Attributes
    ----------
    path
        The file.
    frames
        Frame numbers (from 1) of the masks, in order; ``(1,)`` for a single image.
    masks
        One ``uint8`` ``{0, 1}`` ``(H, W)`` mask per frame, as `Segmenter.predict` returns.
    spacing
        The pixel size the file states (`thyroidseg.dicom.read_spacing`); source
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


def _predict_folder(
    segmenter: Segmenter,
    in_dir: Inputs,
    out_dir: PathLike,
    *,
    tta: bool | None,
    overlays: bool,
    probabilities: bool,
    measurements: bool,
    pixel_spacing: PixelSpacing | Literal["auto"] | None,
    frames: str | FrameRange,
    overwrite: bool,
    progress: bool | None,
) -> FolderPrediction:
    """`Segmenter.predict_folder` (documented there)."""
    spacing = _spacing_rule(pixel_spacing, measurements)
    selection = FrameRange.parse(frames)
    use_tta = segmenter._tta(tta)
    out_dir = Path(out_dir)
    wanted = ((OVERLAYS_DIR, overlays), (PROBABILITIES_DIR, probabilities))
    extras = {name: out_dir / name for name, on in wanted if on}
    csv_path = out_dir / MEASUREMENTS_CSV if measurements else None
    loops_path = out_dir / LOOPS_CSV if measurements else None
    loops = None
    with reserve_folder(out_dir):  # held until the CSV is written too
        found: dict[ImageKey, list[Nodule]] = {}
        pictures: dict[str, dict[str, Path]] = {name: {} for name in extras}
        need_probabilities = probabilities or measurements

        def split(stem: str, source: Path) -> dict[str, _Item]:
            outputs = frame_outputs(stem, source, selection)
            here = spacing
            if spacing == "auto":
                here = read_spacing(source) if is_dicom(source) else FrameSpacing("none")
            return {name: _Item(source, index, here) for name, index in outputs.items()}

        def load(item: _Item) -> _LoadedFrame:
            if item.index is None:
                image = read_image(item.source)
                return _LoadedFrame(
                    item.source.name, image, segmenter._prepare(image), item.spacing
                )
            number = item.index + 1
            try:
                image = read_frame(item.source, item.index)
                prepared = segmenter._prepare(image)
            except ValueError as error:
                raise ValueError(f"{item.source}: frame {number}: {error}") from error
            return _LoadedFrame((item.source.name, number), image, prepared, item.spacing)

        def save(batch: dict[Path, _LoadedFrame]) -> None:
            frames = list(batch.values())
            segmented = segmenter._segment(
                [f.prepared for f in frames], use_tta, need_probabilities
            )
            for target, frame, (mask, probability) in zip(batch, frames, segmented, strict=True):
                write_image(target, mask * np.uint8(255))
                found[frame.key] = measure(mask, frame.spacing, probability, frame.prepared.views)
                if OVERLAYS_DIR in extras:
                    path = write_image(
                        extras[OVERLAYS_DIR] / target.name, overlay(frame.image, mask)
                    )
                    pictures[OVERLAYS_DIR][target.stem] = path
                if PROBABILITIES_DIR in extras:
                    grey = np.round(probability * 255).astype(np.uint8)
                    path = write_image(extras[PROBABILITIES_DIR] / target.name, grey)
                    pictures[PROBABILITIES_DIR][target.stem] = path

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
                companions=list(extras.values()),
                also_writes=[csv_path, loops_path] if csv_path is not None else [],
                progress=progress,
            )
        finally:  # the rows of every frame written, also when some frames failed
            if csv_path is not None and found:
                write_measurements_csv(csv_path, found)
                loops = write_loops_csv(loops_path, found)
            if loops is None and loops_path is not None:
                loops_path.unlink(missing_ok=True)  # an earlier run's, replaced by none
        return FolderPrediction(
            out_dir=out_dir,
            masks=written,
            overlays=pictures.get(OVERLAYS_DIR, {}),
            probabilities=pictures.get(PROBABILITIES_DIR, {}),
            measurements=csv_path,
            nodules=sum(len(nodules) for nodules in found.values()),
            seconds=time.perf_counter() - start,
            loops=loops,
        )


def _predict_file(
    segmenter: Segmenter, path: PathLike, *, frames: str | FrameRange, tta: bool | None
) -> FilePrediction:
    """`Segmenter.predict_file` (documented there)."""
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
        raise ValueError("pixel_spacing (--pixel-spacing) needs measurements (--measure)")
    if isinstance(pixel_spacing, str) and pixel_spacing == "auto":
        return "auto"
    return FrameSpacing("user", check_spacing(pixel_spacing, "pixel_spacing (--pixel-spacing)"))
