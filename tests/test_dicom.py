"""DICOM input: frames and colours, the pixel size, cine loops in ``predict``, bad files.

Every DICOM here is built from arrays with pydicom (or is one of pydicom's own test files,
shipped in its wheel); nothing is downloaded.
"""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataelem import DataElement  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import convert_color_space  # noqa: E402
from pydicom.uid import (  # noqa: E402
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
)

import thyroidseg.io._dicom_header  # noqa: E402
from inference_helpers import PLAIN, frame_with_square, iou  # noqa: E402
from thyroidseg.cli import main  # noqa: E402
from thyroidseg.inference import Segmenter, predict_file  # noqa: E402
from thyroidseg.inference.measurements import measure  # noqa: E402
from thyroidseg.io.dicom import (  # noqa: E402
    FrameRange,
    frame_outputs,
    iter_frames,
    read_dicom_info,
    read_frame,
    read_spacing,
    write_dicom,
)
from thyroidseg.io.files import list_inputs, read_image, write_image  # noqa: E402
from thyroidseg.io.spacing import FrameSpacing, RegionSpacing, check_spacing  # noqa: E402
from thyroidseg.preprocessing import preprocess_folder  # noqa: E402
from tiny_models import Threshold  # noqa: E402

RNG = np.random.default_rng(0)


def loop(count: int = 3, height: int = 90, width: int = 140) -> np.ndarray:
    """``count`` frames with the bright 40 x 70 rectangle of `frame_with_square`."""
    frame = frame_with_square(height, width)[0]
    return np.stack([frame] * count)


def edited(path: Path, change) -> Path:
    """Read ``path``, apply ``change(dataset)``, write it back; return ``path``."""
    dataset = pydicom.dcmread(path)
    change(dataset)
    dataset.save_as(path)
    return path


def region(data_type: int = 1, units: int = 3, delta_cm: float = 0.02, box=(0, 0, 139, 89)):
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType = 1, data_type
    (item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1,
     item.RegionLocationMaxY1) = box  # fmt: skip
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX = item.PhysicalDeltaY = delta_cm
    return item


# -- frames and colours ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_frames_read_as_stored_single_and_multi_frame(tmp_path: Path, dtype) -> None:
    frames = RNG.integers(0, np.iinfo(dtype).max, (3, 5, 7)).astype(dtype)
    one = write_dicom(tmp_path / "one.dcm", frames[1])
    many = write_dicom(tmp_path / "many.dcm", frames)
    assert read_image(one).dtype == dtype
    np.testing.assert_array_equal(read_image(one), frames[1])
    np.testing.assert_array_equal(read_frame(many, 2), frames[2])
    np.testing.assert_array_equal(np.stack(list(iter_frames(many))), frames)
    np.testing.assert_array_equal(np.stack(list(iter_frames(many, "2-3"))), frames[1:])
    info = read_dicom_info(many)
    assert (info.frames, info.rows, info.columns, info.photometric) == (3, 5, 7, "MONOCHROME2")


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    frame = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    path = write_dicom(tmp_path / "m1.dcm", frame, photometric="MONOCHROME1")
    np.testing.assert_array_equal(read_frame(path), 255 - frame)


def test_signed_pixels_are_shifted_to_unsigned_in_order(tmp_path: Path) -> None:
    signed = np.array([[-32768, -1], [0, 32767]], np.int16)
    path = write_dicom(tmp_path / "s.dcm", signed.view(np.uint16))
    edited(path, lambda d: setattr(d, "PixelRepresentation", 1))
    np.testing.assert_array_equal(read_frame(path), [[0, 32767], [32768, 65535]])


def test_rgb_and_ybr_full_become_bgr(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        read_frame(write_dicom(tmp_path / "rgb.dcm", rgb)), rgb[..., ::-1]
    )
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    path = write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL")
    difference = read_frame(path).astype(int) - rgb[..., ::-1]
    assert np.abs(difference).max() <= 2  # the YCbCr round trip rounds


