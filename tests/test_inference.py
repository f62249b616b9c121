"""Tests of inference: Segmenter, probabilities, ensembles, checkpoints, the shipped model."""

from __future__ import annotations

import ast
import copy
import functools
import inspect
import re
import typing
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import thyroidseg
import thyroidseg.inference.folders
import thyroidseg.inference.segmenter
import thyroidseg.io.threads
import thyroidseg.models.loading
from inference_helpers import PLAIN, frame_with_square, iou, trained_checkpoint, with_config
from thyroidseg.data import ThyroidDataset
from thyroidseg.data.crops import CropDataset
from thyroidseg.data.synthetic import synthetic_phantoms
from thyroidseg.inference import Segmenter, predict_folder
from thyroidseg.inference.base import SegmenterBase, SegmenterSettings
from thyroidseg.inference.overlay import overlay
from thyroidseg.inference.postprocess import postprocess_views
from thyroidseg.io.files import write_image
from thyroidseg.models.checkpoint import LAST_CHECKPOINT, load_checkpoint, save_checkpoint
from thyroidseg.models.ensemble import Ensemble
from thyroidseg.models.loading import SHIPPED_WEIGHTS, shipped_weights
from thyroidseg.models.unet import UNet
from thyroidseg.preprocessing import preprocess
from thyroidseg.preprocessing.crops import CropRule
from thyroidseg.training import Trainer
from tiny_models import Threshold


class LeftHalf(nn.Module):
    """Nodule logit 1 on the left half of the network frame, 0 elsewhere (background 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = torch.zeros_like(x)
        score[..., : x.shape[-1] // 2] = 1.0
        return torch.cat([torch.zeros_like(x), score], dim=1)


class ColumnRamp(nn.Module):
    """Nodule probability ``(j + 1/2) / W`` in network column ``j``, whatever the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        ramp = (torch.arange(width, dtype=torch.float32) + 0.5) / width
        ramp = ramp.expand_as(x)
        return torch.cat([torch.log1p(-ramp), torch.log(ramp)], dim=1)


def test_postprocess_drops_components_of_low_mean_probability() -> None:
    mask = np.zeros((8, 12), np.uint8)
    mask[1:4, 1:4] = 1  # mean probability 0.55: a doubtful speck
    mask[4:8, 6:12] = 1  # mean 0.9
    probability = np.where(mask == 1, 0.9, 0.1).astype(np.float32)
    probability[1:4, 1:4] = 0.55
    views = [(0, 0, 12, 8)]
    kept = postprocess_views(mask, views, probability=probability, min_probability=0.6)
    assert kept[1:4, 1:4].sum() == 0 and kept[4:8, 6:12].all()
    assert postprocess_views(mask, views, probability=probability, min_probability=0.5).sum() == 33
    with pytest.raises(ValueError, match="needs a probability map of shape"):
        postprocess_views(mask, views, min_probability=0.6)


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


