"""The boxes the whole-frame stage finds on frames it never saw: crops for the refine stage.

At inference the refine network is shown a crop around every component the whole-frame
model keeps, wrong objects included (a lobe, another dark structure); trained only on crops
around the annotated nodules, it has never seen one. This runs each fold's whole-frame
model ``STAGE1/foldK/last.pt`` on that fold's validation frames (the grouped folds of
``ddti_cv.py``: ``group_kfold(groups, folds=5, seed=0)``), with flip TTA and hole filling
as the shipped segmenter does before its refine stage, and writes the boxes of the
components of the post-processed masks (`thyroidseg.preprocessing.crops.nodule_boxes`, per
view) as a crop-box file (`thyroidseg.data.crops.write_crop_boxes`). With all five folds,
every frame has boxes from a model that did not train on it:

    python benchmarks/oof_boxes.py --stage1 runs/cv-bc24wc --out runs/oof-boxes.json

``--skip-matched`` leaves out the boxes that overlap an annotated nodule's box (box IoU over
0.5), which the jittered crops around the annotations already cover: what remains are the
wrong objects and the fragments.

Then ``thyroidseg train DATA RUN --stage refine --crop-boxes runs/oof-boxes.json`` (or
``ddti_cv.py --stage refine --crop-boxes ...``) trains on them too. For a CV fold K the
boxes of its training frames come from the other folds' models, which trained on fold K's
validation frames: the boxes (not the labels) of the training crops depend weakly on
them. The file records the boxes only, never an image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from thyroidseg import Segmenter, ThyroidDataset
from thyroidseg.data.crops import write_crop_boxes
from thyroidseg.data.splits import group_kfold
from thyroidseg.models.checkpoint import LAST_CHECKPOINT
from thyroidseg.preprocessing.crops import nodule_boxes
from thyroidseg.preprocessing.geometry import Box


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ddti")
    parser.add_argument("--stage1", required=True, help="run folder of the whole-frame folds")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--skip-matched", action="store_true", help="only the wrong objects")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose another --out")
    dataset = ThyroidDataset(args.data)
    splits = group_kfold(dataset.groups, folds=5, seed=0)
    boxes: dict[str, list[Box]] = {}
    for fold in args.folds:
        segmenter = Segmenter.from_checkpoint(
            Path(args.stage1) / f"fold{fold}" / LAST_CHECKPOINT,
            tta=True,
            fill_holes=True,
            min_probability=0.0,  # the refine stage sees the components before this filter
            quality=False,
            device="cpu",
        )
        for index in splits[fold][1]:
            image, truth = dataset.load_original(int(index))
            prepared = segmenter.prepare(image)
            [(mask, _)] = segmenter.segment_prepared([prepared])
            found = nodule_boxes(mask, prepared.views)
            if args.skip_matched:
                annotated = nodule_boxes(truth, prepared.views)
                found = [b for b in found if max(map(b.iou, annotated), default=0.0) <= 0.5]
            boxes[dataset.names[index]] = found
        print(f"fold {fold}: {len(splits[fold][1])} frames", flush=True)
    source = f"benchmarks/oof_boxes.py --stage1 {args.stage1} --folds {args.folds}" + (
        " --skip-matched" if args.skip_matched else ""
    )
    write_crop_boxes(args.out, boxes, source)
    print(f"{sum(map(len, boxes.values()))} boxes on {len(boxes)} frames: written {args.out}")


if __name__ == "__main__":
    main()
