"""Checkpoints name classes by registered names, and those written by 0.1.x still work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from thyroidseg import Segmenter, ThyroidDataset, Trainer, UNet
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.models.checkpoint import LAST_CHECKPOINT, load_checkpoint
from thyroidseg.models.registry import canonical_name, model_class, model_name
from thyroidseg.training.batching import hook_name

LEGACY = Path(__file__).parent / "data" / "unet-0.1.x-last.pt"
"""A 0.1.x run's last.pt (tests/data/README.md says how it was made)."""


def legacy_trainer(tmp_path: Path, **changes: object) -> Trainer:
    """The Trainer that wrote `LEGACY` (tests/data/make_legacy_checkpoint.py), in tmp_path."""
    data = tmp_path / "data"
    if not data.exists():
        write_synthetic_dataset(data, 4, size=(48, 64), seed=0)
    options = dict(loss=nn.CrossEntropyLoss(), epochs=1, batch_size=4, seed=0, amp="off")
    options.update(changes)
    return Trainer(
        UNet(base_channels=4, depth=2, seed=0), ThyroidDataset(data, size=(32, 32), progress=False),
        out_dir=tmp_path / "run", progress=False, **options,
    )  # fmt: skip


def test_new_checkpoints_store_registered_names(tmp_path: Path) -> None:
    legacy_trainer(tmp_path).fit()
    config = load_checkpoint(tmp_path / "run" / LAST_CHECKPOINT)["config"]
    assert (config["model_class"], config["prepare_batch"]) == ("unet", "default")
    assert model_class("unet") is UNet and model_name(UNet(base_channels=4, depth=2)) == "unet"
    assert hook_name(lambda batch, device, memory_format: batch) is None


def test_a_checkpoint_written_by_0_1_loads_and_predicts_as_it_did() -> None:
    stored = load_checkpoint(LEGACY)
    assert stored["config"]["model_class"] == "thyroidseg.model.UNet"  # the 0.1.x name
    segmenter = Segmenter.from_checkpoint(LEGACY, device="cpu", amp="off")
    model = UNet(**stored["config"]["model"])
    model.load_state_dict(stored["model"])
    batch = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(segmenter.model(batch), model.eval()(batch))


def test_a_run_of_0_1_resumes_and_its_names_count_as_the_registered_ones(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    shutil.copy(LEGACY, tmp_path / "run" / LAST_CHECKPOINT)
    trainer = legacy_trainer(tmp_path)
    trainer.fit(resume=tmp_path / "run" / LAST_CHECKPOINT)  # same set-up: nothing left to do
    assert trainer.epoch == 1
    assert canonical_name("thyroidseg.batching.default_prepare_batch") == "default"
    with pytest.raises(ValueError, match="cannot resume.*epochs=1 there, 2 here"):
        legacy_trainer(tmp_path, epochs=2).fit(resume=tmp_path / "run" / LAST_CHECKPOINT)
