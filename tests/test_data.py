"""ThyroidDataset: the four layouts, mask hygiene, caching, views, preprocessing hook."""

from __future__ import annotations

import functools
import json
import pickle
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from thyroidseg.data import ThyroidDataset, read_binary_mask
from thyroidseg.data.augment import Augment
from thyroidseg.data.layouts import detect_layout
from thyroidseg.io.files import write_image
from thyroidseg.preprocessing import preprocess

SIZE = (24, 32)  # network frame used throughout: small, and not square on purpose


def blob_pair(seed: int, shape: tuple[int, int] = (40, 48)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey frame with a bright rectangle, and the rectangle's mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 100, shape, dtype=np.uint8)
    mask = np.zeros(shape, np.uint8)
    top, left = 5 + seed % 7, 6 + seed % 9
    mask[top : top + 15, left : left + 20] = 1
    image[mask == 1] = 200
    return image, mask


def make_folder(root: Path, stems: list[str], mask_ext: str = ".png") -> Path:
    for k, stem in enumerate(stems):
        image, mask = blob_pair(k)
        write_image(root / "images" / f"{stem}.png", image)
        write_image(root / "masks" / f"{stem}{mask_ext}", mask * 255)
    return root


def load(root: Path, **kwargs) -> ThyroidDataset:
    kwargs.setdefault("preprocess", None)
    return ThyroidDataset(root, size=SIZE, progress=False, **kwargs)


# --------------------------------------------------------------------------- folder layout


def test_folder_item_types_and_values(tmp_path):
    make_folder(tmp_path, ["a", "b", "c"], mask_ext=".bmp")
    ds = load(tmp_path)
    assert (ds.layout, len(ds), ds.names) == ("folder", 3, ["a", "b", "c"])
    item = ds[1]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, *SIZE)
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == SIZE
    assert set(item["mask"].unique().tolist()) == {0, 1}
    assert (item["name"], item["group"], item["meta"]) == ("b", "b", {})
    # bilinear image, nearest mask: the bright rectangle is where the mask says
    assert item["image"][0][item["mask"] == 1].mean() > 0.7
    assert item["image"][0][item["mask"] == 0].mean() < 0.5


def test_folder_metadata_gives_groups_and_meta(tmp_path):
    make_folder(tmp_path, ["1_1", "1_2", "2_1"])
    (tmp_path / "metadata.csv").write_text(
        "stem,leak_group,tirads\n1_1,g1,4a\n1_2,g1,4a\n2_1,g2,2\n9_9,g9,5\n"
    )
    ds = load(tmp_path)
    assert ds.groups == ["g1", "g1", "g2"]
    assert ds[2]["meta"]["tirads"] == "2"
    assert load(tmp_path, group_by="tirads").groups == ["4a", "4a", "2"]
    assert load(tmp_path, group_by=lambda name, meta: name[0]).groups == ["1", "1", "2"]


def test_folder_metadata_missing_row_is_an_error(tmp_path):
    make_folder(tmp_path, ["a", "b"])
    (tmp_path / "metadata.csv").write_text("stem,leak_group\na,g1\n")
    with pytest.raises(ValueError, match=r"b\.png: no row in .*metadata\.csv"):
        load(tmp_path)


