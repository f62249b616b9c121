"""Tests of ``predict --report`` (thyroidseg.io.report): structure, order, output rules, browser."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference_helpers import PLAIN, frame_with_square, scan_frame
from thyroidseg.cli import main
from thyroidseg.inference import Segmenter
from thyroidseg.inference.measurements import Nodule, measure
from thyroidseg.inference.overlay import overlay
from thyroidseg.io.dicom import write_dicom
from thyroidseg.io.files import write_image
from thyroidseg.io.outputs import OutputExistsError
from thyroidseg.io.provenance import ModelIdentity
from thyroidseg.io.report import REVIEW_BELOW, ReportBuilder, needs_review, review_score
from tiny_models import Threshold

IDENTITY = ModelIdentity("UNet", "9.9", "ab" * 32)


class _Page(HTMLParser):
    """The parts of a report the tests read: entries, images, links, summary, scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[dict[str, str]] = []
        self.sources: list[str] = []
        self.lists: dict[str, dict[str, str]] = {}
        self._list = ""
        self._term: str | None = None
        self._in: str | None = None

    @property
    def summary(self) -> dict[str, str]:
        return self.lists["summary"]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "entry" in values.get("class", "").split():
            self.entries.append(values)
        for name in ("src", "href"):
            if name in values:
                self.sources.append(values[name])
        self._in = tag if tag in ("dt", "dd") else self._in
        if tag == "dl":
            self._list = values.get("id", "")

    def handle_endtag(self, tag: str) -> None:
        self._in = None if tag in ("dt", "dd") else self._in

    def handle_data(self, data: str) -> None:
        if self._in == "dt":
            self._term = data
        elif self._in == "dd" and self._term is not None:
            self.lists.setdefault(self._list, {})[self._term] = data


def read_page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def frames_folder(folder: Path) -> Path:
    """``a.png`` with a bright rectangle (one nodule) and ``b.png`` dark noise (none)."""
    write_image(folder / "a.png", scan_frame(90, 140)[0])
    dark = np.random.default_rng(0).integers(30, 60, (70, 100), dtype=np.uint8)
    write_image(folder / "b.png", dark)
    return folder


def nodule(probability: float, area: int = 10) -> Nodule:
    mask = np.zeros((8, 8), np.uint8)
    mask.reshape(-1)[:area] = 1
    return measure(mask, probabilities=np.full((8, 8), probability, np.float32))[0]


@pytest.mark.usefixtures("shipped_threshold")
def test_the_report_sums_up_the_run_and_has_one_entry_per_frame_all_embedded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    command = ["predict", str(frames_folder(tmp_path / "in")), str(out), "--quiet", "--report"]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/thyroidseg", *command])
    assert main(command) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("segmented 2 frames, 1 nodule in ")
    assert "; 1 frame without a nodule)" in summary
    assert f"report in {out / 'report.html'}" in summary
    page = read_page(out / "report.html")
    assert sorted(entry["data-name"] for entry in page.entries) == ["a.png", "b.png"]
    assert page.sources and all(src.startswith("data:image/jpeg;base64,") for src in page.sources)
    assert page.summary["frames"] == "2 frames"
    assert page.summary["nodules"] == "1 nodule"
    assert page.summary["frames without a nodule"] == "1 frame"
    assert len(page.summary["weights SHA-256"]) == 64
    assert page.summary["command"] == shlex.join(["thyroidseg", *command])
    flagged = sum(e["data-flagged"] == "1" for e in page.entries)
    assert page.summary["flagged for review"] == f"{flagged} nodule" + "s" * (flagged != 1)


def test_flagged_entries_come_first_lowest_score_first_and_loops_hold_their_frames(
    tmp_path: Path,
) -> None:
    image, mask = frame_with_square(30, 40)
    builder = ReportBuilder(tmp_path / "report.html", IDENTITY, {"tta": True}, "thyroidseg x")
    builder.add("a.png", overlay(image, mask), [nodule(0.99)])
    builder.add("b.png", overlay(image, mask), [nodule(0.7)])
    builder.add("c.png", overlay(image, mask), [nodule(0.4)])
    builder.add(("loop.dcm", 1), overlay(image, mask), [nodule(0.95)])
    builder.add(("loop.dcm", 2), overlay(image, mask), [])
    page = read_page(builder.write())
    top = [e for e in page.entries if not e["data-name"].startswith("loop.dcm,")]
    assert [e["data-name"] for e in top] == ["c.png", "b.png", "a.png", "loop.dcm"]
    assert [e["data-flagged"] for e in top] == ["1", "1", "0", "0"]
    frames = [e["data-name"] for e in page.entries if e["data-name"].startswith("loop.dcm,")]
    assert sorted(frames) == ["loop.dcm, frame 1", "loop.dcm, frame 2"]
    assert page.summary["flagged for review"] == "2 nodules"
    assert page.lists["settings"] == {"tta": "true"}


