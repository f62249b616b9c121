"""Speed, memory and size of thyroidseg's UNet against MONAI and smp U-Nets, in one run.

For every model, in a fresh subprocess (so peak memory is that model's alone):

- parameters, and forward GFLOPs for one 1 x 256 x 256 image (``FlopCounterMode``; a
  multiply-add counts 2);
- training step time: batch 8 x 1 x 256 x 256, Adam, cross-entropy, median of 3 steps
  (1 with ``--quick``) after one warm-up step;
- inference throughput at batch size 1 (``torch.inference_mode``): 1 / median time of 10
  images (3 with ``--quick``) after two warm-up images;
- peak resident memory of the process (``getrusage`` max RSS) after training, and the RSS
  before the first step, so the difference is what training added;

each in float32 and in bfloat16 autocast + channels-last memory format. The bf16 run also
reports its logit error at inference: the largest absolute difference from float32 logits on
the same input, divided by the largest absolute float32 logit.

Run it from the repository root with the benchmark environment, which has the peers::

    bench-env/bin/python benchmarks/bench_model.py            # about 5 minutes on 2 cores
    bench-env/bin/python benchmarks/bench_model.py --quick    # fewer steps

Peers that cannot be imported are listed as unavailable with the reason. Timings on a shared
machine are noisy: read the ratios to ``thyroidseg UNet()`` printed at the end, measured in
the same run, rather than the absolute numbers.

``--accuracy DDTI_DIR`` instead trains each model for a fixed number of steps on the DDTI
frames (``images/``, ``masks/``, ``metadata.csv``) resized to 128 x 128, with one fifth of the
``leak_group`` groups held out, and prints the held-out nodule Dice and IoU. It is a short
sanity check that a cheaper architecture learns as well as the wider ones under identical
conditions (same data, steps, loss, optimiser and precision), not a tuned result::

    bench-env/bin/python benchmarks/bench_model.py --accuracy ../shared/data/ddti
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BATCH = 8
SIZE = 256


def _thyroidseg(**kwargs: object) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from thyroidseg.models.unet import UNet

        return UNet(1, 2, **kwargs)

    return build


def _monai_basic_unet() -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=2)


def _monai_unet() -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
    )


def _smp_unet() -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=2)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "thyroidseg UNet()": _thyroidseg(),
    "thyroidseg plain base-32": _thyroidseg(base_channels=32, downsample="maxpool", residual=False),
    "MONAI BasicUNet": _monai_basic_unet,
    "MONAI UNet 16..256 res": _monai_unet,
    "smp Unet resnet34": _smp_unet,
}
"""Models run by default, the reference (ours, default configuration) first."""

EXTRA_MODELS: dict[str, Callable[[], nn.Module]] = {
    "thyroidseg base-16 maxpool": _thyroidseg(downsample="maxpool"),
    "thyroidseg base-16 plain": _thyroidseg(residual=False),
    "thyroidseg base-32": _thyroidseg(base_channels=32),
    "thyroidseg base-8": _thyroidseg(base_channels=8),
    "thyroidseg paper base-64": _thyroidseg(
        base_channels=64, downsample="maxpool", residual=False, norm="none"
    ),
}
"""Ablations of our configuration, run with ``--models``."""


def _gflops(model: nn.Module) -> float:
    """Forward GFLOPs for one 1 x 256 x 256 image (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, SIZE, SIZE))
    return counter.get_total_flops() / 1e9


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _worker(name: str, precision: str, steps: int, infer: int) -> dict[str, object]:
    """Measure one model in one precision; runs in its own process."""
    torch.manual_seed(0)
    try:
        model = {**MODELS, **EXTRA_MODELS}[name]()
    except Exception as error:  # a peer that does not import on this machine
        return {"model": name, "precision": precision, "error": f"{type(error).__name__}: {error}"}
    bf16 = precision == "bf16+channels_last"
    memory_format = torch.channels_last if bf16 else torch.contiguous_format
    result: dict[str, object] = {"model": name, "precision": precision}
    result["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    if not bf16:
        result["gflops"] = _gflops(model)
    model = model.to(memory_format=memory_format).train()
    images = torch.randn(BATCH, 1, SIZE, SIZE).to(memory_format=memory_format)
    target = torch.randint(0, 2, (BATCH, SIZE, SIZE))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    result["rss_before_mib"] = _max_rss_mib()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    result["train_step_s"] = statistics.median(times[1:])
    result["peak_rss_mib"] = _max_rss_mib()

    model.eval()
    image = torch.randn(1, 1, SIZE, SIZE).to(memory_format=memory_format)
    with torch.inference_mode():
        times = []
        for _ in range(infer + 2):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(image)
            times.append(time.perf_counter() - start)
        result["infer_img_s"] = 1 / statistics.median(times[2:])
        if bf16:
            reference = model(image)
            difference = (logits.float() - reference).abs().max() / reference.abs().max()
            result["bf16_max_rel_diff"] = difference.item()
    return result


def _run_worker(name: str, precision: str, steps: int, infer: int) -> dict[str, object]:
    command = [sys.executable, __file__, "--worker", name, precision, str(steps), str(infer)]
    command += ["--threads", str(torch.get_num_threads())]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"model": name, "precision": precision, "error": f"worker failed: {tail[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


ACCURACY_SIZE = 128
ACCURACY_MODELS = ["thyroidseg UNet()", "thyroidseg plain base-32", "MONAI UNet 16..256 res"]


def _load_ddti(root: Path) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images (standardised), masks and a held-out flag (one fifth of the leak groups)."""
    from thyroidseg.io.files import read_binary_mask, read_image

    with open(root / "metadata.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    size = (ACCURACY_SIZE, ACCURACY_SIZE)
    images, masks, held_out = [], [], []
    for row in rows:
        image = read_image(root / "images" / f"{row['stem']}.png", grayscale=True)
        mask = read_binary_mask(root / "masks" / f"{row['stem']}.png")
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        images.append((image - image.mean()) / max(float(image.std()), 1e-6))
        masks.append(cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))
        held_out.append(zlib.crc32(row["leak_group"].encode()) % 5 == 0)
    return (
        torch.from_numpy(np.stack(images)[:, None]),
        torch.from_numpy(np.stack(masks).astype(np.int64)),
        np.array(held_out),
    )


def _accuracy(name: str, data: tuple, steps: int, seed: int) -> dict[str, object]:
    """Train ``name`` for ``steps`` steps (batch 8, Adam 1e-3, Dice + CE, bf16 autocast)."""
    from thyroidseg.training.losses import DiceCELoss

    images, masks, held_out = data
    train = np.flatnonzero(~held_out)
    test = np.flatnonzero(held_out)
    torch.manual_seed(seed)
    try:
        model = {**MODELS, **EXTRA_MODELS}[name]().to(memory_format=torch.channels_last)
    except Exception as error:
        return {"model": name, "error": f"{type(error).__name__}: {error}"}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss()
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        batch = torch.from_numpy(train)[torch.randint(len(train), (BATCH,), generator=generator)]
        x, y = images[batch], masks[batch]
        if torch.rand((), generator=generator) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    train_s = time.perf_counter() - start
    model.eval()
    tp = fp = fn = 0
    per_image = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in test:
            pred = model(images[i : i + 1]).argmax(1)[0] == 1
            truth = masks[i] == 1
            a, b, c = (
                (pred & truth).sum().item(),
                (pred & ~truth).sum().item(),
                (~pred & truth).sum().item(),
            )
            tp, fp, fn = tp + a, fp + b, fn + c
            per_image.append(2 * a / (2 * a + b + c) if a + b + c else 1.0)
    return {
        "model": name,
        "train_images": len(train),
        "test_images": len(test),
        "steps": steps,
        "train_s": train_s,
        "final_loss": loss.item(),
        "dice_pooled": 2 * tp / (2 * tp + fp + fn),
        "iou_pooled": tp / (tp + fp + fn),
        "dice_mean_per_image": float(np.mean(per_image)),
    }


def _run_accuracy(root: Path, models: list[str], steps: int, seed: int) -> None:
    data = _load_ddti(root)
    print(
        f"DDTI at {ACCURACY_SIZE} x {ACCURACY_SIZE}: {int((~data[2]).sum())} training and"
        f" {int(data[2].sum())} held-out frames (split by leak_group); {steps} steps of batch"
        f" {BATCH}, Adam 1e-3, Dice + CE, bf16 autocast + channels_last, seed {seed}\n"
    )
    print("| model | nodule Dice (pooled) | nodule IoU (pooled) | mean image Dice | train (s) |")
    print("|---|---|---|---|---|")
    for name in models:
        r = _accuracy(name, data, steps, seed)
        print(json.dumps(r), file=sys.stderr, flush=True)
        if "error" in r:
            print(f"| {name} | unavailable: {r['error']} ||||")
            continue
        print(
            f"| {name} | {r['dice_pooled']:.3f} | {r['iou_pooled']:.3f}"
            f" | {r['dice_mean_per_image']:.3f} | {r['train_s']:.0f} |",
            flush=True,
        )


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 training step, 3 inferences")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=[*MODELS, *EXTRA_MODELS],
        default=list(MODELS),
        metavar="NAME",
        help="models to run (quote names); the first is the reference",
    )
    parser.add_argument(
        "--accuracy",
        type=Path,
        metavar="DDTI_DIR",
        help="train each model briefly on DDTI and report held-out Dice instead of speed",
    )
    parser.add_argument(
        "--accuracy-steps", type=int, default=300, help="training steps per model (300)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="initialisation and batch order for --accuracy (0)"
    )
    parser.add_argument(
        "--flops-only", action="store_true", help="print parameters and GFLOPs only (seconds)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads per model (default: PyTorch's); 1 is steadier on a busy machine",
    )
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        name, precision, steps, infer = args.worker
        print(json.dumps(_worker(name, precision, int(steps), int(infer))))
        return
    if args.flops_only:
        print("| model | params (M) | GFLOPs per 1 x 256 x 256 image |\n|---|---|---|")
        for name in args.models:
            try:
                model = {**MODELS, **EXTRA_MODELS}[name]()
            except Exception as error:  # a peer that does not import on this machine
                print(f"| {name} | unavailable: {type(error).__name__}: {error} ||")
                continue
            params = sum(p.numel() for p in model.parameters()) / 1e6
            print(f"| {name} | {params:.2f} | {_gflops(model):.2f} |")
        return
    if args.accuracy:
        models = args.models if args.models != list(MODELS) else ACCURACY_MODELS
        _run_accuracy(args.accuracy, models, args.accuracy_steps, args.seed)
        return

    steps, infer = (1, 3) if args.quick else (3, 10)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; train step: batch {BATCH}"
        f" x 1 x {SIZE} x {SIZE}, Adam, median of {steps} steps; inference: batch 1,"
        f" {infer} images"
    )
    rows = []
    for name in args.models:
        for precision in ("float32", "bf16+channels_last"):
            row = _run_worker(name, precision, steps, infer)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    header = (
        "| model | precision | params (M) | GFLOPs/img | train step (s) | infer (img/s) "
        "| peak RSS (MiB) | RSS before (MiB) | bf16 logit error |"
    )
    print("\n" + header)
    print("|" + "---|" * (header.count("|") - 1))
    flops = {r["model"]: r.get("gflops") for r in rows if "gflops" in r}
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['precision']} | unavailable: {r['error']} |||||||")
            continue
        print(
            f"| {r['model']} | {r['precision']} | {r['params_m']:.2f} "
            f"| {_fmt(flops.get(r['model']), '.2f')} | {r['train_step_s']:.3f} "
            f"| {r['infer_img_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['rss_before_mib']:.0f} "
            f"| {_fmt(r.get('bf16_max_rel_diff'), '.1e')} |"
        )

    reference = args.models[0]
    print(f"\nRatios to {reference} in the same precision (>1: the reference is better):")
    print("| model | precision | train step time / ref | ref img/s / img/s | peak RSS / ref |")
    print("|---|---|---|---|---|")
    by_key = {(r["model"], r["precision"]): r for r in rows if "error" not in r}
    for (name, precision), r in by_key.items():
        ref = by_key.get((reference, precision))
        if ref is None or name == reference:
            continue
        print(
            f"| {name} | {precision} | {r['train_step_s'] / ref['train_step_s']:.2f} "
            f"| {ref['infer_img_s'] / r['infer_img_s']:.2f} "
            f"| {r['peak_rss_mib'] / ref['peak_rss_mib']:.2f} |"
        )
    print("\nSpeed-up of bf16 autocast + channels_last over float32, per model:")
    for name in args.models:
        f32, bf = by_key.get((name, "float32")), by_key.get((name, "bf16+channels_last"))
        if f32 and bf:
            print(
                f"- {name}: train {f32['train_step_s'] / bf['train_step_s']:.2f}x,"
                f" inference {bf['infer_img_s'] / f32['infer_img_s']:.2f}x"
            )


if __name__ == "__main__":
    main()
