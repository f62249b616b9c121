"""Crop and refine: a second network segments each found nodule again, at full resolution.

The whole-frame network (stage 1) sees a scan region shrunk to 128 x 128, where one network
pixel covers about four frame pixels, so the outline of a small nodule is coarse. The
refine network (stage 2) sees a square crop of the *full-resolution* frame around each
nodule that stage 1 found, resized to `CropRule.size`, and outlines it again; its
probabilities are pasted back into the frame. This is the cascade of the TN-SCUI 2020
winners.

The parts live where their side of the library does:

- `thyroidseg.preprocessing.crops`: `CropRule` (where a crop goes around a nodule's box, in
  training and at inference), `nodule_boxes`, and how crops are cut from the cleaned frame
  (`thyroidseg.preprocessing.Preprocessed.cleaned_frame`) and prepared;
- `thyroidseg.data.crops.CropDataset`: training crops around the annotated nodules of a
  `thyroidseg.data.ThyroidDataset` (random margin and centre jitter), for
  `thyroidseg.training.Trainer`; `thyroidseg.training.workflows.REFINE_RECIPE`: the stage's
  training recipe;
- here, `Refiner`: stage 2 at inference, used by `thyroidseg.inference.Segmenter`
  (``refiner=``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from thyroidseg._checks import PathLike, check_probability
from thyroidseg.models.ensemble import class_probabilities
from thyroidseg.models.loading import load_network
from thyroidseg.preprocessing.crops import (
    CropRule,
    cleaning_options,
    nodule_boxes,
    overlap,
    prepare_crop,
)
from thyroidseg.preprocessing.pipeline import Preprocessed, to_unit_range
from thyroidseg.runtime import AmpMode, resolve_amp, resolve_device

__all__ = ["WHOLE_WEIGHT", "Refiner"]

WHOLE_WEIGHT = 0.25
"""Default `Refiner.whole_weight`: a quarter of the whole-frame probability is kept inside the
crops (chosen by grouped cross-validation on DDTI, docs/model-card.md)."""


class Refiner:
    r"""Stage 2 at inference: segment each stage-1 nodule again from a full-resolution crop.

    For each connected component of the stage-1 mask (`nodule_boxes`, per view), the
    `CropRule.square` crop with `CropRule.margin` is cut from the cleaned frame, prepared as
    in training and segmented (with flip TTA when on). Each crop's nodule probability is
    resized back onto its square (bilinear) and averaged where squares overlap; inside the
    squares the mask becomes ``probability > 0.5``, outside them the stage-1 mask is kept.

    Parameters
    ----------
    model
        The refine network (a `thyroidseg.models.unet.UNet` or a
        `thyroidseg.models.ensemble.Ensemble` of fold models): ``(N, 1, S, S)`` in
        ``[0, 1]`` to class scores ``(N, 2, S, S)``.
    rule
        The crop rule it was trained with.
    preprocess_options
        The `preprocess` options of its training data: the cleaning options must match
        stage 1's (`Segmenter` checks), ``equalization``/``smoothing`` prepare the crops.
    device, amp
        As for `thyroidseg.inference.Segmenter`.
    whole_weight
        ``w`` in the probability inside the squares,
        $p = w\,p_{\mathrm{whole}} + (1 - w)\,p_{\mathrm{refine}}$: how much of the
        whole-frame network's probability (resampled to the frame) is kept, an ensemble of
        the two stages (default `WHOLE_WEIGHT`, chosen by cross-validation).
    """

    def __init__(
        self,
        model: nn.Module,
        rule: CropRule,
        preprocess_options: Mapping[str, Any] | None = None,
        *,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        whole_weight: float = WHOLE_WEIGHT,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(rule, CropRule):
            raise ValueError(f"rule must be a CropRule, got {type(rule).__name__}")
        self.device = resolve_device(device)
        self.amp_dtype = resolve_amp(amp, self.device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        check_probability("whole_weight", whole_weight)
        self.rule = rule
        self.preprocess_options = dict(preprocess_options or {})
        self.whole_weight = float(whole_weight)

    @classmethod
    def from_checkpoint(
        cls,
        path: PathLike | Sequence[PathLike],
        *,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        whole_weight: float = WHOLE_WEIGHT,
    ) -> Refiner:
        """The refine network(s) of checkpoint(s) written by a crop run of ``thyroidseg train``.

        Several checkpoints (the fold models) become one `thyroidseg.models.ensemble.Ensemble`;
        they must share one crop rule and preprocessing.

        Raises
        ------
        FileNotFoundError, ValueError
            As `thyroidseg.models.loading.load_network`, or a whole-frame checkpoint (no crop
            rule stored). Each message names the file.
        """
        stored = load_network(path)
        if stored.crops is None:
            raise ValueError(
                f"{path}: a whole-frame (stage 1) model, not a refine model: it stores no crop "
                "rule (train one with `thyroidseg train DATA RUN_DIR --stage refine`)"
            )
        return cls(
            stored.network,
            CropRule.from_dict(stored.crops),
            stored.preprocess_options,
            device=device,
            amp=amp,
            whole_weight=whole_weight,
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the crop rule, the preprocessing and how crops become the mask."""
        return {
            "crops": self.rule.to_dict(),
            "preprocess_options": dict(self.preprocess_options),
            "whole_weight": self.whole_weight,
            "rule": "for each connected component of the whole-frame mask (per view), the "
            "square of side max(round(L (1 + 2 margin)), min_side) around its box centre (L: "
            "the box's longer side), cut from the cleaned frame (zero outside it), resized to "
            "size x size, equalised and smoothed; nodule probabilities resized back and "
            "averaged where squares overlap, then whole_weight * (the whole-frame probability) + "
            "(1 - whole_weight) * that; mask = probability > 0.5 inside the squares",
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
        """`refine` for several frames, all their crops in one forward pass."""
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
            frame = p.cleaned_frame() if frame_squares else None
            size, options = self.rule.size, self.preprocess_options
            crops += [prepare_crop(frame, square, size, options) for square, _ in frame_squares]
        probabilities = iter(self._probabilities(crops, tta))
        results = []
        for p, mask, whole, frame_squares in zip(
            prepared, masks, whole_probabilities, squares, strict=True
        ):
            total = np.zeros(p.original_shape, np.float32)
            count = np.zeros(p.original_shape, np.float32)
            for square, view in frame_squares:
                size = (square.width, square.height)
                back = cv2.resize(next(probabilities), size, interpolation=cv2.INTER_LINEAR)
                on_frame, on_square = overlap(square, view)  # never onto another view
                total[on_frame.slices] += back[on_square.slices]
                count[on_frame.slices] += 1
            covered = count > 0
            total[covered] /= count[covered]
            if self.whole_weight > 0 and covered.any():
                blended = self.whole_weight * whole + (1 - self.whole_weight) * total
                total[covered] = blended[covered]
            refined = (np.asarray(mask) != 0).astype(np.uint8)
            refined[covered] = total[covered] > 0.5
            results.append((refined, total, covered))
        return results

    def _probabilities(self, crops: list[np.ndarray], tta: bool) -> np.ndarray:
        """Nodule probability ``(N, S, S)`` of prepared ``uint8`` crops (none: empty)."""
        if not crops:
            return np.zeros((0, self.rule.size, self.rule.size), np.float32)
        batch = torch.from_numpy(to_unit_range(np.stack(crops))[:, None])
        probabilities = class_probabilities(
            self.model, batch, device=self.device, amp_dtype=self.amp_dtype, tta=tta
        )
        return probabilities[:, 1].cpu().numpy()
