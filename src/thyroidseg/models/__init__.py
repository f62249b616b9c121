"""Networks and their files: the U-Net, ensembles, checkpoints, export.

- `thyroidseg.models.unet`: `UNet` (re-exported here with the rest of its ``__all__``);
- `thyroidseg.models.blocks`: its building blocks (`ConvBlock`) and their choices;
- `thyroidseg.models.ensemble`: `Ensemble`, several networks as one;
- `thyroidseg.models.checkpoint`: the checkpoint format, `save_checkpoint`, `load_checkpoint`;
- `thyroidseg.models.registry`: the stable names checkpoints store for their classes;
- `thyroidseg.models.loading`: networks from checkpoint files, or the shipped model;
- `thyroidseg.models.export`: TorchScript and ONNX.

Imports `thyroidseg.preprocessing`.
"""

from thyroidseg.models.unet import (
    ACTIVATIONS,
    DOWNSAMPLES,
    GROUP_NORM_GROUPS,
    MAX_WEIGHTS,
    NORMS,
    PADDINGS,
    UPSAMPLES,
    Activation,
    ConvBlock,
    Downsample,
    Norm,
    Padding,
    UNet,
    Upsample,
    valid_output_size,
)

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "DOWNSAMPLES",
    "GROUP_NORM_GROUPS",
    "MAX_WEIGHTS",
    "NORMS",
    "PADDINGS",
    "UPSAMPLES",
    "ConvBlock",
    "Downsample",
    "Norm",
    "Padding",
    "UNet",
    "Upsample",
    "valid_output_size",
]
