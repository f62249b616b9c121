"""Frames per second of `thyroidseg predict` on a 200-frame DICOM cine loop, against PNG.

The loop is built from real DDTI frames (``--data``, cycled to ``--frames`` frames, all
resized to the first frame's size), written once as one uncompressed multi-frame DICOM
(`thyroidseg.io.dicom.write_dicom`, with an ultrasound region of 0.1 mm pixels) and once as a
folder of PNG files. Both go through the same ``predict_folder`` with the shipped
model and ``--measure`` (spacing read from the file for the loop), best of ``--repeat``
runs into a fresh folder, and the ratio DICOM / PNG is printed beside the CPU:

    python benchmarks/bench_dicom.py --json benchmarks/results/bench-dicom.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from thyroidseg import Segmenter
from thyroidseg.inference import predict_folder
from thyroidseg.io.dicom import write_dicom
from thyroidseg.io.files import atomic_write_bytes, read_image, write_image
from thyroidseg.io.outputs import check_outputs
from thyroidseg.runtime import cpu_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ddti")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    if args.json is not None:
        check_outputs([args.json])
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    sources = sorted((Path(args.data) / "images").glob("*.png"))
    first = read_image(sources[0], grayscale=True)
    height, width = first.shape
    frames = np.stack(
        [
            cv2.resize(read_image(sources[i % len(sources)], grayscale=True), (width, height))
            for i in range(args.frames)
        ]
    )
    segmenter = Segmenter.pretrained(device="cpu", threads=args.threads)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        loop = write_dicom(work / "loop.dcm", frames, region_spacing_mm=0.1)
        pngs = work / "pngs"
        for i, frame in enumerate(frames):
            write_image(pngs / f"loop_f{i + 1:04d}.png", frame)
        seconds = {
            "dicom": _best(segmenter, loop, work / "out-dicom", args.repeat),
            "png": _best(segmenter, pngs, work / "out-png", args.repeat),
        }
    rows = {kind: round(args.frames / s, 1) for kind, s in seconds.items()}
    result = {
        "cpu": cpu_info().model or platform.processor(),
        "threads": args.threads,
        "frames": args.frames,
        "frame_size": [height, width],
        "frames_per_second": rows,
        "dicom_over_png": round(rows["dicom"] / rows["png"], 3),
    }
    print(json.dumps(result, indent=1))
    if args.json is not None:
        atomic_write_bytes(args.json, json.dumps(result, indent=1).encode())
        print(f"written {args.json}")


def _best(segmenter: Segmenter, inputs: Path, out: Path, repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` runs of ``predict_folder`` into fresh folders."""
    times = []
    for k in range(repeat):
        start = time.perf_counter()
        predict_folder(segmenter, inputs, out / str(k), measurements=True, progress=False)
        times.append(time.perf_counter() - start)
    return min(times)


if __name__ == "__main__":
    main()
