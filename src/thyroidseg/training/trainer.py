"""Training: the `Trainer` loop, its validation, checkpoints, resume and events.

The loop the paper describes (forward, loss, backward, update, save the parameters, repeat),
with per-epoch validation, ``best.pt``/``last.pt`` for an exact resume, the events of
`thyroidseg.training.callbacks` and DistributedDataParallel under ``torchrun``. The files it
writes into ``out_dir`` are `thyroidseg.training.run_folder`'s (`RUN_FILES` and
`refuse_other_run` are re-exported here). docs/training.md explains each part.

Examples
--------
>>> import torch
>>> from torch import nn
>>> data = [{"image": torch.rand(1, 8, 8), "mask": torch.zeros(8, 8, dtype=torch.int64)}] * 4
>>> model = nn.Conv2d(1, 2, 3, padding=1)
>>> trainer = Trainer(model, data, data, loss=nn.CrossEntropyLoss(), epochs=2, batch_size=2,
...                   progress=False, seed=0)
>>> [row["epoch"] for row in trainer.fit()]
[1, 2]
>>> trainer.evaluate(data).n_images
4
"""

from __future__ import annotations

import contextlib
import math
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, Literal, cast, get_args

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from thyroidseg._checks import PathLike
from thyroidseg._progress import Progress
from thyroidseg._version import __version__
from thyroidseg.io.outputs import reserve_folder
from thyroidseg.metrics.confusion import ConfusionMatrix, nanmean
from thyroidseg.models.checkpoint import (
    CHECKPOINT_FORMAT,
    check_best_checkpoint,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    seed_global_rngs,
)
from thyroidseg.models.registry import model_name
from thyroidseg.runtime import AmpMode, autocast, resolve_amp, resolve_device
from thyroidseg.training.batching import (
    PrepareBatch,
    _data_order,
    collate,
    default_prepare_batch,
    evaluation_loader,
    hook_name,
    training_loader,
)
from thyroidseg.training.callbacks import Callback, trainer_callbacks
from thyroidseg.training.checks import (
    check_components,
    check_monitor,
    check_settings,
    describe,
    ignore_index_of,
    resume_conflicts,
)
from thyroidseg.training.distributed import DistContext, join_process_group, synced_batchnorm
from thyroidseg.training.divergence import NonFiniteLossError, NonFiniteOutputError, item_name
from thyroidseg.training.run_folder import (
    RUN_FILES,
    prepare_out_dir,
    refuse_other_run,
    write_checkpoints,
)

__all__ = [
    "MONITORS",
    "RUN_FILES",
    "LossFn",
    "Monitor",
    "MonitorMode",
    "Trainer",
    "refuse_other_run",
]

Monitor = Literal["val_iou", "val_dice"]
MONITORS: tuple[str, ...] = get_args(Monitor)
"""The validation metrics the `Trainer` computes, which ``monitor`` can name (higher is better);
a callback may add others."""

MonitorMode = Literal["max", "min"] | Callable[[float, float], bool]
"""``Trainer(mode=...)``: ``"max"``, ``"min"`` or ``better(value, best) -> bool``."""
_BETTER = {"max": operator.gt, "min": operator.lt}

LossFn = Callable[..., Tensor]
"""``loss(logits, target, **loss_kwargs) -> scalar tensor``."""


def _dataset_of(data: Any) -> Any:
    """The dataset behind ``data``: a DataLoader's ``dataset``, else ``data`` itself."""
    return data.dataset if isinstance(data, DataLoader) else data