def test_unpaired_files_are_listed_or_skipped_with_a_warning(tmp_path):
    make_folder(tmp_path, ["a", "b", "c"])
    (tmp_path / "masks" / "b.png").unlink()
    write_image(tmp_path / "masks" / "z.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="2 invalid") as error:
        load(tmp_path)
    assert "b.png: no mask" in str(error.value) and "z.png: no image" in str(error.value)
    with pytest.warns(UserWarning, match="b.png: no mask"):
        ds = load(tmp_path, on_invalid="skip")
    assert ds.names == ["a", "c"]


@pytest.mark.parametrize("cache", [True, False])
def test_size_mismatch_names_the_file_and_both_sizes(tmp_path, cache):
    make_folder(tmp_path, ["a", "b"])
    write_image(tmp_path / "masks" / "b.png", np.zeros((10, 12), np.uint8))
    pattern = r"b\.png: mask of shape \(H, W\) = \(10, 12\) but its image b\.png is \(40, 48\)"
    with pytest.raises(ValueError, match=pattern):
        load(tmp_path, cache=cache)


@pytest.mark.parametrize("cache", [True, False])
def test_skip_leaves_out_the_same_items_with_and_without_cache(tmp_path, cache):
    make_folder(tmp_path, ["a", "b", "c"])
    write_image(tmp_path / "masks" / "b.png", np.zeros((10, 12), np.uint8))
    with pytest.warns(UserWarning, match=r"b\.png: mask of shape"):
        ds = load(tmp_path, cache=cache, on_invalid="skip")
    assert ds.names == ["a", "c"] and ds.cached is cache
    assert [item["name"] for item in ds] == ["a", "c"]  # no bad file left to fail in training


def test_uncached_dataset_still_names_a_file_that_breaks_after_construction(tmp_path):
    make_folder(tmp_path, ["a", "b"])
    ds = load(tmp_path, cache=False)
    (tmp_path / "images" / "b.png").write_bytes(b"broken later")
    assert ds[0]["name"] == "a"
    with pytest.raises(ValueError, match=r"b\.png: not a readable image"):
        ds[1]


def test_corrupt_image_is_reported_and_can_be_skipped(tmp_path):
    make_folder(tmp_path, ["a", "b"])
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"a\.png: not a readable image"):
        load(tmp_path)
    with pytest.warns(UserWarning, match=r"a\.png: not a readable image"):
        assert load(tmp_path, on_invalid="skip").names == ["b"]


def test_non_binary_lossless_mask_is_an_error_unless_thresholded(tmp_path):
    make_folder(tmp_path, ["a"])
    grey = np.zeros((40, 48), np.uint8)
    grey[:, 10:20], grey[:, 20:30] = 100, 255
    write_image(tmp_path / "masks" / "a.png", grey)
    with pytest.raises(ValueError, match=r"a\.png: not a binary mask \(3 distinct values"):
        load(tmp_path)
    mask = load(tmp_path, mask_threshold=127).load_original(0)[1]
    assert mask.sum() == 40 * 10


def test_mask_rule_jpeg_threshold_and_lossless_nonzero(tmp_path):
    _, mask = blob_pair(3, (64, 64))
    cv2.imwrite(str(tmp_path / "m.jpg"), mask * 255, [cv2.IMWRITE_JPEG_QUALITY, 60])
    grey = cv2.imread(str(tmp_path / "m.jpg"), cv2.IMREAD_GRAYSCALE)
    assert ((grey > 0) & (grey < 255) & (grey != 0)).any()  # the fixture really is lossy
    assert (read_binary_mask(tmp_path / "m.jpg") == mask).mean() > 0.99
    assert (grey != 0).sum() > mask.sum()  # "non-zero" would be the wrong rule for JPEG
    write_image(tmp_path / "m.png", mask)  # {0, 1} lossless masks are fine too
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "m.png"), mask)


def test_empty_images_folder_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load(tmp_path)


def test_unknown_layout_says_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset layout.*tn3k"):
        load(tmp_path)
    with pytest.raises(ValueError, match="unknown layout 'voc'"):
        load(tmp_path, layout="voc")
    with pytest.raises(FileNotFoundError):
        detect_layout(tmp_path / "missing")


# --------------------------------------------------------------------------- DDTI XML


def ddti_xml(case: str, marks: dict[str, str], **fields: str) -> str:
    clinical = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    body = "".join(f"<mark><image>{k}</image><svg>{svg}</svg></mark>" for k, svg in marks.items())
    return f"<case><number>{case}</number>{clinical}{body}</case>"


def polygon_json(*boxes: tuple[int, int, int, int]) -> str:
    """Rectangles (x0, y0, x1, y1) as DDTI polygons."""
    shapes = [
        {"points": [{"x": a, "y": b}, {"x": c, "y": b}, {"x": c, "y": d}, {"x": a, "y": d}]}
        for a, b, c, d in boxes
    ]
    return json.dumps(shapes)


