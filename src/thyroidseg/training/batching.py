"""Batches: dataset items stacked into one dict, then prepared for the model and the loss.

`collate` is the ``collate_fn`` of the `thyroidseg.training.Trainer`'s data loaders: every
tensor (or array) entry of the items is stacked along a new first dimension, every other
entry (names, metadata) becomes a list, so extra entries such as a precomputed
``"weight_map"`` survive batching. A ``prepare_batch`` hook (`PrepareBatch`, by default
`default_prepare_batch`) then turns a batch into ``(inputs, target, loss_kwargs)``: the
model's input, the class-index target, and keyword arguments for the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Subset

from thyroidseg.training.distributed import DistContext

__all__ = [
    "BATCH_HOOKS",
    "PrepareBatch",
    "collate",
    "default_prepare_batch",
    "evaluation_loader",
    "hook_name",
    "training_loader",
]

PrepareBatch = Callable[
    [Mapping[str, Any], torch.device, torch.memory_format],
    tuple[Tensor, Tensor, Mapping[str, Any]],
]
"""``prepare_batch(batch, device, memory_format) -> (inputs, target, loss_kwargs)``."""


def collate(items: Sequence[Any]) -> dict[str, Any]:
    """Batch dataset items: tensor and array entries stacked, other entries as lists."""
    first = items[0]
    for item in items:
        if not isinstance(item, Mapping) or "image" not in item or "mask" not in item:
            raise ValueError(
                "each dataset item must be a dict with 'image' (C, H, W) and 'mask' (H, W); "
                f"got {type(item).__name__}"
            )
        if item.keys() != first.keys():
            raise ValueError(
                f"dataset items have different keys: {sorted(first)} and {sorted(item)}"
            )
    batch: dict[str, Any] = {}
    for key in first:
        values = [item[key] for item in items]
        if all(isinstance(value, Tensor | np.ndarray) for value in values):
            try:
                batch[key] = torch.stack([torch.as_tensor(value) for value in values])
            except RuntimeError as error:
                shapes = sorted({tuple(value.shape) for value in values})
                raise ValueError(
                    f"cannot batch the items' {key!r}: shapes differ ({shapes})"
                ) from error
        else:
            batch[key] = values
    return batch


def default_prepare_batch(
    batch: Mapping[str, Any], device: torch.device, memory_format: torch.memory_format
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The default ``prepare_batch`` of `thyroidseg.training.Trainer`: image, mask, weight map.

    Parameters
    ----------
    batch
        A collated batch: every tensor (or array) entry of the dataset items stacked along a
        new first dimension (``"image"`` ``(N, C, H, W)``, ``"mask"`` ``(N, H, W)``...),
        every other entry (names, metadata) as a list of the items' values.
    device, memory_format
        Where the model runs and its memory format (channels-last by default).

    Returns
    -------
    inputs
        ``batch["image"]`` as float32 on ``device`` in ``memory_format``.
    target
        ``batch["mask"]`` as int64 class indices on ``device``.
    loss_kwargs
        ``{"weight_map": batch["weight_map"]}`` (float32 on ``device``) when the items
        carry a ``"weight_map"`` (the keyword of
        `thyroidseg.training.losses.WeightedCrossEntropyLoss`), else ``{}``. Other keys are not
        passed to the loss: write your own ``prepare_batch`` for them.
    """
    inputs = batch["image"].to(device, non_blocking=True).float()
    target = batch["mask"].to(device, non_blocking=True).long()
    loss_kwargs = {}
    if "weight_map" in batch:
        loss_kwargs["weight_map"] = batch["weight_map"].to(device, non_blocking=True).float()
    return inputs.contiguous(memory_format=memory_format), target, loss_kwargs


BATCH_HOOKS: dict[str, PrepareBatch] = {"default": default_prepare_batch}
"""Registered name -> a ``prepare_batch`` hook; checkpoints record hooks by these names."""


def hook_name(hook: PrepareBatch) -> str | None:
    """The registered name of a ``prepare_batch`` hook; ``None`` for one not registered."""
    for name, registered in BATCH_HOOKS.items():
        if hook is registered:
            return name
    return None


def training_loader(
    data: Any,
    dist: DistContext,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    seed: int,
    generator: torch.Generator,
) -> tuple[Any, Any]:
    """The `thyroidseg.training.Trainer`'s training loader and its sampler.

    A `DataLoader` given by the caller is used as it is (its own sampler, or ``None``);
    a dataset gets a `DistributedSampler` (also with one process: shuffled with ``seed``
    and the epoch, so a resumed run draws the same order), `collate`, and ``generator``
    for the workers' seeds. A last batch of one item is dropped (a different item each
    epoch): batch normalisation cannot train on a single sample.
    """
    if isinstance(data, DataLoader):
        return data, getattr(data, "sampler", None)
    sampler: DistributedSampler[Any] = DistributedSampler(
        data, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed
    )
    share = len(sampler)  # items per process
    loader = DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=share > 1 and share % batch_size == 1,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        generator=generator,
    )
    return loader, sampler


def evaluation_loader(
    data: Any, dist: DistContext, *, batch_size: int, num_workers: int, device: torch.device
) -> Any:
    """The loader over ``data`` for validation: a caller's `DataLoader` as it is, else in order.

    Under ``torchrun`` every process takes every ``world_size``-th item (no padding, so no
    item counts twice).
    """
    if isinstance(data, DataLoader):
        return data
    share = data
    if dist.world_size > 1:
        share = Subset(data, range(dist.rank, len(data), dist.world_size))
    return DataLoader(
        share,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )


def _data_order(count: int, world_size: int) -> np.ndarray:
    """Indices that put the shares gathered from ``world_size`` processes back in data order.

    Rank ``r`` counts items ``r, r + W, r + 2W, ...`` (`evaluation_loader`); gathered in rank
    order, item ``i`` sits at ``argsort(concatenate(shares))[i]``.
    """
    shares = [np.arange(rank, count, world_size) for rank in range(world_size)]
    return np.argsort(np.concatenate(shares), kind="stable")
