"""Tests for thyroidseg.models.export and `thyroidseg export`: exports agree with eager PyTorch."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from thyroidseg import ThyroidDataset, Trainer, UNet, export_onnx, preprocess
from thyroidseg.cli import main
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.inference import Segmenter
from thyroidseg.models.ensemble import Ensemble
from thyroidseg.models.export import ONNX_INPUT, export_torchscript

TINY = {"base_channels": 4, "seed": 0}


def one_epoch_run(data: ThyroidDataset, out_dir: Path, seed: int) -> Path:
    """``last.pt`` of one epoch of a tiny depth-2 UNet on ``data``."""
    trainer = Trainer(
        UNet(depth=2, base_channels=4, seed=seed), data, loss=nn.CrossEntropyLoss(), epochs=1,
        out_dir=out_dir, progress=False,
    )  # fmt: skip
    trainer.fit()
    assert trainer.last_checkpoint is not None
    return trainer.last_checkpoint


def onnx_session(path: Path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_exports_match_eager(model: nn.Module, folder: Path, batches: list[torch.Tensor]) -> None:
    """TorchScript and onnxruntime give eager PyTorch's logits for every batch."""
    scripted = torch.jit.load(str(export_torchscript(model, folder / "unet.pt")))
    session = onnx_session(export_onnx(model, folder / "unet.onnx", example_size=(64, 64)))
    model.eval()
    with torch.no_grad():
        for batch in batches:
            expected = model(batch)
            torch.testing.assert_close(scripted(batch), expected, atol=1e-5, rtol=1e-5)
            (logits,) = session.run(None, {ONNX_INPUT: batch.numpy()})
            torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"in_channels": 3},
        {"stem_stride": 2, "deep_supervision": 1},
        {"position_channels": True},
    ],
)
def test_both_exports_match_eager_at_other_sizes_than_the_example(tmp_path, config) -> None:
    model = UNet(depth=2, **config, **TINY)
    channels = model.config["in_channels"]
    generator = torch.Generator().manual_seed(0)
    batches = [
        torch.randn(2, channels, 37, 53, generator=generator),
        torch.randn(1, channels, 96, 40, generator=generator),
        torch.randn(3, channels, 1, 1, generator=generator),
    ]
    assert_exports_match_eager(model, tmp_path, batches)


def test_exports_match_eager_on_real_preprocessed_ddti_frames(tmp_path, ddti_dir: Path) -> None:
    """Two DDTI frames through `preprocess` at two network sizes, as `Segmenter` feeds them."""
    frames = sorted((ddti_dir / "images").glob("*.png"))[:2]
    batches = [
        torch.from_numpy(
            np.stack([preprocess(frame, size=size).image for frame in frames])[:, None]
        ).float()
        / 255.0
        for size in [(128, 128), (160, 224)]
    ]
    model = UNet(base_channels=8, depth=3, seed=0)
    assert_exports_match_eager(model, tmp_path, batches)


def test_valid_mode_torchscript_matches_eager(tmp_path) -> None:
    model = UNet(padding="valid", downsample="maxpool", depth=2, **TINY).train()
    path = export_torchscript(model, tmp_path / "unet.pt")
    assert model.training, "the model is given back in training mode"
    loaded = torch.jit.load(str(path))
    model.eval()
    with torch.no_grad():
        for height, width in [(44, 48), (52, 60)]:
            image = torch.randn(2, 1, height, width)
            torch.testing.assert_close(loaded(image), model(image), atol=1e-5, rtol=1e-5)


def test_onnx_graph_declares_dynamic_batch_height_and_width(tmp_path) -> None:
    session = onnx_session(export_onnx(UNet(depth=2, **TINY), tmp_path / "unet.onnx"))
    (image,) = session.get_inputs()
    (logits,) = session.get_outputs()
    assert (image.name, logits.name) == ("image", "logits")
    assert image.shape == ["batch", 1, "height", "width"]
    assert logits.shape == ["batch", 2, "out_height", "out_width"]


def test_a_module_other_than_unet_exports_with_its_first_convolution_channels(tmp_path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU())
    batch = torch.randn(1, 3, 20, 30)
    assert_exports_match_eager(model, tmp_path, [batch])
    with pytest.raises(ValueError, match="cannot tell the input channels of a ReLU"):
        export_onnx(nn.ReLU(), tmp_path / "relu.onnx")
    session = onnx_session(export_onnx(nn.ReLU(), tmp_path / "relu.onnx", in_channels=2))
    (out,) = session.run(None, {ONNX_INPUT: np.full((1, 2, 3, 5), -1, np.float32)})
    assert out.shape == (1, 2, 3, 5) and (out == 0).all()