def make_ddti_raw(root: Path) -> Path:
    for stem in ["7_1", "7_2", "8_1", "9_1"]:
        cv2.imwrite(str(root / f"{stem}.jpg"), blob_pair(len(stem))[0])
    overlapping = polygon_json((2, 2, 12, 12), (8, 8, 20, 20))  # union, not XOR
    (root / "7.xml").write_text(
        ddti_xml("7", {"1": polygon_json((5, 6, 15, 10)), "2": overlapping}, tirads="4a", sex="F")
    )
    (root / "8.xml").write_text(ddti_xml("8", {"1": overlapping[:40]}))  # truncated
    (root / "9.xml").write_text(ddti_xml("9", {"1": ""}))  # empty
    return root


def test_ddti_xml_rasterises_polygons_and_reads_clinical_fields(tmp_path):
    make_ddti_raw(tmp_path)
    with pytest.warns(UserWarning, match="2 invalid"):
        ds = load(tmp_path, on_invalid="skip")
    assert (ds.layout, ds.names, ds.groups) == ("ddti-xml", ["7_1", "7_2"], ["7", "7"])
    assert ds.meta[0] == {"case_id": "7", "image_index": "1", "tirads": "4a", "sex": "F"}
    expected = np.zeros((40, 48), np.uint8)
    expected[6:11, 5:16] = 1  # fillPoly includes the boundary pixels
    np.testing.assert_array_equal(ds.load_original(0)[1], expected)
    union = ds.load_original(1)[1]
    assert union[10, 10] == 1 and union.sum() == 11 * 11 + 13 * 13 - 5 * 5


def test_ddti_xml_reports_empty_and_truncated_annotations(tmp_path):
    make_ddti_raw(tmp_path)
    with pytest.raises(ValueError) as error:
        load(tmp_path)
    message = str(error.value)
    assert "8.xml: image 8_1: truncated or malformed <svg> JSON" in message
    assert "9.xml: image 9_1: empty <svg> annotation" in message
    assert "on_invalid='skip'" in message


def test_ddti_xml_reports_missing_images_marks_and_bad_xml(tmp_path):
    make_ddti_raw(tmp_path)
    (tmp_path / "7_2.jpg").unlink()
    cv2.imwrite(str(tmp_path / "7_5.jpg"), np.zeros((8, 8), np.uint8))
    (tmp_path / "10.xml").write_text("<case><number>10</num")
    with pytest.raises(ValueError) as error:
        load(tmp_path)
    message = str(error.value)
    assert "annotates 7_2, which has no image" in message
    assert "7_5.jpg: no <mark> in any XML file" in message
    assert "10.xml: not readable XML" in message


def test_ddti_xml_drops_polygons_of_fewer_than_3_points_and_keeps_the_frame(tmp_path):
    cv2.imwrite(str(tmp_path / "5_1.jpg"), blob_pair(1)[0])
    cv2.imwrite(str(tmp_path / "6_1.jpg"), blob_pair(2)[0])
    shapes = json.loads(polygon_json((5, 6, 15, 10)))
    slip = {"points": [{"x": 30, "y": 30}, {"x": 40, "y": 35}]}  # a 2-point "polygon"
    (tmp_path / "5.xml").write_text(ddti_xml("5", {"1": json.dumps([shapes[0], slip])}))
    (tmp_path / "6.xml").write_text(ddti_xml("6", {"1": json.dumps([slip])}))
    with pytest.warns(UserWarning, match=r"5\.xml: image 5_1: polygon 1 has 2 point\(s\)"):
        with pytest.raises(ValueError, match=r"6\.xml: image 6_1: no polygon of 3 or more"):
            load(tmp_path)
    (tmp_path / "6.xml").unlink()
    (tmp_path / "6_1.jpg").unlink()
    with pytest.warns(UserWarning, match="dropped"):
        ds = load(tmp_path)
    expected = np.zeros((40, 48), np.uint8)
    expected[6:11, 5:16] = 1
    np.testing.assert_array_equal(ds.load_original(0)[1], expected)


