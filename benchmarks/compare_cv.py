"""Compare two runs of ``ddti_cv.py`` image by image, on the folds both ran.

Both runs split by leak group with the same seed, so fold k holds the same frames in the
same order; the script checks that the reference masks agree (same true nodule pixels per
frame) before pairing. It prints each run's per-image and pooled nodule IoU on the shared
folds and the paired per-image difference (B - A) with a bootstrap 95% CI.

    python benchmarks/compare_cv.py runs/ddti-cv/cv.json runs/ddti-cv-plain32/cv.json
    python benchmarks/compare_cv.py A.json screen.json+confirm.json   # one run, two files
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from thyroidseg.metrics import ConfusionMatrix
from thyroidseg.metrics.statistics import summarize


def _load(paths: str) -> tuple[dict, dict[int, np.ndarray]]:
    """The run's arguments and its per-image matrices, by fold.

    ``paths`` may join several files of one run with ``+`` (e.g. folds 0-1 of a screen and
    folds 2-4 of its confirmation); a fold found in two of them is an error.
    """
    by_fold: dict[int, np.ndarray] = {}
    first_args = None
    for path in paths.split("+"):
        run = json.loads(Path(path).read_text())
        first_args = first_args or run["args"]
        if (run["args"]["folds"], run["args"]["seed"]) != (first_args["folds"], first_args["seed"]):
            raise SystemExit(f"{path}: other splits (--folds/--seed) than {paths.split('+')[0]}")
        matrices = np.asarray(run["per_image_matrices"], dtype=np.int64)
        start = 0
        for fold in run["folds"]:
            if fold["fold"] in by_fold:
                raise SystemExit(f"{path}: fold {fold['fold']} is in two of the files")
            by_fold[fold["fold"]] = matrices[start : start + fold["images"]]
            start += fold["images"]
    assert first_args is not None
    return first_args, by_fold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="cv.json of run A (several files of one run: a.json+b.json)")
    parser.add_argument("b", help="cv.json of run B (likewise)")
    args = parser.parse_args()
    (args_a, folds_a), (args_b, folds_b) = _load(args.a), _load(args.b)
    if (args_a["folds"], args_a["seed"]) != (args_b["folds"], args_b["seed"]):
        raise SystemExit("the runs used different splits (--folds/--seed): not comparable")
    shared = sorted(set(folds_a) & set(folds_b))
    a = np.concatenate([folds_a[k] for k in shared])
    b = np.concatenate([folds_b[k] for k in shared])
    if not np.array_equal(a[:, 1].sum(-1), b[:, 1].sum(-1)):
        raise SystemExit("the folds hold different frames: not comparable")
    print(f"folds {shared}: {len(a)} frames")
    runs = (("A", args.a, a), ("B", args.b, b))
    iou = {}
    for name, path, matrices in runs:
        matrix = ConfusionMatrix.from_matrices(matrices)
        iou[name] = matrix.per_image("iou", cls=1)
        print(f"{name} {path}: per-image nodule IoU {matrix.summary('iou', cls=1)}")
        print(f"{' ' * len(name)} pooled nodule IoU {matrix.iou()[1]:.4f}")
    print(f"B - A per image: {summarize(iou['B'] - iou['A'])}")


if __name__ == "__main__":
    main()
