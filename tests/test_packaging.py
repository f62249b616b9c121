"""Packaging a model: several networks in one checkpoint, weights stored in half precision."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from thyroidseg import Segmenter, ThyroidDataset, Trainer, UNet
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.models.checkpoint import (
    LAST_CHECKPOINT,
    WEIGHTS_CHECKSUM,
    half_precision,
    load_checkpoint,
    save_checkpoint,
    weights_sha256,
)
from thyroidseg.models.ensemble import Ensemble
from thyroidseg.models.registry import build_model, ensemble_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "package_model.py"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """last.pt of two one-epoch whole-frame runs that differ only in their seed."""
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_dataset(root / "data", 4, size=(48, 64), seed=0)
    paths = []
    for seed in (0, 1):
        Trainer(
            UNet(base_channels=4, depth=2, seed=seed),
            ThyroidDataset(root / "data", size=(32, 32), progress=False),
            out_dir=root / f"run{seed}", loss=nn.CrossEntropyLoss(), epochs=1, batch_size=4,
            seed=seed, amp="off", progress=False,
        ).fit()  # fmt: skip
        paths.append(root / f"run{seed}" / LAST_CHECKPOINT)
    return paths


def package(monkeypatch: pytest.MonkeyPatch, capsys, *arguments: object) -> tuple[int, str]:
    """Run scripts/package_model.py in this process: its exit code and its stderr."""
    spec = importlib.util.spec_from_file_location("package_model", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *map(str, arguments)])
    try:
        script.main()
    except SystemExit as stop:  # argparse's: code 2, message on stderr; SystemExit("message")
        message = stop.code if isinstance(stop.code, str) else ""
        return (1 if message else int(stop.code or 0)), capsys.readouterr().err + message
    return 0, capsys.readouterr().err


def test_half_precision_rounds_floats_only_and_the_network_computes_with_them() -> None:
    model = UNet(base_channels=4, depth=2, seed=0).eval()
    half = half_precision(model.state_dict())
    kinds = {str(tensor.dtype) for tensor in half.values()}
    assert kinds == {"torch.float16", "torch.int64"}  # batch norm's counters stay integers
    rounded = UNet(base_channels=4, depth=2, seed=0).eval()
    rounded.load_state_dict(half)
    assert next(rounded.parameters()).dtype == torch.float32
    weight = model.state_dict()["encoder.0.conv1.weight"]
    assert not torch.equal(rounded.state_dict()["encoder.0.conv1.weight"], weight)
    torch.testing.assert_close(
        rounded.state_dict()["encoder.0.conv1.weight"], weight, rtol=2**-11, atol=2**-25
    )
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(rounded(x), model(x), rtol=1e-2, atol=1e-2)


def test_half_precision_refuses_values_float16_cannot_hold() -> None:
    with pytest.raises(ValueError, match="'big'.*65504"):
        half_precision({"small": torch.ones(2), "big": torch.tensor([1e6])})


def test_a_half_checkpoint_hashes_as_the_network_loaded_from_it(tmp_path: Path) -> None:
    model = UNet(base_channels=4, depth=2, seed=0)
    path = save_checkpoint(
        tmp_path / "half.pt", {"format": "thyroidseg-checkpoint/1", "config": {},
                               "model": half_precision(model.state_dict())}
    )  # fmt: skip
    stored = load_checkpoint(path)  # its checksum verifies
    model.load_state_dict(stored["model"])
    assert weights_sha256(model.state_dict()) == stored[WEIGHTS_CHECKSUM]
    model.state_dict()["encoder.0.conv1.weight"][0, 0, 0, 0] += 1e-3  # a float32-only change
    assert weights_sha256(model.state_dict()) != stored[WEIGHTS_CHECKSUM]


def test_build_model_rebuilds_ensembles_and_names_bad_configs() -> None:
    member = {"base_channels": 4, "depth": 2}
    network = build_model("ensemble", ensemble_config([("unet", member), ("unet", member)]))
    assert isinstance(network, Ensemble) and len(network.members) == 2
    assert isinstance(network.members[1], UNet) and network.members[1].config["depth"] == 2
    with pytest.raises(ValueError, match="non-empty 'members'"):
        build_model("ensemble", {"members": []})
    with pytest.raises(ValueError, match="each ensemble member"):
        build_model("ensemble", {"members": [member]})
    with pytest.raises(ValueError, match="registered models are unet, ensemble"):
        build_model("resnet", member)


def test_package_model_makes_one_half_precision_ensemble(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "shipped.pt"
    code, errors = package(monkeypatch, capsys, runs[0], "--member", runs[1], "--half", "--tta",
                           "--command", "train 0", "--command", "train 1", "--cv", "cv.json",
                           "--out", out)  # fmt: skip
    assert code == 0, errors
    stored = load_checkpoint(out)
    config = stored["config"]
    assert config["model_class"] == "ensemble" and len(config["model"]["members"]) == 2
    assert config["provenance"]["command"] == ["train 0", "train 1"]
    assert {t.dtype for t in stored["model"].values() if t.is_floating_point()} == {torch.float16}
    assert out.stat().st_size < 0.6 * sum(path.stat().st_size for path in runs)

    segmenter = Segmenter.from_checkpoint(out, device="cpu", amp="off")
    assert isinstance(segmenter.model, Ensemble) and segmenter.tta
    assert segmenter.identity().sha256 == stored[WEIGHTS_CHECKSUM]
    members = []
    for path in runs:  # each run's network, its weights rounded as the package stores them
        network = Segmenter.from_checkpoint(path, device="cpu", amp="off").model
        network.load_state_dict(half_precision(network.state_dict()))
        members.append(network)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(segmenter.model(x), Ensemble(members).eval()(x))
    image = (np.random.default_rng(0).random((48, 64)) * 255).astype(np.uint8)
    assert segmenter.predict(image).shape == (48, 64)


def test_package_model_refuses_members_prepared_otherwise(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    other = load_checkpoint(runs[1])
    other["config"]["data"]["preprocess_options"]["size"] = [48, 48]
    save_checkpoint(tmp_path / "other.pt", other)
    code, errors = package(monkeypatch, capsys, runs[0], "--member", tmp_path / "other.pt",
                           "--command", "a", "--command", "b", "--cv", "cv.json",
                           "--out", tmp_path / "out.pt")  # fmt: skip
    assert code != 0 and "other.pt: data['preprocess_options']" in errors
    assert not (tmp_path / "out.pt").exists()
    code, errors = package(monkeypatch, capsys, runs[0], "--member", runs[1], "--command", "a",
                           "--cv", "cv.json", "--out", tmp_path / "out.pt")  # fmt: skip
    assert code != 0 and "--command once per checkpoint (2)" in errors


def test_an_ensemble_members_unknown_option_is_named(runs: list[Path], tmp_path) -> None:
    stored = load_checkpoint(runs[0])
    members = [("unet", stored["config"]["model"]), ("unet", {"base_channels": 4, "wings": 2})]
    stored["config"] |= {"model_class": "ensemble", "model": ensemble_config(members)}
    save_checkpoint(tmp_path / "bad.pt", stored)
    with pytest.raises(ValueError, match=r"bad.pt: config\['model'\]\['members'\]\[1\]\['model'\]"
                       r" names option\(s\) this version does not know: 'wings'"):  # fmt: skip
        load_checkpoint(tmp_path / "bad.pt")


def test_a_registered_model_stored_without_its_arguments_is_named(
    runs: list[Path], tmp_path: Path
) -> None:
    """An Ensemble trained directly has no ``config``: its checkpoint names "ensemble" with an
    empty ``config["model"]``, which cannot be rebuilt, and the error says so."""
    stored = load_checkpoint(runs[0])
    stored["config"] |= {"model_class": "ensemble", "model": {}}
    save_checkpoint(tmp_path / "bare.pt", stored)
    with pytest.raises(ValueError, match=r"bare.pt: .*'ensemble'.*config\['model'\] is empty"):
        Segmenter.from_checkpoint(tmp_path / "bare.pt", device="cpu")
