"""Events of a `thyroidseg.training.Trainer` run, and the callbacks that ship.

A callback subclasses `Callback` and overrides the hooks it needs (the others do
nothing), as MONAI's event handlers and nnU-Net's ``on_*`` methods: the trainer calls them in
the order of its ``callbacks`` list, on every process under ``torchrun``
(`thyroidseg.training.Trainer.is_main` says which process may write files). docs/training.md
shows the order of the events in an epoch and how to write one.

Shipped: `EarlyStopping` (``Trainer(early_stopping=N)`` adds one) and `HistoryWriter`
(``history.csv`` and ``history.png``, added when the trainer has an ``out_dir``).

Examples
--------
>>> import torch
>>> from torch import nn
>>> from thyroidseg.training import Trainer
>>> class PrintLoss(Callback):
...     def on_epoch_end(self, trainer, row):
...         print(f"epoch {row['epoch']}: loss {row['train_loss'] > 0}")
>>> data = [{"image": torch.rand(1, 8, 8), "mask": torch.zeros(8, 8, dtype=torch.int64)}] * 4
>>> trainer = Trainer(nn.Conv2d(1, 2, 3, padding=1), data, loss=nn.CrossEntropyLoss(),
...                   epochs=2, batch_size=2, progress=False, callbacks=[PrintLoss()])
>>> _ = trainer.fit()
epoch 1: loss True
epoch 2: loss True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from thyroidseg._checks import PathLike, check_int
from thyroidseg.metrics.confusion import ConfusionMatrix
from thyroidseg.training.history import write_history

if TYPE_CHECKING:  # the trainer calls the callbacks; they only receive it
    from thyroidseg.training.trainer import Trainer

__all__ = ["Callback", "EarlyStopping", "HistoryWriter", "trainer_callbacks"]


class Callback:
    """Base class of the `thyroidseg.training.Trainer` events; every hook does nothing.

    Hooks receive the trainer, whose state they may read (``epoch``, ``history``,
    ``best_score``, ``best_epoch``, ``model``, ``optimizer``...) and whose
    `thyroidseg.training.Trainer.stop` they may call. ``trainer.epoch`` counts the
    completed epochs, so it is the current epoch's number minus one until ``on_epoch_end``.
    """

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first epoch of `fit` (after a resume has restored the state)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before epoch ``epoch`` (counted from 1) trains."""

    def on_step_end(self, trainer: Trainer, step: int, loss: float) -> None:
        """After optimizer step ``step`` (from 1 in each epoch), with the batch's loss.

        ``loss`` is the mean over processes under ``torchrun``; it is finite (a non-finite
        loss stops the run before this hook).
        """

    def on_validation_end(
        self, trainer: Trainer, matrix: ConfusionMatrix, row: dict[str, float]
    ) -> None:
        """After validation: the per-image confusion matrices and the epoch's row so far.

        A callback may add entries to ``row`` (e.g. ``row["val_pooled_iou"] =
        float(matrix.iou()[1])``); the trainer's ``monitor`` is read after these hooks, so it can
        name one of them.
        """

    def on_epoch_end(self, trainer: Trainer, row: Mapping[str, float]) -> None:
        """After the epoch's row is in ``trainer.history`` and its checkpoints are written."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last epoch, or after `stop` ended the run (not after an exception)."""


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a better ``monitor`` value.

    The count is ``trainer.epoch - trainer.best_epoch``, so it needs no state of its own and
    a resumed run stops where the uninterrupted one would (a run resumed after it stopped
    trains no further epoch).

    Parameters
    ----------
    patience
        Epochs without improvement before the run stops (a positive integer).
    """

    def __init__(self, patience: int) -> None:
        check_int("patience", patience, 1)
        self.patience = patience

    def __repr__(self) -> str:
        return f"EarlyStopping(patience={self.patience})"

    def on_train_start(self, trainer: Trainer) -> None:
        self._check(trainer)

    def on_epoch_end(self, trainer: Trainer, row: Mapping[str, float]) -> None:
        self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        if trainer.val_data is not None and trainer.bad_epochs >= self.patience:
            trainer.stop()


class HistoryWriter(Callback):
    """Rewrite ``out_dir/history.csv`` and ``history.png`` after every epoch (main process).

    Uses `thyroidseg.training.history.write_history`: one row per epoch of
    ``trainer.history`` (a resumed run's rows included), written atomically.
    """

    def __init__(self, out_dir: PathLike) -> None:
        self.out_dir = Path(out_dir)

    def __repr__(self) -> str:
        return f"HistoryWriter({str(self.out_dir)!r})"

    def on_epoch_end(self, trainer: Trainer, row: Mapping[str, float]) -> None:
        if trainer.is_main:
            write_history(self.out_dir, trainer.history)


def trainer_callbacks(
    extra: Iterable[Callback], out_dir: Path | None, early_stopping: int | None
) -> list[Callback]:
    """A `Trainer`'s callbacks: its own (`HistoryWriter`, `EarlyStopping`), then ``extra``."""
    extra = list(extra)
    for callback in extra:
        if not isinstance(callback, Callback):
            raise TypeError(
                f"callbacks must be thyroidseg.training.callbacks.Callback objects, got "
                f"{callback!r}"
            )
    own: list[Callback] = [HistoryWriter(out_dir)] if out_dir is not None else []
    if early_stopping is not None:
        own.append(EarlyStopping(early_stopping))
    return own + extra
