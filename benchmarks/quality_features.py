"""Frame-context features for the expected IoU: which earn a place in the linear fit.

Issue 23, part 2, direction 1. ``--cache`` makes, once, one ``.npz`` per DDTI frame under
``--frames`` (never in the repository) with everything the segmenter had for it: the grey
frame after preprocessing (``Preprocessed.cleaned``, 0 outside the crop), the final mask and
probability, the stage-1 mask, the two flip probabilities, the views, the annotation and
the frame's fold, made as ``benchmarks/expected_iou.py`` makes its rows (each fold's
whole-frame and refine models segment only that fold's validation frames, with the shipped
inference settings). Then, for every nodule, the `FEATURES` of
`thyroidseg.inference.quality.nodule_features` and the candidate features of `CANDIDATES`
(definitions in `candidate_features`), and each configuration of `CONFIGS` (a feature set
and a ridge strength) is scored by the grouped 5-fold CV of ``expected_iou.py``
(`_frame_scores`: AUROC for frames with IoU < 0.5, Spearman, MAE on one-nodule frames);
each candidate alone is scored as a frame score too, oriented so that low means bad by the
sign of its Spearman with the nodules' IoU. ``--bootstrap`` resamples the frames (paired)
for a 95 % CI of each configuration's AUROC and Spearman minus the baseline's.

    python benchmarks/quality_features.py --cache --stage1 /root/runs/cv-bc24wc \\
        --refine /root/runs/cv-r12s1 --frames /root/runs/qc/frames
    python benchmarks/quality_features.py --frames /root/runs/qc/frames \\
        --out benchmarks/results/quality-features.json

Each configuration is one look at the same 365 frames: the more are tried, the more the best
of them is flattered by the CV that picked it (the JSON lists every one tried).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
from expected_iou import OUTLINE_FEATURES, _frame_scores, _nodule_iou

from thyroidseg import Segmenter, ThyroidDataset
from thyroidseg.data.splits import group_kfold
from thyroidseg.inference.measurements import Nodule, measure
from thyroidseg.inference.quality import (
    FEATURES,
    Evidence,
    _irls,
    _isotonic,
    nodule_features,
    nodule_regions,
    quality_scores,
)
from thyroidseg.inference.refine import Refiner
from thyroidseg.io.files import atomic_write_bytes
from thyroidseg.models.checkpoint import LAST_CHECKPOINT

CANDIDATES: tuple[str, ...] = (
    "rival_probability",
    "rival_mass",
    "ring_probability",
    "flip_gap",
    "stage1_cover",
    "stage1_elsewhere",
    "ring_contrast",
    "inside_darkness",
    "inside_texture",
    "edge_strength",
    "solidity",
    "compactness",
    "width_share",
    "height_share",
    "aspect",
    "top_gap",
    "area_share",
)
"""Candidate features (definitions in `candidate_features`)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, required=True, help="folder of the .npz cache")
    parser.add_argument("--cache", action="store_true", help="make the cache, then stop")
    parser.add_argument("--data", default="../shared/data/ddti")
    parser.add_argument("--stage1", help="run folder of the whole-frame folds (--cache)")
    parser.add_argument("--refine", help="run folder of the refine folds (--cache)")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/quality-features.json")
    )
    args = parser.parse_args()
    if args.cache:
        if args.stage1 is None or args.refine is None:
            parser.error("--cache needs --stage1 and --refine")
        _cache(args)
        return
    frames, x, y, owner, groups = load_rows(args.frames)
    names = (*FEATURES, *CANDIDATES)
    singles = {
        name: _frame_scores(frames, _oriented(x[:, k], y), owner) for k, name in enumerate(names)
    }
    configs = {}
    for label, (chosen, ridge) in CONFIGS.items():
        columns = [names.index(n) for n in chosen]
        expected = cross_validate(x[:, columns], y, owner, groups, ridge)
        configs[label] = {
            "features": list(chosen),
            "ridge": ridge,
            **_frame_scores(frames, expected, owner),
            "oof": expected.tolist(),
        }
    reference = configs["current (6 features, ridge 10)"]["oof"]
    for entry in configs.values():
        entry["vs_current"] = paired_bootstrap(
            frames, owner, np.asarray(entry["oof"]), np.asarray(reference), args.bootstrap, groups
        )
    _print(singles, configs)
    result = {"frames_folder": str(args.frames), "singles": singles, "configs": configs}
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"written {args.out}")


