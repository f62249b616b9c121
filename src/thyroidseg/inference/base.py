"""What a segmenter does around its network, in numpy and OpenCV: `SegmenterBase`.

Both segmenters share it: `thyroidseg.inference.Segmenter` (the network in PyTorch) and
`thyroidseg.inference.OnnxSegmenter` (the exported networks in ONNX Runtime, no PyTorch).
A subclass supplies one method, the class probabilities of a batch of preprocessed frames
(``(N, 1, H, W)`` float32 in ``[0, 1]`` in, ``(N, K, H, W)`` softmax out, flip TTA
included); everything else is here: preprocessing (`thyroidseg.preprocessing.preprocess`),
the mapping back to the frame, the second stage
(`thyroidseg.inference.refine_base.RefinerBase`), post-processing
(`thyroidseg.inference.postprocess.postprocess_views`), the folder and file loops
(`thyroidseg.inference.folders`), the thread count and `SegmenterBase.describe`, the
settings as data. This module imports no PyTorch.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, NamedTuple, TypedDict, overload

import numpy as np

from thyroidseg._checks import PathLike, check_flag, check_int, check_probability
from thyroidseg.inference._frames import (
    _evidence,
    _frame_sequence,
    _prepare_read,
    _probability_to_original,
)
from thyroidseg.inference.flips import mirrored_pair, tta_probabilities
from thyroidseg.inference.folders import (
    FilePrediction,
    FolderPrediction,
    predict_file,
    predict_folder,
)
from thyroidseg.inference.measurements import Nodule, PixelSpacing, measure
from thyroidseg.inference.postprocess import postprocess_views
from thyroidseg.inference.quality import Evidence, ExpectedIoU, assess
from thyroidseg.inference.refine_base import RefinerBase
from thyroidseg.inference.shards import Shard, predict_shard
from thyroidseg.io.dicom import FrameRange
from thyroidseg.io.export_format import FORMAT, VERSION
from thyroidseg.io.files import Inputs, read_image
from thyroidseg.io.provenance import ModelIdentity
from thyroidseg.io.spacing import FrameSpacing
from thyroidseg.io.threads import Threads, opencv_threads, resolve_threads
from thyroidseg.preprocessing.pipeline import (
    Preprocessed,
    preprocess,
    preprocess_settings,
    to_unit_range,
)
from thyroidseg.preprocessing.scan_check import check_scan

__all__ = ["Frame", "Prediction", "Segmented", "SegmenterBase", "SegmenterSettings"]

Frame = np.ndarray | PathLike
Prediction = np.ndarray | tuple[np.ndarray, np.ndarray]


class Segmented(NamedTuple):
    """One frame as `SegmenterBase.segment_with_evidence` segments it."""

    mask: np.ndarray
    """``uint8`` ``{0, 1}`` nodule mask at the frame's size, after post-processing."""
    probability: np.ndarray
    """``float32`` nodule probability at the frame's size (as `SegmenterBase.predict`)."""
    evidence: Evidence
    """What the expected IoU is estimated from besides them
    (`thyroidseg.inference.quality.Evidence`)."""


class SegmenterSettings(TypedDict, total=False):
    """The keyword settings of `SegmenterBase`, which its subclasses pass through."""

    keep_largest: bool
    min_area: int
    fill_holes: bool
    tta: bool
    batch_size: int
    refiner: RefinerBase | None
    min_probability: float
    threads: Threads
    quality: ExpectedIoU | None