def test_ddti_xml_fills_repeated_polygons_each_on_its_own(tmp_path):
    cv2.imwrite(str(tmp_path / "5_1.jpg"), blob_pair(1)[0])
    box = (5, 6, 15, 10)
    for copies in (2, 4):  # DDTI repeats some polygons two or four times
        (tmp_path / "5.xml").write_text(ddti_xml("5", {"1": polygon_json(*[box] * copies)}))
        once = np.zeros((40, 48), np.uint8)
        once[6:11, 5:16] = 1
        np.testing.assert_array_equal(load(tmp_path).load_original(0)[1], once)


def test_ddti_xml_joins_the_cases_of_pixel_identical_frames(tmp_path):
    images = {"1_1": 1, "2_1": 2, "2_2": 3, "3_1": 1, "4_1": 3, "5_1": 4}  # value: which image
    for stem, k in images.items():
        cv2.imwrite(str(tmp_path / f"{stem}.png"), blob_pair(k)[0])
    for case in "12345":
        marks = {s.split("_")[1]: polygon_json((5, 6, 15, 10)) for s in images if s[0] == case}
        (tmp_path / f"{case}.xml").write_text(ddti_xml(case, marks))
    with pytest.warns(UserWarning, match=r"2 merge\(s\)") as caught:
        ds = load(tmp_path)
    message = str(caught[0].message)
    assert "3_1 = 1_1: cases 1 and 3 joined" in message
    assert "4_1 = 2_2: cases 2 and 4 joined" in message
    assert ds.groups == ["1", "2", "2", "1", "2", "5"]
    assert [m.get("exact_duplicate_of") for m in ds.meta] == [None, None, None, "1_1", "2_2", None]
    assert "leak_group" not in ds.meta[-1]  # case 5 joined nothing: grouped by its case id


# --------------------------------------------------------------------------- TN-SCUI, TN3K


def test_tn_scui_layout_reads_categories(tmp_path):
    for k in (1, 2, 3):
        image, mask = blob_pair(k)
        write_image(tmp_path / "image" / f"{k}.PNG", image)
        write_image(tmp_path / "mask" / f"{k}.PNG", mask * 255)
    (tmp_path / "train.csv").write_text("ID,CATE\n1.PNG,0\n2.PNG,1\n3.PNG,1\n")
    ds = load(tmp_path)
    assert ds.layout == "tn-scui" and ds.names == ["1", "2", "3"]
    assert [m["cate"] for m in ds.meta] == ["0", "1", "1"]
    (tmp_path / "train.csv").unlink()
    with pytest.raises(FileNotFoundError, match="train.csv"):
        load(tmp_path)


def make_tn3k(root: Path) -> Path:
    for part, numbers in [("trainval", range(5)), ("test", range(2))]:
        for k in numbers:
            image, mask = blob_pair(k)
            write_image(root / f"{part}-image" / f"{k:04d}.jpg", image)
            write_image(root / f"{part}-mask" / f"{k:04d}.jpg", mask * 255)
    for fold in (0, 1):
        val = [fold, fold + 2]
        split = {"train": [k for k in range(5) if k not in val], "val": val}
        (root / f"tn3k-trainval-fold{fold}.json").write_text(json.dumps(split))
    return root


def test_tn3k_layout_splits_and_folds(tmp_path):
    make_tn3k(tmp_path)
    assert detect_layout(tmp_path) == "tn3k"
    assert load(tmp_path).names == ["0000", "0001", "0002", "0003", "0004"]
    assert load(tmp_path, split="test").names == ["0000", "0001"]
    assert load(tmp_path, split="val").names == ["0000", "0002"]
    assert load(tmp_path, split="train:1").names == ["0000", "0002", "0004"]
    masks = load(tmp_path, split="val:1")
    assert masks.names == ["0001", "0003"]
    _, mask = blob_pair(1)
    assert (masks.load_original(0)[1] == mask).mean() > 0.99  # JPEG mask binarised > 127
    with pytest.raises(ValueError, match="TN3K split must be"):
        load(tmp_path, split="validation")
    with pytest.raises(ValueError, match="fold7.json: cannot read"):
        load(tmp_path, split="val:7")
    with pytest.raises(ValueError, match="no predefined splits"):
        make_folder(tmp_path / "plain", ["a"])
        load(tmp_path / "plain", split="train")


# --------------------------------------------------------------------------- views, cache