def test_tta_averages_the_mirrored_prediction_per_segmenter_or_per_call() -> None:
    image, _ = frame_with_square()
    width = image.shape[1]
    plain = Segmenter(LeftHalf(), PLAIN, device="cpu", amp="off")
    mask, probability = plain.predict(image, return_probabilities=True)
    assert mask[:, : width // 2 - 1].all() and not mask[:, width // 2 + 1 :].any()
    left, right = torch.sigmoid(torch.tensor(1.0)).item(), 0.5
    np.testing.assert_allclose(probability[:, :10], left, rtol=1e-6)
    np.testing.assert_allclose(probability[:, -10:], right, rtol=1e-6)
    # mirrored back and averaged, every pixel gets (sigmoid(1) + 0.5) / 2 > 0.5
    mask, probability = plain.predict(image, tta=True, return_probabilities=True)
    assert mask.all()
    np.testing.assert_allclose(probability, (left + right) / 2, rtol=1e-6)
    mirrored = Segmenter(LeftHalf(), PLAIN, device="cpu", amp="off", tta=True)
    assert mirrored.predict(image).all()
    np.testing.assert_array_equal(mirrored.predict(image, tta=False), plain.predict(image))


def test_segmenter_returns_masks_at_the_original_size() -> None:
    image, truth = frame_with_square()
    segmenter = Segmenter(Threshold(), PLAIN, device="cpu", amp="off")
    predicted = segmenter.predict(image)
    assert predicted.shape == image.shape and predicted.dtype == np.uint8
    assert set(np.unique(predicted)) <= {0, 1}
    assert iou(predicted, truth) > 0.9  # only resampling at the square's border can differ


def test_probabilities_are_bilinear_at_the_frame_size_and_agree_with_the_mask() -> None:
    image, truth = frame_with_square(90, 140)
    segmenter = Segmenter(ColumnRamp(), PLAIN, device="cpu", amp="off")
    _, probability = segmenter.predict(image, return_probabilities=True)
    assert probability.shape == image.shape and probability.dtype == np.float32
    # Linear interpolation with pixel centres aligned reproduces the ramp on the frame:
    # p(x) = (x + 1/2) / W_frame, except within half a network pixel of the sides (clamped).
    columns = np.arange(image.shape[1])
    interior = slice(2, image.shape[1] - 2)
    expected = ((columns + 0.5) / image.shape[1])[interior]
    np.testing.assert_allclose(
        probability[:, interior], np.broadcast_to(expected, (90, 136)), atol=1e-5
    )

    threshold = Segmenter(Threshold(), PLAIN, device="cpu", amp="off")
    mask, probability = threshold.predict(image, return_probabilities=True)
    assert 0.0 <= probability.min() and probability.max() <= 1.0
    assert iou(probability > 0.5, mask) > 0.97 and iou(mask, truth) > 0.9


def test_probabilities_are_zero_outside_the_views_of_the_scan_region() -> None:
    images, _ = synthetic_phantoms(2, size=(120, 200), seed=0, split_screen=1.0)
    segmenter = Segmenter(UNet(base_channels=4, depth=2, seed=0), {"size": (64, 64)}, device="cpu")
    for image in images:
        views = preprocess(image, size=(64, 64)).views
        assert len(views) == 2  # split screen: a gap between the views, borders around
        inside = np.zeros(image.shape, bool)
        for view in views:
            inside[view.slices] = True
        mask, probability = segmenter.predict(image, return_probabilities=True)
        assert not probability[~inside].any() and not mask[~inside].any()
        assert probability[inside].min() > 0  # a softmax is never exactly 0 here


def test_predict_many_is_predict_for_each_frame_across_batches() -> None:
    images, _ = synthetic_phantoms(3, size=(80, 120), seed=1)
    frames = [images[0], images[1][:70, :100], images[2]]  # sizes may differ
    segmenter = Segmenter(UNet(base_channels=4, depth=2, seed=0), {"size": (64, 64)}, batch_size=2)
    many = segmenter.predict_many(frames, tta=True, return_probabilities=True)
    for frame, (mask, probability) in zip(frames, many, strict=True):
        one_mask, one_probability = segmenter.predict(frame, tta=True, return_probabilities=True)
        np.testing.assert_array_equal(mask, one_mask)
        np.testing.assert_allclose(probability, one_probability, atol=1e-6)
    assert [m.shape for m in segmenter.predict_many(images)] == [(80, 120)] * 3  # (N, H, W) array


def test_prepare_then_segment_prepared_is_predict() -> None:
    images, _ = synthetic_phantoms(2, size=(80, 120), seed=2)
    segmenter = Segmenter(UNet(base_channels=4, depth=2, seed=0), {"size": (64, 64)}, tta=True)
    prepared = [segmenter.prepare(image) for image in images]
    halves = segmenter.segment_prepared(prepared, return_probabilities=True)
    for image, (mask, probability) in zip(images, halves, strict=True):
        whole_mask, whole_probability = segmenter.predict(image, return_probabilities=True)
        np.testing.assert_array_equal(mask, whole_mask)
        np.testing.assert_allclose(probability, whole_probability, atol=1e-6)
    assert [p is None for _, p in segmenter.segment_prepared(prepared)] == [True, True]
    with pytest.raises(ValueError, match="tta must be True or False"):
        segmenter.segment_prepared(prepared, tta="yes")


def test_the_folder_code_uses_only_the_segmenters_public_methods() -> None:
    """``inference.folders`` depends on the Segmenter one way: no private attribute of it."""
    source = Path(thyroidseg.inference.folders.__file__).read_text(encoding="utf-8")
    reached = {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "segmenter"
    }
    assert {"prepare", "measure_prepared"} <= reached
    assert [name for name in reached if name.startswith("_")] == []


def test_the_predict_folder_method_is_the_function_under_the_segmenters_threads(
    tmp_path: Path,
) -> None:
    image, _ = frame_with_square()
    write_image(tmp_path / "in" / "scan.png", image)
    segmenter = Segmenter(Threshold(), PLAIN, device="cpu")
    old = segmenter.predict_folder(tmp_path / "in", tmp_path / "old", progress=False)
    new = predict_folder(segmenter, tmp_path / "in", tmp_path / "new", progress=False)
    assert list(old.masks) == list(new.masks) == ["scan"]
    assert old.masks["scan"].read_bytes() == new.masks["scan"].read_bytes()


def test_measure_reads_a_file_once_and_its_errors_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, _ = frame_with_square()
    path = write_image(tmp_path / "scan.png", image)
    reads: list[Path] = []
    fromfile = np.fromfile  # what thyroidseg.io.files.read_image reads an image file with

    def counted(file, *args, **kwargs):
        reads.append(Path(file))
        return fromfile(file, *args, **kwargs)

    monkeypatch.setattr(np, "fromfile", counted)
    segmenter = Segmenter(Threshold(), PLAIN, device="cpu")
    assert segmenter.measure(path) == segmenter.measure(image)
    assert reads == [path]  # the scan check and preprocessing share one read
    flat = write_image(tmp_path / "flat.png", np.full((90, 140), 7, np.uint8))
    with pytest.raises(ValueError, match=rf"{re.escape(str(flat))}: .*constant image"):
        segmenter.measure(flat)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "corrupt.png"))):
        segmenter.measure(tmp_path / "corrupt.png")


