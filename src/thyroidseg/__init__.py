"""thyroidseg: thyroid nodule segmentation in ultrasound with a U-Net, and metrics defined correctly."""

from thyroidseg._version import __version__

__all__ = ["__version__"]