def test_compressed_jpeg_baseline_ybr_422_and_palette_decode(tmp_path: Path) -> None:
    reference = read_frame(get_testdata_file("SC_rgb_rle.dcm"))  # the same bands, lossless
    jpeg = read_frame(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))  # JPEG baseline, YBR_FULL
    ybr422 = read_frame(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))
    assert reference[0, 0].tolist() == [0, 0, 255]  # red top band, as BGR
    for decoded in (jpeg, ybr422):
        assert decoded.shape == reference.shape == (100, 100, 3)
        assert np.abs(decoded.astype(int) - reference).mean() < 3
    palette = get_testdata_file("examples_palette.dcm")
    picture = read_frame(palette)
    assert picture.shape == (350, 800, 3) and picture.dtype == np.uint8
    spacing = read_spacing(palette)  # a real scanner's region: 0.0262 cm per pixel
    assert spacing.source == "ultrasound-region"
    assert spacing.at(400, 300)[0] == pytest.approx((0.26229, 0.26229), rel=1e-4)


def test_rle_multi_frame_and_files_without_file_meta(tmp_path: Path) -> None:
    frames = RNG.integers(0, 256, (4, 9, 11), dtype=np.uint8)
    path = write_dicom(tmp_path / "rle.dcm", frames)
    edited(path, lambda d: d.compress(RLELossless))
    assert read_dicom_info(path).transfer_syntax == "RLE Lossless"
    np.testing.assert_array_equal(read_frame(path, 3), frames[3])
    bare = Dataset(pydicom.dcmread(write_dicom(tmp_path / "plain.dcm", frames)))
    bare.save_as(tmp_path / "nometa.dcm", implicit_vr=True, little_endian=True)
    assert (tmp_path / "nometa.dcm").read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_frame(tmp_path / "nometa.dcm", 2), frames[2])


def palette_file(path: Path, lut: np.ndarray, depth: int, *, big_endian: bool = False) -> Path:
    """A PALETTE COLOR file of 4 x 6 indices 0..23 and the lookup table ``lut`` (R = G = B),
    its entries stored as 16-bit words in the file's byte order, ``depth`` in the descriptor."""
    dataset = pydicom.dcmread(write_dicom(path, np.arange(24, dtype=np.uint8).reshape(4, 6)))
    dataset.PhotometricInterpretation = "PALETTE COLOR"
    for colour in ("Red", "Green", "Blue"):
        keyword = f"{colour}PaletteColorLookupTableDescriptor"
        dataset[keyword] = DataElement(keyword, "US", [len(lut), 0, depth])
        words = lut.astype(">u2" if big_endian else "<u2").tobytes()
        dataset[f"{colour}PaletteColorLookupTableData"] = DataElement(
            f"{colour}PaletteColorLookupTableData", "OW", words
        )
    if big_endian:
        dataset.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    pydicom.dcmwrite(path, dataset)
    return path


