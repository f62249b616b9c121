"""Does a second network's disagreement find the bad frames that the expected IoU misses?

Deep-ensemble disagreement is a common uncertainty signal. For every DDTI frame, the
whole-frame fold models of two runs that never saw it (same folds) segment it (flip TTA,
holes filled) and the IoU of their two masks is the frame's agreement (1 when both are
empty). It is scored as the expected IoU is (`thyroidseg.inference.quality.quality_scores`:
AUROC for the frames of two-stage IoU under 0.5, Spearman with that IoU) next to the
out-of-fold expected IoU of ``expected_iou.py``'s file, and their minimum::

    OMP_NUM_THREADS=1 python benchmarks/model_agreement.py runs/cv-bc24wc runs/cv-bc32 \\
        --expected benchmarks/results/expected-iou-single.json \\
        --json benchmarks/results/quality-agreement.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from thyroidseg import Segmenter
from thyroidseg.inference.quality import quality_scores
from thyroidseg.io.files import atomic_write_bytes
from thyroidseg.models.checkpoint import LAST_CHECKPOINT


def _agreement(runs: list[Path], fold: int, paths: list[Path]) -> list[float]:
    """IoU of the two runs' fold models' masks on each frame."""
    segmenters = [
        Segmenter.from_checkpoint(
            run / f"fold{fold}" / LAST_CHECKPOINT, tta=True, fill_holes=True, threads=None
        )
        for run in runs
    ]
    values = []
    for path in paths:
        first, second = (segmenter.predict(path) > 0 for segmenter in segmenters)
        union = int((first | second).sum())
        values.append(1.0 if union == 0 else int((first & second).sum()) / union)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs=2, type=Path, help="two run folders of fold models")
    parser.add_argument("--expected", type=Path, required=True, help="expected_iou.py's JSON")
    parser.add_argument("--images", type=Path, default=Path("../shared/data/ddti/images"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    expected = json.loads(args.expected.read_text())
    frames, lowest = expected["frames"], []
    offered = iter(expected["oof"]["expected"])
    for frame in frames:  # the out-of-fold rows run frame by frame, nodule by nodule
        scores = [next(offered) for _ in frame["nodules"]]
        lowest.append(min(scores) if scores else 0.0)
    agreement: dict[str, float] = {}
    for fold in sorted({frame["fold"] for frame in frames}):
        stems = [frame["stem"] for frame in frames if frame["fold"] == fold]
        paths = [next(args.images.glob(f"{stem}.*")) for stem in stems]
        agreement.update(zip(stems, _agreement(args.runs, fold, paths), strict=True))
    iou = np.array([frame["iou"] for frame in frames])
    score = np.array(lowest)
    agree = np.array([agreement[frame["stem"]] for frame in frames])
    rated = {
        "expected_iou": quality_scores(score, iou),
        "agreement": quality_scores(agree, iou),
        "lowest_of_both": quality_scores(np.minimum(score, agree), iou),
    }
    result = {
        "runs": [str(run) for run in args.runs],
        **rated,
        "frames": agreement,
    }
    for name, shown in rated.items():
        print(f"{name:>15}: AUROC {shown['auroc']:.3f}, Spearman {shown['spearman']:.3f}")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    main()
