"""Time one pass over real DDTI with and without the frame cache, and phantom generation.

Run from the project root (real data at ``../shared/data/ddti``)::

    python benchmarks/bench_data.py                      # library preprocess
    python benchmarks/bench_data.py --preprocess none    # resize only

Measured, best of ``--repeats``:

* ``uncached pass``: ``ds[i]`` for every item of ``ThyroidDataset(cache=False)``, which
  decodes the PNG pair and preprocesses on every access (what a loader without a cache does
  every epoch);
* ``cache build``: constructing ``ThyroidDataset(cache=True)``, paid once;
* ``cached pass``: ``ds[i]`` for every item of the cached dataset, and the same with the
  default :class:`~thyroidseg.augment.Augment` as transform;
* ``phantoms``: ``synthetic_phantoms(64, size=(128, 128))``.

Printed: seconds, items per second and the ratio uncached / cached. The cached items are
checked equal to the uncached ones before any time is reported.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from thyroidseg.augment import Augment
from thyroidseg.data import ThyroidDataset
from thyroidseg.synthetic import synthetic_phantoms

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ddti"


def best_time(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def one_pass(ds: ThyroidDataset) -> None:
    for i in range(len(ds)):
        ds[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--preprocess", choices=("default", "none"), default="default")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = dict(
        size=tuple(args.size),
        preprocess=None if args.preprocess == "none" else "default",
        progress=False,
    )

    lazy = ThyroidDataset(args.root, cache=False, **options)
    start = time.perf_counter()
    cached = ThyroidDataset(args.root, cache=True, **options)
    build = time.perf_counter() - start
    for i in range(0, len(lazy), 7):  # same items either way
        assert torch.equal(lazy[i]["image"], cached[i]["image"]), lazy.names[i]
        assert torch.equal(lazy[i]["mask"], cached[i]["mask"]), lazy.names[i]

    n = len(cached)
    uncached_pass = best_time(lambda: one_pass(lazy), args.repeats)
    cached_pass = best_time(lambda: one_pass(cached), args.repeats)
    augmented = cached.with_transform(Augment(seed=0))
    augmented_pass = best_time(lambda: one_pass(augmented), args.repeats)
    phantoms = best_time(lambda: synthetic_phantoms(64, size=(128, 128)), args.repeats)

    print(f"DDTI {args.root} ({n} pairs), size {args.size}, preprocess={args.preprocess}")
    print(f"  uncached pass       {uncached_pass:7.3f} s  {n / uncached_pass:8.0f} items/s")
    print(f"  cache build (once)  {build:7.3f} s")
    print(f"  cached pass         {cached_pass:7.3f} s  {n / cached_pass:8.0f} items/s")
    print(f"  cached + Augment()  {augmented_pass:7.3f} s  {n / augmented_pass:8.0f} items/s")
    print(f"  ratio uncached / cached pass: {uncached_pass / cached_pass:.1f}x")
    print(f"  ratio uncached / cached + Augment(): {uncached_pass / augmented_pass:.1f}x")
    print(f"phantoms: 64 frames of 128x128 in {phantoms:.3f} s")


if __name__ == "__main__":
    main()
