"""The expected IoU per nodule: features, the estimator, and where it shows."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference_helpers import PLAIN, frame_with_square, scan_frame, trained_checkpoint, with_config
from thyroidseg.inference import Segmenter, predict_folder
from thyroidseg.inference.flips import mirrored_pair, tta_probabilities
from thyroidseg.inference.measurements import measure, write_measurements_csv
from thyroidseg.inference.overlay import REVIEW_COLOUR, overlay
from thyroidseg.inference.quality import (
    FEATURES,
    Evidence,
    ExpectedIoU,
    nodule_features,
    quality_scores,
    review_threshold,
)
from thyroidseg.inference.refine import Refiner
from thyroidseg.io.files import read_image, write_image
from thyroidseg.models.unet import UNet
from thyroidseg.preprocessing.crops import CropRule
from tiny_models import Threshold


def features_of(mask, probability, evidence, views) -> dict[str, float]:
    nodules = measure(mask, probabilities=probability, views=views)
    rows = nodule_features(mask, probability, evidence, nodules, views)
    return dict(zip(FEATURES, rows[0], strict=True))


def test_features_of_a_hand_made_nodule() -> None:
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 10:20] = 1  # 100 pixels, far from the border
    probability = np.zeros(mask.shape, np.float32)
    probability[10:20, 10:20] = 0.95
    probability[10:12, 10:20] = 0.6  # 20 of the 100 pixels
    stage1 = np.zeros_like(mask)
    stage1[10:20, 10:15] = 1  # half of the final nodule
    mirrored = np.zeros(mask.shape, np.float32)
    mirrored[10:20, 10:20] = 0.9
    got = features_of(mask, probability, Evidence(stage1, (probability, mirrored)), None)
    assert got["mean_probability"] == pytest.approx(0.8 * 0.95 + 0.2 * 0.6)
    assert got["p10_probability"] == pytest.approx(0.6)
    assert got["confident_share"] == pytest.approx(0.8)
    assert got["stage_agreement"] == pytest.approx(0.5)
    assert got["flip_agreement"] == pytest.approx(1.0)
    assert got["log_area_fraction"] == pytest.approx(np.log10(100 / (40 * 60)))
    assert got["border_contact"] == 0.0
    assert (got["components"], got["split_screen"]) == (1.0, 0.0)


def test_contact_with_the_view_border_and_a_split_screen() -> None:
    mask = np.zeros((40, 60), np.uint8)
    mask[0:10, 31:41] = 1  # touches the top of the right view
    mask[20:25, 5:10] = 1  # a second nodule, in the left view
    probability = mask.astype(np.float32)
    views = [(0, 0, 30, 40), (30, 0, 60, 40)]
    nodules = measure(mask, probabilities=probability, views=views)
    rows = nodule_features(mask, probability, Evidence(None, (probability,) * 2), nodules, views)
    big, small = (dict(zip(FEATURES, row, strict=True)) for row in rows)
    assert 0 < big["border_contact"] < 1 and small["border_contact"] == 0
    assert big["log_area_fraction"] == pytest.approx(np.log10(100 / (30 * 40)))
    assert big["components"] == small["components"] == 2 and big["split_screen"] == 1
    assert big["stage_agreement"] == 1  # no refine stage: the stages cannot disagree


def test_the_fit_recovers_a_known_logistic_relation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)) * (1, 2, 0.5) + (0, 1, 0)
    truth = 1 / (1 + np.exp(-(0.3 + 1.2 * x[:, 0] - 0.4 * x[:, 1])))
    names = FEATURES[:3]
    fitted = ExpectedIoU.fit(x, truth, names=names, ridge=0.0, calibrate=False)
    slope = np.asarray(fitted.coefficients[1:]) / np.asarray(fitted.scale)
    np.testing.assert_allclose(slope, [1.2, -0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(fitted.predict(x), truth, atol=1e-6)
    calibrated = ExpectedIoU.fit(x, truth**2, names=names)  # a monotone distortion
    got, linear = calibrated.predict(x), replace(calibrated, calibration=None).predict(x)
    assert np.all(np.diff(got[np.argsort(linear)]) >= 0)  # an increasing map of the fit
    assert np.abs(got - truth**2).mean() < np.abs(fitted.predict(x) - truth**2).mean()


def test_the_estimator_is_plain_data_and_refuses_bad_data() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(50, len(FEATURES)))
    fitted = ExpectedIoU.fit(x, x[:, 0]).with_review(0.4, {"auroc": 0.8})
    data = json.loads(json.dumps(fitted.to_dict()))
    assert ExpectedIoU.from_dict(data) == fitted
    np.testing.assert_array_equal(ExpectedIoU.from_dict(data).predict(x), fitted.predict(x))
    with pytest.raises(ValueError, match="needs keys"):
        ExpectedIoU.from_dict({"features": ["mean_probability"]})
    with pytest.raises(ValueError, match="unknown or no features"):
        ExpectedIoU.from_dict({**data, "features": ["colour", *data["features"][1:]]})
    with pytest.raises(ValueError, match="need 9 means"):
        ExpectedIoU.from_dict({**data, "mean": data["mean"][:3]})
    with pytest.raises(ValueError, match="targets in"):
        ExpectedIoU.fit(x, x[:, 0] + 1)


def test_scores_and_the_review_threshold_on_known_cases() -> None:
    iou = np.array([0.2, 0.3, 0.7, 0.8, 0.9])
    perfect = quality_scores(iou, iou)
    assert (perfect["auroc"], perfect["mae"]) == (1.0, 0.0)
    assert perfect["spearman"] == pytest.approx(1.0)
    assert quality_scores(iou**3, iou)["spearman"] == pytest.approx(1.0)  # ranks only
    assert quality_scores(1 - iou, iou)["auroc"] == 0.0
    assert quality_scores(np.full(5, 0.5), iou)["auroc"] == 0.5  # ties count half
    threshold = review_threshold(iou, iou)
    assert 0.3 < threshold <= 0.7


def constant(value: float, threshold: float, stages: int = 1) -> ExpectedIoU:
    """An estimator that expects ``value`` for every nodule."""
    logit = float(np.log(value / (1 - value)))
    return ExpectedIoU(("components",), (0.0,), (1.0,), (logit, 0.0), None, threshold, stages)


@pytest.mark.parametrize(("threshold", "review"), [(0.5, True), (0.2, False)])
def test_nodules_get_an_expected_iou_and_a_review_flag(threshold: float, review: bool) -> None:
    image, _ = scan_frame()
    segmenter = Segmenter(Threshold(), PLAIN, device="cpu", quality=constant(0.3, threshold))
    [nodule] = segmenter.measure(image)
    assert nodule.expected_iou == pytest.approx(0.3) and nodule.review is review
    [plain] = Segmenter(Threshold(), PLAIN, device="cpu").measure(image)
    assert plain.expected_iou is None and plain.review is None


def test_an_estimator_must_fit_the_stages(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fitted for 1 stage"):
        Segmenter(Threshold(), PLAIN, device="cpu", quality=constant(0.3, 0.5, stages=2))
    checkpoint = trained_checkpoint(tmp_path)
    rated = with_config(checkpoint, tmp_path / "rated.pt", quality=constant(0.3, 0.5).to_dict())
    assert Segmenter.from_checkpoint(rated, device="cpu").quality == constant(0.3, 0.5)
    assert Segmenter.from_checkpoint(rated, device="cpu", quality=False).quality is None
    other = with_config(checkpoint, tmp_path / "two.pt", quality=constant(0.3, 0.5, 2).to_dict())
    assert Segmenter.from_checkpoint(other, device="cpu").quality is None  # fitted with stage 2
    broken = with_config(checkpoint, tmp_path / "broken.pt", quality={"features": []})
    with pytest.raises(ValueError, match=r"broken.pt: config\['quality'\]"):
        Segmenter.from_checkpoint(broken, device="cpu")


def test_the_csv_has_the_quality_columns_only_with_an_estimator(tmp_path: Path) -> None:
    image, _ = scan_frame()
    write_image(tmp_path / "in" / "a.png", image)
    rated = Segmenter(Threshold(), PLAIN, device="cpu", quality=constant(0.3, 0.5))
    result = predict_folder(rated, tmp_path / "in", tmp_path / "out", measurements=True)
    with result.measurements.open() as file:
        [row] = list(csv.DictReader(file))
    assert float(row["expected_iou"]) == pytest.approx(0.3) and row["review"] == "true"
    assert result.review == 1 and "1 nodule (1 to review)" in result.summary()
    plain = Segmenter(Threshold(), PLAIN, device="cpu")
    result = predict_folder(plain, tmp_path / "in", tmp_path / "plain", measurements=True)
    header = result.measurements.read_text().splitlines()[0].split(",")
    assert "expected_iou" not in header and "review" not in header
    assert result.review is None and "to review" not in result.summary()


def test_write_measurements_csv_puts_the_quality_after_the_probability(tmp_path: Path) -> None:
    image, mask = scan_frame()
    [nodule] = Segmenter(Threshold(), PLAIN, device="cpu", quality=constant(0.7, 0.5)).measure(
        image
    )
    text = write_measurements_csv(tmp_path / "m.csv", {"a.png": [nodule]}).read_text()
    header, row = (line.split(",") for line in text.splitlines())
    assert header[-3:] == ["mean_probability", "expected_iou", "review"]
    assert row[-2:] == ["0.7", "false"]


def amber(picture: np.ndarray) -> int:
    return int(np.all(picture == REVIEW_COLOUR, axis=-1).sum())


def test_overlays_mark_the_nodules_to_review(tmp_path: Path) -> None:
    image, mask = scan_frame()
    flagged = Segmenter(Threshold(), PLAIN, device="cpu", quality=constant(0.3, 0.5))
    fine = Segmenter(Threshold(), PLAIN, device="cpu", quality=constant(0.3, 0.2))
    marked = overlay(image, mask, nodules=flagged.measure(image))
    labelled = overlay(image, mask, nodules=fine.measure(image))
    assert amber(marked) > 2 * (70 + 40) and amber(labelled) == 0  # a box around it
    assert not np.array_equal(labelled, overlay(image, mask))  # its expected IoU is written
    write_image(tmp_path / "in" / "a.png", image)
    predict_folder(flagged, tmp_path / "in", tmp_path / "out", overlays=True)

    assert amber(read_image(tmp_path / "out" / "overlays" / "a.png")) > 2 * (70 + 40)


def test_the_evidence_keeps_the_whole_frame_mask_and_the_two_flips() -> None:
    image, _ = frame_with_square(120, 180)
    clean = {**PLAIN, "crop": False}
    refiner = Refiner(Threshold(), CropRule(size=64), clean, device="cpu", whole_weight=0.0)
    two = Segmenter(Threshold(), clean, device="cpu", refiner=refiner)
    one = Segmenter(Threshold(), clean, device="cpu")
    [(mask, probability, evidence)] = two.segment_with_evidence([two.prepare(image)], tta=False)
    np.testing.assert_array_equal(evidence.stage1, one.predict(image))
    np.testing.assert_array_equal(mask, two.predict(image))
    _, whole = one.predict(image, return_probabilities=True)
    for flip in evidence.flips:  # TTA off: the plain map; a pixel-wise model mirrors exactly
        np.testing.assert_allclose(flip, whole, atol=1e-6)
    assert not np.array_equal(evidence.stage1, mask)  # the crops outline it at full resolution


def test_the_two_flips_are_the_terms_of_tta_and_change_nothing_else() -> None:
    image, _ = frame_with_square(120, 180)
    model = UNet(base_channels=4, depth=2, seed=0).eval()
    segmenter = Segmenter(model, PLAIN, device="cpu", quality=constant(0.3, 0.5))
    for tta in (True, False):
        [(mask, probability, evidence)] = segmenter.segment_with_evidence(
            [segmenter.prepare(image)], tta=tta
        )
        expected = segmenter.predict(image, tta=tta, return_probabilities=True)
        np.testing.assert_array_equal(mask, expected[0])
        np.testing.assert_allclose(probability, expected[1], atol=1e-6)
    plain, mirrored = evidence.flips
    _, tta_map = segmenter.predict(image, tta=True, return_probabilities=True)
    np.testing.assert_allclose((plain + mirrored) / 2, tta_map, atol=1e-5)
    assert not np.allclose(plain, mirrored)  # an untrained network is not mirror-symmetric


def test_mirrored_pair_mirrors_back() -> None:
    batch = np.random.default_rng(0).random((2, 1, 4, 6), dtype=np.float32)

    def softmax(x: np.ndarray) -> np.ndarray:  # "probability" of the left half only
        left = np.zeros_like(x)
        left[..., :3] = x[..., :3]
        return np.concatenate([1 - left, left], axis=1)

    plain, mirrored = mirrored_pair(softmax, batch)
    np.testing.assert_array_equal(plain[:, 1, :, :3], batch[:, 0, :, :3])
    np.testing.assert_array_equal(mirrored[:, 1, :, 3:], batch[:, 0, :, 3:])
    both = tta_probabilities(softmax, batch, True)
    np.testing.assert_allclose(both, (plain + mirrored) / 2)
    np.testing.assert_array_equal(tta_probabilities(softmax, batch, False), plain)


def test_the_description_carries_the_estimator() -> None:
    rated = Segmenter(Threshold(), PLAIN, device="cpu", quality=constant(0.3, 0.5))
    assert ExpectedIoU.from_dict(rated.describe()["quality"]) == constant(0.3, 0.5)
    assert Segmenter(Threshold(), PLAIN, device="cpu").describe()["quality"] is None


def test_nodules_of_a_frame_that_fails_the_scan_check_are_flagged(tmp_path: Path) -> None:
    image, _ = scan_frame()
    colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    colour[65:85, 10:130] = (40, 40, 230)  # a colour-Doppler box inside the scan
    segmenter = Segmenter(Threshold(), PLAIN, device="cpu", quality=constant(0.9, 0.5))
    [fine] = segmenter.measure(image)
    assert fine.review is False and fine.scan_warning is None
    [flagged] = segmenter.measure(colour)
    assert flagged.review is True and "in colour" in flagged.scan_warning
    assert flagged.expected_iou == pytest.approx(0.9)  # the estimate stays; the flag is added
    [plain] = Segmenter(Threshold(), PLAIN, device="cpu").measure(colour)
    assert plain.review is True and plain.expected_iou is None  # no estimator: still flagged
    write_image(tmp_path / "in" / "a.png", image)
    write_image(tmp_path / "in" / "b.png", colour)
    result = predict_folder(segmenter, tmp_path / "in", tmp_path / "out", measurements=True)
    with result.measurements.open() as file:
        rows = {row["image"]: row for row in csv.DictReader(file)}
    assert rows["a.png"]["scan_warning"] == "" and rows["a.png"]["review"] == "false"
    assert "in colour" in rows["b.png"]["scan_warning"] and rows["b.png"]["review"] == "true"
    assert result.not_thyroid_frames == 1 and result.review == 1
    assert "1 frame with nodules failed the scan check" in result.summary()
    assert segmenter.predict(colour).any()  # masks alone are not checked
    report = predict_folder(segmenter, tmp_path / "in", tmp_path / "rep", report=True).report
    page = report.read_text(encoding="utf-8")
    assert page.count("not a thyroid B-mode scan? ") == 1 and "in colour" in page