def _cache(args: argparse.Namespace) -> None:
    """One ``.npz`` per frame of every fold (see the module docstring)."""
    args.frames.mkdir(parents=True, exist_ok=True)
    dataset = ThyroidDataset(args.data)
    splits = group_kfold(dataset.groups, folds=5, seed=0)
    group_of = dict(zip(dataset.names, dataset.groups, strict=True))
    for fold in range(5):
        val = dataset.subset(splits[fold][1])
        segmenter = Segmenter.from_checkpoint(
            Path(args.stage1) / f"fold{fold}" / LAST_CHECKPOINT,
            refine=Refiner.from_checkpoint(
                Path(args.refine) / f"fold{fold}" / LAST_CHECKPOINT, whole_weight=0.25
            ),
            tta=True,
            fill_holes=True,
            min_probability=0.6,
            quality=False,
            device="cpu",
        )
        for i, stem in enumerate(val.names):
            image, truth = val.load_original(i)
            prepared = segmenter.prepare(image)
            [(mask, probability, evidence)] = segmenter.segment_with_evidence([prepared])
            grey = np.zeros(prepared.original_shape, np.uint8)
            x0, y0, x1, y1 = prepared.box
            grey[y0:y1, x0:x1] = prepared.cleaned
            np.savez_compressed(
                args.frames / f"{stem}.npz",
                grey=grey,
                truth=truth != 0,
                mask=mask.astype(np.uint8),
                probability=probability,
                stage1=np.asarray(evidence.stage1, np.uint8),
                flip0=evidence.flips[0],
                flip1=evidence.flips[1],
                views=np.asarray(prepared.views, np.int32),
                fold=fold,
                group=group_of[stem],
            )
        print(f"fold {fold}: {len(val.names)} frames cached", flush=True)


