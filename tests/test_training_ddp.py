"""Real 2-process DistributedDataParallel runs on the CPU (gloo), launched with torchrun, and
the pieces of the distributed path that one process can check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from thyroidseg.cli import main
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.models.checkpoint import LAST_CHECKPOINT, load_checkpoint
from thyroidseg.training import Trainer
from thyroidseg.training.batching import _data_order
from thyroidseg.training.distributed import synced_batchnorm

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from thyroidseg.training import Trainer
    from thyroidseg.training.distributed import DistContext, join_process_group

    dist.init_process_group("gloo")  # the user's own group: fit joins it, and leaves it alone
    out = sys.argv[1]
    generator = torch.Generator().manual_seed(0)
    def item(i):
        mask = torch.zeros(12, 12, dtype=torch.int64)
        mask[i % 5 : i % 5 + 6, 2 : 4 + i % 7] = 1  # of different sizes: told apart
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
    full = trainer.evaluate(val)  # after fit, in the user's group: this process, all 5 images
    with join_process_group(trainer.device) as trainer._dist:  # as within fit: shares gathered
        shared = trainer.evaluate(val)
    trainer._dist = DistContext()
    result = {"history": [{k: v for k, v in row.items() if k != "seconds"} for row in history],
              "weights": weights.tolist(), "full_val_iou": float(full.per_image("iou").mean()),
              "full": full.per_image_matrices.tolist(),
              "shared": shared.per_image_matrices.tolist(),
              "written": trainer.last_checkpoint is not None}
    with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as handle:
        json.dump(result, handle)
    dist.barrier()  # both done before the group goes: gloo aborts on a peer that left early
    dist.destroy_process_group()
    """
)

CLI = textwrap.dedent(
    """
    import os, sys
    import thyroidseg.training.workflows as workflows
    from thyroidseg.cli import main

    prepare = workflows.prepare_run_folder
    def logged(*args):  # which ranks prepare the run folder
        with open(os.path.join(sys.argv[1], f"prepared-by-rank{os.environ['RANK']}"), "a") as log:
            log.write("x")
        return prepare(*args)
    workflows.prepare_run_folder = logged
    sys.exit(main(sys.argv[2:]))
    """
)


def torchrun(tmp_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=2 COMMAND`` with one thread per process; its
    ``torchelastic_*`` folders go to a temporary folder of the test, removed afterwards."""
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    before = set(Path(tempfile.gettempdir()).glob("torchelastic_*"))
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(scratch))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    try:
        done = subprocess.run(
            [*launch, *command], env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        shutil.rmtree(scratch)
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(Path(tempfile.gettempdir()).glob("torchelastic_*")) <= before  # none left
    return done


def train_command(tmp_path: Path, data: Path, run: Path, *options: str) -> str:
    """``thyroidseg train`` under torchrun, logging which ranks prepare the run folder."""
    script = tmp_path / "cli.py"
    script.write_text(CLI)
    command = [
        str(script), str(tmp_path), "train", str(data), str(run), "--epochs", "1",
        "--folds", "2", "--size", "32", "32", "--batch-size", "2", "--base-channels", "4",
        "--amp", "off", "--quiet", *options,
    ]  # fmt: skip
    return torchrun(tmp_path, *command).stdout


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_gloo_run_trains_one_model_and_rank0_writes(tmp_path: Path) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    torchrun(tmp_path, str(script), str(out))

    rank0, rank1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["weights"] == rank1["weights"]  # one model, kept in sync by DDP
    assert rank0["history"] == rank1["history"]  # loss and metrics reduced over both
    # The last validation gathered both processes' images: it equals one pass over all five.
    assert rank0["history"][-1]["val_iou"] == pytest.approx(rank0["full_val_iou"], abs=1e-12)
    assert rank0["written"] and not rank1["written"]
    for rank in (rank0, rank1):  # evaluate after fit, in the user's group: each image once
        assert len(rank["full"]) == 5 and rank["full"] == rank0["full"]
        assert rank["shared"] == rank["full"]  # gathered from both: in the order of the data
    checkpoint = load_checkpoint(out / LAST_CHECKPOINT)
    assert checkpoint["epoch"] == 2
    assert [row["val_iou"] for row in checkpoint["history"]] == [
        row["val_iou"] for row in rank0["history"]
    ]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_train_command_under_torchrun_refine_stage_and_resume(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 8, size=(64, 80), seed=0)
    run = tmp_path / "run"
    report = train_command(tmp_path, data, run, "--stage", "refine")
    assert report.count("best validation nodule IoU") == 1  # only rank 0 reports
    assert report.count("checkpoints: ") == 1
    checkpoint = load_checkpoint(run / LAST_CHECKPOINT)
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["data"]["crops"] is not None
    resumed = train_command(tmp_path, data, run, "--stage", "refine", "--resume")
    assert resumed.count("best validation nodule IoU") == 1  # still only rank 0
    assert resumed.count("checkpoints: ") == 1
    assert [p.name for p in tmp_path.glob("prepared-by-rank*")] == ["prepared-by-rank0"]


def test_synced_batchnorm_lends_sync_layers_and_gives_the_originals_back() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.BatchNorm2d(2)), nn.BatchNorm1d(2))
    inner, outer = model[1][0], model[2]
    with synced_batchnorm(model) as converted:
        assert converted is model
        assert type(model[1][0]) is type(model[2]) is nn.SyncBatchNorm
        assert model[1][0].weight is inner.weight  # shared: the optimizer still trains them
        model[1][0].running_mean += 1  # in place, as a training step updates it
    assert model[1][0] is inner and model[2] is outer
    assert torch.equal(inner.running_mean, torch.ones(2))  # the trained values kept
    with synced_batchnorm(model, enabled=False) as same:
        assert same is model and model[2] is outer


def test_sync_batchnorm_needs_cuda_devices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = [{"image": torch.rand(1, 8, 8), "mask": torch.zeros(8, 8, dtype=torch.int64)}] * 2
    model = nn.Conv2d(1, 2, 3, padding=1)
    with pytest.raises(ValueError, match="needs CUDA devices, not cpu"):
        Trainer(model, data, loss=nn.CrossEntropyLoss(), device="cpu", sync_batchnorm=True)
    with pytest.raises(TypeError, match="True or False"):
        Trainer(model, data, loss=nn.CrossEntropyLoss(), sync_batchnorm=1)  # type: ignore[arg-type]
    command = ["train", str(tmp_path / "data"), str(tmp_path / "run"), "--device", "cpu"]
    assert main([*command, "--sync-batchnorm"]) == 2  # at once, before the data is read
    assert "--sync-batchnorm needs CUDA devices, not cpu" in capsys.readouterr().err


@pytest.mark.parametrize(("count", "world_size"), [(5, 2), (7, 3), (2, 4), (0, 2)])
def test_gathered_shares_go_back_in_data_order(count: int, world_size: int) -> None:
    data = [f"item{i}" for i in range(count)]
    gathered = [item for rank in range(world_size) for item in data[rank::world_size]]
    assert [gathered[i] for i in _data_order(count, world_size)] == data
