"""CPU throughput of ``thyroidseg predict`` (frames/s), with and without TTA, next to preprocessing.

All rows are measured in the same run, on the same DDTI frames, with the same `Segmenter`
(device ``cpu``, the model's preprocessing and post-processing, ``amp`` as given):

============================  ==============================================================
row                           what one pass times
============================  ==============================================================
``preprocess``                `thyroidseg.preprocess` of every frame, already in memory,
                              with the model's options: the share of the work that is not
                              the network
``predict_many``              `Segmenter.predict_many` on the frames in memory (preprocess,
                              network, masks back at the frame's size, post-processing)
``predict_folder``            `predict_folder` from the image folder into a fresh
                              temporary folder: reading the files and writing the masks too,
                              i.e. ``thyroidseg predict IN_DIR OUT_DIR``
``folder, all outputs``       the same with overlays, probability maps and measurements.csv
                              (``--overlay --probabilities --measure``)
============================  ==============================================================

each without and with flip TTA (``tta=True`` runs the network twice). One frame is segmented
first as a warm-up; each row is the best of ``--repeat`` passes. The table gives frames/s,
milliseconds per frame, the time per frame as a multiple of preprocessing's, and TTA's cost
over the same row without it. The CPU model (`thyroidseg.runtime.cpu_info`), whether bf16
autocast was used, and the thread counts are printed with it and stored in ``--json``.

Run from the repository root (without ``--model``: the model shipped in the package)::

    OMP_NUM_THREADS=1 python benchmarks/bench_predict.py --model runs/fold0/last.pt --limit 40
    python benchmarks/bench_predict.py --json benchmarks/results/predict.json  # 365 frames

Timings on a shared machine are noisy: read the ratios, measured in the same run, rather
than the absolute numbers, and run the full benchmark on a quiet machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from thyroidseg import Segmenter, __version__, preprocess
from thyroidseg.inference import predict_folder
from thyroidseg.io.files import atomic_write_bytes, list_images, read_image
from thyroidseg.runtime import AMP_MODES, cpu_info

ROOT = Path(__file__).resolve().parents[1]
DDTI_IMAGES = ROOT.parent / "shared" / "data" / "ddti" / "images"


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    """The shortest wall time of ``repeat`` calls of ``run``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def frame_folder(images: dict[str, Path], limit: int | None, into: Path) -> list[Path]:
    """The first ``limit`` frames of ``images`` (by stem), linked (or copied) into ``into``.

    ``predict_folder`` segments a whole folder, so a subset needs a folder of its own; the
    files are symbolic links where the file system allows them, else copies, and live in a
    temporary folder only.
    """
    chosen = list(images.values())[:limit]
    into.mkdir(parents=True)
    for source in chosen:
        target = into / source.name
        try:
            target.symlink_to(source.resolve())
        except OSError:
            shutil.copyfile(source, target)
    return chosen


def measure_rows(
    segmenter: Segmenter, frames: list[np.ndarray], folder: Path, work: Path, repeat: int
) -> list[dict[str, object]]:
    """Time every row of the table; each returns ``{"row", "tta", "seconds"}``."""
    passes = itertools.count()  # each folder pass writes into a folder of its own

    def into_fresh_folder(tta: bool, extras: bool) -> Callable[[], object]:
        def run() -> object:
            out = work / f"out{next(passes)}"
            return predict_folder(
                segmenter,
                folder,
                out,
                tta=tta,
                overlays=extras,
                probabilities=extras,
                measurements=extras,
                progress=False,
            )

        return run

    options = segmenter.preprocess_options
    rows = [
        {
            "row": "preprocess",
            "tta": None,
            "seconds": best_seconds(lambda: [preprocess(f, **options) for f in frames], repeat),
        }
    ]
    for tta in (False, True):
        timed = {
            "predict_many": lambda tta=tta: segmenter.predict_many(frames, tta=tta),
            "predict_folder": into_fresh_folder(tta, extras=False),
            "folder, all outputs": into_fresh_folder(tta, extras=True),
        }
        for name, run in timed.items():
            rows.append({"row": name, "tta": tta, "seconds": best_seconds(run, repeat)})
    return rows


