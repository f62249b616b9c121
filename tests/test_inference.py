"""Tests of inference (Segmenter, post-processing, overlays) and the predict command."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import thyroidseg.inference
from thyroidseg._io import read_binary_mask, write_image
from thyroidseg.checkpoint import LAST_CHECKPOINT
from thyroidseg.cli import main
from thyroidseg.data import ThyroidDataset
from thyroidseg.inference import Segmenter, overlay, postprocess_views
from thyroidseg.model import UNet
from thyroidseg.preprocessing import preprocess as preprocess_frame
from thyroidseg.synthetic import write_synthetic_dataset
from thyroidseg.training import Trainer
from tiny_models import Threshold

PLAIN = {  # preprocessing that only resizes, so the expected mask is known exactly
    "size": (64, 64),
    "crop": False,
    "inpaint_annotations": False,
    "equalization": None,
    "smoothing": None,
    "resize_mode": "stretch",
}


def frame_with_square(height: int = 90, width: int = 140) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((height, width), 40, np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[20:60, 30:100] = 1
    image[mask == 1] = 220
    return image, mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a > 0) & (b > 0)).sum() / ((a > 0) | (b > 0)).sum())


def test_postprocess_clears_outside_views_and_filters_per_view() -> None:
    mask = np.ones((6, 10), np.uint8)
    views = [(0, 0, 4, 6), (6, 0, 10, 6)]  # a 2-pixel gap between two views
    out = postprocess_views(mask, views)
    assert out[:, 4:6].sum() == 0 and out[:, :4].all() and out[:, 6:].all()

    mask = np.zeros((6, 10), np.uint8)
    mask[0:3, 0:3] = 1  # 9 px in view 1
    mask[5, 0] = 1  # 1 px in view 1
    mask[4:6, 8:10] = 1  # 4 px in view 2
    assert postprocess_views(mask, views, min_area=2).sum() == 13
    assert postprocess_views(mask, views, min_area=5).sum() == 9
    largest = postprocess_views(mask, views, keep_largest=True)
    assert largest.sum() == 13 and largest[5, 0] == 0  # one component kept in each view


def test_fill_holes_fills_enclosed_background_only() -> None:
    mask = np.zeros((7, 12), np.uint8)
    mask[1:6, 1:6] = 1
    mask[3, 3] = 0  # a hole
    mask[1:6, 8:12] = 1
    mask[3, 11] = 0  # a notch open to the view's border: not a hole
    out = postprocess_views(mask, [(0, 0, 12, 7)], fill_holes=True)
    assert out[3, 3] == 1 and out[3, 11] == 0
    assert out.sum() == mask.sum() + 1


def test_tta_averages_the_mirrored_prediction() -> None:
    class LeftHalf(torch.nn.Module):  # nodule logit high on the left half only
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            score = torch.zeros_like(x)
            score[..., : x.shape[-1] // 2] = 1.0
            return torch.cat([torch.zeros_like(x), score], dim=1)

    images = torch.zeros(1, 1, 4, 8)
    plain = Segmenter(LeftHalf(), PLAIN, device="cpu", amp="off")
    mirrored = Segmenter(LeftHalf(), PLAIN, device="cpu", amp="off", tta=True)
    assert plain._labels(images)[0, :, :4].all() and not plain._labels(images)[0, :, 4:].any()
    # with the mirror image averaged in, both halves get probability (sigmoid(1) + 0.5) / 2
    assert mirrored._labels(images).all()


def test_segmenter_returns_masks_at_the_original_size() -> None:
    image, truth = frame_with_square()
    segmenter = Segmenter(Threshold(), PLAIN, device="cpu", amp="off")
    predicted = segmenter.predict(image)
    assert predicted.shape == image.shape and predicted.dtype == np.uint8
    assert set(np.unique(predicted)) <= {0, 1}
    assert iou(predicted, truth) > 0.9  # only resampling at the square's border can differ


def test_from_checkpoint_rebuilds_the_unet_and_its_preprocessing(tmp_path: Path) -> None:
    checkpoint = trained_checkpoint(tmp_path)
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu", amp="off")
    assert segmenter.preprocess_options == {**PLAIN, "size": list(PLAIN["size"])}  # from JSON
    model = UNet(base_channels=4, depth=2)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    image, _ = frame_with_square()
    direct = Segmenter(model, PLAIN, device="cpu", amp="off").predict(image)
    np.testing.assert_array_equal(segmenter.predict(image), direct)


def test_from_checkpoint_needs_a_model_for_unknown_architectures(tmp_path: Path) -> None:
    trainer = Trainer(
        Threshold(), [{"image": torch.rand(1, 8, 8), "mask": torch.zeros(8, 8, dtype=torch.int64)}],
        loss=nn.CrossEntropyLoss(), epochs=1, out_dir=tmp_path, progress=False,
    )  # fmt: skip
    trainer.fit()
    with pytest.raises(ValueError, match="last.pt: holds a '.*Threshold' model"):
        Segmenter.from_checkpoint(tmp_path / LAST_CHECKPOINT)
    segmenter = Segmenter.from_checkpoint(tmp_path / LAST_CHECKPOINT, model=Threshold(), amp="off")
    assert segmenter.model.scale.item() == pytest.approx(trainer.model.scale.item())


def test_overlay_draws_both_outlines() -> None:
    image, truth = frame_with_square()
    shifted = np.roll(truth, 5, axis=1)
    picture = overlay(image, shifted, truth)
    assert picture.shape == (*image.shape, 3)
    red = (picture[..., 2] > 200) & (picture[..., 1] < 100)
    green = (picture[..., 1] > 150) & (picture[..., 2] < 100)
    assert red.any() and green.any()
    with pytest.raises(ValueError, match="truth"):
        overlay(image, shifted, truth[:10])


def trained_checkpoint(tmp_path: Path, preprocess: object = "plain") -> Path:
    """``last.pt`` of a one-epoch run of a tiny UNet on a ThyroidDataset of phantoms.

    Nothing but the dataset tells the Trainer how frames were prepared (as for a user).
    """
    write_synthetic_dataset(tmp_path / "data", 4, size=(48, 64), seed=0)
    if preprocess == "plain":
        preprocess = functools.partial(preprocess_frame, **PLAIN)
    data = ThyroidDataset(tmp_path / "data", size=PLAIN["size"], preprocess=preprocess)
    trainer = Trainer(
        UNet(base_channels=4, depth=2, seed=0), data, loss=nn.CrossEntropyLoss(), epochs=1,
        out_dir=tmp_path / "run", progress=False,
    )  # fmt: skip
    trainer.fit()
    return tmp_path / "run" / LAST_CHECKPOINT


def test_from_checkpoint_refuses_frames_prepared_otherwise(tmp_path: Path) -> None:
    checkpoint = trained_checkpoint(tmp_path, preprocess=None)  # resize only
    with pytest.raises(ValueError, match="last.pt: the model was trained on frames prepared by"):
        Segmenter.from_checkpoint(checkpoint)


def test_predict_command_writes_original_size_masks_and_keeps_existing_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = trained_checkpoint(tmp_path)
    frames = tmp_path / "frames"
    write_image(frames / "a.png", frame_with_square(90, 140)[0])
    write_image(frames / "b.jpg", frame_with_square(70, 100)[0])
    out = tmp_path / "masks"
    assert main(["predict", str(checkpoint), str(frames), str(out), "--quiet"]) == 0
    assert "wrote 2 masks" in capsys.readouterr().out
    assert read_binary_mask(out / "a.png").shape == (90, 140)
    assert read_binary_mask(out / "b.png").shape == (70, 100)
    assert set(np.unique(cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED))) <= {0, 255}

    before = (out / "a.png").read_bytes()
    assert main(["predict", str(checkpoint), str(frames), str(out), "--quiet"]) == 2
    assert "exist already" in capsys.readouterr().err and (out / "a.png").read_bytes() == before
    assert main(["predict", str(checkpoint), str(frames), str(out), "--quiet", "--overwrite"]) == 0


def test_predict_command_names_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = trained_checkpoint(tmp_path)
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "broken.png").write_bytes(b"not a png")
    write_image(frames / "good.png", frame_with_square()[0])  # after broken.png in stem order
    assert main(["predict", str(checkpoint), str(frames), str(tmp_path / "out"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "1 of 2 images could not be segmented" in error and "broken.png" in error
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.png"]  # the rest is written
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:100])
    assert main(["predict", str(corrupt), str(frames), str(tmp_path / "out"), "--quiet"]) == 2
    assert "corrupt.pt: corrupt or truncated checkpoint" in capsys.readouterr().err


def test_inference_imports_no_training_code() -> None:
    # The serving side of the layout (docs/training.md): a model and its preprocessing only.
    tree = ast.parse(Path(thyroidseg.inference.__file__).read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("thyroidseg")
    }
    allowed = {"runtime", "checkpoint", "preprocessing", "model", "metrics", "_io", "_progress"}
    assert imported and imported <= {f"thyroidseg.{name}" for name in allowed}
    plain = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [name for name in plain if name.startswith("thyroidseg")]
