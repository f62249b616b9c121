"""Tests of the Trainer loop, checkpoints, resume, failure handling and speed settings.

Everything runs on tiny in-test models and 16x16 images, so the file takes seconds.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import thyroidseg._io
from thyroidseg.training import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    HISTORY_CSV,
    HISTORY_PNG,
    LAST_CHECKPOINT,
    NonFiniteLossError,
    Trainer,
    load_checkpoint,
    resolve_amp,
    save_checkpoint,
    tune_cpu_allocator,
)


def squares(n: int, size: int = 16, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Noisy images with one bright square each; the mask is the square."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        mask = np.zeros((size, size), np.int64)
        y, x = rng.integers(0, size // 2, 2)
        side = int(rng.integers(3, size // 2))
        mask[y : y + side, x : x + side] = 1
        image = 0.3 + 0.4 * mask + 0.1 * rng.standard_normal((size, size))
        items.append(
            {"image": torch.tensor(image[None], dtype=torch.float32), "mask": torch.tensor(mask)}
        )
    return items


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


class Threshold(nn.Module):
    """Predicts nodule iff the image is > 0.5, whatever its one weight (if positive)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.cat([0.5 - x, x - 0.5], dim=1)


class StopAtEpoch(list):
    """A dataset whose ``set_epoch`` hook raises at a given epoch: an interrupted run."""

    def __init__(self, items: list, stop_at: int) -> None:
        super().__init__(items)
        self.stop_at = stop_at

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.stop_at:
            raise KeyboardInterrupt


def make_trainer(model: nn.Module, train, val, out_dir: Path | None, **kw) -> Trainer:
    options = dict(
        loss=nn.CrossEntropyLoss(), epochs=2, batch_size=4, progress=False, seed=3, lr=0.01
    )
    options.update(kw)
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
        thyroidseg._io.os, "fdopen", lambda fd, mode: HalfWrite(real_fdopen(fd, mode))
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
    frozen = lambda parameters: torch.optim.SGD(parameters, lr=0.0)  # noqa: E731
    trainer = make_trainer(
        TinyNet(),
        squares(4),
        squares(2, seed=1),
        None,
        epochs=10,
        optimizer=frozen,
        early_stopping=2,
    )
    history = trainer.fit()
    assert len(history) == 3  # epoch 1 sets the best; epochs 2 and 3 do not beat it
    assert trainer.best_epoch == 1 and trainer.bad_epochs == 2


def test_load_checkpoint_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")

    good = save_checkpoint(tmp_path / "good.pt", {"format": CHECKPOINT_FORMAT, "w": torch.ones(99)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.pt: corrupt or truncated"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt: corrupt or truncated"):
        load_checkpoint(empty)
    text = tmp_path / "text.pt"  # not a zip: torch reads it as a legacy pickle and fails
    text.write_text("garbage\n")
    with pytest.raises(ValueError, match=r"text.pt: corrupt or truncated checkpoint \(Unsupported"):
        load_checkpoint(text)

    pickled = tmp_path / "pickled.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "code": Path("x")}, pickled)
    with pytest.raises(ValueError, match="pickled.pt: refusing to load.*pathlib"):
        load_checkpoint(pickled)

    bare = tmp_path / "bare.pt"
    torch.save(TinyNet().state_dict(), bare)
    with pytest.raises(ValueError, match="bare.pt: not a thyroidseg checkpoint"):
        load_checkpoint(bare)


def test_resume_with_another_architecture_is_a_clear_error(tmp_path: Path) -> None:
    make_trainer(TinyNet(), squares(4), None, tmp_path, epochs=1).fit()
    other = make_trainer(Threshold(), squares(4), None, tmp_path)
    with pytest.raises(ValueError, match="last.pt: cannot resume"):
        other.fit(resume=tmp_path / LAST_CHECKPOINT)


def test_bad_arguments_are_rejected() -> None:
    data = squares(2)
    with pytest.raises(ValueError, match="epochs"):
        Trainer(TinyNet(), data, epochs=0)
    with pytest.raises(ValueError, match="early_stopping needs val_data"):
        Trainer(TinyNet(), data, early_stopping=3, loss=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="train_data is empty"):
        Trainer(TinyNet(), [], loss=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(TinyNet(), data, optimizer="lbfgs", loss=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="each dataset item must be a dict"):
        Trainer(
            TinyNet(),
            [(torch.zeros(1, 4, 4), torch.zeros(4, 4))],
            loss=nn.CrossEntropyLoss(),
            progress=False,
        ).fit()


def test_amp_selection_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu) is None
    assert resolve_amp("auto", cpu) in (None, torch.bfloat16)
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("half", cpu)  # type: ignore[arg-type]


def test_allocator_tuning_is_applied_on_glibc_and_harmless_elsewhere() -> None:
    import platform

    applied = tune_cpu_allocator()
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_progress_reports_each_epoch_with_loss_and_metric(
    capsys: pytest.CaptureFixture[str],
) -> None:
    trainer = make_trainer(TinyNet(), squares(4), squares(2, seed=1), None, progress=None)
    trainer.fit()
    lines = capsys.readouterr().err.splitlines()  # not a terminal: one line per finished bar
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2", "epochs"]
    assert all("loss=" in line for line in lines[:2])
    assert "val_iou=" in lines[-1] and "val_dice=" in lines[-1]
