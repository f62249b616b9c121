"""The second stage around any network, in numpy and OpenCV: `RefinerBase`.

`thyroidseg.inference.refine.Refiner` (PyTorch) and `thyroidseg.inference.onnx.OnnxRefiner`
(ONNX Runtime) share it: the crops cut around each stage-1 nodule
(`thyroidseg.preprocessing.crops`), their probabilities pasted back onto the frame and
blended with the whole-frame probability, and `RefinerBase.describe`, the settings as data.
A subclass supplies the network's class probabilities of a batch of crops. docs/refine.md
explains the stage. This module imports no PyTorch.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from thyroidseg._checks import check_int, check_probability
from thyroidseg.inference.flips import tta_probabilities
from thyroidseg.preprocessing.crops import (
    CropRule,
    cleaning_options,
    nodule_boxes,
    overlap,
    prepare_crop,
)
from thyroidseg.preprocessing.pipeline import Preprocessed, preprocess_settings, to_unit_range

__all__ = ["WHOLE_WEIGHT", "RefinerBase"]

WHOLE_WEIGHT = 0.25
"""Default `RefinerBase.whole_weight`: a quarter of the whole-frame probability is kept inside
the crops (chosen by grouped cross-validation on DDTI, docs/model-card.md)."""


class RefinerBase(abc.ABC):
    r"""Stage 2 at inference: segment each stage-1 nodule again from a full-resolution crop.

    For each connected component of the stage-1 mask (`nodule_boxes`, per view), the
    `CropRule.square` crop with `CropRule.margin` is cut from the cleaned frame, prepared as
    in training and segmented (with flip TTA when on). Each crop's nodule probability is
    resized back onto its square (bilinear) and averaged where squares overlap; inside the
    squares the mask becomes ``probability > 0.5``, outside them the stage-1 mask is kept.

    Parameters
    ----------
    rule
        The crop rule the network was trained with.
    preprocess_options
        The `preprocess` options of its training data: the cleaning options must match
        stage 1's (`thyroidseg.inference.Segmenter` checks), ``equalization``/``smoothing``
        prepare the crops.
    whole_weight
        ``w`` in the probability inside the squares,
        $p = w\,p_{\mathrm{whole}} + (1 - w)\,p_{\mathrm{refine}}$: how much of the
        whole-frame network's probability (resampled to the frame) is kept, an ensemble of
        the two stages (default `WHOLE_WEIGHT`, chosen by cross-validation).
    batch_size
        Crops per forward pass of the network (default 8), whatever the number of nodules.
    """

    def __init__(
        self,
        rule: CropRule,
        preprocess_options: Mapping[str, Any] | None = None,
        *,
        whole_weight: float = WHOLE_WEIGHT,
        batch_size: int = 8,
    ) -> None:
        if not isinstance(rule, CropRule):
            raise ValueError(f"rule must be a CropRule, got {type(rule).__name__}")
        check_probability("whole_weight", whole_weight)
        self.rule = rule
        self.preprocess_options = dict(preprocess_options or {})
        self.whole_weight = float(whole_weight)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def describe(self) -> dict[str, Any]:
        """The settings as data: ``{"crops", "preprocess_options", "whole_weight"}``.

        ``"crops"`` is `CropRule.to_dict`; docs/deployment.md gives the algorithm they
        parametrise, step by step.
        """
        return {
            "crops": self.rule.to_dict(),
            "preprocess_options": preprocess_settings(**self.preprocess_options),
            "whole_weight": self.whole_weight,
        }

    def check_cleaning(self, whole_frame_options: Mapping[str, Any]) -> None:
        """Refuse to run behind a whole-frame model whose frames are cleaned otherwise.

        Both stages must crop and inpaint alike (`cleaning_options` of the two `preprocess`
        option sets), or the crops would not show what the refine network was trained on.

        Raises
        ------
        ValueError
            The two differ; the message shows both.
        """
        mine, theirs = (
            cleaning_options(self.preprocess_options),
            cleaning_options(whole_frame_options),
        )
        if mine != theirs:
            raise ValueError(
                f"the refiner cleans frames with {mine}, the whole-frame model with {theirs}: "
                "both stages must crop and inpaint alike"
            )

    def refine(
        self,
        prepared: Preprocessed,
        mask: np.ndarray,
        whole_probability: np.ndarray | None = None,
        *,
        tta: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Refine the whole-frame ``mask`` of one frame (`refine_many` of one).

        Parameters
        ----------
        prepared
            The frame as `preprocess` prepared it for the whole-frame network.
        mask
            The whole-frame network's ``{0, 1}`` mask at the frame's size, post-processed.
        whole_probability
            Its nodule probability at the frame's size; needed when ``whole_weight > 0``.
        tta
            Flip test-time augmentation of the crops.

        Returns
        -------
        (mask, probability, covered)
            The ``uint8`` {0, 1} mask, the nodule probability inside the squares (``float32``,
            0 outside them) and the ``bool`` map of the pixels some square covered, all of
            the frame's size.
        """
        return self.refine_many([prepared], [mask], [whole_probability], tta=tta)[0]

    def refine_many(
        self,
        prepared: Sequence[Preprocessed],
        masks: Sequence[np.ndarray],
        whole_probabilities: Sequence[np.ndarray | None],
        *,
        tta: bool = False,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`refine` for several frames, their crops `batch_size` at a time through the network.

        The network sees at most `batch_size` crops per forward pass, however many nodules the
        frames hold, so its memory does not grow with them.
        """
        if self.whole_weight > 0 and any(p is None for p in whole_probabilities):
            raise ValueError(
                f"whole_weight={self.whole_weight} blends in the whole-frame probability: "
                "pass whole_probability"
            )
        for p, mask, whole in zip(prepared, masks, whole_probabilities, strict=True):
            shapes = {np.shape(mask)} | ({np.shape(whole)} if whole is not None else set())
            if shapes != {tuple(p.original_shape)}:
                raise ValueError(
                    f"masks and whole_probabilities must have the frame's shape "
                    f"{tuple(p.original_shape)}, got {sorted(shapes)}"
                )
        squares = [  # (square, the view that holds its nodule) for each found nodule
            [(self.rule.square(box), view) for view in p.views for box in nodule_boxes(m, [view])]
            for p, m in zip(prepared, masks, strict=True)
        ]
        crops = []
        for p, frame_squares in zip(prepared, squares, strict=True):
            if not frame_squares:
                continue
            frame = p.cleaned_frame()
            crop_size, options = self.rule.size, self.preprocess_options
            crops += [
                prepare_crop(frame, square, crop_size, options) for square, _ in frame_squares
            ]
        probabilities = self._crop_probabilities(crops, tta)
        results = []
        for p, mask, whole, frame_squares in zip(
            prepared, masks, whole_probabilities, squares, strict=True
        ):
            total = np.zeros(p.original_shape, np.float32)
            count = np.zeros(p.original_shape, np.float32)
            for square, view in frame_squares:
                dsize = (square.width, square.height)
                back = cv2.resize(next(probabilities), dsize, interpolation=cv2.INTER_LINEAR)
                on_frame, on_square = overlap(square, view)  # never onto another view
                total[on_frame.slices] += back[on_square.slices]
                count[on_frame.slices] += 1
            covered = count > 0
            total[covered] /= count[covered]
            if self.whole_weight > 0 and covered.any() and whole is not None:
                blended = self.whole_weight * whole + (1 - self.whole_weight) * total
                total[covered] = blended[covered]
            refined = (np.asarray(mask) != 0).astype(np.uint8)
            refined[covered] = total[covered] > 0.5
            results.append((refined, total, covered))
        return results

    def _crop_probabilities(self, crops: list[np.ndarray], tta: bool) -> Iterator[np.ndarray]:
        """The nodule probability ``(S, S)`` of each prepared ``uint8`` crop, in order, from
        forward passes of at most `batch_size` crops."""
        for start in range(0, len(crops), self.batch_size):
            batch = to_unit_range(np.stack(crops[start : start + self.batch_size]))[:, None]
            yield from tta_probabilities(self._softmax, batch, tta)[:, 1]

    @abc.abstractmethod
    def _softmax(self, batch: np.ndarray) -> np.ndarray:
        """Softmax class probabilities ``(N, K, S, S)`` float32 of a ``(N, 1, S, S)`` batch
        of crops in ``[0, 1]``: one forward pass (`thyroidseg.inference.flips` adds the TTA)."""
