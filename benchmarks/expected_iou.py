"""Cross-validate the expected IoU per nodule on out-of-fold DDTI predictions.

Each fold's models segment only that fold's validation frames (the grouped folds of
``ddti_cv.py``: ``group_kfold(groups, folds=5, seed=0)``): the whole-frame model
``STAGE1/foldK/last.pt`` (several ``--stage1`` runs: their ensemble, as shipped) with,
when ``--refine RUN`` is given, the refine model
``RUN/foldK/last.pt`` behind it (whole weight 0.25), with the shipped model's inference
settings: flip TTA, hole filling and ``--min-probability`` (0.6). For every nodule found
it records the features of `thyroidseg.inference.quality.nodule_features` and its IoU with
the annotation (the union of the annotated components it touches; 0 when it touches none),
and for every frame its IoU. The rows go to ``--out`` (JSON, no images); a rerun scores
only the folds missing from it.

The estimator `thyroidseg.inference.quality.ExpectedIoU` is then cross-validated on these
rows by grouped 5-fold CV over the frames' leak groups (fitted on the nodules of four
parts, applied to the fifth's; the rows are out-of-fold predictions already, so this works
with any number of segmentation folds, one included): AUROC for
finding the frames with IoU < 0.5 (a frame's score is the lowest expected IoU of its
nodules, 0 without a nodule), Spearman with the frame IoU, and the mean absolute error on
frames with one nodule; the same for ``mean_probability`` and each feature alone. The review
threshold is chosen on the out-of-fold expected IoUs (`review_threshold`); the estimator
fitted on all rows, with that threshold and the scores, is stored in ``--out`` under
``"estimator"`` for ``scripts/package_model.py --quality``. ``--figure`` draws the
reliability diagram (expected against actual IoU of the nodules, in bins of 0.1).

    python benchmarks/expected_iou.py --stage1 /root/runs/cv-bc24wc /root/runs/cv-bc24-seed1 \\
        --refine /root/runs/cv-r12s1 --folds 0 1 2 3 4 \\
        --out benchmarks/results/expected-iou.json --figure docs/img/expected_iou_reliability.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from thyroidseg import Segmenter, ThyroidDataset
from thyroidseg.data.splits import group_kfold
from thyroidseg.inference.measurements import measure
from thyroidseg.inference.quality import (
    FEATURES,
    ExpectedIoU,
    nodule_features,
    nodule_regions,
    quality_scores,
    review_threshold,
)
from thyroidseg.inference.refine import Refiner
from thyroidseg.io.files import atomic_write_bytes, write_image
from thyroidseg.models.checkpoint import LAST_CHECKPOINT

BAD = 0.5
"""A frame (or nodule) with IoU under this is a failure to find."""
OUTLINE_FEATURES = FEATURES[:6]
"""The estimator's default features: each outline's own evidence (probabilities, agreement of
the stages and of the flips, area). The frame-level ones (`border_contact`, `components`,
`split_screen`) are recorded and scored alone, but rank frames no better than chance and
made the fit worse on every set of folds tried (docs/quality.md)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ddti")
    parser.add_argument(
        "--stage1", nargs="+", required=True, help="run folder(s) of the whole-frame folds"
    )
    parser.add_argument("--refine", default=None, help="run folder of the refine folds")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--min-probability", type=float, default=0.6)
    parser.add_argument("--ridge", type=float, default=10.0)
    parser.add_argument(
        "--features", nargs="+", choices=FEATURES, default=list(OUTLINE_FEATURES), help="fitted"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/expected-iou.json"))
    parser.add_argument("--figure", type=Path, default=None, help="reliability diagram PNG")
    args = parser.parse_args()
    setup = {
        "stage1": args.stage1 if len(args.stage1) > 1 else args.stage1[0],
        "refine": args.refine,
        "min_probability": args.min_probability,
        "features": list(FEATURES),
    }
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {}
    frames = [f for f in stored.get("frames", []) if f["fold"] in args.folds]
    if stored and stored.get("setup") != setup:
        frames = []  # other models or features: score everything again
    done = {f["fold"] for f in frames}
    dataset = ThyroidDataset(args.data)
    splits = group_kfold(dataset.groups, folds=5, seed=0)
    for fold in sorted(set(args.folds) - done):
        frames += _score_fold(args, dataset.subset(splits[fold][1]), fold)
    group_of = dict(zip(dataset.names, dataset.groups, strict=True))
    frames.sort(key=lambda f: (f["fold"], f["stem"]))
    result = {"setup": setup, "folds": sorted(args.folds), "frames": frames}
    groups = [group_of[f["stem"]] for f in frames]
    fit = {"names": args.features, "ridge": args.ridge, "stages": 2 if args.refine else 1}
    result |= _cross_validate(frames, groups, fit)
    if args.figure is not None:
        _reliability_figure(result["oof"], args.figure)
    _print(result)
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"written {args.out}")


