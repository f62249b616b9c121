"""Whole runs: `train_folder` (``thyroidseg train``) and `run_demo` (``thyroidseg demo``).

These put the pieces together for the command line and for scripts: read a dataset folder,
split it by leak group, build a `UNet`, resolve the string shortcuts of a recipe (loss
``"dice_ce"``, optimizer ``"adamw"``, schedule ``"cosine"``) into objects
(`make_optimizer`, `make_scheduler`, `thyroidseg.losses.make_loss`) and hand them to
`thyroidseg.training.Trainer`, which only takes built objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from thyroidseg._io import PathLike, atomic_write_bytes, write_image
from thyroidseg.augment import Augment
from thyroidseg.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT
from thyroidseg.data import ThyroidDataset
from thyroidseg.inference import Segmenter, overlay
from thyroidseg.losses import make_loss
from thyroidseg.metrics import ConfusionMatrix
from thyroidseg.model import UNet
from thyroidseg.splits import group_kfold, train_val_test_split
from thyroidseg.synthetic import write_synthetic_dataset
from thyroidseg.training import Trainer

__all__ = [
    "OPTIMIZER_NAMES",
    "SCHEDULE_NAMES",
    "DemoResult",
    "OptimizerName",
    "ScheduleName",
    "make_optimizer",
    "make_scheduler",
    "run_demo",
    "train_folder",
]

OptimizerName = Literal["adamw", "adam", "sgd"]
OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
"""The optimizer names `make_optimizer` builds."""
ScheduleName = Literal["cosine", "poly", "constant"]
SCHEDULE_NAMES: tuple[str, ...] = get_args(ScheduleName)
"""The learning-rate schedule names `make_scheduler` builds."""


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
    * ``"poly"``: $\eta_0 \cdot (1 - e / E)^{0.9}$ (nnU-Net);
    * ``"constant"``: ``None`` (the `thyroidseg.training.Trainer` keeps $\eta_0$).
    """
    if name not in SCHEDULE_NAMES:
        raise ValueError(f"schedule must be one of {SCHEDULE_NAMES}, got {name!r}")
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs, power=0.9)
    return None


def train_folder(
    data_dir: PathLike,
    out_dir: PathLike,
    *,
    fold: int | None = 0,
    folds: int = 5,
    size: tuple[int, int] = (256, 256),
    base_channels: int = 16,
    model: nn.Module | None = None,
    augment: bool = True,
    loss: str | Callable[..., torch.Tensor] = "dice_ce",
    optimizer: OptimizerName = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    schedule: ScheduleName = "cosine",
    epochs: int = 50,
    seed: int = 0,
    resume: bool = False,
    **trainer_options: Any,
) -> Trainer:
    """Train a `UNet` on fold ``fold`` of a dataset folder.

    What ``thyroidseg train`` runs: read ``data_dir`` with
    `ThyroidDataset` (any layout it detects, preprocessed with
    `preprocess` at ``size``), split it with
    `group_kfold` (``folds`` folds by leak group, seeded with
    ``seed``), train on the other folds with `Augment` and
    validate on fold ``fold``.

    Parameters
    ----------
    data_dir, out_dir
        Dataset folder; run folder for checkpoints and history.
    fold, folds
        Which of how many group folds is the validation set (defaults 0 of 5).
        ``fold=None`` trains on every frame for the whole schedule, with no validation
        (how the shipped model is trained; ``folds`` is then unused).
    size
        Network input ``(H, W)`` (default 256 x 256).
    base_channels
        Width of the U-Net's first stage (default 16).
    model
        The network to train instead of ``UNet(base_channels=base_channels, seed=seed)``
        (any `nn.Module` mapping ``(N, 1, H, W)`` to logits ``(N, 2, H, W)``).
    augment
        Random flips, affine warps and intensity changes on the training images (default on).
    loss
        A name for `thyroidseg.losses.make_loss` (default ``"dice_ce"``) or a loss object.
    optimizer, lr, weight_decay
        `make_optimizer`'s name and settings (defaults ``"adamw"``, 1e-3, 1e-4).
    schedule
        `make_scheduler`'s name (default ``"cosine"``).
    epochs, seed
        Epochs in total, and the seed of the split, the weights, augmentation and training.
    resume
        Continue from ``out_dir/last.pt`` (an error if there is none).
    **trainer_options
        More `Trainer` options (``batch_size``, ``amp``, ``device``, ``early_stopping``,
        ``num_workers``, ``grad_clip``, ``progress``...).

    Returns
    -------
    Trainer
        After `Trainer.fit`; ``trainer.history`` holds the epochs.
    """
    if fold is not None and (not isinstance(fold, int) or not 0 <= fold < folds):
        raise ValueError(f"fold must be None or in [0, {folds}), got {fold!r}")
    out_dir = Path(out_dir)
    last = out_dir / LAST_CHECKPOINT
    if resume and not last.is_file():
        raise FileNotFoundError(f"{last}: nothing to resume from")
    if not resume and last.exists():
        raise FileExistsError(f"{last} exists: pass resume (--resume) or choose another folder")
    size = (int(size[0]), int(size[1]))
    dataset = ThyroidDataset(data_dir, size=size, progress=trainer_options.get("progress"))
    if fold is None:
        train_idx, val = np.arange(len(dataset)), None
    else:
        train_idx, val_idx = group_kfold(dataset.groups, n_splits=folds, seed=seed)[fold]
        val = dataset.subset(val_idx)
    train = dataset.subset(train_idx).with_transform(Augment(seed=seed) if augment else None)
    model = model if model is not None else UNet(base_channels=base_channels, seed=seed)
    built = make_optimizer(optimizer, model.parameters(), lr=lr, weight_decay=weight_decay)
    trainer = Trainer(
        model,
        train,
        val,
        loss=make_loss(loss) if isinstance(loss, str) else loss,
        optimizer=built,
        scheduler=make_scheduler(schedule, built, epochs),
        epochs=epochs,
        seed=seed,
        out_dir=out_dir,
        data_config={"root": str(data_dir), "fold": fold, "folds": folds},
        **trainer_options,
    )
    trainer.fit(resume=last if resume else None)
    return trainer