class SegmenterBase(abc.ABC):
    """Segment whole scanner frames at their own size, around a network a subclass runs.

    Parameters
    ----------
    preprocess_options
        Keyword arguments of `thyroidseg.preprocessing.preprocess` (including ``size``),
        exactly as in training. Default: ``preprocess``'s defaults.
    keep_largest, min_area, fill_holes, min_probability
        Per-view post-processing, see `postprocess_views` (default: off). A component
        whose mean nodule probability is under ``min_probability`` is no reported nodule.
    tta
        Test-time augmentation by default: average the class probabilities of the frame
        and of its left-right mirror image (mirrored back) before taking the most probable
        class. Twice the network cost (default ``False``). Each ``predict*`` call may
        override it.
    batch_size
        Frames per forward pass in `predict_many` and `predict_folder` (default 8).
    refiner
        A second stage (`thyroidseg.inference.refine_base.RefinerBase`) that segments each
        nodule found by the network again from a full-resolution crop; the mask is
        post-processed before it (the components it refines) and again after it (default:
        none). Its cleaning options (``crop``, ``margin``, ``inpaint_annotations``) must be
        the network's.
    threads
        CPU threads of each ``predict*`` call: a count, ``"auto"`` (default: the cores
        that other jobs leave free when the segmenter is built,
        `thyroidseg.runtime.free_cores`) or ``None`` (the process's settings, untouched).
        Applied to OpenCV (and, by a subclass, to its network) during each call only; the
        previous counts are restored after it (docs/deployment.md).
    quality
        The estimator of each nodule's expected IoU with an expert outline
        (`thyroidseg.inference.quality.ExpectedIoU`), fitted for as many stages as segment
        here (``quality.stages``: 2 with a ``refiner``, else 1). It fills in
        `thyroidseg.inference.measurements.Nodule.expected_iou` and ``review`` in `measure`,
        `measure_prepared` and `predict_folder`; without ``tta`` it costs them the
        mirror-image pass of the whole-frame network. Default: none.
    """

    def __init__(
        self,
        preprocess_options: Mapping[str, Any] | None = None,
        *,
        keep_largest: bool = False,
        min_area: int = 0,
        fill_holes: bool = False,
        tta: bool = False,
        batch_size: int = 8,
        refiner: RefinerBase | None = None,
        min_probability: float = 0.0,
        threads: Threads = "auto",
        quality: ExpectedIoU | None = None,
    ) -> None:
        check_int("batch_size", batch_size, 1)
        check_int("min_area", min_area, 0)
        for name, value in (("keep_largest", keep_largest), ("fill_holes", fill_holes)):
            check_flag(name, value)
        self.preprocess_options = dict(preprocess_options or {})
        self.keep_largest, self.min_area, self.batch_size = keep_largest, min_area, batch_size
        self.fill_holes, self.tta = fill_holes, check_flag("tta", tta)
        if refiner is not None and not isinstance(refiner, RefinerBase):
            raise ValueError(
                f"refiner must be a thyroidseg.inference.refine.Refiner, got {refiner!r}"
            )
        if refiner is not None:
            refiner.check_cleaning(self.preprocess_options)
        self.refiner = refiner
        self.min_probability = check_probability("min_probability", min_probability)
        self.threads = resolve_threads(threads)
        stages = 1 if refiner is None else 2
        if quality is not None and (
            not isinstance(quality, ExpectedIoU) or quality.stages != stages
        ):
            raise ValueError(
                f"quality must be an ExpectedIoU fitted for {stages} stage(s) (the refine "
                f"stage is {'on' if refiner else 'off'}), got {quality!r}"
            )
        self.quality = quality

    def describe(self) -> dict[str, Any]:
        """How frames are segmented, as data: the JSON that `thyroidseg.models.export` writes
        beside a segmenter's networks and `thyroidseg.inference.OnnxSegmenter` reads.

        ``{"format": "thyroidseg-segmenter", "version": 2, "preprocess_options", "tta",
        "keep_largest", "min_area", "fill_holes", "min_probability", "refine", "quality"}``;
        ``"refine"`` is `thyroidseg.inference.refine_base.RefinerBase.describe` or ``None``,
        ``"quality"`` `thyroidseg.inference.quality.ExpectedIoU.to_dict` or ``None``.
        docs/deployment.md defines each key.
        """
        return {
            "format": FORMAT,
            "version": VERSION,
            "preprocess_options": preprocess_settings(**self.preprocess_options),
            "tta": self.tta,
            "keep_largest": self.keep_largest,
            "min_area": self.min_area,
            "fill_holes": self.fill_holes,
            "min_probability": self.min_probability,
            "refine": self.refiner.describe() if self.refiner is not None else None,
            "quality": self.quality.to_dict() if self.quality is not None else None,
        }

    @overload
    def predict(
        self, image: Frame, *, tta: bool | None = ..., return_probabilities: Literal[False] = ...
    ) -> np.ndarray: ...
    @overload
    def predict(
        self, image: Frame, *, tta: bool | None = ..., return_probabilities: Literal[True]
    ) -> tuple[np.ndarray, np.ndarray]: ...
    @overload
    def predict(
        self, image: Frame, *, tta: bool | None = ..., return_probabilities: bool
    ) -> Prediction: ...
    def predict(
        self, image: Frame, *, tta: bool | None = None, return_probabilities: bool = False
    ) -> Prediction:
        """Segment one frame (array or path) at its own size.

        Parameters
        ----------
        image
            ``(H, W)`` grey or ``(H, W, 3)`` BGR array (8- or 16-bit), or an image file.
        tta
            Flip test-time augmentation for this call; ``None`` (default): the segmenter's
            ``tta``.
        return_probabilities
            Also return the nodule probability map (default ``False``).

        Returns
        -------
        numpy.ndarray or (numpy.ndarray, numpy.ndarray)
            The ``uint8`` ``{0, 1}`` ``(H, W)`` nodule mask, after post-processing. With
            ``return_probabilities``, also the ``float32`` ``(H, W)`` nodule probability
            (the softmax of class 1, TTA-averaged when on) in ``[0, 1]``: the network's map
            resampled bilinearly (pixel centres aligned) from the network frame onto the
            frame's crop box, and 0 outside every view of the scan region. The mask is
            the argmax on the network frame carried back by nearest neighbour, so
            ``probability > 0.5`` can differ from it within a pixel of its outline, and
            where post-processing removed or filled something.

        Raises
        ------
        ValueError
            ``image`` is a list or tuple (use `predict_many`), or cannot be preprocessed
            (the message names the file).
        """
        if isinstance(image, list | tuple):
            raise ValueError(
                f"predict takes one frame, got a {type(image).__name__}; "
                "use predict_many for several"
            )
        return self.predict_many([image], tta=tta, return_probabilities=return_probabilities)[0]

    @overload
    def predict_many(
        self,
        images: Sequence[Frame] | np.ndarray,
        *,
        tta: bool | None = ...,
        return_probabilities: Literal[False] = ...,
    ) -> list[np.ndarray]: ...
    @overload
    def predict_many(
        self,
        images: Sequence[Frame] | np.ndarray,
        *,
        tta: bool | None = ...,
        return_probabilities: Literal[True],
    ) -> list[tuple[np.ndarray, np.ndarray]]: ...
    @overload
    def predict_many(
        self,
        images: Sequence[Frame] | np.ndarray,
        *,
        tta: bool | None = ...,
        return_probabilities: bool,
    ) -> list[Prediction]: ...
    def predict_many(
        self,
        images: Sequence[Frame] | np.ndarray,
        *,
        tta: bool | None = None,
        return_probabilities: bool = False,
    ) -> list[Any]:
        """Segment a batch of frames (any sizes), ``batch_size`` frames per forward pass.

        ``predict_many(images)[i]`` is what ``predict(images[i])`` returns, with the same
        ``tta`` and ``return_probabilities``; a separate method so that the return type
        never depends on the input's shape (as `thyroidseg.inference.measurements.measure_many`).

        Parameters
        ----------
        images
            A sequence of frames (arrays or paths), or an ``(N, H, W)`` array.
        tta, return_probabilities
            As for `predict`.

        Raises
        ------
        ValueError
            ``images`` is one path or one 2-D array (use `predict`), or a frame cannot be
            preprocessed.
        """
        frames = _frame_sequence(images)
        use_tta = self._tta(tta)
        results: list[Any] = []
        with self._limit_threads():
            for start in range(0, len(frames), self.batch_size):
                batch = frames[start : start + self.batch_size]
                prepared = [self.prepare(frame) for frame in batch]
                for mask, probability, _ in self._segment(prepared, use_tta, return_probabilities):
                    results.append((mask, probability) if return_probabilities else mask)
        return results

    def predict_folder(
        self,
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
        shard: str | Shard | None = None,
    ) -> FolderPrediction:
        """`thyroidseg.inference.folders.predict_folder` with this segmenter, at its ``threads``.

        Every argument but ``shard`` is that function's (documented there): masks, and on
        request overlays, probability maps, ``measurements.csv``, the report and DICOM
        Segmentations, written into ``out_dir``.

        Parameters
        ----------
        shard
            ``"K/N"`` (or a `thyroidseg.inference.shards.Shard`): segment only the Kth of N
            parts of the inputs, for an array job whose N shards share ``out_dir``; the
            tables are the shard's until `thyroidseg.inference.shards.merge_shards` joins
            them (`thyroidseg.inference.shards.predict_shard`). Default: everything.

        Returns
        -------
        FolderPrediction
            The files written, the nodule count and the wall time.
        """
        run: Callable[..., FolderPrediction] = predict_folder
        if shard is not None:
            run = functools.partial(predict_shard, shard=shard)
        with self._limit_threads():
            return run(
                self,
                in_dir,
                out_dir,
                tta=tta,
                overlays=overlays,
                probabilities=probabilities,
                measurements=measurements,
                pixel_spacing=pixel_spacing,
                frames=frames,
                overwrite=overwrite,
                progress=progress,
                report=report,
                dicom_seg=dicom_seg,
            )

    def predict_file(
        self, path: PathLike, *, frames: str | FrameRange = "all", tta: bool | None = None
    ) -> FilePrediction:
        """Segment one file: an image, or the ``frames`` of a DICOM cine loop.

        Frames are read from the file ``batch_size`` at a time and segmented as they come,
        so a loop is never held in memory, only its masks.

        Parameters
        ----------
        path
            An image or DICOM file.
        frames
            As for `predict_folder` (``"all"``, ``"first"``, ``"N-M"``).
        tta
            As for `predict`.

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
        with self._limit_threads():
            return predict_file(self, path, frames=frames, tta=tta)

    # -- steps --------------------------------------------------------------------------

    def _tta(self, tta: bool | None) -> bool:
        return self.tta if tta is None else check_flag("tta", tta)

    def prepare(self, image: Frame) -> Preprocessed:
        """Preprocess one frame (array or path) as this segmenter's network expects.

        `thyroidseg.preprocessing.preprocess` with `preprocess_options`: the first half of
        `predict`, for code that reads frames and segments them later in batches with
        `segment_prepared`, as `thyroidseg.inference.folders.predict_folder` does.

        Raises
        ------
        ValueError
            The frame cannot be preprocessed (the message names the file).
        """
        return preprocess(image, **self.preprocess_options)

    def segment_prepared(
        self,
        prepared: Sequence[Preprocessed],
        *,
        tta: bool | None = None,
        return_probabilities: bool = False,
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Segment frames `prepare` made, in one forward pass (the second half of `predict`).

        As nnU-Net's ``predict_logits_from_preprocessed_data``: the caller decides how
        frames are read and batched. ``segment_prepared([prepare(f) for f in frames])[i]``
        holds what ``predict(frames[i], return_probabilities=True)`` returns.

        Returns
        -------
        list of (numpy.ndarray, numpy.ndarray or None)
            Per frame, its ``uint8`` mask at the frame's size and its nodule probability map
            (``None`` unless ``return_probabilities``).
        """
        segmented = self._segment(prepared, self._tta(tta), return_probabilities)
        return [(mask, probability) for mask, probability, _ in segmented]

    def segment_with_evidence(
        self, prepared: Sequence[Preprocessed], *, tta: bool | None = None
    ) -> list[Segmented]:
        """`segment_prepared` with probabilities and each frame's quality evidence.

        What `thyroidseg.inference.quality` rates an outline from: the whole-frame network's
        mask before the refine stage and its probabilities of the frame and of the mirror
        image (the mirror-image pass costs a second forward pass when ``tta`` is off). It is
        how an estimator's training rows are made (``benchmarks/expected_iou.py``).
        """
        segmented = []
        for mask, probability, evidence in self._segment(prepared, self._tta(tta), True, True):
            assert probability is not None and evidence is not None  # both asked for
            segmented.append(Segmented(mask, probability, evidence))
        return segmented

    def measure_prepared(
        self,
        prepared: Sequence[Preprocessed],
        spacings: Sequence[PixelSpacing | FrameSpacing | None],
        *,
        tta: bool | None = None,
        frames: Sequence[np.ndarray] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray, list[Nodule]]]:
        """`segment_prepared` with probabilities, and each frame's nodules measured.

        Per frame: its mask, its nodule probability map and its nodules as
        `thyroidseg.inference.measurements.measure` gives them with that frame's spacing,
        probabilities and views, rated (``expected_iou``, ``review``) when the segmenter has
        a ``quality`` estimator. `thyroidseg.inference.folders.predict_folder` calls it.

        Parameters
        ----------
        prepared, spacings
            The frames `prepare` made, and the pixel spacing of each.
        tta
            As for `predict`.
        frames
            The arrays ``prepared`` were made from. With them each frame is checked to look
            like a thyroid B-mode scan (`thyroidseg.preprocessing.scan_check.check_scan`);
            every nodule of a frame that does not gets ``review`` and the reason in
            ``scan_warning``. Default: no check.
        """
        use_tta, rated = self._tta(tta), self.quality is not None
        checks = (
            [check_scan(f, p) for f, p in zip(frames, prepared, strict=True)]
            if frames is not None
            else [None] * len(prepared)
        )
        results = []
        for (mask, probability, evidence), p, spacing, check in zip(
            self._segment(prepared, use_tta, True, rated), prepared, spacings, checks, strict=True
        ):
            assert probability is not None  # asked for
            nodules = measure(mask, spacing, probability, p.views)
            if self.quality is not None and evidence is not None:
                nodules = assess(self.quality, nodules, mask, probability, evidence, p.views)
            if check is not None and not check.thyroid_bmode:
                warning = "; ".join(check.reasons)
                nodules = [replace(n, review=True, scan_warning=warning) for n in nodules]
            results.append((mask, probability, nodules))
        return results

    def measure(
        self,
        image: Frame,
        pixel_spacing: PixelSpacing | FrameSpacing | None = None,
        *,
        tta: bool | None = None,
    ) -> list[Nodule]:
        """Segment one frame and measure its nodules, rated when there is an estimator.

        One row of ``measurements.csv`` per nodule, as `predict_folder` writes it:
        `measure_prepared` of one frame, checked to look like a thyroid B-mode scan.

        Parameters
        ----------
        image
            As for `predict`.
        pixel_spacing
            As for `thyroidseg.inference.measurements.measure`.
        tta
            As for `predict`.
        """
        with self._limit_threads():
            if isinstance(image, str | os.PathLike):  # read once, for both steps
                array = read_image(image)
                prepared = _prepare_read(self.prepare, array, image)
            else:
                array, prepared = image, self.prepare(image)
            [(_, _, nodules)] = self.measure_prepared(
                [prepared], [pixel_spacing], tta=tta, frames=[array]
            )
        return nodules

    def _segment(
        self,
        prepared: Sequence[Preprocessed],
        tta: bool,
        with_probabilities: bool,
        with_evidence: bool = False,
    ) -> list[tuple[np.ndarray, np.ndarray | None, Evidence | None]]:
        """One forward pass over preprocessed frames: masks (and maps, and each frame's
        `thyroidseg.inference.quality.Evidence`) at each frame's size."""
        batch = to_unit_range(np.stack([p.image for p in prepared]))[:, None]
        pair = mirrored_pair(self._softmax, batch) if with_evidence else None
        probabilities = tta_probabilities(self._softmax, batch, tta, pair)
        labels, nodule = probabilities.argmax(axis=1), probabilities[:, 1]
        need_map = with_probabilities or self.refiner is not None or self.min_probability > 0
        masks = [
            p.mask_to_original((label == 1).astype(np.uint8))
            for p, label in zip(prepared, labels, strict=True)
        ]
        maps = [
            _probability_to_original(p, probability) if need_map else None
            for p, probability in zip(prepared, nodule, strict=True)
        ]
        first: list[np.ndarray | None] = [None] * len(prepared)
        if self.refiner is not None:  # refine the components post-processing keeps
            masks = [self._postprocess(m, p, None) for m, p in zip(masks, prepared, strict=True)]
            refined = self.refiner.refine_many(prepared, masks, maps, tta=tta)
            for k, (mask, second, covered) in enumerate(refined):
                first[k], masks[k] = masks[k], mask
                frame_map = maps[k]
                if frame_map is not None:  # always made when a refiner is set
                    frame_map[covered] = second[covered]
        evidence: list[Evidence | None] = [None] * len(prepared)
        if pair is not None:
            evidence[:] = _evidence(prepared, first, pair)
        return [
            (
                self._postprocess(mask, p, probability),
                probability if with_probabilities else None,
                e,
            )
            for mask, p, probability, e in zip(masks, prepared, maps, evidence, strict=True)
        ]

    def _postprocess(
        self, mask: np.ndarray, prepared: Preprocessed, probability: np.ndarray | None
    ) -> np.ndarray:
        return postprocess_views(
            mask,
            prepared.views,
            keep_largest=self.keep_largest,
            min_area=self.min_area,
            fill_holes=self.fill_holes,
            probability=probability,
            min_probability=self.min_probability if probability is not None else 0.0,
        )

    @abc.abstractmethod
    def identity(self) -> ModelIdentity:
        """Which model this is (name, thyroidseg version, SHA-256 of its weights): what the
        report and the DICOM Segmentations of `predict_folder` record."""

    @abc.abstractmethod
    def _softmax(self, batch: np.ndarray) -> np.ndarray:
        """Softmax class probabilities ``(N, K, H', W')`` float32 of a ``(N, 1, H, W)`` batch
        in ``[0, 1]``: one forward pass (`thyroidseg.inference.flips` adds the TTA)."""

    def _limit_threads(self) -> contextlib.AbstractContextManager[None]:
        """OpenCV at `threads` threads during a call (a subclass adds its network's)."""
        return opencv_threads(self.threads)
