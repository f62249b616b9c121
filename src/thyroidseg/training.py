"""Training: the `Trainer` loop, safe checkpoints, CPU speed settings, AMP and DDP.

The loop is the one the paper describes (forward, loss, backward, update, save the
parameters, repeat) with what users of Lightning, MONAI and nnU-Net expect around it:

* validation after every epoch, reporting the **per-image** nodule IoU and Dice (mean over
  validation images); the IoU selects the ``best`` checkpoint and drives early stopping;
* ``last.pt`` after every epoch and ``best.pt`` on improvement, written atomically
  (temporary file + rename), holding everything needed to resume bit-exactly on the CPU;
* loading with ``torch.load(weights_only=True)`` only, so a checkpoint cannot run code;
* a non-finite loss stops the run with `NonFiniteLossError` (epoch and step named);
* ``history.csv`` and ``history.png`` (training curves drawn with OpenCV) in ``out_dir``;
* bf16 autocast + channels-last + glibc allocator tuning on the CPU, fp16 autocast with a
  gradient scaler on CUDA, and DistributedDataParallel when launched with ``torchrun``.

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
import csv
import ctypes
import ctypes.util
import functools
import io
import math
import os
import platform
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from thyroidseg._io import PathLike, atomic_write_bytes
from thyroidseg._progress import Progress
from thyroidseg._version import __version__
from thyroidseg.metrics import ConfusionMatrix

__all__ = [
    "CHECKPOINT_FORMAT",
    "NonFiniteLossError",
    "Trainer",
    "cpu_has_native_bf16",
    "load_checkpoint",
    "plot_history",
    "resolve_amp",
    "resolve_device",
    "save_checkpoint",
    "train_folder",
    "tune_cpu_allocator",
]

AmpMode = Literal["auto", "bf16", "fp16", "off"]
LossFn = Callable[[Tensor, Tensor], Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

CHECKPOINT_FORMAT = "thyroidseg-checkpoint/1"
"""Value of the ``"format"`` key of every checkpoint this module writes."""

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"

AMP_MODES: tuple[str, ...] = ("auto", "bf16", "fp16", "off")
_OPTIMIZERS = ("adamw", "adam", "sgd")
_SCHEDULES = ("cosine", "poly", "constant")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; nothing was saved for the failing epoch.

    Attributes
    ----------
    epoch, step
        Where it happened (both 1-based; ``step`` counts batches within the epoch).
    value
        The loss value.
    checkpoint
        The last good checkpoint (``last.pt`` of the previous epoch), or ``None``.
    """

    def __init__(self, epoch: int, step: int, value: float, checkpoint: Path | None) -> None:
        kept = (
            f"the last good checkpoint is {checkpoint}"
            if checkpoint is not None
            else "no checkpoint had been written yet"
        )
        super().__init__(
            f"loss is {value} at epoch {epoch}, step {step}; training stopped and {kept} "
            "(lower the learning rate, set grad_clip, or use amp='off' to find the cause)"
        )
        self.epoch, self.step, self.value, self.checkpoint = epoch, step, value, checkpoint


