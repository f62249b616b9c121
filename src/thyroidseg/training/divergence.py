"""Why a training run stopped early: its numbers stopped being finite.

`NonFiniteLossError` (a NaN or infinite training loss) and `NonFiniteOutputError` (a NaN or
infinite model output on a validation item) are raised by `thyroidseg.training.Trainer`;
each names where it happened and which checkpoint was kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["NonFiniteLossError", "NonFiniteOutputError", "item_name"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; nothing was saved for the failing epoch.

    Attributes
    ----------
    epoch, step
        Where it happened (both 1-based; ``step`` counts batches within the epoch).
    value
        The loss value.
    checkpoint
        The last good checkpoint (``last.pt`` of the previous epoch), or ``None``.
    """

    def __init__(self, epoch: int, step: int, value: float, checkpoint: Path | None) -> None:
        kept = (
            f"the last good checkpoint is {checkpoint}"
            if checkpoint is not None
            else "no checkpoint had been written yet"
        )
        super().__init__(
            f"loss is {value} at epoch {epoch}, step {step}; training stopped and {kept} "
            "(lower the learning rate, set grad_clip, or use amp='off' to find the cause)"
        )
        self.epoch, self.step, self.value, self.checkpoint = epoch, step, value, checkpoint


class NonFiniteOutputError(RuntimeError):
    """The model's output for a validation item holds NaN or infinite values.

    Attributes
    ----------
    epoch
        The 1-based epoch whose validation failed (``None`` from `Trainer.evaluate`).
    index
        The item's index in the validation data.
    name
        The item's ``"name"`` entry, or ``None`` when it has none.
    image_finite
        Whether the item's input image was finite (if not, the data is at fault).
    checkpoint
        The last good checkpoint (``last.pt`` of the previous epoch), or ``None``.
    """

    def __init__(
        self,
        epoch: int | None,
        index: int,
        name: str | None,
        image_finite: bool,
        checkpoint: Path | None,
    ) -> None:
        item = f"validation item {index}" + (f" ({name})" if name is not None else "")
        when = f" at epoch {epoch}" if epoch is not None else ""
        cause = (
            "its image is finite, so the model produced them (lower the learning rate, set "
            "grad_clip, or use amp='off' to find the cause)"
            if image_finite
            else "its input image itself holds NaN or infinite values: check that file"
        )
        kept = (
            f"; the last good checkpoint is {checkpoint}"
            if checkpoint is not None
            else "; no checkpoint had been written yet"
            if epoch is not None
            else ""
        )
        super().__init__(f"the model's output is NaN or infinite for {item}{when}: {cause}{kept}")
        self.epoch, self.index, self.name = epoch, index, name
        self.image_finite, self.checkpoint = image_finite, checkpoint


def item_name(dataset: Any, index: int) -> str | None:
    """The ``"name"`` entry of ``dataset[index]`` for `NonFiniteOutputError`, or ``None``.

    ``None`` also when the dataset cannot be indexed (an iterable-style dataset).
    """
    try:
        item = dataset[index]
    except (TypeError, IndexError, NotImplementedError):
        return None
    name = item.get("name") if isinstance(item, Mapping) else None
    return None if name is None else str(name)
