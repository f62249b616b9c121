"""A real 2-process DistributedDataParallel run on the CPU (gloo), launched with torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch.distributed as dist

from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.models.checkpoint import LAST_CHECKPOINT, load_checkpoint

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from torch import nn
    from thyroidseg.training import Trainer

    out = sys.argv[1]
    generator = torch.Generator().manual_seed(0)
    def item(i):
        mask = torch.zeros(12, 12, dtype=torch.int64)
        mask[i % 5 : i % 5 + 6, 2:8] = 1
        return {"image": mask[None].float() + 0.1 * torch.rand(1, 12, 12, generator=generator),
                "mask": mask}
    train = [item(i) for i in range(10)]
    val = [item(i) for i in range(5)]  # odd: the processes get 3 and 2 images, no padding
    torch.manual_seed(int(os.environ["RANK"]))  # different initial weights: DDP must sync them
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 2, 1))
    trainer = Trainer(model, train, val, loss=nn.CrossEntropyLoss(), epochs=2, batch_size=2,
                      out_dir=out, progress=False, seed=0)
    history = trainer.fit()
    weights = torch.cat([p.detach().flatten() for p in model.state_dict().values()
                         if p.is_floating_point()])
    full = trainer.evaluate(val).per_image("iou")  # after fit: one process, all 5 images
    result = {"history": [{k: v for k, v in row.items() if k != "seconds"} for row in history],
              "weights": weights.tolist(), "full_val_iou": float(full.mean()),
              "written": trainer.last_checkpoint is not None}
    with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as handle:
        json.dump(result, handle)
    """
)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_gloo_run_trains_one_model_and_rank0_writes(tmp_path: Path) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), str(out),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0, rank1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["weights"] == rank1["weights"]  # one model, kept in sync by DDP
    assert rank0["history"] == rank1["history"]  # loss and metrics reduced over both
    # The last validation gathered both processes' images: it equals one pass over all five.
    assert rank0["history"][-1]["val_iou"] == pytest.approx(rank0["full_val_iou"], abs=1e-12)
    assert rank0["written"] and not rank1["written"]
    checkpoint = load_checkpoint(out / LAST_CHECKPOINT)
    assert checkpoint["epoch"] == 2
    assert [row["val_iou"] for row in checkpoint["history"]] == [
        row["val_iou"] for row in rank0["history"]
    ]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_train_command_under_torchrun(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 8, size=(64, 80), seed=0)
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "thyroidseg", "train", str(data), str(run), "--epochs", "1",
        "--folds", "2", "--size", "32", "32", "--batch-size", "2", "--base-channels", "4",
        "--amp", "off", "--quiet",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best validation nodule IoU") == 1  # only rank 0 reports
    assert load_checkpoint(run / LAST_CHECKPOINT)["epoch"] == 1
