"""Checkpoint files: the format, atomic saving, safe loading and the random-number state.

A checkpoint is a ``dict`` of tensors and plain Python values whose ``"format"`` key is
`CHECKPOINT_FORMAT`. `thyroidseg.training.Trainer` writes ``last.pt`` every epoch and
``best.pt`` on improvement through `save_checkpoint` (temporary file + rename, so a crash
leaves the old or the new file, never a truncated one), and reads them back with
`load_checkpoint` (``torch.load(weights_only=True)``: opening a file cannot run code).
`rng_state` and `restore_rng_state` carry the Python, NumPy and PyTorch generators, so a
resumed run continues exactly.
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thyroidseg._io import PathLike, atomic_write_bytes

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "LAST_CHECKPOINT",
    "load_checkpoint",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "thyroidseg-checkpoint/1"
"""Value of the ``"format"`` key of every checkpoint thyroidseg writes."""

LAST_CHECKPOINT = "last.pt"
"""File name of the checkpoint written after every epoch."""
BEST_CHECKPOINT = "best.pt"
"""File name of the checkpoint of the best validation epoch."""


def save_checkpoint(path: PathLike, checkpoint: Mapping[str, Any]) -> Path:
    """Write ``checkpoint`` (tensors and plain Python values only) atomically to ``path``.

    The file is serialised in memory, written to a temporary file in the same folder and
    renamed over ``path``: a crash at any moment leaves either the old or the new file.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_checkpoint(path: PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `thyroidseg.training.Trainer`, safely.

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


def rng_state() -> dict[str, Any]:
    """The global Python, NumPy, PyTorch and CUDA generator states, as checkpoint values.

    Only tensors, lists and numbers, so `load_checkpoint` can read them back.
    """
    numpy_state = np.random.get_state()  # noqa: NPY002 (saved on purpose)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": list(random.getstate()),
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the global generators to a `rng_state` (CUDA only where it was saved and exists)."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
