"""Whole runs: `train_folder` (``thyroidseg train``); the demo is `thyroidseg.training.demo`.

These put the pieces together for the command line and for scripts: read a dataset folder,
split it by leak group, build a `UNet`, resolve the string shortcuts of a recipe (loss
``"dice_ce"``, optimizer ``"adamw"``, schedule ``"cosine"``) into objects
(`make_optimizer`, `make_scheduler`, `thyroidseg.training.losses.make_loss`) and hand them to
`thyroidseg.training.Trainer`, which only takes built objects.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from thyroidseg._checks import PathLike, check_int
from thyroidseg._compat import moved_names
from thyroidseg.data.augment import Augment
from thyroidseg.data.crops import CropDataset, read_crop_boxes
from thyroidseg.data.dataset import ThyroidDataset
from thyroidseg.data.splits import group_kfold
from thyroidseg.io.outputs import reserve_folder
from thyroidseg.models.checkpoint import (
    LAST_CHECKPOINT,
    load_checkpoint,
    prepare_run_folder,
)
from thyroidseg.models.unet import UNet
from thyroidseg.preprocessing.crops import CropRule
from thyroidseg.preprocessing.geometry import Box
from thyroidseg.preprocessing.pipeline import DEFAULT_SIZE
from thyroidseg.runtime import resolve_device, tune_cpu_allocator
from thyroidseg.training.checks import check_settings, data_conflicts
from thyroidseg.training.deep_supervision import with_deep_supervision
from thyroidseg.training.distributed import join_process_group
from thyroidseg.training.losses import make_loss
from thyroidseg.training.run_folder import refuse_other_run
from thyroidseg.training.trainer import Trainer

__all__ = [
    "OPTIMIZER_NAMES",
    "REFINE_RECIPE",
    "SCHEDULE_NAMES",
    "OptimizerName",
    "ScheduleName",
    "make_optimizer",
    "make_scheduler",
    "train_folder",
]

OptimizerName = Literal["adamw", "adam", "sgd"]
OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
"""The optimizer names `make_optimizer` builds."""
ScheduleName = Literal["cosine", "warmup_cosine", "poly", "constant"]
SCHEDULE_NAMES: tuple[str, ...] = get_args(ScheduleName)
"""The learning-rate schedule names `make_scheduler` builds."""

REFINE_RECIPE: dict[str, int] = {"epochs": 80, "base_channels": 12, "stem_stride": 1}
"""The epochs, width and stem stride of the refine stage's `UNet` (``thyroidseg train --stage
refine``; the rest is `train_folder`'s whole-frame recipe), chosen by grouped
cross-validation on DDTI (docs/model-card.md): width 12 did as well as 16 at half the
weights, and stage 0 at the crop's full resolution (stride 1) beat stride 2."""


def make_optimizer(
    name: OptimizerName,
    parameters: Iterable[nn.Parameter],
    *,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
) -> torch.optim.Optimizer:
    """Build an optimizer by name, for the command line and `train_folder`.

    ``"adamw"`` (`torch.optim.AdamW`), ``"adam"`` or ``"sgd"`` (momentum 0.99, Nesterov, as
    nnU-Net), with learning rate ``lr`` (default 1e-3) and weight decay ``weight_decay``
    (default 1e-4).
    """
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"optimizer must be one of {OPTIMIZER_NAMES}, got {name!r}")
    if not (isinstance(lr, int | float) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(
        parameters, lr=lr, weight_decay=weight_decay, momentum=0.99, nesterov=True
    )


def make_scheduler(
    name: ScheduleName, optimizer: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    r"""Build a learning-rate schedule over ``epochs`` epochs by name (stepped once per epoch).

    With $\eta_0$ the optimizer's learning rate and $e$ the epochs done:

    * ``"cosine"``: $\eta_0 \cdot (1 + \cos(\pi e / E)) / 2$, down to 0 after the last epoch;
    * ``"warmup_cosine"``: a linear warm-up over the first $W = \max(1, \lfloor E / 10
      \rceil)$ epochs, $\eta_0 (e + 1) / W$, then the cosine over the $E - W$ others,
      $\eta_0 \cdot (1 + \cos(\pi (e - W) / (E - W))) / 2$ (a one-cycle schedule stepped
      per epoch);
    * ``"poly"``: $\eta_0 \cdot (1 - e / E)^{0.9}$ (nnU-Net);
    * ``"constant"``: ``None`` (the `thyroidseg.training.Trainer` keeps $\eta_0$).
    """
    if name not in SCHEDULE_NAMES:
        raise ValueError(f"schedule must be one of {SCHEDULE_NAMES}, got {name!r}")
    check_int("epochs", epochs, 1)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "warmup_cosine":
        warmup = max(1, round(epochs / 10))
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, functools.partial(_warmup_cosine, warmup=warmup, epochs=epochs)
        )
    if name == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs, power=0.9)
    return None


