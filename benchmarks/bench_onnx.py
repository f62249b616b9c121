"""The exported segmenter in ONNX Runtime against PyTorch: speed, start-up, memory, masks.

One run exports the shipped two-stage model (``thyroidseg export --onnx``: both networks and
the JSON description) into a temporary folder, then segments the same DDTI frames with each
backend in a fresh process of its own, one thread each (``threads=1``,
``OMP_NUM_THREADS=1``):

==================  ========================================================================
backend             what runs
==================  ========================================================================
``onnx``            `thyroidseg.inference.OnnxSegmenter.from_export` (float32; the worker
                    blocks ``import torch`` and checks that it never happened)
``pytorch``         ``Segmenter.pretrained()``, the default: ``amp="auto"``, bf16 autocast
                    on a CPU with native bf16 (`thyroidseg.runtime.cpu_has_native_bf16`)
``pytorch-fp32``    ``Segmenter.pretrained(amp="off")``, the arithmetic ONNX Runtime does
==================  ========================================================================

Each worker reports its start-up (from its first line to a segmenter ready to use: imports
and loading, after which one frame is segmented as a warm-up), its throughput
(``predict_many`` on the frame files, ``batch_size`` 8, the model's TTA and
post-processing: frames/s of wall time and of process CPU time, each the best of
``--repeat`` passes; CPU time is less sensitive to other jobs) and its peak resident memory
(``getrusage`` max RSS of that process alone). The parent prints the table and the ratios
of ``onnx`` to each PyTorch row, and compares the masks: per-frame IoU of the ONNX masks
against each PyTorch row (mean and worst frame; 1 where both are empty).

Run from the repository root (365 frames, about 3 minutes on 2 busy cores)::

    OMP_NUM_THREADS=1 python benchmarks/bench_onnx.py --json benchmarks/results/bench-onnx.json
    OMP_NUM_THREADS=1 python benchmarks/bench_onnx.py --limit 40   # a quick look

Timings on a shared machine are noisy: read the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DDTI_IMAGES = ROOT.parent / "shared" / "data" / "ddti" / "images"
BACKENDS = ("onnx", "pytorch", "pytorch-fp32")

BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in the onnx worker ({name})")
sys.meta_path.insert(0, _NoTorch())
"""


def worker(backend: str, export: Path, frames: list[str], repeat: int, masks: Path) -> dict:
    """Start-up, throughput and peak memory of one backend, in this (fresh) process."""
    start = time.perf_counter()
    if backend == "onnx":
        from thyroidseg.inference import OnnxSegmenter  # noqa: PLC0415 (timed import)

        segmenter = OnnxSegmenter.from_export(export, threads=1)
    else:
        from thyroidseg.inference import Segmenter  # noqa: PLC0415 (timed import)

        amp = "off" if backend == "pytorch-fp32" else "auto"
        segmenter = Segmenter.pretrained(device="cpu", amp=amp, threads=1)
    ready = time.perf_counter() - start
    engine = sys.modules["onnxruntime" if backend == "onnx" else "torch"]
    segmenter.predict_many(frames[:1])  # warm-up
    seconds, cpu = [], []
    for _ in range(repeat):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        result = segmenter.predict_many(frames)
        seconds.append(time.perf_counter() - begin)
        cpu.append(time.process_time() - begin_cpu)
    np.savez_compressed(masks, *[np.packbits(mask) for mask in result])
    return {
        "backend": backend,
        "engine": f"{engine.__name__} {engine.__version__}",
        "startup_s": ready,
        "seconds": min(seconds),
        "frames_per_s": len(frames) / min(seconds),
        "frames_per_cpu_s": len(frames) / min(cpu),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_imported": "torch" in sys.modules,
        "shapes": sorted({tuple(mask.shape) for mask in result}),
    }


def run_worker(backend: str, export: Path, frames: list[str], repeat: int, folder: Path) -> dict:
    """`worker` in a fresh interpreter (torch blocked for ``onnx``); its report."""
    arguments = json.dumps([backend, str(export), frames, repeat, str(folder / backend)])
    code = (BLOCK_TORCH if backend == "onnx" else "") + (
        f"import json, sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from bench_onnx import worker\n"
        f"print(json.dumps(worker(*json.loads({arguments!r}))))\n"
    )
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=environment
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def ious(a: Path, b: Path) -> np.ndarray:
    """Per-frame IoU between two workers' stored masks (packed bits; 1 where both empty)."""
    with np.load(a) as first, np.load(b) as second:
        values = []
        for key in first.files:
            x, y = first[key], second[key]
            union = np.unpackbits(x | y).sum()
            values.append(1.0 if union == 0 else np.unpackbits(x & y).sum() / union)
    return np.array(values)


def export_shipped(folder: Path) -> Path:
    """``thyroidseg export --onnx folder/unet.onnx`` of the shipped model."""
    path = folder / "unet.onnx"
    command = [sys.executable, "-m", "thyroidseg", "export", "--onnx", str(path)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DDTI_IMAGES, help="folder of frames")
    parser.add_argument("--limit", type=int, help="the first N frames only (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="passes per backend (best)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results")
    args = parser.parse_args()
    frames = [str(p) for p in sorted(args.images.glob("*.png"))][: args.limit]
    if not frames:
        parser.error(f"no PNG frames in {args.images}")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        export = export_shipped(folder)
        rows = [run_worker(b, export, frames, args.repeat, folder) for b in BACKENDS]
        agreement = {
            other: ious(folder / "onnx.npz", folder / f"{other}.npz") for other in BACKENDS[1:]
        }
    onnx = rows[0]
    print(f"{len(frames)} frames of {args.images}, one thread each, {cpu_model()}")
    print(f"{'backend':<14}{'frames/s':>10}{'frames/CPU s':>14}{'start-up s':>12}{'peak MB':>10}")
    for row in rows:
        print(
            f"{row['backend']:<14}{row['frames_per_s']:>10.2f}{row['frames_per_cpu_s']:>14.2f}"
            f"{row['startup_s']:>12.2f}{row['peak_rss_mb']:>10.0f}"
        )
    ratios = {}
    for row in rows[1:]:
        ratios[row["backend"]] = {
            "frames_per_s": onnx["frames_per_s"] / row["frames_per_s"],
            "frames_per_cpu_s": onnx["frames_per_cpu_s"] / row["frames_per_cpu_s"],
            "startup": onnx["startup_s"] / row["startup_s"],
            "peak_rss": onnx["peak_rss_mb"] / row["peak_rss_mb"],
        }
        r = ratios[row["backend"]]
        print(
            f"onnx / {row['backend']}: speed x{r['frames_per_s']:.2f} (per CPU second "
            f"x{r['frames_per_cpu_s']:.2f}), start-up "
            f"x{r['startup']:.2f}, peak memory x{r['peak_rss']:.2f}"
        )
    masks = {}
    for other, values in agreement.items():
        masks[other] = {"mean_iou": float(values.mean()), "worst_iou": float(values.min())}
        print(
            f"masks, onnx vs {other}: mean IoU {values.mean():.4f}, worst frame "
            f"{values.min():.4f}, identical frames {int((values == 1).sum())}/{len(values)}"
        )
    assert not onnx["torch_imported"], "the onnx worker imported torch"
    if args.json is not None:
        result = {
            "command": " ".join(["python", *sys.argv]),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "frames": len(frames),
            "repeat": args.repeat,
            "rows": rows,
            "ratios_onnx_to": ratios,
            "masks_onnx_vs": masks,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {args.json}")
    return 0


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (without importing torch here)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