def test_palette_tables_in_either_byte_order_and_of_either_depth_give_one_colour(tmp_path):
    grey = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10  # index i -> grey 10 * i
    sixteen = (np.arange(24) * 10 * 257).astype(np.uint16)  # 16-bit entries: 257 * grey
    for name, lut, depth, big in [("le16", sixteen, 16, False), ("be16", sixteen, 16, True),
                                  ("le8", sixteen // 257, 8, False),
                                  ("be8", sixteen // 257, 8, True)]:  # fmt: skip
        path = palette_file(tmp_path / f"{name}.dcm", lut, depth, big_endian=big)
        picture = read_frame(path)
        assert picture.dtype == np.uint8, name
        np.testing.assert_array_equal(picture, np.repeat(grey[..., None], 3, axis=2), name)


def test_deflated_files_are_read(tmp_path: Path) -> None:
    frames = loop(3) + np.arange(3, dtype=np.uint8)[:, None, None]
    path = write_dicom(tmp_path / "deflated.dcm", frames)
    edited(
        path, lambda d: setattr(d.file_meta, "TransferSyntaxUID", DeflatedExplicitVRLittleEndian)
    )
    assert path.stat().st_size < frames.nbytes  # compressed: offsets differ from the file's
    assert read_dicom_info(path).transfer_syntax == "Deflated Explicit VR Little Endian"
    np.testing.assert_array_equal(read_frame(path, 2), frames[2])
    np.testing.assert_array_equal(np.stack(list(iter_frames(path))), frames)


@pytest.fixture(scope="module")
def vendor_files() -> Path:
    """The folder of pydicom-data's files (Philips, GE, SonoSite, Aloka...); skips without it."""
    data_store = pytest.importorskip("data_store", reason="pydicom-data (the test extra)")
    return Path(data_store.__file__).parent / "data"


def test_vendor_compressed_frames_equal_their_uncompressed_copies(vendor_files: Path) -> None:
    twins = [
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),  # JPEG-LS, 10 frames
        ("US1_J2KR.dcm", "US1_UNCR.dcm"),  # JPEG 2000 lossless, GE ultrasound
        ("OBXXXX1A_expb_2frame.dcm", "OBXXXX1A_2frame.dcm"),  # big-endian PALETTE COLOR
    ]
    for compressed, plain in twins:
        decoded = list(iter_frames(vendor_files / compressed))
        expected = list(iter_frames(vendor_files / plain))
        assert len(decoded) == len(expected) >= 1, compressed
        for got, want in zip(decoded, expected, strict=True):
            np.testing.assert_array_equal(got, want, compressed)
    lossless = read_frame(vendor_files / "JPGLosslessP14SV1_1s_1f_8b.dcm")  # JPEG Process 14
    assert lossless.shape == (768, 1024) and lossless.std() > 10


def test_every_frame_of_the_vendor_ultrasound_files_is_segmented(
    vendor_files: Path, tmp_path: Path
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    frames = 0
    for path in sorted(vendor_files.glob("*.dcm")):
        if pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality") == "US":
            (scans / path.name).symlink_to(path)
            frames += read_dicom_info(path).frames
    assert len(list(scans.iterdir())) >= 16 and frames >= 130
    segmenter = Segmenter(Threshold(), {**PLAIN, "size": (32, 32)}, device="cpu", batch_size=8)
    result = segmenter.predict_folder(
        scans, tmp_path / "out", measurements=True, pixel_spacing="auto", progress=False
    )
    assert result.frames == frames


def test_dicom_files_are_listed_by_extension_or_by_content(tmp_path: Path) -> None:
    frame = RNG.integers(0, 256, (5, 5), dtype=np.uint8)
    write_dicom(tmp_path / "a.DCM", frame)
    write_dicom(tmp_path / "1.2.840.55", frame)  # a UID name from a scanner export
    write_dicom(tmp_path / "IM_0001", frame)
    (tmp_path / "README").write_text("not an image")
    (tmp_path / "notes.txt").write_bytes(b"\0" * 128 + b"DICM")  # a .txt is never opened
    assert sorted(list_inputs(tmp_path)) == ["1.2.840.55", "IM_0001", "a"]
    assert list(list_inputs(tmp_path / "IM_0001")) == ["IM_0001"]
    with pytest.raises(ValueError, match="README: not an image file"):
        list_inputs(tmp_path / "README")


# -- the pixel size --------------------------------------------------------------------


def test_spacing_from_the_tissue_region_then_pixel_spacing_then_none(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "r.dcm", loop(1)[0])

    def regions(*items):
        return edited(path, lambda d: setattr(d, "SequenceOfUltrasoundRegions", list(items)))

    anisotropic = region()
    anisotropic.PhysicalDeltaY = 0.03
    assert read_spacing(regions(anisotropic)).at(10, 10) == ((0.3, 0.2), "ultrasound-region")
    doppler = region(data_type=3, delta_cm=0.5)  # a PW Doppler strip is ignored
    left = region(delta_cm=0.01, box=(0, 0, 69, 89))
    right = region(delta_cm=0.04, box=(70, 0, 139, 89))
    spacing = read_spacing(regions(doppler, left, right))
    assert spacing.at(10, 10)[0] == pytest.approx((0.1, 0.1))
    assert spacing.at(100, 10)[0] == pytest.approx((0.4, 0.4))
    assert spacing.at(200, 10) == (None, "none")
    only_doppler = regions(doppler)
    edited(only_doppler, lambda d: setattr(d, "PixelSpacing", [0.25, 0.5]))
    assert read_spacing(path) == FrameSpacing("pixel-spacing", (0.25, 0.5))
    edited(
        path, lambda d: (delattr(d, "PixelSpacing"), setattr(d, "ImagerPixelSpacing", [0.3, 0.3]))
    )
    assert read_spacing(path) == FrameSpacing("pixel-spacing", (0.3, 0.3))
    edited(path, lambda d: delattr(d, "ImagerPixelSpacing"))
    assert read_spacing(path) == FrameSpacing("none")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: setattr(d, "SequenceOfUltrasoundRegions", [region(units=0)]), "units none/none"),
        (lambda d: setattr(d, "SequenceOfUltrasoundRegions", [region(delta_cm=2.0)]), "20.0"),
        (lambda d: setattr(d, "PixelSpacing", [0, 0.1]), "PixelSpacing: pixel spacing"),
        (lambda d: setattr(d, "PixelSpacing", [1e-6, 1e-6]), "not plausible"),
    ],
)
def test_wrong_units_and_absurd_spacings_are_refused_naming_the_file(
    tmp_path: Path, change, message
) -> None:
    path = edited(write_dicom(tmp_path / "bad.dcm", loop(1)[0]), change)
    with pytest.raises(ValueError, match=message) as error:
        read_spacing(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("spacing", [0, -0.1, float("nan"), 5e-5, 11.0, (0.1, 20.0), "0.1"])
def test_check_spacing_refuses_implausible_values(spacing) -> None:
    with pytest.raises(ValueError, match="not plausible"):
        check_spacing(spacing, "here")


@given(
    mask=st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=5, max_size=5),
    row=st.floats(0.01, 2.0),
    col=st.floats(0.01, 2.0),
)
@settings(max_examples=25, deadline=None)
def test_a_dicom_wrapped_frame_measures_as_the_png_times_its_spacing(mask, row, col) -> None:
    frame = np.array(mask, np.uint8) * 255
    with tempfile.TemporaryDirectory() as folder:
        png = write_image(Path(folder) / "f.png", frame)
        dcm = write_dicom(Path(folder) / "f.dcm", frame, region_spacing_mm=(row, col))
        spacing = read_spacing(dcm)
        in_pixels, in_mm = measure(read_image(png)), measure(read_image(dcm), spacing)
    assert spacing.regions[0].spacing == pytest.approx((row, col), rel=1e-12)
    (row, col) = spacing.regions[0].spacing
    assert len(in_pixels) == len(in_mm)
    for pixels, mm in zip(in_pixels, in_mm, strict=True):
        assert (pixels.area_px, pixels.x, pixels.y, pixels.width, pixels.height) == (
            mm.area_px, mm.x, mm.y, mm.width, mm.height)  # fmt: skip
        assert mm.area_mm2 == pixels.area_px * row * col
        assert (mm.depth_mm, mm.transverse_mm) == (pixels.depth_px * row, pixels.width * col)
        assert mm.spacing_source == "ultrasound-region"


