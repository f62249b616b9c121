"""The model shipped inside the package: present, intact, installed, and segmenting real scans."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import thyroidseg
from thyroidseg import ConfusionMatrix, Segmenter
from thyroidseg.io.files import read_binary_mask, read_image
from thyroidseg.models.checkpoint import load_checkpoint
from thyroidseg.models.ensemble import Ensemble
from thyroidseg.models.loading import SHIPPED_REFINE_WEIGHTS, SHIPPED_WEIGHTS, shipped_weights
from thyroidseg.models.registry import build_model, model_config
from thyroidseg.models.unet import UNet
from thyroidseg.preprocessing import DEFAULT_SIZE
from thyroidseg.preprocessing.crops import CropRule
from thyroidseg.training.losses import make_loss
from thyroidseg.training.workflows import REFINE_RECIPE, train_folder

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 25 * 10**6
"""The issue's budget for weights in the wheel."""

REAL_FRAMES = ("100_1", "143_1", "190_1", "234_1", "281_1", "323_1", "368_1", "58_2", "97_2")
"""Every 45th DDTI development frame in name order (a fixed, unpicked sample)."""

IOU_FLOOR = 0.6
"""Floor for the mean per-image nodule IoU on `REAL_FRAMES`.

These frames are among the 365 the shipped model was trained on; there it reaches 0.87 on
them, while grouped cross-validation of its recipe gives 0.646 on unseen frames
(``docs/model-card.md``). An untrained network, weights that do not fit, or frames prepared
otherwise than in training (another size, no cropping, no equalisation) fall far below 0.6;
the margin covers bf16 vs float32 and CPU-kernel differences."""


def test_the_shipped_weights_are_package_data_within_budget() -> None:
    path, refine = Path(str(shipped_weights())), Path(str(shipped_weights("refine")))
    assert path.name == SHIPPED_WEIGHTS and path.is_file()
    assert refine.name == SHIPPED_REFINE_WEIGHTS and refine.is_file()
    assert path.parent == refine.parent == Path(thyroidseg.__file__).parent / "weights"
    assert path.stat().st_size + refine.stat().st_size <= MAX_BYTES  # both stages together
    checkpoint = load_checkpoint(path)  # verifies CRCs and the weight SHA-256
    config = checkpoint["config"]
    assert set(checkpoint) >= {"config", "model"} and "optimizer" not in checkpoint
    assert config["inference"] == {
        "tta": True, "fill_holes": True, "min_area": 0, "min_probability": 0.6
    }  # fmt: skip
    seeds = [f"--all --seed {seed}" for seed in (0, 1)]  # two networks, one file
    assert [c.split("runs/")[1].split(" ", 1)[1] for c in config["provenance"]["command"]] == seeds
    assert config["model_class"] == "ensemble"
    network = build_model("ensemble", config["model"])
    network.load_state_dict(checkpoint["model"])
    stored = {tensor.dtype for tensor in checkpoint["model"].values()}
    assert stored == {torch.float16, torch.int64}  # half precision: the CV showed no loss


def test_the_shipped_model_rates_its_outlines_with_both_stages_only() -> None:
    two, one = Segmenter.pretrained(device="cpu"), Segmenter.pretrained(refine=False, device="cpu")
    assert two.quality is not None and two.quality.stages == 2 and one.quality is None
    assert 0 < two.quality.threshold < 1 and "auroc" in two.quality.scores["expected_iou"]


def test_the_wheel_carries_the_weights(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="70.1")  # bdist_wheel built in
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("thyroidseg-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
    shipped = Path(str(shipped_weights()))
    assert sizes[f"thyroidseg/weights/{SHIPPED_WEIGHTS}"] == shipped.stat().st_size
    assert f"thyroidseg/weights/{SHIPPED_REFINE_WEIGHTS}" in sizes
    assert sum(size for name, size in sizes.items() if name.endswith(".pt")) <= MAX_BYTES
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in sizes)


def test_the_sdist_carries_the_licence(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="77")  # license-files in pyproject.toml
    build = f"from setuptools import build_meta; build_meta.build_sdist({str(tmp_path)!r})"
    subprocess.run([sys.executable, "-c", build], cwd=ROOT, check=True, capture_output=True)
    (sdist,) = tmp_path.glob("thyroidseg-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert any(name.endswith("/LICENSE") for name in names)


def test_pretrained_returns_the_recommended_segmenter() -> None:
    segmenter = Segmenter.pretrained(device="cpu")
    assert segmenter.tta and segmenter.fill_holes and segmenter.min_probability == 0.6
    assert segmenter.refiner is not None and segmenter.refiner.rule == CropRule()
    assert Segmenter.pretrained(device="cpu", refine=False).refiner is None
    assert not Segmenter.pretrained(device="cpu", tta=False).tta  # options override
    assert isinstance(segmenter.model, Ensemble) and len(segmenter.model.members) == 2
    logits = segmenter.model(torch.zeros(1, 1, 128, 128))
    assert logits.shape == (1, 2, 128, 128)
    assert segmenter.identity().name == Path(SHIPPED_WEIGHTS).stem  # recognised as shipped


@pytest.mark.ddti
def test_the_shipped_model_segments_real_ddti_frames(ddti_dir: Path) -> None:
    segmenter = Segmenter.pretrained(device="cpu")
    images = [
        read_image(ddti_dir / "images" / f"{stem}.png", grayscale=True) for stem in REAL_FRAMES
    ]
    masks = segmenter.predict_many(images)
    matrix = ConfusionMatrix(2)
    for stem, mask in zip(REAL_FRAMES, masks, strict=True):
        truth = read_binary_mask(ddti_dir / "masks" / f"{stem}.png")
        assert mask.shape == truth.shape
        matrix.update(mask, truth)
    iou = matrix.per_image("iou", cls=1)
    assert np.isfinite(iou).all()
    assert iou.mean() >= IOU_FLOOR, dict(zip(REAL_FRAMES, iou.round(3), strict=True))


def test_the_default_recipe_is_the_shipped_models() -> None:
    config = load_checkpoint(Path(str(shipped_weights())))["config"]
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(train_folder).parameters.items()
    }
    model = UNet(base_channels=defaults["base_channels"], stem_stride=defaults["stem_stride"])
    members = config["model"]["members"]
    for seed, member in enumerate(members):  # the default recipe, seeds 0 and 1
        assert member["model_class"] == "unet"
        assert model_config("unet", member["model"]) == model_config("unet", model.config) | {
            "seed": seed
        }
    assert config["epochs"] == defaults["epochs"]
    assert tuple(config["data"]["preprocess_options"]["size"]) == defaults["size"] == DEFAULT_SIZE
    assert f"lr: {defaults['lr']}" in config["optimizer"]
    assert repr(make_loss(defaults["loss"])) == config["loss"]
    assert "LambdaLR" in config["scheduler"] and defaults["schedule"] == "warmup_cosine"
    assert config["data"]["augment"] is True and config["data"]["fold"] is None


def test_the_refine_recipe_is_the_shipped_refine_stages() -> None:
    config = load_checkpoint(Path(str(shipped_weights("refine"))))["config"]
    model = UNet(
        base_channels=REFINE_RECIPE["base_channels"], stem_stride=REFINE_RECIPE["stem_stride"]
    )
    assert model_config("unet", config["model"]) == model_config("unet", model.config) | {
        "seed": config["model"]["seed"]
    }
    assert config["epochs"] == REFINE_RECIPE["epochs"]
    assert config["data"]["crops"] == CropRule().to_dict() and config["data"]["fold"] is None
    assert "--stage refine" in config["provenance"]["command"] and "inference" not in config
