"""`thyroidseg preprocess IN_DIR OUT_DIR` and preprocess_folder on frames made here."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from thyroidseg.cli import main
from thyroidseg.io.folder_loop import map_folder
from thyroidseg.preprocessing import preprocess, preprocess_folder
from thyroidseg.preprocessing.geometry import Box


def _frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = np.zeros((120, 200), np.uint8)
    frame[10:110, 30:170] = rng.integers(20, 220, (100, 140))
    cv2.putText(frame, "P1", (175, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.3, 255, 1)
    return frame


@pytest.fixture
def frames_dir(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"case{i}.png"), _frame(i))
    return folder


def test_cli_writes_images_and_geometry_json(frames_dir, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    status = main(["preprocess", str(frames_dir), str(out), "--size", "64", "96", "--quiet"])
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "case0.png",
        "case1.png",
        "case2.png",
        "preprocess.json",
    ]
    summary = json.loads((out / "preprocess.json").read_text())
    assert summary["settings"]["size"] == [64, 96]
    record = summary["images"]["case1"]
    assert record["source"].endswith("case1.png")
    assert Box(*record["views"][0]) == Box(30, 10, 170, 110)
    written = cv2.imread(str(out / "case1.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, preprocess(_frame(1), size=(64, 96)).image)
    assert "preprocessed 3 images" in capsys.readouterr().out


def test_cli_switches_reach_the_library(frames_dir, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["preprocess", str(frames_dir), str(out), "--no-crop", "--equalization", "none"]
    args += ["--smoothing", "none", "--resize-mode", "stretch", "--no-inpaint", "--quiet"]
    args += ["--json", str(tmp_path / "boxes.json")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "boxes.json").read_text())
    assert summary["settings"]["crop"] is False
    assert summary["settings"]["equalization"] is None
    assert summary["images"]["case0"]["box"] == [0, 0, 200, 120]


def test_cli_names_every_unreadable_image_and_writes_all_others(
    frames_dir, tmp_path, capsys
) -> None:
    (frames_dir / "case10.png").write_bytes(b"not an image")  # sorts before the good ones
    (frames_dir / "case9.png").write_bytes(b"")
    good = sorted(p.stem for p in frames_dir.glob("case?.png") if p.stat().st_size > 100)
    out = tmp_path / "out"
    assert main(["preprocess", str(frames_dir), str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "thyroidseg preprocess: error: 2 of" in error
    assert "case10.png" in error and "case9.png" in error
    assert sorted(p.stem for p in out.glob("*.png")) == good  # every other image written
    written = json.loads((out / "preprocess.json").read_text())
    assert sorted(written["images"]) == good and sorted(written["errors"]) == ["case10", "case9"]


def test_folder_errors(frames_dir, tmp_path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="a-file: is a file, not a folder"):
        preprocess_folder(frames_dir, tmp_path / "a-file")
    with pytest.raises(ValueError, match="output folder is the input folder"):
        preprocess_folder(frames_dir, frames_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        preprocess_folder(empty, tmp_path / "out")


def test_cli_refuses_to_overwrite_outputs_unless_asked(frames_dir, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    original = _frame(7)
    cv2.imwrite(str(out / "case1.png"), original)  # e.g. an original frame kept there
    assert main(["preprocess", str(frames_dir), str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "1 output file(s) exist already" in error and "case1.png" in error
    assert "--overwrite" in error
    assert sorted(p.name for p in out.iterdir()) == ["case1.png"]  # nothing written
    np.testing.assert_array_equal(cv2.imread(str(out / "case1.png"), 0), original)
    assert main(["preprocess", str(frames_dir), str(out), "--quiet", "--overwrite"]) == 0
    written = cv2.imread(str(out / "case1.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, preprocess(_frame(1)).image)


def test_existing_json_alone_is_protected_too(frames_dir, tmp_path) -> None:
    target = tmp_path / "boxes.json"
    target.write_text("{}")
    with pytest.raises(FileExistsError, match="boxes.json"):
        preprocess_folder(frames_dir, tmp_path / "out", json_path=target, progress=False)
    assert target.read_text() == "{}" and not (tmp_path / "out").exists()


def test_bad_options_fail_before_any_image_is_read(frames_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="smoothing"):
        preprocess_folder(frames_dir, tmp_path / "out", smoothing="wavelet", progress=False)
    with pytest.raises(TypeError, match="sharpen"):
        preprocess_folder(frames_dir, tmp_path / "out", sharpen=True, progress=False)
    assert not (tmp_path / "out").exists()


def test_map_folder_batches_saves_the_good_files_then_lists_every_failure(tmp_path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for k in range(6):
        (source / f"f{k}.png").write_bytes(b"x" * k)
    batches: list[list[str]] = []

    def load(path):
        if path.stat().st_size in (1, 4):
            raise ValueError("unusable")  # map_folder adds the file name
        return path.stat().st_size

    def save(batch):
        batches.append([target.name for target in batch])
        for target, size in batch.items():
            target.write_text(str(size))

    def summary(failures):
        return json.dumps(sorted(failures)).encode()

    out = tmp_path / "out"
    with pytest.raises(ValueError) as error:
        map_folder(
            source,
            out,
            load,
            save,
            verb="tested",
            batch_size=3,
            summary=(out / "s.json", summary),
            progress=False,
        )
    message = str(error.value)
    assert message.startswith("2 of 6 images could not be tested (the other 4 were written")
    assert f"{source / 'f1.png'}: unusable" in message and "f4.png: unusable" in message
    assert batches == [["f0.png", "f2.png", "f3.png"], ["f5.png"]]
    assert json.loads((out / "s.json").read_text()) == ["f1", "f4"]
    assert (out / "f3.png").read_text() == "3"
