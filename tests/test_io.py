from pathlib import Path

import cv2
import numpy as np
import pytest

from thyroidseg._io import list_images, read_binary_mask, read_image, write_image


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


def test_write_image_round_trip_and_no_leftovers(tmp_path: Path) -> None:
    image = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    write_image(tmp_path / "sub" / "x.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "sub" / "x.png"), image)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]


def test_written_files_honour_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = write_image(tmp_path / "p.png", np.zeros((2, 2), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
