"""The scan check: thyroid B-mode frames pass, fans, colour and empty scan regions do not."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from thyroidseg.io.files import read_image
from thyroidseg.preprocessing import preprocess
from thyroidseg.preprocessing.scan_check import ScanCheck, check_scan

SHAPE = (360, 560)


def _speckle(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A grey frame: speckle (20-200) where ``mask`` is set, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    return np.where(mask, rng.integers(20, 200, mask.shape), 0).astype(np.uint8)


def _rectangle() -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[20:320, 90:470] = True
    return mask


def _fan(inner: int) -> np.ndarray:
    """A sector of +-40 degrees around the downward vertical from row 10 to row 350: with
    ``inner`` > 0 an annular sector of that inner radius (a convex probe), else a pointed
    one (a phased array)."""
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    centre = 10 - inner * np.cos(np.radians(40))
    dy, dx = rows - centre, cols - SHAPE[1] / 2
    radius, angle = np.hypot(dy, dx), np.degrees(np.arctan2(dx, dy))
    return (radius >= inner) & (radius <= 350 - centre) & (np.abs(angle) <= 40)


def _check(frame: np.ndarray) -> ScanCheck:
    return check_scan(frame, preprocess(frame))


def test_a_rectangular_grey_scan_with_scanner_text_beside_it_passes() -> None:
    frame = _speckle(_rectangle())
    cv2.putText(frame, "12L6 31fps", (480, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
    check = _check(frame)
    assert check.thyroid_bmode
    assert check.reasons == () and check.failed == ()


@pytest.mark.parametrize("inner", [0, 120], ids=["phased-array", "convex"])
def test_a_fan_fails_on_its_top_edge(inner: int) -> None:
    check = _check(_speckle(_fan(inner)))
    assert not check.thyroid_bmode
    assert "top_edge" in check.failed
    assert "fan" in check.reasons[check.failed.index("top_edge")]


def test_the_same_fan_cut_to_its_rectangle_passes() -> None:
    """The cue is the shape of the region, not its content: the fan's rectangle inside it."""
    frame = _speckle(_fan(120))
    inside = np.zeros(SHAPE, bool)
    inside[200:340, 200:360] = True
    assert _check(np.where(inside, frame, 0).astype(np.uint8)).thyroid_bmode


def test_colour_inside_the_scan_region_fails() -> None:
    frame = cv2.cvtColor(_speckle(_rectangle()), cv2.COLOR_GRAY2BGR)
    frame[100:200, 150:300] = (0, 80, 255)  # a colour-Doppler blob: 13% of the region
    check = _check(frame)
    assert check.failed == ("colour",)
    assert "colour" in check.reasons[0]