def load_rows(
    folder: Path,
) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Frames (``iou``, ``nodules``), features ``(N, F + C)``, nodule IoUs, owners, groups."""
    frames, rows, targets, owner, groups = [], [], [], [], []
    for frame in iter_frames(folder):
        data, nodules, views = frame["data"], frame["nodules"], frame["views"]
        extra = candidate_features(data, nodules, views)
        frames.append({"stem": frame["stem"], "iou": frame["iou"], "nodules": frame["ious"]})
        rows += [np.concatenate([b, e]) for b, e in zip(frame["features"], extra, strict=True)]
        targets += frame["ious"]
        owner += [len(frames) - 1] * len(nodules)
        groups.append(frame["group"])
    x = np.asarray(rows).reshape(len(targets), len(FEATURES) + len(CANDIDATES))
    return frames, x, np.asarray(targets), np.asarray(owner, int), groups


def iter_frames(folder: Path) -> Iterator[dict]:
    """Each cached frame of ``folder``: its arrays (``data``), ``nodules`` as
    `measure` finds them, ``views``, ``regions``, `FEATURES` rows (``features``), the
    nodules' IoUs (``ious``), the frame's ``iou``, ``stem`` and leak ``group``."""
    paths = sorted(folder.glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no cached frames (make them with --cache)")
    for path in paths:
        data = dict(np.load(path))
        mask, truth = data["mask"], data["truth"]
        views = [tuple(int(v) for v in box) for box in data["views"]]
        nodules = measure(mask, None, data["probability"], views)
        evidence = Evidence(data["stage1"], (data["flip0"], data["flip1"]))
        regions = nodule_regions(mask, nodules)
        union = int(((mask != 0) | truth).sum())
        yield {
            "stem": path.stem,
            "group": str(data["group"]),
            "data": data,
            "nodules": nodules,
            "views": views,
            "regions": regions,
            "features": nodule_features(mask, data["probability"], evidence, nodules, views),
            "ious": [_nodule_iou(region, truth) for region in regions],
            "iou": float(((mask != 0) & truth).sum() / union) if union else 1.0,
        }


def candidate_features(
    data: dict[str, np.ndarray], nodules: list[Nodule], views: list[tuple[int, int, int, int]]
) -> np.ndarray:
    r"""One row of `CANDIDATES` per nodule, ``(K, len(CANDIDATES))``.

    With $R$ the nodule's pixels, $V$ its view, $p$ the final probability, $g$ the grey
    frame, $\nabla g$ the Sobel gradient magnitude of $g$ smoothed by a Gaussian of
    $\sigma = 2$, the ring $O$: the pixels of $V$ within $\max(2, r/4)$ of $R$ outside it
    ($r = \sqrt{|R| / \pi}$), the outline $\partial R$, and "away" $A$: the pixels of $V$
    farther than half the nodule's longer side from $R$:

    - ``rival_probability`` $= \max_A p$ (0 when $A$ is empty): a competing candidate;
    - ``rival_mass`` $= \log_{10}(1 + |\{p > 0.5\} \cap A| / |R|)$;
    - ``ring_probability`` $= \overline{p}_O$: how sharply the probability falls off;
    - ``flip_gap`` $= \overline{|p_0 - p_1|}_{R \cup O}$ of the two flip probabilities;
    - ``stage1_cover`` $= |S \cap R| / |R|$ and ``stage1_elsewhere``
      $= |S \cap A| / (|S| + 1)$ for the stage-1 mask $S$;
    - ``ring_contrast`` $= (\overline{g}_O - \overline{g}_R) / (\mathrm{sd}_{R \cup O}(g) + 1)$;
      ``inside_darkness`` $= (\overline{g}_V - \overline{g}_R) / (\mathrm{sd}_V(g) + 1)$;
      ``inside_texture`` $= \mathrm{sd}_R(g) / (\overline{g}_R + 1)$;
    - ``edge_strength`` $= \overline{\nabla g}_{\partial R} / (\overline{\nabla g}_V + 10^{-6})$;
    - ``solidity`` $= |R| / |\mathrm{hull}(R)|$; ``compactness`` $= 4 \pi |R| / P^2$
      ($P$ the outline's length);
    - ``width_share``, ``height_share``: the box's width and height over the view's;
      ``aspect``: height over width; ``top_gap``: the box's distance from the view's top
      over the view's height;
    - ``area_share``: $|R|$ over the area of all nodules of the frame.
    """
    mask, p = data["mask"] != 0, data["probability"].astype(np.float32)
    grey = data["grey"].astype(np.float32)
    smooth = cv2.GaussianBlur(grey, (0, 0), 2.0)
    gradient = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    stage1, gap = data["stage1"] != 0, np.abs(data["flip0"] - data["flip1"])
    total_area = sum(n.area_px for n in nodules)
    rows = []
    for nodule, region in zip(nodules, nodule_regions(mask, nodules), strict=True):
        x0, y0, x1, y1 = views[nodule.view]
        in_view = np.zeros(mask.shape, bool)
        in_view[y0:y1, x0:x1] = True
        radius = np.sqrt(nodule.area_px / np.pi)
        ring = _grow(region, max(2, round(radius / 4))) & ~region & in_view
        away = ~_grow(region, max(2, round(max(nodule.width, nodule.height) / 2))) & in_view
        outline = region & ~cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(
            bool
        )
        near = region | ring
        contour = max(
            cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0],
            key=cv2.contourArea,
        )
        hull = max(cv2.contourArea(cv2.convexHull(contour)), 1.0)
        perimeter = max(cv2.arcLength(contour, True), 1.0)
        area = nodule.area_px
        rows.append(
            [
                float(p[away].max()) if away.any() else 0.0,
                float(np.log10(1 + ((p > 0.5) & away).sum() / area)),
                float(p[ring].mean()) if ring.any() else 0.0,
                float(gap[near].mean()),
                float((stage1 & region).sum() / area),
                float((stage1 & away).sum() / (stage1.sum() + 1)),
                float((grey[ring].mean() - grey[region].mean()) / (grey[near].std() + 1))
                if ring.any()
                else 0.0,
                float((grey[in_view].mean() - grey[region].mean()) / (grey[in_view].std() + 1)),
                float(grey[region].std() / (grey[region].mean() + 1)),
                float(gradient[outline].mean() / (gradient[in_view].mean() + 1e-6)),
                float(min(area / hull, 1.0)),
                float(min(4 * np.pi * area / perimeter**2, 1.0)),
                nodule.width / (x1 - x0),
                nodule.height / (y1 - y0),
                nodule.height / nodule.width,
                (nodule.y - y0) / (y1 - y0),
                area / total_area,
            ]
        )
    return np.asarray(rows, np.float64).reshape(len(rows), len(CANDIDATES))


def _grow(region: np.ndarray, pixels: int) -> np.ndarray:
    """``region`` dilated by a disc of radius ``pixels``."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(region.astype(np.uint8), disc).astype(bool)


def _feature_sets() -> dict[str, tuple[tuple[str, ...], float]]:
    probability = CANDIDATES[:6]
    image = CANDIDATES[6:10]
    shape = CANDIDATES[10:]
    current = tuple(OUTLINE_FEATURES)
    return {
        "current (6 features, ridge 10)": (current, 10.0),
        "9 features, ridge 10": (FEATURES, 10.0),
        "mean_probability alone, ridge 10": (("mean_probability",), 10.0),
        "6 + probability context, ridge 10": (current + probability, 10.0),
        "6 + image, ridge 10": (current + image, 10.0),
        "6 + shape, ridge 10": (current + shape, 10.0),
        "6 + all candidates, ridge 1": (current + CANDIDATES, 1.0),
        "6 + all candidates, ridge 10": (current + CANDIDATES, 10.0),
        "6 + all candidates, ridge 100": (current + CANDIDATES, 100.0),
        "9 + all candidates, ridge 10": (FEATURES + CANDIDATES, 10.0),
    }


CONFIGS = _feature_sets()
"""Every configuration tried: label -> (features, ridge)."""


def cross_validate(
    x: np.ndarray, y: np.ndarray, owner: np.ndarray, groups: list[str], ridge: float
) -> np.ndarray:
    """Out-of-fold expected IoUs of the nodules: `ExpectedIoU.fit`'s model (standardised
    ridge quasi-binomial fit, isotonic calibration) fitted on four parts of the grouped
    5-fold split of the frames' leak groups and applied to the fifth (``expected_iou.py``)."""
    expected = np.zeros(len(y))
    for _, held_frames in group_kfold(groups, folds=5, seed=0):
        held = np.isin(owner, held_frames)
        expected[held] = _fit(x[~held], y[~held], ridge)(x[held])
    return expected


def _fit(x: np.ndarray, y: np.ndarray, ridge: float) -> Callable[[np.ndarray], np.ndarray]:
    """`ExpectedIoU.fit`'s model on columns that need not be `FEATURES`: the same
    standardisation, ridge IRLS (`_irls`) and isotonic calibration (`_isotonic`)."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    beta = _irls(np.column_stack([np.ones(len(y)), (x - mean) / scale]), y, ridge)

    def linear(rows: np.ndarray) -> np.ndarray:
        eta = beta[0] + ((rows - mean) / scale) @ beta[1:]
        return 1.0 / (1.0 + np.exp(-np.clip(eta, -30, 30)))

    knots, values = _isotonic(linear(x), y)
    return lambda rows: np.interp(linear(rows), knots, values)


def _oriented(values: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``values`` negated when they fall as the nodules' IoU rises (Spearman < 0)."""
    return -values if quality_scores(values, y)["spearman"] < 0 else values


def paired_bootstrap(
    frames: list[dict],
    owner: np.ndarray,
    expected: np.ndarray,
    reference: np.ndarray,
    draws: int,
    groups: list[str],
) -> dict:
    """95 % percentile CI of the AUROC and Spearman differences (``expected`` minus
    ``reference`` nodule estimates, as frame scores) over ``draws`` resamplings of the leak
    groups with replacement (frames of one group move together), and the share of draws
    in which the difference is <= 0."""
    iou = np.array([f["iou"] for f in frames])
    a, b = _lowest(expected, owner, len(frames)), _lowest(reference, owner, len(frames))
    names, index = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(index == k) for k in range(len(names))]
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(draws):
        picked = np.concatenate([members[k] for k in rng.integers(0, len(names), len(names))])
        sa, sb = quality_scores(a[picked], iou[picked]), quality_scores(b[picked], iou[picked])
        differences.append([sa["auroc"] - sb["auroc"], sa["spearman"] - sb["spearman"]])
    d = np.asarray(differences)
    return {
        name: {
            "difference": float(full),
            "ci95": [float(v) for v in np.nanpercentile(d[:, k], [2.5, 97.5])],
            "share_not_better": float(np.mean(d[:, k] <= 0)),
        }
        for k, (name, full) in enumerate(
            [
                ("auroc", quality_scores(a, iou)["auroc"] - quality_scores(b, iou)["auroc"]),
                (
                    "spearman",
                    quality_scores(a, iou)["spearman"] - quality_scores(b, iou)["spearman"],
                ),
            ]
        )
    }


def _lowest(per_nodule: np.ndarray, owner: np.ndarray, frames: int) -> np.ndarray:
    """Each frame's lowest nodule value, 0 without a nodule (`_frame_scores`)."""
    score = np.full(frames, np.inf)
    np.minimum.at(score, owner, per_nodule)
    score[~np.isfinite(score)] = 0.0
    return score


def _print(singles: dict, configs: dict) -> None:
    print(f"{'configuration':<40} {'AUROC':>6} {'Spearman':>8} {'MAE(1)':>7}  dAUROC CI")
    for label, s in configs.items():
        ci = s["vs_current"]["auroc"]["ci95"]
        print(
            f"{label:<40} {s['auroc']:6.3f} {s['spearman']:8.3f} {s['mae_one_nodule']:7.3f}"
            f"  [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        )
    print("each feature alone (oriented):")
    for name, s in singles.items():
        print(f"  {name:<38} {s['auroc']:6.3f} {s['spearman']:8.3f}")


if __name__ == "__main__":
    main()