# --------------------------------------------------------------------------- demo


@dataclass(frozen=True)
class DemoResult:
    """What `run_demo` produced."""

    data_dir: Path
    """The dataset used (the phantoms written by the demo, or ``data``)."""
    run_dir: Path
    """Checkpoints, ``history.csv`` and ``history.png``."""
    metrics: ConfusionMatrix
    """Test-set confusion matrix, counted at each frame's original size."""
    overlays: list[Path]
    """One picture per test frame (prediction red, truth green)."""
    history: list[dict[str, float]]
    """The training history, one dict per epoch (`thyroidseg.training.Trainer.fit`)."""


def run_demo(
    out_dir: PathLike = "thyroidseg-demo",
    *,
    data: PathLike | None = None,
    n_images: int = 96,
    phantom_size: tuple[int, int] = (240, 320),
    size: tuple[int, int] = (128, 128),
    epochs: int = 25,
    seed: int = 0,
    progress: bool | None = None,
    **trainer_options: Any,
) -> DemoResult:
    """Run the whole pipeline once: data -> preprocess -> UNet -> Trainer -> metrics.

    Without ``data``, writes ``n_images`` synthetic phantoms
    (`thyroidseg.synthetic.write_synthetic_dataset`) to ``out_dir/phantoms`` first.
    The frames are read with `ThyroidDataset` and preprocessed at
    ``size``, split 70/15/15 by leak group (`train_val_test_split`),
    a `UNet` is trained with augmentation and `train_folder`'s default recipe (Dice +
    cross-entropy, AdamW at 1e-3, cosine schedule) in ``out_dir/run``, the ``best.pt``
    checkpoint segments the test frames through `Segmenter` at their original size, and
    the test metrics are counted against the original masks.

    Writes ``out_dir/metrics.json`` (`ConfusionMatrix.to_dict`) and
    ``out_dir/overlays/<name>.png``. ``out_dir/run`` must not hold a previous run.

    Parameters
    ----------
    out_dir
        Output folder (created).
    data
        A dataset folder of any layout to use instead of phantoms.
    n_images, phantom_size
        Number and ``(H, W)`` of phantoms (defaults 96 of 240 x 320).
    size
        Network input ``(H, W)`` (default 128 x 128, enough for phantoms).
    epochs
        Training epochs (default 25).
    seed
        Seeds the phantoms, the split, the weights and the training.
    progress
        Progress bars (``None``: on a terminal only).
    **trainer_options
        More `Trainer` options (``batch_size``, ``amp``...).
    """
    out_dir = Path(out_dir)
    run_dir = out_dir / "run"
    if (run_dir / LAST_CHECKPOINT).exists():
        raise FileExistsError(f"{run_dir} holds a previous run; choose another --out folder")
    data_dir = Path(data) if data is not None else out_dir / "phantoms"
    if data is None:
        write_synthetic_dataset(data_dir, n_images, size=phantom_size, seed=seed)
    dataset = ThyroidDataset(data_dir, size=size, progress=progress)
    train_idx, val_idx, test_idx = train_val_test_split(
        dataset.groups, (0.7, 0.15, 0.15), seed=seed
    )
    model = UNet(seed=seed)
    optimizer = make_optimizer("adamw", model.parameters())
    trainer = Trainer(
        model,
        dataset.subset(train_idx).with_transform(Augment(seed=seed)),
        dataset.subset(val_idx),
        loss=make_loss("dice_ce"),
        optimizer=optimizer,
        scheduler=make_scheduler("cosine", optimizer, epochs),
        epochs=epochs,
        out_dir=run_dir,
        seed=seed,
        progress=progress,
        data_config={"root": str(data_dir)},
        **trainer_options,
    )
    history = trainer.fit()
    segmenter = Segmenter.from_checkpoint(
        run_dir / BEST_CHECKPOINT, device=trainer.device, amp=trainer_options.get("amp", "auto")
    )
    test = dataset.subset(test_idx)
    frames = [test.load_original(i) for i in range(len(test))]
    predictions = segmenter.predict_many([image for image, _ in frames])
    metrics = ConfusionMatrix(2)
    overlays = []
    for name, (image, truth), prediction in zip(test.names, frames, predictions, strict=True):
        metrics.update(prediction, truth)
        overlays.append(
            write_image(out_dir / "overlays" / f"{name}.png", overlay(image, prediction, truth))
        )
    report = json.dumps(metrics.to_dict(), indent=2)
    atomic_write_bytes(out_dir / "metrics.json", report.encode())
    return DemoResult(data_dir, run_dir, metrics, overlays, history)
