"""Throughput of ConfusionMatrix.update and of HD95 against peers, measured in the same run.

Run with the benchmark environment, which has the peers installed::

    bench-env/bin/python benchmarks/bench_metrics.py

Counting: 200 pairs of 512x512 binary masks (ellipse "nodules", the prediction a shifted and
resized copy of the truth), one ``update`` per pair as in an evaluation loop, against

* the paper's ``np.bincount(n * a + b)`` confusion matrix (reimplemented here from its
  description: keep valid labels, bincount, reshape), and
* torchmetrics ``MulticlassConfusionMatrix(num_classes=2)`` (skipped when not installed).

Boundary: HD95 on 50 of those pairs against MONAI ``compute_hausdorff_distance(...,
percentile=95)`` (skipped when not installed), with the largest difference between the two.

Every method's pooled matrix is checked against the others before timing is reported.
Printed: pairs per second (best of ``--repeats``) and ratios; on a shared machine the ratios
are more stable than the absolute rates.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable

import cv2
import numpy as np
import torch

from thyroidseg.metrics import ConfusionMatrix
from thyroidseg.metrics.boundary import hausdorff_distance_95
from thyroidseg.runtime import cpu_info


def make_pairs(n_pairs: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target) uint8 {0, 1} arrays (n_pairs, size, size) with ellipse nodules."""
    rng = np.random.default_rng(seed)
    preds = np.zeros((n_pairs, size, size), np.uint8)
    targets = np.zeros_like(preds)
    for k in range(n_pairs):
        centre = rng.integers(size // 4, 3 * size // 4, 2)
        axes = rng.integers(size // 20, size // 5, 2)
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(
            targets[k],
            (int(centre[0]), int(centre[1])),
            tuple(int(a) for a in axes),
            angle,
            0,
            360,
            1,
            -1,
        )
        shift = rng.integers(-8, 9, 2)
        scale = rng.uniform(0.8, 1.2)
        pred_axes = tuple(max(1, int(a * scale)) for a in axes)
        pred_centre = (int(centre[0] + shift[0]), int(centre[1] + shift[1]))
        cv2.ellipse(preds[k], pred_centre, pred_axes, angle, 0, 360, 1, -1)
    return preds, targets


def paper_fast_hist(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """The paper's counting: labels a (truth) and b (prediction), flattened."""
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n**2).reshape(n, n)


def best_rate(
    run: Callable[[], np.ndarray], n_items: int, repeats: int
) -> tuple[float, np.ndarray]:
    """Items per second of the fastest of ``repeats`` runs, and the run's result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return n_items / best, result


def bench_counting(preds: np.ndarray, targets: np.ndarray, repeats: int) -> None:
    n = len(preds)
    preds_t, targets_t = torch.from_numpy(preds), torch.from_numpy(targets)

    def ours_per_pair() -> np.ndarray:
        cm = ConfusionMatrix(2)
        for p, t in zip(preds, targets, strict=True):
            cm.update(p, t)
        return cm.matrix

    def ours_batch() -> np.ndarray:
        return ConfusionMatrix(2).update(preds, targets).matrix

    def ours_torch_per_pair() -> np.ndarray:
        cm = ConfusionMatrix(2)
        for p, t in zip(preds_t, targets_t, strict=True):
            cm.update(p, t)
        return cm.matrix

    def paper() -> np.ndarray:
        hist = np.zeros((2, 2), np.int64)
        for p, t in zip(preds, targets, strict=True):
            hist += paper_fast_hist(t.ravel(), p.ravel(), 2)
        return hist

    methods: dict[str, Callable[[], np.ndarray]] = {
        "thyroidseg, numpy, one update per pair": ours_per_pair,
        "thyroidseg, numpy, one update of (N, H, W)": ours_batch,
        "thyroidseg, torch CPU, one update per pair": ours_torch_per_pair,
        "paper np.bincount(n*a+b), per pair": paper,
    }
    try:
        from torchmetrics.classification import MulticlassConfusionMatrix

        def torchmetrics_per_pair() -> np.ndarray:
            metric = MulticlassConfusionMatrix(num_classes=2)
            for p, t in zip(preds_t, targets_t, strict=True):
                metric.update(p, t)
            return metric.compute().numpy()

        methods["torchmetrics MulticlassConfusionMatrix, per pair"] = torchmetrics_per_pair
    except ImportError:
        print("torchmetrics not installed: its row is skipped")

    rates, reference = {}, None
    for name, run in methods.items():
        rate, matrix = best_rate(run, n, repeats)
        if reference is None:
            reference = matrix
        if not np.array_equal(matrix, reference):
            raise SystemExit(f"{name} counts differ: {matrix.tolist()} vs {reference.tolist()}")
        rates[name] = rate
    print(f"\nConfusion matrix of {n} pairs of {preds.shape[1]}x{preds.shape[2]} binary masks")
    print(f"(all methods give the same matrix {reference.tolist()}; best of {repeats} runs)")
    paper_rate = rates["paper np.bincount(n*a+b), per pair"]
    tm_rate = rates.get("torchmetrics MulticlassConfusionMatrix, per pair")
    print(f"{'method':<52}{'pairs/s':>10}{'x paper':>10}{'x torchmetrics':>16}")
    for name, rate in rates.items():
        vs_tm = f"{rate / tm_rate:>16.1f}" if tm_rate else f"{'-':>16}"
        print(f"{name:<52}{rate:>10,.0f}{rate / paper_rate:>10.1f}{vs_tm}")


def bench_hd95(preds: np.ndarray, targets: np.ndarray, repeats: int) -> None:
    n = len(preds)

    def ours() -> np.ndarray:
        return np.array([hausdorff_distance_95(p, t) for p, t in zip(preds, targets, strict=True)])

    ours_rate, ours_values = best_rate(ours, n, repeats)
    print(
        f"\nHD95 of {n} pairs of {preds.shape[1]}x{preds.shape[2]} masks (best of {repeats} runs)"
    )
    print(f"{'method':<52}{'pairs/s':>10}{'x MONAI':>10}")
    try:
        from monai.metrics import compute_hausdorff_distance
    except ImportError:
        print(f"{'thyroidseg hausdorff_distance_95 (OpenCV EDT)':<52}{ours_rate:>10,.1f}")
        print("MONAI not installed: no comparison")
        return

    def monai() -> np.ndarray:
        pred_t = torch.from_numpy(preds[:, None].astype(bool))
        target_t = torch.from_numpy(targets[:, None].astype(bool))
        with warnings.catch_warnings():  # MONAI's own deprecation notices
            warnings.simplefilter("ignore", FutureWarning)
            return compute_hausdorff_distance(pred_t, target_t, percentile=95).numpy().ravel()

    monai_rate, monai_values = best_rate(monai, n, repeats)
    ours_name = "thyroidseg hausdorff_distance_95 (OpenCV EDT)"
    print(f"{ours_name:<52}{ours_rate:>10,.1f}{ours_rate / monai_rate:>10.1f}")
    print(
        f"{'MONAI compute_hausdorff_distance(percentile=95)':<52}{monai_rate:>10,.1f}{1.0:>10.1f}"
    )
    difference = np.abs(ours_values - monai_values)
    print(f"largest |thyroidseg - MONAI| over the {n} pairs: {difference.max():.2e} pixels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--hd95-pairs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="torch threads (default: 2, the target machine's cores); the numpy paths use one",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs ({cpu_info().model or 'unknown model'}), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    preds, targets = make_pairs(args.pairs, args.size)
    bench_counting(preds, targets, args.repeats)
    bench_hd95(preds[: args.hd95_pairs], targets[: args.hd95_pairs], max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