def _score_fold(args: argparse.Namespace, val: ThyroidDataset, fold: int) -> list[dict]:
    """One row per validation frame of ``fold``: its IoU and its nodules' features and IoUs."""
    refine = args.refine is not None
    segmenter = Segmenter.from_checkpoint(
        [Path(run) / f"fold{fold}" / LAST_CHECKPOINT for run in args.stage1],
        refine=Refiner.from_checkpoint(
            Path(args.refine) / f"fold{fold}" / LAST_CHECKPOINT, whole_weight=0.25
        )
        if refine
        else None,
        tta=True,
        fill_holes=True,
        min_probability=args.min_probability,
        quality=False,
        device="cpu",
    )
    rows = []
    for i, stem in enumerate(val.names):
        image, truth = val.load_original(i)
        prepared = segmenter.prepare(image)
        [(mask, probability, evidence)] = segmenter.segment_with_evidence([prepared])
        nodules = measure(mask, None, probability, prepared.views)
        features = nodule_features(mask, probability, evidence, nodules, prepared.views)
        regions = nodule_regions(mask, nodules)
        rows.append(
            {
                "stem": stem,
                "fold": fold,
                "iou": _iou(mask != 0, truth != 0),
                "nodules": [
                    {
                        "iou": _nodule_iou(region, truth != 0),
                        "area_px": n.area_px,
                        "features": dict(zip(FEATURES, map(float, row), strict=True)),
                    }
                    for n, region, row in zip(nodules, regions, features, strict=True)
                ],
            }
        )
    print(f"fold {fold}: {len(rows)} frames scored", flush=True)
    return rows


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


def _nodule_iou(region: np.ndarray, truth: np.ndarray) -> float:
    """IoU of one predicted nodule with the annotated components it touches."""
    _, labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    touched = np.setdiff1d(np.unique(labels[region]), [0])
    return _iou(region, np.isin(labels, touched)) if touched.size else 0.0


