"""Unit tests of thyroidseg.preprocessing on synthetic frames made here."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thyroidseg.preprocessing import DEFAULT_MARGIN, Preprocessed, preprocess
from thyroidseg.preprocessing.geometry import Box, fit_box, resize, resize_mask
from thyroidseg.preprocessing.inpainting import find_annotations, inpaint_annotations
from thyroidseg.preprocessing.intensity import equalize, smooth, to_gray_uint8
from thyroidseg.preprocessing.scan_region import find_scan_region, find_views

FIELD = Box(90, 20, 470, 320)


def speckle(shape: tuple[int, int], low: int, high: int, seed: int = 0) -> np.ndarray:
    """Speckle-like texture: random grains blurred to ~2 px, values in [low, high]."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random(shape, np.float32), (5, 5), 1.0)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return (low + noise * (high - low)).astype(np.uint8)


def scanner_frame(seed: int = 0) -> np.ndarray:
    """A 360x560 frame like DDTI's: black, a textured field of view, text, bar, ticks."""
    frame = np.zeros((360, 560), np.uint8)
    frame[FIELD.slices] = speckle((FIELD.height, FIELD.width), 15, 200, seed)
    for row in range(10, 110, 16):  # a column of scanner settings ("P100", "12L6", ...)
        cv2.putText(frame, "DR65", (515, row), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
    cv2.putText(frame, "IZQ", (100, 345), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1)
    frame[160:260, 5:15] = np.linspace(255, 30, 100, dtype=np.uint8)[:, None]  # grey bar
    frame[FIELD.y0 + 5 : FIELD.y1 : 50, FIELD.x0 - 4 : FIELD.x0 - 2] = 255  # depth ticks
    # JPEG-like ringing: faint non-zero pixels in the two columns right of the field.
    rng = np.random.default_rng(seed + 1)
    frame[FIELD.y0 : FIELD.y1, FIELD.x1 : FIELD.x1 + 2] = rng.integers(0, 3, (FIELD.height, 2))
    return frame


def split_frame() -> tuple[np.ndarray, Box, Box]:
    """Two views side by side with different tissue; the right one starts 20 px lower."""
    frame = np.zeros((360, 560), np.uint8)
    left, right = Box(40, 10, 280, 320), Box(280, 30, 520, 320)
    frame[left.slices] = speckle((left.height, left.width), 10, 120, 1)
    frame[right.slices] = speckle((right.height, right.width), 90, 250, 2)
    return frame, left, right


def draw_cross(image: np.ndarray, x: int, y: int, value: int = 240) -> None:
    image[y, x - 4 : x + 5] = value
    image[y - 4 : y + 5, x] = value


# --------------------------------------------------------------------------- Box


def test_box_geometry_and_union() -> None:
    box = Box(2, 3, 12, 8)
    assert (box.width, box.height, box.area) == (10, 5, 50)
    image = np.zeros((20, 20))
    assert image[box.slices].shape == (5, 10)
    assert box.union(Box(0, 5, 4, 20)) == Box(0, 3, 12, 20)


# --------------------------------------------------------------------------- input


def test_to_gray_accepts_grey_colour_16_bit_and_paths(tmp_path) -> None:
    grey = speckle((40, 50), 0, 255)
    np.testing.assert_array_equal(to_gray_uint8(grey), grey)
    np.testing.assert_array_equal(to_gray_uint8(grey[:, :, None]), grey)
    bgr = np.dstack([grey, grey, grey])
    np.testing.assert_array_equal(to_gray_uint8(bgr), grey)
    wide = grey.astype(np.uint16) * 16 + 100  # 12-bit data, offset
    np.testing.assert_array_equal(to_gray_uint8(wide), grey)
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), grey)
    np.testing.assert_array_equal(to_gray_uint8(path), grey)
    np.testing.assert_array_equal(to_gray_uint8(str(path)), grey)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.full((10, 10), 7, np.uint8), "constant image"),
        (np.zeros((4, 4, 4, 4), np.uint8), "expected shape"),
        (np.zeros((10, 10, 2), np.uint8), "expected shape"),
        (np.random.default_rng(0).random((10, 10)), "dtype"),
        ([[1, 2], [3, 4]], "numpy array or a path"),
    ],
)
def test_to_gray_rejects_bad_images(image, message) -> None:
    with pytest.raises(ValueError, match=message):
        to_gray_uint8(image)


