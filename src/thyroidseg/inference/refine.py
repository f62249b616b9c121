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
- `thyroidseg.inference.refine_base.RefinerBase`: stage 2 at inference around any network
  (crops, paste-back, blending), in numpy;
- here, `Refiner`: that stage with a PyTorch network, used by
  `thyroidseg.inference.Segmenter` (``refiner=``); `thyroidseg.inference.onnx.OnnxRefiner`
  runs the exported network in ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from thyroidseg._checks import PathLike
from thyroidseg.inference.refine_base import WHOLE_WEIGHT, RefinerBase
from thyroidseg.models.ensemble import numpy_probabilities
from thyroidseg.models.folding import FoldedNetwork
from thyroidseg.models.loading import load_network
from thyroidseg.preprocessing.crops import CropRule
from thyroidseg.runtime import AmpMode, for_inference

__all__ = ["WHOLE_WEIGHT", "Refiner"]


class Refiner(RefinerBase):
    """Stage 2 at inference with a PyTorch network (`RefinerBase` does the rest).

    Parameters
    ----------
    model
        The refine network (a `thyroidseg.models.unet.UNet` or a
        `thyroidseg.models.ensemble.Ensemble` of fold models): ``(N, 1, S, S)`` in
        ``[0, 1]`` to class scores ``(N, 2, S, S)``.
    rule, preprocess_options, whole_weight, batch_size
        As for `RefinerBase`.
    device, amp
        As for `thyroidseg.inference.Segmenter`.
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
        batch_size: int = 8,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        super().__init__(rule, preprocess_options, whole_weight=whole_weight, batch_size=batch_size)
        self.model, self.device, self.amp_dtype = for_inference(model, device, amp)
        self._folded = FoldedNetwork(self.model)  # runs it; `model` stays trainable

    @classmethod
    def from_checkpoint(
        cls,
        path: PathLike | Sequence[PathLike],
        *,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        whole_weight: float = WHOLE_WEIGHT,
        batch_size: int = 8,
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
            batch_size=batch_size,
        )

    def _softmax(self, batch: np.ndarray) -> np.ndarray:
        network = self._folded.current()
        return numpy_probabilities(network, batch, device=self.device, amp_dtype=self.amp_dtype)
