"""A run's folder: the files a `thyroidseg.training.Trainer` writes into its ``out_dir``.

`RUN_FILES` are ``last.pt`` and ``best.pt`` (`thyroidseg.models.checkpoint`) and the history
(`thyroidseg.training.history`). A new run refuses a folder that holds another run's
(`refuse_other_run`); a run, new or resumed, first clears what a killed run left
(`prepare_out_dir`), then writes its checkpoints after every epoch, ``best.pt`` before
``last.pt`` (`write_checkpoints`). docs/training.md says why.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thyroidseg._checks import PathLike
from thyroidseg.models.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    prepare_run_folder,
    save_checkpoint,
)
from thyroidseg.training.history import HISTORY_CSV, HISTORY_PNG

__all__ = ["RUN_FILES", "prepare_out_dir", "refuse_other_run", "write_checkpoints"]

RUN_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, HISTORY_CSV, HISTORY_PNG)
"""The files a `Trainer` writes into its ``out_dir``."""


def refuse_other_run(out_dir: PathLike) -> None:
    """Raise ``FileExistsError`` if ``out_dir`` holds any of `RUN_FILES` (another run's).

    A new run never replaces another run's checkpoints or history, even when only a
    ``best.pt`` or a ``history.csv`` is left there.
    """
    existing = [Path(out_dir) / name for name in RUN_FILES]
    existing = [path for path in existing if path.exists()]
    if existing:
        raise FileExistsError(
            f"{out_dir} holds another run's files ({', '.join(map(str, existing))}): pass "
            "resume (--resume) to continue that run, or choose another folder"
        )


def prepare_out_dir(out_dir: Path, *, resuming: bool) -> None:
    """Make ``out_dir`` ready for a run: another run's files refused unless ``resuming``,
    then `thyroidseg.models.checkpoint.prepare_run_folder` (the folder can be written; the
    temporary files a killed run left are removed, with a warning that names them)."""
    if not resuming:
        refuse_other_run(out_dir)
    removed = prepare_run_folder(out_dir, RUN_FILES)
    if removed:
        warnings.warn(
            f"{out_dir}: removed {len(removed)} temporary file(s) left by an "
            f"interrupted run: {', '.join(p.name for p in removed)}",
            stacklevel=4,
        )


def write_checkpoints(out_dir: Path, checkpoint: Mapping[str, Any], *, improved: bool) -> Path:
    """Write ``last.pt`` (and first ``best.pt`` when the epoch ``improved``); returns
    ``last.pt``'s path. ``best.pt`` first, so ``last.pt`` never records a best epoch that
    ``best.pt`` lacks."""
    if improved:
        save_checkpoint(out_dir / BEST_CHECKPOINT, checkpoint)
    return save_checkpoint(out_dir / LAST_CHECKPOINT, checkpoint)