@given(
    frames=st.integers(2, 4).flatmap(
        lambda n: st.lists(st.binary(min_size=12, max_size=12), min_size=n, max_size=n)
    ),
    which=st.integers(0, 3),
    rle=st.booleans(),
)
@settings(max_examples=20, deadline=None)
def test_a_frame_of_a_loop_equals_the_same_frame_written_alone(frames, which, rle) -> None:
    stack = np.frombuffer(b"".join(frames), np.uint8).reshape(len(frames), 3, 4)
    which %= len(frames)
    with tempfile.TemporaryDirectory() as folder:
        many = write_dicom(Path(folder) / "many.dcm", stack)
        if rle:
            edited(many, lambda d: d.compress(RLELossless))
        alone = write_dicom(Path(folder) / "one.dcm", stack[which])
        np.testing.assert_array_equal(read_frame(many, which), read_image(alone))


def test_frame_range() -> None:
    assert FrameRange.parse("all").indices(3) == range(3)
    assert FrameRange.parse("2").indices(3) == range(1, 2)
    for bad in ("0-2", "3-2", "last", "1-"):
        with pytest.raises(ValueError, match=r"--frames"):
            FrameRange.parse(bad)
    with pytest.raises(
        ValueError, match=r"has 3 frames, fewer than the 5 that frames=2-5 \(--frames\)"
    ):
        FrameRange.parse("2-5").indices(3)


def test_frame_spacing_is_consistent() -> None:
    with pytest.raises(ValueError, match="FrameSpacing"):
        FrameSpacing("user")
    with pytest.raises(ValueError, match="FrameSpacing"):
        FrameSpacing("none", regions=(RegionSpacing((0, 0, 1, 1), (0.1, 0.1)),))


