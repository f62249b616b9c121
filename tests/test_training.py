"""Tests of the Trainer loop: built objects, batches, validation, checkpoints, resume, failures.

Everything runs on tiny in-test models and 16x16 images, so the file takes seconds.
"""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

import thyroidseg
import thyroidseg.io.files
from interrupted_run import make_trainer as make_small_run
from thyroidseg.data import ThyroidDataset
from thyroidseg.data.augment import Augment
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.models.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    LAST_CHECKPOINT,
    WEIGHTS_CHECKSUM,
    load_checkpoint,
)
from thyroidseg.models.unet import UNet
from thyroidseg.training import Trainer
from thyroidseg.training.batching import collate
from thyroidseg.training.divergence import NonFiniteLossError, NonFiniteOutputError
from thyroidseg.training.history import HISTORY_CSV, HISTORY_PNG
from thyroidseg.training.losses import WeightedCrossEntropyLoss, make_loss
from tiny_models import Threshold, squares

INTERRUPTED_RUN = Path(__file__).with_name("interrupted_run.py")


class TinyNet(nn.Module):
    """Convolution, BatchNorm and dropout: every kind of state a resume must restore."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout2d(0.2),
            nn.Conv2d(4, 2, 1),
        )
        self.config = {"num_classes": 2}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class StopAtEpoch(list):
    """A dataset whose ``set_epoch`` hook raises at a given epoch: an interrupted run."""

    def __init__(self, items: list, stop_at: int) -> None:
        super().__init__(items)
        self.stop_at = stop_at

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.stop_at:
            raise KeyboardInterrupt


def make_trainer(model: nn.Module, train, val, out_dir: Path | None, lr=0.01, **kw) -> Trainer:
    """A Trainer with AdamW and a cosine schedule (every kind of state a resume restores)."""
    options = dict(loss=nn.CrossEntropyLoss(), epochs=2, batch_size=4, progress=False, seed=3)
    options.update(kw)
    if "optimizer" not in options:
        options["optimizer"] = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        options["scheduler"] = torch.optim.lr_scheduler.CosineAnnealingLR(
            options["optimizer"], T_max=options["epochs"]
        )
    return Trainer(model, train, val, out_dir=out_dir, **options)


def test_fit_writes_checkpoints_history_and_curves(tmp_path: Path) -> None:
    trainer = make_trainer(TinyNet(), squares(8), squares(4, seed=1), tmp_path, epochs=3)
    history = trainer.fit()
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(0.0 <= row["val_iou"] <= row["val_dice"] <= 1.0 for row in history)
    with open(tmp_path / HISTORY_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["val_iou"]) for r in rows] == pytest.approx([r["val_iou"] for r in history])
    assert cv2.imread(str(tmp_path / HISTORY_PNG)).shape == (360, 720, 3)

    last = load_checkpoint(tmp_path / LAST_CHECKPOINT)
    best = load_checkpoint(tmp_path / BEST_CHECKPOINT)
    assert last["format"] == CHECKPOINT_FORMAT and last["epoch"] == 3
    assert last["thyroidseg_version"] == best["thyroidseg_version"] == thyroidseg.__version__
    assert best["epoch"] == best["best_epoch"] == trainer.best_epoch
    assert best["best_score"] == max(row["val_iou"] for row in history)
    assert last["config"]["model"] == {"num_classes": 2}
    assert set(last) >= {"model", "optimizer", "scheduler", "scaler", "rng", "early_stopping"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_validation_reports_per_image_iou_and_dice(tmp_path: Path) -> None:
    # Images equal to their masks: the threshold model segments them perfectly.
    items = [{"image": s["mask"][None].float(), "mask": s["mask"]} for s in squares(6)]
    trainer = make_trainer(Threshold(), items, items, None, epochs=1)
    (row,) = trainer.fit()
    assert row["val_iou"] == row["val_dice"] == 1.0
    # Half the nodule pixels of one image missed: IoU 1/2 there, so the mean is 3/4.
    wrong = [dict(items[0], mask=items[0]["mask"].clone()), items[1]]
    wrong[0]["image"] = items[0]["image"].clone()
    ys, xs = torch.nonzero(wrong[0]["mask"], as_tuple=True)
    half = ys.numel() // 2
    wrong[0]["image"][0, ys[:half], xs[:half]] = 0.0
    values = trainer.evaluate(wrong).per_image("iou", cls=1)
    np.testing.assert_allclose(values, [(ys.numel() - half) / ys.numel(), 1.0])


@pytest.mark.parametrize("amp", ["off", "auto"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path: Path, amp: str) -> None:
    train, val = squares(10), squares(4, seed=1)
    torch.manual_seed(0)
    straight = make_trainer(TinyNet(), train, val, tmp_path / "a", amp=amp, epochs=3)
    straight.fit()

    torch.manual_seed(0)
    interrupted = make_trainer(
        TinyNet(), StopAtEpoch(train, stop_at=1), val, tmp_path / "b", amp=amp, epochs=3
    )
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert load_checkpoint(tmp_path / "b" / LAST_CHECKPOINT)["epoch"] == 1

    torch.manual_seed(123)  # a different initialisation, overwritten by the checkpoint
    resumed = make_trainer(TinyNet(), train, val, tmp_path / "b", amp=amp, epochs=3)
    resumed.fit(resume=tmp_path / "b" / LAST_CHECKPOINT)

    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    drop_time = [{k: v for k, v in row.items() if k != "seconds"} for row in straight.history]
    assert [
        {k: v for k, v in row.items() if k != "seconds"} for row in resumed.history
    ] == drop_time


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    trainer = make_trainer(TinyNet(), StopAtEpoch(squares(4), stop_at=1), None, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()  # epoch 1 of 2 saved, then interrupted
    before = (tmp_path / LAST_CHECKPOINT).read_bytes()

    real_fdopen = os.fdopen

    class HalfWrite:
        """Writes half of what it is given, then fails like a full disk or a kill."""

        def __init__(self, handle) -> None:
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(
        thyroidseg.io.files.os, "fdopen", lambda fd, mode: HalfWrite(real_fdopen(fd, mode))
    )
    again = make_trainer(TinyNet(), squares(4), None, tmp_path, epochs=2)
    with pytest.raises(OSError, match="No space left"):
        again.fit(resume=tmp_path / LAST_CHECKPOINT)
    monkeypatch.undo()

    assert (tmp_path / LAST_CHECKPOINT).read_bytes() == before
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT)["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_non_finite_loss_names_epoch_and_step_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    calls = []

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        value = nn.functional.cross_entropy(logits, target)
        return value * math.nan if len(calls) == 5 else value  # epoch 2, step 2 (3 steps/epoch)

    trainer = make_trainer(
        TinyNet(), squares(9), squares(3, seed=1), tmp_path, loss=loss, batch_size=3
    )
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 2") as raised:
        trainer.fit()
    assert (raised.value.epoch, raised.value.step) == (2, 2)
    assert raised.value.checkpoint == tmp_path / LAST_CHECKPOINT
    assert str(tmp_path / LAST_CHECKPOINT) in str(raised.value)
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT)["epoch"] == 1


def test_early_stopping_stops_after_patience_epochs_without_improvement() -> None:
    model = TinyNet()
    trainer = make_trainer(
        model,
        squares(4),
        squares(2, seed=1),
        None,
        epochs=10,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),  # frozen weights
        early_stopping=2,
    )
    history = trainer.fit()
    assert len(history) == 3  # epoch 1 sets the best; epochs 2 and 3 do not beat it
    assert trainer.best_epoch == 1 and trainer.bad_epochs == 2


def test_resume_with_another_architecture_is_a_clear_error(tmp_path: Path) -> None:
    make_trainer(TinyNet(), squares(4), None, tmp_path, epochs=1).fit()
    other = make_trainer(Threshold(), squares(4), None, tmp_path)
    with pytest.raises(ValueError, match="last.pt: cannot resume"):
        other.fit(resume=tmp_path / LAST_CHECKPOINT)


def test_resume_refuses_another_optimizer_setting(tmp_path: Path) -> None:
    make_trainer(TinyNet(), squares(4), None, tmp_path, epochs=1).fit()
    other = make_trainer(TinyNet(), squares(4), None, tmp_path, epochs=1, lr=0.02)
    named = r"\(optimizer: initial_lr=0\.01 lr=0\.01 there, initial_lr=0\.02 lr=0\.02 here;"
    with pytest.raises(ValueError, match=rf"cannot resume.*{named}"):
        other.fit(resume=tmp_path / LAST_CHECKPOINT)  # the option named, not the optimizer's repr
    same = make_trainer(TinyNet(), squares(4), None, tmp_path, epochs=1)
    same.fit(resume=tmp_path / LAST_CHECKPOINT)  # the same set-up resumes (nothing left to do)
    assert same.epoch == 1


@pytest.mark.parametrize(
    "first, second, named",
    [
        ({"loss": make_loss("ce")}, {"loss": make_loss("weighted_ce")}, "loss="),
        ({"loss": make_loss("weighted_ce")}, {"loss": make_loss("weighted_ce", w0=5.0)}, "w0=5.0"),
        (
            {"loss": make_loss("dice_ce")},
            {"loss": make_loss("dice_ce", dice_weight=2.0)},
            "dice_weight",
        ),
        (
            {"loss": make_loss("dice_ce_boundary")},
            {"loss": make_loss("dice_ce_boundary", boundary_weight=2.0)},
            "boundary_weight",
        ),
        ({"loss": make_loss("ce")}, {"loss": make_loss("ce", ignore_index=255)}, "ignore_index"),
        ({"amp": "off"}, {"amp": "bf16"}, "amp='off' there, 'bfloat16' here"),
        ({}, {"grad_clip": 1.0}, "grad_clip=None there, 1.0 here"),
    ],
)
def test_resume_refuses_a_changed_loss_precision_or_clipping(tmp_path, first, second, named):
    make_trainer(TinyNet(), squares(4), None, tmp_path, epochs=1, **first).fit()
    other = make_trainer(TinyNet(), squares(4), None, tmp_path, epochs=1, **second)
    with pytest.raises(ValueError, match=f"cannot resume.*{re.escape(named)}"):
        other.fit(resume=tmp_path / LAST_CHECKPOINT)


def test_bad_arguments_are_rejected() -> None:
    data, model, ce = squares(2), TinyNet(), nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="epochs"):
        Trainer(model, data, epochs=0, loss=ce)
    with pytest.raises(ValueError, match="early_stopping needs val_data"):
        Trainer(model, data, early_stopping=3, loss=ce)
    with pytest.raises(ValueError, match="train_data is empty"):
        Trainer(model, [], loss=ce)
    with pytest.raises(ValueError, match=r"make_loss\('dice_ce'\)"):
        Trainer(model, data, loss="dice_ce")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="optimizer must be a torch.optim.Optimizer"):
        Trainer(model, data, optimizer="adamw", loss=ce)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="none of the model's parameters"):
        Trainer(model, data, optimizer=torch.optim.SGD(TinyNet().parameters(), lr=0.1), loss=ce)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    with pytest.raises(ValueError, match="needs the optimizer it was built on"):
        Trainer(model, data, scheduler=schedule, loss=ce)
    other = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler of the optimizer passed with it"):
        Trainer(model, data, optimizer=other, scheduler=schedule, loss=ce)
    with pytest.raises(ValueError, match="each dataset item must be a dict"):
        Trainer(model, [(torch.zeros(1, 4, 4), torch.zeros(4, 4))], loss=ce, progress=False).fit()


def test_default_optimizer_is_adamw_at_a_constant_rate() -> None:
    trainer = Trainer(TinyNet(), squares(4), loss=nn.CrossEntropyLoss(), epochs=2, progress=False)
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and trainer.scheduler is None
    assert trainer.optimizer.defaults["lr"] == 1e-3
    assert trainer.optimizer.defaults["weight_decay"] == 1e-4
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = trainer.fit()
    assert [row["lr"] for row in history] == [1e-3, 1e-3]
    assert any(
        not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True)
    )


def with_weight_map(items: list[dict], value: float) -> list[dict]:
    return [dict(item, weight_map=torch.full(item["mask"].shape, value)) for item in items]


def test_a_weight_map_of_the_dataset_reaches_the_loss() -> None:
    # All-zero weights make the paper's loss exactly 0: it used the dataset's map.
    zero = Trainer(
        TinyNet(), with_weight_map(squares(4), 0.0), loss=WeightedCrossEntropyLoss(),
        epochs=1, progress=False,
    )  # fmt: skip
    assert zero.fit()[0]["train_loss"] == 0.0
    # All-one weights give plain cross-entropy (same weights, dropout and data, no update).
    losses = []
    for items, loss in ((with_weight_map(squares(4), 1.0), WeightedCrossEntropyLoss()),
                        (squares(4), nn.CrossEntropyLoss())):  # fmt: skip
        torch.manual_seed(0)
        model = TinyNet()
        trainer = Trainer(
            model, items, loss=loss, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
            epochs=1, batch_size=4, progress=False,
        )  # fmt: skip
        losses.append(trainer.fit()[0]["train_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[0] > 0


def test_prepare_batch_routes_any_item_key_to_the_loss() -> None:
    seen: list[dict] = []

    def prepare(batch, device, memory_format):
        seen.append({key: batch[key] for key in ("border", "name")})
        image = batch["image"].to(device).contiguous(memory_format=memory_format)
        return image, batch["mask"].to(device), {"weight_map": batch["border"].to(device)}

    items = [
        dict(item, border=torch.zeros(item["mask"].shape), name=f"n{i}")
        for i, item in enumerate(squares(4))
    ]
    trainer = Trainer(
        TinyNet(), items, items, loss=WeightedCrossEntropyLoss(), prepare_batch=prepare,
        epochs=1, batch_size=2, progress=False,
    )  # fmt: skip
    assert trainer.fit()[0]["train_loss"] == 0.0  # the zero "border" map was the weight map
    assert seen[0]["border"].shape == (2, 16, 16)  # stacked like the image and mask
    assert sorted(name for batch in seen[:2] for name in batch["name"]) == ["n0", "n1", "n2", "n3"]
    assert trainer.config["prepare_batch"].endswith("prepare")


class Labelled(list):
    """A dataset that says which mask value marks unlabelled pixels."""

    def __init__(self, items: list, ignore_index: int) -> None:
        super().__init__(items)
        self.ignore_index = ignore_index


def test_validation_leaves_out_the_ignore_index_of_the_loss() -> None:
    items = []
    for square in squares(4):
        image = square["mask"][None].float()
        image[:, :, :4] = 1.0  # the threshold model predicts nodule in columns 0-3...
        mask = square["mask"].clone()
        mask[:, :4] = 255  # ...which are unlabelled: they must not count
        items.append({"image": image, "mask": mask})
    ce = make_loss("ce", ignore_index=255)
    trainer = make_trainer(Threshold(), items, items, None, loss=ce, epochs=1)
    assert trainer.ignore_index == 255 and trainer.config["ignore_index"] == 255
    assert trainer.evaluate(items).ignore_index == 255
    (row,) = trainer.fit()
    assert row["val_iou"] == 1.0  # elsewhere the prediction is exact
    Trainer(Threshold(), Labelled(items, 255), loss=ce)  # dataset and loss agree
    with pytest.raises(ValueError, match=r"disagree on ignore_index \(\[-100, 255\]\)"):
        Trainer(Threshold(), Labelled(items, 255), loss=nn.CrossEntropyLoss())


def test_progress_shows_each_epoch_with_the_time_left(
    capsys: pytest.CaptureFixture[str],
) -> None:
    trainer = make_trainer(TinyNet(), squares(4), squares(2, seed=1), None, progress=None)
    trainer.fit()
    lines = capsys.readouterr().err.splitlines()  # not a terminal: one line per epoch
    assert len(lines) == 2
    assert "1/2" in lines[0] and "left" in lines[0]  # epoch 1 of 2, and the estimate
    assert "2/2" in lines[1] and "left" not in lines[1]
    assert all("train_loss=" in line and "val_iou=" in line for line in lines)


@pytest.mark.parametrize(
    ("killed_at", "nth"),
    [(BEST_CHECKPOINT, 2), (LAST_CHECKPOINT, 2)],  # writing best.pt; between best.pt and last.pt
)
def test_a_kill_at_any_moment_keeps_best_and_last_consistent(
    tmp_path: Path, killed_at: str, nth: int
) -> None:
    straight = make_small_run(tmp_path / "straight")
    straight.fit()
    assert straight.best_epoch == straight.epochs  # best.pt was rewritten every epoch

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, str(INTERRUPTED_RUN), str(run), killed_at, str(nth)]
    killed = subprocess.run([*command, str(torch.get_num_threads())], env=env, check=False)
    assert killed.returncode == 137
    (stale,) = run.glob(f".{killed_at}.*.tmp")  # the write the kill interrupted
    last = load_checkpoint(run / LAST_CHECKPOINT)
    best = load_checkpoint(run / BEST_CHECKPOINT)
    assert last["epoch"] == 1 and last["best_epoch"] == 1
    assert best["epoch"] == (1 if killed_at == BEST_CHECKPOINT else 2)  # never older than last

    resumed = make_small_run(run)
    with pytest.warns(UserWarning, match=rf"removed 1 temporary file.*{stale.name}"):
        resumed.fit(resume=run / LAST_CHECKPOINT)
    assert not list(run.glob(".*.tmp"))
    last = load_checkpoint(run / LAST_CHECKPOINT)
    best = load_checkpoint(run / BEST_CHECKPOINT)
    expected = load_checkpoint(tmp_path / "straight" / BEST_CHECKPOINT)
    assert best["epoch"] == last["best_epoch"] == expected["epoch"]
    assert best["best_score"] == last["best_score"] == expected["best_score"]
    assert best[WEIGHTS_CHECKSUM] == expected[WEIGHTS_CHECKSUM]  # bit-identical weights


def test_resume_rewrites_a_best_checkpoint_lost_by_an_older_version(tmp_path: Path) -> None:
    make_small_run(tmp_path, epochs=2).fit()
    (tmp_path / BEST_CHECKPOINT).unlink()  # killed while 0.1.0 wrote it after last.pt
    resumed = make_small_run(tmp_path, epochs=2)
    with pytest.warns(UserWarning, match=r"best.pt was missing.*rewrote"):
        resumed.fit(resume=tmp_path / LAST_CHECKPOINT)
    best = load_checkpoint(tmp_path / BEST_CHECKPOINT)
    assert (
        best["epoch"] == 2
        and best[WEIGHTS_CHECKSUM] == load_checkpoint(tmp_path / LAST_CHECKPOINT)[WEIGHTS_CHECKSUM]
    )


def test_resume_refuses_a_best_checkpoint_lost_for_good(tmp_path: Path) -> None:
    model = TinyNet()
    frozen = {"optimizer": torch.optim.SGD(model.parameters(), lr=0.0), "epochs": 3}
    trainer = make_trainer(
        model, StopAtEpoch(squares(4), stop_at=2), squares(2, seed=1), tmp_path, **frozen
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()  # epoch 1 is the best, epoch 2 is not better
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT)["best_epoch"] == 1
    (tmp_path / BEST_CHECKPOINT).unlink()
    model = TinyNet()
    frozen["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.0)
    again = make_trainer(model, squares(4), squares(2, seed=1), tmp_path, **frozen)
    with pytest.raises(ValueError, match=r"best.pt is missing.*at epoch 1.*is lost"):
        again.fit(resume=tmp_path / LAST_CHECKPOINT)


def test_resume_refuses_other_data_settings(tmp_path: Path) -> None:
    older = {"root": "/data/a", "fold": 0}  # as a version that stored no "augment" wrote it
    make_trainer(TinyNet(), squares(4), None, tmp_path, epochs=1, data_config=older).fit()
    for changed in ({"fold": 1}, {"root": "/data/b"}):
        other = make_trainer(
            TinyNet(), squares(4), None, tmp_path, epochs=1, data_config={**older, **changed}
        )
        ((key, value),) = changed.items()
        stored = older[key]
        with pytest.raises(ValueError, match=rf"data\['{key}'\]={stored!r} there, {value!r} here"):
            other.fit(resume=tmp_path / LAST_CHECKPOINT)
    newer = {**older, "augment": True}  # a setting the checkpoint lacks is not compared
    same = make_trainer(TinyNet(), squares(4), None, tmp_path, epochs=1, data_config=newer)
    same.fit(resume=tmp_path / LAST_CHECKPOINT)
    assert same.config["data"] == newer


def test_a_nan_validation_image_is_named_with_its_epoch(tmp_path: Path) -> None:
    val = [dict(item, name=f"frame{k}") for k, item in enumerate(squares(5, seed=1))]
    val[3]["image"] = val[3]["image"].clone()
    val[3]["image"][0, 2, 2] = math.nan
    trainer = make_trainer(TinyNet(), squares(4), val, tmp_path, batch_size=2)
    with pytest.raises(NonFiniteOutputError, match=r"item 3 \(frame3\) at epoch 1") as raised:
        trainer.fit()
    assert (raised.value.epoch, raised.value.index, raised.value.image_finite) == (1, 3, False)
    assert "input image itself holds NaN" in str(raised.value)
    assert not (tmp_path / LAST_CHECKPOINT).exists()  # the failing epoch saved nothing


def test_a_non_finite_model_output_in_evaluate_is_named() -> None:
    items = [{"image": s["mask"][None].float(), "mask": s["mask"]} for s in squares(3)]
    model = Threshold()
    trainer = make_trainer(model, items, None, None)
    with torch.no_grad():
        model.scale.fill_(math.inf)  # logits of +-inf for the 0/1 images
    with pytest.raises(NonFiniteOutputError, match="validation item 0: its image is finite"):
        trainer.evaluate(items)


def test_monitor_val_dice_picks_the_best_checkpoint_by_dice(tmp_path: Path) -> None:
    trainer = make_trainer(TinyNet(), squares(8), squares(4, seed=1), tmp_path, epochs=3,
                           monitor="val_dice")  # fmt: skip
    history = trainer.fit()
    best = max(range(3), key=lambda i: history[i]["val_dice"])
    assert trainer.best_epoch == best + 1
    assert trainer.best_score == history[best]["val_dice"]
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT)["config"]["monitor"] == "val_dice"
    with pytest.raises(ValueError, match="monitor must be one of"):
        make_trainer(TinyNet(), squares(4), None, None, monitor="loss")


def test_validation_counts_as_many_classes_as_the_logits_have(tmp_path: Path) -> None:
    three = nn.Conv2d(1, 3, 1)  # no config: the classes come from the logits
    trainer = make_trainer(three, squares(4), squares(2, seed=1), None, epochs=1)
    assert trainer.evaluate(squares(2, seed=1)).num_classes == 3


class SquaresStream(IterableDataset):
    """An iterable-style dataset (no length, no indexing): only a DataLoader can feed it."""

    def __init__(self, items: list[dict[str, torch.Tensor]]) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


def test_the_trainer_takes_built_loaders_as_they_are(tmp_path: Path) -> None:
    train, val = squares(8), squares(4, seed=1)
    sampler_epochs: list[int] = []

    class Recording(torch.utils.data.RandomSampler):
        def set_epoch(self, epoch: int) -> None:
            sampler_epochs.append(epoch)

    loader = DataLoader(train, batch_size=3, sampler=Recording(train), collate_fn=collate)
    streamed = DataLoader(SquaresStream(val), batch_size=2, collate_fn=collate)
    trainer = make_trainer(TinyNet(), loader, streamed, tmp_path, epochs=2)
    history = trainer.fit()
    assert sampler_epochs == [0, 1]  # the caller's sampler, told the epoch
    assert [row["epoch"] for row in history] == [1, 2] and 0 <= history[-1]["val_iou"] <= 1
    assert trainer.evaluate(streamed).n_images == 4  # the loader's items, all of them
    same = make_trainer(TinyNet(), train, val, None, epochs=2)
    assert same.evaluate(val).n_images == trainer.evaluate(streamed).n_images


def test_resume_refuses_another_augmentation_setting_and_names_it(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 4, size=(48, 64), seed=0)
    dataset = ThyroidDataset(data, size=(32, 32), progress=False)

    def run(augment: Augment) -> Trainer:
        return Trainer(
            UNet(base_channels=4, depth=2, seed=0), dataset.with_transform(augment),
            loss=nn.CrossEntropyLoss(), epochs=1, batch_size=4, out_dir=tmp_path / "run",
            progress=False, amp="off",
        )  # fmt: skip

    run(Augment(seed=0)).fit()
    stored = load_checkpoint(tmp_path / "run" / LAST_CHECKPOINT)["config"]["data"]
    assert stored["transform"] == Augment(seed=0).config
    with pytest.raises(ValueError, match=r"data\['transform'\]\.rotate=10\.0 there, 20\.0 here"):
        run(Augment(rotate=20.0, seed=0)).fit(resume=tmp_path / "run" / LAST_CHECKPOINT)
    run(Augment(seed=0)).fit(resume=tmp_path / "run" / LAST_CHECKPOINT)  # the same: resumes
