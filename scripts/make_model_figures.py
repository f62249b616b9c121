"""Make the model card's pictures from a cross-validation run on real DDTI frames.

Every frame is segmented by the fold model that never saw it (``RUN/fold<k>/last.pt``), with
the inference settings of the ``cv.json`` given; for a refine run (``ddti_cv.py --stage
refine``) by the whole-frame fold model of its ``--stage1`` run with the refine fold model
behind it. Outlines: prediction red (area tinted),
DDTI's annotation green. Writes

* ``docs/img/cv_best_worst.png``: the frames with the highest and lowest per-image nodule IoU;
* ``docs/img/predictions.png``: frames at the 20th, 40th, 60th and 80th IoU percentiles
  (typical results, for the home page).

The frames come from ``../shared/data/ddti`` and are not stored in the repository; only these
generated pictures are.

    python scripts/make_model_figures.py runs/cv/cv-tta.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from thyroidseg import ConfusionMatrix, Segmenter
from thyroidseg.inference.overlay import overlay
from thyroidseg.inference.refine import Refiner
from thyroidseg.io.files import read_binary_mask, read_image, write_image

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 360
"""Display width of one tile (pixels)."""


def _tile(segmenter: Segmenter, ddti: Path, stem: str, iou: float) -> np.ndarray:
    image = read_image(ddti / "images" / f"{stem}.png", grayscale=True)
    truth = read_binary_mask(ddti / "masks" / f"{stem}.png")
    picture = overlay(image, segmenter.predict(image), truth)
    height = round(picture.shape[0] * WIDTH / picture.shape[1])
    picture = cv2.resize(picture, (WIDTH, height), interpolation=cv2.INTER_AREA)
    caption = np.full((22, WIDTH, 3), 255, np.uint8)
    cv2.putText(
        caption, f"{stem}  IoU {iou:.2f}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1
    )
    return np.vstack([picture, caption])


def _grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    height = max(tile.shape[0] for tile in tiles)
    padded = [
        np.pad(t, ((0, height - t.shape[0]), (3, 3), (0, 0)), constant_values=255) for t in tiles
    ]
    rows = [np.hstack(padded[i : i + columns]) for i in range(0, len(padded), columns)]
    return np.vstack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_json", type=Path)
    parser.add_argument("--ddti", type=Path, default=ROOT.parent / "shared" / "data" / "ddti")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    run = json.loads(args.cv_json.read_text())
    settings = {
        "tta": run["args"].get("tta", False),
        "fill_holes": run["args"].get("fill_holes", False),
        "min_area": run["args"].get("min_area", 0),
    }
    folds = [(fold["fold"], stem) for fold in run["folds"] for stem in fold["stems"]]
    iou = ConfusionMatrix.from_matrices(np.asarray(run["per_image_matrices"])).per_image("iou")
    order = np.argsort(iou, kind="stable")
    run_dir = args.cv_json.parent

    stage1 = run["args"].get("stage1")

    def segmenter(fold: int) -> Segmenter:
        here = run_dir / f"fold{fold}" / "last.pt"
        if stage1 is None:
            return Segmenter.from_checkpoint(here, **settings)
        refiner = Refiner.from_checkpoint(here, whole_weight=run["args"]["whole_weight"])
        whole = Path(stage1) / f"fold{fold}" / "last.pt"
        return Segmenter.from_checkpoint(whole, refine=refiner, **settings)

    segmenters = {fold: segmenter(fold) for fold in sorted({fold for fold, _ in folds})}

    def tiles(indices: list[int]) -> list[np.ndarray]:
        return [_tile(segmenters[folds[i][0]], args.ddti, folds[i][1], iou[i]) for i in indices]

    best_worst = [int(i) for i in order[::-1][:3]] + [int(i) for i in order[:3]]
    write_image(args.out / "cv_best_worst.png", _grid(tiles(best_worst), 3))
    typical = [int(order[round(q * (len(order) - 1))]) for q in (0.2, 0.4, 0.6, 0.8)]
    write_image(args.out / "predictions.png", _grid(tiles(typical), 2))
    print(f"written {args.out / 'cv_best_worst.png'} and {args.out / 'predictions.png'}")


if __name__ == "__main__":
    main()
