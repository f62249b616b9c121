"""How a `thyroidseg.training.Trainer` run is checked and recorded: arguments, settings, resume.

* `check_components` and `check_settings` refuse what the trainer cannot use, with a message
  saying what it needs instead (`thyroidseg.training.workflows.train_folder` calls `check_settings`
  before it reads any data);
* `describe` and `qualified_name` turn the loss, optimizer, scheduler and model class into
  the texts stored in a checkpoint's ``config``;
* `resume_conflicts` lists the settings in which a checkpoint's run differs from this one
  (`RESUME_MUST_MATCH` and every entry of the stored ``config["data"]``): a resumed run
  must follow the same schedule on the same data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thyroidseg._checks import check_int
from thyroidseg.models.registry import canonical_name, model_config
from thyroidseg.runtime import AmpMode, resolve_amp, resolve_device
from thyroidseg.training.callbacks import Callback

__all__ = [
    "RESUME_MUST_MATCH",
    "check_components",
    "check_monitor",
    "check_settings",
    "data_conflicts",
    "describe",
    "ignore_index_of",
    "qualified_name",
    "resume_conflicts",
]

RESUME_MUST_MATCH = (
    "model_class", "model", "loss", "optimizer", "scheduler", "prepare_batch", "epochs",
    "batch_size", "amp", "grad_clip", "ignore_index", "monitor", "mode", "seed",
)  # fmt: skip
"""Trainer settings that shape the trajectory: ``fit(resume=...)`` refuses other values."""


_ADDED_SINCE_0_1 = {"monitor": "val_iou", "mode": "max"}
"""Settings 0.1.x checkpoints lack, with the value those runs used."""


def resume_conflicts(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The settings in which a checkpoint's ``config`` (``stored``) differs from ``current``.

    Compares the `RESUME_MUST_MATCH` keys and every entry of ``stored["data"]`` (the data
    folder, fold, size, augmentation, preprocessing...); an entry older checkpoints lack is
    not compared, 0.1.x import paths count as their registered names
    (`thyroidseg.models.registry.canonical_name`), and a model option the checkpoint predates counts
    as its default (`thyroidseg.models.registry.model_config`). Each difference reads
    ``"<setting>=<stored> there, <current> here"``.
    """

    def comparable(config: Mapping[str, Any], key: str) -> object:
        if key == "model":  # options added since the checkpoint was written: their defaults
            return model_config(config.get("model_class"), config.get(key))
        return canonical_name(config.get(key, _ADDED_SINCE_0_1.get(key)))

    changed = []
    for key in RESUME_MUST_MATCH:
        there, here = comparable(stored, key), comparable(current, key)
        if there == here:
            continue
        if isinstance(there, Mapping) and isinstance(here, Mapping):  # the model's options
            changed += _mapping_conflicts(key, there, here)
        elif isinstance(there, str) and isinstance(here, str) and "\n" in there + here:
            changed.append(_text_conflict(key, there, here))
        else:
            changed.append(f"{key}={stored.get(key)!r} there, {current.get(key)!r} here")
    return changed + data_conflicts(stored.get("data") or {}, current.get("data") or {})


