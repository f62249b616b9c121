"""Tests of the whole-run workflows: ``train_folder`` / ``thyroidseg train``, ``run_demo`` /
``thyroidseg demo``, and the optimizer and schedule names they resolve."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import cv2
import pytest
import torch

import thyroidseg.training.workflows
from thyroidseg.cli import main
from thyroidseg.data import ThyroidDataset
from thyroidseg.data.augment import Augment
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.io.files import read_binary_mask
from thyroidseg.models.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, load_checkpoint
from thyroidseg.models.unet import UNet
from thyroidseg.training.demo import DemoResult, run_demo
from thyroidseg.training.losses import DiceCELoss
from thyroidseg.training.workflows import (
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
    assert SCHEDULE_NAMES == ("cosine", "warmup_cosine", "poly", "constant")
    epochs = 4
    cosine = [(1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    poly = [(1 - e / epochs) ** 0.9 for e in range(epochs)]
    assert learning_rates("cosine", epochs) == pytest.approx(cosine)
    # 20 epochs: 2 warm-up epochs at 1/2 and 2/2, then a cosine over the other 18
    warm = [0.5, 1.0] + [(1 + math.cos(math.pi * e / 18)) / 2 for e in range(18)]
    assert learning_rates("warmup_cosine", 20) == pytest.approx(warm)
    assert learning_rates("warmup_cosine", 3) == pytest.approx([1.0, 1.0, 0.5])
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
    assert main(["train", str(data), str(run), "--epochs", "1", *common]) == 0
    printed = capsys.readouterr().out
    assert str(run / LAST_CHECKPOINT) in printed and "history.csv" in printed
    assert (run / BEST_CHECKPOINT).is_file() and (run / "history.png").is_file()

    assert main(["train", str(data), str(run), "--epochs", "1", *common]) == 2
    assert "pass --resume to continue" in capsys.readouterr().err
    assert main(["train", str(data), str(run), "--epochs", "2", "--resume", *common]) == 2
    assert "epochs=1 there, 2 here" in capsys.readouterr().err  # the schedule would change
    assert main(["train", str(data), str(run), "--epochs", "1", "--resume", *common]) == 0
    rows = (run / "history.csv").read_text().splitlines()
    assert len(rows) == 2  # header + epoch 1: the run was complete, resuming adds nothing


def test_demo_command_runs_the_whole_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--images", "12", "--epochs", "1", "--size", "64", "64"]
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


SMALL = ["--size", "32", "32", "--batch-size", "4", "--quiet", "--base-channels", "4"]
SMALL += ["--amp", "off", "--epochs", "1"]


@pytest.fixture
def no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make reading a dataset fail the test: what is checked must be checked before."""

    def read(*args, **kwargs):
        raise AssertionError("the dataset was read before the settings were checked")

    monkeypatch.setattr(thyroidseg.training.workflows, "ThyroidDataset", read)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--epochs", "0"], "epochs must be a positive integer, got 0"),
        (["--lr", "nan"], "lr must be a positive finite number, got nan"),
        (["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
        (["--workers", "-1"], "num_workers must be an integer >= 0"),
        (["--early-stopping", "0"], "early_stopping must be a positive integer"),
        (["--fold", "5"], r"fold must be None or an integer in \[0, 5\)"),
        (["--device", "gpu"], "device 'gpu' is not a device name"),
        (["--all", "--fold", "1"], "--all trains on every frame"),
        (["--all", "--early-stopping", "3"], "early_stopping needs val_data"),
    ],
)
def test_train_settings_are_checked_before_the_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_reading, arguments, message
) -> None:
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "data"), str(run), *SMALL, *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thyroidseg train: error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_train_on_a_missing_cuda_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_reading, monkeypatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["train", str(tmp_path), str(tmp_path / "run"), *SMALL, "--device", "cuda"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "device 'cuda' is not available" in err and err.count("\n") == 1


def test_train_folder_reports_a_bad_output_path_before_reading(tmp_path: Path, no_reading) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ValueError, match=r"taken is a file, not a folder \(the output folder\)"):
        train_folder(tmp_path, tmp_path / "taken", epochs=1)
    with pytest.raises(ValueError, match="unknown Trainer option\\(s\\) 'batchsize'"):
        train_folder(tmp_path, tmp_path / "run", batchsize=4)


def test_train_resume_refuses_other_data_settings_before_reading(
    tmp_path: Path, monkeypatch
) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 8, size=(64, 80), seed=0)
    other = write_synthetic_dataset(tmp_path / "other", 8, size=(64, 80), seed=1)
    run = tmp_path / "run"
    options = dict(size=(32, 32), base_channels=4, epochs=1, batch_size=4, amp="off")
    train_folder(data, run, folds=2, progress=False, **options)
    written = (run / LAST_CHECKPOINT).read_bytes()
    stored = load_checkpoint(run / LAST_CHECKPOINT)["config"]["data"]
    assert stored["root"] == str(data.resolve()) and stored["augment"] is True

    def read(*args, **kwargs):
        raise AssertionError("the dataset was read before the resume was checked")

    monkeypatch.setattr(thyroidseg.training.workflows, "ThyroidDataset", read)
    changes = [
        ({"fold": 1}, "fold=0 there, 1 here"),
        ({"folds": 3}, "folds=2 there, 3 here"),
        ({"size": (48, 48)}, r"size=\[32, 32\] there, \[48, 48\] here"),
        ({"augment": False}, "augment=True there, False here"),
        ({"data_dir": other}, rf"data_dir='{re.escape(str(data.resolve()))}' there"),
        ({"fold": None}, "fold=0 there, None here; folds=2 there, None here"),
    ]
    for change, message in changes:
        settings = {"data_dir": data, "folds": 2, **options, **change}
        with pytest.raises(ValueError, match=rf"cannot resume on other data.*{message}"):
            train_folder(settings.pop("data_dir"), run, resume=True, progress=False, **settings)
    assert (run / LAST_CHECKPOINT).read_bytes() == written  # the stored config is untouched
    with pytest.raises(ValueError, match="fold=0 there, 1 here; size="):  # every change named
        train_folder(data, run, folds=2, resume=True, fold=1, **{**options, "size": (48, 48)})


