"""The 1x1 heads of `UNet`'s deep supervision: logits of the coarser decoder levels.

Deep supervision (Lee et al. 2015; nnU-Net, MONAI ``DynUNet``) adds a loss on the output of
decoder levels coarser than the last one, so that their features are pushed towards the
segmentation directly. `AuxiliaryHeads` holds one 1x1 convolution per supervised level; in
training it turns those levels' features into logits, upsamples them bilinearly to the main
logits' size and stacks everything as MONAI's ``DynUNet`` does: ``(N, 1 + S, K, H, W)``, index
0 the main logits, then the levels from the finest to the coarsest. The loss side is
`thyroidseg.training.deep_supervision.DeepSupervisionLoss`; ``docs/model.md`` (Deep
supervision) has the rationale.

Examples
--------
>>> import torch
>>> heads = AuxiliaryHeads([8, 16], num_classes=2)
>>> levels = [torch.zeros(1, 8, 4, 4), torch.zeros(1, 16, 2, 2)]
>>> heads.stack(torch.zeros(1, 2, 8, 8), levels, (8, 8)).shape
torch.Size([1, 3, 2, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AuxiliaryHeads"]


class AuxiliaryHeads(nn.Module):
    """One 1x1 convolution per supervised decoder level, finest first.

    Parameters
    ----------
    widths
        Channels of each supervised level's features, finest first (``S`` entries; none
        builds no layer, so the state dict has no key).
    num_classes
        Logit channels of each head.
    """

    def __init__(self, widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for width in widths)

    def __len__(self) -> int:
        return len(self.heads)

    @torch.jit.unused
    def stack(self, logits: Tensor, levels: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        """``(N, 1 + S, K, h, w)``: ``logits`` then each level's head, upsampled and cropped.

        Parameters
        ----------
        logits
            The main logits ``(N, K, h, w)``, already cropped to the output ``h x w``.
        levels
            The supervised levels' features, finest first, one per head.
        size
            The padded input size ``(H, W)`` the levels are fractions of: each level's logits
            are upsampled bilinearly (``align_corners=False``) to it, then cropped at the top
            left to ``h x w`` as the main logits were.
        """
        height, width = logits.shape[-2], logits.shape[-1]
        outputs = [logits]
        for head, features in zip(self.heads, levels, strict=True):
            level = F.interpolate(head(features), size=size, mode="bilinear", align_corners=False)
            outputs.append(level[..., :height, :width])
        return torch.stack(outputs, dim=1)
