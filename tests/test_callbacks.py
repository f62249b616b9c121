"""Tests of the Trainer's events (`thyroidseg.training.callbacks`) and its key metric."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from torch import nn

from thyroidseg.metrics.confusion import ConfusionMatrix
from thyroidseg.models.checkpoint import LAST_CHECKPOINT, load_checkpoint
from thyroidseg.training import Trainer
from thyroidseg.training.callbacks import Callback, EarlyStopping, HistoryWriter
from thyroidseg.training.history import HISTORY_CSV
from tiny_models import squares


def trainer(out_dir: Path | None = None, *, frozen: bool = False, **options) -> Trainer:
    """A 1x1-convolution trainer on 8 training and 4 validation squares (2 steps an epoch)."""
    torch.manual_seed(0)
    model = nn.Conv2d(1, 2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0 if frozen else 0.05)
    settings = dict(epochs=3, batch_size=4, progress=False, seed=1, optimizer=optimizer)
    settings.update(options)
    return Trainer(
        model, squares(8), squares(4, seed=1), loss=nn.CrossEntropyLoss(), out_dir=out_dir,
        **settings,
    )  # fmt: skip


class Recorder(Callback):
    """Records every event with what it received."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_train_start(self, trainer: Trainer) -> None:
        self.events.append(("train_start", trainer.epoch))

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.events.append(("epoch_start", epoch))

    def on_step_end(self, trainer: Trainer, step: int, loss: float) -> None:
        assert math.isfinite(loss)
        self.events.append(("step_end", step))

    def on_validation_end(
        self, trainer: Trainer, matrix: ConfusionMatrix, row: dict[str, float]
    ) -> None:
        assert matrix.n_images == 4 and "val_iou" in row and "seconds" not in row
        self.events.append(("validation_end", row["epoch"]))

    def on_epoch_end(self, trainer: Trainer, row: Mapping[str, float]) -> None:
        assert trainer.history[-1] is row and trainer.epoch == row["epoch"]
        self.events.append(("epoch_end", row["epoch"]))

    def on_train_end(self, trainer: Trainer) -> None:
        self.events.append(("train_end", trainer.epoch))


def test_the_events_come_in_order_with_their_arguments() -> None:
    recorder = Recorder()
    trainer(epochs=2, callbacks=[recorder]).fit()
    epoch = [("step_end", 1), ("step_end", 2)]
    assert recorder.events == [
        ("train_start", 0),
        ("epoch_start", 1), *epoch, ("validation_end", 1), ("epoch_end", 1),
        ("epoch_start", 2), *epoch, ("validation_end", 2), ("epoch_end", 2),
        ("train_end", 2),
    ]  # fmt: skip


def test_the_trainers_own_callbacks_come_first() -> None:
    recorder = Recorder()
    run = trainer(Path("unused"), early_stopping=2, callbacks=[recorder])
    assert [type(c) for c in run.callbacks] == [HistoryWriter, EarlyStopping, Recorder]
    assert [type(c) for c in trainer().callbacks] == []


def test_early_stopping_as_an_argument_or_a_callback_stops_at_the_same_epoch() -> None:
    by_argument = trainer(frozen=True, epochs=8, early_stopping=2)
    by_callback = trainer(frozen=True, epochs=8, callbacks=[EarlyStopping(2)])
    timeless = [[{k: v for k, v in row.items() if k != "seconds"} for row in run.fit()]
                for run in (by_argument, by_callback)]  # fmt: skip
    assert timeless[0] == timeless[1]
    assert [row["epoch"] for row in by_callback.history] == [1, 2, 3]
    assert (by_callback.best_epoch, by_callback.bad_epochs) == (1, 2)


def test_a_run_resumed_after_early_stopping_trains_no_further(tmp_path: Path) -> None:
    trainer(tmp_path, frozen=True, epochs=8, early_stopping=1).fit()
    resumed = trainer(tmp_path, frozen=True, epochs=8, early_stopping=1)
    assert len(resumed.fit(resume=tmp_path / LAST_CHECKPOINT)) == 2


def test_a_callback_can_stop_the_run() -> None:
    class StopAfterOne(Callback):
        def on_epoch_end(self, trainer: Trainer, row: Mapping[str, float]) -> None:
            trainer.stop()

    assert len(trainer(epochs=5, callbacks=[StopAfterOne()]).fit()) == 1


class PooledIoU(Callback):
    """Adds the pooled nodule IoU of the validation images as ``val_pooled_iou``."""

    def on_validation_end(
        self, trainer: Trainer, matrix: ConfusionMatrix, row: dict[str, float]
    ) -> None:
        row["val_pooled_iou"] = float(matrix.iou()[1])


@pytest.mark.parametrize(
    ("mode", "pick"),
    [("max", max), ("min", min), (lambda value, best: value < best, min)],
    ids=["max", "min", "callable"],
)
def test_the_key_metric_may_come_from_a_callback_and_be_minimised(mode, pick, tmp_path: Path):
    run = trainer(tmp_path, epochs=4, monitor="val_pooled_iou", mode=mode, callbacks=[PooledIoU()])
    history = run.fit()
    values = [row["val_pooled_iou"] for row in history]
    assert len(set(values)) > 1  # the choice matters
    best = values.index(pick(values)) + 1
    assert (run.best_epoch, run.best_score) == (best, pick(values))
    config = load_checkpoint(tmp_path / LAST_CHECKPOINT)["config"]
    assert config["monitor"] == "val_pooled_iou"
    assert "val_pooled_iou" in (tmp_path / HISTORY_CSV).read_text().splitlines()[0]


def test_a_resume_with_another_mode_is_refused(tmp_path: Path) -> None:
    trainer(tmp_path, epochs=2).fit()
    other = trainer(tmp_path, epochs=2, mode="min")
    with pytest.raises(ValueError, match="mode='max' there, 'min' here"):
        other.fit(resume=tmp_path / LAST_CHECKPOINT)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (dict(callbacks=[print]), TypeError, "callbacks must be thyroidseg.training.callbacks"),
        (dict(mode="maximum"), ValueError, "mode must be 'max', 'min' or a function"),
        (dict(monitor="val_hd95"), ValueError, r"monitor must be one of \('val_iou', 'val_dice'\)"),
    ],
)
def test_bad_callbacks_and_key_metrics_are_refused(options, error, message) -> None:
    with pytest.raises(error, match=message):
        trainer(**options)


def test_early_stopping_needs_a_positive_patience() -> None:
    with pytest.raises(ValueError, match="patience must be a positive integer"):
        EarlyStopping(0)


def test_a_key_metric_no_callback_adds_is_named_at_the_first_validation() -> None:
    with pytest.raises(ValueError, match="monitor 'val_hd95' is not in epoch 1's row"):
        trainer(monitor="val_hd95", callbacks=[Recorder()]).fit()
