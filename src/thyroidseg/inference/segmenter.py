"""Segment scanner frames with a trained PyTorch model: preprocess -> model -> original size.

A `Segmenter` holds one network (`Segmenter.model`, an `nn.Module`: the preprocessed batch
``(N, C, H, W)`` float32 in ``[0, 1]`` in, per-pixel class scores ``(N, 2, H, W)`` out) and
the preprocessing it was trained with. For each frame it runs
`thyroidseg.preprocessing.preprocess` (crop to the scan region, clean, equalise, resize),
computes the class probabilities of every network pixel (softmax of the scores, averaged
with the left-right mirror image under ``tta``), takes the most probable class, carries the
mask back to the original frame with `Preprocessed.mask_to_original` (nearest neighbour,
zeros outside the scan region) and applies the per-view post-processing of
`postprocess_views` (all of it in `thyroidseg.inference.base.SegmenterBase`, which
`thyroidseg.inference.OnnxSegmenter` shares). Masks therefore always have the size of the
input frame and are measured against the original labels, never against resized ones. On
request the nodule probability map comes back too, bilinearly resampled to the frame.

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
(`thyroidseg.io.dicom`): `Segmenter.predict_folder` and `Segmenter.predict_file` segment
every frame of a cine loop, and measure in millimetres with the pixel size each file states.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch import nn
from typing_extensions import Unpack

from thyroidseg._checks import PathLike
from thyroidseg.inference.base import Frame, Prediction, SegmenterBase, SegmenterSettings
from thyroidseg.inference.identity import model_identity
from thyroidseg.inference.quality import ExpectedIoU, stored_estimator
from thyroidseg.inference.refine import Refiner
from thyroidseg.io.provenance import ModelIdentity
from thyroidseg.io.threads import Threads
from thyroidseg.models.ensemble import numpy_probabilities
from thyroidseg.models.folding import FoldedNetwork
from thyroidseg.models.loading import load_network, shipped_weights
from thyroidseg.runtime import AmpMode, for_inference

__all__ = ["Frame", "Prediction", "Segmenter"]


class Segmenter(SegmenterBase):
    """Segment whole scanner frames with a model, at the frames' own size.

    Parameters
    ----------
    model
        One network: maps the preprocessed batch ``(N, C, H, W)`` float32 in ``[0, 1]`` to
        class scores ``(N, K, H, W)`` (logits, or log-probabilities as an
        `thyroidseg.models.ensemble.Ensemble` returns; only their softmax is used). Class 1 is
        nodule. Kept as `model`, the one module that `thyroidseg.models.export` exports.
    device, amp
        As for `thyroidseg.training.Trainer` (``"auto"`` for both by default): see
        `thyroidseg.runtime.resolve_device` and `thyroidseg.runtime.resolve_amp`.
    preprocess_options, **settings
        As for `thyroidseg.inference.base.SegmenterBase` (``keep_largest``, ``min_area``,
        ``fill_holes``, ``min_probability``, ``tta``, ``batch_size``, ``refiner``; the
        second stage is usually a `thyroidseg.inference.refine.Refiner`), and ``threads``:
        CPU threads of each ``predict*`` call, for PyTorch and OpenCV, a count, ``"auto"``
        (default: `thyroidseg.runtime.free_cores` when the segmenter is built, as
        ``--threads auto``) or ``None`` (PyTorch's and OpenCV's settings untouched); set at
        the start of each call and restored at its end (``torch.set_num_threads`` is
        process-wide: do not call two segmenters from two Python threads at once).

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
        **settings: Unpack[SegmenterSettings],
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        super().__init__(preprocess_options, **settings)
        self.model, self.device, self.amp_dtype = for_inference(model, device, amp)
        self._folded = FoldedNetwork(self.model)  # runs it; `model` stays trainable

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
        threads: Threads = "auto",
        quality: ExpectedIoU | bool = True,
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
        device, amp, batch_size, threads
            As for `Segmenter`; ``batch_size`` also bounds the crops per forward pass of the
            refine stage it loads.
        keep_largest, min_area, fill_holes, tta, min_probability
            As for `Segmenter`. ``None`` (default): the checkpoint's recommendation,
            ``config["inference"]`` (stored with a shipped model), else off
            (`thyroidseg.models.loading.INFERENCE_DEFAULTS`).
        refine
            Checkpoint(s) of a refine network (``thyroidseg train --stage refine``) to run
            as the second stage (`thyroidseg.inference.refine.Refiner.from_checkpoint`;
            several are averaged), or a `thyroidseg.inference.refine.Refiner` built with other
            settings. Default: none.
        quality
            ``True`` (default): the expected-IoU estimator stored in the checkpoint
            (``config["quality"]``, `thyroidseg.inference.quality.ExpectedIoU.to_dict`) when
            it was fitted for the stages used here (with or without ``refine``), else none;
            ``False``: none; or an `thyroidseg.inference.quality.ExpectedIoU`.

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
            Refiner.from_checkpoint(refine, device=device, amp=amp, batch_size=batch_size)
            if refine is not None and not isinstance(refine, Refiner)
            else refine
        )
        estimator = quality if isinstance(quality, ExpectedIoU) else None
        if quality is True:
            stages = 1 if refiner is None else 2
            where = f"{path}: config['quality']"
            estimator = stored_estimator(stored.quality, stages, where)
        return cls(
            stored.network,
            stored.preprocess_options,
            device=device,
            amp=amp,
            batch_size=batch_size,
            refiner=refiner,
            threads=threads,
            quality=estimator,
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
            ``batch_size``, ``threads``); given ones override the shipped recommendation.

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

    def identity(self) -> ModelIdentity:
        """`thyroidseg.inference.identity.model_identity` of the networks."""
        return model_identity(self)

    def _softmax(self, batch: np.ndarray) -> np.ndarray:
        network = self._folded.current()
        return numpy_probabilities(network, batch, device=self.device, amp_dtype=self.amp_dtype)

    @contextlib.contextmanager
    def _limit_threads(self) -> Iterator[None]:
        """PyTorch and OpenCV at `threads` threads during a call, as they were after it."""
        previous = torch.get_num_threads()
        with super()._limit_threads():
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            try:
                yield
            finally:
                torch.set_num_threads(previous)