class Trainer:
    """Train a segmentation model, validate every epoch, checkpoint and resume.

    docs/training.md says what a run does, epoch by epoch, and why: the checkpoints, exact
    resume, the events and DistributedDataParallel under ``torchrun``.

    Parameters
    ----------
    model
        Any ``nn.Module`` mapping images ``(N, C, H, W)`` to logits ``(N, K, H, W)``, e.g.
        `thyroidseg.models.unet.UNet`. Its ``config`` attribute (if any) is stored in the
        checkpoints so `thyroidseg.inference` can rebuild it. In training mode it may return
        more (a deep-supervision `UNet`'s stacked levels) if ``loss`` takes it.
    train_data, val_data
        Datasets of dicts with ``"image"`` (float ``(C, H, W)``) and ``"mask"`` (int
        ``(H, W)`` class indices), e.g. `thyroidseg.data.ThyroidDataset`, or built
        DataLoaders, used as they are. Further tensor entries (e.g. ``"weight_map"``) are
        batched and reach ``prepare_batch``; a dataset's ``set_epoch(epoch)`` is called
        before every epoch. ``val_data=None`` skips validation: only ``last.pt`` is written.
    loss
        ``loss(logits, target, **loss_kwargs) -> scalar``, e.g.
        ``thyroidseg.training.losses.make_loss("dice_ce")``, computed in float32 (wrapped in
        `thyroidseg.training.deep_supervision.DeepSupervisionLoss` for such a `UNet`). Its
        ``ignore_index`` (if any) is left out of the validation counts.
    optimizer
        ``None`` (default): ``torch.optim.AdamW(model.parameters(), lr=1e-3,
        weight_decay=1e-4)``.
    scheduler
        Stepped once per epoch with ``step()`` (so not ``ReduceLROnPlateau``). ``None``
        (default): a constant learning rate.
    prepare_batch
        ``prepare_batch(batch, device, memory_format) -> (inputs, target, loss_kwargs)``
        (docs/training.md, "Batches and extra inputs"). Default: `default_prepare_batch`.
    epochs, batch_size, num_workers
        Epochs in total (a resumed run continues up to it; default 50), images per step and
        per process (default 8), DataLoader workers (default 0).
    device, amp
        ``"auto"`` (default) or a device; the mixed precision of
        `thyroidseg.runtime.resolve_amp` (``"auto"``, ``"bf16"``, ``"fp16"``, ``"off"``).
    channels_last
        Channels-last memory format for the model and the images (default ``True``).
    grad_clip
        Clip the global gradient norm to this value (default ``None``: no clipping).
    early_stopping
        Stop after this many epochs without a better ``monitor`` value: adds an
        `thyroidseg.training.callbacks.EarlyStopping` (default ``None``: never).
    monitor, mode
        The key metric that picks ``best.pt`` and drives early stopping: an entry of the
        epoch's row (`MONITORS`, computed by the trainer, or one a callback adds in
        ``on_validation_end``; default ``"val_iou"``, the mean per-image nodule IoU), and
        when a value is better: ``"max"`` (default), ``"min"`` or a function
        ``better(value, best) -> bool``. A non-finite value is never better.
    callbacks
        `thyroidseg.training.callbacks.Callback` objects whose hooks run at the events of
        the run, in this order, after the trainer's own (`HistoryWriter` when ``out_dir`` is
        set, then `EarlyStopping`).
    out_dir
        Folder for `RUN_FILES`. ``None`` (default) writes nothing.
    seed
        Seeds the data order, the workers and the global random generators (default 0).
    progress
        ``None`` (default): a bar per epoch on a terminal and one line per epoch;
        ``False``: nothing.
    data_config
        Extra JSON-ready entries stored in the checkpoints' ``config["data"]`` on top of
        ``train_data.config`` (from which `thyroidseg.inference.Segmenter.from_checkpoint`
        prepares new frames as in training).
    sync_batchnorm
        Under ``torchrun``, train with ``torch.nn.SyncBatchNorm`` (BatchNorm statistics of
        the whole batch over every process, `thyroidseg.training.distributed.synced_batchnorm`)
        instead of each process's share, with rank 0's running statistics given to all after
        every epoch. CUDA only (PyTorch's SyncBatchNorm has no CPU kernels). Default ``False``.

    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset | Sequence[Mapping[str, Any]],
        val_data: Dataset | Sequence[Mapping[str, Any]] | None = None,
        *,
        loss: nn.Module | LossFn,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        prepare_batch: PrepareBatch | None = None,
        epochs: int = 50,
        batch_size: int = 8,
        num_workers: int = 0,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        channels_last: bool = True,
        grad_clip: float | None = None,
        early_stopping: int | None = None,
        monitor: str = "val_iou",
        mode: MonitorMode = "max",
        callbacks: Iterable[Callback] = (),
        out_dir: PathLike | None = None,
        seed: int = 0,
        progress: bool | None = None,
        data_config: Mapping[str, Any] | None = None,
        sync_batchnorm: bool = False,
    ) -> None:
        check_components(model, train_data, val_data, loss, optimizer, scheduler, prepare_batch)
        check_settings(
            epochs=epochs,
            batch_size=batch_size,
            num_workers=num_workers,
            grad_clip=grad_clip,
            early_stopping=early_stopping,
            validation=val_data is not None,
            device=device,
            amp=amp,
            sync_batchnorm=sync_batchnorm,
        )
        self.device = resolve_device(device)
        self.amp_dtype = resolve_amp(amp, self.device)
        self.sync_batchnorm = sync_batchnorm
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = trainer_callbacks(callbacks, self.out_dir, early_stopping)
        """The trainer's own callbacks, then the caller's (`thyroidseg.training.callbacks`)."""
        check_monitor(monitor, mode, MONITORS, self.callbacks)
        self.monitor, self.mode = monitor, mode
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Module.to converts parameters in place: an optimizer built on them still holds them.
        # (torch's stubs lack the memory_format that Module.to takes)
        self.model = model.to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.train_data, self.val_data = train_data, val_data
        self.loss_fn = loss
        self.optimizer = optimizer or torch.optim.AdamW(
            self.model.parameters(), lr=1e-3, weight_decay=1e-4
        )
        self.scheduler = scheduler
        self.prepare_batch: PrepareBatch = prepare_batch or default_prepare_batch
        self.ignore_index = ignore_index_of(loss, _dataset_of(train_data), _dataset_of(val_data))
        """Target value left out of the validation counts (the loss's or datasets')."""
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.epochs, self.batch_size, self.num_workers = epochs, batch_size, num_workers
        self.grad_clip, self.early_stopping, self.seed = grad_clip, early_stopping, seed
        self.progress = progress
        stored = getattr(_dataset_of(train_data), "config", None) or {}
        data_config = {**stored, **(data_config or {})}
        self.config: dict[str, Any] = {
            "model_class": model_name(model),
            "model": dict(getattr(model, "config", None) or {}),
            "data": data_config,
            "loss": describe(loss),
            "optimizer": describe(self.optimizer),
            "scheduler": describe(scheduler) if scheduler is not None else "constant",
            "prepare_batch": hook_name(self.prepare_batch) or describe(self.prepare_batch),
            "epochs": epochs,
            "batch_size": batch_size,
            "amp": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "off",
            "channels_last": channels_last,
            "grad_clip": grad_clip,
            "early_stopping": early_stopping,
            "monitor": monitor,
            "mode": mode if isinstance(mode, str) else describe(mode),
            "sync_batchnorm": sync_batchnorm,
            "ignore_index": self.ignore_index,
            "seed": seed,
        }
        self.epoch = 0
        """Completed epochs (restored by ``fit(resume=...)``)."""
        self.best_score = {"max": -math.inf, "min": math.inf}.get(str(mode), math.nan)
        """Best value of ``monitor`` so far (by default the mean per-image validation IoU)."""
        self.best_epoch = 0
        """The epoch of `best_score` (0: none yet)."""
        self.history: list[dict[str, float]] = []
        self._dist = DistContext()
        self._last_saved: Path | None = None
        self._stopping = False

    # -- public API -------------------------------------------------------------------

    def fit(self, resume: PathLike | None = None) -> list[dict[str, float]]:
        """Train until ``epochs`` (or early stopping); returns the history, one dict per epoch.

        First `thyroidseg.models.checkpoint.prepare_run_folder` checks that ``out_dir`` can be
        written and removes the temporary files a killed run left there.

        Parameters
        ----------
        resume
            A checkpoint to continue from (usually ``out_dir / "last.pt"``): restores the model,
            optimizer, scheduler, gradient scaler, epoch, best score and epoch, history and
            random states (bit-identical to an uninterrupted run on the CPU). When it lies in
            ``out_dir``, that folder's ``best.pt`` is checked against it
            (`thyroidseg.models.checkpoint.check_best_checkpoint`).

        Raises
        ------
        NonFiniteLossError
            The loss became NaN or infinite; the last good checkpoint is kept.
        NonFiniteOutputError
            The model's output for a validation item was NaN or infinite.
        ValueError
            ``out_dir`` cannot be written; ``resume`` was written by a run set up differently
            (docs/training.md), or its ``best.pt`` is lost; ``monitor`` is in no epoch row.
        FileExistsError
            A new run (no ``resume``) into an ``out_dir`` that holds run files already.
        thyroidseg.io.outputs.FolderInUseError
            Another live process trains into ``out_dir`` (``out_dir/.thyroidseg.lock``).
        """
        with join_process_group(self.device) as self._dist, contextlib.ExitStack() as held:
            try:
                if self._dist.is_main and self.out_dir is not None:
                    held.enter_context(reserve_folder(self.out_dir))  # one run at a time
                    prepare_out_dir(self.out_dir, resuming=resume is not None)
                if resume is not None:
                    self._restore(resume)
                else:
                    seed_global_rngs(self.seed)
                self._fit()
            finally:
                self._dist = DistContext()
        return self.history

    def evaluate(self, data: Dataset | Sequence[Mapping[str, Any]]) -> ConfusionMatrix:
        """Predict every item of ``data`` (argmax of the logits) and count it against its mask.

        Returns a `ConfusionMatrix` with as many classes as the logits have channels, one
        matrix per image, in the order of ``data``, leaving out
        target pixels equal to `ignore_index`. Within `fit` under ``torchrun`` each process
        counts its share and the matrices are gathered, back in the order of ``data``;
        outside `fit` (even inside a process group of the caller's) this process counts
        every item once and nothing is gathered.

        Raises
        ------
        NonFiniteOutputError
            The model's output for an item holds NaN or infinite values (its index named).
        """
        return self._evaluate(data, epoch=None)

    def _evaluate(
        self, data: Dataset | Sequence[Mapping[str, Any]], epoch: int | None
    ) -> ConfusionMatrix:
        matrix: ConfusionMatrix | None = None  # its classes: the logits' channels
        loader = evaluation_loader(
            data, self._dist, batch_size=self.batch_size, num_workers=self.num_workers,
            device=self.device,
        )  # fmt: skip
        self.model.eval()
        first_bad = None  # 2 * (index in data) + (1 if that item's input was finite)
        seen = 0
        with torch.inference_mode():
            for batch in loader:
                inputs, target, _ = self.prepare_batch(batch, self.device, self.memory_format)
                with autocast(self.device, self.amp_dtype):
                    logits = self.model(inputs)
                finite = torch.isfinite(logits).flatten(1).all(dim=1)
                if first_bad is None and not bool(finite.all()):
                    k = int(torch.nonzero(~finite)[0])
                    index = self._dist.rank + (seen + k) * self._dist.world_size
                    first_bad = 2 * index + int(bool(torch.isfinite(inputs[k]).all()))
                if matrix is None:
                    matrix = ConfusionMatrix(logits.shape[1], ignore_index=self.ignore_index)
                matrix.update(logits.argmax(dim=1), target)
                seen += inputs.shape[0]
        first_bad = self._dist.smallest(first_bad, self.device)  # every process stops together
        if first_bad is not None:
            index = first_bad // 2
            raise NonFiniteOutputError(
                epoch, index, item_name(_dataset_of(data), index), bool(first_bad % 2),
                self._last_saved if epoch is not None else None,
            )  # fmt: skip
        if matrix is None:  # this process had no item (more processes than items)
            matrix = ConfusionMatrix(self._num_classes(), ignore_index=self.ignore_index)
        matrix.sync(should_sync=self._dist.world_size > 1)  # only the shares that fit made
        if self._dist.world_size == 1 or isinstance(data, DataLoader):
            return matrix  # the caller's loader: its sampler's order
        order = _data_order(len(cast(Sized, data)), self._dist.world_size)
        return ConfusionMatrix.from_matrices(
            matrix.per_image_matrices[order], ignore_index=self.ignore_index
        )

    def _num_classes(self) -> int:
        """The model's classes, from a forward pass of one training item's input."""
        batch = (
            next(iter(self.train_data))
            if isinstance(self.train_data, DataLoader)
            else collate([self.train_data[0]])
        )
        inputs, _, _ = self.prepare_batch(batch, self.device, self.memory_format)
        with torch.inference_mode(), autocast(self.device, self.amp_dtype):
            return int(self.model(inputs).shape[1])

    @property
    def last_checkpoint(self) -> Path | None:
        """``out_dir / "last.pt"`` once written by this trainer, else ``None``."""
        return self._last_saved

    @property
    def bad_epochs(self) -> int:
        """Epochs since the best one (``epoch - best_epoch``; 0 without validation)."""
        return self.epoch - self.best_epoch if self.val_data is not None else 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0 under ``torchrun``; always alone)."""
        return self._dist.is_main

    def stop(self) -> None:
        """End `fit` before the next epoch (what `EarlyStopping` calls); the epoch runs on."""
        self._stopping = True

    # -- the loop -----------------------------------------------------------------------

    def _fit(self) -> None:
        distributed = self._dist.world_size > 1
        with synced_batchnorm(self.model, self.sync_batchnorm and distributed) as model:
            if distributed:
                ids = [self.device.index] if self.device.type == "cuda" else None
                model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
            self._epochs(model)

    def _epochs(self, model: nn.Module) -> None:
        is_main = self._dist.is_main
        worker_seeds = torch.Generator()
        loader, sampler = training_loader(
            self.train_data, self._dist, batch_size=self.batch_size,
            num_workers=self.num_workers, device=self.device, seed=self.seed,
            generator=worker_seeds,
        )  # fmt: skip
        epochs = Progress(
            range(self.epoch, self.epochs),
            total=self.epochs,
            initial=self.epoch,
            desc="epoch",
            unit="epoch",
            enabled=self.progress if is_main else False,
            every_item=True,
        )
        self._stopping = False
        self._emit("on_train_start")
        for epoch in epochs:
            if self._stopping:
                break
            self._emit("on_epoch_start", epoch + 1)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            worker_seeds.manual_seed(self.seed * 100_003 + epoch)  # same workers' seeds on resume
            dataset = _dataset_of(self.train_data)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            started = time.perf_counter()
            row: dict[str, float] = {
                "epoch": epoch + 1,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": self._train_epoch(model, loader, epoch),
            }
            if self.scheduler is not None:
                self.scheduler.step()
            self._dist.broadcast_buffers(self.model)  # one set of BatchNorm statistics
            improved = self.val_data is not None and self._validate(row, epoch + 1)
            row["seconds"] = time.perf_counter() - started
            self.epoch = epoch + 1
            self.history.append(row)
            if is_main and self.out_dir is not None:
                checkpoint = self._checkpoint()
                self._last_saved = write_checkpoints(self.out_dir, checkpoint, improved=improved)
            self._emit("on_epoch_end", row)
            epochs.set_postfix(
                **{k: v for k, v in row.items() if k in ("train_loss", "val_iou", "val_dice")}
            )
        self._emit("on_train_end")

    def _validate(self, row: dict[str, float], epoch: int) -> bool:
        """Add the validation metrics to ``row``; whether ``monitor`` improved on the best."""
        assert self.val_data is not None
        matrix = self._evaluate(self.val_data, epoch)
        row["val_iou"] = float(nanmean(matrix.per_image("iou", cls=1)))
        row["val_dice"] = float(nanmean(matrix.per_image("dice", cls=1)))
        self._emit("on_validation_end", matrix, row)
        if self.monitor not in row:
            raise ValueError(
                f"monitor {self.monitor!r} is not in epoch {epoch}'s row ({', '.join(row)}): "
                "name a validation metric, or one that a callback adds in on_validation_end"
            )
        score = float(row[self.monitor])
        better = _BETTER[self.mode] if isinstance(self.mode, str) else self.mode
        if not math.isfinite(score) or (self.best_epoch and not better(score, self.best_score)):
            return False
        self.best_score, self.best_epoch = score, epoch
        return True

    def _emit(self, event: str, *args: Any) -> None:
        """Call hook ``event`` of every callback, in order."""
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def _train_epoch(self, model: nn.Module, loader: DataLoader, epoch: int) -> float:
        model.train()
        steps = Progress(
            loader,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="batch",
            enabled=self.progress if self._dist.is_main else False,
            transient=True,
        )
        total, count = 0.0, 0
        for step, batch in enumerate(steps, start=1):
            inputs, target, loss_kwargs = self.prepare_batch(batch, self.device, self.memory_format)
            with autocast(self.device, self.amp_dtype):
                logits = model(inputs)
            loss = self.loss_fn(logits.float(), target, **loss_kwargs)
            value = self._checked(loss, inputs.shape[0], epoch, step)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += value * inputs.shape[0]
            count += inputs.shape[0]
            steps.set_postfix(loss=value)
            self._emit("on_step_end", step, value)
        loss_sum, images = self._dist.sum([total, count], self.device)
        return loss_sum / images

    def _checked(self, loss: Tensor, batch: int, epoch: int, step: int) -> float:
        """The loss as a float (mean over processes); raise if any process's loss is not finite."""
        value = float(loss.detach())
        if self._dist.world_size > 1:  # every process must stop together, before backward
            total, images = self._dist.sum([value * batch, batch], self.device)
            value = total / images
        if not math.isfinite(value):
            raise NonFiniteLossError(epoch + 1, step, value, self._last_saved)
        return value

    # -- checkpoints and outputs --------------------------------------------------------

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "thyroidseg_version": __version__,
            "torch_version": str(torch.__version__),
            "config": self.config,
            "epoch": self.epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "early_stopping": {"patience": self.early_stopping, "bad_epochs": self.bad_epochs},
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }

    def _restore(self, path: PathLike) -> None:
        checkpoint = load_checkpoint(path, map_location=self.device)
        changed = resume_conflicts(checkpoint["config"], self.config)
        if changed:
            raise ValueError(
                f"{path}: cannot resume with other settings than the run that wrote it "
                f"({'; '.join(changed)}): a resumed run must follow the same schedule. To train "
                "further, start a new run from its weights: "
                "model.load_state_dict(load_checkpoint(path)['model'])"
            )
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.scaler.load_state_dict(checkpoint["scaler"])
            self.epoch = int(checkpoint["epoch"])
            self.best_score = float(checkpoint["best_score"])
            self.best_epoch = int(checkpoint["best_epoch"])
            self.history = [dict(row) for row in checkpoint["history"]]
            restore_rng_state(checkpoint["rng"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise ValueError(f"{path}: cannot resume from this checkpoint: {error}") from error
        stored_data = checkpoint["config"].get("data") or {}
        self.config["data"] = {**self.config["data"], **stored_data}  # the run's, as written
        path = Path(path)
        if self._dist.is_main and self.out_dir is not None and path.parent.samefile(self.out_dir):
            check_best_checkpoint(path, checkpoint)  # another folder gets best.pt on improvement
        if self._dist.is_main:  # the process that writes files; `last_checkpoint` says which
            self._last_saved = path