def data_conflicts(
    stored: Mapping[str, Any],
    current: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """The data settings (a checkpoint's ``config["data"]``) in which ``current`` differs.

    The one data comparison of a resume, used by `resume_conflicts` and, before any data is
    read, by `thyroidseg.training.workflows.train_folder`. Every entry of ``stored`` is
    compared (one ``current`` lacks counts as changed); with ``labels``, only those keys,
    each named by its label (e.g. ``{"root": "data_dir"}``), else as ``data['key']``. The
    data folder (``"root"``) is compared after resolving links and relative paths.
    """
    changed = []
    keys = [key for key in labels if key in stored] if labels is not None else list(stored)
    for key in keys:
        value, here = stored[key], current.get(key)
        label = labels[key] if labels is not None else f"data[{key!r}]"
        if key == "root" and here is not None:
            same = Path(str(value)).resolve() == Path(str(here)).resolve()
        elif isinstance(value, Mapping) and isinstance(here, Mapping):
            changed += _mapping_conflicts(label, value, here)
            continue
        else:
            same = here == value
        if not same:
            changed.append(f"{label}={value!r} there, {here!r} here")
    return changed


def _text_conflict(key: str, there: str, here: str) -> str:
    """``key``: what differs between two `describe` texts of a loss or optimizer.

    Their class names when the classes differ, else the settings only one text has
    (``optimizer: lr=0.01 there, lr=0.001 here``), never the whole multi-line reprs.
    """
    parts = [re.split(r"[\n,]", text) for text in (there, here)]
    stored, current = ([p.strip(" ()").replace(": ", "=") for p in part if p.strip(" ()")]
                       for part in parts)  # fmt: skip
    if stored[0] != current[0]:
        return f"{key}: {stored[0]} there, {current[0]} here"
    only_there = " ".join(p for p in stored if p not in current) or "-"
    only_here = " ".join(p for p in current if p not in stored) or "-"
    return f"{key}: {only_there} there, {only_here} here"


def _mapping_conflicts(label: str, stored: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """``label.key=<stored> there, <here> here`` for each key whose value differs."""
    return [
        f"{label}.{key}={stored.get(key)!r} there, {here.get(key)!r} here"
        for key in dict.fromkeys([*stored, *here])
        if stored.get(key) != here.get(key)
    ]


def _known_empty(data: Any) -> bool:
    """Whether ``data`` (a dataset, a sequence or a DataLoader) has a length, and it is 0.

    An iterable-style dataset has no length: it is not known to be empty.
    """
    try:
        return len(data) == 0
    except TypeError:
        return False


def check_components(
    model: nn.Module,
    train_data: Any,
    val_data: Any,
    loss: Any,
    optimizer: Any,
    scheduler: Any,
    prepare_batch: Any,
) -> None:
    """Raise ``ValueError`` for objects the trainer cannot use, saying what it needs instead."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if _known_empty(train_data):
        raise ValueError("train_data is empty")
    if val_data is not None and _known_empty(val_data):
        raise ValueError("val_data is empty (pass val_data=None to train without validation)")
    if isinstance(loss, str):
        raise ValueError(
            f"loss must be a loss object or callable, got the name {loss!r}: build it with "
            f"thyroidseg.training.losses.make_loss({loss!r}) (train_folder and the command "
            "line take names)"
        )
    if not callable(loss):
        raise ValueError(f"loss must be callable (logits, target) -> loss, got {loss!r}")
    if prepare_batch is not None and not callable(prepare_batch):
        raise ValueError(f"prepare_batch must be callable or None, got {prepare_batch!r}")
    if optimizer is not None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"optimizer must be a torch.optim.Optimizer or None, got {optimizer!r} "
                "(train_folder and the command line take names such as 'adamw')"
            )
        own = {id(p) for p in model.parameters()}
        if not any(id(p) in own for group in optimizer.param_groups for p in group["params"]):
            raise ValueError("the optimizer holds none of the model's parameters")
    if scheduler is not None:
        if optimizer is None:
            raise ValueError(
                "a scheduler needs the optimizer it was built on: pass optimizer=... as well"
            )
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ValueError("ReduceLROnPlateau needs a metric in step(); use an epoch schedule")
        if not hasattr(scheduler, "step") or getattr(scheduler, "optimizer", None) is not optimizer:
            raise ValueError(
                "scheduler must be a learning-rate scheduler of the optimizer passed with it"
            )


def ignore_index_of(loss: Any, *datasets: Any) -> int | None:
    """The target value to leave out of validation: the loss's or the datasets' ``ignore_index``."""
    found = {
        int(value)
        for source in (loss, *datasets)
        if (value := getattr(source, "ignore_index", None)) is not None
    }
    if len(found) > 1:
        raise ValueError(
            f"the loss and the datasets disagree on ignore_index ({sorted(found)}): the "
            "pixels the loss leaves out must be those validation leaves out"
        )
    return found.pop() if found else None


def describe(thing: object) -> str:
    """A text equal for equally set-up losses, optimizers or schedulers of two runs."""
    if isinstance(thing, torch.optim.lr_scheduler.LRScheduler):
        settings = {
            key: value
            for key, value in thing.state_dict().items()
            if not key.startswith("_") and key != "last_epoch"
        }
        listed = ", ".join(f"{key}={value!r}" for key, value in sorted(settings.items()))
        return f"{qualified_name(type(thing))}({listed})"
    text = repr(thing)
    if " at 0x" in text:  # a default repr: its memory address differs in every run
        return qualified_name(thing if hasattr(thing, "__qualname__") else type(thing))
    return text


def qualified_name(thing: Any) -> str:
    """``module.QualifiedName`` of a class or function."""
    return f"{thing.__module__}.{thing.__qualname__}"


def check_settings(
    *,
    epochs: int = 50,
    batch_size: int = 8,
    num_workers: int = 0,
    grad_clip: float | None = None,
    early_stopping: int | None = None,
    validation: bool = True,
    device: str | torch.device = "auto",
    amp: AmpMode = "auto",
    sync_batchnorm: bool = False,
) -> None:
    """Raise ``ValueError`` for settings the trainer refuses, before any data is read.

    The arguments are those of `thyroidseg.training.Trainer`, which calls this;
    ``validation`` says whether ``val_data`` is given. `thyroidseg.training.workflows.train_folder`
    calls it before reading the dataset, so ``epochs=0``, ``batch_size=0`` or an unavailable
    ``device="cuda"`` is reported at once.
    """
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    check_int("num_workers", num_workers, 0)
    if grad_clip is not None and not (
        isinstance(grad_clip, int | float) and math.isfinite(grad_clip) and grad_clip > 0
    ):
        raise ValueError(f"grad_clip must be a positive finite number, got {grad_clip!r}")
    if early_stopping is not None:
        if not validation:
            raise ValueError("early_stopping needs val_data (it watches a validation metric)")
        check_int("early_stopping", early_stopping, 1)
    resolved = resolve_device(device)
    resolve_amp(amp, resolved)
    if not isinstance(sync_batchnorm, bool):
        raise TypeError(f"sync_batchnorm must be True or False, got {sync_batchnorm!r}")
    if sync_batchnorm and resolved.type != "cuda":
        raise ValueError(
            f"sync_batchnorm (--sync-batchnorm) needs CUDA devices, not {resolved}: PyTorch's "
            "SyncBatchNorm has no CPU kernels (on the CPU each process normalises its share "
            "of the batch, and rank 0's statistics are kept)"
        )


def check_monitor(
    monitor: object, mode: object, known: Sequence[str], callbacks: Sequence[Callback]
) -> None:
    """Refuse a ``monitor`` that nothing computes and a ``mode`` that is no rule.

    ``monitor`` must be one of ``known`` (the trainer's validation metrics) unless a callback
    overrides ``on_validation_end`` (where it may add one); ``mode`` is ``"max"``, ``"min"``
    or a function ``better(value, best) -> bool``.
    """
    adds_metrics = any(
        type(c).on_validation_end is not Callback.on_validation_end for c in callbacks
    )
    if not isinstance(monitor, str) or (monitor not in known and not adds_metrics):
        raise ValueError(
            f"monitor must be one of {tuple(known)} (or a metric that a callback adds in "
            f"on_validation_end), got {monitor!r}"
        )
    if not (mode in ("max", "min") or (callable(mode) and not isinstance(mode, str))):
        raise ValueError(
            f"mode must be 'max', 'min' or a function better(value, best), got {mode!r}"
        )
