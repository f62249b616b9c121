"""A model's cross-validated masks next to the other human readers of DDTI, frame by frame.

``../shared/data/ddti-observers/`` holds masks that a radiologist and two residents drew
independently of DDTI's own annotation, for some of the ``ddti/`` frames. Each reader is
scored exactly as a model is: the reader's mask is the prediction, ``ddti/masks`` the truth.
The model's per-image confusion matrices come from a ``ddti_cv.py`` result (every frame
predicted by the fold model that never saw it). For each reader the script prints, on the
frames that reader outlined:

* the reader's per-image nodule IoU (mean, bootstrap 95% CI),
* the model's per-image nodule IoU on the same frames,
* the paired difference model - reader (bootstrap 95% CI): above 0 means the model agrees
  with DDTI's annotator better than that reader does.

    python benchmarks/readers.py runs/ddti-cv/cv.json --json runs/ddti-cv/readers.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from thyroidseg import ConfusionMatrix
from thyroidseg.io.files import atomic_write_bytes
from thyroidseg.metrics.evaluation import evaluate_folders
from thyroidseg.metrics.statistics import summarize


def _model_matrices(cv_json: Path) -> dict[str, np.ndarray]:
    """Per-image 2x2 confusion matrices of a ddti_cv.py run, by frame stem."""
    run = json.loads(cv_json.read_text())
    matrices = np.asarray(run["per_image_matrices"], dtype=np.int64)
    stems = [stem for fold in run["folds"] for stem in fold.get("stems", [])]
    if len(stems) != len(matrices):
        raise SystemExit(
            f"{cv_json}: has no frame names (re-score it with ddti_cv.py --score-only)"
        )
    return dict(zip(stems, matrices, strict=True))


def _reader_matrices(reader_dir: Path, truth_dir: Path) -> dict[str, np.ndarray]:
    """Per-image confusion matrices of one reader's masks against the DDTI masks."""
    scored = evaluate_folders(reader_dir, truth_dir, common_only=True, progress=False)
    if scored.unpaired_predictions:
        raise SystemExit(
            f"{reader_dir}: no DDTI mask in {truth_dir} for {scored.unpaired_predictions}"
        )
    return dict(zip(scored.stems, scored.confusion.per_image_matrices, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_json", type=Path, help="cv.json (or cv-TAG.json) of ddti_cv.py")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    model = _model_matrices(args.cv_json)
    observers = args.data / "ddti-observers"
    result = {"cv_json": str(args.cv_json), "readers": {}}
    for reader_dir in sorted(p for p in observers.iterdir() if p.is_dir()):
        reader = _reader_matrices(reader_dir, args.data / "ddti" / "masks")
        stems = [stem for stem in reader if stem in model]
        reader_iou = ConfusionMatrix.from_matrices(np.stack([reader[s] for s in stems]))
        model_iou = ConfusionMatrix.from_matrices(np.stack([model[s] for s in stems]))
        a = reader_iou.per_image("iou", cls=1)
        b = model_iou.per_image("iou", cls=1)
        rows = {
            "frames": len(stems),
            "reader_iou": summarize(a).to_dict(),
            "model_iou": summarize(b).to_dict(),
            "model_minus_reader": summarize(b - a).to_dict(),
        }
        result["readers"][reader_dir.name] = rows
        print(f"{reader_dir.name} ({len(stems)} frames)")
        print(f"  reader: {summarize(a)}")
        print(f"  model:  {summarize(b)}")
        print(f"  model - reader: {summarize(b - a)}")
    if args.json is not None:
        atomic_write_bytes(args.json, json.dumps(result, indent=1).encode())
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
