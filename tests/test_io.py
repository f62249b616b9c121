import csv
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

import thyroidseg.io.files
import thyroidseg.io.folder_loop
from thyroidseg.io.files import (
    csv_text,
    list_images,
    read_binary_mask,
    read_image,
    write_csv,
    write_image,
)


def test_read_image_names_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="bad.png"):
        read_image(bad)


def test_read_binary_mask_rule(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "b.png"), np.array([[0, 255], [255, 0]], dtype=np.uint8))
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "b.png"), [[0, 1], [1, 0]])
    grey = np.array([[0, 3], [128, 255]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    with pytest.raises(ValueError, match=r"g\.png: not a binary mask \(4 distinct values"):
        read_binary_mask(tmp_path / "g.png")
    np.testing.assert_array_equal(
        read_binary_mask(tmp_path / "g.png", threshold=127), [[0, 0], [1, 1]]
    )


def test_list_images_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no image files"):
        list_images(tmp_path)
    write_image(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    write_image(tmp_path / "a.bmp", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="share a stem"):
        list_images(tmp_path)


def test_list_images_names_entries_that_look_like_images_but_are_not_files(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")  # a link to an image is an image
    (tmp_path / "notes.txt").write_text("not an image: ignored by its extension")
    assert sorted(list_images(tmp_path)) == ["a", "b"]
    (tmp_path / "c.PNG").symlink_to(tmp_path / "missing.png")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ValueError) as error:
        list_images(tmp_path)
    message = str(error.value)
    assert "2 entries named like images are not files" in message
    assert "c.PNG (broken symbolic link to" in message and "missing.png" in message
    assert "d.png (a directory)" in message


def test_csv_text_takes_every_column_and_write_csv_is_atomic(tmp_path: Path) -> None:
    rows = [{"stem": "a", "iou": 0.5}, {"stem": "b", "iou": float("nan"), "hd95": float("inf")}]
    text = csv_text(rows)
    read = list(csv.DictReader(text.splitlines()))
    assert list(read[0]) == ["stem", "iou", "hd95"]
    assert read[0]["hd95"] == ""  # a key the row lacks: an empty cell
    assert float(read[0]["iou"]) == 0.5 and float(read[1]["hd95"]) == float("inf")
    path = write_csv(tmp_path / "out" / "r.csv", rows)
    assert path.read_text() == text
    assert [p.name for p in path.parent.iterdir()] == ["r.csv"]


def test_write_image_round_trip_and_no_leftovers(tmp_path: Path) -> None:
    image = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    write_image(tmp_path / "sub" / "x.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "sub" / "x.png"), image)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]


def test_written_files_honour_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_image(tmp_path / "p.png", np.zeros((2, 2), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_jpeg_with_damaged_data_is_unreadable_not_a_picture(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((90, 140)) * 255).astype(np.uint8)
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), image)
    data = bytearray(good.read_bytes())
    for index in rng.choice(np.arange(400, len(data) - 10), 100, replace=False):
        data[index] ^= 0x5A  # 100 bytes flipped: libjpeg still returns a picture
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(bytes(data))
    assert cv2.imread(str(bad)) is not None  # what OpenCV alone would accept
    with pytest.raises(ValueError, match=r"bad\.jpg: corrupt JPEG data \(the decoder says: "):
        read_image(bad)
    assert read_image(good).shape == (90, 140)


def test_a_failed_write_names_the_target_not_the_temporary_file(tmp_path, monkeypatch) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    target = tmp_path / "out" / "mask.png"
    with pytest.raises(OSError, match=r"\[Errno 28\] .*out/mask\.png: cannot write \(No space"):
        write_image(target, np.zeros((4, 4), np.uint8))
    assert not target.exists() and list(target.parent.iterdir()) == []  # no temporary left


def test_the_folder_loops_0_2_path_gives_the_same_objects_with_a_warning() -> None:
    for name in ("map_folder", "FilesFailedError"):
        pattern = rf"io.files.{name} is deprecated and goes in 0.4: .*io.folder_loop$"
        with pytest.warns(FutureWarning, match=pattern):
            assert getattr(thyroidseg.io.files, name) is getattr(thyroidseg.io.folder_loop, name)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        thyroidseg.io.files.nothing  # noqa: B018
