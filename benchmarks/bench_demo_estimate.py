"""How close the demo's announced training time is to the time its training takes.

``thyroidseg demo`` times the parts of one epoch before it trains and prints the estimate
(`thyroidseg.training.demo.run_demo`, ``DemoResult.estimated_seconds``). This runs small
demos on one thread and prints, for each, the estimate, the measured training time and their
ratio (measured / estimated); within 0.5-2 is the aim. A timing, so a benchmark, not a test:
on a machine shared with other jobs the ratio moves with the load (name the CPU, ``lscpu``).

    OMP_NUM_THREADS=1 python benchmarks/bench_demo_estimate.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from thyroidseg.training.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 6])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for epochs in args.epochs:
        with tempfile.TemporaryDirectory() as folder:
            result = run_demo(
                Path(folder) / "demo", n_images=32, epochs=epochs, size=(64, 64), progress=False
            )
        ratio = result.training_seconds / result.estimated_seconds
        print(
            f"{epochs} epochs: estimated {result.estimated_seconds:.1f} s, trained in "
            f"{result.training_seconds:.1f} s, ratio {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