def test_one_frame_and_many_frames_are_not_confused() -> None:
    segmenter = Segmenter(Threshold(), PLAIN, device="cpu")
    image, _ = frame_with_square()
    with pytest.raises(ValueError, match="use predict_many"):
        segmenter.predict([image, image])
    with pytest.raises(ValueError, match="one path 'scan.png'; use predict"):
        segmenter.predict_many("scan.png")
    with pytest.raises(ValueError, match=r"shape \(90, 140\); use predict"):
        segmenter.predict_many(image)
    with pytest.raises(ValueError, match="tta must be True or False"):
        segmenter.predict(image, tta="yes")


def test_ensemble_of_identical_models_equals_one_model() -> None:
    model = UNet(base_channels=4, depth=2, seed=3)
    images, _ = synthetic_phantoms(2, size=(80, 120), seed=2)
    one = Segmenter(model, {"size": (64, 64)}, device="cpu", amp="off")
    two = Segmenter(
        Ensemble([model, copy.deepcopy(model)]), {"size": (64, 64)}, device="cpu", amp="off"
    )
    for image in images:
        mask, probability = one.predict(image, return_probabilities=True)
        ensemble_mask, ensemble_probability = two.predict(image, return_probabilities=True)
        np.testing.assert_array_equal(ensemble_mask, mask)
        np.testing.assert_allclose(ensemble_probability, probability, atol=1e-6)


def test_ensemble_softmax_is_the_mean_of_the_members_softmax() -> None:
    members = [UNet(base_channels=4, depth=2, seed=seed) for seed in (0, 1, 2)]
    ensemble = Ensemble(members).eval()
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        mean = torch.stack([m.eval()(x).softmax(dim=1) for m in members]).mean(dim=0)
        scores = ensemble(x)
        scripted = torch.jit.script(ensemble)(x)  # one module that TorchScript exports
    assert scores.shape == (2, 2, 32, 48) and scores.dtype == torch.float32
    torch.testing.assert_close(scores.softmax(dim=1), mean)
    assert not torch.allclose(mean, members[0](x).softmax(dim=1))  # the members do differ
    torch.testing.assert_close(scripted, scores)
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])
    with pytest.raises(ValueError, match="member 1 is a str"):
        Ensemble([members[0], "unet"])


def test_from_checkpoint_rebuilds_the_unet_and_its_preprocessing(tmp_path: Path) -> None:
    checkpoint = trained_checkpoint(tmp_path)
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu", amp="off")
    assert segmenter.preprocess_options == {**PLAIN, "size": list(PLAIN["size"])}  # from JSON
    assert not segmenter.tta and segmenter.min_area == 0  # no recommendation stored: all off
    model = UNet(base_channels=4, depth=2)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    image, _ = frame_with_square()
    direct = Segmenter(model, PLAIN, device="cpu", amp="off").predict(image)
    np.testing.assert_array_equal(segmenter.predict(image), direct)


