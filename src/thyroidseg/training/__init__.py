"""Training: `Trainer`, whole runs by name, losses, checkpoints of a run, DDP.

- `thyroidseg.training.trainer`: `Trainer` (re-exported here with the rest of its
  ``__all__``);
- `thyroidseg.training.workflows`: `train_folder`, the optimizer and schedule names,
  `REFINE_RECIPE`;
- `thyroidseg.training.demo`: `run_demo` (``thyroidseg demo``);
- `thyroidseg.training.callbacks`: the events of a run (`Callback`), `EarlyStopping`,
  `HistoryWriter`;
- `thyroidseg.training.losses`, `thyroidseg.training.checks`, `thyroidseg.training.batching`,
  `thyroidseg.training.distributed`, `thyroidseg.training.history`,
  `thyroidseg.training.divergence`: its parts.

May import every other subpackage; nothing outside the command line imports it.
"""

from thyroidseg.training.trainer import (
    MONITORS,
    RUN_FILES,
    LossFn,
    Monitor,
    MonitorMode,
    Trainer,
    refuse_other_run,
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
