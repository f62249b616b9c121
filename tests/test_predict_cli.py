"""Tests of ``thyroidseg predict``: outputs, the shipped model, ensembles, refusals, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

import thyroidseg.models.loading
from inference_helpers import PLAIN, frame_with_square, iou, scan_frame, trained_checkpoint
from thyroidseg.cli import main
from thyroidseg.inference import Segmenter
from thyroidseg.inference.measurements import MEASUREMENT_COLUMNS, MM_COLUMNS
from thyroidseg.io.files import read_binary_mask, read_image, write_image
from thyroidseg.models.checkpoint import load_checkpoint, save_checkpoint
from thyroidseg.models.unet import UNet
from tiny_models import Threshold


def two_frames(folder: Path) -> dict[str, tuple[int, int]]:
    """``a.png`` (90 x 140) and ``b.jpg`` (70 x 100), each with one bright rectangle on
    tissue."""
    write_image(folder / "a.png", scan_frame(90, 140)[0])
    write_image(folder / "b.jpg", scan_frame(70, 100)[0])
    return {"a": (90, 140), "b": (70, 100)}


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.usefixtures("shipped_threshold")
def test_predict_writes_masks_overlays_probabilities_and_measurements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = two_frames(tmp_path / "frames")
    out = tmp_path / "out"
    command = ["predict", str(tmp_path / "frames"), str(out), "--quiet", "--overlay"]
    command += ["--probabilities", "--measure", "--pixel-spacing", "0.1"]
    assert main(command) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("segmented 2 frames, 2 nodules in ")
    assert "frames/s" in summary[0] and str(out / "measurements.csv") in summary[0]
    masks = {}
    for stem, shape in sizes.items():
        raw = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert raw.shape == shape and set(np.unique(raw)) <= {0, 255}
        masks[stem] = read_binary_mask(out / f"{stem}.png")
        assert iou(masks[stem], frame_with_square(*shape)[1]) > 0.9
        assert read_image(out / "overlays" / f"{stem}.png").shape == (*shape, 3)
        probability = read_image(out / "probabilities" / f"{stem}.png")
        assert probability.shape == shape and probability.dtype == np.uint8
        assert iou(probability > 127, masks[stem]) > 0.95  # the map the mask was cut from

    columns, rows = read_rows(out / "measurements.csv")
    assert columns == [*MEASUREMENT_COLUMNS, *MM_COLUMNS, "spacing_source"]
    assert [row["image"] for row in rows] == ["a.png", "b.jpg"]  # file names, one nodule each
    assert {row["spacing_source"] for row in rows} == {"user"}
    for row, stem in zip(rows, sizes, strict=True):
        rows_spanned, columns_spanned = np.nonzero(masks[stem])
        assert int(row["area_px"]) == masks[stem].sum()
        assert (int(row["x"]), int(row["y"])) == (columns_spanned.min(), rows_spanned.min())
        assert int(row["height"]) == int(row["depth_px"]) == np.ptp(rows_spanned) + 1
        assert int(row["width"]) == int(row["transverse_px"]) == np.ptp(columns_spanned) + 1
        assert row["taller_than_wide"] == "false"  # 40 rows x 70 columns
        assert float(row["area_mm2"]) == pytest.approx(int(row["area_px"]) * 0.01, rel=1e-5)
        assert 0.5 < float(row["mean_probability"]) <= 1.0


@pytest.mark.usefixtures("shipped_threshold")
def test_existing_outputs_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two_frames(tmp_path / "frames")
    out = tmp_path / "out"
    command = ["predict", str(tmp_path / "frames"), str(out), "--quiet", "--overlay", "--measure"]
    assert main(command) == 0
    capsys.readouterr()
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    for path in out.glob("*.png"):  # masks gone: overlays and the CSV still protect the run
        path.unlink()
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "exist already" in error and "--overwrite" in error and "overlays" in error
    assert not list(out.glob("*.png"))  # nothing was written
    assert all(path.read_bytes() == data for path, data in before.items() if path.exists())
    (out / "overlays" / "a.png").unlink()
    (out / "overlays" / "b.png").unlink()
    assert main(command) == 2 and "measurements.csv" in capsys.readouterr().err
    assert main([*command, "--overwrite"]) == 0
    assert {p.relative_to(out) for p in before} == {
        p.relative_to(out) for p in out.rglob("*") if p.is_file()
    }


@pytest.mark.usefixtures("shipped_threshold")
def test_bad_frames_are_all_listed_after_the_others_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "broken.png").write_bytes(b"not a png")
    write_image(frames / "flat.png", np.full((50, 60), 7, np.uint8))  # constant: unusable
    write_image(frames / "good.png", frame_with_square()[0])
    out = tmp_path / "out"
    assert main(["predict", str(frames), str(out), "--quiet", "--measure"]) == 2
    error = capsys.readouterr().err
    assert "2 of 3 images could not be segmented" in error
    assert "broken.png" in error and "flat.png: " in error and "constant image" in error
    assert sorted(p.name for p in out.iterdir()) == ["good.png", "measurements.csv"]
    assert [row["image"] for row in read_rows(out / "measurements.csv")[1]] == ["good.png"]


def test_predict_uses_checkpoints_and_ensembles_of_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = trained_checkpoint(tmp_path)
    checkpoint = load_checkpoint(first)
    checkpoint["model"] = UNet(base_channels=4, depth=2, seed=7).state_dict()
    second = save_checkpoint(tmp_path / "second.pt", checkpoint)
    sizes = two_frames(tmp_path / "frames")
    for models, out in (([first], tmp_path / "one"), ([first, second], tmp_path / "two")):
        command = ["predict", str(tmp_path / "frames"), str(out), "--quiet", "--tta"]
        assert main(command + [arg for m in models for arg in ("--model", str(m))]) == 0
        assert "segmented 2 frames" in capsys.readouterr().out
        for stem, shape in sizes.items():
            assert read_binary_mask(out / f"{stem}.png").shape == shape

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(first.read_bytes()[:100])
    command = ["predict", str(tmp_path / "frames"), str(tmp_path / "bad"), "--model", str(corrupt)]
    assert main(command) == 2
    assert "corrupt.pt: corrupt or truncated checkpoint" in capsys.readouterr().err


def test_the_old_checkpoint_first_form_gets_a_one_line_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", "run/best.pt", "scans", "masks"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "0.1.0 form" in error
    assert "thyroidseg predict scans masks --model run/best.pt" in error
    assert main(["predict", str(tmp_path / "scans")]) == 2
    assert "predict takes INPUT... OUT_DIR" in capsys.readouterr().err
    assert not (tmp_path / "masks").exists()


@pytest.mark.usefixtures("shipped_threshold")
def test_predict_takes_files_globs_and_folders_with_one_output_name_per_stem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two_frames(tmp_path / "frames")
    write_image(tmp_path / "more" / "c.png", frame_with_square(60, 80)[0])
    frames = tmp_path / "frames"
    assert main(["predict", str(frames / "a.png"), str(tmp_path / "one"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "one").glob("*.png")) == ["a.png"]
    argv = ["predict", str(frames / "b.jpg"), str(tmp_path / "more"), str(tmp_path / "mixed")]
    assert main([*argv, "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "mixed").glob("*.png")) == ["b.png", "c.png"]
    assert main(["predict", str(frames / "*.png"), str(tmp_path / "glob"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "glob").glob("*.png")) == ["a.png"]
    capsys.readouterr()
    write_image(tmp_path / "more" / "a.png", frame_with_square(60, 80)[0])
    argv = ["predict", str(frames), str(tmp_path / "more"), str(tmp_path / "clash"), "--quiet"]
    assert main(argv) == 2
    assert "share the stem 'a'" in capsys.readouterr().err
    assert main(["predict", str(frames / "*.bmp"), str(tmp_path / "none"), "--quiet"]) == 2
    assert "the pattern matches no image file" in capsys.readouterr().err
    assert not (tmp_path / "clash").exists() and not (tmp_path / "none").exists()


def test_without_a_model_and_without_shipped_weights_the_error_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(thyroidseg.models.loading, "SHIPPED_WEIGHTS", "no-such-model.pt")
    two_frames(tmp_path / "frames")
    assert main(["predict", str(tmp_path / "frames"), str(tmp_path / "out")]) == 2
    assert "no shipped model is installed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("shipped_threshold")
def test_pixel_spacing_needs_measure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    two_frames(tmp_path / "frames")
    command = ["predict", str(tmp_path / "frames"), str(tmp_path / "out"), "--quiet"]
    assert main([*command, "--pixel-spacing", "0.1"]) == 2
    assert "--pixel-spacing needs --measure" in capsys.readouterr().err
    assert main([*command, "--measure", "--pixel-spacing", "-1"]) == 2
    assert "spacing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("shipped_threshold")
@pytest.mark.parametrize(
    "option, folder", [("--overlay", "overlays"), ("--probabilities", "probabilities")]
)
def test_predict_never_writes_over_its_input_scans(tmp_path, capsys, option, folder) -> None:
    scans = tmp_path / "X" / folder
    two_frames(scans)
    before = {path.name: path.read_bytes() for path in scans.iterdir()}
    argv = ["predict", str(scans), str(tmp_path / "X"), option, "--overwrite", "--quiet"]
    assert main(argv) == 2
    assert "is one of this command's inputs: it is never written over" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in scans.iterdir()} == before
    assert not (tmp_path / "X" / "a.png").exists()  # refused before any mask was written


@pytest.mark.usefixtures("shipped_threshold")
def test_overwrite_removes_the_old_outputs_of_a_frame_that_became_unreadable(
    tmp_path, capsys
) -> None:
    scans, out = tmp_path / "scans", tmp_path / "out"
    two_frames(scans)
    argv = ["predict", str(scans), str(out), "--overlay", "--quiet"]
    assert main(argv) == 0
    (scans / "b.jpg").write_bytes(b"not a jpeg")
    assert main([*argv, "--overwrite"]) == 2
    assert "b.jpg" in capsys.readouterr().err
    assert (out / "a.png").is_file() and (out / "overlays" / "a.png").is_file()
    assert not (out / "b.png").exists() and not (out / "overlays" / "b.png").exists()


def test_a_boolean_batch_size_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got True"):
        Segmenter(Threshold(), PLAIN, batch_size=True)


@pytest.mark.usefixtures("shipped_threshold")
def test_a_refused_or_failed_measuring_run_leaves_loops_csv_alone(tmp_path, capsys) -> None:
    scans, out = tmp_path / "scans", tmp_path / "out"
    two_frames(scans)
    out.mkdir()
    (out / "loops.csv").write_text("notes")  # not this command's: refused, and kept
    argv = ["predict", str(scans), str(out), "--quiet", "--measure"]
    assert main(argv) == 2 and "loops.csv" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "typo"), str(out), "--quiet", "--measure"]) == 2
    assert (out / "loops.csv").read_text() == "notes"
    pytest.importorskip("pydicom")
    from thyroidseg.io.dicom import write_dicom

    write_dicom(scans / "loop.dcm", np.stack([frame_with_square()[0]] * 2))
    looped = tmp_path / "looped"
    assert main([*argv[:2], str(looped), *argv[3:]]) == 0
    before = (looped / "loops.csv").read_text()
    assert main([*argv[:2], str(looped), *argv[3:]]) == 2  # a rerun, refused: kept
    assert (looped / "loops.csv").read_text() == before


@pytest.mark.usefixtures("shipped_threshold")
def test_overwrite_leaves_no_stale_frame_masks_or_measurement_rows(tmp_path, capsys) -> None:
    pytest.importorskip("pydicom")
    from thyroidseg.io.dicom import write_dicom

    scans, out = tmp_path / "scans", tmp_path / "out"
    write_dicom(scans / "loop.dcm", np.stack([frame_with_square()[0]] * 3))
    argv = ["predict", str(scans), str(out), "--quiet", "--overlay", "--measure"]
    assert main(argv) == 0
    assert len(list(out.glob("loop_f*.png"))) == 3 and (out / "loops.csv").is_file()
    (scans / "loop.dcm").write_bytes((scans / "loop.dcm").read_bytes()[:400])  # unreadable
    assert main([*argv, "--overwrite"]) == 2
    assert "loop.dcm" in capsys.readouterr().err
    assert not list(out.glob("loop_f*.png")) and not list((out / "overlays").glob("*.png"))
    columns, rows = read_rows(out / "measurements.csv")
    assert rows == [] and not (out / "loops.csv").exists()  # no frame readable: no rows


@pytest.mark.usefixtures("shipped_threshold")
def test_a_path_with_brackets_that_exists_is_that_file_not_a_pattern(tmp_path) -> None:
    write_image(tmp_path / "scan[1].png", frame_with_square()[0])
    write_image(tmp_path / "scan1.png", frame_with_square(60, 80)[0])
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "scan[1].png"), str(out), "--quiet"]) == 0
    assert [p.name for p in out.glob("*.png")] == ["scan[1].png"]
    assert read_binary_mask(out / "scan[1].png").shape == (90, 140)


def test_a_frame_too_small_to_crop_advises_no_option_predict_lacks(
    tmp_path, monkeypatch, capsys
) -> None:
    def cropping(cls, **options):
        return cls(Threshold(), {**PLAIN, "crop": True})

    monkeypatch.setattr(Segmenter, "pretrained", classmethod(cropping))
    write_image(
        tmp_path / "tiny.png", np.random.default_rng(0).integers(0, 255, (20, 20), np.uint8)
    )
    assert main(["predict", str(tmp_path / "tiny.png"), str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "too small to find a scan region" in err and "thyroidseg preprocess --no-crop" in err
    assert "pass --no-crop" not in err and "(--no-crop)" not in err


@pytest.mark.parametrize(
    ("argv", "usage", "hint"),
    [
        (["predict", "in", "out", "--overlays"], "thyroidseg predict", "did you mean --overlay?"),
        (["train", "data", "--stemstride", "1"], "thyroidseg train", "did you mean --stem-stride?"),
        (["info", "--jsn"], "thyroidseg info", "did you mean --json?"),
    ],
)
def test_a_mistyped_option_shows_its_commands_usage_and_the_closest_option(
    argv, usage, hint, capsys
):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    error = capsys.readouterr().err
    assert stopped.value.code == 2
    assert error.startswith(f"usage: {usage} ") and hint in error
    assert f"{usage}: error: unrecognized arguments: " in error


@pytest.mark.parametrize("command", ["info", "evaluate"])
def test_a_json_file_in_a_missing_folder_is_refused(command, tmp_path, capsys) -> None:
    target = tmp_path / "no" / "such" / "x.json"
    argv = ["info", "--json", str(target)]
    if command == "evaluate":
        write_image(tmp_path / "m" / "a.png", np.zeros((4, 4), np.uint8))
        argv = ["evaluate", str(tmp_path / "m"), str(tmp_path / "m"), "--json", str(target)]
    assert main(argv) == 2
    assert f"its folder {target.parent} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