def test_cache_and_no_cache_give_the_same_items(tmp_path):
    make_folder(tmp_path, ["a", "b", "c"])
    cached, lazy = load(tmp_path), load(tmp_path, cache=False)
    assert cached.cached and not lazy.cached
    for i in range(3):
        for key in ("image", "mask"):
            torch.testing.assert_close(cached[i][key], lazy[i][key])


def test_subset_and_with_transform_share_the_cache(tmp_path):
    make_folder(tmp_path, ["a", "b", "c", "d"])
    ds = load(tmp_path)
    sub = ds.subset([3, 1])
    assert sub.names == ["d", "b"] and len(sub) == 2
    assert np.shares_memory(sub.load_preprocessed(0)[0], ds.load_preprocessed(3)[0])

    def invert(image, mask):
        return {"image": 1.0 - image, "mask": mask}

    train = sub.with_transform(invert)
    assert np.shares_memory(train.load_preprocessed(1)[0], ds.load_preprocessed(1)[0])
    torch.testing.assert_close(train[1]["image"], 1.0 - sub[1]["image"])
    assert sub.transform is None  # the original view is unchanged
    torch_subset = Subset(ds, [2])
    assert torch_subset[0]["name"] == "c"
    with pytest.raises(IndexError):
        ds.subset([4])
    with pytest.raises(IndexError):
        ds[4]


def test_config_and_set_epoch_reach_the_trainer_and_the_transform(tmp_path):
    make_folder(tmp_path, ["a"])
    ds = load(tmp_path, mask_threshold=100)
    assert ds.config == {
        "layout": "folder",
        "size": list(SIZE),
        "preprocess": "resize",
        "mask_threshold": 100,
    }
    tuned = functools.partial(preprocess, size=SIZE, equalization="global", crop=False)
    assert load(tmp_path, preprocess=tuned).config["preprocess_options"] == {
        "size": list(SIZE),
        "equalization": "global",
        "crop": False,
    }
    assert load(tmp_path, preprocess=CropThenResize).config["preprocess"] == (
        "custom: CropThenResize"
    )
    epochs = []

    class Recorder:
        def set_epoch(self, epoch):
            epochs.append(epoch)

    ds.set_epoch(1)  # no transform: nothing to tell
    ds.with_transform(Recorder()).subset([0]).set_epoch(3)
    assert epochs == [3]


@pytest.mark.parametrize("preprocess", [None, "default"])
def test_dataset_pickles_for_spawned_workers(tmp_path, preprocess):
    make_folder(tmp_path, ["a", "b"])
    ds = load(tmp_path, preprocess=preprocess).subset([1]).with_transform(Augment(seed=0))
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.names == ["b"] and copy.config == ds.config
    torch.testing.assert_close(copy[0]["image"], ds[0]["image"])


def test_transform_with_mismatched_output_is_an_error(tmp_path):
    make_folder(tmp_path, ["a"])
    ds = load(tmp_path, transform=lambda image, mask: {"image": image[:-1], "mask": mask})
    with pytest.raises(ValueError, match="transform returned image"):
        ds[0]


def test_dataloader_collates_items_with_metadata(tmp_path):
    make_folder(tmp_path, ["1_1", "1_2", "2_1"])
    (tmp_path / "metadata.csv").write_text("stem,leak_group\n1_1,g1\n1_2,g1\n2_1,g2\n")
    batch = next(iter(DataLoader(load(tmp_path), batch_size=3)))
    assert batch["image"].shape == (3, 1, *SIZE) and batch["mask"].shape == (3, *SIZE)
    assert batch["name"] == ["1_1", "1_2", "2_1"]
    assert batch["meta"]["leak_group"] == ["g1", "g1", "g2"]


def test_foreground_fractions_follow_the_masks(tmp_path):
    make_folder(tmp_path, ["a", "b"])
    ds = load(tmp_path)
    expected = [ds[i]["mask"].float().mean().item() for i in range(2)]
    np.testing.assert_allclose(ds.foreground_fractions(), expected)


# --------------------------------------------------------------------------- preprocess hook