def _warmup_cosine(epoch: int, *, warmup: int, epochs: int) -> float:
    """The ``"warmup_cosine"`` factor of `make_scheduler` for ``epoch`` epochs done."""
    if epoch < warmup:
        return (epoch + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))


def train_folder(
    data_dir: PathLike,
    out_dir: PathLike,
    *,
    fold: int | None = 0,
    folds: int = 5,
    size: tuple[int, int] = DEFAULT_SIZE,
    base_channels: int = 24,
    stem_stride: Literal[1, 2] = 2,
    deep_supervision: int = 0,
    model: nn.Module | None = None,
    augment: bool | Augment = True,
    crops: CropRule | None = None,
    crop_boxes: PathLike | None = None,
    loss: str | Callable[..., torch.Tensor] = "dice_ce",
    optimizer: OptimizerName = "adamw",
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    schedule: ScheduleName = "warmup_cosine",
    epochs: int = 80,
    seed: int = 0,
    resume: bool = False,
    **trainer_options: Any,
) -> Trainer:
    """Train a `UNet` on fold ``fold`` of a dataset folder.

    What ``thyroidseg train`` runs: read ``data_dir`` with `ThyroidDataset` at ``size``, split
    it with `group_kfold`, train on the other folds with `Augment`, validate on fold ``fold``.
    The defaults are the shipped model's recipe (docs/model-card.md). Every setting is checked
    before the dataset is read (docs/training.md, "What a run does").

    Parameters
    ----------
    data_dir, out_dir
        Dataset folder; run folder for checkpoints and history.
    fold, folds
        Which of how many group folds is the validation set (defaults 0 of 5).
        ``fold=None`` trains on every frame for the whole schedule, with no validation
        (how the shipped model is trained; ``folds`` is then unused).
    size
        Network input ``(H, W)`` (default `thyroidseg.preprocessing.DEFAULT_SIZE`, 128 x 128).
    base_channels, stem_stride
        Width of the U-Net's first stage (default 24) and its stride (default 2: stage 0 at
        half resolution, about 3x cheaper than 1; see `thyroidseg.models.unet.UNet`).
    deep_supervision
        The U-Net's decoder levels with an auxiliary head (default 0: none; see
        `thyroidseg.models.unet.UNet`). Whenever the model's ``config["deep_supervision"]``
        is above 0 (this option, or a ``model`` built with it), the loss is wrapped in
        `thyroidseg.training.deep_supervision.DeepSupervisionLoss`.
    model
        The network to train instead of ``UNet(base_channels=base_channels,
        stem_stride=stem_stride, deep_supervision=deep_supervision, seed=seed)`` (any
        `nn.Module` mapping ``(N, 1, H, W)`` to logits ``(N, 2, H, W)``).
    augment
        Random flips, affine warps and intensity changes on the training images: ``True``
        (the default) draws them with ``Augment(seed=seed)``, an `Augment` with its own
        settings, ``False`` none.
    crops
        Train a refine (stage 2) network instead of a whole-frame one: on `CropDataset`
        crops of the full-resolution frames around the annotated nodules, cut by this
        `CropRule` (validated on centred crops of the validation frames). Its checkpoints
        load with `thyroidseg.inference.refine.Refiner.from_checkpoint`. Default: ``None``, the
        whole frame.
    crop_boxes
        With ``crops``: a crop-box file (`thyroidseg.data.crops.read_crop_boxes`) of boxes a
        whole-frame model found on frames it never saw; the training frames are also cropped
        around them (``CropDataset(extra_boxes=...)``). Default: none.
    loss
        A name for `thyroidseg.training.losses.make_loss` (default ``"dice_ce"``) or a loss object.
    optimizer, lr, weight_decay
        `make_optimizer`'s name and settings (defaults ``"adamw"``, 2e-3, 1e-4).
    schedule
        `make_scheduler`'s name (default ``"warmup_cosine"``).
    epochs, seed
        Epochs in total, and the seed of the split, the weights, augmentation and training.
    resume
        Continue from ``out_dir/last.pt`` (an error if there is none). Refused when the
        data folder, ``fold``, ``folds``, ``size`` or ``augment`` differ from the run that
        wrote it (each difference is named), as the `Trainer` refuses another schedule.
    **trainer_options
        More `Trainer` options (``batch_size``, ``amp``, ``device``, ``early_stopping``,
        ``num_workers``, ``grad_clip``, ``progress``...).

    Returns
    -------
    Trainer
        After `Trainer.fit`; ``trainer.history`` holds the epochs.

    Raises
    ------
    ValueError
        A setting is invalid, ``out_dir`` is a file or cannot be written, or ``resume``
        would change the run.
    FileExistsError, FileNotFoundError
        ``out_dir/last.pt`` exists without ``resume``, or is missing with it.
    """
    _check_run_settings(fold, folds, crops, augment, epochs, trainer_options)
    if crop_boxes is not None and crops is None:
        raise ValueError("crop_boxes (--crop-boxes) needs a refine run (crops, --stage refine)")
    extra_boxes = read_crop_boxes(crop_boxes) if crop_boxes is not None else None
    size = (int(size[0]), int(size[1]))
    if model is None:
        model = UNet(
            base_channels=base_channels,
            stem_stride=stem_stride,
            deep_supervision=deep_supervision,
            seed=seed,
        )
    loss_fn = with_deep_supervision(make_loss(loss) if isinstance(loss, str) else loss, model)
    built = make_optimizer(optimizer, model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = make_scheduler(schedule, built, epochs)
    out_dir = Path(out_dir)
    with _run_folder(out_dir, trainer_options.get("device", "auto")):
        last = _check_run_folder(out_dir, resume)
        data_config = {
            "root": str(Path(data_dir).resolve()),
            "fold": fold,
            "folds": folds if fold is not None else None,
            "augment": augment is not False,
            "crops": crops.to_dict() if crops is not None else None,
            "crop_boxes": str(Path(crop_boxes).resolve()) if crop_boxes is not None else None,
        }
        if resume:
            data_config = _resumed_data_config(last, data_config, size)
        dataset = ThyroidDataset(data_dir, size=size, progress=trainer_options.get("progress"))
        train, val = _fold_data(dataset, fold, folds, seed, augment, crops, extra_boxes)
        trainer = Trainer(
            model,
            train,
            val,
            loss=loss_fn,
            optimizer=built,
            scheduler=scheduler,
            epochs=epochs,
            seed=seed,
            out_dir=out_dir,
            data_config=data_config,
            **trainer_options,
        )
        if trainer.device.type == "cpu":
            tune_cpu_allocator()  # process-wide: a whole run's choice, not the Trainer's
        trainer.fit(resume=last if resume else None)
    return trainer


def _check_run_settings(
    fold: int | None,
    folds: int,
    crops: object,
    augment: object,
    epochs: int,
    trainer_options: Mapping[str, Any],
) -> None:
    """`train_folder`'s settings checked before anything is read (`check_settings` too)."""
    if fold is not None:
        check_int("folds", folds, 2)
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
            raise ValueError(f"fold must be None or an integer in [0, {folds}), got {fold!r}")
    if crops is not None and not isinstance(crops, CropRule):
        raise TypeError(f"crops must be a CropRule or None, got {crops!r}")
    if not isinstance(augment, (bool, Augment)):
        raise TypeError(f"augment must be True, False or an Augment, got {augment!r}")
    unknown = sorted(set(trainer_options) - _TRAINER_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown Trainer option(s) {', '.join(map(repr, unknown))}; train_folder passes "
            f"on only {', '.join(sorted(_TRAINER_OPTIONS))}"
        )
    _check_trainer_settings(epochs, trainer_options, validation=fold is not None)


def _check_trainer_settings(
    epochs: int, trainer_options: Mapping[str, Any], *, validation: bool = True
) -> None:
    """`check_settings` on ``epochs`` and the `Trainer` options it knows."""
    checked = inspect.signature(check_settings).parameters
    check_settings(
        epochs=epochs,
        validation=validation,
        **{key: value for key, value in trainer_options.items() if key in checked},
    )


def _check_run_folder(out_dir: Path, resume: bool) -> Path:
    """``out_dir/last.pt``, after checking that the folder can hold this run (or resume)."""
    last = out_dir / LAST_CHECKPOINT
    if resume and not last.is_file():
        raise FileNotFoundError(f"{last}: nothing to resume from")
    if not resume:
        refuse_other_run(out_dir)
    return last


def _fold_data(
    dataset: ThyroidDataset,
    fold: int | None,
    folds: int,
    seed: int,
    augment: bool | Augment,
    crops: CropRule | None,
    extra_boxes: Mapping[str, Sequence[Box]] | None = None,
) -> tuple[Any, Any]:
    """Training and validation data of ``fold`` (no validation for ``None``), crops if asked."""
    if fold is None:
        train_idx, val = np.arange(len(dataset)), None
    else:
        train_idx, val_idx = group_kfold(dataset.groups, folds=folds, seed=seed)[fold]
        val = dataset.subset(val_idx)
    transform = Augment(seed=seed) if augment is True else augment or None  # False: None
    train = dataset.subset(train_idx).with_transform(transform)
    if crops is None:
        return train, val
    crops_val = CropDataset(val, crops, train=False) if val is not None else None
    crops_train = CropDataset(
        train.with_transform(None), crops, transform=transform, seed=seed, extra_boxes=extra_boxes
    )
    return crops_train, crops_val


@contextlib.contextmanager
def _run_folder(out_dir: Path, device: str | torch.device) -> Iterator[None]:
    """Hold ``out_dir`` for one run, checked to be writable, for the ``with`` block.

    Under ``torchrun`` only rank 0 (the process that writes) holds and prepares it, in the
    process group `Trainer.fit` then reuses; the others wait at a barrier, so none removes
    rank 0's write probe. The folder goes again if it stays empty.
    """
    with join_process_group(resolve_device(device)) as group:
        with reserve_folder(out_dir) if group.is_main else contextlib.nullcontext():
            if group.is_main:  # a file, or a folder that cannot be written: say so now
                prepare_run_folder(out_dir, ())
            group.barrier()
            yield


_TRAINER_OPTIONS = set(inspect.signature(Trainer).parameters) - {
    "model", "train_data", "val_data", "loss", "optimizer", "scheduler", "epochs", "seed",
    "out_dir", "data_config",
}  # fmt: skip
"""The `Trainer` arguments `train_folder` passes on from ``**trainer_options``."""


def _resumed_data_config(
    last: Path, data_config: Mapping[str, Any], size: tuple[int, int]
) -> dict[str, Any]:
    """``data_config`` checked against the data settings ``last`` was trained with.

    Refuses another data folder, fold, number of folds, size, augmentation setting, stage
    (whole frame or refine) or crop rule, naming each, before the dataset is read; a setting
    older checkpoints lack is not compared. The stored folder name is kept when it is the
    same folder, so the checkpoint's data config is never rewritten.
    """
    stored = load_checkpoint(last)["config"].get("data") or {}
    here = {**data_config, "size": list(size)}
    names = ("fold", "folds", "size", "augment", "crops", "crop_boxes")
    labels = {"root": "data_dir", **{k: k for k in names}}
    changed = data_conflicts(stored, here, labels)
    there, now = ("refine" if config.get("crops") else "whole" for config in (stored, here))
    if there != now:
        changed.insert(0, f"stage={there} there, {now} here (--stage)")
    if changed:
        raise ValueError(
            f"{last}: cannot resume on other data than the run that wrote it "
            f"({'; '.join(changed)}): a resumed run must validate on the same frames. Start "
            "a new run in another folder"
        )
    return {**data_config, "root": stored.get("root", data_config["root"])}


__getattr__ = moved_names(  # the demo's 0.2 path
    __name__, dict.fromkeys(["DemoResult", "run_demo"], "thyroidseg.training.demo"), "0.4"
)