def test_train_all_trains_on_every_frame_without_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(64, 80), seed=0)
    run = tmp_path / "run"
    assert main(["train", str(data), str(run), "--all", *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "trained on all 6 frames for 1 epochs" in printed
    assert f"checkpoints: {run / LAST_CHECKPOINT}\n" in printed
    assert not (run / BEST_CHECKPOINT).exists()
    last = load_checkpoint(run / LAST_CHECKPOINT)
    assert last["config"]["data"]["fold"] is None and last["config"]["data"]["folds"] is None
    assert "val_iou" not in last["history"][0]
    assert main(["train", str(data), str(run), "--resume", *SMALL]) == 2
    assert "fold=None there, 0 here" in capsys.readouterr().err  # --all is not a fold run


def test_predict_on_a_checkpoint_of_another_version_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = UNet(base_channels=4, depth=2, seed=0)
    config = {
        "model_class": "thyroidseg.model.UNet",
        "model": {**model.config, "attention": True},
        "data": {"preprocess": "default", "preprocess_options": {"size": [32, 32]}},
    }
    checkpoint = {"format": "thyroidseg-checkpoint/1", "config": config}
    checkpoint |= {"model": model.state_dict(), "thyroidseg_version": "9.1"}
    torch.save(checkpoint, tmp_path / "future.pt")
    frames = write_synthetic_dataset(tmp_path / "data", 2, size=(64, 80), seed=0) / "images"
    args = ["predict", str(frames), str(tmp_path / "out"), "--model", str(tmp_path / "future.pt")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "future.pt" in err and "'attention'" in err and "written by thyroidseg 9.1" in err


def test_demo_refuses_a_size_its_network_cannot_take(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 64 x 64"):
        run_demo(tmp_path / "demo", n_images=4, size=(32, 64), epochs=1, progress=False)
    assert not (tmp_path / "demo" / "phantoms").exists()  # refused before anything is written


def test_the_demos_0_2_path_gives_the_same_objects_with_a_warning() -> None:
    for name, moved in [("run_demo", run_demo), ("DemoResult", DemoResult)]:
        with pytest.warns(
            FutureWarning,
            match=rf"workflows.{name} is deprecated and goes in 0.4: .*training.demo$",
        ):
            assert getattr(thyroidseg.training.workflows, name) is moved
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        thyroidseg.training.workflows.nothing  # noqa: B018


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--images", "0"], "--images must be an integer >= 3"),
        (["--epochs", "0"], "epochs must be a positive integer"),
    ],
)
def test_demo_checks_its_settings_before_writing_anything(tmp_path, capsys, argv, message):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_phantoms_with_a_leak_group_column_raise_no_leak_group_warning(tmp_path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 4, size=(48, 64), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ThyroidDataset(data, size=(32, 32), progress=False)


def test_a_refused_split_leaves_no_run_folder_behind(tmp_path, capsys) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(48, 64), seed=0)
    run = tmp_path / "run"
    argv = ["train", str(data), str(run), "--folds", "100", "--size", "32", "32"]
    assert main([*argv, "--quiet"]) == 2
    assert "100" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("run", [[], ["RUN"]])
def test_train_out_of_0_1_is_gone_and_the_error_says_run_dir(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", str(tmp_path / "data"), *run, "--out", str(tmp_path / "old")])
    assert stopped.value.code == 2
    assert "--out was removed in 0.3: give the run folder as RUN_DIR" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_info_writes_json_to_a_file_it_names_and_prints_it_without_one(tmp_path, capsys):
    assert main(["info", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    target = tmp_path / "info.json"
    assert main(["info", "--json", str(target)]) == 0
    assert json.loads(target.read_text()).keys() == printed.keys()
    assert main(["info", "--json", str(target)]) == 2  # not again without --overwrite
    assert "pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("threads", ["0", "two", "-1"])
def test_a_thread_count_that_is_not_a_positive_integer_or_auto_is_refused(
    tmp_path, capsys, threads
):
    argv = ["evaluate", str(tmp_path), str(tmp_path), f"--threads={threads}"]
    assert main(argv) == 2
    assert "--threads must be a positive integer or auto" in capsys.readouterr().err


def test_train_folder_takes_an_augment_and_resumes_only_with_the_same(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 8, size=(64, 80), seed=0)
    run = tmp_path / "run"
    options = dict(size=(32, 32), base_channels=4, epochs=1, batch_size=4, amp="off")
    strong = Augment(rotate=15.0, scale=(0.85, 1.15), seed=0)
    train_folder(data, run, folds=2, augment=strong, progress=False, **options)
    stored = load_checkpoint(run / LAST_CHECKPOINT)["config"]["data"]
    assert stored["transform"]["rotate"] == 15.0 and stored["augment"] is True
    with pytest.raises(ValueError, match="rotate"):
        train_folder(data, run, folds=2, resume=True, progress=False, **options)
    with pytest.raises(TypeError, match="augment must be True, False or an Augment"):
        train_folder(data, run, folds=2, augment="strong", **options)
