"""Grouped k-fold cross-validation of the default pipeline on real DDTI frames.

Every fold trains with ``thyroidseg.training.workflows.train_folder`` (the code behind
``thyroidseg train``: split by leak group, augmentation, the default UNet), then segments
its validation frames with ``Segmenter.from_checkpoint(last.pt)`` (see ``--checkpoint``) at
their ORIGINAL size and counts them against the original masks. Each frame is validated
exactly once, so the merged confusion matrix covers the whole folder without leakage.

Besides the nodule IoU / Dice (per image and pooled) it prints the paper's style of
numbers from the same matrix (pixel accuracy, mIoU and macro-F1 with background), to show
how much the background inflates them.

    python benchmarks/ddti_cv.py --data ../shared/data/ddti --out runs/ddti-cv \
        --folds 5 --size 128 --epochs 40

``--checkpoint last`` (default) scores each fold's model after its fixed schedule, the way
the shipped model is trained; ``--checkpoint best`` scores the epoch with the best validation
IoU, which is selected on the validation fold itself and flatters the numbers slightly.

``--score-only`` trains nothing: it re-scores the fold checkpoints already in ``--out`` with
other inference settings (``--tta``, ``--fill-holes``, ``--min-area``) and writes
``cv-TAG.json``, so that two inference recipes are compared image by image on the same
models with ``compare_cv.py``:

    python benchmarks/ddti_cv.py --out runs/ddti-cv --score-only --tta --tag tta

``--stage refine --stage1 RUN`` cross-validates a refine (stage 2) network instead: each
fold trains ``train_folder(crops=CropRule(**CROPS))`` on the fold's training frames and is
scored behind the whole-frame model of the same fold, ``RUN/foldK/last.pt`` (trained by an
earlier run of this script with the same ``--folds`` and ``--seed``), so that
``compare_cv.py`` against that run's scores gives what stage 2 adds, image by image:

    python benchmarks/ddti_cv.py --stage refine --stage1 runs/cv-bc24wc --out runs/cv-refine \
        --epochs 40 --lr 2e-3 --schedule warmup_cosine --tta --fill-holes

``--stage1 RUN RUN ...`` scores behind the ensemble of several runs' whole-frame fold models
(the mean of their probabilities), and ``--model-seed S`` (with ``--unet``) seeds the weights
and the augmentation with ``S`` but keeps the split of ``--seed``, so that runs which differ
only in their seed make such an ensemble, each fold's members validated on the same frames::

    python benchmarks/ddti_cv.py --out runs/cv-bc24-seed1 --model-seed 1 --unet \
        '{"stem_stride": 2, "base_channels": 24}' ...
    python benchmarks/ddti_cv.py --stage refine --stage1 runs/cv-bc24wc runs/cv-bc24-seed1 \
        --out runs/cv-r12s1-ens --score-only ...

``--loss NAME --loss-kwargs JSON`` trains with ``make_loss(NAME, **JSON)``, e.g.
``--loss dice_ce_boundary --loss-kwargs '{"boundary_weight": 10}'``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from thyroidseg import Augment, ConfusionMatrix, Segmenter, ThyroidDataset, UNet
from thyroidseg.data.splits import group_kfold
from thyroidseg.inference.refine import WHOLE_WEIGHT, Refiner
from thyroidseg.io.files import atomic_write_bytes
from thyroidseg.models.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, half_precision
from thyroidseg.preprocessing.crops import CropRule
from thyroidseg.training.losses import make_loss
from thyroidseg.training.workflows import SCHEDULE_NAMES, train_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ddti")
    parser.add_argument("--out", default="runs/ddti-cv")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", type=int, nargs="*", help="run only these folds")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument(
        "--unet",
        type=json.loads,
        default=None,
        metavar="JSON",
        help='UNet keyword arguments instead of the default model, e.g. \'{"base_channels": 32, '
        '"downsample": "maxpool", "residual": false}\' (the plain U-Net)',
    )
    parser.add_argument(
        "--augment",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="Augment keyword arguments instead of its defaults, e.g. '{\"rotate\": 15}'",
    )
    parser.add_argument("--stage", choices=("whole", "refine"), default="whole")
    parser.add_argument(
        "--stage1", nargs="+", help="run folder(s) of the whole-frame fold models (refine)"
    )
    parser.add_argument(
        "--crops", type=json.loads, default={}, metavar="JSON", help="CropRule keyword arguments"
    )
    parser.add_argument(
        "--crop-boxes",
        default=None,
        help="refine: also crop the training frames around these boxes (oof_boxes.py's file)",
    )
    parser.add_argument(
        "--whole-weight",
        type=float,
        default=WHOLE_WEIGHT,
        help=f"Refiner.whole_weight at scoring (default {WHOLE_WEIGHT})",
    )
    parser.add_argument("--loss", default="dice_ce", help="a make_loss name (default dice_ce)")
    parser.add_argument(
        "--loss-kwargs",
        type=json.loads,
        default={},
        metavar="JSON",
        help="""make_loss keyword arguments, e.g. '{"boundary_weight": 10}'""",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", choices=SCHEDULE_NAMES, default="cosine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model-seed", type=int, help="seed of the weights and augmentation (default --seed)"
    )
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last")
    parser.add_argument("--tta", action="store_true", help="left-right flip test-time augmentation")
    parser.add_argument("--fill-holes", action="store_true")
    parser.add_argument("--min-area", type=int, default=0)
    parser.add_argument(
        "--half-weights",
        action="store_true",
        help="score with every weight rounded to float16, as package_model.py --half stores it",
    )
    parser.add_argument("--score-only", action="store_true", help="re-score the trained folds")
    parser.add_argument("--tag", default=None, help="write cv-TAG.json instead of cv.json")
    parser.add_argument(
        "--resume", action="store_true", help="continue the folds whose last.pt exists"
    )
    args = parser.parse_args()
    if (args.stage == "refine") != (args.stage1 is not None):
        parser.error("--stage1 RUN goes with --stage refine, and only with it")
    if args.model_seed is not None and args.unet is None:
        parser.error("--model-seed needs --unet (the model it seeds)")
    model_seed = args.seed if args.model_seed is None else args.model_seed

    out = Path(args.out)
    checkpoint = LAST_CHECKPOINT if args.checkpoint == "last" else BEST_CHECKPOINT
    trained = json.loads((out / "cv.json").read_text())["folds"] if args.score_only else []
    dataset = ThyroidDataset(args.data, size=tuple(args.size)) if args.score_only else None
    splits = group_kfold(dataset.groups, folds=args.folds, seed=args.seed) if dataset else []
    total = ConfusionMatrix(2)
    rows = []
    for fold in args.only if args.only is not None else range(args.folds):
        start = time.perf_counter()
        if dataset is not None:
            val = dataset.subset(splits[fold][1])
            train_seconds = next(r["train_seconds"] for r in trained if r["fold"] == fold)
        else:
            val = _train(args, out / f"fold{fold}", fold, model_seed)
            train_seconds = time.perf_counter() - start
        trained_here = out / f"fold{fold}" / checkpoint
        refine = args.stage1 is not None
        stage1 = [Path(run) / f"fold{fold}" / LAST_CHECKPOINT for run in args.stage1 or []]
        segmenter = Segmenter.from_checkpoint(
            (stage1 if len(stage1) > 1 else stage1[0]) if refine else trained_here,
            refine=Refiner.from_checkpoint(trained_here, whole_weight=args.whole_weight)
            if refine
            else None,
            tta=args.tta,
            fill_holes=args.fill_holes,
            min_area=args.min_area,
            threads=None,  # the run's thread count, as in training
        )
        if args.half_weights:
            for network in _networks(segmenter):
                network.load_state_dict(half_precision(network.state_dict()))
        fold_matrix = ConfusionMatrix(2)
        for i in range(len(val)):
            image, mask = val.load_original(i)
            fold_matrix.update(segmenter.predict(image), mask)
        total = total + fold_matrix
        summary = fold_matrix.summary("iou", cls=1)
        rows.append(
            {
                "fold": fold,
                "images": len(val),
                "stems": list(val.names),
                "train_seconds": round(train_seconds, 1),
                "per_image_iou": summary.mean,
                "pooled_iou": float(fold_matrix.iou()[1]),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    print(total.report())
    style = paper_style(total)
    print("paper-style numbers from the same matrix:", json.dumps(style, indent=1))
    result = {"args": vars(args), "folds": rows, "paper_style": style, **total.to_dict()}
    name = "cv.json" if args.tag is None else f"cv-{args.tag}.json"
    atomic_write_bytes(out / name, json.dumps(result, indent=1).encode())
    print(f"written {out / name}")


def paper_style(total: ConfusionMatrix) -> dict[str, float]:
    """The paper's style of numbers (with background) beside the nodule's, from one matrix."""
    return {
        "pixel_accuracy": total.pixel_accuracy(),
        "mean_iou_with_background": total.mean_iou(include_background=True),
        "macro_f1_with_background": total.mean_dice(include_background=True),
        "nodule_iou_pooled": float(total.iou()[1]),
        "nodule_dice_pooled": float(total.dice()[1]),
    }


def _networks(segmenter: Segmenter) -> list[torch.nn.Module]:
    """The whole-frame network and, behind it, the refine network."""
    refiner = segmenter.refiner
    return [segmenter.model] + ([refiner.model] if isinstance(refiner, Refiner) else [])


def _train(args: argparse.Namespace, run_dir: Path, fold: int, model_seed: int) -> ThyroidDataset:
    """Train fold ``fold`` as ``thyroidseg train`` does; return its validation subset."""
    trainer = train_folder(
        args.data,
        run_dir,
        fold=fold,
        folds=args.folds,
        size=tuple(args.size),
        base_channels=args.base_channels,
        model=UNet(**args.unet, seed=model_seed) if args.unet is not None else None,
        augment=Augment(**(args.augment or {}), seed=model_seed),  # default: train_folder's
        crops=CropRule(**args.crops) if args.stage == "refine" else None,
        crop_boxes=args.crop_boxes,
        epochs=args.epochs,
        loss=make_loss(args.loss, **args.loss_kwargs),
        lr=args.lr,
        schedule=args.schedule,
        seed=args.seed,
        resume=args.resume and (run_dir / LAST_CHECKPOINT).is_file(),
    )
    return getattr(trainer.val_data, "dataset", trainer.val_data)  # a CropDataset's frames


if __name__ == "__main__":
    main()
