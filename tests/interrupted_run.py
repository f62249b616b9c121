"""A small training run that a test kills, as ``kill -9`` would, inside a checkpoint write.

``python tests/interrupted_run.py OUT_DIR NAME N THREADS`` trains `make_trainer` in ``OUT_DIR``
with ``THREADS`` PyTorch threads and ends the process with ``os._exit(137)`` at the ``N``-th
rename onto ``OUT_DIR/NAME`` (``best.pt`` or ``last.pt``): the temporary file is written but
not yet in place, the moment a kill leaves the most behind. The tests import `make_trainer`
to resume the run and to train it uninterrupted for comparison.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

from thyroidseg.training import Trainer
from tiny_models import squares


def make_trainer(out_dir: Path, epochs: int = 4) -> Trainer:
    """The same small run every time: one convolution, AdamW, validation every epoch.

    Its validation IoU improves in each of the first epochs, so ``best.pt`` is rewritten.
    """
    torch.manual_seed(0)
    model = nn.Conv2d(1, 2, 3, padding=1)
    return Trainer(
        model,
        squares(8, seed=0, background=-0.8, square=0.8, noise=0.4),
        squares(4, seed=1, background=-0.8, square=0.8, noise=0.4),
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.AdamW(model.parameters(), lr=0.01),
        epochs=epochs,
        batch_size=2,
        amp="off",
        progress=False,
        seed=0,
        out_dir=out_dir,
    )


def _die_at_rename(name: str, nth: int) -> None:
    real_replace = os.replace
    renames = []

    def replace(source: str, target: str) -> None:
        if os.path.basename(target) == name:
            renames.append(target)
            if len(renames) == nth:
                os._exit(137)
        real_replace(source, target)

    os.replace = replace


if __name__ == "__main__":
    out, target, count, threads = sys.argv[1:5]
    torch.set_num_threads(int(threads))
    _die_at_rename(target, int(count))
    make_trainer(Path(out)).fit()
