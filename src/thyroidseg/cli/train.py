"""``thyroidseg train``: its arguments and its runner (the command line is `thyroidseg.cli`).

The one command of the training side: `thyroidseg.cli` imports it like the others, a pair
``add_train(subparsers)`` / ``run_train(args) -> int`` that calls
`thyroidseg.training.workflows.train_folder`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from thyroidseg.cli.options import (
    Renamed,
    add_quiet_option,
    add_size_option,
    add_speed_options,
    add_threads_option,
    default,
    progress,
)
from thyroidseg.models.checkpoint import BEST_CHECKPOINT
from thyroidseg.preprocessing.crops import CropRule
from thyroidseg.training.history import HISTORY_CSV, HISTORY_PNG
from thyroidseg.training.losses import LOSS_NAMES
from thyroidseg.training.workflows import REFINE_RECIPE, SCHEDULE_NAMES, train_folder

__all__ = [
    "add_train",
    "run_train",
]


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
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="run folder (created)")
    parser.add_argument(
        "--out", dest="run_dir_option", action=Renamed, new="RUN_DIR", help=argparse.SUPPRESS
    )
    parser.add_argument("--fold", type=int, default=None, help="validation fold (default: 0)")
    parser.add_argument("--folds", type=int, default=None, help="number of folds (default: 5)")
    parser.add_argument(
        "--all",
        action="store_true",
        help="train on every frame, no validation (not with --fold or --folds)",
    )
    add_size_option(parser, train_folder)
    parser.add_argument(
        "--stage",
        choices=("whole", "refine"),
        default="whole",
        help="whole: the whole-frame network (default); refine: the second stage, trained on "
        "full-resolution crops around the annotated nodules (load it with predict --refine)",
    )
    parser.add_argument("--epochs", type=int, help=f"epochs (default: {_recipe('epochs')})")
    parser.add_argument("--batch-size", type=int, default=8, help="per process (default: 8)")
    parser.add_argument(
        "--loss",
        choices=LOSS_NAMES,
        default=default(train_folder, "loss"),
        help=f"loss (default: {default(train_folder, 'loss')}; weighted_ce is the paper's "
        "border-weighted CE)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=default(train_folder, "lr"),
        help=f"learning rate (default: {default(train_folder, 'lr')})",
    )
    parser.add_argument(
        "--schedule",
        choices=SCHEDULE_NAMES,
        default=default(train_folder, "schedule"),
        help=f"learning-rate schedule (default: {default(train_folder, 'schedule')})",
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
    add_speed_options(parser)
    add_quiet_option(parser)
    add_threads_option(parser)
    parser.set_defaults(run=run_train)


def _recipe(name: str) -> str:
    """The default of a train option for each stage, for its help text."""
    whole, refine = default(train_folder, name), REFINE_RECIPE[name]
    return f"{whole}" if whole == refine else f"{whole}; {refine} with --stage refine"


def _stage_recipe(args: argparse.Namespace) -> dict[str, int]:
    """The epochs, width and stem stride given, else the chosen stage's defaults."""
    whole = {name: default(train_folder, name) for name in REFINE_RECIPE}
    recipe = REFINE_RECIPE if args.stage == "refine" else whole
    return {
        name: recipe[name] if getattr(args, name) is None else getattr(args, name)
        for name in recipe
    }


def run_train(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.run_dir_option is None):
        raise ValueError("give the run folder once: thyroidseg train DATA_DIR RUN_DIR")
    args.out = args.run_dir if args.run_dir is not None else args.run_dir_option
    if args.all and (args.fold is not None or args.folds is not None):
        raise ValueError("--all trains on every frame without validation: drop --fold/--folds")
    trainer = train_folder(
        args.data_dir,
        args.out,
        fold=None if args.all else 0 if args.fold is None else args.fold,
        folds=5 if args.folds is None else args.folds,
        size=tuple(args.size),
        augment=not args.no_augment,
        crops=CropRule() if args.stage == "refine" else None,
        resume=args.resume,
        batch_size=args.batch_size,
        loss=args.loss,
        lr=args.lr,
        schedule=args.schedule,
        early_stopping=args.early_stopping,
        num_workers=args.workers,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        progress=progress(args),
        **_stage_recipe(args),
    )
    if trainer.last_checkpoint is not None:  # only the process that wrote files reports them
        out = Path(args.out)
        best = out / BEST_CHECKPOINT
        if args.all:
            items = "nodule crops" if args.stage == "refine" else "frames"
            print(f"trained on all {len(trainer.train_data)} {items} for {trainer.epoch} epochs")
        elif trainer.best_epoch > 0:
            score, epoch = trainer.best_score, trainer.best_epoch
            print(f"best validation nodule IoU {score:.4f} (epoch {epoch})")
        else:
            print("no epoch had a finite validation nodule IoU, so there is no best.pt")
        listed = [trainer.last_checkpoint] + ([best] if trainer.best_epoch > 0 else [])
        print(f"checkpoints: {', '.join(map(str, listed))}")
        print(f"history: {out / HISTORY_CSV} and {out / HISTORY_PNG}")
    return 0
