"""Shared test fixtures.

Real DDTI data lives outside the repository at ``../shared/data`` (relative to the project
root). Tests that need it take the ``ddti_dir`` / ``ddti_raw_dir`` fixtures, which skip
cleanly when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference_helpers import PLAIN
from thyroidseg.inference import Segmenter
from tiny_models import Threshold

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("THYROIDSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def ddti_dir() -> Path:
    """``../shared/data/ddti`` (images/, masks/, metadata.csv); skips when absent."""
    path = SHARED_DATA / "ddti"
    if not (path / "images").is_dir():
        pytest.skip(f"real DDTI data not found at {path}")
    return path


@pytest.fixture(scope="session")
def ddti_raw_dir() -> Path:
    """``../shared/data/ddti-raw-sample`` (DDTI XML + JPEG layout); skips when absent."""
    path = SHARED_DATA / "ddti-raw-sample"
    if not path.is_dir():
        pytest.skip(f"DDTI raw sample not found at {path}")
    return path


@pytest.fixture
def shipped_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped model replaced by `Threshold` on plain resizing (options as given, no
    second stage)."""

    def pretrained(cls: type[Segmenter], *, refine: object = None, **options: object) -> Segmenter:
        chosen = {name: value for name, value in options.items() if value is not None}
        return cls(Threshold(), PLAIN, **chosen)

    monkeypatch.setattr(Segmenter, "pretrained", classmethod(pretrained))
