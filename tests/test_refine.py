"""Tests of the crop-and-refine second stage: crop geometry, training crops, inference."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from inference_helpers import PLAIN, frame_with_square, iou
from thyroidseg.cli import main
from thyroidseg.data import ThyroidDataset
from thyroidseg.data.crops import CropDataset, read_crop_boxes, write_crop_boxes
from thyroidseg.data.synthetic import write_synthetic_dataset
from thyroidseg.inference import Segmenter
from thyroidseg.inference.refine import Refiner
from thyroidseg.models.checkpoint import LAST_CHECKPOINT, load_checkpoint
from thyroidseg.preprocessing import preprocess
from thyroidseg.preprocessing.crops import CropRule, cut_crop, cut_mask, nodule_boxes
from thyroidseg.preprocessing.geometry import Box
from thyroidseg.training.workflows import train_folder
from tiny_models import Loose, Threshold

CLEAN = {**PLAIN, "crop": False}  # no equalisation or smoothing: crops keep grey levels


@given(
    x0=st.integers(-50, 500),
    y0=st.integers(-50, 500),
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    margin=st.floats(0, 2),
    min_side=st.integers(1, 64),
)
def test_square_holds_the_box_with_the_margin(x0, y0, width, height, margin, min_side) -> None:
    rule = CropRule(min_side=min_side)
    box = Box(x0, y0, x0 + width, y0 + height)
    square = rule.square(box, margin)
    side = max(round(max(width, height) * (1 + 2 * margin)), min_side)
    assert square.width == square.height == side
    if side >= max(width, height):
        assert square.x0 <= box.x0 and square.y0 <= box.y0
        assert square.x1 >= box.x1 and square.y1 >= box.y1
    centre = ((square.x0 + square.x1) / 2, (square.y0 + square.y1) / 2)
    assert abs(centre[0] - (box.x0 + box.x1) / 2) <= 0.5
    assert abs(centre[1] - (box.y0 + box.y1) / 2) <= 0.5


def test_square_shift_moves_the_centre_by_a_fraction_of_the_side() -> None:
    rule = CropRule()
    box = Box(100, 100, 140, 140)
    plain, shifted = rule.square(box, 0.5), rule.square(box, 0.5, (0.1, -0.25))
    assert (shifted.x0 - plain.x0, shifted.y0 - plain.y0) == (8, -20)  # side 80


def test_crop_rule_round_trips_and_refuses_bad_settings() -> None:
    rule = CropRule(size=96, margin=0.3, train_margin=(0.2, 0.6), jitter=0.1, min_side=24)
    assert CropRule.from_dict(rule.to_dict()) == rule
    for bad, message in [
        ({"margin": -0.1}, "margin must be"),
        ({"train_margin": (0.8, 0.2)}, "train_margin must be"),
        ({"jitter": 0.5}, "jitter must be"),
        ({"size": 8}, "size"),
    ]:
        with pytest.raises(ValueError, match=message):
            CropRule(**bad)
    with pytest.raises(TypeError, match="unknown"):
        CropRule.from_dict({"unknown": 1})


def test_cut_crop_pads_outside_the_frame_with_zeros() -> None:
    frame = np.arange(1, 101, dtype=np.uint8).reshape(10, 10)
    crop = cut_crop(frame, Box(-2, 5, 4, 11), 6)  # no resizing: 6 x 6
    assert crop[:5, 2:].tolist() == frame[5:, :4].tolist()
    assert not crop[:, :2].any() and not crop[5].any()
    mask = (frame > 50).astype(np.uint8)
    cut = cut_mask(mask, Box(0, 0, 10, 10), 25)  # enlarged by nearest neighbour
    assert set(np.unique(cut)) == {0, 1} and abs(cut.mean() - 0.5) < 0.05
    assert not cut_crop(frame, Box(20, 20, 30, 30), 8).any()  # wholly outside


def test_nodule_boxes_are_found_per_view() -> None:
    mask = np.zeros((20, 40), np.uint8)
    mask[5:10, 15:25] = 1  # one blob across the seam between two views at x = 20
    boxes = nodule_boxes(mask, [Box(0, 0, 20, 20), Box(20, 0, 40, 20)])
    assert boxes == [Box(15, 5, 20, 10), Box(20, 5, 25, 10)]
    assert nodule_boxes(np.zeros((20, 40), np.uint8), [Box(0, 0, 40, 20)]) == []


def _dataset(tmp_path: Path, n: int = 6) -> ThyroidDataset:
    data = write_synthetic_dataset(tmp_path / "data", n, size=(96, 128), seed=0)
    return ThyroidDataset(data, size=(64, 64), progress=False)


def test_crop_dataset_has_one_item_per_nodule_and_reproducible_draws(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    rule = CropRule(size=48)
    crops = CropDataset(dataset, rule, seed=3)
    expected = 0
    for i in range(len(dataset)):
        image, mask = dataset.load_original(i)
        expected += len(nodule_boxes(mask, preprocess(image).views))
    assert len(crops) == expected > 0
    item = crops[0]
    assert item["image"].shape == (1, 48, 48) and item["mask"].shape == (48, 48)
    assert item["image"].dtype == torch.float32 and set(item["mask"].unique().tolist()) <= {0, 1}
    again = crops[0]["image"]
    crops.set_epoch(1)
    other = crops[0]["image"]
    crops.set_epoch(0)
    assert torch.equal(item["image"], again) and torch.equal(item["image"], crops[0]["image"])
    assert not torch.equal(item["image"], other)  # another margin and centre each epoch
    centred = CropDataset(dataset, rule, train=False)
    centred.set_epoch(5)
    assert torch.equal(centred[0]["image"], CropDataset(dataset, rule, train=False)[0]["image"])
    assert crops.config["crops"] == rule.to_dict()
    assert crops.config["preprocess_options"] == dataset.config["preprocess_options"]


def test_crop_boxes_add_crops_whose_target_is_the_annotation_inside(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    rule = CropRule(size=48)
    plain = CropDataset(dataset, rule, train=False)
    image, mask = dataset.load_original(0)
    empty = np.argwhere(mask == 0)[0]  # a corner far from the nodule: a "wrong object"
    wrong = Box(int(empty[1]), int(empty[0]), int(empty[1]) + 4, int(empty[0]) + 4)
    boxes = {dataset.names[0]: [wrong], "not-in-this-fold": [Box(0, 0, 5, 5)]}
    path = write_crop_boxes(tmp_path / "boxes.json", boxes, "a test")
    assert read_crop_boxes(path) == boxes
    more = CropDataset(dataset, rule, train=False, extra_boxes=read_crop_boxes(path))
    assert len(more) == len(plain) + 1
    added = [k for k in range(len(more)) if more.items[k] == (0, wrong)]
    assert len(added) == 1 and more.names[added[0]] == dataset.names[0]
    square = rule.square(wrong)
    expected = cut_mask(mask, square, 48)
    assert torch.equal(more[added[0]]["mask"], torch.as_tensor(expected).to(torch.int64))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[1, 2]", "not a crop-box file"),
        ('{"format": "thyroidseg-crop-boxes", "boxes": {"a": [[0, 0, 5]]}}', "frame a: .*four"),
        ('{"format": "thyroidseg-crop-boxes", "boxes": {"a": [[5, 0, 5, 4]]}}', "frame a: .*empty"),
        ("{", "not a JSON file"),
    ],
)
def test_a_bad_crop_box_file_is_named(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "boxes.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"boxes.json: {error}"):
        read_crop_boxes(path)
    with pytest.raises(FileNotFoundError, match="no such crop-box file"):
        read_crop_boxes(tmp_path / "missing.json")


def test_refiner_tightens_a_loose_outline_and_keeps_the_rest(tmp_path: Path) -> None:
    image, truth = frame_with_square(120, 180)
    prepared = preprocess(image, **CLEAN)
    loose = np.zeros_like(truth)
    loose[12:70, 22:110] = 1  # the rectangle grown by 8-10 px
    rule = CropRule(size=64)
    refiner = Refiner(Threshold(), rule, CLEAN, device="cpu", amp="off", whole_weight=0.0)
    refined, probability, covered = refiner.refine(prepared, loose)
    assert iou(loose, truth) < 0.7 and iou(refined, truth) > 0.97
    assert covered[truth == 1].all() and not covered.all()
    assert probability[~covered].max() == 0 and probability[22:58, 32:98].min() > 0.5
    empty = np.zeros_like(truth)
    same, _, nothing = refiner.refine(prepared, empty)
    assert not same.any() and not nothing.any()

    # Blending in the whole-frame probability: w * whole + (1 - w) * refine inside the squares.
    whole = loose.astype(np.float32)  # certain of the loose outline
    blending = Refiner(Threshold(), rule, CLEAN, device="cpu", amp="off", whole_weight=0.75)
    mixed, blended, _ = blending.refine(prepared, loose, whole)
    expected = 0.75 * whole + 0.25 * probability
    np.testing.assert_allclose(blended[covered], expected[covered], atol=1e-6)
    assert (mixed == loose).all()  # three quarters of a certain vote outweigh the refiner
    with pytest.raises(ValueError, match="pass whole_probability"):
        blending.refine(prepared, loose)
    with pytest.raises(ValueError, match="whole_weight must be a number in"):
        Refiner(Threshold(), rule, CLEAN, whole_weight=1.5)


def test_segmenter_runs_the_refiner_and_checks_its_cleaning() -> None:
    image, truth = frame_with_square(120, 180)

    refiner = Refiner(
        Threshold(), CropRule(size=64), CLEAN, device="cpu", amp="off", whole_weight=0.0
    )
    alone = Segmenter(Loose(), CLEAN, device="cpu", amp="off")
    both = Segmenter(Loose(), CLEAN, device="cpu", amp="off", refiner=refiner)
    mask, probability = both.predict(image, return_probabilities=True)
    assert iou(alone.predict(image), truth) < 0.85 < 0.97 < iou(mask, truth)
    assert ((probability > 0.5) == (mask == 1)).mean() > 0.99
    with pytest.raises(ValueError, match="both stages must crop and inpaint alike"):
        Segmenter(Loose(), {**CLEAN, "crop": True}, device="cpu", refiner=refiner)
    with pytest.raises(ValueError, match="refiner must be a thyroidseg.inference.refine.Refiner"):
        Segmenter(Loose(), CLEAN, device="cpu", refiner=Threshold())


def test_train_folder_with_crops_trains_a_refiner_that_loads_as_stage_2(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(96, 128), seed=0)
    options = dict(size=(64, 64), base_channels=4, epochs=1, batch_size=4, amp="off")
    train_folder(data, tmp_path / "whole", folds=2, progress=False, **options)
    rule = CropRule(size=32)
    trainer = train_folder(data, tmp_path / "crops", folds=2, crops=rule, progress=False, **options)
    assert isinstance(trainer.train_data, CropDataset) and trainer.val_data.train is False
    stage2 = tmp_path / "crops" / LAST_CHECKPOINT
    assert load_checkpoint(stage2)["config"]["data"]["crops"] == rule.to_dict()
    segmenter = Segmenter.from_checkpoint(tmp_path / "whole" / LAST_CHECKPOINT, refine=stage2)
    assert segmenter.refiner is not None and segmenter.refiner.rule == rule
    image, _ = ThyroidDataset(data, size=(64, 64), progress=False).load_original(0)
    assert segmenter.predict(image).shape == image.shape[:2]
    with pytest.raises(ValueError, match="a refine \\(stage 2\\) model"):
        Segmenter.from_checkpoint(stage2)
    with pytest.raises(ValueError, match="a whole-frame \\(stage 1\\) model, not a refine"):
        Refiner.from_checkpoint(tmp_path / "whole" / LAST_CHECKPOINT)
    with pytest.raises(
        ValueError, match=r"cannot resume on other data.*crops.size=32 there, 48 here"
    ):
        train_folder(data, tmp_path / "crops", folds=2, resume=True, progress=False,
                     crops=CropRule(size=48), **options)  # fmt: skip


def test_train_folder_crops_around_the_boxes_of_a_crop_box_file(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(96, 128), seed=0)
    options = dict(size=(64, 64), base_channels=4, epochs=1, batch_size=4, amp="off")
    names = ThyroidDataset(data).names
    boxes = write_crop_boxes(tmp_path / "b.json", {n: [Box(0, 0, 9, 9)] for n in names}, "test")
    rule = CropRule(size=32)
    plain = train_folder(data, tmp_path / "a", folds=2, crops=rule, progress=False, **options)
    more = train_folder(
        data, tmp_path / "b", folds=2, crops=rule, crop_boxes=boxes, progress=False, **options
    )
    assert len(more.train_data) == len(plain.train_data) + 3  # one box on each training frame
    assert len(more.val_data) == len(plain.val_data)  # validation: the annotations only
    stored = load_checkpoint(tmp_path / "b" / LAST_CHECKPOINT)["config"]["data"]
    assert stored["crop_boxes"] == str(boxes.resolve())


def test_cli_trains_both_stages_predicts_with_both_and_exports_the_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(96, 128), seed=0)
    small = ["--size", "64", "64", "--batch-size", "4", "--quiet", "--base-channels", "4"]
    small += ["--amp", "off", "--epochs", "1", "--folds", "2"]
    assert main(["train", str(data), str(tmp_path / "whole"), *small]) == 0
    assert main(["train", str(data), str(tmp_path / "crops"), "--stage", "refine", *small]) == 0
    boxes = write_crop_boxes(tmp_path / "b.json", {"none": [Box(0, 0, 4, 4)]}, "test")
    extra = ["--stage", "refine", "--crop-boxes", str(boxes), *small]
    assert main(["train", str(data), str(tmp_path / "boxes"), *extra]) == 0
    stored = load_checkpoint(tmp_path / "boxes" / LAST_CHECKPOINT)["config"]["data"]
    assert stored["crop_boxes"] == str(boxes.resolve())
    whole, crops = tmp_path / "whole" / LAST_CHECKPOINT, tmp_path / "crops" / LAST_CHECKPOINT
    assert load_checkpoint(crops)["config"]["data"]["crops"] == CropRule().to_dict()
    model = ["--model", str(whole), "--refine", str(crops)]
    assert main(["predict", str(data / "images"), str(tmp_path / "out"), *model, "--quiet"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 6
    assert main(["predict", str(data), str(tmp_path / "x"), *model, "--no-refine"]) == 2
    assert "--refine CHECKPOINT and --no-refine contradict" in capsys.readouterr().err

    onnx = tmp_path / "export" / "thyroid.onnx"
    onnx.parent.mkdir()  # export refuses a missing folder
    assert main(["export", *model, "--onnx", str(onnx)]) == 0
    refine_onnx, description = onnx.with_name("thyroid-refine.onnx"), onnx.with_suffix(".json")
    assert capsys.readouterr().out.split() == [
        "wrote", str(onnx), "wrote", str(refine_onnx), "wrote", str(description)
    ]  # fmt: skip
    stored = json.loads(description.read_text())
    assert stored["refine"]["crops"] == CropRule().to_dict()
    segmenter = Segmenter.from_checkpoint(whole, refine=crops, device="cpu", amp="off")
    assert stored == json.loads(json.dumps(segmenter.describe()))
    crops_batch = torch.rand(2, 1, 128, 128)
    with torch.inference_mode():
        eager = segmenter.refiner.model(crops_batch).numpy()
    session = ort.InferenceSession(str(refine_onnx), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {"image": crops_batch.numpy()})
    np.testing.assert_allclose(exported, eager, atol=1e-4)
    assert main(["export", *model, "--onnx", str(onnx)]) == 2  # nothing is overwritten
    assert "thyroid-refine.onnx" in capsys.readouterr().err


def test_a_refined_nodule_never_spills_into_the_other_view_of_a_split_screen() -> None:
    class Everywhere(torch.nn.Module):  # "nodule" on every pixel of every crop
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.zeros_like(x), torch.ones_like(x)], dim=1)

    image, _ = frame_with_square(90, 180)
    left, right = Box(0, 0, 80, 90), Box(90, 0, 180, 90)
    prepared = dataclasses.replace(preprocess(image, **CLEAN), views=[left, right])
    mask = np.zeros((90, 180), np.uint8)
    mask[25:55, 50:80] = 1  # touches the left view's right edge
    refiner = Refiner(Everywhere(), CropRule(size=32), CLEAN, device="cpu", amp="off",
                      whole_weight=0.0)  # fmt: skip
    refined, probability, covered = refiner.refine(prepared, mask)
    square = refiner.rule.square(Box(50, 25, 80, 55))
    assert square.x1 > right.x0  # the crop reaches into the other view...
    assert not refined[:, 80:].any() and not covered[:, 80:].any()  # ...but nothing lands there
    assert probability[:, 80:].max() == 0 and refined[left.slices].sum() == covered.sum() > 400
    with pytest.raises(ValueError, match="must have the frame's shape"):
        refiner.refine(prepared, mask[:64, :64])


def test_a_run_cannot_be_resumed_as_the_other_stage(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", 6, size=(96, 128), seed=0)
    options = dict(size=(64, 64), base_channels=4, epochs=1, batch_size=4, amp="off")
    train_folder(data, tmp_path / "whole", folds=2, progress=False, **options)
    with pytest.raises(ValueError, match=r"stage=whole there, refine here \(--stage\)"):
        train_folder(data, tmp_path / "whole", folds=2, resume=True, crops=CropRule(), **options)
    with pytest.raises(TypeError, match="crops must be a CropRule or None"):
        train_folder(data, tmp_path / "other", crops={"size": 64}, **options)
    with pytest.raises(ValueError, match="crop_boxes .* needs a refine run"):
        train_folder(data, tmp_path / "other", crop_boxes=tmp_path / "b.json", **options)


def test_refine_many_sends_at_most_batch_size_crops_per_forward_pass() -> None:
    image = np.full((120, 300), 40, np.uint8)
    mask = np.zeros(image.shape, np.uint8)
    for k in range(7):  # seven separate nodules, seven crops
        image[50:70, 10 + 40 * k : 30 + 40 * k] = 220
        mask[50:70, 10 + 40 * k : 30 + 40 * k] = 1
    prepared = preprocess(image, **CLEAN)

    class Counting(Threshold):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.batches.append(x.shape[0])
            return super().forward(x)

    results, batches = {}, {}
    for batch_size in (3, 100):
        counting = Counting()
        refiner = Refiner(
            counting, CropRule(size=32), CLEAN, device="cpu", amp="off", whole_weight=0.0,
            batch_size=batch_size,
        )  # fmt: skip
        results[batch_size] = refiner.refine_many([prepared, prepared], [mask, mask], [None, None])
        batches[batch_size] = counting.batches
    assert batches == {3: [3, 3, 3, 3, 2], 100: [14]}
    for (got, probability, covered), (want, *_) in zip(results[3], results[100], strict=True):
        assert (got == want).all() and covered.sum() > 0 and probability.max() > 0.5
    with pytest.raises(ValueError, match="batch_size must be"):
        Refiner(Threshold(), CropRule(), CLEAN, batch_size=0)
