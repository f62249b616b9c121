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
  default :class:`~thyroidseg.data.augment.Augment` as transform;
* ``phantoms``: ``synthetic_phantoms(64, size=(128, 128))``.

Peer (when MONAI is installed, e.g. ``bench-env/bin/python benchmarks/bench_data.py``): the
same passes with MONAI's ``Dataset`` / ``CacheDataset`` and the dictionary transforms a MONAI
user would write for ``preprocess=None`` (``LoadImaged`` with PIL, ``EnsureChannelFirstd``,
``Resized`` bilinear/nearest, ``ScaleIntensityRanged`` to [0, 1]), and, after the cache,
random flip, affine, contrast/gamma, Gaussian noise and smoothing with the probabilities of
:class:`~thyroidseg.data.augment.Augment`. MONAI's numbers are only comparable with the
``--preprocess none`` run.

Printed: seconds, items per second and ratios. The cached items are checked equal to the
uncached ones before any time is reported.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from thyroidseg.data import ThyroidDataset
from thyroidseg.data.augment import Augment
from thyroidseg.data.synthetic import synthetic_phantoms

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ddti"


def best_time(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def one_pass(ds: Sequence[object]) -> None:
    for i in range(len(ds)):
        ds[i]


def monai_passes(root: Path, size: tuple[int, int], repeats: int) -> dict[str, float] | None:
    """Seconds for MONAI's uncached pass, cache build, cached pass, cached + augmentation."""
    try:
        from monai.data import CacheDataset
        from monai.data import Dataset as MonaiDataset
        from monai.transforms import (
            Compose,
            EnsureChannelFirstd,
            LoadImaged,
            RandAdjustContrastd,
            RandAffined,
            RandFlipd,
            RandGaussianNoised,
            RandGaussianSmoothd,
            Resized,
            ScaleIntensityRanged,
        )
    except ImportError:
        return None
    keys = ["image", "mask"]
    files = [
        {"image": str(path), "mask": str(root / "masks" / path.name)}
        for path in sorted((root / "images").glob("*.png"))
    ]
    prepare = Compose(
        [
            LoadImaged(keys, reader="PILReader"),
            EnsureChannelFirstd(keys),
            Resized(keys, spatial_size=size, mode=("bilinear", "nearest")),
            ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0, b_max=1),
        ]
    )
    augment = Compose(
        [
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandAffined(
                keys,
                prob=0.7,
                rotate_range=0.17,
                scale_range=0.1,
                translate_range=(0.05 * size[0], 0.05 * size[1]),
                shear_range=0.09,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandAdjustContrastd("image", prob=0.8, gamma=(0.8, 1.25)),
            RandGaussianNoised("image", prob=0.3, std=0.05),
            RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0)),
        ]
    )
    uncached = MonaiDataset(files, prepare)
    start = time.perf_counter()
    cached = CacheDataset(files, prepare, num_workers=1, progress=False)
    build = time.perf_counter() - start
    both = Compose([*prepare.transforms, *augment.transforms]).set_random_state(seed=0)
    augmented = CacheDataset(files, both, num_workers=1, progress=False)  # caches `prepare`
    cache_bytes = sum(
        value.numel() * value.element_size()
        for item in cached._cache  # MONAI's cached items (internal, read-only here)
        for value in item.values()
        if isinstance(value, torch.Tensor)
    )
    return {
        "cache_mb": cache_bytes / 1e6,
        "uncached": best_time(lambda: one_pass(uncached), repeats),
        "build": build,
        "cached": best_time(lambda: one_pass(cached), repeats),
        "augmented": best_time(lambda: one_pass(augmented), repeats),
    }


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
    cache_mb = (
        (cached.load_preprocessed(0)[0].nbytes + cached.load_preprocessed(0)[1].nbytes) * n / 1e6
    )
    uncached_pass = best_time(lambda: one_pass(lazy), args.repeats)
    cached_pass = best_time(lambda: one_pass(cached), args.repeats)
    augmented = cached.with_transform(Augment(seed=0))
    augmented_pass = best_time(lambda: one_pass(augmented), args.repeats)
    phantoms = best_time(lambda: synthetic_phantoms(64, size=(128, 128)), args.repeats)

    print(f"DDTI {args.root} ({n} pairs), size {args.size}, preprocess={args.preprocess}")
    print(f"  uncached pass       {uncached_pass:7.3f} s  {n / uncached_pass:8.0f} items/s")
    print(f"  cache build (once)  {build:7.3f} s  ({cache_mb:.1f} MB)")
    print(f"  cached pass         {cached_pass:7.3f} s  {n / cached_pass:8.0f} items/s")
    print(f"  cached + Augment()  {augmented_pass:7.3f} s  {n / augmented_pass:8.0f} items/s")
    print(f"  ratio uncached / cached pass: {uncached_pass / cached_pass:.1f}x")
    print(f"  ratio uncached / cached + Augment(): {uncached_pass / augmented_pass:.1f}x")
    print(f"phantoms: 64 frames of 128x128 in {phantoms:.3f} s")

    peer = monai_passes(args.root, tuple(args.size), args.repeats)
    if peer is None:
        print("MONAI not installed: no peer measured")
        return
    print("MONAI (compare with --preprocess none)")
    print(f"  uncached pass       {peer['uncached']:7.3f} s  {n / peer['uncached']:8.0f} items/s")
    print(f"  CacheDataset build  {peer['build']:7.3f} s  ({peer['cache_mb']:.1f} MB)")
    print(f"  cached pass         {peer['cached']:7.3f} s  {n / peer['cached']:8.0f} items/s")
    print(f"  cached + random     {peer['augmented']:7.3f} s  {n / peer['augmented']:8.0f} items/s")
    for label, ours, theirs in [
        ("uncached pass", uncached_pass, peer["uncached"]),
        ("cache build", build, peer["build"]),
        ("cached pass", cached_pass, peer["cached"]),
        ("cached + augmentation", augmented_pass, peer["augmented"]),
        ("cache memory", cache_mb, peer["cache_mb"]),
    ]:
        print(f"  ratio MONAI / thyroidseg, {label}: {theirs / ours:.3g}x")


if __name__ == "__main__":
    main()
