"""The runners of the training-side commands, ``thyroidseg train`` and ``thyroidseg demo``.

`thyroidseg.cli.main` imports this module only when one of them runs (their parsers are
`thyroidseg.cli.train`'s), so no other command loads the training code.
"""

from __future__ import annotations

import argparse
from collections.abc import Sized
from pathlib import Path
from typing import cast

import thyroidseg.training.demo as demo
import thyroidseg.training.workflows as workflows
from thyroidseg.cli.options import progress
from thyroidseg.cli.train import _stage_recipe
from thyroidseg.models.checkpoint import BEST_CHECKPOINT
from thyroidseg.preprocessing.crops import CropRule
from thyroidseg.training.history import HISTORY_CSV, HISTORY_PNG

__all__ = ["run_demo", "run_train"]


def run_train(args: argparse.Namespace) -> int:
    if args.all and (args.fold is not None or args.folds is not None):
        raise ValueError("--all trains on every frame without validation: drop --fold/--folds")
    trainer = workflows.train_folder(
        args.data_dir,
        args.run_dir,
        fold=None if args.all else 0 if args.fold is None else args.fold,
        folds=5 if args.folds is None else args.folds,
        size=tuple(args.size),
        augment=not args.no_augment,
        crops=CropRule() if args.stage == "refine" else None,
        crop_boxes=args.crop_boxes,
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
        sync_batchnorm=args.sync_batchnorm,
        deep_supervision=args.deep_supervision,
        **_stage_recipe(args),
    )
    if trainer.last_checkpoint is not None:  # only the process that wrote files reports them
        out = Path(args.run_dir)
        best = out / BEST_CHECKPOINT
        if args.all:
            items = "nodule crops" if args.stage == "refine" else "frames"
            n = len(cast(Sized, trainer.train_data))  # torch's Dataset stub has no __len__
            print(f"trained on all {n} {items} for {trainer.epoch} epochs")
        elif trainer.best_epoch > 0:
            score, epoch = trainer.best_score, trainer.best_epoch
            print(f"best validation nodule IoU {score:.4f} (epoch {epoch})")
        else:
            print("no epoch had a finite validation nodule IoU, so there is no best.pt")
        listed = [trainer.last_checkpoint] + ([best] if trainer.best_epoch > 0 else [])
        print(f"checkpoints: {', '.join(map(str, listed))}")
        print(f"history: {out / HISTORY_CSV} and {out / HISTORY_PNG}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    result = demo.run_demo(
        args.out,
        data=args.data,
        n_images=args.images,
        size=tuple(args.size),
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        progress=progress(args),
    )
    print(result.metrics.report())
    print()
    print(f"data: {result.data_dir}")
    print(f"checkpoints and training curves: {result.run_dir}")
    print(f"test metrics: {Path(args.out) / 'metrics.json'}")
    print(f"overlays (prediction red, truth green): {Path(args.out) / 'overlays'}")
    return 0
