"""``predict --shard K/N`` and ``merge``: parts of one prediction, joined into one run's output."""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference_helpers import PLAIN, frame_with_square
from thyroidseg.cli import main
from thyroidseg.inference import Segmenter, predict_folder
from thyroidseg.inference.base import SegmenterBase
from thyroidseg.inference.shards import IncompleteShardsError, Shard, merge_shards, predict_shard
from thyroidseg.io.dicom import write_dicom
from thyroidseg.io.files import write_image
from thyroidseg.io.folder_loop import FilesFailedError
from thyroidseg.io.outputs import reserve_folder
from thyroidseg.models.unet import UNet

RNG = np.random.default_rng(0)


def scans(folder: Path) -> Path:
    """Five PNG frames of random textures, a three-frame cine loop and a still DICOM."""
    for name in ("e", "a", "d", "c", "b"):  # created out of order: the listing sorts
        image = frame_with_square(60 + RNG.integers(30), 80 + RNG.integers(60))[0]
        write_image(
            folder / f"{name}.png", (image + RNG.integers(0, 60, image.shape)).astype(np.uint8)
        )
    loop = np.stack([frame_with_square(70, 90)[0] + np.uint8(k * 10) for k in range(3)])
    write_dicom(folder / "loop.dcm", loop, region_spacing_mm=(0.3, 0.2))
    write_dicom(folder / "still.dcm", frame_with_square(80, 100)[0], pixel_spacing_mm=0.1)
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too), by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def segmenter() -> Segmenter:
    """A tiny random U-Net: ragged masks with many nodules, from real convolutions."""
    return Segmenter(UNet(base_channels=4, depth=2, seed=0), PLAIN, batch_size=3)


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def hold(folder: Path, lock: str, pid: int) -> None:
    """Write ``lock`` as if process ``pid`` of this host held it."""
    holder = {"host": socket.gethostname(), "pid": pid, "command": "x", "started": "now"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / lock).write_text(json.dumps(holder))


# -- K/N --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [("0/4", "K counts from 1"), ("5/4", "1 <= K <= N"), ("1/0", "N >= 1"), ("2", "K/N"),
     ("a/b", "K/N"), ("-1/4", "K/N"), ("1.5/4", "K/N")],
)  # fmt: skip
def test_a_shard_is_two_whole_numbers_k_of_n(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Shard.parse(text)


def test_shards_parse_and_name_their_files() -> None:
    shard = Shard.parse(" 3 / 12 ")
    assert (shard, str(shard)) == (Shard(3, 12), "3/12")
    assert (shard.record, shard.lock) == ("shard-03-of-12.json", ".thyroidseg-shard-03-of-12.lock")
    assert shard.table("measurements.csv") == "measurements.shard-03-of-12.csv"
    with pytest.raises(TypeError, match="int"):
        Shard(True, 2)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 12])
def test_the_n_shards_take_every_input_once_by_sorted_stem(count: int) -> None:
    stems = [f"scan{k}" for k in RNG.permutation(10)]
    inputs = {stem: Path(f"{stem}.png") for stem in stems}
    parts = [Shard(k, count).select(inputs) for k in range(1, count + 1)]
    assert sorted(stem for part in parts for stem in part) == sorted(stems)
    assert all(list(part) == [s for s in stems if s in part] for part in parts)  # order kept
    first = sorted(stems)[::count]
    assert sorted(parts[0]) == first  # every Nth of the sorted stems, whatever the given order
    reordered = dict(reversed(list(inputs.items())))
    assert [set(Shard(k, count).select(reordered)) for k in range(1, count + 1)] == [
        set(part) for part in parts
    ]


# -- predict --shard and merge ----------------------------------------------------------


def _options(function) -> dict[str, tuple[object, object]]:
    """The keyword-only options of a folder prediction: name -> (default, annotation)."""
    return {
        name: (parameter.default, parameter.annotation)
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "shard"
    }


def test_the_three_folder_predictions_take_the_same_options() -> None:
    """The method, the function and the shard spell their options out (users and mypy see
    them): the same names, defaults and types, so none drifts from the others."""
    method = _options(SegmenterBase.predict_folder)
    assert "overlays" in method and "dicom_seg" in method
    assert _options(predict_folder) == method
    assert _options(predict_shard) == method