def test_the_review_rule_follows_the_models_rating_when_a_nodule_has_one() -> None:
    confident = nodule(0.99)
    assert review_score(confident) == ("mean_probability", confident.mean_probability)
    assert not needs_review(confident)
    assert needs_review(replace(confident, expected_iou=0.7, review=True))
    assert not needs_review(replace(nodule(0.5), expected_iou=0.3, review=False))
    assert review_score(replace(confident, expected_iou=0.3, review=True)) == ("expected_iou", 0.3)
    assert needs_review(nodule(REVIEW_BELOW["mean_probability"] - 0.05))


def test_sizes_are_in_mm_with_their_source_or_in_px_saying_so(tmp_path: Path) -> None:
    image, mask = frame_with_square(30, 40)
    builder = ReportBuilder(tmp_path / "report.html", IDENTITY, {}, "x")
    builder.add("mm.png", overlay(image, mask), measure(mask, 0.1))
    builder.add("px.png", overlay(image, mask), measure(mask))
    text = builder.render()
    mm, px = text.split('data-name="px.png"')
    assert " mm</td>" in mm and " px</td>" not in mm.split('data-name="mm.png"')[1]
    assert " px</td>" in px and "none (px)" in px and " mm</td>" not in px


@pytest.mark.usefixtures("shipped_threshold")
def test_the_report_follows_the_output_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = frames_folder(tmp_path / "in")
    out = tmp_path / "out"
    command = ["predict", str(frames), str(out), "--quiet", "--report"]
    assert main(command) == 0
    report = out / "report.html"
    report.write_text("an earlier report")
    for path in out.glob("*.png"):  # masks gone: the report alone protects the run
        path.unlink()
    assert main(command) == 2
    assert "report.html" in capsys.readouterr().err and not list(out.glob("*.png"))
    assert report.read_text() == "an earlier report"
    assert main([*command, "--overwrite", "--dicom-seg"]) == 2  # refused: PNG inputs
    assert report.read_text() == "an earlier report"
    assert main([*command, "--overwrite"]) == 0
    assert report.read_text().startswith("<!doctype html>")
    for path in frames.iterdir():  # every frame fails: no report, and the old one goes
        path.write_bytes(b"not an image")
    report.write_text("an earlier report")
    assert main([*command, "--overwrite"]) == 2
    assert not report.exists()


@pytest.mark.usefixtures("shipped_threshold")
def test_measuring_without_a_spacing_says_so_and_how_to_give_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tmp_path / "in"
    write_image(frames / "a.png", scan_frame(90, 140)[0])
    assert main(["predict", str(frames), str(tmp_path / "out"), "--quiet", "--measure"]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("segmented 1 frame, 1 nodule in ")
    assert "; 0 frames without a nodule)" in summary
    assert "1 of 1 nodule measured in pixels only" in summary and "--pixel-spacing" in summary
    assert "pixel_spacing" not in summary.replace("--pixel-spacing", "")
    command = ["predict", str(frames), str(tmp_path / "mm"), "--quiet", "--measure"]
    assert main([*command, "--pixel-spacing", "0.1"]) == 0
    assert "pixels only" not in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_headless_chromium_renders_the_report_and_runs_its_script(tmp_path: Path) -> None:
    image, mask = frame_with_square(60, 80)
    builder = ReportBuilder(tmp_path / "report.html", IDENTITY, {}, "x")
    builder.add("a.png", overlay(image, mask), [nodule(0.99)])
    builder.add("b.png", overlay(image, mask), [nodule(0.5)])
    report = builder.write()
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    browser.append(f"--user-data-dir={tmp_path / 'profile'}")
    dom = subprocess.run(
        [*browser, "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "showing 2 of 2 entries" in dom  # written by the report's own script
    assert dom.index('data-name="b.png"') < dom.index('data-name="a.png"')
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=800,600", report.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    picture = cv2.imread(str(shot))
    assert picture is not None and picture.shape[:2] == (600, 800)
    red = (picture[..., 2] > 150) & (picture[..., 1] < 100) & (picture[..., 0] < 100)
    assert red.any()  # the flag and the outline are drawn


def test_a_refused_run_leaves_the_loops_csv_and_the_report_of_a_cine_loop_alone(
    tmp_path: Path,
) -> None:
    write_dicom(tmp_path / "in" / "loop.dcm", np.stack([frame_with_square(90, 140)[0]] * 2))
    segmenter = Segmenter(Threshold(), PLAIN, device="cpu")
    out = tmp_path / "out"
    options = {"measurements": True, "report": True, "progress": False}
    segmenter.predict_folder(tmp_path / "in", out, **options)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert {"loops.csv", "report.html"} <= before.keys()
    with pytest.raises(OutputExistsError):
        segmenter.predict_folder(tmp_path / "in", out, **options)
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