def test_coloured_text_and_logos_outside_the_scan_region_do_not_count() -> None:
    frame = cv2.cvtColor(_speckle(_rectangle()), cv2.COLOR_GRAY2BGR)
    frame[330:355, 10:80] = (255, 120, 0)  # a vendor logo
    cv2.putText(frame, "PWR 3cm", (475, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
    check = _check(frame)
    assert check.thyroid_bmode and check.colour_share == 0.0


def test_a_few_coloured_caliper_marks_inside_pass() -> None:
    frame = cv2.cvtColor(_speckle(_rectangle()), cv2.COLOR_GRAY2BGR)
    for x, y in [(150, 100), (300, 220)]:
        cv2.drawMarker(frame, (x, y), (255, 255, 0), cv2.MARKER_CROSS, 9, 1)
    check = _check(frame)
    assert check.thyroid_bmode and check.colour_share > 0


def test_a_colour_frame_of_16_bits_is_measured_on_its_own_scale() -> None:
    frame = cv2.cvtColor(_speckle(_rectangle()), cv2.COLOR_GRAY2BGR).astype(np.uint16) * 257
    assert _check(frame).thyroid_bmode
    frame[100:200, 150:300] = (0, 80 * 257, 65535)
    assert _check(frame).failed == ("colour",)


def test_a_scan_region_without_echo_fails() -> None:
    """A probe in air: reverberation near the top, then (almost) black to the bottom."""
    frame = _speckle(_rectangle())
    frame[80:320, 90:470] = 1
    check = _check(frame)
    assert "echo" in check.failed
    assert "echo" in check.reasons[check.failed.index("echo")]


def test_every_view_of_a_split_screen_is_checked() -> None:
    mask = np.zeros(SHAPE, bool)
    mask[20:320, 40:270] = True
    frame = _speckle(mask)
    frame[:, 280:540] = _speckle(_fan(0))[:, 150:410]  # the right view is a fan
    prepared = preprocess(frame)
    assert len(prepared.views) == 2
    assert "top_edge" in check_scan(frame, prepared).failed


def test_crop_false_checks_the_whole_frame_as_the_view() -> None:
    frame = _speckle(_rectangle())[20:320, 90:470]
    assert check_scan(frame, preprocess(frame, crop=False)).thyroid_bmode


def test_to_dict_holds_every_field() -> None:
    check = _check(_speckle(_fan(0)))
    stored = check.to_dict()
    assert stored["thyroid_bmode"] is False
    assert stored["failed"] == list(check.failed)
    assert stored["top_edge_spread"] == check.top_edge_spread


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.full(SHAPE, np.nan, np.float32), "expected dtype uint8 or uint16"),
        (np.zeros((*SHAPE, 4), np.uint8) + 1, r"expected shape \(H, W\) or \(H, W, 3\)"),
        (np.zeros((0, 0), np.uint8), "empty image"),
        (np.zeros(SHAPE, np.uint8), "constant image"),
    ],
    ids=["nan", "four-channels", "empty", "constant"],
)
def test_bad_frames_are_named_errors(frame: np.ndarray, message: str) -> None:
    prepared = preprocess(_speckle(_rectangle()))
    with pytest.raises(ValueError, match=f"scan.png: {message}"):
        check_scan(frame, prepared, name="scan.png")


def test_a_frame_that_was_not_the_one_preprocessed_is_an_error() -> None:
    prepared = preprocess(_speckle(_rectangle()))
    other = _speckle(np.ones((200, 300), bool))
    with pytest.raises(ValueError, match=r"scan.png: frame of shape \(200, 300\) is not"):
        check_scan(other, prepared, name="scan.png")


def test_preprocessed_must_be_a_preprocessed() -> None:
    with pytest.raises(TypeError, match="must be a Preprocessed, got dict"):
        check_scan(_speckle(_rectangle()), {"views": []})  # type: ignore[arg-type]


# -- real frames ---------------------------------------------------------------------

VENDOR_FILES = [
    "OBXXXX1A.dcm",  # obstetric, convex probe, palette colour (Philips)
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # echocardiogram, phased array, grey (Philips)
    "US1_UNCR.dcm",  # lymph node, colour Doppler (GE)
    "gdcm-US-ALOKA-16.dcm",  # split-screen pelvis, convex probe (Aloka)
    "color3d_jpeg_baseline.dcm",  # 3-D loop, 120 frames (SonoSite)
    "color-pl.dcm",  # echocardiogram, colour Doppler
]


@pytest.mark.parametrize("name", VENDOR_FILES)
def test_vendor_ultrasound_of_other_organs_is_flagged(name: str) -> None:
    data = pytest.importorskip("pydicom.data", reason="pydicom-data (the test extra)")
    dicom = pytest.importorskip("thyroidseg.io.dicom")
    found = data.get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"{name} not in the installed pydicom-data")
    for frame in dicom.iter_frames(found, "1-2" if name.startswith("color3d") else "all"):
        check = _check(frame)
        assert not check.thyroid_bmode, name
        assert len(check.reasons) == len(check.failed) >= 1


@pytest.mark.ddti
def test_ddti_frames_are_not_flagged(ddti_dir: Path, ddti_raw_dir: Path) -> None:
    frames = sorted((ddti_dir / "images").glob("*.png"))[::4] + sorted(ddti_raw_dir.glob("*.jpg"))
    flagged = [path.name for path in frames if not _check(read_image(path)).thyroid_bmode]
    assert len(frames) > 90
    assert flagged == []