def _matrix(frames: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``(N, F)``, IoU targets and frame indices of all nodules."""
    nodules = [(k, n) for k, f in enumerate(frames) for n in f["nodules"]]
    x = np.array([[n["features"][name] for name in FEATURES] for _, n in nodules])
    y = np.array([n["iou"] for _, n in nodules])
    return x.reshape(len(y), len(FEATURES)), y, np.array([k for k, _ in nodules], int)


def _frame_scores(frames: list[dict], per_nodule: np.ndarray, owner: np.ndarray) -> dict:
    """`quality_scores` of the frames' lowest per-nodule value, and MAE on one-nodule frames."""
    score = np.zeros(len(frames))
    score[:] = np.inf
    np.minimum.at(score, owner, per_nodule)
    score[~np.isfinite(score)] = 0.0  # no nodule
    iou = np.array([f["iou"] for f in frames])
    single = np.array([len(f["nodules"]) == 1 for f in frames])
    scores = quality_scores(score, iou, BAD)
    scores["mae_one_nodule"] = float(np.abs(score[single] - iou[single]).mean())
    scores["one_nodule_frames"] = int(single.sum())
    return scores


def _cross_validate(frames: list[dict], groups: list[str], fit: dict) -> dict:
    """Grouped 5-fold CV scores, the review threshold and the estimator fitted on all.

    ``fit``: the keyword arguments of `ExpectedIoU.fit` (``names``, ``ridge``, ``stages``).
    """
    all_x, y, owner = _matrix(frames)
    x = all_x[:, [FEATURES.index(name) for name in fit["names"]]]
    expected = np.zeros(len(y))
    for _, held_frames in group_kfold(groups, folds=5, seed=0):
        held = np.isin(owner, held_frames)
        model = ExpectedIoU.fit(x[~held], y[~held], **fit)
        expected[held] = model.predict(x[held])
    threshold = review_threshold(expected, y, BAD)
    flagged, bad = expected < threshold, y < BAD
    scores = {
        "expected_iou": _frame_scores(frames, expected, owner),
        "baselines": {
            name: _frame_scores(frames, all_x[:, k], owner) for k, name in enumerate(FEATURES)
        },
        "review": {
            "threshold": threshold,
            "nodules": len(y),
            "flagged": int(flagged.sum()),
            "sensitivity": float(flagged[bad].mean()) if bad.any() else None,
            "specificity": float((~flagged[~bad]).mean()) if (~bad).any() else None,
            "nodules_under_0.5": int(bad.sum()),
        },
        "nodule_spearman": quality_scores(expected, y, BAD)["spearman"],
        "ridge": fit["ridge"],
        "how": "out-of-fold segmentations of the folds listed (group_kfold(groups, 5, seed=0) "
        "of benchmarks/ddti_cv.py); the estimator cross-validated by group_kfold(leak groups "
        "of these frames, 5, seed=0); frame score = lowest expected IoU of its nodules, 0 "
        "without one; AUROC for frames with IoU < 0.5",
    }
    final = ExpectedIoU.fit(x, y, **fit).with_review(threshold, scores)
    oof = {"expected": expected.tolist(), "actual": y.tolist()}
    return {"cv": scores, "oof": oof, "estimator": final.to_dict()}


def _print(result: dict) -> None:
    cv = result["cv"]
    rows = [("expected_iou", cv["expected_iou"])] + list(cv["baselines"].items())
    print(f"{'frame score':<20} {'AUROC':>6} {'Spearman':>8} {'MAE(1)':>7}")
    for name, s in rows:
        print(f"{name:<20} {s['auroc']:6.3f} {s['spearman']:8.3f} {s['mae_one_nodule']:7.3f}")
    e = cv["expected_iou"]
    print(
        f"{e['frames']} frames ({e['bad_frames']} under {BAD}), {e['one_nodule_frames']} with "
        f"one nodule; nodule-level Spearman {cv['nodule_spearman']:.3f}"
    )
    print("review:", json.dumps(cv["review"]))


def _reliability_figure(oof: dict, path: Path, size: int = 420) -> None:
    """Mean actual against mean expected IoU of the nodules in bins of 0.1, with counts."""
    expected, actual = np.asarray(oof["expected"]), np.asarray(oof["actual"])
    pad, span = 50, size - 70
    canvas = np.full((size, size, 3), 255, np.uint8)

    def point(u: float, v: float) -> tuple[int, int]:
        return pad + round(u * span), size - pad + 10 - round(v * span)

    font = cv2.FONT_HERSHEY_SIMPLEX
    for t in np.linspace(0, 1, 6):
        cv2.line(canvas, point(t, 0), point(t, 1), (225, 225, 225), 1)
        cv2.line(canvas, point(0, t), point(1, t), (225, 225, 225), 1)
        cv2.putText(canvas, f"{t:.1f}", point(t, 0)[:1] + (size - 22,), font, 0.35, 0, 1)
        cv2.putText(canvas, f"{t:.1f}", (8, point(0, t)[1] + 4), font, 0.35, 0, 1)
    cv2.line(canvas, point(0, 0), point(1, 1), (160, 160, 160), 1, cv2.LINE_AA)
    bins = np.minimum((expected * 10).astype(int), 9)
    centres = []
    for b in range(10):
        inside = bins == b
        if inside.any():
            u, v, n = expected[inside].mean(), actual[inside].mean(), int(inside.sum())
            centres.append(point(u, v))
            cv2.circle(canvas, centres[-1], 3 + round(np.sqrt(n)), (200, 120, 40), 1)
            cv2.putText(canvas, str(n), (centres[-1][0] + 6, centres[-1][1] + 14), font, 0.35, 0)
    cv2.polylines(canvas, [np.array(centres, np.int32)], False, (200, 120, 40), 2, cv2.LINE_AA)
    cv2.putText(canvas, "expected IoU (out of fold)", (pad + 80, size - 4), font, 0.4, 0, 1)
    cv2.putText(canvas, "actual IoU", (4, 14), font, 0.4, 0, 1)
    write_image(path, canvas)


if __name__ == "__main__":
    main()