@pytest.mark.parametrize("count", [2, 3, 9])
def test_merged_shards_are_byte_for_byte_one_run(tmp_path: Path, count: int) -> None:
    pytest.importorskip("pydicom")
    inputs = scans(tmp_path / "scans")
    options = {"overlays": True, "probabilities": True, "measurements": True}
    options |= {"pixel_spacing": "auto", "progress": False}
    one = segmenter().predict_folder(inputs, tmp_path / "one", **options)
    assert one.nodules > 10 and one.loops is not None  # tables worth comparing
    out = tmp_path / "sharded"
    frames = 0
    for k in reversed(range(1, count + 1)):  # any order
        frames += segmenter().predict_folder(inputs, out, shard=f"{k}/{count}", **options).frames
        assert not (out / "measurements.csv").exists()
    assert frames == one.frames  # 9 shards of 7 files: two empty ones
    merged = merge_shards(out)
    assert (merged.shards, merged.frames, merged.nodules) == (count, one.frames, one.nodules)
    assert tree(out) == tree(tmp_path / "one")  # masks, pictures, tables; no shard file left


@pytest.mark.usefixtures("shipped_threshold")
def test_the_merge_command_refuses_missing_and_running_shards_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "scans" / "a.png", frame_with_square()[0])
    write_image(tmp_path / "scans" / "b.png", frame_with_square(70, 100)[0])
    out = tmp_path / "out"
    predict = ["predict", str(tmp_path / "scans"), str(out), "--quiet", "--measure", "--shard"]
    assert main([*predict, "1/3"]) == 0
    assert "segmented 1 frame, " in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "a.png", "measurements.shard-1-of-3.csv", "shard-1-of-3.json"
    ]  # fmt: skip
    running = sleeper()
    try:
        hold(out, Shard(3, 3).lock, running.pid)
        assert main(["merge", str(out)]) == 2
        error = capsys.readouterr().err
        assert "shard 2/3 is missing" in error and "shard 3/3 is still running (" in error
        assert f"process {running.pid}" in error and "1/3" not in error
        with pytest.raises(IncompleteShardsError) as caught:
            merge_shards(out)
        assert (caught.value.missing, caught.value.running) == ([Shard(2, 3)], [Shard(3, 3)])
        assert main([*predict, "3/3"]) == 2  # one run per shard
        assert f"in use by another run (process {running.pid}" in capsys.readouterr().err
        assert main([*predict, "2/3"]) == 0  # while 3/3 runs: each holds its own part
    finally:
        running.kill()
        running.wait()
    assert main(["merge", str(out)]) == 2  # 3/3 was killed before its end: its lock is stale
    assert "shard 3/3 is missing" in capsys.readouterr().err
    assert main([*predict, "3/3"]) == 0  # an empty part
    assert "segmented 0 frames" in capsys.readouterr().out
    assert main(["merge", str(out)]) == 0
    assert capsys.readouterr().out.startswith("merged 3 shards: 2 frames, 2 nodules in ")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "measurements.csv"]


@pytest.mark.usefixtures("shipped_threshold")
def test_merge_refuses_shards_that_do_not_belong_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["merge", str(tmp_path)]) == 2
    assert "no shard to merge" in capsys.readouterr().err
    for name in "abc":
        write_image(tmp_path / "scans" / f"{name}.png", frame_with_square()[0])
    out = tmp_path / "out"
    predict = ["predict", str(tmp_path / "scans"), str(out), "--quiet", "--shard"]
    assert main([*predict, "1/2", "--measure"]) == main([*predict, "2/2"]) == 0
    assert main(["merge", str(out)]) == 2
    assert "shards 1/2 and 2/2 were run with different measurements" in capsys.readouterr().err
    assert main([*predict, "2/2", "--measure", "--overwrite"]) == 0
    (tmp_path / "scans" / "c.png").unlink()
    assert main([*predict, "1/3", "--overwrite"]) == 0  # a split in three beside the one in two
    assert main(["merge", str(out)]) == 2
    assert "shards of 2 different counts N" in capsys.readouterr().err
    (out / "shard-1-of-3.json").unlink()
    assert main([*predict, "2/2", "--measure", "--overwrite"]) == 0  # without c.png
    assert main(["merge", str(out)]) == 2
    assert "shards 1/2 and 2/2 were run on different inputs (3 and 2 files)" in (
        capsys.readouterr().err
    )
    (out / "shard-2-of-2.json").write_text("{")
    assert main(["merge", str(out)]) == 2
    assert "shard-2-of-2.json: not a readable shard record" in capsys.readouterr().err