def test_several_checkpoints_make_one_ensemble_with_one_preprocessing(tmp_path: Path) -> None:
    first = trained_checkpoint(tmp_path)
    checkpoint = load_checkpoint(first)
    other = UNet(base_channels=4, depth=2, seed=5)
    checkpoint["model"] = other.state_dict()
    second = save_checkpoint(tmp_path / "second.pt", checkpoint)
    segmenter = Segmenter.from_checkpoint([first, second], device="cpu", amp="off")
    assert isinstance(segmenter.model, Ensemble) and len(segmenter.model.members) == 2
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        members = [Segmenter.from_checkpoint(p, device="cpu").model for p in (first, second)]
        mean = (members[0](x).softmax(1) + members[1](x).softmax(1)) / 2
        torch.testing.assert_close(segmenter.model(x).softmax(1), mean)

    data = {**checkpoint["config"]["data"]}
    data["preprocess_options"] = {**data["preprocess_options"], "size": [96, 96]}
    resized = with_config(second, tmp_path / "resized.pt", data=data)
    with pytest.raises(ValueError, match="resized.pt: prepares frames with .* share one"):
        Segmenter.from_checkpoint([first, resized])
    with pytest.raises(ValueError, match="model=... is loaded from one checkpoint"):
        Segmenter.from_checkpoint([first, second], model=UNet(base_channels=4, depth=2))


def test_checkpoint_inference_settings_are_defaults_that_options_override(tmp_path: Path) -> None:
    plain = trained_checkpoint(tmp_path)
    recommended = with_config(
        plain, tmp_path / "tuned.pt", inference={"tta": True, "min_area": 5, "fill_holes": True}
    )
    segmenter = Segmenter.from_checkpoint(recommended, device="cpu")
    assert (segmenter.tta, segmenter.min_area, segmenter.fill_holes) == (True, 5, True)
    assert segmenter.keep_largest is False  # not stored: the library default
    chosen = Segmenter.from_checkpoint(recommended, device="cpu", tta=False, min_area=0)
    assert (chosen.tta, chosen.min_area, chosen.fill_holes) == (False, 0, True)

    with pytest.raises(ValueError, match=r"disagree on tta .*tuned.pt: True"):
        Segmenter.from_checkpoint([plain, recommended])
    both = Segmenter.from_checkpoint([plain, recommended], tta=True, min_area=5, fill_holes=True)
    assert both.tta and isinstance(both.model, Ensemble)
    unknown = with_config(plain, tmp_path / "odd.pt", inference={"threshold": 0.3})
    with pytest.raises(ValueError, match=r"odd.pt: config\['inference'\]: unknown .*'threshold'"):
        Segmenter.from_checkpoint(unknown)
    wrong = with_config(plain, tmp_path / "wrong.pt", inference={"tta": "false"})
    with pytest.raises(ValueError, match="tta must be True or False, got 'false'"):
        Segmenter.from_checkpoint(wrong)
    strict = with_config(plain, tmp_path / "strict.pt", inference={"min_probability": 0.6})
    assert Segmenter.from_checkpoint(strict).min_probability == 0.6
    assert Segmenter.from_checkpoint(strict, min_probability=0).min_probability == 0
    odd = with_config(plain, tmp_path / "odd-p.pt", inference={"min_probability": 60})
    with pytest.raises(ValueError, match="min_probability must be a number in \\[0, 1\\], got 60"):
        Segmenter.from_checkpoint(odd)


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


def test_from_checkpoint_refuses_frames_prepared_otherwise(tmp_path: Path) -> None:
    checkpoint = trained_checkpoint(tmp_path, preprocess=None)  # resize only
    with pytest.raises(ValueError, match="last.pt: the model was trained on frames prepared by"):
        Segmenter.from_checkpoint(checkpoint)


def test_pretrained_without_shipped_weights_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(thyroidseg.models.loading, "SHIPPED_WEIGHTS", "no-such-model.pt")
    assert shipped_weights().name == "no-such-model.pt"
    with pytest.raises(FileNotFoundError, match="no shipped model is installed .*no-such-model"):
        Segmenter.pretrained()


def test_pretrained_loads_the_shipped_checkpoint_with_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = with_config(trained_checkpoint(tmp_path), tmp_path / SHIPPED_WEIGHTS,
                          inference={"tta": True, "min_area": 3})  # fmt: skip
    files = {"whole": weights, "refine": tmp_path / "no-refine-stage.pt"}
    monkeypatch.setattr(
        thyroidseg.inference.segmenter, "shipped_weights", lambda stage="whole": files[stage]
    )
    segmenter = Segmenter.pretrained(device="cpu", amp="off")
    assert (segmenter.tta, segmenter.min_area) == (True, 3) and segmenter.refiner is None
    with pytest.raises(FileNotFoundError, match="no-refine-stage.pt is missing"):
        Segmenter.pretrained(refine=True)
    assert segmenter.preprocess_options["size"] == list(PLAIN["size"])
    assert Segmenter.pretrained(tta=False).tta is False
    image, _ = frame_with_square()
    expected = Segmenter.from_checkpoint(weights, device="cpu", amp="off").predict(image)
    np.testing.assert_array_equal(segmenter.predict(image), expected)


