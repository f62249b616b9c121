"""The parsers of the training-side commands, ``thyroidseg train`` and ``thyroidseg demo``.

They import no training code, so that ``import thyroidseg.cli`` and the other commands load
none: the library defaults and choices they show are light copies here (`TRAIN_SIZE`,
`TRAIN_DEFAULTS`, `WHOLE_RECIPE`, `REFINE_RECIPE`, `LOSS_CHOICES`, `SCHEDULE_CHOICES`,
`DEMO_SIZE`), which ``tests/test_api.py`` checks against `thyroidseg.training`. Their runners are
`thyroidseg.cli.run_training`'s, imported by `thyroidseg.cli.main` when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from thyroidseg.cli.options import (
    add_quiet_option,
    add_size_option,
    add_speed_options,
    add_threads_option,
)

__all__ = [
    "DEMO_SIZE",
    "LOSS_CHOICES",
    "REFINE_RECIPE",
    "SCHEDULE_CHOICES",
    "TRAIN_DEFAULTS",
    "TRAIN_SIZE",
    "WHOLE_RECIPE",
    "add_demo",
    "add_train",
]

TRAIN_SIZE: tuple[int, int] = (128, 128)
"""`thyroidseg.training.workflows.train_folder`'s ``size``."""

TRAIN_DEFAULTS: dict[str, object] = {"loss": "dice_ce", "lr": 0.002, "schedule": "warmup_cosine"}
"""`thyroidseg.training.workflows.train_folder`'s ``loss``, ``lr`` and ``schedule``."""

WHOLE_RECIPE: dict[str, int] = {"epochs": 80, "base_channels": 24, "stem_stride": 2}
"""`thyroidseg.training.workflows.train_folder`'s epochs, width and stem stride."""

REFINE_RECIPE: dict[str, int] = {"epochs": 80, "base_channels": 12, "stem_stride": 1}
"""`thyroidseg.training.workflows.REFINE_RECIPE`: the ``--stage refine`` defaults."""

LOSS_CHOICES: tuple[str, ...] = ("ce", "weighted_ce", "dice", "dice_ce", "dice_ce_boundary")
"""`thyroidseg.training.losses.LOSS_NAMES`."""

SCHEDULE_CHOICES: tuple[str, ...] = ("cosine", "warmup_cosine", "poly", "constant")
"""`thyroidseg.training.workflows.SCHEDULE_NAMES`."""

DEMO_SIZE: tuple[int, int] = (128, 128)
"""`thyroidseg.training.demo.run_demo`'s ``size``."""


def add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a U-Net on a dataset folder (one cross-validation fold, or --all)",
        description="Read DATA_DIR (any layout ThyroidDataset detects), split it into --folds "
        "folds by leak group, train a U-Net on all folds but --fold and validate on --fold "
        "every epoch. RUN_DIR receives last.pt, best.pt (by per-image validation nodule "
        "IoU), history.csv and history.png. With --all, train on every frame for the whole "
        "schedule without validation (how the shipped model is made; only last.pt). Every "
        "setting is checked before the data is read; --resume refuses settings that would "
        "change the run. Under torchrun, trains with DistributedDataParallel.",
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", help="dataset folder")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder (created)")
    parser.add_argument("--fold", type=int, default=None, help="validation fold (default: 0)")
    parser.add_argument("--folds", type=int, default=None, help="number of folds (default: 5)")
    parser.add_argument(
        "--all",
        action="store_true",
        help="train on every frame, no validation (not with --fold or --folds)",
    )
    add_size_option(parser, TRAIN_SIZE)
    parser.add_argument(
        "--stage",
        choices=("whole", "refine"),
        default="whole",
        help="whole: the whole-frame network (default); refine: the second stage, trained on "
        "full-resolution crops around the annotated nodules (load it with predict --refine)",
    )
    parser.add_argument(
        "--crop-boxes",
        metavar="FILE",
        help="--stage refine: also crop around these boxes, found by a whole-frame model on "
        "frames it never saw (a crop-box file, benchmarks/oof_boxes.py)",
    )
    parser.add_argument("--epochs", type=int, help=f"epochs (default: {_recipe('epochs')})")
    parser.add_argument("--batch-size", type=int, default=8, help="per process (default: 8)")
    parser.add_argument(
        "--loss",
        choices=LOSS_CHOICES,
        default=TRAIN_DEFAULTS["loss"],
        help=f"loss (default: {TRAIN_DEFAULTS['loss']}; weighted_ce is the paper's "
        "border-weighted CE)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=TRAIN_DEFAULTS["lr"],
        help=f"learning rate (default: {TRAIN_DEFAULTS['lr']})",
    )
    parser.add_argument(
        "--schedule",
        choices=SCHEDULE_CHOICES,
        default=TRAIN_DEFAULTS["schedule"],
        help=f"learning-rate schedule (default: {TRAIN_DEFAULTS['schedule']})",
    )
    parser.add_argument(
        "--base-channels", type=int, help=f"U-Net width (default: {_recipe('base_channels')})"
    )
    parser.add_argument(
        "--stem-stride",
        type=int,
        choices=(1, 2),
        help="2: the U-Net's first stage at half resolution, ~3x cheaper than 1 (default: "
        f"{_recipe('stem_stride')})",
    )
    parser.add_argument(
        "--deep-supervision",
        type=int,
        default=0,
        metavar="S",
        help="also supervise the S decoder levels below the last through 1x1 heads, with "
        "nnU-Net's weights 1, 1/2, 1/4... (training only: the checkpoint predicts as without "
        "them; default: 0, none; at most the depth - 1 = 3)",
    )
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument(
        "--early-stopping",
        type=int,
        default=None,
        metavar="EPOCHS",
        help="stop after this many epochs without a better validation IoU",
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    parser.add_argument(
        "--sync-batchnorm",
        action="store_true",
        help="under torchrun on GPUs, BatchNorm statistics over the whole batch of every "
        "process (SyncBatchNorm; default: each process's share)",
    )
    add_speed_options(parser)
    add_quiet_option(parser)
    add_threads_option(parser)


def _recipe(name: str) -> str:
    """The default of a train option for each stage, for its help text."""
    whole, refine = WHOLE_RECIPE[name], REFINE_RECIPE[name]
    return f"{whole}" if whole == refine else f"{whole}; {refine} with --stage refine"


def _stage_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The epochs, width and stem stride given, else the chosen stage's defaults."""
    recipe = REFINE_RECIPE if args.stage == "refine" else WHOLE_RECIPE
    return {
        name: recipe[name] if getattr(args, name) is None else getattr(args, name)
        for name in recipe
    }


def add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on synthetic phantoms (or --data) in a few minutes",
        description="Write synthetic ultrasound phantoms, preprocess them, train a small U-Net, "
        "segment the held-out test frames at their original size, print the metrics report "
        "and write overlay pictures (prediction red, truth green). With --data DIR, use a real "
        "dataset folder instead of phantoms.",
    )
    parser.add_argument(
        "--out", default="thyroidseg-demo", help="output folder (default: thyroidseg-demo)"
    )
    parser.add_argument("--data", metavar="DIR", help="dataset folder to use instead of phantoms")
    parser.add_argument("--images", type=int, default=96, help="phantoms to make (default: 96)")
    parser.add_argument("--epochs", type=int, default=25, help="epochs (default: 25)")
    add_size_option(parser, DEMO_SIZE)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_speed_options(parser)
    add_quiet_option(parser)
    add_threads_option(parser)