def test_failed_files_are_listed_by_the_merge_after_the_tables(tmp_path: Path) -> None:
    inputs = tmp_path / "scans"
    for name in "abcd":
        write_image(inputs / f"{name}.png", frame_with_square()[0])
    (inputs / "b.png").write_bytes(b"not a picture")
    options = {"measurements": True, "progress": False}
    with pytest.raises(FilesFailedError, match="1 of 4 images"):
        segmenter().predict_folder(inputs, tmp_path / "one", **options)
    out = tmp_path / "sharded"
    with pytest.raises(FilesFailedError, match="b.png"):
        segmenter().predict_folder(inputs, out, shard="2/2", **options)
    segmenter().predict_folder(inputs, out, shard="1/2", **options)
    with pytest.raises(FilesFailedError, match="could not segment 1 of 4 images") as caught:
        merge_shards(out)
    assert list(caught.value.failures) == ["b"] and caught.value.written == 3
    assert tree(out) == tree(tmp_path / "one")


def test_a_shard_refuses_existing_outputs_and_an_existing_merge(tmp_path: Path) -> None:
    write_image(tmp_path / "scans" / "a.png", frame_with_square()[0])
    out = tmp_path / "out"
    run = {"measurements": True, "progress": False, "shard": "1/1"}
    segmenter().predict_folder(tmp_path / "scans", out, **run)
    merge_shards(out)
    with pytest.raises(FileExistsError, match="measurements.csv"):
        segmenter().predict_folder(tmp_path / "scans", out, **run)
    segmenter().predict_folder(tmp_path / "scans", out, overwrite=True, **run)
    with pytest.raises(FileExistsError, match="measurements.csv"):
        merge_shards(out)
    assert merge_shards(out, overwrite=True).frames == 1
    assert sorted(os.listdir(out)) == ["a.png", "measurements.csv"]


@pytest.mark.parametrize("name", ["lock", "../.lock", ".a/b.lock", ""])
def test_a_lock_is_a_hidden_file_of_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="a lock is a hidden file name"):
        with reserve_folder(tmp_path / "out", name=name):
            pass
    assert not (tmp_path / "out").exists()


def test_a_shard_writes_its_own_report_and_the_segmentations_of_its_own_files(
    tmp_path: Path,
) -> None:
    pytest.importorskip("highdicom")
    pydicom = pytest.importorskip("pydicom")
    for name in ("a", "b", "c"):
        path = write_dicom(tmp_path / "scans" / f"{name}.dcm", frame_with_square()[0])
        dataset = pydicom.dcmread(path)  # with the UIDs a SEG copies
        dataset.StudyInstanceUID = pydicom.uid.generate_uid()
        dataset.SeriesInstanceUID = pydicom.uid.generate_uid()
        dataset.save_as(path)
    out = tmp_path / "out"
    run = {"measurements": True, "report": True, "dicom_seg": True, "progress": False}
    for k in (1, 2):  # the second does not refuse the first's SEG files: they are not its own
        segmenter().predict_folder(tmp_path / "scans", out, shard=f"{k}/2", **run)
    assert sorted(p.name for p in out.glob("*.seg.dcm")) == ["a.seg.dcm", "b.seg.dcm", "c.seg.dcm"]
    reports = ["report.shard-1-of-2.html", "report.shard-2-of-2.html"]
    assert sorted(p.name for p in out.glob("report*.html")) == reports
    merge_shards(out)
    assert (out / "measurements.csv").is_file() and sorted(p.name for p in out.glob("*.html")) == (
        reports  # a page per shard, kept: pictures cannot be merged from the tables
    )