# -- bad files -------------------------------------------------------------------------


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each bad DICOM of the issue, with the words its error must hold."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_dicom(folder / "good.dcm", loop(3))
    data = good.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 2])
    no_pixels = pydicom.dcmread(good)
    del no_pixels.PixelData
    no_pixels.save_as(folder / "nopixels.dcm")
    mpeg = pydicom.dcmread(good)
    mpeg.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2
    mpeg.PixelData = encapsulate([b"\0\0\1\xb3" * 4])
    mpeg.save_as(folder / "mpeg.dcm")
    units = edited(
        write_dicom(folder / "units.dcm", loop(1)[0]),
        lambda d: setattr(d, "SequenceOfUltrasoundRegions", [region(units=4)]),
    )
    shutil.copy(get_testdata_file("dicomdirtests/DICOMDIR"), folder / "DICOMDIR")
    return {
        "truncated": (folder / "truncated.dcm", "truncated"),
        "nopixels": (folder / "nopixels.dcm", "no pixel data"),
        "mpeg": (folder / "mpeg.dcm", "MPEG2"),
        "units": (units, "cm (PhysicalUnitsX/YDirection = 3): region 1: units seconds"),
        "DICOMDIR": (folder / "DICOMDIR", "a DICOMDIR"),
    }


def test_each_bad_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    for name, (path, words) in bad_files(tmp_path).items():
        reader = read_spacing if name == "units" else read_dicom_info
        with pytest.raises(ValueError, match=re.escape(words)) as error:
            reader(path)
        assert str(path) in str(error.value), name


def with_raw(path: Path, old: bytes, new: bytes) -> Path:
    """``path`` with the first ``old`` bytes replaced by ``new`` (damage pydicom's writer
    refuses to write)."""
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    return path


