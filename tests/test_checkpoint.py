"""Tests of checkpoint files: atomic saving, safe loading, and the random-number state."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from thyroidseg.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    weights = torch.arange(6.0).reshape(2, 3)
    path = save_checkpoint(tmp_path / "run" / "a.pt", {"format": CHECKPOINT_FORMAT, "w": weights})
    assert path == tmp_path / "run" / "a.pt"
    assert torch.equal(load_checkpoint(path)["w"], weights)
    assert not list(path.parent.glob(".*.tmp"))


def test_load_checkpoint_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")

    good = save_checkpoint(tmp_path / "good.pt", {"format": CHECKPOINT_FORMAT, "w": torch.ones(99)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.pt: corrupt or truncated"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt: corrupt or truncated"):
        load_checkpoint(empty)
    text = tmp_path / "text.pt"  # not a zip: torch reads it as a legacy pickle and fails
    text.write_text("garbage\n")
    with pytest.raises(ValueError, match=r"text.pt: corrupt or truncated checkpoint \(Unsupported"):
        load_checkpoint(text)

    pickled = tmp_path / "pickled.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "code": Path("x")}, pickled)
    with pytest.raises(ValueError, match="pickled.pt: refusing to load.*pathlib"):
        load_checkpoint(pickled)

    bare = tmp_path / "bare.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), bare)
    with pytest.raises(ValueError, match="bare.pt: not a thyroidseg checkpoint"):
        load_checkpoint(bare)


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))  # noqa: NPY002


def test_rng_state_survives_a_checkpoint_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "rng.pt", {"format": CHECKPOINT_FORMAT, "rng": rng_state()})
    expected = draws()
    draws()  # move every generator on
    restore_rng_state(load_checkpoint(path)["rng"])
    assert draws() == expected
