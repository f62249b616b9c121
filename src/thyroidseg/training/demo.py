"""The demo (``thyroidseg demo``): `run_demo` trains and scores a small `UNet` end to end.

Phantoms (or a dataset folder) are split by leak group, trained on with the pieces of
`thyroidseg.training.workflows` (`make_optimizer`, `make_scheduler`), and the test frames are
segmented, counted and drawn; the training time is estimated and printed first.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thyroidseg._checks import PathLike, check_int
from thyroidseg.data.augment import Augment
from thyroidseg.data.dataset import ThyroidDataset
from thyroidseg.data.splits import train_val_test_split
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.inference.overlay import overlay
from thyroidseg.inference.segmenter import Segmenter
from thyroidseg.io.files import atomic_write_bytes, write_image
from thyroidseg.io.outputs import check_outputs
from thyroidseg.metrics.confusion import ConfusionMatrix
from thyroidseg.models.checkpoint import BEST_CHECKPOINT
from thyroidseg.models.unet import UNet
from thyroidseg.runtime import autocast, cpu_info, tune_cpu_allocator
from thyroidseg.training.batching import collate
from thyroidseg.training.losses import make_loss
from thyroidseg.training.run_folder import refuse_other_run
from thyroidseg.training.trainer import Trainer
from thyroidseg.training.workflows import _check_trainer_settings, make_optimizer, make_scheduler

__all__ = ["DemoResult", "run_demo"]


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
    estimated_seconds: float
    """The training time the demo expected (and printed) before training."""
    training_seconds: float
    """The training time it took (wall clock of `thyroidseg.training.Trainer.fit`)."""


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

    Phantoms (`thyroidseg.data.synthetic.write_synthetic_dataset`, in ``out_dir/phantoms``)
    or ``data``, split 70/15/15 by leak group, a ``UNet(stem_stride=2)`` trained in
    ``out_dir/run`` with `train_folder`'s losses and augmentation (AdamW at 1e-3, cosine),
    and the test frames segmented by ``best.pt`` at their original size and counted
    (docs/training.md, "The demo"). Writes ``out_dir/metrics.json``
    (`ConfusionMatrix.to_dict`) and ``out_dir/overlays/<name>.png``; ``out_dir/run`` must
    not hold a previous run.

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
    _check_demo_settings(out_dir, size, data, n_images, epochs, trainer_options)
    data_dir = Path(data) if data is not None else out_dir / "phantoms"
    if data is None:
        write_synthetic_dataset(data_dir, n_images, size=phantom_size, seed=seed)
    dataset = ThyroidDataset(data_dir, size=size, progress=progress)
    train_idx, val_idx, test_idx = train_val_test_split(
        dataset.groups, (0.7, 0.15, 0.15), seed=seed
    )
    model = UNet(stem_stride=2, seed=seed)
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
    if trainer.device.type == "cpu":
        tune_cpu_allocator()
    estimate = _training_seconds(trainer, size, len(train_idx), len(val_idx))
    if progress is not False:
        _announce(trainer, len(train_idx), estimate)
    start = time.perf_counter()
    history = trainer.fit()
    training_seconds = time.perf_counter() - start
    segmenter = Segmenter.from_checkpoint(  # threads=None: the run's, as in training
        run_dir / BEST_CHECKPOINT,
        device=trainer.device,
        amp=trainer_options.get("amp", "auto"),
        threads=None,
    )
    metrics, overlays = _score_test_frames(segmenter, dataset.subset(test_idx), out_dir)
    report = json.dumps(metrics.to_dict(), indent=2)
    atomic_write_bytes(out_dir / "metrics.json", report.encode())
    return DemoResult(data_dir, run_dir, metrics, overlays, history, estimate, training_seconds)


def _check_demo_settings(
    out_dir: Path,
    size: tuple[int, int],
    data: PathLike | None,
    n_images: int,
    epochs: int,
    trainer_options: Mapping[str, Any],
) -> None:
    """`run_demo`'s settings and output files checked before anything is written."""
    if min(size) < _DEMO_MIN_SIZE:
        raise ValueError(
            f"size must be at least {_DEMO_MIN_SIZE} x {_DEMO_MIN_SIZE}, got {size[0]} x "
            f"{size[1]}: the demo's U-Net halves it 5 times, and batch norm needs more than one "
            "value per channel at the bottom"
        )
    if data is None:
        hint = "one phantom each for training, validation and test at least"
        check_int("n_images (--images)", n_images, 3, hint=hint)
    _check_trainer_settings(epochs, trainer_options)
    try:
        refuse_other_run(out_dir / "run")
    except FileExistsError:
        raise FileExistsError(
            f"{out_dir / 'run'} holds a previous run; choose another out_dir (--out)"
        ) from None
    check_outputs([out_dir / "metrics.json"])


