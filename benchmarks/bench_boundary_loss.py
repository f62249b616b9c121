"""The boundary loss's cost per batch, and the size of each term of ``dice_ce_boundary``.

Run from the project root::

    python benchmarks/bench_boundary_loss.py
    python benchmarks/bench_boundary_loss.py --sizes 128 192 --batch 16 --repeats 20

Targets: ``--batch`` masks per size with one random filled ellipse each (seeded). Timed, best
of ``--repeats``, on the CPU: forward + backward of ``DiceCELoss`` and of
``DiceCEBoundaryLoss`` on the same logits, the signed distance maps alone, and the two
distance transforms of each mask with the 5 x 5 mask ``DIST_MASK_5`` (which the loss uses)
against OpenCV's exact ``DIST_MASK_PRECISE``, with the largest relative difference between
the two (pixels at least 1 away from the outline). For scale: one forward + backward pass of
the default network, ``UNet(base_channels=24, stem_stride=2)``, on a batch of that size.

Sizes of the terms (Dice, cross-entropy, boundary), and the norm of each term's gradient on
the logits, at three predictions of the same targets:
an untrained network (logits ~ N(0, 0.1²), every probability near 0.5), a near miss (the
target's ellipse moved by ``--shift`` pixels and scaled by 1.1, logits ±4) and the target
itself (logits ±10).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch import Tensor

from thyroidseg.models.unet import UNet
from thyroidseg.training.boundary_loss import BoundaryLoss, distance_maps
from thyroidseg.training.losses import DiceCEBoundaryLoss, DiceCELoss, SoftDiceLoss


def ellipses(batch: int, size: int, seed: int, shift: int = 0, scale: float = 1.0) -> Tensor:
    """``(batch, size, size)`` int64 masks, one filled ellipse each (same ellipses per seed)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((batch, size, size), np.uint8)
    for mask in masks:
        centre = rng.integers(size // 3, 2 * size // 3, 2) + shift
        axes = (rng.integers(size // 10, size // 3, 2) * scale).astype(int)
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), angle,
                    0, 360, 1, -1)  # fmt: skip
    return torch.from_numpy(masks).long()


def logits_of(mask: Tensor, scale: float) -> Tensor:
    """Two-class logits ``(N, 2, H, W)`` whose softmax puts ``sigmoid(2 scale)`` on ``mask``."""
    sign = 2.0 * mask.float() - 1.0
    return torch.stack([-scale * sign, scale * sign], dim=1)


def best_ms(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Milliseconds of the fastest of ``repeats`` runs of each, interleaved (one warm-up).

    Interleaving gives every candidate the same share of a busy machine's quiet moments.
    """
    best = dict.fromkeys(runs, float("inf"))
    for repeat in range(repeats + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if repeat:
                best[name] = min(best[name], 1e3 * (time.perf_counter() - start))
    return best


def timings(target: Tensor, repeats: int) -> None:
    n, h, w = target.shape
    logits = torch.randn(n, 2, h, w, generator=torch.Generator().manual_seed(0))
    logits.requires_grad_()
    masks = (target > 0).numpy().astype(np.uint8)

    def step(loss: torch.nn.Module) -> Callable[[], object]:
        return lambda: loss(logits, target).backward()

    def transforms(mask_size: int) -> Callable[[], list[np.ndarray]]:
        return lambda: [
            cv2.distanceTransform(m, cv2.DIST_L2, mask_size) for m in (*masks, *1 - masks)
        ]

    rows = best_ms(
        {
            "DiceCELoss, forward + backward": step(DiceCELoss()),
            "DiceCEBoundaryLoss, forward + backward": step(DiceCEBoundaryLoss()),
            "signed distance maps (distance_maps)": lambda: distance_maps(target > 0),
            "2 distance transforms, DIST_MASK_PRECISE": transforms(cv2.DIST_MASK_PRECISE),
            "2 distance transforms, DIST_MASK_5": transforms(cv2.DIST_MASK_5),
        },
        repeats,
    )
    print(f"\n{n} x {h} x {w}, best of {repeats} (ms per batch)")
    for name, ms in rows.items():
        print(f"  {name:45s} {ms:8.2f}")
    extra = rows["DiceCEBoundaryLoss, forward + backward"] - rows["DiceCELoss, forward + backward"]
    print(f"  {'extra for the boundary term':45s} {extra:8.2f}")
    model = UNet(base_channels=24, stem_stride=2)
    images = torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(1))
    (network,) = best_ms({"": lambda: model(images).square().mean().backward()}, 3).values()
    print(f"  {'(default UNet, forward + backward, best of 3)':45s} {network:8.2f}")
    exact, approx = (
        np.stack(transforms(size)()) for size in (cv2.DIST_MASK_PRECISE, cv2.DIST_MASK_5)
    )
    far = exact >= 1
    error = np.abs(approx[far] - exact[far]) / exact[far]
    print(f"  DIST_MASK_5 against exact: largest relative difference {error.max():.4f}")


def magnitudes(target: Tensor, shift: int, seed: int) -> None:
    n, h, w = target.shape
    noise = torch.Generator().manual_seed(seed)
    predictions = {
        "untrained (logits ~ N(0, 0.1^2))": 0.1 * torch.randn(n, 2, h, w, generator=noise),
        f"near miss (moved {shift} px, x1.1, logits +-4)": logits_of(
            ellipses(n, h, seed, shift=shift, scale=1.1), 4.0
        ),
        "the target (logits +-10)": logits_of(target, 10.0),
    }
    print(f"\nterms at {n} x {h} x {w}")
    terms = {"Dice": SoftDiceLoss(), "CE": torch.nn.CrossEntropyLoss(), "L_B": BoundaryLoss()}
    print("  prediction: value (norm of the gradient on the logits) of each term")
    for name, logits in predictions.items():
        row = []
        for term, loss in terms.items():
            logits = logits.detach().requires_grad_()
            value = loss(logits, target)
            value.backward()
            row.append(f"{term} {value.item():8.4f} ({logits.grad.norm().item():.1e})")
        print(f"  {name:45s} " + "  ".join(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 192])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--shift", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} thread(s), OpenCV {cv2.__version__}")
    for size in args.sizes:
        target = ellipses(args.batch, size, args.seed)
        timings(target, args.repeats)
        magnitudes(target, args.shift, args.seed)


if __name__ == "__main__":
    main()