# --------------------------------------------------------------------------- CPU allocator

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h> parameter numbers
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(*, mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30) -> bool:
    """Stop glibc from returning large tensors to the OS after every training step.

    By default glibc serves every allocation over 32 MB with a fresh ``mmap`` and unmaps it on
    ``free``. A U-Net step allocates and frees activations of that size dozens of times, so
    the kernel zero-fills and page-faults the same memory again every step: measured here,
    system time was ~40% of a CPU training step. Raising ``M_MMAP_THRESHOLD`` keeps those
    blocks in the heap, and raising ``M_TRIM_THRESHOLD`` stops the heap from being trimmed
    back after each step. It costs some resident memory (freed blocks are kept for reuse).

    The setting is process-wide and lasts until the process exits; it applies to allocations
    made after the call. Elsewhere than Linux with glibc (macOS, Windows, musl) it does
    nothing and returns ``False``; so does a glibc that refuses the values.
    Preloading jemalloc or tcmalloc (``LD_PRELOAD``) has a similar effect.

    Parameters
    ----------
    mmap_threshold
        Allocations at least this large (bytes) still get their own ``mmap``. Default 1 GiB.
    trim_threshold
        Free memory at the top of the heap beyond this many bytes is returned to the OS.
        Default 1 GiB.

    Returns
    -------
    bool
        Whether both settings were applied.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    return mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and applied


# --------------------------------------------------------------------------- device and AMP


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device to train on.

    ``"auto"`` picks CUDA when available, else the CPU. Under ``torchrun`` a bare ``"cuda"``
    (or ``"auto"``) becomes ``cuda:<LOCAL_RANK>``, one GPU per process.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX) and autocast works.

    Without native support PyTorch emulates bfloat16, which is slower than float32, so
    ``amp="auto"`` only turns bf16 on where this returns ``True``. The flags are read from
    ``/proc/cpuinfo`` (Linux); elsewhere this returns ``False``.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    if not re.search(r"\b(avx512_bf16|amx_bf16)\b", flags):
        return False
    return _bf16_autocast_works()


@functools.cache
def _bf16_autocast_works() -> bool:
    """Run a tiny convolution under CPU bf16 autocast and check it really ran in bf16."""
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = nn.functional.conv2d(torch.ones(1, 2, 4, 4), torch.ones(3, 2, 3, 3))
        return out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
    except RuntimeError:
        return False


def resolve_amp(amp: AmpMode, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or ``None`` for full float32.

    ==========  =====================================  ===================================
    ``amp``     CPU                                    CUDA
    ==========  =====================================  ===================================
    ``"auto"``  bf16 if `cpu_has_native_bf16`,   fp16 (with a gradient scaler)
                else float32
    ``"bf16"``  bf16 (error if autocast fails)         bf16 (error if the GPU lacks it)
    ``"fp16"``  error: fp16 autocast needs CUDA        fp16 (with a gradient scaler)
    ``"off"``   float32                                float32
    ==========  =====================================  ===================================
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"amp='bf16': {torch.cuda.get_device_name(device)} has no bfloat16")
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cpu":
        if amp == "fp16":
            raise ValueError("amp='fp16' needs a CUDA device; on the CPU use 'bf16' or 'off'")
        if amp == "auto":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if not _bf16_autocast_works():
            raise ValueError("amp='bf16': bfloat16 autocast does not work on this CPU")
        return torch.bfloat16
    if amp == "auto":
        return None
    raise ValueError(f"amp={amp!r} is supported on 'cpu' and 'cuda' devices, not {device.type!r}")


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: PathLike, checkpoint: Mapping[str, Any]) -> Path:
    """Write ``checkpoint`` (tensors and plain Python values only) atomically to ``path``.

    The file is serialised in memory, written to a temporary file in the same folder and
    renamed over ``path``: a crash at any moment leaves either the old or the new file.
    """
    path = Path(path)
    atomic_write_bytes(path, _serialize(checkpoint))
    return path


def _serialize(checkpoint: Mapping[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    return buffer.getvalue()


def load_checkpoint(path: PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `Trainer`, safely.

    Loads with ``torch.load(weights_only=True)``: only tensors and plain Python values are
    accepted, so a file cannot run code when it is opened.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is truncated or corrupt, needs arbitrary pickled code (refused), or is not a
        thyroidseg checkpoint. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:  # unreadable file (permissions...): the OS error names it already
        raise
    except Exception as error:  # torch raises many types for damaged files; name them all
        message = str(error)
        code = re.search(r"GLOBAL (\S+)", message)  # a class or function the pickle would call
        if code:
            raise ValueError(
                f"{path}: refusing to load: the checkpoint holds pickled Python objects "
                f"({code.group(1)}) that could run arbitrary code. thyroidseg checkpoints hold "
                "only tensors and plain values; load this file yourself with "
                "torch.load(weights_only=False) only if you trust its source"
            ) from error
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", message)  # e.g. bad opcode
        lines = message.strip().splitlines()
        reason = detail.group(1) if detail else lines[0] if lines else type(error).__name__
        raise ValueError(f"{path}: corrupt or truncated checkpoint ({reason})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint)
        raise ValueError(
            f"{path}: not a thyroidseg checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); a bare state_dict can be loaded with "
            "model.load_state_dict(torch.load(path, weights_only=True))"
        )
    return checkpoint


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()  # noqa: NPY002 (saved on purpose)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": list(random.getstate()),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class _Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Sum ``values`` over processes (identity when not distributed)."""
        if self.world_size == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.tolist()


