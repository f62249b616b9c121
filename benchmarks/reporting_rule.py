"""Which predicted nodules deserve a row in measurements.csv: a rule chosen by grouped CV.

Every frame of the given cross-validation run is segmented by the fold models that never saw
it (whole-frame ``RUN/foldK/last.pt``, several ``--run`` averaged as one ensemble, and with
``--refine RUN2`` the refine stage ``RUN2/foldK/last.pt`` behind it), exactly as
``thyroidseg predict --measure`` would, and
each predicted nodule (8-connected component per view, `measure`) is called a **hit** when
it overlaps DDTI's mask and a **false report** when it does not. Segmentation runs with the
shipped model's settings (flip TTA, holes filled). For each rule "report a nodule only if its
area >= A pixels and its mean probability >= P", the script prints:

- false reports per 100 frames;
- true nodules (8-connected components of DDTI's masks) that no reported nodule touches;
- the per-image nodule IoU with the unreported components removed from the mask.

    python benchmarks/reporting_rule.py --run runs/cv-bc24wc --refine runs/cv-r12e80 \\
        --cv benchmarks/results/cv-bc24-tta-fill.json --json benchmarks/results/reporting.json

The CV file names which frames each fold validated (its ``folds[*].stems``).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import cv2
import numpy as np

from thyroidseg import Segmenter, ThyroidDataset, preprocess
from thyroidseg.io.files import atomic_write_bytes
from thyroidseg.io.outputs import check_outputs
from thyroidseg.metrics.statistics import summarize

AREAS = (0, 25, 50, 100, 200)
PROBABILITIES = (0.0, 0.5, 0.6, 0.7, 0.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ddti")
    parser.add_argument(
        "--run",
        nargs="+",
        required=True,
        help="whole-frame fold models RUN/foldK/last.pt (several runs: their ensemble)",
    )
    parser.add_argument("--refine", help="refine fold models RUN2/foldK/last.pt")
    parser.add_argument("--cv", required=True, help="ddti_cv.py result naming each fold's frames")
    parser.add_argument("--json", type=Path, help="write the table here")
    args = parser.parse_args()
    if args.json is not None:
        check_outputs([args.json])
    folds = json.loads(Path(args.cv).read_text())["folds"]
    dataset = ThyroidDataset(args.data, size=(128, 128), progress=False)
    index = {name: i for i, name in enumerate(dataset.names)}
    components = []  # (frame, area, mean probability, hit, label mask)
    frames = []  # (truth, mask, per-component labels)
    for fold in folds:
        k = fold["fold"]
        segmenter = Segmenter.from_checkpoint(
            [Path(run) / f"fold{k}" / "last.pt" for run in args.run],
            refine=Path(args.refine) / f"fold{k}" / "last.pt" if args.refine else None,
            device="cpu",
            tta=True,
            fill_holes=True,
        )
        for name in fold["stems"]:
            image, truth = dataset.load_original(index[name])
            mask, probability = segmenter.predict(image, return_probabilities=True)
            views = preprocess(image, **segmenter.preprocess_options).views
            labels = _component_labels(mask, views)
            frame = len(frames)
            _, truth_labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
            frames.append((truth.astype(bool), labels, truth_labels))
            for label in range(1, labels.max() + 1):
                part = labels == label
                mean = float(probability[part].mean())
                components.append((frame, int(part.sum()), mean, bool(truth[part].any()), label))
    rows = [_score(frames, components, a, p) for a, p in itertools.product(AREAS, PROBABILITIES)]
    for row in rows:
        print(json.dumps(row))
    if args.json is not None:
        settings = {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
        }
        result = {"args": settings, "rules": rows}
        atomic_write_bytes(args.json, json.dumps(result, indent=1).encode())
        print(f"written {args.json}")


def _component_labels(mask: np.ndarray, views: list) -> np.ndarray:
    """The nodules as `measure` finds them: 8-connected components, view by view."""
    labels = np.zeros(mask.shape, np.int32)
    next_label = 1
    for x0, y0, x1, y1 in views:
        count, part = cv2.connectedComponents((mask[y0:y1, x0:x1] != 0).astype(np.uint8), 8)
        view = labels[y0:y1, x0:x1]
        for k in range(1, count):
            view[part == k] = next_label
            next_label += 1
    return labels


def _score(frames: list, components: list, min_area: int, min_probability: float) -> dict:
    kept = {
        (frame, label)
        for frame, area, mean, _, label in components
        if area >= min_area and mean >= min_probability
    }
    false = [(f, lab) for f, _, _, hit, lab in components if not hit]
    ious, missed, nodules = [], 0, 0
    for frame, (truth, labels, truth_labels) in enumerate(frames):
        reported = np.isin(labels, [lab for f, lab in kept if f == frame])
        union = (reported | truth).sum()
        ious.append((reported & truth).sum() / union if union else 1.0)
        for k in range(1, truth_labels.max() + 1):
            nodules += 1
            missed += not reported[truth_labels == k].any()
    summary = summarize(np.array(ious))
    return {
        "min_area": min_area,
        "min_mean_probability": min_probability,
        "false_reports_per_100_frames": round(100 * sum(c in kept for c in false) / len(frames), 1),
        "false_reports_before_the_rule": len(false),
        "true_nodules_missed": missed,
        "true_nodules": nodules,
        "per_image_iou": round(summary.mean, 4),
        "frames": len(frames),
    }


if __name__ == "__main__":
    main()
