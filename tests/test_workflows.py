"""Tests of the whole-run workflows: ``train_folder`` / ``thyroidseg train``, ``run_demo`` /
``thyroidseg demo``, and the optimizer and schedule names they resolve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import pytest
import torch

from thyroidseg._io import read_binary_mask
from thyroidseg.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, load_checkpoint
from thyroidseg.cli import main
from thyroidseg.losses import DiceCELoss
from thyroidseg.synthetic import write_synthetic_dataset
from thyroidseg.workflows import (
    OPTIMIZER_NAMES,
    SCHEDULE_NAMES,
    make_optimizer,
    make_scheduler,
    train_folder,
)


def parameters() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(2, 2).parameters())


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_make_optimizer_builds_every_name_with_its_settings(name: str) -> None:
    optimizer = make_optimizer(name, parameters(), lr=0.02, weight_decay=0.5)
    assert optimizer.defaults["lr"] == 0.02 and optimizer.defaults["weight_decay"] == 0.5
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lbfgs", parameters())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        make_optimizer(name, parameters(), lr=math.inf)


def test_make_optimizer_sgd_is_nnunets() -> None:
    sgd = make_optimizer("sgd", parameters())
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.99 and sgd.defaults["nesterov"]


def learning_rates(name: str, epochs: int) -> list[float]:
    optimizer = make_optimizer("adamw", parameters(), lr=1.0)
    schedule = make_scheduler(name, optimizer, epochs)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if schedule is not None:
            schedule.step()
    return rates


def test_make_scheduler_follows_the_documented_formulas() -> None:
    assert SCHEDULE_NAMES == ("cosine", "poly", "constant")
    epochs = 4
    cosine = [(1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    poly = [(1 - e / epochs) ** 0.9 for e in range(epochs)]
    assert learning_rates("cosine", epochs) == pytest.approx(cosine)
    assert learning_rates("poly", epochs) == pytest.approx(poly)
    assert learning_rates("constant", epochs) == [1.0] * epochs
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_scheduler("step", make_optimizer("adamw", parameters()), 3)  # type: ignore[arg-type]


def test_train_folder_resolves_the_names_into_objects(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(48, 64), seed=0)
    trainer = train_folder(
        data, tmp_path / "run", folds=2, size=(32, 32), base_channels=4, epochs=1,
        batch_size=4, amp="off", progress=False, optimizer="sgd", lr=0.05, schedule="poly",
    )  # fmt: skip
    assert isinstance(trainer.loss_fn, DiceCELoss)
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert trainer.optimizer.defaults["lr"] == 0.05
    assert isinstance(trainer.scheduler, torch.optim.lr_scheduler.PolynomialLR)
    config = load_checkpoint(tmp_path / "run" / LAST_CHECKPOINT)["config"]
    assert "SGD" in config["optimizer"] and "PolynomialLR" in config["scheduler"]
    assert config["data"]["fold"] == 0 and config["data"]["folds"] == 2


def test_train_command_trains_resumes_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 8, size=(64, 80), seed=0)
    run = tmp_path / "run"
    common = ["--folds", "2", "--size", "32", "32", "--batch-size", "4", "--quiet"]
    common += ["--base-channels", "4", "--amp", "off"]
    assert main(["train", str(data), "--out", str(run), "--epochs", "1", *common]) == 0
    printed = capsys.readouterr().out
    assert str(run / LAST_CHECKPOINT) in printed and "history.csv" in printed
    assert (run / BEST_CHECKPOINT).is_file() and (run / "history.png").is_file()

    assert main(["train", str(data), "--out", str(run), "--epochs", "1", *common]) == 2
    assert "pass resume" in capsys.readouterr().err
    assert main(["train", str(data), "--out", str(run), "--epochs", "2", "--resume", *common]) == 2
    assert "epochs=1 there, 2 here" in capsys.readouterr().err  # the schedule would change
    assert main(["train", str(data), "--out", str(run), "--epochs", "1", "--resume", *common]) == 0
    rows = (run / "history.csv").read_text().splitlines()
    assert len(rows) == 2  # header + epoch 1: the run was complete, resuming adds nothing


def test_demo_command_runs_the_whole_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--images", "12", "--epochs", "1", "--size", "32", "32"]
    assert main([*args, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Confusion matrix over" in printed and "Per image, class 1" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    overlays = sorted((out / "overlays").glob("*.png"))
    assert metrics["n_images"] == len(overlays) >= 1
    truth = read_binary_mask(out / "phantoms" / "masks" / overlays[0].name)
    assert cv2.imread(str(overlays[0])).shape[:2] == truth.shape  # at the original size
    assert main([*args, "--quiet"]) == 2  # a second run would overwrite the first
    assert "previous run" in capsys.readouterr().err