def add_ratios(rows: list[dict[str, object]], frames: int) -> None:
    """Add frames/s, ms/frame, ``x preprocess`` and ``tta_cost`` to every row, in place."""
    base = rows[0]["seconds"]
    without_tta = {row["row"]: row["seconds"] for row in rows if row["tta"] is False}
    for row in rows:
        seconds = row["seconds"]
        row["frames_per_s"] = frames / seconds
        row["ms_per_frame"] = 1000 * seconds / frames
        row["x_preprocess"] = seconds / base
        row["tta_cost"] = seconds / without_tta[row["row"]] if row["tta"] else None


def print_table(rows: list[dict[str, object]]) -> None:
    print(
        f"  {'row':<20}{'TTA':>5}{'frames/s':>10}{'ms/frame':>10}"
        f"{'x preprocess':>14}{'x no TTA':>10}"
    )
    for row in rows:
        tta = "-" if row["tta"] is None else ("on" if row["tta"] else "off")
        cost = f"{row['tta_cost']:.2f}" if row["tta_cost"] is not None else "-"
        print(
            f"  {row['row']:<20}{tta:>5}{row['frames_per_s']:>10.1f}{row['ms_per_frame']:>10.1f}"
            f"{row['x_preprocess']:>14.1f}{cost:>10}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        metavar="CHECKPOINT",
        help="checkpoint(s) to load (several: an ensemble); default: the shipped model",
    )
    parser.add_argument(
        "--data", type=Path, default=DDTI_IMAGES, help="folder of frames (default: DDTI images)"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N frames (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="passes per row, best kept")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per forward pass")
    parser.add_argument("--amp", choices=AMP_MODES, default="auto", help="as for predict")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if not args.data.is_dir():
        sys.exit(f"no folder of frames at {args.data} (pass --data)")
    images = list_images(args.data)
    if not images:
        sys.exit(f"{args.data} holds no images")

    # threads=None: the process's thread counts (OMP_NUM_THREADS), which the JSON records
    options = {"device": "cpu", "amp": args.amp, "batch_size": args.batch_size, "threads": None}
    if args.model:
        segmenter = Segmenter.from_checkpoint(args.model, **options)
        model = [str(path) for path in args.model]
    else:
        segmenter = Segmenter.pretrained(**options)
        model = "shipped"
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as temporary:
        work = Path(temporary)
        chosen = frame_folder(images, args.limit, work / "frames")
        frames = [read_image(path) for path in chosen]
        segmenter.predict(frames[0])  # warm-up: first-call allocations, autocast set-up
        rows = measure_rows(segmenter, frames, work / "frames", work, args.repeat)
    add_ratios(rows, len(frames))

    cpu = cpu_info().model or platform.processor() or "unknown CPU"
    bf16 = segmenter.amp_dtype == torch.bfloat16
    shapes = sorted({frame.shape[:2] for frame in frames})
    print(
        f"predict throughput on {len(frames)} frames of {args.data} (shapes {shapes}), "
        f"network input {segmenter.preprocess_options.get('size', 'default')}, "
        f"batch {segmenter.batch_size}"
    )
    print(
        f"CPU: {cpu}; bf16 autocast: {'yes' if bf16 else 'no'} (amp={args.amp}); "
        f"torch threads {torch.get_num_threads()}, OpenCV threads {cv2.getNumThreads()}; "
        f"post-processing: fill_holes={segmenter.fill_holes}, min_area={segmenter.min_area}, "
        f"keep_largest={segmenter.keep_largest}; model's default TTA: {segmenter.tta}"
    )
    print_table(rows)
    if args.json is not None:
        result = {
            "thyroidseg": __version__,
            "torch": torch.__version__,
            "model": model,
            "data": str(args.data),
            "frames": len(frames),
            "frame_shapes": [list(shape) for shape in shapes],
            "preprocess_options": segmenter.preprocess_options,
            "batch_size": segmenter.batch_size,
            "cpu": cpu,
            "amp": args.amp,
            "bf16": bf16,
            "torch_threads": torch.get_num_threads(),
            "opencv_threads": cv2.getNumThreads(),
            "repeat": args.repeat,
            "rows": rows,
        }
        atomic_write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
        print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