def _fail_halfway(model, args, f, *rest, **kwargs) -> None:
    f.write(b"half an export")
    raise RuntimeError("exporter crashed")


@pytest.mark.parametrize("exporter", ["onnx", "torchscript"])
def test_a_failed_export_keeps_the_existing_file(tmp_path, monkeypatch, exporter: str) -> None:
    path = tmp_path / "unet.out"
    path.write_bytes(b"previous")
    model = UNet(**TINY).train()
    if exporter == "onnx":
        monkeypatch.setattr(torch.onnx, "export", _fail_halfway)
        export = export_onnx
    else:
        monkeypatch.setattr(torch.jit, "save", lambda m, f: _fail_halfway(m, None, f))
        export = export_torchscript
    with pytest.raises(RuntimeError, match="crashed"):
        export(model, path)
    assert path.read_bytes() == b"previous"
    assert model.training


def test_onnx_export_rejects_an_example_size_valid_mode_cannot_take(tmp_path) -> None:
    model = UNet(padding="valid", downsample="maxpool", **TINY)
    with pytest.raises(ValueError, match="size 64 is not valid"):
        export_onnx(model, tmp_path / "unet.onnx", example_size=(64, 64))
    assert not (tmp_path / "unet.onnx").exists()


def test_export_command_writes_graphs_that_match_the_checkpoint(tmp_path, capsys) -> None:
    write_synthetic_dataset(tmp_path / "data", 4, size=(48, 64), seed=0)
    trainer = Trainer(
        UNet(depth=2, **TINY),
        ThyroidDataset(tmp_path / "data", size=(32, 32)),
        loss=nn.CrossEntropyLoss(),
        epochs=1,
        out_dir=tmp_path / "run",
        progress=False,
    )
    trainer.fit()
    onnx_path, script_path = tmp_path / "out" / "m.onnx", tmp_path / "out" / "m.pt"
    argv = ["export", "--model", str(trainer.last_checkpoint), "--onnx", str(onnx_path)]
    assert main([*argv, "--torchscript", str(script_path)]) == 2  # no folder "out"
    assert "its folder" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    assert main([*argv, "--torchscript", str(script_path)]) == 0
    assert f"wrote {onnx_path}" in capsys.readouterr().out
    model = trainer.model.eval()
    batch = torch.rand(2, 1, 40, 24)
    with torch.no_grad():
        expected = model(batch)
        torch.testing.assert_close(torch.jit.load(str(script_path))(batch), expected)
    (logits,) = onnx_session(onnx_path).run(None, {ONNX_INPUT: batch.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)


def test_export_command_errors_are_one_line(tmp_path, capsys) -> None:
    assert main(["export", "--model", str(tmp_path / "none.pt")]) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "none.pt"), "--onnx", "m.onnx"]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_export_command_defaults_to_the_shipped_model(tmp_path, capsys) -> None:
    script_path = tmp_path / "shipped.pt"
    assert main(["export", "--torchscript", str(script_path)]) == 0
    shipped = Segmenter.pretrained(device="cpu", amp="off").model
    batch = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(script_path))(batch), shipped(batch))


def test_export_command_refuses_to_replace_or_reuse_a_file(tmp_path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    assert main(["export", "--onnx", str(notes)]) == 2
    assert "pass --overwrite to replace" in capsys.readouterr().err
    assert notes.read_text() == "keep me"
    both = tmp_path / "m.bin"
    assert main(["export", "--onnx", str(both), "--torchscript", str(both)]) == 2
    assert "given for two outputs" in capsys.readouterr().err
    assert not both.exists()
    assert main(["export", "--torchscript", str(notes), "--overwrite"]) == 0
    assert notes.read_bytes()[:2] == b"PK"  # replaced by a TorchScript zip archive


def test_export_command_writes_the_ensemble_of_several_models(tmp_path, capsys) -> None:
    write_synthetic_dataset(tmp_path / "data", 4, size=(48, 64), seed=0)
    data = ThyroidDataset(tmp_path / "data", size=(32, 32))
    first, second = (one_epoch_run(data, tmp_path / f"run{seed}", seed) for seed in (0, 1))
    script_path = tmp_path / "ensemble.pt"
    argv = ["export", "--model", str(first), "--model", str(second)]
    assert main([*argv, "--torchscript", str(script_path)]) == 0
    ensemble = Segmenter.from_checkpoint([first, second], device="cpu", amp="off").model
    assert isinstance(ensemble, Ensemble)
    batch = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(script_path))(batch), ensemble(batch))


def test_onnx_export_without_the_onnx_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'thyroidseg\[export\]'"):
        export_onnx(UNet(depth=2, **TINY), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
