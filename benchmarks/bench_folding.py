"""Forward time of the shipped networks with and without batch normalisation folded.

Both stages of the shipped model, at the batches `thyroidseg predict` runs (8 frames of the
whole-frame input, 16 refine crops), in the segmenters' precision (``--amp``) and
channels-last format, on one thread: the two variants alternate ``--repeat`` times and the
median of each is reported, with their ratio and the largest float32 logit difference::

    OMP_NUM_THREADS=1 python benchmarks/bench_folding.py \
        --json benchmarks/results/bench-folding.json

Name the CPU (``lscpu``) beside any number taken from it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from thyroidseg.models.folding import fold_batch_norm
from thyroidseg.models.loading import load_network, shipped_weights
from thyroidseg.runtime import AmpMode, autocast, cpu_info, for_inference

BATCHES = {"whole": 8, "refine": 16}
"""Items per forward pass: `thyroidseg predict`'s frames per batch, and refine crops of them."""


def _seconds(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> float:
    with torch.inference_mode(), autocast(x.device, dtype):
        start = time.perf_counter()
        model(x)
        return time.perf_counter() - start


def _stage(stage: str, amp: AmpMode, repeat: int) -> dict[str, object]:
    stored = load_network(shipped_weights(stage))  # type: ignore[arg-type]
    model, device, dtype = for_inference(stored.network, "cpu", amp)
    folded = fold_batch_norm(model)
    if stored.crops is not None:
        height = width = int(stored.crops["size"])
    else:
        height, width = stored.preprocess_options["size"]
    x = torch.rand(BATCHES[stage], 1, height, width, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        error = (model(x) - folded(x)).abs().max().item()  # float32: autocast is off here
    times: dict[str, list[float]] = {"plain": [], "folded": []}
    for _ in range(repeat + 1):  # the first round warms up
        for name, network in (("plain", model), ("folded", folded)):
            times[name].append(_seconds(network, x, dtype))
    plain, fold = (statistics.median(times[k][1:]) for k in ("plain", "folded"))
    return {
        "stage": stage,
        "batch": list(x.shape),
        "autocast": str(dtype),
        "plain_s": plain,
        "folded_s": fold,
        "folded_over_plain": fold / plain,
        "max_logit_difference_float32": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [_stage(stage, args.amp, args.repeat) for stage in BATCHES]
    for row in rows:
        print(
            f"{row['stage']:>6} {row['batch']}: plain {row['plain_s']:.3f} s, folded "
            f"{row['folded_s']:.3f} s, ratio {row['folded_over_plain']:.2f} "
            f"(max float32 logit difference {row['max_logit_difference_float32']:.1e})"
        )
    result = {"cpu": cpu_info().model or platform.processor(), "torch": torch.__version__}
    if args.json:
        args.json.write_text(json.dumps({**result, "amp": args.amp, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