def _announce(trainer: Trainer, n_train: int, estimate: float) -> None:
    """Print the demo's plan and its estimated training time on standard error."""
    print(
        f"demo: {trainer.epochs} epochs of {n_train} frames; about {_duration(estimate)} "
        f"of training on this machine ({cpu_info().model or 'unknown CPU'}, "
        f"{'bf16' if trainer.amp_dtype == torch.bfloat16 else 'float32'})",
        file=sys.stderr,
        flush=True,
    )


def _score_test_frames(
    segmenter: Segmenter, test: ThyroidDataset, out_dir: Path
) -> tuple[ConfusionMatrix, list[Path]]:
    """The test frames segmented at their original size, counted, and drawn as overlays."""
    frames = [test.load_original(i) for i in range(len(test))]
    predictions = segmenter.predict_many([image for image, _ in frames])
    metrics = ConfusionMatrix(2)
    overlays = []
    for name, (image, truth), prediction in zip(test.names, frames, predictions, strict=True):
        metrics.update(prediction, truth)
        overlays.append(
            write_image(out_dir / "overlays" / f"{name}.png", overlay(image, prediction, truth))
        )
    return metrics, overlays


_DEMO_MIN_SIZE = 64
"""Smallest network input of the demo: 64 / 2**5 = 2 x 2 at the bottleneck."""


def _training_seconds(trainer: Trainer, size: tuple[int, int], n_train: int, n_val: int) -> float:
    """The demo's estimate of ``trainer.fit()``, from the parts of an epoch, each timed.

    Per epoch: ``ceil(n_train / batch)`` training steps (loading and augmenting a batch of
    ``trainer.train_data``, forward, backward and an AdamW update of a copy of the model),
    ``n_val`` one-frame validation passes and the two checkpoint writes (serialising the
    model and optimizer). Each part is the median of 5 timings after an untimed one, so the
    one-off costs of the first step (kernel selection, allocations) are paid here, not again
    in training.
    """
    steps = -(-n_train // trainer.batch_size)
    model = copy.deepcopy(trainer.model)
    optimizer = torch.optim.AdamW(model.parameters())
    images = torch.zeros(trainer.batch_size, 1, *size, device=trainer.device)
    images = images.contiguous(memory_format=trainer.memory_format)
    frame = images[:1]
    items = itertools.cycle(range(n_train))

    def load() -> None:
        collate([trainer.train_data[next(items)] for _ in range(trainer.batch_size)])

    def step() -> None:
        model.train()
        with autocast(trainer.device, trainer.amp_dtype):
            loss = model(images).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def validate() -> None:
        model.eval()
        with torch.inference_mode(), autocast(trainer.device, trainer.amp_dtype):
            model(frame)

    def save() -> None:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, io.BytesIO())

    per_step = _median_seconds(load) + _median_seconds(step)
    validation = _median_seconds(validate) * n_val
    saving = 2 * _median_seconds(save)
    return trainer.epochs * (steps * per_step + validation + saving)


def _median_seconds(work: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of ``repeats`` calls of ``work`` after one untimed call."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _duration(seconds: float) -> str:
    """``"45 s"`` or ``"3 min"``."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
