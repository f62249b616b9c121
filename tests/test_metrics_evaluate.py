"""evaluate_folders and `thyroidseg evaluate` end to end on small folders written here."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest

from thyroidseg.cli import main
from thyroidseg.io.files import write_image
from thyroidseg.metrics import ConfusionMatrix
from thyroidseg.metrics.boundary import hausdorff_distance_95, normalized_surface_dice
from thyroidseg.metrics.evaluation import evaluate_folders


def blob(shape, top, left, size) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top : top + size, left : left + size] = 1
    return mask


@pytest.fixture
def folders(tmp_path):
    """Three pairs with different extensions; c has no nodule in truth but one predicted."""
    preds, labels = tmp_path / "pred", tmp_path / "label"
    pairs = {
        "a": (blob((20, 30), 4, 5, 8), blob((20, 30), 5, 5, 8)),
        "b": (blob((20, 30), 2, 2, 5), blob((20, 30), 2, 2, 5)),
        "c": (blob((20, 30), 10, 10, 3), np.zeros((20, 30), np.uint8)),
    }
    extensions = {"a": (".png", ".bmp"), "b": (".tif", ".png"), "c": (".bmp", ".tiff")}
    for stem, (pred, label) in pairs.items():
        write_image(preds / f"{stem}{extensions[stem][0]}", pred * 255)
        write_image(labels / f"{stem}{extensions[stem][1]}", label * 255)
    return preds, labels, pairs


def test_pairs_by_stem_and_matches_the_confusion_matrix(folders):
    preds, labels, pairs = folders
    result = evaluate_folders(preds, labels, progress=False)
    assert result.stems == ("a", "b", "c")
    expected = ConfusionMatrix()
    for stem in result.stems:
        expected.update(*pairs[stem])
    np.testing.assert_array_equal(result.confusion.per_image_matrices, expected.per_image_matrices)
    assert result.hd95[0] == hausdorff_distance_95(*pairs["a"])
    assert result.hd95[1] == 0.0 and result.hd95[2] == math.inf
    assert result.nsd[1] == 1.0 and result.nsd[2] == 0.0
    assert result.confusion.false_positive_images().tolist() == [False, False, True]
    rows = list(csv.DictReader(result.to_csv().splitlines()))
    assert [row["stem"] for row in rows] == ["a", "b", "c"]
    assert float(rows[2]["iou"]) == 0.0 and rows[2]["hd95"] == "inf"


def test_grey_level_masks_need_a_threshold(tmp_path):
    pred = np.array([[0, 100, 200, 200]] * 4, np.uint8)
    label = np.array([[0, 0, 255, 255]] * 4, np.uint8)
    write_image(tmp_path / "p" / "x.png", pred)
    write_image(tmp_path / "l" / "x.png", label)
    with pytest.raises(ValueError, match=r"x\.png: not a binary mask \(3 distinct values"):
        evaluate_folders(tmp_path / "p", tmp_path / "l", progress=False)  # grey levels: ambiguous
    strict = evaluate_folders(tmp_path / "p", tmp_path / "l", threshold=150, progress=False)
    assert strict.confusion.iou()[1] == 1.0


def test_swapped_folders_are_named_as_such(folders, capsys):
    """``evaluate OUT SCANS``: the labels are grey scans, the predictions masks."""
    preds, labels, pairs = folders
    scans = labels.parent / "scans"
    rng = np.random.default_rng(0)
    for path in labels.iterdir():
        write_image(scans / path.name, rng.integers(0, 256, (20, 30), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"the labels in .*scans look like scans.* swapped") as e:
        evaluate_folders(preds, scans, progress=False)
    assert "give a threshold" not in str(e.value) and str(e.value).count("\n") == 0
    assert main(["evaluate", str(preds), str(scans)]) == 2
    assert "are the folders swapped" in capsys.readouterr().err
    with pytest.raises(ValueError, match="6 mask files cannot be used"):  # grey both sides
        with pytest.warns(UserWarning, match="the same folder"):
            evaluate_folders(scans, scans, progress=False)


def test_unpaired_files_are_listed_on_both_sides(folders):
    preds, labels, _ = folders
    write_image(preds / "only_pred.png", np.zeros((4, 4), np.uint8))
    write_image(labels / "only_label.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError) as error:
        evaluate_folders(preds, labels, progress=False)
    message = str(error.value)
    assert "predictions without a label" in message and "only_pred" in message
    assert "labels without a prediction" in message and "only_label" in message
    assert "--common-only" in message


def test_common_only_scores_the_shared_stems_and_counts_the_rest(folders):
    preds, labels, pairs = folders
    write_image(preds / "only_pred.png", np.zeros((4, 4), np.uint8))
    for stem in ("only_label_1", "only_label_2"):
        write_image(labels / f"{stem}.png", np.zeros((4, 4), np.uint8))
    result = evaluate_folders(preds, labels, common_only=True, progress=False)
    assert result.stems == tuple(sorted(pairs))
    assert result.unpaired_predictions == ("only_pred",)
    assert result.unpaired_labels == ("only_label_1", "only_label_2")
    expected = ConfusionMatrix()
    for stem in result.stems:
        expected.update(*pairs[stem])
    np.testing.assert_array_equal(result.confusion.per_image_matrices, expected.per_image_matrices)
    assert "1 predictions without a label, 2 labels without a prediction" in result.report()
    assert result.to_dict()["unpaired_labels"] == ["only_label_1", "only_label_2"]
    other = preds.parent / "other"
    write_image(other / "z.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="no file stem in common"):
        evaluate_folders(other, labels, common_only=True, progress=False)


def test_same_folder_twice_warns(folders):
    _, labels, _ = folders
    with pytest.warns(UserWarning, match="are the same folder"):
        result = evaluate_folders(labels, labels, progress=False)
    assert (result.confusion.per_image("iou")[:2] == 1.0).all()


@pytest.mark.parametrize(
    ("pred_empty", "label_empty"), [(True, False), (False, True), (True, True)]
)
def test_empty_masks_score_as_the_boundary_functions_define(tmp_path, pred_empty, label_empty):
    pred, label = blob((12, 12), 2, 2, 5), blob((12, 12), 4, 3, 5)
    if pred_empty:
        pred[:] = 0
    if label_empty:
        label[:] = 0
    write_image(tmp_path / "p" / "x.png", pred * 255)
    write_image(tmp_path / "l" / "x.png", label * 255)
    result = evaluate_folders(tmp_path / "p", tmp_path / "l", tolerance=1.5, progress=False)
    np.testing.assert_array_equal(result.hd95, [hausdorff_distance_95(pred, label)])
    np.testing.assert_array_equal(result.nsd, [normalized_surface_dice(pred, label, tolerance=1.5)])


def test_size_mismatches_are_all_listed_unless_labels_are_resized(tmp_path):
    checker = (np.indices((3, 3)).sum(0) % 2).astype(np.uint8)
    for stem in ("m1", "m2"):
        write_image(tmp_path / "p" / f"{stem}.png", np.zeros((7, 7), np.uint8))
        write_image(tmp_path / "l" / f"{stem}.png", checker * 255)
    with pytest.raises(ValueError) as error:
        evaluate_folders(tmp_path / "p", tmp_path / "l", progress=False)
    assert "2 prediction/label pairs differ in size" in str(error.value)
    assert "m1.png 7x7 vs m1.png 3x3" in str(error.value) and "m2.png" in str(error.value)
    result = evaluate_folders(tmp_path / "p", tmp_path / "l", resize_labels=True, progress=False)
    nearest = cv2.resize(checker, (7, 7), interpolation=cv2.INTER_NEAREST_EXACT)  # centred
    bilinear = cv2.resize(checker, (7, 7), interpolation=cv2.INTER_LINEAR)
    assert nearest.sum() != bilinear.sum()  # the two interpolations disagree on this label
    truth_pixels = result.confusion.per_image_matrices[0, 1].sum()
    assert truth_pixels == nearest.sum()


def test_every_unreadable_file_is_named_in_one_error(folders):
    preds, labels, _ = folders
    (labels / "b.png").write_bytes(b"not an image")
    (preds / "a.png").write_bytes(b"")
    grey_levels = (np.indices((20, 30)).sum(0) % 3 * 100).astype(np.uint8)  # 0, 100, 200
    write_image(preds / "c.bmp", grey_levels)
    with pytest.raises(ValueError) as error:
        evaluate_folders(preds, labels, progress=False)
    message = str(error.value)
    assert "3 mask files cannot be used" in message
    assert "a.png: not a readable image" in message and "b.png: not a readable image" in message
    assert "c.bmp: not a binary mask" in message
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        evaluate_folders(preds, labels, threshold=float("nan"), progress=False)


def test_cli_prints_and_writes_json_and_csv(folders, tmp_path, capsys):
    preds, labels, _ = folders
    out_json, out_csv = tmp_path / "out" / "r.json", tmp_path / "out" / "r.csv"
    out_json.parent.mkdir()  # a file's folder is not created
    status = main(
        ["evaluate", str(preds), str(labels), "--json", str(out_json), "--csv", str(out_csv)]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert (
        "3 prediction/label pairs" in printed and "HD95" in printed and "pixel accuracy" in printed
    )
    data = json.loads(out_json.read_text())
    assert data["n_pairs"] == 3 and data["images"][2]["hd95"] == "inf"  # one mask empty
    assert data["confusion"]["per_image"]["1"]["false_positive_images"] == 1
    assert len(out_csv.read_text().splitlines()) == 4


def test_cli_error_gives_status_2_and_keeps_existing_output(folders, tmp_path, capsys):
    preds, labels, _ = folders
    write_image(labels / "extra.png", np.zeros((4, 4), np.uint8))
    previous = tmp_path / "r.json"
    previous.write_text("previous result")
    argv = ["evaluate", str(preds), str(labels), "--json", str(previous), "--overwrite"]
    assert main(argv) == 2
    assert "thyroidseg evaluate: error: labels without a prediction" in capsys.readouterr().err
    assert previous.read_text() == "previous result"
    assert main(["evaluate", str(tmp_path / "missing"), str(labels)]) == 2
    assert main(["evaluate", str(preds), str(labels), "--pixel-spacing", "1", "2", "3"]) == 2
    assert "--pixel-spacing takes one or two numbers" in capsys.readouterr().err
    assert main(["evaluate", str(preds), str(labels), "--common-only"]) == 0
    assert "left out (only in one folder): 0 predictions without a label, 1 labels" in (
        capsys.readouterr().out
    )


@pytest.mark.ddti
def test_real_ddti_masks_against_themselves(ddti_dir):
    with pytest.warns(UserWarning, match="same folder"):
        result = evaluate_folders(ddti_dir / "masks", ddti_dir / "masks", progress=False)
    assert len(result.stems) == len(list((ddti_dir / "masks").glob("*.png")))
    assert result.confusion.iou()[1] == 1.0
    assert (result.confusion.per_image("iou") == 1.0).all()
    assert (result.hd95 == 0.0).all() and (result.nsd == 1.0).all()


@pytest.mark.ddti
def test_a_second_reader_scored_on_the_frames_it_outlined(ddti_dir):
    reader = ddti_dir.parent / "ddti-observers" / "radiologist"
    if not reader.is_dir():
        pytest.skip(f"DDTI observer masks not found at {reader}")
    result = evaluate_folders(reader, ddti_dir / "masks", common_only=True, progress=False)
    outlined = sorted(path.stem for path in reader.glob("*.png"))
    assert list(result.stems) == outlined and result.unpaired_predictions == ()
    assert len(result.unpaired_labels) == len(list((ddti_dir / "masks").glob("*.png"))) - len(
        outlined
    )
    # per-image nodule IoU counted directly from the files, independently of the library
    by_hand = []
    for stem in outlined:
        pred = cv2.imread(str(reader / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 0
        truth = cv2.imread(str(ddti_dir / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 0
        by_hand.append((pred & truth).sum() / (pred | truth).sum())
    np.testing.assert_allclose(result.confusion.per_image("iou"), by_hand)
    # ../shared/data/README.md gives this reader's per-image nodule IoU as 0.782
    assert result.confusion.summary("iou").mean == pytest.approx(0.782, abs=5e-4)


@pytest.mark.parametrize("threshold", [-1.0, math.nan, math.inf])
def test_a_threshold_that_empties_or_fills_every_mask_is_refused(folders, threshold):
    preds, labels, _ = folders
    with pytest.raises(ValueError, match="finite number >= 0"):
        evaluate_folders(preds, labels, threshold=threshold)


def test_a_threshold_above_the_masks_values_names_the_file(folders):
    preds, labels, _ = folders
    with pytest.raises(ValueError, match=r"threshold 300 is at or above .* 8-bit mask \(255\)"):
        evaluate_folders(preds, labels, threshold=300)


def test_the_0_1_spacing_spellings_are_gone(folders, capsys):
    preds, labels, _ = folders
    with pytest.raises(TypeError, match="unexpected keyword argument 'spacing'"):
        evaluate_folders(preds, labels, spacing=0.5)  # type: ignore[call-arg]
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", str(preds), str(labels), "--spacing", "0.5"])
    assert stopped.value.code == 2
    assert "--spacing was removed in 0.3: use --pixel-spacing" in capsys.readouterr().err


def test_json_tells_an_infinite_distance_from_an_undefined_one(tmp_path):
    empty = np.zeros((8, 8), np.uint8)
    square = empty.copy()
    square[2:5, 2:5] = 255
    for stem, (pred, label) in {"one": (empty, square), "none": (empty, empty)}.items():
        write_image(tmp_path / "pred" / f"{stem}.png", pred)
        write_image(tmp_path / "label" / f"{stem}.png", label)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "label", progress=False)
    rows = {row["stem"]: row for row in json.loads(json.dumps(result.to_dict()))["images"]}
    assert rows["one"]["hd95"] == "inf" and float(rows["one"]["hd95"]) == math.inf
    assert rows["none"]["hd95"] is None  # both empty: undefined