class CropThenResize:
    """A stand-in preprocess: cut the top 8 rows (a 'text band'), then resize."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = cv2.resize(image[8:], SIZE[::-1], interpolation=cv2.INTER_LINEAR)

    def mask_to_network(self, mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask[8:], SIZE[::-1], interpolation=cv2.INTER_NEAREST)


def test_custom_preprocess_is_applied_to_image_and_mask(tmp_path):
    make_folder(tmp_path, ["a"])
    ds = load(tmp_path, preprocess=CropThenResize)
    image, mask = ds.load_original(0)
    np.testing.assert_array_equal(
        ds.load_preprocessed(0)[1], CropThenResize(image).mask_to_network(mask)
    )
    np.testing.assert_array_equal(ds.load_preprocessed(0)[0], CropThenResize(image).image)


def test_preprocess_of_the_wrong_size_is_an_error(tmp_path):
    make_folder(tmp_path, ["a"])

    class Wrong(CropThenResize):
        def __init__(self, image):
            self.image = image

    with pytest.raises(ValueError, match=r"a\.png: preprocess returned uint8 \(40, 48\)"):
        load(tmp_path, preprocess=Wrong)
    with pytest.raises(ValueError, match="size must be two positive integers"):
        ThyroidDataset(tmp_path, size=(0, 4), preprocess=None)


def test_preprocess_errors_name_the_file(tmp_path):
    make_folder(tmp_path, ["a"])
    write_image(tmp_path / "images" / "a.png", np.full((40, 48), 7, np.uint8))
    with pytest.raises(ValueError, match=r"a\.png: preprocessing failed: .*constant"):
        ThyroidDataset(tmp_path, size=SIZE, progress=False)


def test_default_preprocess_is_the_library_one(tmp_path):
    make_folder(tmp_path, ["a"])
    ds = ThyroidDataset(tmp_path, size=SIZE, progress=False)
    image, mask = ds.load_original(0)
    expected = preprocess(image, size=SIZE)
    np.testing.assert_array_equal(ds.load_preprocessed(0)[0], expected.image)
    np.testing.assert_array_equal(ds.load_preprocessed(0)[1], expected.mask_to_network(mask))
    assert ds.config["preprocess"] == "default"
    assert ds.config["preprocess_options"] == {"size": list(SIZE)}


def test_missing_leak_groups_are_warned_about_not_silently_assumed(tmp_path):
    root = make_folder(tmp_path / "plain", ["a", "b", "c"])
    with pytest.warns(UserWarning, match="no leak groups found"):
        dataset = load(root)
    assert dataset.groups == ["a", "b", "c"]
    (root / "metadata.csv").write_text("stem,leak_group\na,g1\nb,g1\nc,g2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(root).groups == ["g1", "g1", "g2"]


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -1, True, "127"])
def test_a_mask_threshold_that_makes_masks_empty_or_full_is_refused(tmp_path, threshold):
    make_folder(tmp_path, ["a", "b"])
    with pytest.raises(ValueError, match="mask threshold must be a finite number >= 0"):
        load(tmp_path, mask_threshold=threshold)


def test_a_mask_threshold_at_the_top_of_the_masks_values_is_refused(tmp_path):
    make_folder(tmp_path, ["a", "b"])
    with pytest.raises(ValueError, match="every pixel would be background"):
        load(tmp_path, mask_threshold=255)
    assert load(tmp_path, mask_threshold=254)[0]["mask"].sum() > 0


@pytest.mark.parametrize(
    "content, message",
    [
        (b"garbage\x00\xff\xfe binary", "not UTF-8 text"),
        (b'"unclosed,quote\nx,y', "not a readable CSV file"),
        (b"name,leak_group\na,g\n", "needs a 'stem' column"),
        (b"stem,leak_group\n,g1\n", "line 2: no 'stem' value"),
        (b"stem,leak_group\na,g\na,h\n", "line 3: stem 'a' appears twice"),
    ],
)
def test_a_garbage_metadata_csv_is_a_clear_error_naming_the_file(tmp_path, content, message):
    make_folder(tmp_path, ["a", "b"])
    (tmp_path / "metadata.csv").write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        load(tmp_path)
    assert "metadata.csv" in str(raised.value)