def test_unreadable_and_missing_files_are_named(tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        preprocess(broken)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        preprocess(tmp_path / "missing.png")
    constant = tmp_path / "flat.png"
    cv2.imwrite(str(constant), np.full((64, 64), 3, np.uint8))
    with pytest.raises(ValueError, match="flat.png: constant image"):
        preprocess(constant)


# --------------------------------------------------------------------------- scan region


def test_scan_region_is_the_field_of_view_without_text_bar_ticks_or_ringing() -> None:
    assert find_scan_region(scanner_frame()) == FIELD
    assert find_views(scanner_frame(seed=3)) == [FIELD]


def test_scan_region_keeps_a_dark_cyst_touching_the_edge() -> None:
    frame = scanner_frame()
    frame[150:250, FIELD.x0 : FIELD.x0 + 60] = np.random.default_rng(2).integers(1, 6, (100, 60))
    assert find_scan_region(frame) == FIELD


def test_frame_without_border_is_its_own_scan_region() -> None:
    image = speckle((120, 200), 5, 250)
    assert find_scan_region(image) == Box(0, 0, 200, 120)


def test_split_screen_gives_one_box_per_view_each_with_its_own_top() -> None:
    frame, left, right = split_frame()
    assert find_views(frame) == [left, right]
    assert find_scan_region(frame) == left.union(right)


def test_no_field_of_view_or_too_small_image_is_an_error() -> None:
    dots = np.zeros((200, 300), np.uint8)
    dots[::20, ::20] = 255
    with pytest.raises(ValueError, match="no ultrasound field of view"):
        find_scan_region(dots)
    with pytest.raises(ValueError, match="too small"):
        find_views(speckle((20, 300), 1, 255))


# --------------------------------------------------------------------------- annotations


def test_annotations_found_on_tissue_and_tissue_echoes_kept() -> None:
    crop = speckle((200, 200), 40, 110)
    draw_cross(crop, 50, 50)
    cv2.putText(crop, "A", (120, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 250, 1)
    crop[150:154, 20:80] = 250  # a thick specular echo (4 px)
    crop[170, 20:120] = 250  # a long thin echo line
    crop[110:112, 150:152] = 255  # a 2x2 bright focus (microcalcification-sized)
    marks = find_annotations(crop)
    assert marks.dtype == np.uint8 and set(np.unique(marks)) <= {0, 1}
    assert marks[50, 46:55].all() and marks[46:55, 50].all()
    assert marks[48:62, 118:132].any()  # the letter
    assert not marks[148:156, 15:85].any()
    assert not marks[168:173, 15:125].any()
    assert not marks[108:114, 148:154].any()


def test_colour_overlay_pixels_are_annotations() -> None:
    grey = speckle((60, 60), 20, 200)
    frame = np.dstack([grey, grey, grey])
    frame[30, 10:50] = (0, 255, 255)  # a yellow line
    marks = find_annotations(frame)
    assert marks[30, 10:50].all()
    assert marks.sum() <= 3 * 42 + 10  # the line and its neighbours only


def test_inpaint_annotations_fills_marks_and_leaves_the_rest_untouched() -> None:
    crop = speckle((100, 100), 60, 100)
    original = crop.copy()
    draw_cross(crop, 40, 40, 255)
    crop[70:90, 10:40] = 255  # a block wider than the window: needs wider passes
    marks = ((crop == 255) & (original != 255)).astype(np.uint8)
    filled = inpaint_annotations(crop, marks)
    keep = marks == 0
    np.testing.assert_array_equal(filled[keep], crop[keep])
    assert filled[marks == 1].min() >= 60 and filled[marks == 1].max() <= 100
    assert crop[40, 40] == 255  # the input is not modified


def test_inpaint_annotations_checks_its_arguments() -> None:
    crop = speckle((30, 30), 0, 255)
    with pytest.raises(ValueError, match="does not match"):
        inpaint_annotations(crop, np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="odd"):
        inpaint_annotations(crop, np.zeros((30, 30), np.uint8), window=4)


# --------------------------------------------------------------------------- intensity


@pytest.mark.parametrize("method", ["clahe", "global"])
def test_equalize_spreads_a_narrow_histogram(method) -> None:
    dull = speckle((128, 128), 100, 130)
    out = equalize(dull, method)
    assert out.dtype == np.uint8 and out.shape == dull.shape
    assert out.std() > 2 * dull.std()


@pytest.mark.parametrize("method", ["median", "gaussian", "bilateral"])
def test_smooth_reduces_noise(method) -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(128 + rng.normal(0, 12, (128, 128)), 0, 255).astype(np.uint8)
    out = smooth(noisy, method)
    assert out.dtype == np.uint8 and out.shape == noisy.shape
    assert out.std() < 0.8 * noisy.std()


def test_intensity_steps_reject_bad_arguments() -> None:
    image = speckle((32, 32), 0, 255)
    with pytest.raises(ValueError, match="method"):
        equalize(image, "adaptive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        smooth(image, "box")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="odd"):
        smooth(image, size=4)
    with pytest.raises(ValueError, match="uint8"):
        equalize(image.astype(np.float32))


# --------------------------------------------------------------------------- geometry


@given(
    h=st.integers(1, 600),
    w=st.integers(1, 600),
    height=st.integers(1, 300),
    width=st.integers(1, 300),
)
@settings(max_examples=100, deadline=None)
def test_letterbox_keeps_aspect_and_centres(h, w, height, width) -> None:
    box = fit_box((h, w), (height, width))
    assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height
    assert box.width == width or box.height == height  # touches two sides
    scale = min(height / h, width / w)
    assert abs(box.height - h * scale) <= 0.5 + 1e-9 or box.height == 1
    assert abs(box.width - w * scale) <= 0.5 + 1e-9 or box.width == 1
    assert 0 <= (height - box.height) - 2 * box.y0 <= 1
    assert 0 <= (width - box.width) - 2 * box.x0 <= 1


def test_resize_modes_and_padding() -> None:
    image = speckle((100, 200), 1, 255)
    boxed = resize(image, (64, 64))
    assert boxed.shape == (64, 64)
    assert not boxed[:16].any() and not boxed[48:].any() and boxed[16:48].all()
    assert resize(image, (64, 64), "stretch").all()
    with pytest.raises(ValueError, match="letterbox"):
        resize(image, (64, 64), "crop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        resize(image, (0, 64))


def _geometry(shape, box, size, mode) -> Preprocessed:
    content = fit_box((box.height, box.width), size, mode)
    return Preprocessed(np.zeros(size, np.uint8), box, [box], content, shape)


@st.composite
def masks_in_boxes(draw):
    height, width = draw(st.integers(8, 160)), draw(st.integers(8, 160))
    x0, y0 = draw(st.integers(0, width - 4)), draw(st.integers(0, height - 4))
    x1, y1 = draw(st.integers(x0 + 4, width)), draw(st.integers(y0 + 4, height))
    box = Box(x0, y0, x1, y1)
    size = (draw(st.integers(4, 96)), draw(st.integers(4, 96)))
    mode = draw(st.sampled_from(["letterbox", "stretch"]))
    mask = np.zeros((height, width), np.uint8)
    for _ in range(draw(st.integers(1, 3))):  # ellipses, partly outside the box
        cx, cy = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
        axes = (draw(st.integers(1, width)), draw(st.integers(1, height)))
        cv2.ellipse(mask, (cx, cy), axes, draw(st.integers(0, 179)), 0, 360, 1, -1)
    return _geometry((height, width), box, size, mode), mask


@given(masks_in_boxes())
@settings(max_examples=150, deadline=None)
def test_mask_round_trip_moves_pixels_at_most_the_stated_radius(case) -> None:
    geometry, mask = case
    network = geometry.mask_to_network(mask)
    assert network.shape == geometry.size and network.dtype == mask.dtype
    outside = np.ones(geometry.size, bool)
    outside[geometry.content.slices] = False
    assert not network[outside].any()  # letterbox padding stays background

    back = geometry.mask_to_original(network)
    assert back.shape == mask.shape
    inside = np.zeros(mask.shape, np.uint8)
    inside[geometry.box.slices] = 1
    assert not back[inside == 0].any()

    ry, rx = geometry.round_trip_radius
    kernel = np.ones((2 * ry + 1, 2 * rx + 1), np.uint8)
    # Inside the box, erode(M) <= round_trip(M) <= dilate(M); erosion/dilation see the
    # mask as it is cut by the box (pixels outside the box are lost by design).
    cut = mask * inside
    grown = cv2.dilate(cut, kernel, borderType=cv2.BORDER_REPLICATE)
    shrunk = cv2.erode(cut, kernel, borderType=cv2.BORDER_REPLICATE)
    assert (back <= grown).all()
    assert (back[inside == 1] >= shrunk[inside == 1]).all()
    if geometry.content.height >= geometry.box.height:
        assert ry == 0
    if ry == 0 and rx == 0:
        np.testing.assert_array_equal(back, cut)


def test_round_trip_radius_on_a_ddti_sized_region() -> None:
    geometry = _geometry((360, 560), Box(87, 8, 472, 309), (256, 256), "letterbox")
    assert geometry.round_trip_radius == (1, 1)
    assert _geometry((100, 100), Box(0, 0, 50, 50), (256, 256), "letterbox").round_trip_radius == (
        0,
        0,
    )


def test_mask_mapping_checks_shapes() -> None:
    geometry = _geometry((100, 120), Box(10, 10, 90, 110), (32, 32), "letterbox")
    with pytest.raises(ValueError, match="original frame"):
        geometry.mask_to_network(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="network frame"):
        geometry.mask_to_original(np.zeros((100, 120), np.uint8))


# --------------------------------------------------------------------------- pipeline


def test_preprocess_default_pipeline() -> None:
    frame, left, right = split_frame()
    result = preprocess(frame, size=(128, 160))
    assert result.image.shape == (128, 160) and result.image.dtype == np.uint8
    assert result.views == [left, right]
    region = left.union(right)
    m = DEFAULT_MARGIN
    assert result.box == Box(region.x0 - m, region.y0 - m, region.x1 + m, region.y1 + m)
    assert result.original_shape == (360, 560)
    top, bottom, left_pad, right_pad = result.padding
    assert left_pad == right_pad == 0 and abs(top - bottom) <= 1
    assert not result.image[:top].any() and not result.image[128 - bottom :].any()
    json.dumps(result.to_dict())
    assert result.to_dict()["settings"]["equalization"] == "clahe"


def test_preprocess_with_every_step_off_is_a_plain_resize() -> None:
    frame = scanner_frame()
    result = preprocess(
        frame,
        size=(64, 64),
        crop=False,
        inpaint_annotations=False,
        equalization=None,
        smoothing=None,
        resize_mode="stretch",
    )
    assert result.box == Box(0, 0, 560, 360) and result.views == [result.box]
    expected = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(result.image, expected)


def test_preprocess_crop_margin_and_inpaint_switches() -> None:
    frame = scanner_frame()
    draw_cross(frame, 200, 150, 255)
    plain = dict(equalization=None, smoothing=None, size=(300, 380), resize_mode="stretch")
    exact = preprocess(frame, margin=0, inpaint_annotations=False, **plain)
    assert exact.box == FIELD
    np.testing.assert_array_equal(exact.image, frame[FIELD.slices])  # same size: a copy
    cleaned = preprocess(frame, margin=0, **plain)
    cross = (slice(126, 135), slice(106, 115))  # the cross, in crop coordinates
    assert cleaned.image[cross].max() < 240 and exact.image[cross].max() == 255


def test_preprocess_accepts_colour_and_16_bit_and_cleans_overlays(tmp_path) -> None:
    frame = scanner_frame()
    colour = np.dstack([frame, frame, frame])
    colour[100:102, 150:250] = (0, 200, 255)  # an orange measurement line
    result = preprocess(colour, equalization=None, smoothing=None, margin=0)
    assert result.box == FIELD
    grey = preprocess(frame, equalization=None, smoothing=None, margin=0)
    line_rows = result.mask_to_network(
        (np.arange(360)[:, None] >= 100) & (np.arange(360)[:, None] < 102) & np.ones((1, 560), bool)
    )
    assert np.abs(result.image.astype(int) - grey.image)[line_rows].mean() < 25
    wide = frame.astype(np.uint16) * 257
    np.testing.assert_array_equal(preprocess(wide).image, preprocess(frame).image)
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), frame)
    np.testing.assert_array_equal(preprocess(path).image, preprocess(frame).image)


def test_preprocess_is_deterministic_and_does_not_modify_its_input() -> None:
    frame = scanner_frame()
    copy = frame.copy()
    first, second = preprocess(frame), preprocess(frame)
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(frame, copy)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("equalization", "adaptive"),
        ("smoothing", "box"),
        ("resize_mode", "crop"),
        ("size", (0, 256)),
        ("margin", -3),
    ],
)
def test_preprocess_rejects_bad_settings_before_reading(tmp_path, option, value) -> None:
    with pytest.raises(ValueError, match=option.split("_")[0]):
        preprocess(tmp_path / "never-read.png", **{option: value})


@given(
    st.integers(1, 12), st.integers(1, 12), st.integers(1, 4), st.integers(1, 4), st.integers(0, 9)
)
@settings(max_examples=60, deadline=None)
def test_resize_mask_samples_pixel_centres(h, w, ky, kx, seed) -> None:
    mask = np.random.default_rng(seed).integers(0, 3, (h, w)).astype(np.uint8)
    np.testing.assert_array_equal(resize_mask(mask, (h, w)), mask)
    # enlarging by whole factors repeats every pixel; shrinking keeps the centre sample
    enlarged = resize_mask(mask, (h * ky, w * kx))
    np.testing.assert_array_equal(enlarged, np.repeat(np.repeat(mask, ky, 0), kx, 1))
    np.testing.assert_array_equal(resize_mask(enlarged, (h, w)), mask)
    big = np.random.default_rng(seed).integers(0, 3, (h * ky, w * kx)).astype(np.uint8)
    np.testing.assert_array_equal(resize_mask(big, (h, w)), big[ky // 2 :: ky, kx // 2 :: kx])


def test_a_network_frame_too_large_to_allocate_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 8192 pixels a side"):
        preprocess(np.zeros((50, 60), np.uint8), size=(100000, 100000))