def test_pretrained_runs_the_shipped_refine_stage_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = trained_checkpoint(tmp_path)
    frames = ThyroidDataset(
        tmp_path / "data", size=PLAIN["size"], preprocess=functools.partial(preprocess, **PLAIN)
    )
    Trainer(
        UNet(base_channels=4, depth=2, seed=0), CropDataset(frames, CropRule(size=32)),
        loss=nn.CrossEntropyLoss(), epochs=1, out_dir=tmp_path / "refine", progress=False,
    ).fit()  # fmt: skip
    files = {"whole": whole, "refine": tmp_path / "refine" / LAST_CHECKPOINT}
    monkeypatch.setattr(
        thyroidseg.inference.segmenter, "shipped_weights", lambda stage="whole": files[stage]
    )
    both = Segmenter.pretrained(device="cpu", amp="off")
    assert both.refiner is not None and both.refiner.rule == CropRule(size=32)
    assert Segmenter.pretrained(refine=False).refiner is None
    image, _ = frame_with_square()
    expected = Segmenter.from_checkpoint(whole, refine=files["refine"], device="cpu", amp="off")
    np.testing.assert_array_equal(both.predict(image), expected.predict(image))


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


def test_a_checkpoint_with_nan_weights_is_refused_at_load(tmp_path: Path) -> None:
    checkpoint = load_checkpoint(trained_checkpoint(tmp_path))
    key = next(k for k, v in checkpoint["model"].items() if v.is_floating_point())
    checkpoint["model"][key] = torch.full_like(checkpoint["model"][key], float("nan"))
    broken = save_checkpoint(tmp_path / "nan.pt", checkpoint)  # a digest of the NaN weights
    with pytest.raises(ValueError, match=rf"nan\.pt: weight '{key}' holds \d+ NaN or infinite"):
        Segmenter.from_checkpoint(broken)


def test_a_stored_frame_size_the_network_cannot_take_is_refused_at_load(tmp_path: Path) -> None:
    checkpoint = load_checkpoint(trained_checkpoint(tmp_path))
    checkpoint["config"]["data"]["preprocess_options"]["size"] = [2, 2]  # depth 2: step 4
    broken = save_checkpoint(tmp_path / "small.pt", checkpoint)
    with pytest.raises(ValueError, match=r"small\.pt: config\['data'\]\['preprocess_options'\]"):
        Segmenter.from_checkpoint(broken)


@pytest.mark.parametrize("setting", [{"min_area": -5}, {"min_area": 2.5}, {"tta": "yes"}])
def test_stored_inference_settings_of_the_wrong_kind_are_refused_naming_the_file(
    tmp_path: Path, setting: dict
) -> None:
    checkpoint = load_checkpoint(trained_checkpoint(tmp_path))
    checkpoint["config"]["inference"] = setting
    broken = save_checkpoint(tmp_path / "settings.pt", checkpoint)
    with pytest.raises(
        ValueError, match=rf"settings\.pt: config\['inference'\]: {next(iter(setting))}"
    ):
        Segmenter.from_checkpoint(broken)


def test_each_call_runs_on_the_segmenters_threads_and_restores_the_previous_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Recording(Threshold):
        def __init__(self) -> None:
            super().__init__()
            self.threads: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.threads.append(torch.get_num_threads())
            return super().forward(x)

    image, _ = frame_with_square()
    before = torch.get_num_threads(), cv2.getNumThreads()
    wanted = 1 if before[0] > 1 else 2  # a count other than the process's
    model = Recording()
    Segmenter(model, PLAIN, device="cpu", threads=wanted).predict(image)
    Segmenter(model, PLAIN, device="cpu", threads=None).predict(image)
    assert model.threads == [wanted, before[0]]
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
    monkeypatch.setattr(thyroidseg.io.threads, "free_cores", lambda: 3)  # auto: the free cores
    assert Segmenter(model, PLAIN, device="cpu").threads == 3
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(ValueError, match="threads must be a positive integer or auto"):
            Segmenter(model, PLAIN, device="cpu", threads=bad)  # type: ignore[arg-type]


def test_segmenter_settings_spell_the_base_classs_keywords() -> None:
    """`SegmenterSettings` types the ``**settings`` that `Segmenter` and `OnnxSegmenter`
    pass to `SegmenterBase`: the same names and types, so neither drifts from the other."""
    hints = typing.get_type_hints(SegmenterBase.__init__)
    keywords = {
        name: hints[name]
        for name, parameter in inspect.signature(SegmenterBase.__init__).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert "quality" in keywords and "tta" in keywords
    assert typing.get_type_hints(SegmenterSettings) == keywords
