"""Tests of ``predict --dicom-seg`` (thyroidseg.io.dicom_seg): round trip, dciodvfy, refusals."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from inference_helpers import frame_with_square
from thyroidseg.cli import main
from thyroidseg.io.dicom import write_dicom
from thyroidseg.io.files import read_binary_mask, write_image
from thyroidseg.models.checkpoint import weights_sha256
from tiny_models import Threshold

pydicom = pytest.importorskip("pydicom")
highdicom = pytest.importorskip("highdicom")

PATIENT = {
    "PatientName": "Doe^Jane",
    "PatientID": "P-123",
    "StudyDate": "20240102",
    "StudyTime": "101500",
    "AccessionNumber": "A-9",
}


def scan(path: Path, frames: np.ndarray, **identity: str) -> Path:
    """An ultrasound DICOM file of ``frames`` with study and series UIDs and ``identity``."""
    write_dicom(path, frames, region_spacing_mm=0.1)
    dataset = pydicom.dcmread(path)
    dataset.StudyInstanceUID = pydicom.uid.generate_uid()
    dataset.SeriesInstanceUID = pydicom.uid.generate_uid()
    for keyword, value in identity.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path)
    return path


def loop_frames() -> np.ndarray:
    """Three frames: a nodule, no nodule (dark noise), a nodule."""
    bright = frame_with_square(90, 140)[0]
    dark = np.random.default_rng(0).integers(30, 60, (90, 140), dtype=np.uint8)
    return np.stack([bright, dark, bright])


def predict(*args: str) -> int:
    return main(["predict", *args, "--quiet", "--dicom-seg"])


@pytest.mark.usefixtures("shipped_threshold")
def test_the_seg_of_a_cine_loop_references_each_frame_and_holds_the_png_masks(
    tmp_path: Path,
) -> None:
    source = scan(tmp_path / "in" / "loop.dcm", loop_frames(), **PATIENT)
    out = tmp_path / "out"
    assert predict(str(source), str(out), "--frames", "2-3") == 0
    seg = highdicom.seg.segread(out / "loop.seg.dcm")
    original = pydicom.dcmread(source)
    back = seg.get_pixels_by_source_frame(
        original.SOPInstanceUID, [2, 3], combine_segments=True, ignore_spatial_locations=True
    )
    for stored, stem in zip(back, ["loop_f0002", "loop_f0003"], strict=True):
        assert np.array_equal(stored, read_binary_mask(out / f"{stem}.png"))
    assert back[1].any() and not back[0].any()  # frame 3 has the nodule, frame 2 none
    referenced = [
        group.DerivationImageSequence[0].SourceImageSequence[0]
        for group in seg.PerFrameFunctionalGroupsSequence
    ]
    assert [item.ReferencedFrameNumber for item in referenced] == [2, 3]
    assert {item.ReferencedSOPInstanceUID for item in referenced} == {original.SOPInstanceUID}
    assert {item.ReferencedSOPClassUID for item in referenced} == {original.SOPClassUID}
    for keyword, value in PATIENT.items():
        assert str(seg[keyword].value) == value
    assert seg.StudyInstanceUID == original.StudyInstanceUID
    assert seg.SeriesInstanceUID != original.SeriesInstanceUID
    assert seg.PatientBirthDate == "" and seg.PatientSex == ""  # absent: Type 2, left empty


@pytest.mark.usefixtures("shipped_threshold")
def test_the_segment_is_a_snomed_nodule_found_by_thyroidseg_with_the_model_sha(
    tmp_path: Path,
) -> None:
    source = scan(tmp_path / "in" / "one.dcm", frame_with_square(90, 140)[0], **PATIENT)
    assert predict(str(source), str(tmp_path / "out")) == 0
    seg = pydicom.dcmread(tmp_path / "out" / "one.seg.dcm")
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "Nodule"
    kind = segment.SegmentedPropertyTypeCodeSequence[0]
    category = segment.SegmentedPropertyCategoryCodeSequence[0]
    assert (kind.CodeValue, kind.CodingSchemeDesignator) == ("27925004", "SCT")
    assert (category.CodeValue, category.CodingSchemeDesignator) == ("49755003", "SCT")
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "thyroidseg"
    assert weights_sha256(Threshold().state_dict()) in algorithm.AlgorithmParameters
    reread = highdicom.seg.segread(tmp_path / "out" / "one.seg.dcm")
    stored = reread.get_pixels_by_source_instance(
        [pydicom.dcmread(source).SOPInstanceUID], combine_segments=True
    )[0]
    assert np.array_equal(stored, read_binary_mask(tmp_path / "out" / "one.png"))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy is absent")
@pytest.mark.usefixtures("shipped_threshold")
def test_dciodvfy_finds_no_error_in_the_segs(tmp_path: Path) -> None:
    scan(tmp_path / "in" / "loop.dcm", loop_frames(), **PATIENT)
    scan(tmp_path / "in" / "one.dcm", frame_with_square(90, 140)[0])  # no patient identity
    assert predict(str(tmp_path / "in"), str(tmp_path / "out")) == 0
    for name in ("loop.seg.dcm", "one.seg.dcm"):
        checked = subprocess.run(
            ["dciodvfy", str(tmp_path / "out" / name)], capture_output=True, text=True, timeout=60
        )
        report = checked.stdout + checked.stderr
        assert "SEG" in report or "Segmentation" in report  # it did read the file
        assert not [line for line in report.splitlines() if line.startswith("Error")], report


@pytest.mark.usefixtures("shipped_threshold")
def test_png_inputs_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scan(tmp_path / "in" / "loop.dcm", loop_frames(), **PATIENT)
    write_image(tmp_path / "in" / "b.png", frame_with_square(90, 140)[0])
    assert predict(str(tmp_path / "in"), str(tmp_path / "out")) == 2
    error = capsys.readouterr().err
    assert "--dicom-seg needs DICOM inputs" in error and "b.png" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("shipped_threshold")
def test_a_source_without_a_study_uid_is_refused_naming_the_file_and_attribute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_dicom(tmp_path / "in" / "bare.dcm", frame_with_square(90, 140)[0])
    assert predict(str(source), str(tmp_path / "out")) == 2
    error = capsys.readouterr().err
    assert str(source) in error and "StudyInstanceUID (0020,000D)" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("shipped_threshold")
def test_an_existing_seg_is_replaced_only_with_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = scan(tmp_path / "in" / "one.dcm", frame_with_square(90, 140)[0], **PATIENT)
    out = tmp_path / "out"
    assert predict(str(source), str(out)) == 0
    (out / "one.png").unlink()
    (out / "one.seg.dcm").write_bytes(b"earlier")
    assert predict(str(source), str(out)) == 2
    assert "one.seg.dcm" in capsys.readouterr().err
    assert (out / "one.seg.dcm").read_bytes() == b"earlier" and not (out / "one.png").exists()
    assert predict(str(source), str(out), "--overwrite") == 0
    assert pydicom.dcmread(out / "one.seg.dcm").Modality == "SEG"
