"""Segment scanner frames with a trained model: preprocess -> model -> original size.

A `Segmenter` holds one network (`Segmenter.model`, an `nn.Module`: the preprocessed batch
``(N, C, H, W)`` float32 in ``[0, 1]`` in, per-pixel class scores ``(N, 2, H, W)`` out) and
the preprocessing it was trained with. For each frame it runs
`thyroidseg.preprocessing.preprocess` (crop to the scan region, clean, equalise, resize),
computes the class probabilities of every network pixel (softmax of the scores, averaged
with the left-right mirror image under ``tta``), takes the most probable class, carries the
mask back to the original frame with `Preprocessed.mask_to_original` (nearest neighbour,
zeros outside the scan region) and applies the per-view post-processing of
`postprocess_views`. Masks therefore always have the size of the input frame and are
measured against the original labels, never against resized ones. On request the nodule
probability map comes back too, bilinearly resampled to the frame.

Where the network comes from (`thyroidseg.models.loading`):

- ``Segmenter.from_checkpoint("run/best.pt")`` rebuilds it from a checkpoint written by
  `thyroidseg.training.Trainer` (architecture and preprocessing are stored in it), loaded
  with `thyroidseg.models.checkpoint.load_checkpoint` (``torch.load(weights_only=True)``); several
  checkpoints become one `thyroidseg.models.ensemble.Ensemble`;
- ``Segmenter.pretrained()`` loads the model shipped inside the package
  (`thyroidseg.models.loading.shipped_weights`), the same way.

Device and autocast follow `thyroidseg.runtime`, as in training; nothing here imports the
training code. `Segmenter.predict_folder` is ``thyroidseg predict`` (its folder code is
`thyroidseg.inference.folders`): masks, and optionally
overlay pictures, probability maps and the nodule measurements of
`thyroidseg.inference.measurements`. DICOM files are read wherever images are
(`thyroidseg.io.dicom`):
`Segmenter.predict_folder` and `Segmenter.predict_file` segment every frame of a cine loop,
and measure in millimetres with the pixel size each file states.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any, Literal, overload

import cv2
import numpy as np
import torch
from torch import nn

from thyroidseg._checks import PathLike, check_int, check_probability
from thyroidseg.inference.folders import (
    FilePrediction,
    FolderPrediction,
    _predict_file,
    _predict_folder,
)
from thyroidseg.inference.measurements import (
    PixelSpacing,
)
from thyroidseg.inference.postprocess import postprocess_views
from thyroidseg.inference.refine import Refiner
from thyroidseg.inference.shards import Shard, predict_shard
from thyroidseg.io.dicom import FrameRange
from thyroidseg.io.files import Inputs
from thyroidseg.models.ensemble import class_probabilities
from thyroidseg.models.loading import load_network, shipped_weights
from thyroidseg.preprocessing.pipeline import Preprocessed, preprocess, to_unit_range
from thyroidseg.runtime import AmpMode, resolve_amp, resolve_device

__all__ = ["Frame", "Prediction", "Segmenter"]

Frame = np.ndarray | PathLike
Prediction = np.ndarray | tuple[np.ndarray, np.ndarray]


class Segmenter:
    """Segment whole scanner frames with a model, at the frames' own size.

    Parameters
    ----------
    model
        One network: maps the preprocessed batch ``(N, C, H, W)`` float32 in ``[0, 1]`` to
        class scores ``(N, K, H, W)`` (logits, or log-probabilities as an
        `thyroidseg.models.ensemble.Ensemble` returns; only their softmax is used). Class 1 is
        nodule. Kept as `model`, the one module that `thyroidseg.models.export` exports.
    preprocess_options
        Keyword arguments of `thyroidseg.preprocessing.preprocess` (including ``size``),
        exactly as in training. Default: ``preprocess``'s defaults.
    device, amp
        As for `thyroidseg.training.Trainer` (``"auto"`` for both by default): see
        `thyroidseg.runtime.resolve_device` and `thyroidseg.runtime.resolve_amp`.
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
        A second stage (`thyroidseg.inference.refine.Refiner`) that segments each nodule found by
        ``model`` again from a full-resolution crop; the mask is post-processed before it
        (the components it refines) and again after it (default: none). Its cleaning
        options (``crop``, ``margin``, ``inpaint_annotations``) must be ``model``'s.

    Examples
    --------
    >>> from thyroidseg.models.unet import UNet
    >>> from thyroidseg.data.synthetic import synthetic_phantoms
    >>> images, _ = synthetic_phantoms(2, size=(90, 140), seed=0)
    >>> segmenter = Segmenter(UNet(seed=0), {"size": (64, 64)}, device="cpu")
    >>> [mask.shape for mask in segmenter.predict_many(images)]
    [(90, 140), (90, 140)]
    >>> mask, probability = segmenter.predict(images[0], tta=True, return_probabilities=True)
    >>> probability.shape, probability.dtype
    ((90, 140), dtype('float32'))
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess_options: Mapping[str, Any] | None = None,
        *,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        keep_largest: bool = False,
        min_area: int = 0,
        fill_holes: bool = False,
        tta: bool = False,
        batch_size: int = 8,
        refiner: Refiner | None = None,
        min_probability: float = 0.0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_int("batch_size", batch_size, 1)
        check_int("min_area", min_area, 0)
        for name, value in (("keep_largest", keep_largest), ("fill_holes", fill_holes)):
            _check_flag(name, value)
        self.device = resolve_device(device)
        self.amp_dtype = resolve_amp(amp, self.device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.preprocess_options = dict(preprocess_options or {})
        self.keep_largest, self.min_area, self.batch_size = keep_largest, min_area, batch_size
        self.fill_holes, self.tta = fill_holes, _check_flag("tta", tta)
        if refiner is not None and not isinstance(refiner, Refiner):
            raise ValueError(
                f"refiner must be a thyroidseg.inference.refine.Refiner, got {refiner!r}"
            )
        if refiner is not None:
            refiner.check_cleaning(self.preprocess_options)
        self.refiner = refiner
        self.min_probability = check_probability("min_probability", min_probability)

    @classmethod
    def from_checkpoint(
        cls,
        path: PathLike | Sequence[PathLike],
        *,
        model: nn.Module | None = None,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        keep_largest: bool | None = None,
        min_area: int | None = None,
        fill_holes: bool | None = None,
        tta: bool | None = None,
        min_probability: float | None = None,
        batch_size: int = 8,
        refine: PathLike | Sequence[PathLike] | Refiner | None = None,
    ) -> Segmenter:
        """Rebuild the network and preprocessing stored in `Trainer` checkpoint(s).

        Reads them with `thyroidseg.models.loading.load_network`: a `thyroidseg.models.unet.UNet`
        rebuilt from the stored ``config`` (for any other architecture pass an instance as
        ``model``, whose weights are replaced), frames prepared exactly as in training, and
        several checkpoints as one `thyroidseg.models.ensemble.Ensemble` (the mean of the members'
        probabilities, which becomes `Segmenter.model`; their preprocessing must be
        identical).

        Parameters
        ----------
        path
            One checkpoint file, or a sequence of them for an ensemble.
        model
            The network to load one checkpoint of another architecture into.
        device, amp, batch_size
            As for `Segmenter`.
        keep_largest, min_area, fill_holes, tta, min_probability
            As for `Segmenter`. ``None`` (default): the checkpoint's recommendation,
            ``config["inference"]`` (stored with a shipped model), else off
            (`thyroidseg.models.loading.INFERENCE_DEFAULTS`).
        refine
            Checkpoint(s) of a refine network (``thyroidseg train --stage refine``) to run
            as the second stage (`thyroidseg.inference.refine.Refiner.from_checkpoint`;
            several are averaged), or a `thyroidseg.inference.refine.Refiner` built with other
            settings. Default: none.

        Raises
        ------
        FileNotFoundError, ValueError
            As `thyroidseg.models.loading.load_network`: a missing, corrupt or unsafe file, a
            model that cannot be rebuilt, frames prepared otherwise than by `preprocess`
            (build ``Segmenter(model, preprocess_options)`` yourself then), ensemble members
            that differ in preprocessing, a refine checkpoint given as ``path`` or a
            whole-frame one as ``refine``. Each message names the file.
        """
        stored = load_network(
            path,
            model=model,
            settings={
                "keep_largest": keep_largest,
                "min_area": min_area,
                "fill_holes": fill_holes,
                "tta": tta,
                "min_probability": min_probability,
            },
        )
        if stored.crops is not None:
            raise ValueError(
                f"{path}: a refine (stage 2) model, which segments crops around nodules found "
                "by a whole-frame model: give it as refine=... (--refine) beside one"
            )
        refiner = (
            Refiner.from_checkpoint(refine, device=device, amp=amp)
            if refine is not None and not isinstance(refine, Refiner)
            else refine
        )
        return cls(
            stored.network,
            stored.preprocess_options,
            device=device,
            amp=amp,
            batch_size=batch_size,
            refiner=refiner,
            **stored.inference,
        )

    @classmethod
    def pretrained(
        cls, *, refine: bool | PathLike | Sequence[PathLike] | None = None, **options: Any
    ) -> Segmenter:
        """The segmenter of the model shipped with the package, ready to use.

        Loads `thyroidseg.models.loading.shipped_weights` through `from_checkpoint` (the same
        safe loader, ``weights_only=True``), so its preprocessing and its recommended
        inference settings (``config["inference"]``: TTA, hole filling, minimum area) come
        with it, and its second stage (``shipped_weights("refine")``) when the package has
        one.

        Parameters
        ----------
        refine
            ``None`` (default): the shipped refine stage if installed; ``True``: it, and an
            error if it is missing; ``False``: the whole-frame model alone; checkpoint
            path(s): those refine models behind the shipped whole-frame model.
        **options
            Keyword arguments of `from_checkpoint` (``device``, ``amp``, ``tta``,
            ``fill_holes``, ``min_area``, ``min_probability``, ``keep_largest``,
            ``batch_size``); given ones override the shipped recommendation.

        Raises
        ------
        FileNotFoundError
            No shipped model is installed (a build of thyroidseg without its weights file),
            or ``refine=True`` and no shipped refine stage.
        ValueError
            As `from_checkpoint`.
        """
        weights, second = shipped_weights(), shipped_weights("refine")
        for file, wanted in ((weights, True), (second, refine is True)):
            if wanted and not file.is_file():
                raise FileNotFoundError(
                    f"no shipped model is installed ({file} is missing from this thyroidseg "
                    "installation); train one with `thyroidseg train` and load it with "
                    "Segmenter.from_checkpoint(PATH) or `thyroidseg predict --model PATH`"
                )
        with contextlib.ExitStack() as stack:
            path = stack.enter_context(resources.as_file(weights))
            if refine is None or refine is True:
                refine = (
                    stack.enter_context(resources.as_file(second)) if second.is_file() else None
                )
            return cls.from_checkpoint(path, refine=refine or None, **options)

    def describe(self) -> dict[str, Any]:
        """How frames are segmented, JSON-ready: what `thyroidseg.models.export` writes beside a
        cascade's networks.

        ``{"preprocess_options", "tta", "keep_largest", "min_area", "fill_holes",
        "min_probability", "refine"}``; ``"refine"`` is
        `thyroidseg.inference.refine.Refiner.describe` or ``None``.
        """
        return {
            "preprocess_options": dict(self.preprocess_options),
            "tta": self.tta,
            "keep_largest": self.keep_largest,
            "min_area": self.min_area,
            "fill_holes": self.fill_holes,
            "min_probability": self.min_probability,
            "refine": self.refiner.describe() if self.refiner is not None else None,
        }

    @overload
    def predict(
        self, image: Frame, *, tta: bool | None = ..., return_probabilities: Literal[False] = ...
    ) -> np.ndarray: ...
    @overload
    def predict(
        self, image: Frame, *, tta: bool | None = ..., return_probabilities: Literal[True]
    ) -> tuple[np.ndarray, np.ndarray]: ...
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
    def predict_many(
        self,
        images: Sequence[Frame] | np.ndarray,
        *,
        tta: bool | None = None,
        return_probabilities: bool = False,
    ) -> list[Prediction]:
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
        results: list[Prediction] = []
        for start in range(0, len(frames), self.batch_size):
            prepared = [self._prepare(frame) for frame in frames[start : start + self.batch_size]]
            for mask, probability in self._segment(prepared, use_tta, return_probabilities):
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
          `predict` as 8-bit grey, ``round(255 p)``, at the frame's size;
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

        The folder loop is `thyroidseg.io.files.map_folder`'s: every file is written atomically;
        existing outputs (masks, overlays, probability maps, the CSV) are an error unless
        ``overwrite``, all checked before anything is written; a frame that cannot be read or
        preprocessed does not stop the others: once every other frame and the CSV (with the
        rows of the frames done) are written, a ``ValueError`` lists each failed file.

        Parameters
        ----------
        in_dir, out_dir
            Folder of frames (not recursive) and output folder (created).
        tta
            As for `predict`.
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
            ``"K/N"`` (or a `thyroidseg.inference.shards.Shard`): segment only the Kth of N
            parts of the inputs, for an array job whose N shards share ``out_dir``; the
            tables are the shard's until `thyroidseg.inference.shards.merge_shards` joins
            them (`thyroidseg.inference.shards.predict_shard`). Default: everything.

        Returns
        -------
        FolderPrediction
            The files written, the nodule count and the wall time (`FolderPrediction.summary`
            is the one line ``thyroidseg predict`` prints).
        """
        run: Callable[..., FolderPrediction] = _predict_folder
        if shard is not None:
            run = functools.partial(predict_shard, shard=shard)
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
        return _predict_file(self, path, frames=frames, tta=tta)

    # -- steps --------------------------------------------------------------------------

    def _tta(self, tta: bool | None) -> bool:
        return self.tta if tta is None else _check_flag("tta", tta)

    def _prepare(self, image: Frame) -> Preprocessed:
        return preprocess(image, **self.preprocess_options)  # errors name the file

    def _segment(
        self, prepared: Sequence[Preprocessed], tta: bool, with_probabilities: bool
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """One forward pass over preprocessed frames; masks (and maps) at each frame's size."""
        batch = to_unit_range(np.stack([p.image for p in prepared]))
        labels, nodule = self._forward(torch.from_numpy(batch[:, None]), tta)
        need_map = with_probabilities or self.refiner is not None or self.min_probability > 0
        masks = [
            p.mask_to_original((label == 1).astype(np.uint8))
            for p, label in zip(prepared, labels, strict=True)
        ]
        maps = [
            _probability_to_original(p, probability) if need_map else None
            for p, probability in zip(prepared, nodule, strict=True)
        ]
        if self.refiner is not None:  # refine the components post-processing keeps
            masks = [self._postprocess(m, p, None) for m, p in zip(masks, prepared, strict=True)]
            refined = self.refiner.refine_many(prepared, masks, maps, tta=tta)
            for k, (mask, second, covered) in enumerate(refined):
                masks[k] = mask
                maps[k][covered] = second[covered]
        return [
            (self._postprocess(mask, p, probability), probability if with_probabilities else None)
            for mask, p, probability in zip(masks, prepared, maps, strict=True)
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

    def _forward(self, images: torch.Tensor, tta: bool) -> tuple[np.ndarray, np.ndarray]:
        """Most probable class ``(N, H, W)`` and nodule probability ``(N, H, W)`` per pixel."""
        probabilities = class_probabilities(
            self.model, images, device=self.device, amp_dtype=self.amp_dtype, tta=tta
        )
        labels = probabilities.argmax(dim=1).to(torch.uint8)
        return labels.cpu().numpy(), probabilities[:, 1].contiguous().cpu().numpy()


def _check_flag(name: str, value: object) -> bool:
    """``value`` if it is a bool (a checkpoint's ``"false"`` string must not count as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _frame_sequence(images: Sequence[Frame] | np.ndarray) -> Sequence[Frame]:
    """``images`` as a sequence of frames, refusing one frame given where many are expected."""
    if isinstance(images, str | os.PathLike):
        raise ValueError(
            f"predict_many takes a sequence of frames, got one path {images!r}; use predict"
        )
    if isinstance(images, np.ndarray) and images.ndim != 3:
        raise ValueError(
            f"predict_many takes an (N, H, W) array or a sequence of frames, got "
            f"an array of shape {images.shape}; use predict for one frame"
        )
    return images


def _probability_to_original(prepared: Preprocessed, probability: np.ndarray) -> np.ndarray:
    """The network-frame probability map on the original frame: bilinear, 0 outside the views.

    The ``content`` part of the map is resized onto ``box`` (``cv2.INTER_LINEAR``, which
    aligns pixel centres as `Preprocessed.mask_to_original` does); letterbox padding never
    enters the interpolation.
    """
    box, content = prepared.box, prepared.content
    resized = cv2.resize(
        np.ascontiguousarray(probability[content.slices]),
        (box.width, box.height),
        interpolation=cv2.INTER_LINEAR,
    )
    on_box = np.zeros(prepared.original_shape, np.float32)
    on_box[box.slices] = np.clip(resized, 0.0, 1.0)
    out = np.zeros_like(on_box)
    for view in prepared.views:
        out[view.slices] = on_box[view.slices]
    return out