@contextlib.contextmanager
def _distributed(device: torch.device) -> Iterator[_Dist]:
    """Join the ``torchrun`` process group for the ``with`` block (if ``WORLD_SIZE > 1``).

    Uses NCCL for CUDA devices and gloo otherwise; a group that already exists is reused
    and left alone, one created here is destroyed on exit.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        yield _Dist()
        return
    created = not dist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield _Dist(rank=dist.get_rank(), world_size=dist.get_world_size())
    finally:
        if created:
            dist.destroy_process_group()


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Train a segmentation model, validate every epoch, checkpoint and resume.

    Parameters
    ----------
    model
        Any ``nn.Module`` mapping images ``(N, C, H, W)`` to logits ``(N, K, H, W)``, e.g.
        `thyroidseg.model.UNet`. Its ``config`` attribute (if any) is stored in the
        checkpoints so `thyroidseg.inference` can rebuild it.
    train_data, val_data
        Datasets whose items are dicts with ``"image"`` (float ``(C, H, W)``) and ``"mask"``
        (int ``(H, W)`` class indices), e.g. `thyroidseg.data.ThyroidDataset`.
        If ``train_data`` has a ``set_epoch(epoch)`` method it is called before every epoch
        (so seeded augmentation can differ per epoch and still resume exactly).
        ``val_data=None`` skips validation: only ``last.pt`` is written.
    loss
        A loss name for `thyroidseg.losses.make_loss` (``"ce"``, ``"weighted_ce"``,
        ``"dice"``, ``"dice_ce"``; default ``"dice_ce"``, nnU-Net's) or any callable
        ``(logits, target) -> scalar``. It is computed in float32 even under autocast.
    optimizer
        ``"adamw"`` (default), ``"adam"``, ``"sgd"`` (momentum 0.99, Nesterov, as nnU-Net) or
        a callable ``parameters -> Optimizer``.
    lr, weight_decay
        Learning rate (default 1e-3) and weight decay (default 1e-4) for named optimizers.
    schedule
        Learning-rate schedule, stepped once per epoch: ``"cosine"`` (default, to 0 at the
        last epoch), ``"poly"`` (``(1 - epoch/epochs) ** 0.9``, nnU-Net), ``"constant"``,
        or a callable ``optimizer -> LRScheduler``.
    epochs
        Number of epochs to train in total (a resumed run continues up to it). Default 50.
    batch_size
        Images per step and per process. Default 8.
    num_workers
        DataLoader worker processes. Default 0 (load in the training process: with a cached
        dataset on a CPU, workers only compete with the model for cores).
    device
        ``"auto"`` (default: CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    amp
        Mixed precision, see `resolve_amp`: ``"auto"`` (default: bf16 on CPUs that have
        it natively, fp16 + gradient scaler on CUDA), ``"bf16"``, ``"fp16"`` or ``"off"``
        (float32 everywhere).
    channels_last
        Use the channels-last memory format for the model and the images (default ``True``;
        faster convolutions on CPUs and tensor cores).
    tune_allocator
        Call `tune_cpu_allocator` when training on the CPU (default ``True``; a
        process-wide glibc setting, a no-op elsewhere).
    grad_clip
        Clip the global gradient norm to this value (``None``, the default: no clipping;
        nnU-Net uses 12).
    early_stopping
        Stop after this many epochs without a better validation IoU (``None``, default: never).
    out_dir
        Folder for ``last.pt``, ``best.pt``, ``history.csv`` and ``history.png``. ``None``
        (default) writes nothing.
    seed
        Seeds the data order, the DataLoader workers and the global random generators
        (Python, NumPy, PyTorch), so a run is repeatable on the CPU. Default 0.
    progress
        Progress bars: ``None`` (default) when standard error is a terminal, else one summary
        line per bar; ``False`` silences them.
    data_config
        Extra JSON-ready entries (e.g. the data folder and fold) stored in the checkpoints'
        ``config["data"]`` on top of ``train_data.config`` when the dataset has one
        (`thyroidseg.data.ThyroidDataset.config`: layout, size, ``"preprocess"`` and
        ``"preprocess_options"``). `thyroidseg.inference.Segmenter.from_checkpoint` prepares
        new frames from those entries exactly as in training. Default: nothing extra.

    Notes
    -----
    Under ``torchrun`` (``WORLD_SIZE > 1``) `fit` wraps the model in
    ``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA), shards the training data with a
    ``DistributedSampler`` and the validation data without padding, sums the confusion
    matrices with `ConfusionMatrix.sync`, and only rank 0 writes files.
    ``batch_size`` is per process, so the effective batch is ``batch_size * WORLD_SIZE``.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset | Sequence[Mapping[str, Any]],
        val_data: Dataset | Sequence[Mapping[str, Any]] | None = None,
        *,
        loss: str | LossFn = "dice_ce",
        optimizer: str | OptimizerFactory = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        schedule: str | SchedulerFactory = "cosine",
        epochs: int = 50,
        batch_size: int = 8,
        num_workers: int = 0,
        device: str | torch.device = "auto",
        amp: AmpMode = "auto",
        channels_last: bool = True,
        tune_allocator: bool = True,
        grad_clip: float | None = None,
        early_stopping: int | None = None,
        out_dir: PathLike | None = None,
        seed: int = 0,
        progress: bool | None = None,
        data_config: Mapping[str, Any] | None = None,
    ) -> None:
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {grad_clip!r}")
        if early_stopping is not None:
            if val_data is None:
                raise ValueError("early_stopping needs val_data (it watches the validation IoU)")
            if not isinstance(early_stopping, int) or early_stopping < 1:
                raise ValueError(
                    f"early_stopping must be a positive integer, got {early_stopping!r}"
                )
        if len(train_data) == 0:
            raise ValueError("train_data is empty")
        if val_data is not None and len(val_data) == 0:
            raise ValueError("val_data is empty (pass val_data=None to train without validation)")

        self.device = resolve_device(device)
        self.amp_dtype = resolve_amp(amp, self.device)
        if tune_allocator and self.device.type == "cpu":
            tune_cpu_allocator()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.train_data, self.val_data = train_data, val_data
        self.loss_fn = _make_loss(loss)
        self.optimizer = _make_optimizer(optimizer, self.model.parameters(), lr, weight_decay)
        self.scheduler = _make_scheduler(schedule, self.optimizer, epochs)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.epochs, self.batch_size, self.num_workers = epochs, batch_size, num_workers
        self.grad_clip, self.early_stopping, self.seed = grad_clip, early_stopping, seed
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        data_config = {**(getattr(train_data, "config", None) or {}), **(data_config or {})}
        self.config: dict[str, Any] = {
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "model": dict(getattr(model, "config", None) or {}),
            "data": data_config,
            "loss": loss if isinstance(loss, str) else repr(loss),
            "optimizer": optimizer if isinstance(optimizer, str) else repr(optimizer),
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "schedule": schedule if isinstance(schedule, str) else repr(schedule),
            "epochs": epochs,
            "batch_size": batch_size,
            "amp": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "off",
            "channels_last": channels_last,
            "grad_clip": grad_clip,
            "early_stopping": early_stopping,
            "seed": seed,
        }
        self.epoch = 0
        """Completed epochs (restored by ``fit(resume=...)``)."""
        self.best_score = -math.inf
        """Best mean per-image validation nodule IoU so far."""
        self.best_epoch = 0
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        self._dist = _Dist()
        self._last_saved: Path | None = None

    # -- public API -------------------------------------------------------------------

    def fit(self, resume: PathLike | None = None) -> list[dict[str, float]]:
        """Train until ``epochs`` (or early stopping); returns the history, one dict per epoch.

        Parameters
        ----------
        resume
            A checkpoint to continue from (usually ``out_dir / "last.pt"``): restores the model,
            optimizer, scheduler, gradient scaler, epoch, best score, early-stopping counter,
            history and random states. On the CPU the result is bit-identical to a run that
            was never interrupted.

        Raises
        ------
        NonFiniteLossError
            The loss became NaN or infinite; the last good checkpoint is kept.
        """
        if resume is not None:
            self._restore(resume)
        else:
            _seed_everything(self.seed)
        with _distributed(self.device) as self._dist:
            try:
                self._fit()
            finally:
                self._dist = _Dist()
        return self.history

    def evaluate(self, data: Dataset | Sequence[Mapping[str, Any]]) -> ConfusionMatrix:
        """Predict every item of ``data`` (argmax of the logits) and count it against its mask.

        Returns a 2-class (or ``K``-class) `ConfusionMatrix` with
        one matrix per image, in the order of ``data``. Within `fit` under ``torchrun``
        each process counts its share and the matrices are gathered.
        """
        num_classes = int((getattr(self.model, "config", None) or {}).get("num_classes", 2))
        matrix = ConfusionMatrix(num_classes)
        if self._dist.world_size > 1:  # every process takes every world_size-th item, no padding
            data = Subset(data, range(self._dist.rank, len(data), self._dist.world_size))
        loader = DataLoader(
            data,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
        )
        self.model.eval()
        with torch.inference_mode():
            for batch in loader:
                images, masks = self._to_device(batch)
                with self._autocast():
                    logits = self.model(images)
                matrix.update(logits.argmax(dim=1), masks)
        return matrix.sync()

    @property
    def last_checkpoint(self) -> Path | None:
        """``out_dir / "last.pt"`` once written by this trainer, else ``None``."""
        return self._last_saved

    # -- the loop -----------------------------------------------------------------------

    def _fit(self) -> None:
        is_main = self._dist.is_main
        model = self.model
        if self._dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        sampler = DistributedSampler(
            self.train_data,
            num_replicas=self._dist.world_size,
            rank=self._dist.rank,
            shuffle=True,
            seed=self.seed,
        )
        worker_seeds = torch.Generator()
        loader = DataLoader(
            self.train_data,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            generator=worker_seeds,
        )
        epochs = Progress(
            range(self.epoch, self.epochs),
            total=self.epochs - self.epoch,
            desc="epochs",
            enabled=self.progress if is_main else False,
        )
        for epoch in epochs:
            sampler.set_epoch(epoch)
            worker_seeds.manual_seed(self.seed * 100_003 + epoch)  # same workers' seeds on resume
            if hasattr(self.train_data, "set_epoch"):
                self.train_data.set_epoch(epoch)
            started = time.perf_counter()
            row: dict[str, float] = {
                "epoch": epoch + 1,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": self._train_epoch(model, loader, epoch),
            }
            if self.scheduler is not None:
                self.scheduler.step()
            if self._dist.world_size > 1:  # one set of BatchNorm statistics for every process
                for buffer in self.model.buffers():
                    dist.broadcast(buffer, src=0)
            improved = False
            if self.val_data is not None:
                matrix = self.evaluate(self.val_data)
                row["val_iou"] = _mean(matrix.per_image("iou", cls=1))
                row["val_dice"] = _mean(matrix.per_image("dice", cls=1))
                improved = row["val_iou"] > self.best_score
                if improved:
                    self.best_score, self.best_epoch, self.bad_epochs = row["val_iou"], epoch + 1, 0
                else:
                    self.bad_epochs += 1
            row["seconds"] = time.perf_counter() - started
            self.epoch = epoch + 1
            self.history.append(row)
            if is_main and self.out_dir is not None:
                self._write_outputs(improved)
            epochs.set_postfix(
                **{k: v for k, v in row.items() if k in ("train_loss", "val_iou", "val_dice")}
            )
            if self.early_stopping is not None and self.bad_epochs >= self.early_stopping:
                break

    def _train_epoch(self, model: nn.Module, loader: DataLoader, epoch: int) -> float:
        model.train()
        steps = Progress(
            loader,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            enabled=self.progress if self._dist.is_main else False,
        )
        total, count = 0.0, 0
        for step, batch in enumerate(steps, start=1):
            images, masks = self._to_device(batch)
            with self._autocast():
                logits = model(images)
            loss = self.loss_fn(logits.float(), masks)
            value = self._checked(loss, images.shape[0], epoch, step)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += value * images.shape[0]
            count += images.shape[0]
            steps.set_postfix(loss=value)
        total, count = self._dist.sum([total, count], self.device)
        return total / count

    def _checked(self, loss: Tensor, batch: int, epoch: int, step: int) -> float:
        """The loss as a float (mean over processes); raise if any process's loss is not finite."""
        value = float(loss.detach())
        if self._dist.world_size > 1:  # every process must stop together, before backward
            total, images = self._dist.sum([value * batch, batch], self.device)
            value = total / images
        if not math.isfinite(value):
            raise NonFiniteLossError(epoch + 1, step, value, self._last_saved)
        return value

    def _to_device(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        images = batch["image"].to(self.device, non_blocking=True).float()
        images = images.contiguous(memory_format=self.memory_format)
        masks = batch["mask"].to(self.device, non_blocking=True).long()
        return images, masks

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp_dtype is not None)

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
            "rng": _rng_state(),
        }

    def _write_outputs(self, improved: bool) -> None:
        assert self.out_dir is not None
        data = _serialize(self._checkpoint())
        atomic_write_bytes(self.out_dir / LAST_CHECKPOINT, data)
        self._last_saved = self.out_dir / LAST_CHECKPOINT
        if improved:
            atomic_write_bytes(self.out_dir / BEST_CHECKPOINT, data)
        atomic_write_bytes(self.out_dir / HISTORY_CSV, _history_csv(self.history).encode())
        ok, png = cv2.imencode(".png", plot_history(self.history))
        if ok:
            atomic_write_bytes(self.out_dir / HISTORY_PNG, png.tobytes())

    def _restore(self, path: PathLike) -> None:
        checkpoint = load_checkpoint(path, map_location=self.device)
        changed = [
            f"{key}={checkpoint['config'].get(key)!r} there, {self.config[key]!r} here"
            for key in _RESUME_MUST_MATCH
            if checkpoint["config"].get(key) != self.config[key]
            and not str(self.config[key]).startswith("<")  # a callable's repr: not comparable
        ]
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
            if (checkpoint["scheduler"] is None) != (self.scheduler is None):
                raise ValueError("the learning-rate schedule differs from this trainer's")
            if self.scheduler is not None:
                self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.scaler.load_state_dict(checkpoint["scaler"])
            self.epoch = int(checkpoint["epoch"])
            self.best_score = float(checkpoint["best_score"])
            self.best_epoch = int(checkpoint["best_epoch"])
            self.bad_epochs = int(checkpoint["early_stopping"]["bad_epochs"])
            self.history = [dict(row) for row in checkpoint["history"]]
            _set_rng_state(checkpoint["rng"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise ValueError(f"{path}: cannot resume from this checkpoint: {error}") from error
        self._last_saved = Path(path)


_RESUME_MUST_MATCH = (
    "model", "loss", "optimizer", "lr", "weight_decay", "schedule", "epochs", "batch_size", "seed",
)  # fmt: skip
"""Trainer settings that shape the trajectory: ``fit(resume=...)`` refuses other values."""


# --------------------------------------------------------------------------- from a folder


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
    resume
        Continue from ``out_dir/last.pt`` (an error if there is none).
    **trainer_options
        Passed to `Trainer` (``epochs``, ``batch_size``, ``loss``, ``lr``, ``amp``,
        ``device``, ``seed``, ``progress``...).

    Returns
    -------
    Trainer
        After `Trainer.fit`; ``trainer.history`` holds the epochs.
    """
    from thyroidseg.augment import Augment
    from thyroidseg.data import ThyroidDataset
    from thyroidseg.splits import group_kfold
    from thyroidseg.model import UNet

    if fold is not None and (not isinstance(fold, int) or not 0 <= fold < folds):
        raise ValueError(f"fold must be None or in [0, {folds}), got {fold!r}")
    out_dir = Path(out_dir)
    last = out_dir / LAST_CHECKPOINT
    if resume and not last.is_file():
        raise FileNotFoundError(f"{last}: nothing to resume from")
    if not resume and last.exists():
        raise FileExistsError(f"{last} exists: pass resume (--resume) or choose another folder")
    seed = int(trainer_options.get("seed", 0))
    size = (int(size[0]), int(size[1]))
    dataset = ThyroidDataset(data_dir, size=size, progress=trainer_options.get("progress"))
    if fold is None:
        train_idx, val = np.arange(len(dataset)), None
    else:
        train_idx, val_idx = group_kfold(dataset.groups, n_splits=folds, seed=seed)[fold]
        val = dataset.subset(val_idx)
    train = dataset.subset(train_idx).with_transform(Augment(seed=seed) if augment else None)
    trainer = Trainer(
        model if model is not None else UNet(base_channels=base_channels, seed=seed),
        train,
        val,
        out_dir=out_dir,
        data_config={"root": str(data_dir), "fold": fold, "folds": folds},
        **trainer_options,
    )
    trainer.fit(resume=last if resume else None)
    return trainer


# --------------------------------------------------------------------------- helpers


def _collate(items: Sequence[Any]) -> dict[str, Tensor]:
    """Stack the ``"image"`` and ``"mask"`` of dataset items (other keys are not needed)."""
    for item in items:
        if not isinstance(item, Mapping) or "image" not in item or "mask" not in item:
            raise ValueError(
                "each dataset item must be a dict with 'image' (C, H, W) and 'mask' (H, W); "
                f"got {type(item).__name__}"
            )
    return {
        "image": torch.stack([torch.as_tensor(item["image"]) for item in items]),
        "mask": torch.stack([torch.as_tensor(item["mask"]) for item in items]),
    }


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (user code may draw from it)
    torch.manual_seed(seed)


def _mean(values: np.ndarray) -> float:
    """Mean of the defined (non-NaN) values; NaN when there is none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def _make_loss(loss: str | LossFn) -> LossFn:
    if isinstance(loss, str):
        from thyroidseg.losses import make_loss

        return make_loss(loss)
    if not callable(loss):
        raise ValueError(f"loss must be a loss name or a callable, got {loss!r}")
    return loss


def _make_optimizer(
    optimizer: str | OptimizerFactory,
    parameters: Iterable[nn.Parameter],
    lr: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    if callable(optimizer):
        return optimizer(parameters)
    if optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=lr, weight_decay=weight_decay, momentum=0.99, nesterov=True
        )
    raise ValueError(f"optimizer must be one of {_OPTIMIZERS} or a callable, got {optimizer!r}")


def _make_scheduler(
    schedule: str | SchedulerFactory, optimizer: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if callable(schedule):
        return schedule(optimizer)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs, power=0.9)
    if schedule == "constant":
        return None
    raise ValueError(f"schedule must be one of {_SCHEDULES} or a callable, got {schedule!r}")


def _history_csv(history: Sequence[Mapping[str, float]]) -> str:
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return text.getvalue()


def plot_history(
    history: Sequence[Mapping[str, float]], *, size: tuple[int, int] = (360, 720)
) -> np.ndarray:
    """Draw training curves as a BGR ``uint8`` image (no matplotlib needed).

    Left panel: training loss per epoch. Right panel: validation nodule IoU and Dice
    (per-image means) on a fixed 0-1 axis, when the history has them.
    """
    height, width = size
    canvas = np.full((height, width, 3), 255, np.uint8)
    black = (0, 0, 0)
    panels = [
        ("train loss", ("train_loss",)),
        ("validation (per-image mean)", ("val_iou", "val_dice")),
    ]
    colours = {"train_loss": (180, 90, 30), "val_iou": (40, 40, 200), "val_dice": (40, 150, 40)}
    epochs = [row["epoch"] for row in history]
    half = width // 2
    for p, (title, keys) in enumerate(panels):
        x0, x1, y0, y1 = p * half + 50, (p + 1) * half - 15, 30, height - 40
        cv2.rectangle(canvas, (x0, y0), (x1, y1), black, 1)
        _text(canvas, title, (x0, 20), black, 0.45)
        series = {k: [row.get(k, math.nan) for row in history] for k in keys}
        finite = [v for vs in series.values() for v in vs if math.isfinite(v)]
        if not finite:
            continue
        low, high = (0.0, 1.0) if p == 1 else (min(0.0, min(finite)), max(finite))
        high = high if high > low else low + 1.0
        first, last = min(epochs), max(epochs)
        x_pixels = x0 + (np.asarray(epochs, float) - first) / max(last - first, 1) * (x1 - x0)
        y_scale = (y1 - y0) / (high - low)
        for value in (low, high):
            _text(
                canvas, f"{value:.3g}", (p * half + 2, int(y1 - (value - low) * y_scale) + 4), black
            )
        _text(canvas, f"epoch {first}..{last}", (x0, height - 15), black)
        for k, (name, values) in enumerate(series.items()):
            y_pixels = y1 - (np.asarray(values, float) - low) * y_scale
            keep = np.isfinite(y_pixels)
            points = np.stack([x_pixels[keep], y_pixels[keep]], axis=1).astype(np.int32)
            cv2.polylines(canvas, [points], False, colours[name], 2, cv2.LINE_AA)
            for x, y in points:
                cv2.circle(canvas, (int(x), int(y)), 3, colours[name], -1, cv2.LINE_AA)
            _text(canvas, name, (x1 - 90, y0 + 18 + 16 * k), colours[name])
    return canvas


def _text(
    canvas: np.ndarray,
    text: str,
    origin: tuple[int, int],
    colour: tuple[int, int, int],
    scale: float = 0.4,
) -> None:
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
