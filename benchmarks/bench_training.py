"""CPU training speed: float32 vs + glibc allocator tuning vs + channels-last + bf16 autocast.

Each configuration runs in a fresh Python process (the allocator setting is process-wide and
cannot be undone), trains the library's default :class:`thyroidseg.models.unet.UNet` for a few
steps on a batch of 8 x 1 x 256 x 256 with AdamW and the default Dice + CE loss, and reports
the median step time, the system (kernel) CPU time per step and the peak resident memory.
Ratios are against plain float32 measured in the same run.

Then a short accuracy check: the same seeded training on synthetic phantoms with
``amp="off"`` (float32) and ``amp="bf16"``; bf16 must reach the same validation IoU.

Usage::

    python benchmarks/bench_training.py            # ~5 min on 2 idle cores
    python benchmarks/bench_training.py --quick    # fewer steps and epochs
    python benchmarks/bench_training.py --threads 1  # on a machine shared with other jobs
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

CONFIGS = {
    "float32": {"allocator": False, "channels_last": False, "amp": "off"},
    "+ allocator": {"allocator": True, "channels_last": False, "amp": "off"},
    "+ channels_last": {"allocator": True, "channels_last": True, "amp": "off"},
    "+ bf16 autocast": {"allocator": True, "channels_last": True, "amp": "bf16"},
}


def time_steps(allocator: bool, channels_last: bool, amp: str, steps: int) -> dict[str, float]:
    """Run in a child process: warm-up step + ``steps`` timed training steps."""
    from thyroidseg.models.unet import UNet
    from thyroidseg.runtime import resolve_amp, tune_cpu_allocator
    from thyroidseg.training.losses import make_loss

    if allocator:
        assert tune_cpu_allocator(), "mallopt was refused (not glibc?)"
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = UNet(seed=0).to(memory_format=memory_format).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = make_loss("dice_ce")
    dtype = resolve_amp(amp, torch.device("cpu"))  # type: ignore[arg-type]
    images = torch.rand(8, 1, 256, 256).contiguous(memory_format=memory_format)
    masks = (torch.rand(8, 256, 256) > 0.8).long()
    times, system = [], []
    for step in range(steps + 1):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        start = time.perf_counter()
        with torch.autocast("cpu", dtype, enabled=dtype is not None):
            logits = model(images)
        loss = loss_fn(logits.float(), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step > 0:  # step 0 is the warm-up
            times.append(time.perf_counter() - start)
            system.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - before)
    return {
        "step_s": statistics.median(times),
        "system_s": statistics.median(system),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def phantom_items(n: int, size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    from thyroidseg.data.synthetic import synthetic_phantoms

    images, masks = synthetic_phantoms(n, size=(size, size), seed=seed, decorations=False)
    return [
        {"image": torch.from_numpy(image[None] / np.float32(255)), "mask": torch.from_numpy(mask)}
        for image, mask in zip(images, masks, strict=True)
    ]


def accuracy_check(epochs: int, n_train: int, size: int) -> dict[str, float]:
    from thyroidseg.models.unet import UNet
    from thyroidseg.training import Trainer
    from thyroidseg.training.losses import make_loss
    from thyroidseg.training.workflows import make_optimizer, make_scheduler

    train, val = phantom_items(n_train, size, seed=0), phantom_items(32, size, seed=1)
    result = {}
    for amp in ("off", "bf16"):
        model = UNet(seed=0)
        optimizer = make_optimizer("adamw", model.parameters(), lr=3e-3)
        trainer = Trainer(
            model, train, val, loss=make_loss("dice_ce"), optimizer=optimizer,
            scheduler=make_scheduler("cosine", optimizer, epochs), epochs=epochs,
            batch_size=8, amp=amp, seed=0, progress=False,
        )  # fmt: skip
        start = time.perf_counter()
        history = trainer.fit()
        result[amp] = {
            "final_val_iou": history[-1]["val_iou"],
            "best_val_iou": max(row["val_iou"] for row in history),
            "seconds": time.perf_counter() - start,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and epochs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--skip-accuracy", action="store_true", help="only the speed table")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: PyTorch's; 1 on a shared machine)"
    )
    args = parser.parse_args()
    steps = 2 if args.quick else 4
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(time_steps(**CONFIGS[args.child], steps=steps)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")  # fmt: skip
    print(f"train step, default UNet, batch 8x1x256x256, median of {steps} steps after warm-up")
    print(f"{'configuration':<18}{'step s':>9}{'system s':>10}{'peak MB':>9}{'speed-up':>10}")
    base = None
    for name in CONFIGS:
        command = [sys.executable, __file__, "--child", name] + (["--quick"] if args.quick else [])
        command += ["--threads", str(args.threads)] if args.threads else []
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        base = base or row["step_s"]
        print(
            f"{name:<18}{row['step_s']:>9.3f}{row['system_s']:>10.3f}"
            f"{row['peak_rss_mb']:>9.0f}{base / row['step_s']:>9.2f}x"
        )
    if args.skip_accuracy:
        return
    epochs, n_train, size = (6, 48, 96) if args.quick else (15, 96, 128)
    print(f"\nbf16 vs float32 training, phantoms {n_train} train / 32 val at {size}x{size}, "
          f"{epochs} epochs, same seed (per-image mean validation nodule IoU)")  # fmt: skip
    result = accuracy_check(epochs, n_train, size)
    for amp, row in result.items():
        print(
            f"  amp={amp:<5} final {row['final_val_iou']:.4f}  best {row['best_val_iou']:.4f}"
            f"  ({row['seconds']:.0f} s)"
        )
    gap = result["bf16"]["best_val_iou"] - result["off"]["best_val_iou"]
    print(f"  bf16 - float32 best IoU: {gap:+.4f}")


if __name__ == "__main__":
    main()
