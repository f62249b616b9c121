"""Merge the result files of one cross-validation run made in parts (disjoint folds).

A run screened on some folds and confirmed on the others leaves several ``ddti_cv.py``
files; this writes one, folds in order, with the merged confusion matrix and the paper's
style of numbers recomputed, and prints the per-fold table of the model card:

    python benchmarks/merge_cv.py OUT.json screen.json confirm.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ddti_cv import paper_style

from thyroidseg.io.files import atomic_write_bytes
from thyroidseg.io.outputs import check_outputs
from thyroidseg.metrics import ConfusionMatrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the merged file (refused if it exists)")
    parser.add_argument("parts", type=Path, nargs="+", help="ddti_cv.py result files")
    args = parser.parse_args()
    check_outputs([args.out], inputs=args.parts)
    runs = [json.loads(path.read_text()) for path in args.parts]
    if len({(run["args"]["folds"], run["args"]["seed"]) for run in runs}) > 1:
        raise SystemExit("the parts used different splits (--folds/--seed): not one run")
    blocks = []
    for run in runs:
        matrices, start = np.asarray(run["per_image_matrices"], dtype=np.int64), 0
        for fold in run["folds"]:
            blocks.append((fold, matrices[start : start + fold["images"]]))
            start += fold["images"]
    blocks.sort(key=lambda block: block[0]["fold"])
    if len({fold["fold"] for fold, _ in blocks}) < len(blocks):
        raise SystemExit("a fold is in two of the parts")
    total = ConfusionMatrix.from_matrices(np.concatenate([matrices for _, matrices in blocks]))
    style = paper_style(total)
    merged_args = {**runs[0]["args"], "only": [fold["fold"] for fold, _ in blocks]}
    result = {
        "args": {**merged_args, "merged_from": [str(path) for path in args.parts]},
        "folds": [fold for fold, _ in blocks],
        "paper_style": style,
        **total.to_dict(),
    }
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())
    print("| fold | frames | training (s) | nodule IoU per image [95% CI] | nodule IoU pooled |")
    print("|---|---|---|---|---|")
    for fold, matrices in blocks:
        part = ConfusionMatrix.from_matrices(matrices)
        iou = part.summary("iou", cls=1)
        print(
            f"| {fold['fold']} | {fold['images']} | {fold['train_seconds']:.0f} | "
            f"{iou.mean:.3f} [{iou.ci_low:.3f}, {iou.ci_high:.3f}] | {part.iou()[1]:.3f} |"
        )
    iou, dice = total.summary("iou", cls=1), total.summary("dice", cls=1)
    print(
        f"| **all** | **{len(total.per_image('iou', cls=1))}** | | **{iou.mean:.3f} "
        f"[{iou.ci_low:.3f}, {iou.ci_high:.3f}]**, Dice {dice.mean:.3f} "
        f"[{dice.ci_low:.3f}, {dice.ci_high:.3f}] | {total.iou()[1]:.3f} |"
    )
    print("paper-style:", json.dumps(style))


if __name__ == "__main__":
    main()