def damaged_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """A DICOM file per damaged header value of issue 26, with the words its error must hold."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = loop(1)[0]

    def damaged(name: str, change) -> Path:
        return edited(write_dicom(folder / f"{name}.dcm", frame), change)

    def emptied(keyword: str):
        return lambda d: d.__setitem__(keyword, DataElement(keyword, "US", None))

    def no_pixels_two_classes(d) -> None:
        del d.PixelData
        d.SOPClassUID = ["1.2.840.10008.5.1.4.1.1.6.1", "1.2.3"]

    red_only = palette_file(folder / "redonly.dcm", np.arange(256, dtype=np.uint16), 8)
    edited(red_only, lambda d: [d.__delitem__(f"{c}PaletteColorLookupTableData")
                                for c in ("Green", "Blue")])  # fmt: skip
    rows = b"\x28\x00\x10\x00US\x02\x00"  # Rows (0028,0010), VR US, 2 bytes: 90 ("Z\0")
    return {
        "onespacing": (
            damaged("onespacing", lambda d: setattr(d, "PixelSpacing", [0.1])),
            "PixelSpacing (0028,0030) holds 1 value(s) (0.1), not the two (row, col)",
        ),
        "norows": (damaged("norows", emptied("Rows")), "Rows (0028,0010) is empty"),
        "nobits": (damaged("nobits", emptied("BitsAllocated")), "BitsAllocated (0028,0100) is"),
        "nosamples": (damaged("nosamples", emptied("SamplesPerPixel")), "SamplesPerPixel"),
        "twoclasses": (damaged("twoclasses", no_pixels_two_classes), "not an image (['1.2.840"),
        "units": (
            damaged(
                "units", lambda d: setattr(d, "SequenceOfUltrasoundRegions", [region(units=[3, 3])])
            ),  # fmt: skip
            "ultrasound region 1: PhysicalUnitsXDirection holds 2 values ([3, 3]), not one",
        ),
        "redonly": (red_only, "PALETTE COLOR without its green and blue lookup table"),
        "oddlength": (
            with_raw(
                write_dicom(folder / "oddlength.dcm", frame),
                rows + b"Z\0",
                rows[:6] + b"\x03\0Z\0\0",
            ),  # fmt: skip
            "damaged DICOM header (BytesLengthException",
        ),
        "unknownvr": (
            with_raw(write_dicom(folder / "unknownvr.dcm", frame), rows, rows[:4] + b"ZZ\x02\x00"),
            "damaged DICOM header (NotImplementedError: Unknown Value Representation 'ZZ'",
        ),
        "negative": (
            damaged("negative", lambda d: setattr(d, "NumberOfFrames", -2)),
            "NumberOfFrames (0028,0008) is -2: not a whole number >= 1",
        ),
    }


def test_each_damaged_header_value_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    for name, (path, words) in damaged_files(tmp_path).items():
        with pytest.raises(ValueError, match=re.escape(words)) as error:
            read_spacing(path)  # reads the header as every reader does, and the spacing
            read_frame(path)
        assert str(path) in str(error.value), name


@pytest.mark.usefixtures("shipped_threshold")
def test_a_batch_goes_on_past_damaged_headers_and_names_each_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = damaged_files(tmp_path / "scans")
    write_dicom(tmp_path / "scans" / "good.dcm", loop(2), region_spacing_mm=0.2)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "scans"), str(out), "--quiet", "--measure"]) == 2
    err = capsys.readouterr().err
    assert f"{len(damaged)} of {len(damaged) + 2} images could not be segmented" in err
    for path, words in damaged.values():
        (line,) = [line for line in err.splitlines() if f"{path}:" in line]
        assert words in line and line.count(str(path)) == 1
    assert sorted(p.name for p in out.glob("*.png")) == ["good_f0001.png", "good_f0002.png"]
    assert [row["frame"] for row in read_rows(out / "measurements.csv")] == ["1", "2"]


@pytest.mark.usefixtures("shipped_threshold")
def test_a_compressed_file_claiming_more_frames_than_it_holds_is_one_quick_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_dicom(tmp_path / "claims.dcm", loop(3))
    edited(path, lambda d: d.compress(RLELossless))
    for claim in (5_000_000, 30_000):
        edited(path, lambda d, claim=claim: setattr(d, "NumberOfFrames", claim))
        words = f"says {claim} frames, but the compressed pixel data holds 3 fragments"
        with pytest.raises(ValueError, match=words):
            frame_outputs("claims", path)
    assert main(["predict", str(path), str(tmp_path / "out"), "--quiet"]) == 2
    assert capsys.readouterr().err.count("claims.dcm") == 1


def test_a_frame_that_cannot_be_decoded_is_named_once(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "scans" / "loop.dcm", loop(3))
    edited(path, lambda d: d.compress(RLELossless))
    dataset = pydicom.dcmread(path)
    fragments = list(pydicom.encaps.generate_frames(dataset.PixelData, number_of_frames=3))
    dataset.PixelData = encapsulate([fragments[0], b"\0" * 8, fragments[2]])
    dataset.save_as(path)
    segmenter = Segmenter(Threshold(), PLAIN, device="cpu")
    with pytest.raises(ValueError) as error:
        segmenter.predict_folder(tmp_path / "scans", tmp_path / "out", progress=False)
    (line,) = [line for line in str(error.value).splitlines() if "loop.dcm" in line]
    assert line.count("loop.dcm") == 1 and "frame 2 cannot be decoded" in line
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "loop_f0001.png", "loop_f0003.png"]  # fmt: skip


def test_without_pydicom_a_dicom_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_dicom(tmp_path / "in" / "a.dcm", loop(1)[0])
    monkeypatch.setattr(thyroidseg.io._dicom_header, "pydicom", None)
    with pytest.raises(ImportError, match=r"pip install 'thyroidseg\[dicom\]'"):
        read_image(path)
    assert main(["predict", str(path), str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'thyroidseg[dicom]'" in err[0]
    assert not (tmp_path / "out").exists()


# -- predict ---------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.usefixtures("shipped_threshold")
def test_predict_segments_loops_frame_by_frame_and_measures_in_mm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scans = tmp_path / "scans"
    frames = loop(3)
    frames[1, 20:70, 30:110] = 220  # the nodule is largest in frame 2
    write_dicom(scans / "loop.dcm", frames, region_spacing_mm=(0.3, 0.2))
    write_dicom(scans / "still.dcm", loop(1)[0], pixel_spacing_mm=0.1)
    write_image(scans / "frame.png", loop(1)[0])
    out = tmp_path / "out"
    assert main(["predict", str(scans), str(out), "--quiet", "--measure", "--batch-size", "2"]) == 0
    assert "segmented 5 frames, 5 nodules" in capsys.readouterr().out
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["frame.png", "loop_f0001.png", "loop_f0002.png", "loop_f0003.png", "still.png"]
    rows = read_rows(out / "measurements.csv")
    got = [(r["image"], r["frame"], r["spacing_source"]) for r in rows]
    assert got == [("frame.png", "", "none"), ("loop.dcm", "1", "ultrasound-region"),
                   ("loop.dcm", "2", "ultrasound-region"), ("loop.dcm", "3", "ultrasound-region"),
                   ("still.dcm", "", "pixel-spacing")]  # fmt: skip
    frame, first, still = rows[0], rows[1], rows[4]
    assert frame["area_mm2"] == "" and frame["max_diameter_mm"] == ""
    assert (int(first["height"]), int(first["width"])) == (40, 70)  # the rectangle
    assert float(first["depth_mm"]) == pytest.approx(40 * 0.3)
    assert float(first["transverse_mm"]) == pytest.approx(70 * 0.2)
    assert float(first["area_mm2"]) == pytest.approx(int(first["area_px"]) * 0.06)
    assert float(still["area_mm2"]) == pytest.approx(int(still["area_px"]) * 0.01)
    (summary,) = read_rows(out / "loops.csv")  # one row per loop, none for still images
    largest = rows[2]
    assert (summary["image"], summary["frames"], summary["frame_of_max"]) == ("loop.dcm", "3", "2")
    assert summary["max_diameter_mm"] == largest["max_diameter_mm"]
    assert float(largest["max_diameter_mm"]) > float(first["max_diameter_mm"])
    assert summary["spacing_source"] == "ultrasound-region"
    (scans / "loop.dcm").unlink()  # a run without loops leaves no earlier loops.csv behind
    assert main(["predict", str(scans), str(out), "--quiet", "--measure", "--overwrite"]) == 0
    assert not (out / "loops.csv").exists() and (out / "measurements.csv").exists()


@pytest.mark.usefixtures("shipped_threshold")
def test_predict_frames_option_and_user_spacing(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "loop.dcm", loop(4), region_spacing_mm=0.3)
    out = tmp_path / "out"
    command = ["predict", str(path), str(out), "--quiet", "--measure", "--frames", "2-3"]
    assert main([*command, "--pixel-spacing", "0.1", "0.2"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["loop_f0002.png", "loop_f0003.png"]
    rows = read_rows(out / "measurements.csv")
    assert [(r["frame"], r["spacing_source"]) for r in rows] == [("2", "user"), ("3", "user")]
    assert float(rows[0]["depth_mm"]) == pytest.approx(40 * 0.1)


@pytest.mark.usefixtures("shipped_threshold")
def test_predict_refuses_an_absurd_user_spacing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_dicom(tmp_path / "a.dcm", loop(1)[0])
    assert (
        main(["predict", str(path), str(tmp_path / "out"), "--measure", "--pixel-spacing", "50"])
        == 2
    )
    assert "--pixel-spacing: pixel spacing 50.0 mm is not plausible" in capsys.readouterr().err


@pytest.mark.usefixtures("shipped_threshold")
def test_predict_keeps_going_past_bad_files_and_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = bad_files(tmp_path / "scans")
    write_dicom(tmp_path / "scans" / "short.dcm", loop(2))
    out = tmp_path / "out"
    command = ["predict", str(tmp_path / "scans"), str(out), "--quiet", "--measure"]
    assert main([*command, "--frames", "1-3"]) == 2
    err = capsys.readouterr().err
    assert "6 of 9 images could not be segmented" in err  # 5 bad files, 1 short loop
    for path, words in bad.values():
        assert str(path) in err and words in err
    assert (
        "short.dcm: the loop has 2 frames, fewer than the 3 that --frames asks" in err
    )  # in the CLI's words
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["good_f0001.png", "good_f0002.png", "good_f0003.png"]


def test_predict_file_and_the_readers_of_the_library(tmp_path: Path) -> None:
    segmenter = Segmenter(Threshold(), PLAIN, device="cpu", batch_size=2)
    path = write_dicom(tmp_path / "in" / "loop.dcm", loop(3), region_spacing_mm=0.2)
    result = predict_file(segmenter, path, frames="2-3")
    assert result.frames == (2, 3) and result.spacing.source == "ultrasound-region"
    truth = frame_with_square()[1]
    assert [iou(mask, truth) > 0.95 for mask in result.masks] == [True, True]
    (in_mm,), (in_pixels,) = measure(result.masks[0], result.spacing), measure(result.masks[0])
    assert in_mm.depth_mm == pytest.approx(in_pixels.depth_px * 0.2)
    with pytest.raises(ValueError, match="a cine loop of 3 frames"):
        segmenter.predict(path)
    single = write_dicom(tmp_path / "in2" / "one.dcm", loop(1)[0])
    assert iou(segmenter.predict(single), truth) > 0.95
    summary = preprocess_folder(tmp_path / "in2", tmp_path / "pre", size=(32, 32), progress=False)
    assert list(summary["images"]) == ["one"]
